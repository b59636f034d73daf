//! Multipart uploads: create, upload parts (any order, concurrently, again after a dropped
//! connection), list parts, complete, abort; and the sweeper that ends expired uploads.
//!
//! Each part is a blob of its own and counts against the project's stored bytes as soon as
//! it is acknowledged; completion concatenates the named parts into the object's blob and
//! hands their reservation to the object, in the same transaction that makes it visible.

use std::time::Duration;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use md5::{Digest, Md5};
use plinth_shared::ApiError;
use plinth_shared::auth::Caller;
use plinth_shared::extract::{Json, Path};
use plinth_shared::ids::now_millis;
use plinth_shared::quota::Gauge;
use plinth_types::storage::{CompleteUpload, CreateUpload, ObjectInfo, Upload, UploadPart};
use plinth_types::{ErrorBody, Scope};

use crate::Storage;
use crate::blobs::WriteError;
use crate::conditions::WriteConditions;
use crate::meta::{self, BucketRow};
use crate::names::{BucketName, ObjectKey};
use crate::put::{self, Finishing, UploadHeaders};
use crate::uploads::{self, UploadRow};

/// Highest part number, as in S3.
const MAX_PARTS: u32 = 10_000;

async fn load(
    storage: &Storage,
    caller: &Caller,
    bucket: &str,
    upload_id: &str,
) -> Result<(BucketRow, UploadRow, ObjectKey), ApiError> {
    let bucket_name = BucketName::parse(bucket)?;
    let project_id = caller.project()?;
    let mut conn = storage.shared.store().pool().acquire().await?;
    let bucket = meta::get_bucket(&mut conn, project_id, &bucket_name).await?;
    let upload = uploads::get(&mut conn, &bucket, upload_id).await?;
    let key = ObjectKey::parse(&upload.upload.key)?;
    caller.authorize(Scope::StorageWrite, &key.resource(&bucket_name))?;
    Ok((bucket, upload, key))
}

/// Starts a multipart upload.
#[utoipa::path(
    post,
    path = "/buckets/{bucket}/uploads",
    tag = "storage",
    params(("bucket" = String, Path, description = "Bucket name")),
    request_body = CreateUpload,
    responses(
        (status = 201, description = "Started", body = Upload),
        (status = 404, description = "No such bucket", body = ErrorBody),
    )
)]
pub async fn create_upload(
    State(storage): State<Storage>,
    caller: Caller,
    Path(bucket): Path<String>,
    Json(body): Json<CreateUpload>,
) -> Result<(StatusCode, Json<Upload>), ApiError> {
    let bucket_name = BucketName::parse(&bucket)?;
    let key = ObjectKey::parse(&body.key)?;
    caller.authorize(Scope::StorageWrite, &key.resource(&bucket_name))?;
    let project_id = caller.project()?;

    let mut tx = storage.shared.store().begin().await?;
    let bucket = meta::get_bucket(&mut tx, project_id, &bucket_name).await?;
    let content_type = body
        .content_type
        .as_deref()
        .unwrap_or("application/octet-stream");
    if !put::content_type_allowed(&bucket.bucket.allowed_content_types, content_type) {
        return Err(ApiError::ContentTypeNotAllowed(content_type.to_owned()));
    }
    let expiry = storage.shared.config().storage_upload_expiry;
    let expires_at = now_millis() + expiry.as_millis() as i64;
    let upload = uploads::create(&mut tx, &bucket, &key, &body, expires_at).await?;
    tx.commit().await?;
    Ok((StatusCode::CREATED, Json(upload)))
}

/// Uploads (or uploads again) one part. Parts may arrive in any order and concurrently.
#[utoipa::path(
    put,
    path = "/storage/v1/buckets/{bucket}/uploads/{upload}/parts/{part}",
    tag = "storage",
    params(
        ("bucket" = String, Path, description = "Bucket name"),
        ("upload" = String, Path, description = "Upload id"),
        ("part" = u32, Path, description = "Part number, 1 to 10000"),
    ),
    request_body(content = Vec<u8>, content_type = "application/octet-stream"),
    responses(
        (status = 200, description = "Stored", body = UploadPart),
        (status = 403, description = "Over quota", body = ErrorBody),
        (status = 404, description = "No such upload", body = ErrorBody),
    )
)]
pub async fn upload_part(
    State(storage): State<Storage>,
    caller: Caller,
    Path((bucket, upload_id, part_number)): Path<(String, String, u32)>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<UploadPart>, ApiError> {
    if !(1..=MAX_PARTS).contains(&part_number) {
        return Err(ApiError::InvalidPart(format!(
            "part numbers are 1 to {MAX_PARTS}"
        )));
    }
    let (bucket, upload, _) = load(&storage, &caller, &bucket, &upload_id).await?;
    let checks = UploadHeaders::parse(&headers)?;
    let limit = put::upload_limit(&storage, &bucket).await?;

    let written = storage
        .blobs
        .write(body.into_data_stream(), limit)
        .await
        .map_err(|err| match err {
            WriteError::TooLarge { limit } => ApiError::ObjectTooLarge { limit },
            WriteError::Body(err) => {
                ApiError::InvalidParameter(format!("the body could not be read: {err}"))
            }
            WriteError::Io(err) => ApiError::internal(err),
        })?;
    let md5 = put::hex(&written.md5);
    let stored = async {
        if checks.md5.is_some_and(|expected| expected != written.md5) {
            return Err(ApiError::ChecksumMismatch("Content-MD5"));
        }
        let mut tx = storage.shared.store().begin().await?;
        let replaced = uploads::put_part(
            &mut tx,
            &upload.upload.upload_id,
            part_number,
            &written.blob_id,
            written.size,
            &md5,
        )
        .await?;
        let grows = written.size as i64 - replaced.as_ref().map_or(0, |(_, size)| *size as i64);
        storage
            .shared
            .quotas()
            .reserve(&mut tx, &bucket.project_id, Gauge::StoredBytes, grows)
            .await?;
        tx.commit().await?;
        Ok(replaced)
    };
    match stored.await {
        Ok(replaced) => {
            if let Some((old_blob, _)) = replaced {
                let _ = storage.blobs.delete(&old_blob).await;
            }
        }
        Err(err) => {
            let _ = storage.blobs.delete(&written.blob_id).await;
            return Err(err);
        }
    }
    storage
        .shared
        .usage()
        .record(&bucket.project_id, "ingress_bytes", written.size);
    Ok(Json(UploadPart {
        part_number,
        size: written.size,
        etag: format!("\"{md5}\""),
    }))
}

/// Lists the parts acknowledged so far: what a client resumes from.
#[utoipa::path(
    get,
    path = "/buckets/{bucket}/uploads/{upload}/parts",
    tag = "storage",
    params(
        ("bucket" = String, Path, description = "Bucket name"),
        ("upload" = String, Path, description = "Upload id"),
    ),
    responses(
        (status = 200, description = "Parts by number", body = Vec<UploadPart>),
        (status = 404, description = "No such upload", body = ErrorBody),
    )
)]
pub async fn list_parts(
    State(storage): State<Storage>,
    caller: Caller,
    Path((bucket, upload_id)): Path<(String, String)>,
) -> Result<Json<Vec<UploadPart>>, ApiError> {
    let (_, upload, _) = load(&storage, &caller, &bucket, &upload_id).await?;
    let mut conn = storage.shared.store().pool().acquire().await?;
    let parts = uploads::parts(&mut conn, &upload.upload.upload_id).await?;
    Ok(Json(parts.into_iter().map(|p| p.part).collect()))
}

/// Completes an upload from the named parts, in order; parts not named are discarded.
#[utoipa::path(
    post,
    path = "/buckets/{bucket}/uploads/{upload}/complete",
    tag = "storage",
    params(
        ("bucket" = String, Path, description = "Bucket name"),
        ("upload" = String, Path, description = "Upload id"),
    ),
    request_body = CompleteUpload,
    responses(
        (status = 200, description = "The object", body = ObjectInfo),
        (status = 400, description = "A missing, mismatched or undersized part", body = ErrorBody),
        (status = 404, description = "No such upload", body = ErrorBody),
    )
)]
pub async fn complete_upload(
    State(storage): State<Storage>,
    caller: Caller,
    Path((bucket, upload_id)): Path<(String, String)>,
    headers: HeaderMap,
    Json(body): Json<CompleteUpload>,
) -> Result<Json<ObjectInfo>, ApiError> {
    let (bucket, upload, key) = load(&storage, &caller, &bucket, &upload_id).await?;
    let conditions = WriteConditions::parse(&headers)?;
    let stored = {
        let mut conn = storage.shared.store().pool().acquire().await?;
        uploads::parts(&mut conn, &upload.upload.upload_id).await?
    };

    if body.parts.is_empty() {
        return Err(ApiError::InvalidPart(
            "a completion names at least one part".into(),
        ));
    }
    let min_part = storage.shared.config().storage_min_part_bytes;
    let mut chosen = Vec::with_capacity(body.parts.len());
    let mut previous = 0;
    for (i, wanted) in body.parts.iter().enumerate() {
        if wanted.part_number <= previous {
            return Err(ApiError::InvalidPart(
                "parts must be in ascending order".into(),
            ));
        }
        previous = wanted.part_number;
        let part = stored
            .iter()
            .find(|p| p.part.part_number == wanted.part_number && p.part.etag == wanted.etag)
            .ok_or_else(|| {
                ApiError::InvalidPart(format!(
                    "part {} with ETag {} was not uploaded",
                    wanted.part_number, wanted.etag
                ))
            })?;
        if i + 1 < body.parts.len() && part.part.size < min_part {
            return Err(ApiError::InvalidPart(format!(
                "part {} is below the {min_part}-byte minimum of all but the last part",
                wanted.part_number
            )));
        }
        chosen.push(part);
    }
    let total: u64 = chosen.iter().map(|p| p.part.size).sum();
    let limit = put::upload_limit(&storage, &bucket).await?;
    if total > limit {
        return Err(ApiError::ObjectTooLarge { limit });
    }

    // S3's multipart ETag: the MD5 of the parts' binary MD5s, and the number of parts.
    let mut etag_md5 = Md5::new();
    for part in &chosen {
        let hex = part.part.etag.trim_matches('"');
        let bytes: Vec<u8> = (0..hex.len() / 2)
            .filter_map(|i| u8::from_str_radix(&hex[i * 2..i * 2 + 2], 16).ok())
            .collect();
        etag_md5.update(&bytes);
    }
    let etag = format!("\"{}-{}\"", put::hex(&etag_md5.finalize()), chosen.len());
    let blobs: Vec<String> = chosen.iter().map(|p| p.blob_id.clone()).collect();
    let written = storage
        .blobs
        .concat(&blobs)
        .await
        .map_err(ApiError::internal)?;

    let headers = UploadHeaders {
        content_type: upload.content_type.clone(),
        cache_control: upload.cache_control.clone(),
        content_disposition: upload.content_disposition.clone(),
        metadata: upload.metadata.clone(),
        ..UploadHeaders::default()
    };
    let finishing = Finishing {
        upload_id: &upload.upload.upload_id,
    };
    let committed = put::commit_version(
        &storage,
        &bucket,
        &key,
        &headers,
        &conditions,
        &written,
        &etag,
        Some(finishing),
        None,
    )
    .await;
    match committed {
        Ok(info) => Ok(Json(info)),
        Err(err) => {
            let _ = storage.blobs.delete(&written.blob_id).await;
            Err(err)
        }
    }
}

/// Aborts an upload: its parts are deleted and their bytes released.
#[utoipa::path(
    delete,
    path = "/buckets/{bucket}/uploads/{upload}",
    tag = "storage",
    params(
        ("bucket" = String, Path, description = "Bucket name"),
        ("upload" = String, Path, description = "Upload id"),
    ),
    responses(
        (status = 204, description = "Aborted"),
        (status = 404, description = "No such upload", body = ErrorBody),
    )
)]
pub async fn abort_upload(
    State(storage): State<Storage>,
    caller: Caller,
    Path((bucket, upload_id)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let (bucket, upload, _) = load(&storage, &caller, &bucket, &upload_id).await?;
    end_upload(&storage, &bucket.project_id, &upload.upload.upload_id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Ends an upload without an object: rows gone and bytes released in one transaction, then
/// the parts' blobs deleted.
async fn end_upload(storage: &Storage, project_id: &str, upload_id: &str) -> Result<(), ApiError> {
    let mut tx = storage.shared.store().begin().await?;
    let finished = uploads::finish(&mut tx, upload_id).await?;
    let bytes = i64::try_from(finished.bytes).unwrap_or(i64::MAX);
    storage
        .shared
        .quotas()
        .release(&mut tx, project_id, Gauge::StoredBytes, bytes)
        .await?;
    tx.commit().await?;
    for blob_id in finished.blobs {
        if let Err(err) = storage.blobs.delete(&blob_id).await {
            tracing::warn!(blob_id, error = %err, "blob of an ended upload not removed");
        }
    }
    Ok(())
}

/// Ends expired uploads, a batch at a time, every `every`.
pub(crate) async fn sweep_expired(storage: Storage, every: Duration) {
    let mut ticker = tokio::time::interval(every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        if let Err(err) = sweep_once(&storage).await {
            tracing::warn!(error = %err, "expired uploads not swept; trying again later");
        }
    }
}

/// Ends the uploads that have expired so far; returns how many.
///
/// # Errors
///
/// Returns the store's failure.
pub async fn sweep_once(storage: &Storage) -> Result<usize, ApiError> {
    let mut ended = 0;
    loop {
        let expired = {
            let mut conn = storage.shared.store().pool().acquire().await?;
            uploads::expired(&mut conn, 100).await?
        };
        if expired.is_empty() {
            return Ok(ended);
        }
        for upload in &expired {
            end_upload(storage, &upload.project_id, &upload.upload_id).await?;
            ended += 1;
        }
    }
}
