//! The storage rows in the metadata store: buckets, the object index, the event outbox.

use std::collections::BTreeMap;

use plinth_shared::ApiError;
use plinth_shared::ids::{from_millis, new_id, now_millis};
use plinth_shared::store::is_unique_violation;
use plinth_types::console::Quotas;
use plinth_types::storage::{Bucket, CreateBucket, ObjectInfo, UpdateBucket};
use sqlx::any::AnyRow;
use sqlx::{AnyConnection, Row};

use crate::names::{BucketName, ObjectKey};

/// A bucket row, with the id objects refer to it by.
#[derive(Clone, Debug)]
pub struct BucketRow {
    /// Internal id.
    pub id: String,
    /// The owning project.
    pub project_id: String,
    /// The public description.
    pub bucket: Bucket,
}

fn bucket_from_row(row: &AnyRow) -> Result<BucketRow, ApiError> {
    let types: String = row.try_get("allowed_content_types")?;
    let max: Option<i64> = row.try_get("max_object_size")?;
    Ok(BucketRow {
        id: row.try_get("id")?,
        project_id: row.try_get("project_id")?,
        bucket: Bucket {
            name: row.try_get("name")?,
            public_read: row.try_get::<i64, _>("public_read")? != 0,
            max_object_size: max.map(|m| m.max(0) as u64),
            allowed_content_types: serde_json::from_str(&types).map_err(ApiError::internal)?,
            created_at: from_millis(row.try_get("created_at")?),
            updated_at: from_millis(row.try_get("updated_at")?),
        },
    })
}

/// Checks content-type patterns: `type/subtype` or `type/*`.
///
/// # Errors
///
/// Returns `invalid_field` naming the bad pattern.
pub fn validate_content_types(types: &[String]) -> Result<(), ApiError> {
    for pattern in types {
        let valid = pattern.split_once('/').is_some_and(|(kind, sub)| {
            !kind.is_empty()
                && !sub.is_empty()
                && pattern
                    .bytes()
                    .all(|b| b.is_ascii_graphic() && b != b',' && b != b';')
        });
        if !valid {
            return Err(ApiError::InvalidField {
                field: "allowed_content_types".into(),
                reason: format!("`{pattern}` is not `type/subtype` or `type/*`"),
            });
        }
    }
    Ok(())
}

fn size_limit(value: Option<u64>) -> Result<Option<i64>, ApiError> {
    match value {
        None | Some(0) => Ok(None),
        Some(v) => i64::try_from(v)
            .map(Some)
            .map_err(|_| ApiError::InvalidField {
                field: "max_object_size".into(),
                reason: "out of range".into(),
            }),
    }
}

const BUCKET_COLUMNS: &str = "b.id, b.project_id, b.name, b.public_read, b.max_object_size, \
     b.allowed_content_types, b.created_at, b.updated_at";

/// Creates a bucket.
///
/// # Errors
///
/// Returns `bucket_name_taken` when the project has one of this name.
pub async fn create_bucket(
    conn: &mut AnyConnection,
    project_id: &str,
    name: &BucketName,
    request: &CreateBucket,
) -> Result<BucketRow, ApiError> {
    validate_content_types(&request.allowed_content_types)?;
    let types =
        serde_json::to_string(&request.allowed_content_types).map_err(ApiError::internal)?;
    let now = now_millis();
    let inserted = sqlx::query(
        "INSERT INTO buckets (id, project_id, name, public_read, max_object_size, \
         allowed_content_types, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $7)",
    )
    .bind(new_id("bkt"))
    .bind(project_id)
    .bind(name.as_str())
    .bind(i64::from(request.public_read))
    .bind(size_limit(request.max_object_size)?)
    .bind(&types)
    .bind(now)
    .execute(&mut *conn)
    .await;
    match inserted {
        Ok(_) => get_bucket(conn, project_id, name).await,
        Err(err) if is_unique_violation(&err) => {
            Err(ApiError::BucketNameTaken(name.as_str().to_owned()))
        }
        Err(err) => Err(err.into()),
    }
}

/// Reads a bucket of a project; another project's bucket answers like a missing one.
///
/// # Errors
///
/// Returns `bucket_not_found`.
pub async fn get_bucket(
    conn: &mut AnyConnection,
    project_id: &str,
    name: &BucketName,
) -> Result<BucketRow, ApiError> {
    let sql =
        format!("SELECT {BUCKET_COLUMNS} FROM buckets b WHERE b.project_id = $1 AND b.name = $2");
    let row = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(project_id)
        .bind(name.as_str())
        .fetch_optional(&mut *conn)
        .await?
        .ok_or_else(|| ApiError::BucketNotFound(name.as_str().to_owned()))?;
    bucket_from_row(&row)
}

/// Reads a bucket, as [`get_bucket`] does, with its project's quota overrides: what a
/// write needs before it starts, in one query.
///
/// # Errors
///
/// Returns `bucket_not_found`.
pub async fn get_bucket_and_quotas(
    conn: &mut AnyConnection,
    project_id: &str,
    name: &BucketName,
) -> Result<(BucketRow, Quotas), ApiError> {
    let sql = format!(
        "SELECT {BUCKET_COLUMNS}, p.quotas FROM buckets b JOIN projects p ON p.id = b.project_id \
         WHERE b.project_id = $1 AND b.name = $2"
    );
    let row = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(project_id)
        .bind(name.as_str())
        .fetch_optional(&mut *conn)
        .await?
        .ok_or_else(|| ApiError::BucketNotFound(name.as_str().to_owned()))?;
    let quotas: String = row.try_get("quotas")?;
    let quotas = serde_json::from_str(&quotas).map_err(ApiError::internal)?;
    Ok((bucket_from_row(&row)?, quotas))
}

/// Lists a project's buckets by name.
///
/// # Errors
///
/// Returns the store's failure.
pub async fn list_buckets(
    conn: &mut AnyConnection,
    project_id: &str,
) -> Result<Vec<Bucket>, ApiError> {
    let sql =
        format!("SELECT {BUCKET_COLUMNS} FROM buckets b WHERE b.project_id = $1 ORDER BY b.name");
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(project_id)
        .fetch_all(&mut *conn)
        .await?;
    rows.iter()
        .map(|row| bucket_from_row(row).map(|b| b.bucket))
        .collect()
}

/// Changes a bucket's settings.
///
/// # Errors
///
/// Returns `bucket_not_found` or `invalid_field`.
pub async fn update_bucket(
    conn: &mut AnyConnection,
    project_id: &str,
    name: &BucketName,
    update: &UpdateBucket,
) -> Result<BucketRow, ApiError> {
    let current = get_bucket(conn, project_id, name).await?.bucket;
    let types = update
        .allowed_content_types
        .as_ref()
        .unwrap_or(&current.allowed_content_types);
    validate_content_types(types)?;
    let max = match update.max_object_size {
        Some(value) => size_limit(Some(value))?,
        None => size_limit(current.max_object_size)?,
    };
    sqlx::query(
        "UPDATE buckets SET public_read = $1, max_object_size = $2, allowed_content_types = $3, \
         updated_at = $4 WHERE project_id = $5 AND name = $6",
    )
    .bind(i64::from(update.public_read.unwrap_or(current.public_read)))
    .bind(max)
    .bind(serde_json::to_string(types).map_err(ApiError::internal)?)
    .bind(now_millis())
    .bind(project_id)
    .bind(name.as_str())
    .execute(&mut *conn)
    .await?;
    get_bucket(conn, project_id, name).await
}

/// Counts a bucket's objects and their bytes.
///
/// # Errors
///
/// Returns the store's failure.
pub async fn bucket_contents(
    conn: &mut AnyConnection,
    bucket_id: &str,
) -> Result<(i64, i64), ApiError> {
    let row = sqlx::query(
        "SELECT COUNT(*) AS objects, CAST(COALESCE(SUM(size), 0) AS BIGINT) AS bytes \
         FROM objects WHERE bucket_id = $1",
    )
    .bind(bucket_id)
    .fetch_one(&mut *conn)
    .await?;
    // The cast: PostgreSQL sums BIGINTs into NUMERIC, which the Any driver cannot decode.
    let objects: i64 = row.try_get("objects")?;
    let bytes: i64 = row.try_get("bytes")?;
    Ok((objects, bytes))
}

/// Deletes a bucket and its object rows, returning the blobs to delete after commit.
///
/// # Errors
///
/// Returns the store's failure.
pub async fn delete_bucket(
    conn: &mut AnyConnection,
    bucket: &BucketRow,
) -> Result<Vec<String>, ApiError> {
    let rows = sqlx::query("DELETE FROM objects WHERE bucket_id = $1 RETURNING blob_id")
        .bind(&bucket.id)
        .fetch_all(&mut *conn)
        .await?;
    let blobs = rows
        .iter()
        .map(|row| row.try_get("blob_id"))
        .collect::<Result<Vec<String>, _>>()?;
    sqlx::query("DELETE FROM buckets WHERE id = $1")
        .bind(&bucket.id)
        .execute(&mut *conn)
        .await?;
    Ok(blobs)
}

/// An object row.
#[derive(Clone, Debug)]
pub struct ObjectRow {
    /// The blob holding its bytes.
    pub blob_id: String,
    /// The public description.
    pub info: ObjectInfo,
}

fn object_from_row(bucket: &str, row: &AnyRow) -> Result<ObjectRow, ApiError> {
    let metadata: String = row.try_get("metadata")?;
    let size: i64 = row.try_get("size")?;
    Ok(ObjectRow {
        blob_id: row.try_get("blob_id")?,
        info: ObjectInfo {
            bucket: bucket.to_owned(),
            key: row.try_get("key")?,
            size: size.max(0) as u64,
            etag: row.try_get("etag")?,
            content_type: row.try_get("content_type")?,
            cache_control: row.try_get("cache_control")?,
            content_disposition: row.try_get("content_disposition")?,
            metadata: serde_json::from_str(&metadata).map_err(ApiError::internal)?,
            sha256: row.try_get("sha256")?,
            last_modified: from_millis(row.try_get("modified_at")?),
        },
    })
}

/// The object columns [`object_from_row`] reads, for a query whose objects table is `o`.
const OBJECT_COLUMNS: &str = "o.key, o.blob_id, o.size, o.etag, o.content_type, \
     o.cache_control, o.content_disposition, o.metadata, o.sha256, o.updated_at AS modified_at";

/// Reads a bucket and, if it holds one, the object at `key`, in one query: the read path of
/// every GET and HEAD.
///
/// # Errors
///
/// Returns `bucket_not_found`.
pub async fn get_bucket_object(
    conn: &mut AnyConnection,
    project_id: &str,
    name: &BucketName,
    key: &ObjectKey,
) -> Result<(BucketRow, Option<ObjectRow>), ApiError> {
    let sql = format!(
        "SELECT {BUCKET_COLUMNS}, {OBJECT_COLUMNS} FROM buckets b LEFT JOIN objects o ON o.bucket_id = b.id AND o.key = $3 \
         WHERE b.project_id = $1 AND b.name = $2"
    );
    let row = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(project_id)
        .bind(name.as_str())
        .bind(key.as_str())
        .fetch_optional(&mut *conn)
        .await?
        .ok_or_else(|| ApiError::BucketNotFound(name.as_str().to_owned()))?;
    let bucket = bucket_from_row(&row)?;
    let object = match row.try_get::<Option<String>, _>("blob_id")? {
        Some(_) => Some(object_from_row(&bucket.bucket.name, &row)?),
        None => None,
    };
    Ok((bucket, object))
}

/// Reads an object row.
///
/// # Errors
///
/// Returns `object_not_found`.
pub async fn get_object(
    conn: &mut AnyConnection,
    bucket: &BucketRow,
    key: &ObjectKey,
) -> Result<ObjectRow, ApiError> {
    let sql =
        format!("SELECT {OBJECT_COLUMNS} FROM objects o WHERE o.bucket_id = $1 AND o.key = $2");
    let row = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(&bucket.id)
        .bind(key.as_str())
        .fetch_optional(&mut *conn)
        .await?
        .ok_or_else(|| ApiError::ObjectNotFound(key.as_str().to_owned()))?;
    object_from_row(&bucket.bucket.name, &row)
}

/// Lists up to `limit` objects with keys after `after` that start with `prefix`, in key
/// order (byte order: SQLite's default, and the `C` collation on PostgreSQL).
///
/// # Errors
///
/// Returns the store's failure.
pub async fn list_objects(
    conn: &mut AnyConnection,
    bucket: &BucketRow,
    prefix: &str,
    after: &str,
    limit: i64,
) -> Result<Vec<ObjectRow>, ApiError> {
    // The range condition lets the primary key serve the scan; `substr` (in characters on
    // both engines) makes the prefix test exact.
    let sql = format!(
        "SELECT {OBJECT_COLUMNS} FROM objects o \
         WHERE o.bucket_id = $1 AND o.key > $2 AND o.key >= $3 \
         AND substr(o.key, 1, CAST($4 AS INTEGER)) = $3 ORDER BY o.key LIMIT $5"
    );
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(&bucket.id)
        .bind(after)
        .bind(prefix)
        .bind(prefix.chars().count() as i64)
        .bind(limit)
        .fetch_all(&mut *conn)
        .await?;
    rows.iter()
        .map(|row| object_from_row(&bucket.bucket.name, row))
        .collect()
}

/// What a new object version needs besides its bytes.
#[derive(Clone, Debug)]
pub struct NewObject<'a> {
    /// The key.
    pub key: &'a ObjectKey,
    /// The blob with its bytes.
    pub blob_id: &'a str,
    /// Its size.
    pub size: u64,
    /// Its quoted ETag.
    pub etag: &'a str,
    /// Its hex SHA-256.
    pub sha256: &'a str,
    /// Content type.
    pub content_type: &'a str,
    /// Cache-Control.
    pub cache_control: Option<&'a str>,
    /// Content-Disposition.
    pub content_disposition: Option<&'a str>,
    /// User metadata.
    pub metadata: &'a BTreeMap<String, String>,
    /// When it was written, in milliseconds since the epoch.
    pub modified_at: i64,
}

impl NewObject<'_> {
    /// The object as its row will read back once the upsert has committed.
    pub fn info(&self, bucket: &BucketRow) -> ObjectInfo {
        ObjectInfo {
            bucket: bucket.bucket.name.clone(),
            key: self.key.as_str().to_owned(),
            size: self.size,
            etag: self.etag.to_owned(),
            content_type: self.content_type.to_owned(),
            cache_control: self.cache_control.map(str::to_owned),
            content_disposition: self.content_disposition.map(str::to_owned),
            metadata: self.metadata.clone(),
            sha256: self.sha256.to_owned(),
            last_modified: from_millis(self.modified_at),
        }
    }
}

/// What an upsert replaced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Replaced {
    /// The old version's blob.
    pub blob_id: String,
    /// The old version's size.
    pub size: u64,
    /// The old version's ETag.
    pub etag: String,
}

/// Writes an object row, returning the version it replaced. The row lock it takes (or the
/// database lock, on SQLite) orders concurrent writers of one key.
///
/// # Errors
///
/// Returns the store's failure.
pub async fn upsert_object(
    conn: &mut AnyConnection,
    bucket: &BucketRow,
    object: &NewObject<'_>,
) -> Result<Option<Replaced>, ApiError> {
    let metadata = serde_json::to_string(object.metadata).map_err(ApiError::internal)?;
    let row = sqlx::query(
        "INSERT INTO objects (bucket_id, key, blob_id, size, etag, content_type, cache_control, \
         content_disposition, metadata, sha256, created_at, updated_at, prev_blob_id, prev_size, \
         prev_etag) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $11, NULL, NULL, NULL) \
         ON CONFLICT (bucket_id, key) DO UPDATE SET \
         prev_blob_id = objects.blob_id, prev_size = objects.size, prev_etag = objects.etag, \
         blob_id = excluded.blob_id, size = excluded.size, etag = excluded.etag, \
         content_type = excluded.content_type, cache_control = excluded.cache_control, \
         content_disposition = excluded.content_disposition, metadata = excluded.metadata, \
         sha256 = excluded.sha256, updated_at = excluded.updated_at \
         RETURNING prev_blob_id, prev_size, prev_etag",
    )
    .bind(&bucket.id)
    .bind(object.key.as_str())
    .bind(object.blob_id)
    .bind(object.size as i64)
    .bind(object.etag)
    .bind(object.content_type)
    .bind(object.cache_control)
    .bind(object.content_disposition)
    .bind(&metadata)
    .bind(object.sha256)
    .bind(object.modified_at)
    .fetch_one(&mut *conn)
    .await?;
    let blob_id: Option<String> = row.try_get("prev_blob_id")?;
    let size: Option<i64> = row.try_get("prev_size")?;
    let etag: Option<String> = row.try_get("prev_etag")?;
    Ok(blob_id.map(|blob_id| Replaced {
        blob_id,
        size: size.unwrap_or(0).max(0) as u64,
        etag: etag.unwrap_or_default(),
    }))
}

/// Deletes an object row, returning what it held.
///
/// # Errors
///
/// Returns the store's failure.
pub async fn delete_object(
    conn: &mut AnyConnection,
    bucket: &BucketRow,
    key: &ObjectKey,
) -> Result<Option<(Replaced, String)>, ApiError> {
    let row = sqlx::query(
        "DELETE FROM objects WHERE bucket_id = $1 AND key = $2 RETURNING blob_id, size, etag",
    )
    .bind(&bucket.id)
    .bind(key.as_str())
    .fetch_optional(&mut *conn)
    .await?;
    let Some(row) = row else { return Ok(None) };
    let size: i64 = row.try_get("size")?;
    let etag: String = row.try_get("etag")?;
    let replaced = Replaced {
        blob_id: row.try_get("blob_id")?,
        size: size.max(0) as u64,
        etag: etag.clone(),
    };
    Ok(Some((replaced, etag)))
}

/// Returns whether any object or pending part names `blob_id`.
///
/// # Errors
///
/// Returns the store's failure.
pub async fn blob_is_named(pool: &sqlx::AnyPool, blob_id: &str) -> Result<bool, ApiError> {
    let row = sqlx::query(
        "SELECT 1 AS named FROM objects WHERE blob_id = $1 \
         UNION ALL SELECT 1 AS named FROM upload_parts WHERE blob_id = $1 LIMIT 1",
    )
    .bind(blob_id)
    .fetch_optional(pool)
    .await?;
    Ok(row.is_some())
}

/// The kinds of object event the outbox records.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    /// A new object or a new version of one.
    Created,
    /// An object was deleted.
    Deleted,
}

impl EventKind {
    fn as_str(self) -> &'static str {
        match self {
            EventKind::Created => "object.created",
            EventKind::Deleted => "object.deleted",
        }
    }
}

/// Records an object event in the outbox, inside the change's transaction.
///
/// # Errors
///
/// Returns the store's failure.
pub async fn record_event(
    conn: &mut AnyConnection,
    bucket: &BucketRow,
    key: &ObjectKey,
    kind: EventKind,
    size: u64,
    etag: Option<&str>,
) -> Result<(), ApiError> {
    sqlx::query(
        "INSERT INTO object_events (id, project_id, bucket, key, kind, size, etag, at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(new_id("evt"))
    .bind(&bucket.project_id)
    .bind(&bucket.bucket.name)
    .bind(key.as_str())
    .bind(kind.as_str())
    .bind(size as i64)
    .bind(etag)
    .bind(now_millis())
    .execute(&mut *conn)
    .await?;
    Ok(())
}
