//! Quota gauges, enforced exactly.
//!
//! A gauge (stored bytes, objects, documents, ...) is a row per project and metric. A writer
//! reserves its delta with [`Quotas::reserve`] inside the same transaction as the write that
//! changes the gauge: the reservation is one conditional `UPDATE` (`used + delta <= limit`),
//! so concurrent writers queue on the row (PostgreSQL) or the database (SQLite) and none can
//! overshoot; if the write fails, the rollback returns the capacity with it.

use std::collections::BTreeMap;

use plinth_types::console::Quotas as QuotaValues;
use sqlx::{AnyConnection, Row};

use crate::error::ApiError;

/// Largest change one reservation may make: 2^62, far above any object or batch, and far
/// enough from the 64-bit limit that `used + delta` cannot overflow.
const MAX_DELTA: u64 = 1 << 62;

/// A quantity that a project holds, as opposed to a rate.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Gauge {
    /// Bytes stored across all buckets.
    StoredBytes,
    /// Objects across all buckets.
    Objects,
    /// Topics.
    Topics,
    /// Documents across all indexes.
    Documents,
    /// Indexes.
    Indexes,
    /// Bytes of search index files, as measured after each commit.
    IndexBytes,
}

impl Gauge {
    /// Every gauge.
    pub const ALL: &'static [Gauge] = &[
        Gauge::StoredBytes,
        Gauge::Objects,
        Gauge::Topics,
        Gauge::Documents,
        Gauge::Indexes,
        Gauge::IndexBytes,
    ];

    /// Returns the gauge's name, as stored and as in the quota field.
    pub fn as_str(self) -> &'static str {
        match self {
            Gauge::StoredBytes => "stored_bytes",
            Gauge::Objects => "objects",
            Gauge::Topics => "topics",
            Gauge::Documents => "documents",
            Gauge::Indexes => "indexes",
            Gauge::IndexBytes => "index_bytes",
        }
    }

    fn limit(self, quotas: &QuotaValues) -> Option<u64> {
        match self {
            Gauge::StoredBytes => quotas.stored_bytes,
            Gauge::Objects => quotas.objects,
            Gauge::Topics => quotas.topics,
            Gauge::Documents => quotas.documents,
            Gauge::Indexes => quotas.indexes,
            Gauge::IndexBytes => quotas.index_bytes,
        }
    }
}

/// Checks quota values for range: gauges are stored as signed 64-bit numbers and rates as
/// 32-bit ones.
///
/// # Errors
///
/// Returns `invalid_quota` naming the field.
pub fn validate(quotas: &QuotaValues) -> Result<(), ApiError> {
    let fields = [
        ("stored_bytes", quotas.stored_bytes),
        ("objects", quotas.objects),
        ("object_size_max", quotas.object_size_max),
        ("topics", quotas.topics),
        ("partitions_per_topic", quotas.partitions_per_topic),
        ("message_size_max", quotas.message_size_max),
        ("messages_per_day", quotas.messages_per_day),
        ("retention_seconds", quotas.retention_seconds),
        ("documents", quotas.documents),
        ("indexes", quotas.indexes),
        ("index_bytes", quotas.index_bytes),
    ];
    for (name, value) in fields {
        if value.is_some_and(|v| v > i64::MAX as u64) {
            return Err(ApiError::InvalidQuota(format!("`{name}` is out of range")));
        }
    }
    for (name, value) in [
        ("requests_per_second", quotas.requests_per_second),
        ("request_burst", quotas.request_burst),
    ] {
        if value.is_some_and(|v| v == 0 || v > u64::from(u32::MAX)) {
            return Err(ApiError::InvalidQuota(format!(
                "`{name}` must be 1 to {}",
                u32::MAX
            )));
        }
    }
    Ok(())
}

/// Returns `overrides` with the operator's `defaults` filled in where a value is absent.
pub fn effective(overrides: &QuotaValues, defaults: &QuotaValues) -> QuotaValues {
    QuotaValues {
        stored_bytes: overrides.stored_bytes.or(defaults.stored_bytes),
        objects: overrides.objects.or(defaults.objects),
        object_size_max: overrides.object_size_max.or(defaults.object_size_max),
        topics: overrides.topics.or(defaults.topics),
        partitions_per_topic: overrides
            .partitions_per_topic
            .or(defaults.partitions_per_topic),
        message_size_max: overrides.message_size_max.or(defaults.message_size_max),
        messages_per_day: overrides.messages_per_day.or(defaults.messages_per_day),
        retention_seconds: overrides.retention_seconds.or(defaults.retention_seconds),
        documents: overrides.documents.or(defaults.documents),
        indexes: overrides.indexes.or(defaults.indexes),
        index_bytes: overrides.index_bytes.or(defaults.index_bytes),
        requests_per_second: overrides
            .requests_per_second
            .or(defaults.requests_per_second),
        request_burst: overrides.request_burst.or(defaults.request_burst),
    }
}

/// The quota service: the operator's defaults, and gauge arithmetic on the store.
#[derive(Clone, Debug, Default)]
pub struct Quotas {
    defaults: QuotaValues,
}

impl Quotas {
    /// Builds the service with the operator's default quotas.
    pub fn new(defaults: QuotaValues) -> Quotas {
        Quotas { defaults }
    }

    /// Returns the operator's defaults.
    pub fn defaults(&self) -> &QuotaValues {
        &self.defaults
    }

    /// Returns the values in force for a project with these overrides.
    pub fn effective(&self, overrides: &QuotaValues) -> QuotaValues {
        effective(overrides, &self.defaults)
    }

    /// Reserves `delta` of `gauge` for `project_id` inside the caller's transaction.
    ///
    /// Call it in the transaction of the write it pays for, before that write, and commit
    /// both together. A negative `delta` releases capacity and never fails; a release larger
    /// than what is held leaves the gauge at zero rather than below it, so a double release
    /// cannot turn into room beyond the limit.
    ///
    /// # Errors
    ///
    /// Returns `quota_exceeded` when the project would go over its limit, and
    /// `project_not_found` when the project does not exist.
    pub async fn reserve(
        &self,
        tx: &mut AnyConnection,
        project_id: &str,
        gauge: Gauge,
        delta: i64,
    ) -> Result<(), ApiError> {
        self.reserve_all(tx, project_id, &[(gauge, delta)]).await
    }

    /// Reserves several gauges at once, as [`Quotas::reserve`] does one, reading the
    /// project's limits once for all of them.
    ///
    /// # Errors
    ///
    /// Returns `quota_exceeded` for the first gauge that would go over its limit, and
    /// `project_not_found` when the project does not exist.
    pub async fn reserve_all(
        &self,
        tx: &mut AnyConnection,
        project_id: &str,
        changes: &[(Gauge, i64)],
    ) -> Result<(), ApiError> {
        let overrides: String = sqlx::query("SELECT quotas FROM projects WHERE id = $1")
            .bind(project_id)
            .fetch_optional(&mut *tx)
            .await?
            .ok_or_else(|| ApiError::ProjectNotFound(project_id.to_owned()))?
            .try_get("quotas")?;
        let overrides: QuotaValues =
            serde_json::from_str(&overrides).map_err(ApiError::internal)?;
        self.reserve_all_under(tx, project_id, &overrides, changes)
            .await
    }

    /// [`Quotas::reserve_all`] against limits the caller has already read: the project's
    /// quota overrides, as they were when its write began. Only the limits may be that old;
    /// the gauges are read and changed in this transaction, so concurrent writers still
    /// cannot overshoot.
    ///
    /// # Errors
    ///
    /// As [`Quotas::reserve_all`].
    pub async fn reserve_all_under(
        &self,
        tx: &mut AnyConnection,
        project_id: &str,
        overrides: &QuotaValues,
        changes: &[(Gauge, i64)],
    ) -> Result<(), ApiError> {
        // Bounded so that the arithmetic stays exact in a signed 64-bit column on both engines
        // (SQLite would turn an overflowing sum into a float).
        if let Some((_, delta)) = changes.iter().find(|(_, d)| d.unsigned_abs() > MAX_DELTA) {
            return Err(ApiError::InvalidParameter(format!(
                "a quota change of {delta} is out of range"
            )));
        }
        let quotas = self.effective(overrides);
        for &(gauge, delta) in changes.iter().filter(|(_, delta)| *delta != 0) {
            let limit = gauge.limit(&quotas);
            // One statement: a first reservation inserts the row (unless the delta alone is
            // over the limit), a later one adds to it only while the sum stays within the
            // limit. A release always applies, and stops at zero.
            let updated = sqlx::query(
                "INSERT INTO quota_gauges (project_id, metric, used) \
                 SELECT $1, $2, CASE WHEN $3 < 0 THEN 0 ELSE $3 END WHERE $3 <= $4 \
                 ON CONFLICT (project_id, metric) DO UPDATE SET used = \
                 CASE WHEN quota_gauges.used + $3 < 0 THEN 0 ELSE quota_gauges.used + $3 END \
                 WHERE $3 <= 0 OR quota_gauges.used + $3 <= $4",
            )
            .bind(project_id)
            .bind(gauge.as_str())
            .bind(delta)
            .bind(limit.map_or(i64::MAX, |l| l.min(i64::MAX as u64) as i64))
            .execute(&mut *tx)
            .await
            .map_err(|err| match &err {
                sqlx::Error::Database(db) if db.is_foreign_key_violation() => {
                    ApiError::ProjectNotFound(project_id.to_owned())
                }
                _ => err.into(),
            })?;
            if updated.rows_affected() == 0 {
                return Err(ApiError::QuotaExceeded {
                    quota: gauge.as_str(),
                    limit: limit.unwrap_or(0),
                });
            }
        }
        Ok(())
    }

    /// Reserves `amount` of a per-day quota such as `messages_per_day` for the UTC `day`
    /// (`YYYY-MM-DD`), against `limit`: one conditional upsert of the gauge
    /// `{quota}:{day}`, so concurrent writers never overshoot. The gauges of earlier days are
    /// deleted on the way. A negative `amount` returns capacity and never fails.
    ///
    /// # Errors
    ///
    /// Returns `quota_exceeded` when the day's count would go over `limit`.
    pub async fn reserve_daily(
        &self,
        tx: &mut AnyConnection,
        project_id: &str,
        quota: &'static str,
        day: &str,
        amount: i64,
        limit: u64,
    ) -> Result<(), ApiError> {
        let metric = format!("{quota}:{day}");
        sqlx::query(
            "DELETE FROM quota_gauges WHERE project_id = $1 AND metric LIKE $2 AND metric <> $3",
        )
        .bind(project_id)
        .bind(format!("{quota}:%"))
        .bind(&metric)
        .execute(&mut *tx)
        .await?;
        let updated = sqlx::query(
            "INSERT INTO quota_gauges (project_id, metric, used) \
             SELECT $1, $2, CASE WHEN $3 < 0 THEN 0 ELSE $3 END WHERE $3 <= $4 \
             ON CONFLICT (project_id, metric) DO UPDATE SET used = \
             CASE WHEN quota_gauges.used + $3 < 0 THEN 0 ELSE quota_gauges.used + $3 END \
             WHERE $3 <= 0 OR quota_gauges.used + $3 <= $4",
        )
        .bind(project_id)
        .bind(&metric)
        .bind(amount)
        .bind(limit.min(i64::MAX as u64) as i64)
        .execute(&mut *tx)
        .await?;
        if updated.rows_affected() == 0 {
            return Err(ApiError::QuotaExceeded { quota, limit });
        }
        Ok(())
    }

    /// Returns capacity to a gauge: the same as reserving `-amount`.
    ///
    /// # Errors
    ///
    /// Returns the store's failure.
    pub async fn release(
        &self,
        tx: &mut AnyConnection,
        project_id: &str,
        gauge: Gauge,
        amount: i64,
    ) -> Result<(), ApiError> {
        self.reserve(tx, project_id, gauge, -amount).await
    }

    /// Requires that a measured gauge (one set after the fact, like `index_bytes`) is below
    /// the project's limit.
    ///
    /// # Errors
    ///
    /// Returns `quota_exceeded` when it is at or past the limit.
    pub async fn require_room(
        &self,
        conn: &mut AnyConnection,
        project_id: &str,
        overrides: &QuotaValues,
        gauge: Gauge,
    ) -> Result<(), ApiError> {
        let Some(limit) = gauge.limit(&self.effective(overrides)) else {
            return Ok(());
        };
        let used: Option<i64> = sqlx::query_scalar(
            "SELECT used FROM quota_gauges WHERE project_id = $1 AND metric = $2",
        )
        .bind(project_id)
        .bind(gauge.as_str())
        .fetch_optional(&mut *conn)
        .await?;
        if used.unwrap_or(0).max(0) as u64 >= limit {
            return Err(ApiError::QuotaExceeded {
                quota: gauge.as_str(),
                limit,
            });
        }
        Ok(())
    }

    /// Moves a gauge by `delta` whatever its limit, never below zero: for bringing a gauge
    /// back to what was measured (after a crash cut a write's bookkeeping short), not for
    /// paying for a write.
    ///
    /// # Errors
    ///
    /// Returns the store's failure.
    pub async fn correct(
        &self,
        tx: &mut AnyConnection,
        project_id: &str,
        gauge: Gauge,
        delta: i64,
    ) -> Result<(), ApiError> {
        sqlx::query(
            "INSERT INTO quota_gauges (project_id, metric, used) \
             VALUES ($1, $2, CASE WHEN $3 < 0 THEN 0 ELSE $3 END) \
             ON CONFLICT (project_id, metric) DO UPDATE SET used = \
             CASE WHEN quota_gauges.used + $3 < 0 THEN 0 ELSE quota_gauges.used + $3 END",
        )
        .bind(project_id)
        .bind(gauge.as_str())
        .bind(delta.clamp(-(MAX_DELTA as i64), MAX_DELTA as i64))
        .execute(&mut *tx)
        .await?;
        Ok(())
    }

    /// Reads a project's gauges; a gauge never touched reads as zero.
    ///
    /// # Errors
    ///
    /// Returns the store's failure.
    pub async fn gauges(
        &self,
        conn: &mut AnyConnection,
        project_id: &str,
    ) -> Result<BTreeMap<String, u64>, ApiError> {
        let mut gauges: BTreeMap<String, u64> = Gauge::ALL
            .iter()
            .map(|g| (g.as_str().to_owned(), 0))
            .collect();
        let rows = sqlx::query("SELECT metric, used FROM quota_gauges WHERE project_id = $1")
            .bind(project_id)
            .fetch_all(&mut *conn)
            .await?;
        for row in rows {
            let used: i64 = row.try_get("used")?;
            gauges.insert(row.try_get("metric")?, used.max(0) as u64);
        }
        Ok(gauges)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn overrides_win_over_defaults() {
        let defaults = QuotaValues {
            objects: Some(10),
            stored_bytes: Some(100),
            ..Default::default()
        };
        let overrides = QuotaValues {
            objects: Some(5),
            ..Default::default()
        };
        let merged = effective(&overrides, &defaults);
        assert_eq!(merged.objects, Some(5));
        assert_eq!(merged.stored_bytes, Some(100));
        assert_eq!(merged.documents, None);
    }

    #[test]
    fn out_of_range_values_are_refused() {
        assert!(
            validate(&QuotaValues {
                objects: Some(u64::MAX),
                ..Default::default()
            })
            .is_err()
        );
        assert!(
            validate(&QuotaValues {
                requests_per_second: Some(0),
                ..Default::default()
            })
            .is_err()
        );
        assert!(
            validate(&QuotaValues {
                objects: Some(1 << 40),
                ..Default::default()
            })
            .is_ok()
        );
    }

    proptest! {
        #[test]
        fn effective_takes_each_field_from_override_or_default(o in proptest::option::of(0u64..1000), d in proptest::option::of(0u64..1000)) {
            let merged = effective(
                &QuotaValues { documents: o, ..Default::default() },
                &QuotaValues { documents: d, ..Default::default() },
            );
            prop_assert_eq!(merged.documents, o.or(d));
        }
    }
}
