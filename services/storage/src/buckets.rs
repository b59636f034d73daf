//! Bucket routes.

use axum::extract::State;
use axum::http::StatusCode;
use plinth_shared::ApiError;
use plinth_shared::auth::Caller;
use plinth_shared::extract::{Json, Path, Query};
use plinth_types::storage::{Bucket, CreateBucket, UpdateBucket};
use plinth_types::{ErrorBody, Scope};
use serde::Deserialize;

use crate::names::BucketName;
use crate::{Storage, meta};

/// Creates a bucket.
#[utoipa::path(
    post,
    path = "/buckets",
    tag = "storage",
    request_body = CreateBucket,
    responses(
        (status = 201, description = "Created", body = Bucket),
        (status = 400, description = "Bad name or settings", body = ErrorBody),
        (status = 409, description = "Name in use", body = ErrorBody),
    )
)]
pub async fn create_bucket(
    State(storage): State<Storage>,
    caller: Caller,
    Json(body): Json<CreateBucket>,
) -> Result<(StatusCode, Json<Bucket>), ApiError> {
    let name = BucketName::parse(&body.name)?;
    caller.authorize(Scope::StorageWrite, &name.resource())?;
    let project_id = caller.project()?;

    let mut tx = storage.shared.store().begin().await?;
    let bucket = meta::create_bucket(&mut tx, project_id, &name, &body).await?;
    tx.commit().await?;

    tracing::info!(project_id, bucket = %name.as_str(), "bucket created");
    Ok((StatusCode::CREATED, Json(bucket.bucket)))
}

/// Lists the project's buckets.
#[utoipa::path(
    get,
    path = "/buckets",
    tag = "storage",
    responses((status = 200, description = "Buckets by name", body = Vec<Bucket>))
)]
pub async fn list_buckets(
    State(storage): State<Storage>,
    caller: Caller,
) -> Result<Json<Vec<Bucket>>, ApiError> {
    caller.require_scope(Scope::StorageRead)?;
    let project_id = caller.project()?;

    let mut conn = storage.shared.store().pool().acquire().await?;
    let buckets = meta::list_buckets(&mut conn, project_id).await?;
    // A credential limited to some buckets sees only those.
    let visible = buckets
        .into_iter()
        .filter(|bucket| {
            let resource = format!("bucket:{}", bucket.name);
            plinth_shared::auth::pattern::allowed(&caller.resources, &resource)
                || caller
                    .resources
                    .iter()
                    .any(|p| p.as_str().starts_with(&format!("{resource}/")))
        })
        .collect();
    Ok(Json(visible))
}

/// Reads a bucket's settings.
#[utoipa::path(
    get,
    path = "/buckets/{bucket}",
    tag = "storage",
    params(("bucket" = String, Path, description = "Bucket name")),
    responses(
        (status = 200, description = "The bucket", body = Bucket),
        (status = 404, description = "No such bucket", body = ErrorBody),
    )
)]
pub async fn get_bucket(
    State(storage): State<Storage>,
    caller: Caller,
    Path(bucket): Path<String>,
) -> Result<Json<Bucket>, ApiError> {
    let name = BucketName::parse(&bucket)?;
    caller.authorize(Scope::StorageRead, &name.resource())?;
    let project_id = caller.project()?;

    let mut conn = storage.shared.store().pool().acquire().await?;
    Ok(Json(
        meta::get_bucket(&mut conn, project_id, &name).await?.bucket,
    ))
}

/// Changes a bucket's settings.
#[utoipa::path(
    patch,
    path = "/buckets/{bucket}",
    tag = "storage",
    params(("bucket" = String, Path, description = "Bucket name")),
    request_body = UpdateBucket,
    responses(
        (status = 200, description = "The updated bucket", body = Bucket),
        (status = 404, description = "No such bucket", body = ErrorBody),
    )
)]
pub async fn update_bucket(
    State(storage): State<Storage>,
    caller: Caller,
    Path(bucket): Path<String>,
    Json(body): Json<UpdateBucket>,
) -> Result<Json<Bucket>, ApiError> {
    let name = BucketName::parse(&bucket)?;
    caller.authorize(Scope::StorageWrite, &name.resource())?;
    let project_id = caller.project()?;

    let mut tx = storage.shared.store().begin().await?;
    let bucket = meta::update_bucket(&mut tx, project_id, &name, &body).await?;
    tx.commit().await?;

    tracing::info!(project_id, bucket = %name.as_str(), "bucket updated");
    Ok(Json(bucket.bucket))
}

/// Query of `DELETE /storage/v1/buckets/{bucket}`.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct DeleteBucketQuery {
    /// Delete the objects too.
    #[serde(default)]
    pub force: bool,
}

/// Deletes a bucket: refused while it holds objects, unless `force=true`.
#[utoipa::path(
    delete,
    path = "/buckets/{bucket}",
    tag = "storage",
    params(("bucket" = String, Path, description = "Bucket name"), DeleteBucketQuery),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, description = "No such bucket", body = ErrorBody),
        (status = 409, description = "Not empty", body = ErrorBody),
    )
)]
pub async fn delete_bucket(
    State(storage): State<Storage>,
    caller: Caller,
    Path(bucket): Path<String>,
    Query(query): Query<DeleteBucketQuery>,
) -> Result<StatusCode, ApiError> {
    let name = BucketName::parse(&bucket)?;
    caller.authorize(Scope::StorageWrite, &name.resource())?;
    let project_id = caller.project()?;

    let mut tx = storage.shared.store().begin().await?;
    let bucket = meta::get_bucket(&mut tx, project_id, &name).await?;
    let (objects, bytes) = meta::bucket_contents(&mut tx, &bucket.id).await?;
    if objects > 0 && !query.force {
        return Err(ApiError::BucketNotEmpty(name.as_str().to_owned()));
    }
    let blobs = meta::delete_bucket(&mut tx, &bucket).await?;
    // In the order a PUT takes them (bytes, then objects), so that on PostgreSQL the two
    // cannot deadlock on the gauge rows.
    use plinth_shared::quota::Gauge;
    storage
        .shared
        .quotas()
        .reserve_all(
            &mut tx,
            project_id,
            &[(Gauge::StoredBytes, -bytes), (Gauge::Objects, -objects)],
        )
        .await?;
    tx.commit().await?;

    // The rows are gone, so nothing can read these blobs any more.
    for blob_id in blobs {
        if let Err(err) = storage.blobs.delete(&blob_id).await {
            tracing::warn!(blob_id, error = %err, "blob of a deleted bucket not removed");
        }
    }
    tracing::info!(project_id, bucket = %name.as_str(), objects, "bucket deleted");
    Ok(StatusCode::NO_CONTENT)
}
