//! The documents an index holds, booked against its project's `documents` quota.
//!
//! The index row keeps `documents`, the count as of the last settled commit, and `pending`,
//! the room reserved for writes not settled yet; the project's `documents` gauge is the sum
//! over its indexes of both. A writer reserves before it commits (gauge and `pending` in
//! one transaction, the gauge conditional on the quota) and settles after (`documents` set
//! to what the files hold, `pending` back to zero, the gauge moved by the difference), so
//! the quota is never overshot and the gauge comes back to the truth after every commit,
//! and after a crash when the index next opens.
//!
//! The row's `bytes` is what the index's files took at its last settle, and the project's
//! `index_bytes` gauge their sum: measured, not reserved, so the quota refuses the writes
//! after the one that crossed it.

use plinth_shared::quota::Gauge;
use plinth_shared::{ApiError, Shared};
use sqlx::Row;
use tokio::runtime::Handle;

use crate::engine::Ledger;

/// The ledger of one index.
pub(crate) struct IndexLedger {
    pub(crate) shared: Shared,
    /// The runtime the writer thread (not a runtime thread) runs the store's calls on.
    pub(crate) runtime: Handle,
    pub(crate) project_id: String,
    pub(crate) index_id: String,
}

impl IndexLedger {
    async fn reserve_in_store(&self, bounds: &[u64]) -> Result<Vec<Option<ApiError>>, ApiError> {
        let store = self.shared.store();
        let mut tx = store.begin().await?;
        let overrides: String = sqlx::query("SELECT quotas FROM projects WHERE id = $1")
            .bind(&self.project_id)
            .fetch_optional(&mut *tx)
            .await?
            .ok_or_else(|| ApiError::ProjectNotFound(self.project_id.clone()))?
            .try_get("quotas")?;
        let overrides = serde_json::from_str(&overrides).map_err(ApiError::internal)?;
        // Index bytes are measured after commits, so a project at its limit is refused
        // writes that add documents (deleting still works).
        let full = match self
            .shared
            .quotas()
            .require_room(&mut tx, &self.project_id, &overrides, Gauge::IndexBytes)
            .await
        {
            Ok(()) => None,
            Err(ApiError::QuotaExceeded { quota, limit }) => Some((quota, limit)),
            Err(err) => return Err(err),
        };
        let mut verdicts = Vec::with_capacity(bounds.len());
        let mut reserved: u64 = 0;
        for &bound in bounds {
            if bound == 0 {
                verdicts.push(None);
                continue;
            }
            if let Some((quota, limit)) = full {
                verdicts.push(Some(ApiError::QuotaExceeded { quota, limit }));
                continue;
            }
            let change = [(Gauge::Documents, bound as i64)];
            match self
                .shared
                .quotas()
                .reserve_all_under(&mut tx, &self.project_id, &overrides, &change)
                .await
            {
                Ok(()) => {
                    reserved += bound;
                    verdicts.push(None);
                }
                Err(refused @ ApiError::QuotaExceeded { .. }) => verdicts.push(Some(refused)),
                Err(err) => return Err(err),
            }
        }
        if reserved > 0 {
            let updated =
                sqlx::query("UPDATE search_indexes SET pending = pending + $1 WHERE id = $2")
                    .bind(reserved as i64)
                    .bind(&self.index_id)
                    .execute(&mut *tx)
                    .await?;
            if updated.rows_affected() == 0 {
                // Deleted meanwhile: its writes have nowhere to go.
                return Err(ApiError::IndexNotFound(self.index_id.clone()));
            }
        }
        tx.commit().await?;
        Ok(verdicts)
    }

    async fn settle_in_store(&self, documents: u64, bytes: u64) -> Result<(), ApiError> {
        let store = self.shared.store();
        let mut tx = store.begin().await?;
        let Some(row) =
            sqlx::query("SELECT documents, pending, bytes FROM search_indexes WHERE id = $1")
                .bind(&self.index_id)
                .fetch_optional(&mut *tx)
                .await?
        else {
            // Deleted: the deletion gave its documents and reservations back.
            return Ok(());
        };
        let booked: i64 = row.try_get("documents")?;
        let pending: i64 = row.try_get("pending")?;
        let booked_bytes: i64 = row.try_get("bytes")?;
        let held = documents as i64;
        let bytes = bytes.min(i64::MAX as u64) as i64;
        if held == booked && pending == 0 && bytes == booked_bytes {
            return Ok(());
        }
        sqlx::query(
            "UPDATE search_indexes SET documents = $1, pending = 0, bytes = $2 WHERE id = $3",
        )
        .bind(held)
        .bind(bytes)
        .bind(&self.index_id)
        .execute(&mut *tx)
        .await?;
        let quotas = self.shared.quotas();
        let documents_change = held - booked - pending;
        if documents_change != 0 {
            quotas
                .correct(
                    &mut tx,
                    &self.project_id,
                    Gauge::Documents,
                    documents_change,
                )
                .await?;
        }
        if bytes != booked_bytes {
            quotas
                .correct(
                    &mut tx,
                    &self.project_id,
                    Gauge::IndexBytes,
                    bytes - booked_bytes,
                )
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }
}

impl Ledger for IndexLedger {
    fn reserve(&self, bounds: &[u64]) -> Result<Vec<Option<ApiError>>, ApiError> {
        self.runtime.block_on(self.reserve_in_store(bounds))
    }

    fn settle(&self, documents: u64, bytes: u64) -> Result<(), ApiError> {
        self.runtime
            .block_on(self.settle_in_store(documents, bytes))
    }
}
