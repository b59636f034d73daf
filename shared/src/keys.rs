//! API keys: creation, listing, revocation and rotation, and the records auth reads.

use plinth_types::Scope;
use plinth_types::console::{ApiKey, CreateKey, KeyWithSecret, Page, Quotas, RateLimit, UpdateKey};
use sqlx::any::AnyRow;
use sqlx::{AnyConnection, AnyPool, Row};
use time::OffsetDateTime;

use crate::auth::pattern::ResourcePattern;
use crate::auth::secret::{SHOWN_PREFIX_LEN, generate_key_secret, hash_secret};
use crate::error::ApiError;
use crate::ids::{from_millis, new_id, now_millis, to_millis};

/// What auth needs to know about a key, with its project's quotas for the rate limit.
#[derive(Clone, Debug)]
pub struct KeyRecord {
    /// The key's id.
    pub id: String,
    /// Its project.
    pub project_id: String,
    /// Its scopes.
    pub scopes: Vec<Scope>,
    /// Its resource patterns; empty means all.
    pub resources: Vec<ResourcePattern>,
    /// Expiry, milliseconds since the epoch.
    pub expires_at: Option<i64>,
    /// Revocation time, milliseconds since the epoch.
    pub revoked_at: Option<i64>,
    /// The key's own rate limit.
    pub rate_limit: Option<RateLimit>,
    /// The project's quota values, for a rate limit the key does not set itself.
    pub project_quotas: Quotas,
}

/// A key creation request that passed validation.
#[derive(Clone, Debug)]
pub struct NewKey {
    name: String,
    scopes: Vec<Scope>,
    resources: Vec<ResourcePattern>,
    expires_at: Option<OffsetDateTime>,
    rate_limit: Option<RateLimit>,
}

impl NewKey {
    /// Validates a creation request.
    ///
    /// # Errors
    ///
    /// Returns `invalid_key_name`, `invalid_scope` (no scopes), `invalid_resource_pattern`,
    /// `invalid_expiry` (in the past) or `invalid_quota` (bad rate limit).
    pub fn parse(request: &CreateKey) -> Result<NewKey, ApiError> {
        let name = parse_name(&request.name)?;
        if request.scopes.is_empty() {
            return Err(ApiError::InvalidScope(
                "a key needs at least one scope".into(),
            ));
        }
        let mut scopes = request.scopes.clone();
        scopes.sort();
        scopes.dedup();
        let resources = request
            .resources
            .iter()
            .map(|text| ResourcePattern::parse(text))
            .collect::<Result<Vec<_>, _>>()?;
        if let Some(at) = request.expires_at
            && to_millis(at) <= now_millis()
        {
            return Err(ApiError::InvalidExpiry(
                "`expires_at` is in the past".into(),
            ));
        }
        if let Some(limit) = &request.rate_limit {
            validate_rate_limit(limit)?;
        }
        Ok(NewKey {
            name,
            scopes,
            resources,
            expires_at: request.expires_at,
            rate_limit: request.rate_limit,
        })
    }
}

fn parse_name(name: &str) -> Result<String, ApiError> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > 100 {
        return Err(ApiError::InvalidKeyName(
            "key name: must be 1 to 100 characters".into(),
        ));
    }
    if name.chars().any(char::is_control) {
        return Err(ApiError::InvalidKeyName(
            "key name: control characters are not allowed".into(),
        ));
    }
    Ok(name.to_owned())
}

fn validate_rate_limit(limit: &RateLimit) -> Result<(), ApiError> {
    if limit.per_second == 0 || limit.burst == 0 {
        return Err(ApiError::InvalidQuota(
            "rate_limit: `per_second` and `burst` must be at least 1".into(),
        ));
    }
    Ok(())
}

const KEY_COLUMNS: &str = "id, project_id, name, secret_prefix, scopes, resources, \
     rate_per_second, rate_burst, created_at, expires_at, revoked_at, rotated_at";

fn key_from_row(row: &AnyRow) -> Result<ApiKey, ApiError> {
    let scopes: String = row.try_get("scopes")?;
    let resources: String = row.try_get("resources")?;
    Ok(ApiKey {
        id: row.try_get("id")?,
        project_id: row.try_get("project_id")?,
        name: row.try_get("name")?,
        scopes: serde_json::from_str(&scopes).map_err(ApiError::internal)?,
        resources: serde_json::from_str(&resources).map_err(ApiError::internal)?,
        secret_prefix: row.try_get("secret_prefix")?,
        rate_limit: rate_from_row(row)?,
        created_at: from_millis(row.try_get("created_at")?),
        expires_at: row
            .try_get::<Option<i64>, _>("expires_at")?
            .map(from_millis),
        revoked_at: row
            .try_get::<Option<i64>, _>("revoked_at")?
            .map(from_millis),
        rotated_at: row
            .try_get::<Option<i64>, _>("rotated_at")?
            .map(from_millis),
    })
}

fn rate_from_row(row: &AnyRow) -> Result<Option<RateLimit>, sqlx::Error> {
    let per_second: Option<i64> = row.try_get("rate_per_second")?;
    let burst: Option<i64> = row.try_get("rate_burst")?;
    Ok(per_second.zip(burst).map(|(per_second, burst)| RateLimit {
        per_second: per_second.clamp(1, i64::from(u32::MAX)) as u32,
        burst: burst.clamp(1, i64::from(u32::MAX)) as u32,
    }))
}

/// Creates a key in `project_id` and returns it with its secret, the only time it is shown.
///
/// # Errors
///
/// Returns the store's failure.
pub async fn create(
    conn: &mut AnyConnection,
    project_id: &str,
    key: &NewKey,
) -> Result<KeyWithSecret, ApiError> {
    let id = new_id("key");
    let secret = generate_key_secret();
    let scopes = serde_json::to_string(&key.scopes).map_err(ApiError::internal)?;
    let resources: Vec<&str> = key.resources.iter().map(ResourcePattern::as_str).collect();
    let resources = serde_json::to_string(&resources).map_err(ApiError::internal)?;
    sqlx::query(
        "INSERT INTO api_keys (id, project_id, name, secret_hash, secret_prefix, scopes, \
         resources, rate_per_second, rate_burst, created_at, expires_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
    )
    .bind(&id)
    .bind(project_id)
    .bind(&key.name)
    .bind(hash_secret(&secret))
    .bind(&secret[..SHOWN_PREFIX_LEN])
    .bind(&scopes)
    .bind(&resources)
    .bind(key.rate_limit.map(|r| i64::from(r.per_second)))
    .bind(key.rate_limit.map(|r| i64::from(r.burst)))
    .bind(now_millis())
    .bind(key.expires_at.map(to_millis))
    .execute(&mut *conn)
    .await?;
    Ok(KeyWithSecret {
        key: get(conn, project_id, &id).await?,
        secret,
    })
}

/// Reads one key of a project.
///
/// # Errors
///
/// Returns `key_not_found` when the project has no key with this id.
pub async fn get(conn: &mut AnyConnection, project_id: &str, id: &str) -> Result<ApiKey, ApiError> {
    let sql = format!("SELECT {KEY_COLUMNS} FROM api_keys WHERE id = $1 AND project_id = $2");
    let row = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(id)
        .bind(project_id)
        .fetch_optional(&mut *conn)
        .await?
        .ok_or_else(|| ApiError::KeyNotFound(id.to_owned()))?;
    key_from_row(&row)
}

/// Lists a project's keys in creation order.
///
/// # Errors
///
/// Returns the store's failure.
pub async fn list(
    conn: &mut AnyConnection,
    project_id: &str,
    after: Option<&str>,
    limit: usize,
) -> Result<Page<ApiKey>, ApiError> {
    let sql = format!(
        "SELECT {KEY_COLUMNS} FROM api_keys WHERE project_id = $1 AND id > $2 ORDER BY id LIMIT $3"
    );
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(project_id)
        .bind(after.unwrap_or(""))
        .bind(limit as i64 + 1)
        .fetch_all(&mut *conn)
        .await?;
    crate::extract::page_from_rows(&rows, limit, key_from_row, |k| k.id.clone())
}

/// Renames a key or changes its rate limit.
///
/// # Errors
///
/// Returns `key_not_found`, `invalid_key_name` or `invalid_quota`.
pub async fn update(
    conn: &mut AnyConnection,
    project_id: &str,
    id: &str,
    update: &UpdateKey,
) -> Result<ApiKey, ApiError> {
    let current = get(conn, project_id, id).await?;
    let name = match &update.name {
        Some(name) => parse_name(name)?,
        None => current.name,
    };
    if let Some(limit) = &update.rate_limit {
        validate_rate_limit(limit)?;
    }
    let rate = if update.clear_rate_limit {
        None
    } else {
        update.rate_limit.or(current.rate_limit)
    };
    sqlx::query(
        "UPDATE api_keys SET name = $1, rate_per_second = $2, rate_burst = $3 WHERE id = $4",
    )
    .bind(&name)
    .bind(rate.map(|r| i64::from(r.per_second)))
    .bind(rate.map(|r| i64::from(r.burst)))
    .bind(id)
    .execute(&mut *conn)
    .await?;
    get(conn, project_id, id).await
}

/// Revokes a key; revoking a revoked key keeps the first revocation time.
///
/// # Errors
///
/// Returns `key_not_found`.
pub async fn revoke(
    conn: &mut AnyConnection,
    project_id: &str,
    id: &str,
) -> Result<ApiKey, ApiError> {
    get(conn, project_id, id).await?;
    sqlx::query("UPDATE api_keys SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL")
        .bind(now_millis())
        .bind(id)
        .execute(&mut *conn)
        .await?;
    get(conn, project_id, id).await
}

/// Replaces a key's secret. The old secret stops working at once on this replica and within
/// the auth cache's lifetime on others; tokens minted from the key stay valid until they
/// expire, since the key itself is not revoked.
///
/// # Errors
///
/// Returns `key_not_found`, or `key_revoked` for a revoked key.
pub async fn rotate(
    conn: &mut AnyConnection,
    project_id: &str,
    id: &str,
) -> Result<KeyWithSecret, ApiError> {
    let current = get(conn, project_id, id).await?;
    if current.revoked_at.is_some() {
        return Err(ApiError::KeyRevoked);
    }
    let secret = generate_key_secret();
    sqlx::query(
        "UPDATE api_keys SET secret_hash = $1, secret_prefix = $2, rotated_at = $3 WHERE id = $4",
    )
    .bind(hash_secret(&secret))
    .bind(&secret[..SHOWN_PREFIX_LEN])
    .bind(now_millis())
    .bind(id)
    .execute(&mut *conn)
    .await?;
    Ok(KeyWithSecret {
        key: get(conn, project_id, id).await?,
        secret,
    })
}

const RECORD_SQL: &str = "SELECT k.id, k.project_id, k.scopes, k.resources, k.rate_per_second, \
     k.rate_burst, k.expires_at, k.revoked_at, p.quotas \
     FROM api_keys k JOIN projects p ON p.id = k.project_id";

/// Finds the key whose secret hashes to `hash`.
///
/// # Errors
///
/// Returns the store's failure.
pub async fn record_by_hash(pool: &AnyPool, hash: &str) -> Result<Option<KeyRecord>, ApiError> {
    let sql = format!("{RECORD_SQL} WHERE k.secret_hash = $1");
    let row = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(hash)
        .fetch_optional(pool)
        .await?;
    row.as_ref().map(record_from_row).transpose()
}

/// Finds a key by id, whatever its project.
///
/// # Errors
///
/// Returns the store's failure.
pub async fn record_by_id(pool: &AnyPool, id: &str) -> Result<Option<KeyRecord>, ApiError> {
    let sql = format!("{RECORD_SQL} WHERE k.id = $1");
    let row = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(id)
        .fetch_optional(pool)
        .await?;
    row.as_ref().map(record_from_row).transpose()
}

fn record_from_row(row: &AnyRow) -> Result<KeyRecord, ApiError> {
    let scopes: String = row.try_get("scopes")?;
    let resources: String = row.try_get("resources")?;
    let resources: Vec<String> = serde_json::from_str(&resources).map_err(ApiError::internal)?;
    let quotas: String = row.try_get("quotas")?;
    Ok(KeyRecord {
        id: row.try_get("id")?,
        project_id: row.try_get("project_id")?,
        scopes: serde_json::from_str(&scopes).map_err(ApiError::internal)?,
        resources: resources
            .iter()
            .map(|text| ResourcePattern::parse(text))
            .collect::<Result<Vec<_>, _>>()?,
        expires_at: row.try_get("expires_at")?,
        revoked_at: row.try_get("revoked_at")?,
        rate_limit: rate_from_row(row)?,
        project_quotas: serde_json::from_str(&quotas).map_err(ApiError::internal)?,
    })
}
