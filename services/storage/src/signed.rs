//! Signed URLs (a GET or PUT of one object, no `Authorization` header needed, until they
//! expire) and public reads of public buckets.
//!
//! A signed URL carries an access token down-scoped to exactly one object and one scope,
//! with the upload's limits in its claims. It is checked like any token, so revoking the key
//! that signed it ends it too; expired or altered URLs get 403.

use axum::body::Body;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use plinth_shared::auth::Caller;
use plinth_shared::extract::{Json, Path, Query};
use plinth_shared::{ApiError, Shared};
use plinth_types::console::{TokenRequest, UploadLimits};
use plinth_types::storage::{SignUrl, SignedMethod, SignedUrl};
use plinth_types::{ErrorBody, Scope};
use serde::Deserialize;

use crate::get::{self, Serve};
use crate::names::{BucketName, ObjectKey};
use crate::objects::ObjectPath;
use crate::put;
use crate::{Storage, meta};

/// Lifetime of a signed URL that names none.
const DEFAULT_EXPIRES_IN: u64 = 900;

/// Percent-encodes a key for a URL path, keeping `/` as the separator.
fn encode_key(key: &str) -> String {
    let mut out = String::with_capacity(key.len());
    for byte in key.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' | b'/' => {
                out.push(byte as char)
            }
            _ => out.push_str(&format!("%{byte:02X}")),
        }
    }
    out
}

fn scope_of(method: SignedMethod) -> Scope {
    match method {
        SignedMethod::Get => Scope::StorageRead,
        SignedMethod::Put => Scope::StorageWrite,
    }
}

/// Creates a signed URL for one object.
#[utoipa::path(
    post,
    path = "/buckets/{bucket}/signed-urls",
    tag = "storage",
    params(("bucket" = String, Path, description = "Bucket name")),
    request_body = SignUrl,
    responses(
        (status = 200, description = "The URL", body = SignedUrl),
        (status = 403, description = "The credential may not do this itself", body = ErrorBody),
        (status = 404, description = "No such bucket", body = ErrorBody),
    )
)]
pub async fn create_signed_url(
    State(storage): State<Storage>,
    caller: Caller,
    Path(bucket): Path<String>,
    Json(body): Json<SignUrl>,
) -> Result<Json<SignedUrl>, ApiError> {
    let bucket_name = BucketName::parse(&bucket)?;
    let key = ObjectKey::parse(&body.key)?;
    let resource = key.resource(&bucket_name);
    let scope = scope_of(body.method);
    caller.authorize(scope, &resource)?;
    let project_id = caller.project()?;
    {
        let mut conn = storage.shared.store().pool().acquire().await?;
        meta::get_bucket(&mut conn, project_id, &bucket_name).await?;
    }

    let upload = match body.method {
        SignedMethod::Put => Some(UploadLimits {
            content_type: body.content_type.clone(),
            max_size: body.max_size,
        }),
        SignedMethod::Get => None,
    };
    let request = TokenRequest {
        scopes: Some(vec![scope]),
        resources: Some(vec![resource]),
        ttl_seconds: Some(body.expires_in.unwrap_or(DEFAULT_EXPIRES_IN)),
        search_filters: None,
    };
    let token = storage.shared.auth().mint_with(&caller, &request, upload)?;
    let url = format!(
        "/storage/v1/signed/{}/{}?token={}",
        bucket_name.as_str(),
        encode_key(key.as_str()),
        token.token
    );
    Ok(Json(SignedUrl {
        url,
        method: body.method,
        expires_at: token.expires_at,
    }))
}

/// The query of a signed URL.
#[derive(Debug, Deserialize)]
pub struct SignedQuery {
    token: Option<String>,
}

impl SignedQuery {
    fn token(&self) -> Result<&str, ApiError> {
        self.token
            .as_deref()
            .ok_or(ApiError::SignedUrlInvalid("it has no token"))
    }
}

/// Resolves a signed URL's token into the caller it stands for, checking that it names
/// exactly this object and allows `scope`.
async fn signed_caller(
    shared: &Shared,
    token: &str,
    resource: &str,
    scope: Scope,
) -> Result<Caller, ApiError> {
    let caller = shared
        .auth()
        .authenticate(token)
        .await
        .map_err(|err| match err {
            ApiError::TokenExpired => ApiError::SignedUrlExpired,
            ApiError::KeyRevoked | ApiError::KeyExpired => {
                ApiError::SignedUrlInvalid("its key no longer works")
            }
            _ => ApiError::SignedUrlInvalid("the signature does not verify"),
        })?;
    // The token must be for this very object: a pattern match is not enough, since a key
    // may itself contain `*`.
    let exact = caller.resources.len() == 1 && caller.resources[0].as_str() == resource;
    if !exact || !caller.scopes.contains(&scope) {
        return Err(ApiError::SignedUrlInvalid(
            "it is for another object or method",
        ));
    }
    if let (Some(key_id), Some(limit)) = (caller.key_id(), caller.rate_limit) {
        shared.rate_limits().check(key_id, limit)?;
    }
    if let Some(project_id) = caller.project_id() {
        shared.usage().record(project_id, "requests", 1);
    }
    Ok(caller)
}

async fn signed_read(
    storage: &Storage,
    path: ObjectPath,
    token: &str,
    headers: &HeaderMap,
    what: Serve,
) -> Result<Response, ApiError> {
    let (bucket, key) = path.parse()?;
    let caller = signed_caller(
        &storage.shared,
        token,
        &key.resource(&bucket),
        Scope::StorageRead,
    )
    .await?;
    get::serve(storage, caller.project()?, &bucket, &key, headers, what).await
}

/// GET through a signed URL.
pub async fn signed_get(
    State(storage): State<Storage>,
    path: ObjectPath,
    Query(query): Query<SignedQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    signed_read(&storage, path, query.token()?, &headers, Serve::Bytes).await
}

/// HEAD through a signed URL.
pub async fn signed_head(
    State(storage): State<Storage>,
    path: ObjectPath,
    Query(query): Query<SignedQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    signed_read(&storage, path, query.token()?, &headers, Serve::Headers).await
}

/// PUT through a signed URL, within the limits it was signed with.
pub async fn signed_put(
    State(storage): State<Storage>,
    path: ObjectPath,
    Query(query): Query<SignedQuery>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let (bucket, key) = path.parse()?;
    let caller = signed_caller(
        &storage.shared,
        query.token()?,
        &key.resource(&bucket),
        Scope::StorageWrite,
    )
    .await?;
    let project_id = caller.project()?;
    let limits = caller.upload.clone().unwrap_or_default();
    put::store(
        &storage,
        project_id,
        &bucket,
        &key,
        &headers,
        body,
        Some(&limits),
    )
    .await
}

/// The path of a public read: the project, then the bucket and key.
#[derive(Debug, Deserialize)]
pub struct PublicPath {
    project: String,
    bucket: String,
    key: String,
}

async fn public_read(
    storage: &Storage,
    path: PublicPath,
    headers: &HeaderMap,
    what: Serve,
) -> Result<Response, ApiError> {
    let bucket = BucketName::parse(&path.bucket)?;
    let key = ObjectKey::parse(&path.key)?;
    get::serve(storage, &path.project, &bucket, &key, headers, what).await
}

/// GET of an object in a public bucket, without credentials.
pub async fn public_get(
    State(storage): State<Storage>,
    Path(path): Path<PublicPath>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    public_read(&storage, path, &headers, Serve::PublicBytes).await
}

/// HEAD of an object in a public bucket, without credentials.
pub async fn public_head(
    State(storage): State<Storage>,
    Path(path): Path<PublicPath>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    public_read(&storage, path, &headers, Serve::PublicHeaders).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_encoded_per_segment() {
        assert_eq!(encode_key("a/b c/ü?.png"), "a/b%20c/%C3%BC%3F.png");
        assert_eq!(encode_key("plain-key_1.txt"), "plain-key_1.txt");
    }
}
