//! The audit log: one row per admin change, written in the change's own transaction.

use plinth_types::console::{AuditEntry, Page};
use sqlx::any::AnyRow;
use sqlx::{AnyConnection, Row};

use crate::error::ApiError;
use crate::ids::{from_millis, new_id, now_millis};

/// One change to record.
#[derive(Clone, Debug)]
pub struct AuditRecord<'a> {
    /// Who: `admin` or `key:<id>`.
    pub actor: &'a str,
    /// The project concerned, if any.
    pub project_id: Option<&'a str>,
    /// What: `project.create`, `key.revoke`, ...
    pub action: &'a str,
    /// The id of the thing changed.
    pub target: &'a str,
    /// The request that made the change.
    pub request_id: &'a str,
    /// Non-secret particulars.
    pub details: serde_json::Value,
}

/// Records a change; call it inside the change's transaction so both commit or neither does.
///
/// # Errors
///
/// Returns the store's failure.
pub async fn record(conn: &mut AnyConnection, entry: AuditRecord<'_>) -> Result<(), ApiError> {
    sqlx::query(
        "INSERT INTO audit_log (id, at, actor, project_id, action, target, request_id, details) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(new_id("aud"))
    .bind(now_millis())
    .bind(entry.actor)
    .bind(entry.project_id)
    .bind(entry.action)
    .bind(entry.target)
    .bind(entry.request_id)
    .bind(entry.details.to_string())
    .execute(&mut *conn)
    .await?;
    Ok(())
}

fn entry_from_row(row: &AnyRow) -> Result<AuditEntry, ApiError> {
    let details: String = row.try_get("details")?;
    Ok(AuditEntry {
        id: row.try_get("id")?,
        at: from_millis(row.try_get("at")?),
        actor: row.try_get("actor")?,
        project_id: row.try_get("project_id")?,
        action: row.try_get("action")?,
        target: row.try_get("target")?,
        request_id: row.try_get("request_id")?,
        details: serde_json::from_str(&details).map_err(ApiError::internal)?,
    })
}

/// Lists entries newest first, optionally of one project, `limit` at a time before the id
/// `before`.
///
/// # Errors
///
/// Returns the store's failure.
pub async fn list(
    conn: &mut AnyConnection,
    project_id: Option<&str>,
    before: Option<&str>,
    limit: usize,
) -> Result<Page<AuditEntry>, ApiError> {
    let fetch = limit as i64 + 1;
    let rows = match (project_id, before) {
        (Some(project_id), Some(before)) => {
            sqlx::query(
                "SELECT * FROM audit_log WHERE project_id = $1 AND id < $2 \
                 ORDER BY id DESC LIMIT $3",
            )
            .bind(project_id)
            .bind(before)
            .bind(fetch)
            .fetch_all(&mut *conn)
            .await?
        }
        (Some(project_id), None) => {
            sqlx::query("SELECT * FROM audit_log WHERE project_id = $1 ORDER BY id DESC LIMIT $2")
                .bind(project_id)
                .bind(fetch)
                .fetch_all(&mut *conn)
                .await?
        }
        (None, Some(before)) => {
            sqlx::query("SELECT * FROM audit_log WHERE id < $1 ORDER BY id DESC LIMIT $2")
                .bind(before)
                .bind(fetch)
                .fetch_all(&mut *conn)
                .await?
        }
        (None, None) => {
            sqlx::query("SELECT * FROM audit_log ORDER BY id DESC LIMIT $1")
                .bind(fetch)
                .fetch_all(&mut *conn)
                .await?
        }
    };
    crate::extract::page_from_rows(&rows, limit, entry_from_row, |e| e.id.clone())
}
