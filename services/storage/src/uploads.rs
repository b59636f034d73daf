//! The rows of multipart uploads and their parts.

use std::collections::BTreeMap;

use plinth_shared::ApiError;
use plinth_shared::ids::{from_millis, new_id, now_millis};
use plinth_types::storage::{CreateUpload, Upload, UploadPart};
use sqlx::any::AnyRow;
use sqlx::{AnyConnection, Row};

use crate::meta::BucketRow;
use crate::names::ObjectKey;

/// An upload row with what the completed object will carry.
#[derive(Clone, Debug)]
pub struct UploadRow {
    /// The public description.
    pub upload: Upload,
    /// Content type of the object.
    pub content_type: String,
    /// Cache-Control of the object.
    pub cache_control: Option<String>,
    /// Content-Disposition of the object.
    pub content_disposition: Option<String>,
    /// User metadata of the object.
    pub metadata: BTreeMap<String, String>,
}

/// A stored part.
#[derive(Clone, Debug)]
pub struct PartRow {
    /// The blob with its bytes.
    pub blob_id: String,
    /// The public description.
    pub part: UploadPart,
}

/// Starts an upload that expires at `expires_at_ms`.
///
/// # Errors
///
/// Returns the store's failure.
pub async fn create(
    conn: &mut AnyConnection,
    bucket: &BucketRow,
    key: &ObjectKey,
    request: &CreateUpload,
    expires_at_ms: i64,
) -> Result<Upload, ApiError> {
    let id = new_id("upl");
    let metadata = serde_json::to_string(&request.metadata).map_err(ApiError::internal)?;
    sqlx::query(
        "INSERT INTO uploads (id, bucket_id, key, content_type, cache_control, \
         content_disposition, metadata, created_at, expires_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )
    .bind(&id)
    .bind(&bucket.id)
    .bind(key.as_str())
    .bind(
        request
            .content_type
            .as_deref()
            .unwrap_or("application/octet-stream"),
    )
    .bind(request.cache_control.as_deref())
    .bind(request.content_disposition.as_deref())
    .bind(&metadata)
    .bind(now_millis())
    .bind(expires_at_ms)
    .execute(&mut *conn)
    .await?;
    Ok(Upload {
        upload_id: id,
        key: key.as_str().to_owned(),
        expires_at: from_millis(expires_at_ms),
    })
}

fn upload_from_row(row: &AnyRow) -> Result<UploadRow, ApiError> {
    let metadata: String = row.try_get("metadata")?;
    Ok(UploadRow {
        upload: Upload {
            upload_id: row.try_get("id")?,
            key: row.try_get("key")?,
            expires_at: from_millis(row.try_get("expires_at")?),
        },
        content_type: row.try_get("content_type")?,
        cache_control: row.try_get("cache_control")?,
        content_disposition: row.try_get("content_disposition")?,
        metadata: serde_json::from_str(&metadata).map_err(ApiError::internal)?,
    })
}

/// Reads an upload of a bucket that has not expired.
///
/// # Errors
///
/// Returns `upload_not_found`.
pub async fn get(
    conn: &mut AnyConnection,
    bucket: &BucketRow,
    upload_id: &str,
) -> Result<UploadRow, ApiError> {
    let row = sqlx::query(
        "SELECT id, key, content_type, cache_control, content_disposition, metadata, expires_at \
         FROM uploads WHERE id = $1 AND bucket_id = $2 AND expires_at > $3",
    )
    .bind(upload_id)
    .bind(&bucket.id)
    .bind(now_millis())
    .fetch_optional(&mut *conn)
    .await?
    .ok_or_else(|| ApiError::UploadNotFound(upload_id.to_owned()))?;
    upload_from_row(&row)
}

/// Records a part, returning the blob and size of the part it replaced.
///
/// # Errors
///
/// Returns the store's failure.
pub async fn put_part(
    conn: &mut AnyConnection,
    upload_id: &str,
    part_number: u32,
    blob_id: &str,
    size: u64,
    md5: &str,
) -> Result<Option<(String, u64)>, ApiError> {
    let old = sqlx::query(
        "SELECT blob_id, size FROM upload_parts WHERE upload_id = $1 AND part_number = $2",
    )
    .bind(upload_id)
    .bind(i64::from(part_number))
    .fetch_optional(&mut *conn)
    .await?;
    sqlx::query(
        "INSERT INTO upload_parts (upload_id, part_number, blob_id, size, md5, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (upload_id, part_number) DO UPDATE SET \
         blob_id = excluded.blob_id, size = excluded.size, md5 = excluded.md5, \
         created_at = excluded.created_at",
    )
    .bind(upload_id)
    .bind(i64::from(part_number))
    .bind(blob_id)
    .bind(size as i64)
    .bind(md5)
    .bind(now_millis())
    .execute(&mut *conn)
    .await?;
    old.map(|row| {
        let size: i64 = row.try_get("size")?;
        Ok((row.try_get("blob_id")?, size.max(0) as u64))
    })
    .transpose()
}

/// Lists an upload's parts by number.
///
/// # Errors
///
/// Returns the store's failure.
pub async fn parts(conn: &mut AnyConnection, upload_id: &str) -> Result<Vec<PartRow>, ApiError> {
    let rows = sqlx::query(
        "SELECT part_number, blob_id, size, md5 FROM upload_parts WHERE upload_id = $1 \
         ORDER BY part_number",
    )
    .bind(upload_id)
    .fetch_all(&mut *conn)
    .await?;
    rows.iter()
        .map(|row| {
            let number: i64 = row.try_get("part_number")?;
            let size: i64 = row.try_get("size")?;
            let md5: String = row.try_get("md5")?;
            Ok(PartRow {
                blob_id: row.try_get("blob_id")?,
                part: UploadPart {
                    part_number: number.clamp(0, i64::from(u32::MAX)) as u32,
                    size: size.max(0) as u64,
                    etag: format!("\"{md5}\""),
                },
            })
        })
        .collect()
}

/// What ending an upload released: the bytes its parts held, and their blobs, to delete
/// once the transaction has committed.
#[derive(Clone, Debug, Default)]
pub struct Finished {
    /// Bytes the parts had reserved.
    pub bytes: u64,
    /// The parts' blobs.
    pub blobs: Vec<String>,
}

/// Deletes an upload and its part rows inside the caller's transaction, so that a part
/// acknowledged up to that moment is accounted for.
///
/// # Errors
///
/// Returns the store's failure.
pub async fn finish(conn: &mut AnyConnection, upload_id: &str) -> Result<Finished, ApiError> {
    let rows = sqlx::query("DELETE FROM upload_parts WHERE upload_id = $1 RETURNING blob_id, size")
        .bind(upload_id)
        .fetch_all(&mut *conn)
        .await?;
    sqlx::query("DELETE FROM uploads WHERE id = $1")
        .bind(upload_id)
        .execute(&mut *conn)
        .await?;
    let mut finished = Finished::default();
    for row in rows {
        let size: i64 = row.try_get("size")?;
        finished.bytes += size.max(0) as u64;
        finished.blobs.push(row.try_get("blob_id")?);
    }
    Ok(finished)
}

/// An expired upload, with its project for the quota release.
#[derive(Clone, Debug)]
pub struct Expired {
    /// The upload.
    pub upload_id: String,
    /// Its bucket's project.
    pub project_id: String,
}

/// Lists up to `limit` uploads that expired before now.
///
/// # Errors
///
/// Returns the store's failure.
pub async fn expired(conn: &mut AnyConnection, limit: i64) -> Result<Vec<Expired>, ApiError> {
    let rows = sqlx::query(
        "SELECT u.id, b.project_id FROM uploads u JOIN buckets b ON b.id = u.bucket_id \
         WHERE u.expires_at <= $1 ORDER BY u.expires_at LIMIT $2",
    )
    .bind(now_millis())
    .bind(limit)
    .fetch_all(&mut *conn)
    .await?;
    rows.iter()
        .map(|row| {
            Ok(Expired {
                upload_id: row.try_get("id")?,
                project_id: row.try_get("project_id")?,
            })
        })
        .collect()
}
