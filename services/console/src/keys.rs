//! API-key routes of a project.

use axum::extract::State;
use axum::http::StatusCode;
use plinth_shared::auth::Caller;
use plinth_shared::auth::pattern::ResourcePattern;
use plinth_shared::extract::{Json, PageRequest, Path, Query, RequestId};
use plinth_shared::keys::{self, NewKey};
use plinth_shared::projects;
use plinth_shared::{ApiError, Shared, ids};
use plinth_types::ErrorBody;
use plinth_types::Scope;
use plinth_types::console::{ApiKey, CreateKey, KeyWithSecret, Page, PageQuery, UpdateKey};
use serde_json::json;
use time::OffsetDateTime;

use crate::audit::Change;

/// A project admin may hand out at most what it holds itself: no scope it lacks, no resource
/// outside its patterns, no life longer than its own. The admin token may hand out anything.
fn check_within(
    caller: &Caller,
    scopes: &[Scope],
    resources: &[String],
    expires_at: Option<OffsetDateTime>,
) -> Result<(), ApiError> {
    if caller.is_admin() {
        return Ok(());
    }
    if let Some(scope) = scopes.iter().find(|scope| !caller.scopes.contains(scope)) {
        return Err(ApiError::ScopeEscalation(format!(
            "scope `{scope}` not held"
        )));
    }
    if !caller.resources.is_empty() {
        if resources.is_empty() {
            return Err(ApiError::ScopeEscalation(
                "an empty resource list means every resource".into(),
            ));
        }
        for text in resources {
            let pattern = ResourcePattern::parse(text)?;
            if !caller.resources.iter().any(|held| held.covers(&pattern)) {
                return Err(ApiError::ScopeEscalation(format!(
                    "resource `{pattern}` is outside the credential's"
                )));
            }
        }
    }
    if let Some(limit_ms) = caller.expires_at_ms {
        let outlives = expires_at.is_none_or(|at| ids::to_millis(at) > limit_ms);
        if outlives {
            return Err(ApiError::ScopeEscalation(
                "the key would outlive the credential creating it; set an earlier `expires_at`"
                    .into(),
            ));
        }
    }
    Ok(())
}

/// Creates an API key; the response holds its secret, shown this once only.
#[utoipa::path(
    post,
    path = "/projects/{project}/keys",
    tag = "keys",
    params(("project" = String, Path, description = "Project id")),
    request_body = CreateKey,
    responses(
        (status = 201, description = "Created; `secret` is shown only now", body = KeyWithSecret),
        (status = 400, description = "Bad name, scopes, patterns or expiry", body = ErrorBody),
        (status = 404, description = "No such project", body = ErrorBody),
    )
)]
pub async fn create_key(
    State(shared): State<Shared>,
    caller: Caller,
    RequestId(request_id): RequestId,
    Path(project_id): Path<String>,
    Json(body): Json<CreateKey>,
) -> Result<(StatusCode, Json<KeyWithSecret>), ApiError> {
    caller.require_project_admin(&project_id)?;
    let new_key = NewKey::parse(&body)?;
    if body.rate_limit.is_some() && !caller.is_admin() {
        // Rate limits are the operator's to set; a tenant must not raise its own.
        return Err(ApiError::AdminRequired);
    }
    check_within(&caller, &body.scopes, &body.resources, body.expires_at)?;

    let mut tx = shared.store().begin().await?;
    projects::get(&mut tx, &project_id).await?;
    let created = keys::create(&mut tx, &project_id, &new_key).await?;
    let change = Change {
        caller: &caller,
        request_id: &request_id,
    };
    let key = &created.key;
    let details = json!({ "name": key.name, "scopes": key.scopes, "resources": key.resources });
    change
        .record(&mut tx, Some(&project_id), "key.create", &key.id, details)
        .await?;
    tx.commit().await?;

    tracing::info!(project_id = %project_id, key_id = %key.id, "key created");
    Ok((StatusCode::CREATED, Json(created)))
}

/// Lists a project's keys, without their secrets.
#[utoipa::path(
    get,
    path = "/projects/{project}/keys",
    tag = "keys",
    params(("project" = String, Path, description = "Project id"), PageQuery),
    responses(
        (status = 200, description = "One page of keys", body = Page<ApiKey>),
        (status = 404, description = "No such project", body = ErrorBody),
    )
)]
pub async fn list_keys(
    State(shared): State<Shared>,
    caller: Caller,
    Path(project_id): Path<String>,
    Query(query): Query<PageQuery>,
) -> Result<Json<Page<ApiKey>>, ApiError> {
    caller.require_project_admin(&project_id)?;
    let page = PageRequest::parse(query.limit, query.cursor.as_deref())?;

    let mut conn = shared.store().pool().acquire().await?;
    projects::get(&mut conn, &project_id).await?;
    let listing = keys::list(&mut conn, &project_id, page.after.as_deref(), page.limit).await?;
    Ok(Json(listing))
}

/// Reads one key, without its secret.
#[utoipa::path(
    get,
    path = "/projects/{project}/keys/{key}",
    tag = "keys",
    params(
        ("project" = String, Path, description = "Project id"),
        ("key" = String, Path, description = "Key id"),
    ),
    responses(
        (status = 200, description = "The key", body = ApiKey),
        (status = 404, description = "No such project or key", body = ErrorBody),
    )
)]
pub async fn get_key(
    State(shared): State<Shared>,
    caller: Caller,
    Path((project_id, key_id)): Path<(String, String)>,
) -> Result<Json<ApiKey>, ApiError> {
    caller.require_project_admin(&project_id)?;

    let mut conn = shared.store().pool().acquire().await?;
    Ok(Json(keys::get(&mut conn, &project_id, &key_id).await?))
}

/// Renames a key or sets its rate limit (the rate limit: admin token only).
#[utoipa::path(
    patch,
    path = "/projects/{project}/keys/{key}",
    tag = "keys",
    params(
        ("project" = String, Path, description = "Project id"),
        ("key" = String, Path, description = "Key id"),
    ),
    request_body = UpdateKey,
    responses(
        (status = 200, description = "The updated key", body = ApiKey),
        (status = 404, description = "No such project or key", body = ErrorBody),
    )
)]
pub async fn update_key(
    State(shared): State<Shared>,
    caller: Caller,
    RequestId(request_id): RequestId,
    Path((project_id, key_id)): Path<(String, String)>,
    Json(body): Json<UpdateKey>,
) -> Result<Json<ApiKey>, ApiError> {
    caller.require_project_admin(&project_id)?;
    if (body.rate_limit.is_some() || body.clear_rate_limit) && !caller.is_admin() {
        return Err(ApiError::AdminRequired);
    }

    let mut tx = shared.store().begin().await?;
    let key = keys::update(&mut tx, &project_id, &key_id, &body).await?;
    let change = Change {
        caller: &caller,
        request_id: &request_id,
    };
    let details = json!({ "name": body.name, "rate_limit": key.rate_limit });
    change
        .record(&mut tx, Some(&project_id), "key.update", &key_id, details)
        .await?;
    tx.commit().await?;
    shared.auth().forget_keys();

    tracing::info!(project_id = %project_id, key_id = %key_id, "key updated");
    Ok(Json(key))
}

/// Revokes a key: it, and every token minted from it, stops working within
/// `auth_cache_ttl` on every replica.
#[utoipa::path(
    delete,
    path = "/projects/{project}/keys/{key}",
    tag = "keys",
    params(
        ("project" = String, Path, description = "Project id"),
        ("key" = String, Path, description = "Key id"),
    ),
    responses(
        (status = 200, description = "The revoked key", body = ApiKey),
        (status = 404, description = "No such project or key", body = ErrorBody),
    )
)]
pub async fn revoke_key(
    State(shared): State<Shared>,
    caller: Caller,
    RequestId(request_id): RequestId,
    Path((project_id, key_id)): Path<(String, String)>,
) -> Result<Json<ApiKey>, ApiError> {
    caller.require_project_admin(&project_id)?;

    let mut tx = shared.store().begin().await?;
    let key = keys::revoke(&mut tx, &project_id, &key_id).await?;
    let change = Change {
        caller: &caller,
        request_id: &request_id,
    };
    change
        .record(&mut tx, Some(&project_id), "key.revoke", &key_id, json!({}))
        .await?;
    tx.commit().await?;
    shared.auth().forget_keys();

    tracing::info!(project_id = %project_id, key_id = %key_id, "key revoked");
    Ok(Json(key))
}

/// Replaces a key's secret; the old one stops working, the key's tokens do not.
#[utoipa::path(
    post,
    path = "/projects/{project}/keys/{key}/rotate",
    tag = "keys",
    params(
        ("project" = String, Path, description = "Project id"),
        ("key" = String, Path, description = "Key id"),
    ),
    responses(
        (status = 200, description = "The key with its new secret", body = KeyWithSecret),
        (status = 401, description = "The key is revoked", body = ErrorBody),
        (status = 404, description = "No such project or key", body = ErrorBody),
    )
)]
pub async fn rotate_key(
    State(shared): State<Shared>,
    caller: Caller,
    RequestId(request_id): RequestId,
    Path((project_id, key_id)): Path<(String, String)>,
) -> Result<Json<KeyWithSecret>, ApiError> {
    caller.require_project_admin(&project_id)?;

    let mut tx = shared.store().begin().await?;
    // The new secret is as good as the key: only a credential that could have created this
    // key may receive it.
    let current = keys::get(&mut tx, &project_id, &key_id).await?;
    check_within(
        &caller,
        &current.scopes,
        &current.resources,
        current.expires_at,
    )?;
    let rotated = keys::rotate(&mut tx, &project_id, &key_id).await?;
    let change = Change {
        caller: &caller,
        request_id: &request_id,
    };
    change
        .record(&mut tx, Some(&project_id), "key.rotate", &key_id, json!({}))
        .await?;
    tx.commit().await?;
    shared.auth().forget_keys();

    tracing::info!(project_id = %project_id, key_id = %key_id, "key rotated");
    Ok(Json(rotated))
}
