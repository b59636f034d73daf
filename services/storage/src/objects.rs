//! The object routes' shared pieces, and DELETE; PUT is in [`crate::put`], GET and HEAD in
//! [`crate::get`].

use axum::extract::State;
use axum::http::StatusCode;
use plinth_shared::ApiError;
use plinth_shared::auth::Caller;
use plinth_shared::quota::Gauge;
use plinth_types::{ErrorBody, Scope};

use crate::Storage;
use crate::meta::{self, BucketRow, EventKind};
use crate::names::{BucketName, ObjectKey};

/// The `{bucket}` and `{*key}` of an object route. A key that is not valid percent-encoded
/// UTF-8 is refused as a bad key, not as a generic bad parameter.
#[derive(Debug)]
pub struct ObjectPath {
    bucket: String,
    key: String,
}

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for ObjectPath {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, Self::Rejection> {
        let axum::extract::Path((bucket, key)) =
            axum::extract::Path::<(String, String)>::from_request_parts(parts, state)
                .await
                .map_err(|_| {
                    ApiError::InvalidObjectKey(
                        "object key: the path is not valid percent-encoded UTF-8".into(),
                    )
                })?;
        Ok(ObjectPath { bucket, key })
    }
}

impl ObjectPath {
    /// Validates both parts.
    ///
    /// # Errors
    ///
    /// Returns `invalid_bucket_name` or `invalid_object_key`.
    pub fn parse(&self) -> Result<(BucketName, ObjectKey), ApiError> {
        Ok((
            BucketName::parse(&self.bucket)?,
            ObjectKey::parse(&self.key)?,
        ))
    }
}

pub(crate) async fn load_bucket(
    storage: &Storage,
    project_id: &str,
    name: &BucketName,
) -> Result<BucketRow, ApiError> {
    let mut conn = storage.shared.store().pool().acquire().await?;
    meta::get_bucket(&mut conn, project_id, name).await
}

/// Deletes an object. As in S3, deleting a key that does not exist succeeds.
#[utoipa::path(
    delete,
    path = "/storage/v1/buckets/{bucket}/objects/{key}",
    tag = "storage",
    params(
        ("bucket" = String, Path, description = "Bucket name"),
        ("key" = String, Path, description = "Object key"),
    ),
    responses(
        (status = 204, description = "Deleted, or was not there"),
        (status = 404, description = "No such bucket", body = ErrorBody),
    )
)]
pub async fn delete_object(
    State(storage): State<Storage>,
    caller: Caller,
    path: ObjectPath,
) -> Result<StatusCode, ApiError> {
    let (bucket_name, key) = path.parse()?;
    caller.authorize(Scope::StorageWrite, &key.resource(&bucket_name))?;
    let project_id = caller.project()?;
    let bucket = load_bucket(&storage, project_id, &bucket_name).await?;

    let quotas = storage.shared.quotas();
    let mut tx = storage.shared.store().begin().await?;
    let Some((removed, etag)) = meta::delete_object(&mut tx, &bucket, &key).await? else {
        return Ok(StatusCode::NO_CONTENT);
    };
    let size = i64::try_from(removed.size).unwrap_or(i64::MAX);
    quotas
        .release(&mut tx, project_id, Gauge::StoredBytes, size)
        .await?;
    quotas
        .release(&mut tx, project_id, Gauge::Objects, 1)
        .await?;
    meta::record_event(
        &mut tx,
        &bucket,
        &key,
        EventKind::Deleted,
        removed.size,
        Some(&etag),
    )
    .await?;
    tx.commit().await?;

    if let Err(err) = storage.blobs.delete(&removed.blob_id).await {
        tracing::warn!(blob_id = %removed.blob_id, error = %err, "deleted object's blob not removed");
    }
    Ok(StatusCode::NO_CONTENT)
}
