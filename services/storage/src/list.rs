//! Listing a bucket: prefix, delimiter (common prefixes), start-after and cursor pages.

use axum::extract::State;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use plinth_shared::ApiError;
use plinth_shared::auth::Caller;
use plinth_shared::auth::pattern::ResourcePattern;
use plinth_shared::extract::{Json, Path, Query};
use plinth_types::storage::{ListObjectsQuery, ObjectListing};
use plinth_types::{ErrorBody, Scope};

use crate::Storage;
use crate::meta;
use crate::names::{BucketName, MAX_KEY_BYTES};

/// The greatest character: `prefix + MAX_CHAR` sorts after every key that starts with
/// `prefix`, so a listing can skip a whole common prefix in one seek.
const MAX_CHAR: char = char::MAX;

fn decode_cursor(cursor: &str) -> Result<String, ApiError> {
    let bytes = URL_SAFE_NO_PAD
        .decode(cursor)
        .map_err(|_| ApiError::InvalidCursor)?;
    let position = String::from_utf8(bytes).map_err(|_| ApiError::InvalidCursor)?;
    if position.len() > MAX_KEY_BYTES + 4 {
        return Err(ApiError::InvalidCursor);
    }
    Ok(position)
}

/// Lists a bucket's objects in key order.
#[utoipa::path(
    get,
    path = "/buckets/{bucket}/objects",
    tag = "storage",
    params(("bucket" = String, Path, description = "Bucket name"), ListObjectsQuery),
    responses(
        (status = 200, description = "One page of the listing", body = ObjectListing),
        (status = 404, description = "No such bucket", body = ErrorBody),
    )
)]
pub async fn list_objects(
    State(storage): State<Storage>,
    caller: Caller,
    Path(bucket): Path<String>,
    Query(query): Query<ListObjectsQuery>,
) -> Result<Json<ObjectListing>, ApiError> {
    let name = BucketName::parse(&bucket)?;
    let prefix = query.prefix.unwrap_or_default();
    caller.require_scope(Scope::StorageRead)?;
    // A credential limited to part of the bucket may list within that part only.
    if !caller.resources.is_empty() {
        let wanted = ResourcePattern::parse(&format!("bucket:{}/{prefix}*", name.as_str()))?;
        if !caller.resources.iter().any(|held| held.covers(&wanted)) {
            return Err(ApiError::ResourceNotAllowed(wanted.to_string()));
        }
    }
    let limit = query.limit.unwrap_or(1000);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::InvalidParameter(
            "`limit` must be 1 to 1000".into(),
        ));
    }
    let delimiter = query.delimiter.filter(|d| !d.is_empty());
    let mut after = match (query.cursor.as_deref(), query.start_after) {
        (Some(cursor), _) => decode_cursor(cursor)?,
        (None, Some(start_after)) => start_after,
        (None, None) => String::new(),
    };
    let project_id = caller.project()?;

    let mut conn = storage.shared.store().pool().acquire().await?;
    let bucket = meta::get_bucket(&mut conn, project_id, &name).await?;
    let mut listing = ObjectListing {
        objects: Vec::new(),
        common_prefixes: Vec::new(),
        next_cursor: None,
    };
    let mut entries = 0;
    'pages: while entries < limit {
        let batch = i64::from(limit - entries);
        let rows = meta::list_objects(&mut conn, &bucket, &prefix, &after, batch).await?;
        if rows.is_empty() {
            break;
        }
        for row in rows {
            let key = row.info.key.clone();
            let rest = &key[prefix.len()..];
            if let Some(delimiter) = &delimiter
                && let Some(at) = rest.find(delimiter.as_str())
            {
                let common = format!("{prefix}{}", &rest[..at + delimiter.len()]);
                after = format!("{common}{MAX_CHAR}");
                listing.common_prefixes.push(common);
                entries += 1;
                // Seek past every key under this prefix.
                continue 'pages;
            }
            after = key;
            listing.objects.push(row.info);
            entries += 1;
        }
    }
    if entries == limit
        && !meta::list_objects(&mut conn, &bucket, &prefix, &after, 1)
            .await?
            .is_empty()
    {
        listing.next_cursor = Some(URL_SAFE_NO_PAD.encode(&after));
    }
    Ok(Json(listing))
}
