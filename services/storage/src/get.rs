//! GET and HEAD of an object: conditions, single ranges, and the headers that keep user
//! content from running on the API's origin.

use axum::body::Body;
use axum::extract::State;
use axum::http::StatusCode;
use axum::http::header::{self, HeaderMap, HeaderName, HeaderValue};
use axum::response::{IntoResponse, Response};
use plinth_shared::ApiError;
use plinth_shared::auth::Caller;
use plinth_types::storage::ObjectInfo;
use plinth_types::{ErrorBody, Scope};

use crate::Storage;
use crate::conditions::{self, Read};
use crate::meta;
use crate::names::{BucketName, ObjectKey};
use crate::objects::ObjectPath;
use crate::put::META_PREFIX;

/// Types a browser would run or render as a document on the API's origin.
fn is_active_content(content_type: &str) -> bool {
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    ["html", "xml", "svg", "javascript", "ecmascript", "xhtml"]
        .iter()
        .any(|t| essence.contains(t))
}

/// A single byte range, resolved against the object's size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct ByteRange {
    start: u64,
    end: u64,
}

/// Resolves a `Range` header (RFC 9110, section 14). Headers this server does not serve as a
/// range (other units, several ranges, bad syntax) are ignored, so the whole object is sent,
/// as the RFC allows; a well-formed range that lies outside the object is a 416.
fn parse_range(header: Option<&HeaderValue>, size: u64) -> Result<Option<ByteRange>, ApiError> {
    let Some(text) = header.and_then(|value| value.to_str().ok()) else {
        return Ok(None);
    };
    let Some(spec) = text.trim().strip_prefix("bytes=") else {
        return Ok(None);
    };
    if spec.contains(',') {
        return Ok(None);
    }
    let Some((first, last)) = spec.split_once('-') else {
        return Ok(None);
    };
    let (first, last) = (first.trim(), last.trim());
    let unsatisfiable = ApiError::RangeNotSatisfiable { size };
    let range = match (first.parse::<u64>().ok(), last.parse::<u64>().ok()) {
        (Some(start), _) if start >= size => return Err(unsatisfiable),
        (Some(start), Some(end)) if end >= start => ByteRange {
            start,
            end: end.min(size - 1),
        },
        (Some(start), None) if last.is_empty() => ByteRange {
            start,
            end: size - 1,
        },
        (None, Some(suffix)) if first.is_empty() => {
            if suffix == 0 || size == 0 {
                return Err(unsatisfiable);
            }
            ByteRange {
                start: size.saturating_sub(suffix),
                end: size - 1,
            }
        }
        _ => return Ok(None),
    };
    Ok(Some(range))
}

/// The headers every object response carries, GET and HEAD alike.
fn object_headers(info: &ObjectInfo) -> HeaderMap {
    let mut headers = HeaderMap::new();
    let mut set = |name: HeaderName, value: &str| {
        if let Ok(value) = HeaderValue::from_str(value) {
            headers.insert(name, value);
        }
    };
    set(header::CONTENT_TYPE, &info.content_type);
    set(header::ETAG, &info.etag);
    set(
        header::LAST_MODIFIED,
        &httpdate::fmt_http_date(info.last_modified.into()),
    );
    set(header::ACCEPT_RANGES, "bytes");
    if let Some(cache_control) = &info.cache_control {
        set(header::CACHE_CONTROL, cache_control);
    }
    // User content never runs on the API's origin: no sniffing, no scripts, and types a
    // browser would render as a page are downloaded instead.
    set(header::X_CONTENT_TYPE_OPTIONS, "nosniff");
    set(header::CONTENT_SECURITY_POLICY, "sandbox");
    if is_active_content(&info.content_type) {
        set(header::CONTENT_DISPOSITION, "attachment");
    } else if let Some(disposition) = &info.content_disposition {
        set(header::CONTENT_DISPOSITION, disposition);
    }
    for (name, value) in &info.metadata {
        if let (Ok(name), Ok(value)) = (
            HeaderName::try_from(format!("{META_PREFIX}{name}")),
            HeaderValue::from_str(value),
        ) {
            headers.insert(name, value);
        }
    }
    headers
}

/// A 304 carries the validators and caching headers, and no body.
fn not_modified(info: &ObjectInfo) -> Response {
    let mut headers = HeaderMap::new();
    let all = object_headers(info);
    for name in [header::ETAG, header::LAST_MODIFIED, header::CACHE_CONTROL] {
        if let Some(value) = all.get(&name) {
            headers.insert(name, value.clone());
        }
    }
    (StatusCode::NOT_MODIFIED, headers).into_response()
}

/// Reads an object, or one byte range of it (`Range: bytes=...`, answered with 206).
#[utoipa::path(
    get,
    path = "/storage/v1/buckets/{bucket}/objects/{key}",
    tag = "storage",
    params(
        ("bucket" = String, Path, description = "Bucket name"),
        ("key" = String, Path, description = "Object key"),
    ),
    responses(
        (status = 200, description = "The object's bytes"),
        (status = 206, description = "The requested range"),
        (status = 404, description = "No such bucket or object", body = ErrorBody),
        (status = 416, description = "Range outside the object", body = ErrorBody),
    )
)]
pub async fn get_object(
    State(storage): State<Storage>,
    caller: Caller,
    path: ObjectPath,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    read_as_caller(&storage, &caller, &path, &headers, Serve::Bytes).await
}

/// GET or HEAD by a credential: authorised for the object, then served.
async fn read_as_caller(
    storage: &Storage,
    caller: &Caller,
    path: &ObjectPath,
    headers: &HeaderMap,
    what: Serve,
) -> Result<Response, ApiError> {
    let (bucket_name, key) = path.parse()?;
    caller.authorize(Scope::StorageRead, &key.resource(&bucket_name))?;
    serve(
        storage,
        caller.project()?,
        &bucket_name,
        &key,
        headers,
        what,
    )
    .await
}

/// What [`serve`] answers with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Serve {
    /// The bytes (GET).
    Bytes,
    /// The headers only (HEAD).
    Headers,
    /// The bytes, and only if the bucket is public (GET without credentials).
    PublicBytes,
    /// The headers, and only if the bucket is public.
    PublicHeaders,
}

/// Serves an object to a reader already authorised for it (or to anyone, for the public
/// variants, which answer like a missing bucket when the bucket is not public).
pub(crate) async fn serve(
    storage: &Storage,
    project_id: &str,
    bucket_name: &BucketName,
    key: &ObjectKey,
    headers: &HeaderMap,
    what: Serve,
) -> Result<Response, ApiError> {
    let (bucket, object) = {
        let mut conn = storage.shared.store().pool().acquire().await?;
        meta::get_bucket_object(&mut conn, project_id, bucket_name, key).await?
    };
    if matches!(what, Serve::PublicBytes | Serve::PublicHeaders) && !bucket.bucket.public_read {
        return Err(ApiError::BucketNotFound(bucket_name.as_str().to_owned()));
    }
    let mut object = object.ok_or_else(|| ApiError::ObjectNotFound(key.as_str().to_owned()))?;
    if conditions::check_read(headers, &object.info)? == Read::NotModified {
        return Ok(not_modified(&object.info));
    }
    if matches!(what, Serve::Headers | Serve::PublicHeaders) {
        let mut headers = object_headers(&object.info);
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(object.info.size));
        return Ok((StatusCode::OK, headers).into_response());
    }
    let size = object.info.size;
    let range = parse_range(headers.get(header::RANGE), size)?;
    let (start, len) = range.map_or((0, size), |r| (r.start, r.end - r.start + 1));

    // An overwrite may remove the blob between reading the row and opening the file; the
    // row then names the new version, so read it once more.
    let (stream, region) = match storage.blobs.open_region(&object.blob_id, start, len).await {
        Ok(opened) => opened,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
            let key = ObjectKey::parse(&object.info.key)?;
            let mut conn = storage.shared.store().pool().acquire().await?;
            object = meta::get_object(&mut conn, &bucket, &key).await?;
            if object.info.size != size {
                return Err(ApiError::internal(std::io::Error::other(
                    "object changed while being read",
                )));
            }
            storage
                .blobs
                .open_region(&object.blob_id, start, len)
                .await
                .map_err(ApiError::internal)?
        }
        Err(err) => return Err(ApiError::internal(err)),
    };

    storage
        .shared
        .usage()
        .record(&bucket.project_id, "egress_bytes", len);
    let mut response = Body::from_stream(stream).into_response();
    *response.headers_mut() = object_headers(&object.info);
    // The file's bytes go to the socket as they are where the connection allows it.
    if let Some(region) = region {
        response.extensions_mut().insert(region);
    }
    response
        .headers_mut()
        .insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    if let Some(range) = range {
        *response.status_mut() = StatusCode::PARTIAL_CONTENT;
        let content_range = format!("bytes {}-{}/{size}", range.start, range.end);
        if let Ok(value) = HeaderValue::from_str(&content_range) {
            response.headers_mut().insert(header::CONTENT_RANGE, value);
        }
    }
    Ok(response)
}

/// Reads an object's headers without its bytes.
#[utoipa::path(
    head,
    path = "/storage/v1/buckets/{bucket}/objects/{key}",
    tag = "storage",
    params(
        ("bucket" = String, Path, description = "Bucket name"),
        ("key" = String, Path, description = "Object key"),
    ),
    responses(
        (status = 200, description = "The object's headers"),
        (status = 404, description = "No such bucket or object"),
    )
)]
pub async fn head_object(
    State(storage): State<Storage>,
    caller: Caller,
    path: ObjectPath,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    read_as_caller(&storage, &caller, &path, &headers, Serve::Headers).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range(text: &str, size: u64) -> Result<Option<ByteRange>, ApiError> {
        parse_range(Some(&HeaderValue::from_str(text).unwrap()), size)
    }

    #[test]
    fn ranges_resolve_like_rfc_9110() {
        assert_eq!(
            range("bytes=0-4", 10).unwrap(),
            Some(ByteRange { start: 0, end: 4 })
        );
        assert_eq!(
            range("bytes=5-", 10).unwrap(),
            Some(ByteRange { start: 5, end: 9 })
        );
        assert_eq!(
            range("bytes=-3", 10).unwrap(),
            Some(ByteRange { start: 7, end: 9 })
        );
        assert_eq!(
            range("bytes=-30", 10).unwrap(),
            Some(ByteRange { start: 0, end: 9 })
        );
        assert_eq!(
            range("bytes=8-100", 10).unwrap(),
            Some(ByteRange { start: 8, end: 9 })
        );
        assert!(matches!(
            range("bytes=10-", 10),
            Err(ApiError::RangeNotSatisfiable { size: 10 })
        ));
        assert!(range("bytes=-0", 10).is_err());
        for ignored in [
            "items=0-1",
            "bytes=0-1,3-4",
            "bytes=5-2",
            "bytes=x-y",
            "bytes",
        ] {
            assert_eq!(range(ignored, 10).unwrap(), None, "{ignored}");
        }
    }

    #[test]
    fn active_types_are_recognised() {
        for active in [
            "text/html",
            "image/svg+xml",
            "application/xhtml+xml",
            "text/javascript; charset=utf-8",
            "application/xml",
        ] {
            assert!(is_active_content(active), "{active}");
        }
        for passive in [
            "image/png",
            "application/pdf",
            "text/plain",
            "application/octet-stream",
        ] {
            assert!(!is_active_content(passive), "{passive}");
        }
    }
}
