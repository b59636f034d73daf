//! Quota and usage routes.

use axum::extract::State;
use plinth_shared::auth::Caller;
use plinth_shared::extract::{Json, Path, Query, RequestId};
use plinth_shared::usage::parse_day;
use plinth_shared::{ApiError, Shared, projects};
use plinth_types::ErrorBody;
use plinth_types::console::{QuotaReport, Quotas, UsageQuery, UsageReport};
use serde_json::json;
use time::{Duration, OffsetDateTime};

use crate::audit::Change;

/// Longest span of days one usage request may cover.
const MAX_USAGE_DAYS: i64 = 366;

async fn report(shared: &Shared, project_id: &str) -> Result<QuotaReport, ApiError> {
    let mut conn = shared.store().pool().acquire().await?;
    let project = projects::get(&mut conn, project_id).await?;
    let usage = shared.quotas().gauges(&mut conn, project_id).await?;
    Ok(QuotaReport {
        limits: shared.quotas().effective(&project.quotas),
        overrides: project.quotas,
        usage,
    })
}

/// Reads a project's quotas in force, its own values and its gauges.
#[utoipa::path(
    get,
    path = "/projects/{project}/quotas",
    tag = "quotas",
    params(("project" = String, Path, description = "Project id")),
    responses(
        (status = 200, description = "Limits and readings", body = QuotaReport),
        (status = 404, description = "No such project", body = ErrorBody),
    )
)]
pub async fn get_quotas(
    State(shared): State<Shared>,
    caller: Caller,
    Path(project_id): Path<String>,
) -> Result<Json<QuotaReport>, ApiError> {
    caller.require_project_admin(&project_id)?;
    Ok(Json(report(&shared, &project_id).await?))
}

/// Replaces a project's own quota values (admin token only); absent values fall back to the
/// operator's defaults.
#[utoipa::path(
    put,
    path = "/projects/{project}/quotas",
    tag = "quotas",
    params(("project" = String, Path, description = "Project id")),
    request_body = Quotas,
    responses(
        (status = 200, description = "Limits and readings after the change", body = QuotaReport),
        (status = 400, description = "A value out of range", body = ErrorBody),
        (status = 404, description = "No such project", body = ErrorBody),
    )
)]
pub async fn set_quotas(
    State(shared): State<Shared>,
    caller: Caller,
    RequestId(request_id): RequestId,
    Path(project_id): Path<String>,
    Json(body): Json<Quotas>,
) -> Result<Json<QuotaReport>, ApiError> {
    caller.require_project(&project_id)?;
    caller.require_admin()?;

    let mut tx = shared.store().begin().await?;
    projects::update(&mut tx, &project_id, None, Some(&body)).await?;
    let change = Change {
        caller: &caller,
        request_id: &request_id,
    };
    change
        .record(
            &mut tx,
            Some(&project_id),
            "quota.set",
            &project_id,
            json!(body),
        )
        .await?;
    tx.commit().await?;
    // Rate limits ride on the cached key records; drop them so the change applies now here.
    shared.auth().forget_keys();

    tracing::info!(project_id = %project_id, "quotas set");
    Ok(Json(report(&shared, &project_id).await?))
}

/// Reads a project's usage per metric and UTC day.
#[utoipa::path(
    get,
    path = "/projects/{project}/usage",
    tag = "quotas",
    params(("project" = String, Path, description = "Project id"), UsageQuery),
    responses(
        (status = 200, description = "Daily counters", body = UsageReport),
        (status = 400, description = "Bad day or range", body = ErrorBody),
        (status = 404, description = "No such project", body = ErrorBody),
    )
)]
pub async fn get_usage(
    State(shared): State<Shared>,
    caller: Caller,
    Path(project_id): Path<String>,
    Query(query): Query<UsageQuery>,
) -> Result<Json<UsageReport>, ApiError> {
    caller.require_project_admin(&project_id)?;
    let today = OffsetDateTime::now_utc().date();
    let to = query
        .to
        .as_deref()
        .map(|day| parse_day("to", day))
        .transpose()?
        .unwrap_or(today);
    let from = match query.from.as_deref() {
        Some(day) => parse_day("from", day)?,
        None => to.checked_sub(Duration::days(30)).ok_or_else(|| {
            ApiError::InvalidParameter("`to` is too early to count 30 days back from".into())
        })?,
    };
    if from > to || (to - from).whole_days() > MAX_USAGE_DAYS {
        return Err(ApiError::InvalidParameter(format!(
            "`from` must not be after `to`, and the range at most {MAX_USAGE_DAYS} days"
        )));
    }

    // What this replica counted but has not flushed yet belongs in the answer.
    shared.usage().flush().await?;
    let items = shared
        .usage()
        .report(&project_id, from, to, query.metric.as_deref())
        .await?;
    Ok(Json(UsageReport { project_id, items }))
}
