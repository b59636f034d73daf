//! PUT of an object: the body streams to the blob store, is verified, and becomes visible
//! with its quota and outbox event in one transaction.

use std::collections::BTreeMap;

use axum::body::Body;
use axum::extract::State;
use axum::http::header::{self, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use plinth_shared::auth::Caller;
use plinth_shared::extract::Json;
use plinth_shared::quota::Gauge;
use plinth_shared::{ApiError, projects};
use plinth_types::console::{Quotas, UploadLimits};
use plinth_types::storage::ObjectInfo;
use plinth_types::{ErrorBody, Scope};

use crate::Storage;
use crate::blobs::{WriteError, Written};
use crate::conditions::WriteConditions;
use crate::meta::{self, BucketRow, EventKind, NewObject};
use crate::names::{BucketName, ObjectKey};
use crate::objects::ObjectPath;

/// Prefix of user-metadata headers.
pub(crate) const META_PREFIX: &str = "x-plinth-meta-";

/// Header carrying an optional hex or base64 SHA-256 of the body.
const SHA256_HEADER: &str = "x-plinth-checksum-sha256";

/// Header naming the object a PUT copies (`bucket/key`), server-side, instead of a body.
const COPY_SOURCE_HEADER: &str = "x-plinth-copy-source";

/// Most bytes of user metadata (names and values) per object, as in S3.
const MAX_METADATA_BYTES: usize = 2048;

/// What a PUT's headers say about the object.
#[derive(Clone, Debug, Default)]
pub(crate) struct UploadHeaders {
    pub(crate) content_type: String,
    pub(crate) cache_control: Option<String>,
    pub(crate) content_disposition: Option<String>,
    pub(crate) metadata: BTreeMap<String, String>,
    pub(crate) content_length: Option<u64>,
    pub(crate) md5: Option<[u8; 16]>,
    pub(crate) sha256: Option<[u8; 32]>,
}

fn header_text(headers: &HeaderMap, name: &'static str) -> Result<Option<String>, ApiError> {
    headers
        .get(name)
        .map(|value| {
            value
                .to_str()
                .map(str::to_owned)
                .map_err(|_| ApiError::InvalidHeader {
                    name,
                    reason: "must be visible ASCII".into(),
                })
        })
        .transpose()
}

impl UploadHeaders {
    pub(crate) fn parse(headers: &HeaderMap) -> Result<UploadHeaders, ApiError> {
        let content_type = header_text(headers, "content-type")?
            .unwrap_or_else(|| "application/octet-stream".into());
        let content_length = header_text(headers, "content-length")?
            .map(|text| {
                text.parse::<u64>().map_err(|_| ApiError::InvalidHeader {
                    name: "content-length",
                    reason: "must be a number".into(),
                })
            })
            .transpose()?;
        let md5 = header_text(headers, "content-md5")?
            .map(|text| decode_digest::<16>("content-md5", &text))
            .transpose()?;
        let sha256 = header_text(headers, SHA256_HEADER)?
            .map(|text| decode_digest::<32>(SHA256_HEADER, &text))
            .transpose()?;

        let mut metadata = BTreeMap::new();
        let mut metadata_bytes = 0;
        for (name, value) in headers {
            let Some(field) = name.as_str().strip_prefix(META_PREFIX) else {
                continue;
            };
            let value = value.to_str().map_err(|_| ApiError::InvalidHeader {
                name: "x-plinth-meta-*",
                reason: format!("`{name}` must be visible ASCII"),
            })?;
            metadata_bytes += field.len() + value.len();
            metadata.insert(field.to_owned(), value.to_owned());
        }
        if metadata_bytes > MAX_METADATA_BYTES {
            return Err(ApiError::InvalidHeader {
                name: "x-plinth-meta-*",
                reason: format!("user metadata is limited to {MAX_METADATA_BYTES} bytes"),
            });
        }
        Ok(UploadHeaders {
            content_type,
            cache_control: header_text(headers, "cache-control")?,
            content_disposition: header_text(headers, "content-disposition")?,
            metadata,
            content_length,
            md5,
            sha256,
        })
    }
}

/// Decodes a digest given as base64 (as `Content-MD5` is) or hex.
fn decode_digest<const N: usize>(name: &'static str, text: &str) -> Result<[u8; N], ApiError> {
    let invalid = || ApiError::InvalidHeader {
        name,
        reason: format!("must be {N} bytes as base64 or hex"),
    };
    let bytes = if text.len() == N * 2 && text.bytes().all(|b| b.is_ascii_hexdigit()) {
        (0..N)
            .map(|i| u8::from_str_radix(&text[i * 2..i * 2 + 2], 16))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|_| invalid())?
    } else {
        STANDARD.decode(text.trim()).map_err(|_| invalid())?
    };
    bytes.try_into().map_err(|_| invalid())
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Whether a content type matches one of the bucket's patterns (`image/png`, `image/*`).
pub(crate) fn content_type_allowed(allowed: &[String], content_type: &str) -> bool {
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    allowed.is_empty()
        || allowed.iter().any(|pattern| {
            let pattern = pattern.to_ascii_lowercase();
            match pattern.strip_suffix("/*") {
                Some(kind) => essence.split('/').next() == Some(kind),
                None => pattern == essence,
            }
        })
}

/// The largest object this upload may store: the smallest of the operator's ceiling, the
/// project's quota and the bucket's setting.
pub(crate) async fn upload_limit(storage: &Storage, bucket: &BucketRow) -> Result<u64, ApiError> {
    let mut conn = storage.shared.store().pool().acquire().await?;
    let project = projects::get(&mut conn, &bucket.project_id).await?;
    Ok(limit_of(storage, bucket, &project.quotas))
}

/// [`upload_limit`], given the project's quota overrides.
fn limit_of(storage: &Storage, bucket: &BucketRow, overrides: &Quotas) -> u64 {
    let quotas = storage.shared.quotas().effective(overrides);
    let limits = [
        Some(storage.shared.config().storage_max_object_bytes),
        quotas.object_size_max,
        bucket.bucket.max_object_size,
    ];
    limits.into_iter().flatten().min().unwrap_or(u64::MAX)
}

/// Stores an object: PUT `/storage/v1/buckets/{bucket}/objects/{key}` with the bytes as the
/// body. The body is streamed to disk, never held in memory whole.
#[utoipa::path(
    put,
    path = "/storage/v1/buckets/{bucket}/objects/{key}",
    tag = "storage",
    params(
        ("bucket" = String, Path, description = "Bucket name"),
        ("key" = String, Path, description = "Object key; `/` allowed"),
    ),
    request_body(content = Vec<u8>, content_type = "application/octet-stream"),
    responses(
        (status = 200, description = "Stored", body = ObjectInfo),
        (status = 400, description = "Bad key, header or checksum", body = ErrorBody),
        (status = 403, description = "Over quota", body = ErrorBody),
        (status = 404, description = "No such bucket", body = ErrorBody),
        (status = 413, description = "Object too large", body = ErrorBody),
    )
)]
pub async fn put_object(
    State(storage): State<Storage>,
    caller: Caller,
    path: ObjectPath,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let (bucket_name, key) = path.parse()?;
    caller.authorize(Scope::StorageWrite, &key.resource(&bucket_name))?;
    let project_id = caller.project()?;
    if let Some(source) = header_text(&headers, COPY_SOURCE_HEADER)? {
        let (source_bucket, source_key) = parse_copy_source(&source)?;
        caller.authorize(Scope::StorageRead, &source_key.resource(&source_bucket))?;
        return copy(
            &storage,
            project_id,
            (&source_bucket, &source_key),
            (&bucket_name, &key),
            &headers,
        )
        .await;
    }
    store(
        &storage,
        project_id,
        &bucket_name,
        &key,
        &headers,
        body,
        None,
    )
    .await
}

/// Stores an object for a caller already authorised to write it; `signed` carries the
/// limits of a signed upload URL.
pub(crate) async fn store(
    storage: &Storage,
    project_id: &str,
    bucket_name: &BucketName,
    key: &ObjectKey,
    headers: &HeaderMap,
    body: Body,
    signed: Option<&UploadLimits>,
) -> Result<Response, ApiError> {
    let upload = UploadHeaders::parse(headers)?;
    let conditions = WriteConditions::parse(headers)?;

    let (bucket, quotas) = {
        let mut conn = storage.shared.store().pool().acquire().await?;
        meta::get_bucket_and_quotas(&mut conn, project_id, bucket_name).await?
    };
    if !content_type_allowed(&bucket.bucket.allowed_content_types, &upload.content_type) {
        return Err(ApiError::ContentTypeNotAllowed(upload.content_type));
    }
    if let Some(wanted) = signed.and_then(|limits| limits.content_type.as_deref())
        && !wanted.eq_ignore_ascii_case(&upload.content_type)
    {
        return Err(ApiError::ContentTypeNotAllowed(upload.content_type));
    }
    // Checked before the body is read, to spare a doomed upload; checked again inside the
    // writing transaction, where it counts. A PUT without conditions skips the lookup.
    if !conditions.is_empty() {
        let mut conn = storage.shared.store().pool().acquire().await?;
        let current = match meta::get_object(&mut conn, &bucket, key).await {
            Ok(row) => Some(row.info.etag),
            Err(ApiError::ObjectNotFound(_)) => None,
            Err(err) => return Err(err),
        };
        conditions.check(current.as_deref())?;
    }
    let mut limit = limit_of(storage, &bucket, &quotas);
    if let Some(max_size) = signed.and_then(|limits| limits.max_size) {
        limit = limit.min(max_size);
    }
    if upload.content_length.is_some_and(|length| length > limit) {
        return Err(ApiError::ObjectTooLarge { limit });
    }

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
    let stored = match verify(&upload, &written) {
        Ok(()) => {
            // The limits read before the body was: the quota in force when it began.
            let limits = Some(&quotas);
            commit_object(
                storage,
                &bucket,
                key,
                &upload,
                &conditions,
                &written,
                limits,
            )
            .await
        }
        Err(err) => Err(err),
    };
    let info = match stored {
        Ok(info) => info,
        Err(err) => {
            // Nothing names the new blob: remove it, so a refused upload leaves nothing.
            if let Err(io) = storage.blobs.delete(&written.blob_id).await {
                tracing::warn!(blob_id = %written.blob_id, error = %io, "refused upload's blob not removed");
            }
            return Err(err);
        }
    };

    storage
        .shared
        .usage()
        .record(project_id, "ingress_bytes", written.size);
    let mut response = Json(&info).into_response();
    if let Ok(etag) = HeaderValue::from_str(&info.etag) {
        response.headers_mut().insert(header::ETAG, etag);
    }
    Ok(response)
}

fn verify(upload: &UploadHeaders, written: &Written) -> Result<(), ApiError> {
    if upload
        .content_length
        .is_some_and(|length| length != written.size)
    {
        return Err(ApiError::InvalidHeader {
            name: "content-length",
            reason: "does not match the body".into(),
        });
    }
    if upload.md5.is_some_and(|md5| md5 != written.md5) {
        return Err(ApiError::ChecksumMismatch("Content-MD5"));
    }
    if upload.sha256.is_some_and(|sha| sha != written.sha256) {
        return Err(ApiError::ChecksumMismatch(SHA256_HEADER));
    }
    Ok(())
}

/// Makes a written blob the object's current version: row, quotas and outbox event in one
/// transaction; the replaced version's blob is removed once that has committed.
fn parse_copy_source(source: &str) -> Result<(BucketName, ObjectKey), ApiError> {
    let (bucket, key) = source
        .trim_start_matches('/')
        .split_once('/')
        .ok_or_else(|| ApiError::InvalidHeader {
            name: COPY_SOURCE_HEADER,
            reason: "must be `bucket/key`".into(),
        })?;
    Ok((BucketName::parse(bucket)?, ObjectKey::parse(key)?))
}

fn digest_from_hex<const N: usize>(text: &str) -> Option<[u8; N]> {
    let text = text.trim_matches('"');
    if text.len() != N * 2 {
        return None;
    }
    let bytes: Option<Vec<u8>> = (0..N)
        .map(|i| u8::from_str_radix(&text[i * 2..i * 2 + 2], 16).ok())
        .collect();
    bytes?.try_into().ok()
}

/// Copies an object within the project, server-side: the new version shares the source's
/// bytes, content headers and metadata (S3's `COPY` directive), and is subject to the
/// destination bucket's limits, the PUT's conditions and the project's quotas.
async fn copy(
    storage: &Storage,
    project_id: &str,
    (source_bucket, source_key): (&BucketName, &ObjectKey),
    (bucket_name, key): (&BucketName, &ObjectKey),
    headers: &HeaderMap,
) -> Result<Response, ApiError> {
    let conditions = WriteConditions::parse(headers)?;
    let (source, bucket, current) = {
        let mut conn = storage.shared.store().pool().acquire().await?;
        let source_row = meta::get_bucket(&mut conn, project_id, source_bucket).await?;
        let source = meta::get_object(&mut conn, &source_row, source_key).await?;
        let bucket = meta::get_bucket(&mut conn, project_id, bucket_name).await?;
        let current = match meta::get_object(&mut conn, &bucket, key).await {
            Ok(row) => Some(row.info.etag),
            Err(ApiError::ObjectNotFound(_)) => None,
            Err(err) => return Err(err),
        };
        (source, bucket, current)
    };
    conditions.check(current.as_deref())?;
    let info = &source.info;
    if !content_type_allowed(&bucket.bucket.allowed_content_types, &info.content_type) {
        return Err(ApiError::ContentTypeNotAllowed(info.content_type.clone()));
    }
    let limit = upload_limit(storage, &bucket).await?;
    if info.size > limit {
        return Err(ApiError::ObjectTooLarge { limit });
    }

    let blob_id = storage
        .blobs
        .copy(&source.blob_id)
        .await
        .map_err(ApiError::internal)?;
    let written = Written {
        blob_id,
        size: info.size,
        md5: digest_from_hex(&info.etag).unwrap_or_default(),
        sha256: digest_from_hex(&info.sha256).unwrap_or([0; 32]),
    };
    let upload = UploadHeaders {
        content_type: info.content_type.clone(),
        cache_control: info.cache_control.clone(),
        content_disposition: info.content_disposition.clone(),
        metadata: info.metadata.clone(),
        content_length: None,
        md5: None,
        sha256: None,
    };
    let stored = commit_object(storage, &bucket, key, &upload, &conditions, &written, None).await;
    let info = match stored {
        Ok(info) => info,
        Err(err) => {
            if let Err(io) = storage.blobs.delete(&written.blob_id).await {
                tracing::warn!(blob_id = %written.blob_id, error = %io, "refused copy's blob not removed");
            }
            return Err(err);
        }
    };
    let mut response = Json(&info).into_response();
    if let Ok(etag) = HeaderValue::from_str(&info.etag) {
        response.headers_mut().insert(header::ETAG, etag);
    }
    Ok(response)
}

async fn commit_object(
    storage: &Storage,
    bucket: &BucketRow,
    key: &ObjectKey,
    upload: &UploadHeaders,
    conditions: &WriteConditions,
    written: &Written,
    limits: Option<&Quotas>,
) -> Result<ObjectInfo, ApiError> {
    let etag = format!("\"{}\"", hex(&written.md5));
    commit_version(
        storage, bucket, key, upload, conditions, written, &etag, None, limits,
    )
    .await
}

/// A multipart upload being completed, by id.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Finishing<'a> {
    pub(crate) upload_id: &'a str,
}

/// Makes a written blob the current version of `key`, with the given ETag: row, quotas and
/// outbox event in one transaction (and, for a multipart upload, the end of the upload,
/// whose parts' reservations become the object's).
#[allow(clippy::too_many_arguments)]
pub(crate) async fn commit_version(
    storage: &Storage,
    bucket: &BucketRow,
    key: &ObjectKey,
    upload: &UploadHeaders,
    conditions: &WriteConditions,
    written: &Written,
    etag: &str,
    finishing: Option<Finishing<'_>>,
    limits: Option<&Quotas>,
) -> Result<ObjectInfo, ApiError> {
    let (bucket, key, upload, conditions) = (
        bucket.clone(),
        key.clone(),
        upload.clone(),
        conditions.clone(),
    );
    let (blob_id, size, etag, sha256) = (
        written.blob_id.clone(),
        written.size,
        etag.to_owned(),
        hex(&written.sha256),
    );
    let upload_id = finishing.map(|finishing| finishing.upload_id.to_owned());
    let quotas = storage.shared.quotas().clone();
    let limits = limits.cloned();
    let (info, replaced, finished) = storage
        .shared
        .store()
        .write(move |tx| {
            Box::pin(async move {
                // Taken in the transaction, so that of two racing writes the later one has
                // the later time.
                let modified_at = plinth_shared::ids::now_millis();
                let object = NewObject {
                    key: &key,
                    blob_id: &blob_id,
                    size,
                    etag: &etag,
                    sha256: &sha256,
                    content_type: &upload.content_type,
                    cache_control: upload.cache_control.as_deref(),
                    content_disposition: upload.content_disposition.as_deref(),
                    metadata: &upload.metadata,
                    modified_at,
                };
                let replaced = meta::upsert_object(tx, &bucket, &object).await?;
                conditions.check(replaced.as_ref().map(|old| old.etag.as_str()))?;
                let old_size = replaced.as_ref().map_or(0, |old| old.size);
                // The parts of a completed upload already hold their bytes; they pass to the
                // object.
                let finished = match &upload_id {
                    Some(upload_id) => crate::uploads::finish(tx, upload_id).await?,
                    None => crate::uploads::Finished::default(),
                };
                let grows = i64::try_from(size).unwrap_or(i64::MAX)
                    - i64::try_from(old_size).unwrap_or(i64::MAX)
                    - i64::try_from(finished.bytes).unwrap_or(i64::MAX);
                let added = i64::from(replaced.is_none());
                let changes = [(Gauge::StoredBytes, grows), (Gauge::Objects, added)];
                match &limits {
                    Some(limits) => {
                        quotas
                            .reserve_all_under(tx, &bucket.project_id, limits, &changes)
                            .await?;
                    }
                    None => quotas.reserve_all(tx, &bucket.project_id, &changes).await?,
                }
                meta::record_event(tx, &bucket, &key, EventKind::Created, size, Some(&etag))
                    .await?;
                Ok((object.info(&bucket), replaced, finished))
            })
        })
        .await?;

    let obsolete = replaced
        .map(|old| old.blob_id)
        .into_iter()
        .chain(finished.blobs);
    for blob_id in obsolete {
        if let Err(err) = storage.blobs.delete(&blob_id).await {
            tracing::warn!(blob_id = %blob_id, error = %err, "obsolete blob not removed");
        }
    }
    Ok(info)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_decode_from_base64_or_hex() {
        let md5 = [0xabu8; 16];
        assert_eq!(
            decode_digest::<16>("content-md5", &STANDARD.encode(md5)).unwrap(),
            md5
        );
        assert_eq!(
            decode_digest::<16>("content-md5", &"ab".repeat(16)).unwrap(),
            md5
        );
        assert!(decode_digest::<16>("content-md5", "nope").is_err());
        assert!(decode_digest::<16>("content-md5", &STANDARD.encode([1u8; 15])).is_err());
    }

    #[test]
    fn content_type_patterns_match_by_type() {
        let allowed = vec!["image/*".to_owned(), "application/pdf".to_owned()];
        assert!(content_type_allowed(&allowed, "image/png"));
        assert!(content_type_allowed(&allowed, "Application/PDF; q=1"));
        assert!(!content_type_allowed(&allowed, "text/html"));
        assert!(content_type_allowed(&[], "anything/at-all"));
    }
}
