//! Access tokens, signing keys and the JWKS document.

use axum::extract::State;
use axum::http::header::CACHE_CONTROL;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use plinth_shared::auth::Caller;
use plinth_shared::extract::{Json, RequestId};
use plinth_shared::{ApiError, Shared};
use plinth_types::ErrorBody;
use plinth_types::console::{AccessToken, Jwks, SigningKey, TokenRequest};
use serde_json::json;

use crate::audit::Change;

/// Exchanges the bearer API key for an access token, or down-scopes the bearer token into a
/// narrower one. Escalation (more scopes, wider resources, a longer life) is refused.
#[utoipa::path(
    post,
    path = "/tokens",
    tag = "tokens",
    request_body = TokenRequest,
    responses(
        (status = 200, description = "The token", body = AccessToken),
        (status = 403, description = "The request widens the credential", body = ErrorBody),
    )
)]
pub async fn mint_token(
    State(shared): State<Shared>,
    caller: Caller,
    Json(body): Json<TokenRequest>,
) -> Result<Json<AccessToken>, ApiError> {
    let token = shared.auth().mint(&caller, &body)?;
    if let Some(project_id) = caller.project_id() {
        shared.usage().record(project_id, "tokens_minted", 1);
    }
    Ok(Json(token))
}

/// Lists the published signing keys (admin token only).
#[utoipa::path(
    get,
    path = "/signing-keys",
    tag = "tokens",
    responses((status = 200, description = "Newest first", body = Vec<SigningKey>))
)]
pub async fn list_signing_keys(
    State(shared): State<Shared>,
    caller: Caller,
) -> Result<Json<Vec<SigningKey>>, ApiError> {
    caller.require_admin()?;
    let keys = shared
        .auth()
        .keyring()
        .list()
        .await
        .map_err(ApiError::internal)?;
    Ok(Json(keys))
}

/// Starts signing with a new key (admin token only). The old key stays published until the
/// tokens it signed have expired.
#[utoipa::path(
    post,
    path = "/signing-keys/rotate",
    tag = "tokens",
    responses((status = 201, description = "The new active key", body = SigningKey))
)]
pub async fn rotate_signing_key(
    State(shared): State<Shared>,
    caller: Caller,
    RequestId(request_id): RequestId,
) -> Result<(StatusCode, Json<SigningKey>), ApiError> {
    caller.require_admin()?;

    let key = shared
        .auth()
        .keyring()
        .rotate()
        .await
        .map_err(ApiError::internal)?;
    let mut tx = shared.store().begin().await?;
    let change = Change {
        caller: &caller,
        request_id: &request_id,
    };
    change
        .record(&mut tx, None, "signing_key.rotate", &key.kid, json!({}))
        .await?;
    tx.commit().await?;

    tracing::info!(kid = %key.kid, "signing key rotated");
    Ok((StatusCode::CREATED, Json(key)))
}

/// The public keys that verify Plinth's access tokens (no credential needed).
#[utoipa::path(
    get,
    path = "/.well-known/jwks.json",
    tag = "tokens",
    responses((status = 200, description = "JSON Web Key Set", body = Jwks))
)]
pub async fn jwks(State(shared): State<Shared>) -> Response {
    let mut response = Json(shared.auth().keyring().jwks()).into_response();
    // Short enough that a verifier outside Plinth sees a rotation well within the overlap.
    response.headers_mut().insert(
        CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=60"),
    );
    response
}
