//! The audit log route, and [`Change`], which records each admin change in its transaction.

use axum::extract::State;
use plinth_shared::audit::{self, AuditRecord};
use plinth_shared::auth::Caller;
use plinth_shared::extract::{Json, PageRequest, Query};
use plinth_shared::store::Tx;
use plinth_shared::{ApiError, Shared};
use plinth_types::ErrorBody;
use plinth_types::console::{AuditEntry, AuditQuery, Page};

/// Who is making a change, and in which request: what every audit row needs.
#[derive(Debug)]
pub(crate) struct Change<'a> {
    pub(crate) caller: &'a Caller,
    pub(crate) request_id: &'a str,
}

impl Change<'_> {
    /// Records `action` on `target` inside `tx`, so the row commits with the change.
    pub(crate) async fn record(
        &self,
        tx: &mut Tx,
        project_id: Option<&str>,
        action: &str,
        target: &str,
        details: serde_json::Value,
    ) -> Result<(), ApiError> {
        let actor = self.caller.actor();
        let entry = AuditRecord {
            actor: &actor,
            project_id,
            action,
            target,
            request_id: self.request_id,
            details,
        };
        audit::record(tx, entry).await
    }
}

/// Lists admin changes, newest first.
#[utoipa::path(
    get,
    path = "/audit",
    tag = "audit",
    params(AuditQuery),
    responses(
        (status = 200, description = "One page of entries", body = Page<AuditEntry>),
        (status = 403, description = "Not a project admin", body = ErrorBody),
    )
)]
pub async fn list_audit(
    State(shared): State<Shared>,
    caller: Caller,
    Query(query): Query<AuditQuery>,
) -> Result<Json<Page<AuditEntry>>, ApiError> {
    let page = PageRequest::parse(query.limit, query.cursor.as_deref())?;
    // A project credential only ever sees its own project's entries.
    let project = match (caller.project_id(), query.project.as_deref()) {
        (None, asked) => asked.map(str::to_owned),
        (Some(own), None) => Some(own.to_owned()),
        (Some(_), Some(asked)) => {
            caller.require_project(asked)?;
            Some(asked.to_owned())
        }
    };
    if let Some(project) = &project {
        caller.require_project_admin(project)?;
    }

    let mut conn = shared.store().pool().acquire().await?;
    let entries = audit::list(
        &mut conn,
        project.as_deref(),
        page.after.as_deref(),
        page.limit,
    )
    .await?;
    Ok(Json(entries))
}
