//! Bodies of the storage API: buckets and object descriptions.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

/// A bucket of a project.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Bucket {
    /// The bucket's name, unique within its project.
    pub name: String,
    /// Whether objects can be read without credentials.
    pub public_read: bool,
    /// The largest object the bucket accepts, in bytes, if it sets one.
    pub max_object_size: Option<u64>,
    /// Content types the bucket accepts (`image/png`, or `image/*`); empty means any.
    pub allowed_content_types: Vec<String>,
    /// When the bucket was created.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// When its settings last changed.
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
}

/// Body of `POST /storage/v1/buckets`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CreateBucket {
    /// 3 to 63 lowercase letters, digits, `-` and `.`, as S3 names buckets.
    pub name: String,
    /// Serve GET and HEAD without credentials.
    #[serde(default)]
    pub public_read: bool,
    /// The largest object the bucket accepts, in bytes.
    #[serde(default)]
    pub max_object_size: Option<u64>,
    /// Content types the bucket accepts; empty means any.
    #[serde(default)]
    pub allowed_content_types: Vec<String>,
}

/// Body of `PATCH /storage/v1/buckets/{bucket}`; absent fields are left as they are.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct UpdateBucket {
    /// Serve GET and HEAD without credentials.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_read: Option<bool>,
    /// The largest object the bucket accepts; `0` removes the bucket's own limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_object_size: Option<u64>,
    /// Content types the bucket accepts; empty means any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_content_types: Option<Vec<String>>,
}

/// The description of a stored object, as listed and as returned by a PUT.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ObjectInfo {
    /// The bucket.
    pub bucket: String,
    /// The key.
    pub key: String,
    /// Size in bytes.
    pub size: u64,
    /// Entity tag: the hex MD5 of the bytes, quoted, as S3 gives it for single-part objects.
    pub etag: String,
    /// The content type it is served with.
    pub content_type: String,
    /// `Cache-Control` it is served with.
    pub cache_control: Option<String>,
    /// `Content-Disposition` it is served with.
    pub content_disposition: Option<String>,
    /// User metadata (`x-plinth-meta-*` headers, names lowercased without the prefix).
    pub metadata: BTreeMap<String, String>,
    /// The hex SHA-256 of the bytes.
    pub sha256: String,
    /// When this version was written.
    #[serde(with = "time::serde::rfc3339")]
    pub last_modified: OffsetDateTime,
}

/// The method a signed URL allows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "UPPERCASE")]
pub enum SignedMethod {
    /// Download the object (HEAD too).
    Get,
    /// Upload the object.
    Put,
}

/// Body of `POST /storage/v1/buckets/{bucket}/signed-urls`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct SignUrl {
    /// The object key the URL is for.
    pub key: String,
    /// `GET` or `PUT`.
    pub method: SignedMethod,
    /// Lifetime in seconds (default 900), at most the server's longest token lifetime and
    /// never past the signing credential's own expiry.
    #[serde(default)]
    pub expires_in: Option<u64>,
    /// For `PUT`: the only content type the upload may have.
    #[serde(default)]
    pub content_type: Option<String>,
    /// For `PUT`: the largest body the upload may send, in bytes.
    #[serde(default)]
    pub max_size: Option<u64>,
}

/// A signed URL: it works without any `Authorization` header until it expires.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SignedUrl {
    /// The path and query to request on the server (`/storage/v1/signed/...?token=...`).
    pub url: String,
    /// The method it allows.
    pub method: SignedMethod,
    /// When it stops working.
    #[serde(with = "time::serde::rfc3339")]
    pub expires_at: OffsetDateTime,
}

/// Query of `GET /storage/v1/buckets/{bucket}/objects`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::IntoParams))]
#[serde(deny_unknown_fields)]
pub struct ListObjectsQuery {
    /// Only keys that start with this.
    pub prefix: Option<String>,
    /// Group keys that contain this after the prefix into common prefixes (usually `/`).
    pub delimiter: Option<String>,
    /// Only keys after this one.
    pub start_after: Option<String>,
    /// Entries (objects and common prefixes) per page, 1 to 1000 (default 1000).
    pub limit: Option<u32>,
    /// A `next_cursor` from the previous page.
    pub cursor: Option<String>,
}

/// One page of a bucket listing, in key order.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ObjectListing {
    /// Objects on this page, with their metadata.
    pub objects: Vec<ObjectInfo>,
    /// Key prefixes up to and including the delimiter, each standing for the keys below it.
    pub common_prefixes: Vec<String>,
    /// The cursor of the next page, if there is one.
    pub next_cursor: Option<String>,
}

/// Body of `POST /storage/v1/buckets/{bucket}/uploads`: starts a multipart upload.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CreateUpload {
    /// The key the object will have.
    pub key: String,
    /// Its content type (default `application/octet-stream`).
    #[serde(default)]
    pub content_type: Option<String>,
    /// Its `Cache-Control`.
    #[serde(default)]
    pub cache_control: Option<String>,
    /// Its `Content-Disposition`.
    #[serde(default)]
    pub content_disposition: Option<String>,
    /// Its user metadata.
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
}

/// A multipart upload in progress.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Upload {
    /// The upload's id, for its parts and its completion.
    pub upload_id: String,
    /// The key the object will have.
    pub key: String,
    /// When the upload and its parts are deleted unless completed.
    #[serde(with = "time::serde::rfc3339")]
    pub expires_at: OffsetDateTime,
}

/// One acknowledged part.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct UploadPart {
    /// Its number, 1 to 10000.
    pub part_number: u32,
    /// Its size in bytes.
    pub size: u64,
    /// Its ETag: the quoted hex MD5 of its bytes.
    pub etag: String,
}

/// Body of `POST .../uploads/{upload}/complete`: the parts that make the object, in order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CompleteUpload {
    /// Part numbers in ascending order, each with the ETag its upload returned.
    pub parts: Vec<CompletedPart>,
}

/// One part of a completion.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CompletedPart {
    /// The part's number.
    pub part_number: u32,
    /// The ETag its upload returned.
    pub etag: String,
}
