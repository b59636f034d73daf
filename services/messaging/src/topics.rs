//! Topic rows in the metadata store, and the topic routes.

use axum::extract::State;
use axum::http::StatusCode;
use plinth_shared::ApiError;
use plinth_shared::auth::Caller;
use plinth_shared::extract::{Json, Path};
use plinth_shared::ids::{from_millis, new_id, now_millis};
use plinth_shared::quota::Gauge;
use plinth_shared::store::is_unique_violation;
use plinth_types::messaging::{CreateTopic, PartitionInfo, Topic, UpdateTopic};
use plinth_types::{ErrorBody, Scope};
use sqlx::any::AnyRow;
use sqlx::{AnyConnection, Row};

use std::time::Instant;

use crate::kafka::Retention;
use crate::names::TopicName;
use crate::{Messaging, log_error};

/// A topic row, with the id its logs are filed under.
#[derive(Clone, Debug)]
pub struct TopicRow {
    /// Internal id; also the name of the topic's log directory.
    pub id: String,
    /// The public description (without partition offsets).
    pub topic: Topic,
}

/// The topic columns [`topic_from_row`] reads, for a query whose topics table is `t`.
const COLUMNS: &str = "t.id, t.name, t.partitions, t.retention_seconds, t.retention_bytes, \
     t.created_at, t.updated_at";

fn topic_from_row(row: &AnyRow) -> Result<TopicRow, ApiError> {
    let limit = |column: &str| -> Result<Option<u64>, ApiError> {
        Ok(row
            .try_get::<Option<i64>, _>(column)?
            .map(|v| v.max(0) as u64))
    };
    Ok(TopicRow {
        id: row.try_get("id")?,
        topic: Topic {
            name: row.try_get("name")?,
            partition_count: u32::try_from(row.try_get::<i64, _>("partitions")?)
                .map_err(ApiError::internal)?,
            retention_seconds: limit("retention_seconds")?,
            retention_bytes: limit("retention_bytes")?,
            partitions: None,
            created_at: from_millis(row.try_get("created_at")?),
            updated_at: from_millis(row.try_get("updated_at")?),
        },
    })
}

/// Reads a topic of a project; another project's topic answers like a missing one.
///
/// # Errors
///
/// Returns `topic_not_found`.
pub async fn get_topic_row(
    conn: &mut AnyConnection,
    project_id: &str,
    name: &TopicName,
) -> Result<TopicRow, ApiError> {
    let sql = format!("SELECT {COLUMNS} FROM topics t WHERE t.project_id = $1 AND t.name = $2");
    let row = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(project_id)
        .bind(name.as_str())
        .fetch_optional(&mut *conn)
        .await?
        .ok_or_else(|| ApiError::TopicNotFound(name.as_str().to_owned()))?;
    topic_from_row(&row)
}

/// Reads a topic by its id, for rows that refer to one (a subscription's topic and
/// dead-letter topic, a bucket notification's topic).
///
/// # Errors
///
/// Returns `topic_not_found` for a topic deleted since the reference was read.
pub(crate) async fn get_topic_by_id(
    conn: &mut AnyConnection,
    id: &str,
) -> Result<TopicRow, ApiError> {
    let sql = format!("SELECT {COLUMNS} FROM topics t WHERE t.id = $1");
    let row = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(id)
        .fetch_optional(&mut *conn)
        .await?
        .ok_or_else(|| ApiError::TopicNotFound("(deleted)".into()))?;
    topic_from_row(&row)
}

/// Reads a topic and the quotas in force for its project in one query: the read path of
/// every publish. The answer is cached per replica for `auth_cache_ttl` (as credentials
/// are), so a quota or a topic changed elsewhere applies to publishes here within that
/// time; this process's own changes apply at once.
///
/// # Errors
///
/// Returns `topic_not_found`.
pub(crate) async fn get_topic_and_quotas(
    messaging: &Messaging,
    project_id: &str,
    name: &TopicName,
) -> Result<(TopicRow, plinth_types::console::Quotas), ApiError> {
    let key = (project_id.to_owned(), name.as_str().to_owned());
    let ttl = messaging.shared.config().auth_cache_ttl;
    if let Some((read_at, row, quotas)) = messaging.topic_cache.get(&key)
        && read_at.elapsed() < ttl
    {
        return Ok((row, quotas));
    }
    let (row, quotas) = read_topic_and_quotas(messaging, project_id, name).await?;
    messaging
        .topic_cache
        .insert(key, (Instant::now(), row.clone(), quotas.clone()));
    Ok((row, quotas))
}

/// Forgets what the publish cache holds of a topic this process changed or deleted.
pub(crate) fn forget_cached(messaging: &Messaging, project_id: &str, name: &TopicName) {
    messaging
        .topic_cache
        .remove(&(project_id.to_owned(), name.as_str().to_owned()));
}

async fn read_topic_and_quotas(
    messaging: &Messaging,
    project_id: &str,
    name: &TopicName,
) -> Result<(TopicRow, plinth_types::console::Quotas), ApiError> {
    let sql = format!(
        "SELECT {COLUMNS}, p.quotas FROM topics t JOIN projects p ON p.id = t.project_id \
         WHERE t.project_id = $1 AND t.name = $2"
    );
    let row = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(project_id)
        .bind(name.as_str())
        .fetch_optional(messaging.shared.store().pool())
        .await?
        .ok_or_else(|| ApiError::TopicNotFound(name.as_str().to_owned()))?;
    let overrides: String = row.try_get("quotas")?;
    let overrides = serde_json::from_str(&overrides).map_err(ApiError::internal)?;
    let quotas = messaging.shared.quotas().effective(&overrides);
    Ok((topic_from_row(&row)?, quotas))
}

/// Lets a publisher or a consumer of `resource` read topic settings.
fn authorize_read(caller: &Caller, resource: &str) -> Result<(), ApiError> {
    caller
        .authorize(Scope::MessagingConsume, resource)
        .or_else(|_| caller.authorize(Scope::MessagingPublish, resource))
}

/// The quotas in force for a project: its own, else the operator's defaults.
pub(crate) async fn project_quotas(
    messaging: &Messaging,
    project_id: &str,
) -> Result<plinth_types::console::Quotas, ApiError> {
    let overrides: String = sqlx::query("SELECT quotas FROM projects WHERE id = $1")
        .bind(project_id)
        .fetch_optional(messaging.shared.store().pool())
        .await?
        .ok_or_else(|| ApiError::ProjectNotFound(project_id.to_owned()))?
        .try_get("quotas")?;
    let overrides = serde_json::from_str(&overrides).map_err(ApiError::internal)?;
    Ok(messaging.shared.quotas().effective(&overrides))
}

/// A topic's retention in seconds under the project's ceiling: none asked for is the
/// ceiling itself, more than it is refused.
fn within_ceiling(asked: Option<u64>, ceiling: Option<u64>) -> Result<Option<u64>, ApiError> {
    match (asked.filter(|&s| s > 0), ceiling) {
        (asked, None) => Ok(asked),
        (None, Some(limit)) => Ok(Some(limit)),
        (Some(asked), Some(limit)) if asked <= limit => Ok(Some(asked)),
        (Some(_), Some(limit)) => Err(ApiError::QuotaExceeded {
            quota: "retention_seconds",
            limit,
        }),
    }
}

/// A retention setting as stored: `0` (or nothing) means none.
/// A topic's retention as Kafka's topic configs take it.
fn kafka_retention(seconds: Option<i64>, bytes: Option<i64>) -> Retention {
    Retention {
        max_age_ms: seconds.map(|s| s.max(0) as u64 * 1000),
        max_bytes: bytes.map(|b| b.max(0) as u64),
    }
}

fn retention(value: Option<u64>, field: &str) -> Result<Option<i64>, ApiError> {
    match value {
        None | Some(0) => Ok(None),
        Some(v) => i64::try_from(v)
            .map(Some)
            .map_err(|_| ApiError::InvalidField {
                field: field.into(),
                reason: "is out of range".into(),
            }),
    }
}

/// Creates a topic and its partitions' logs.
#[utoipa::path(
    post,
    path = "/topics",
    tag = "messaging",
    request_body = CreateTopic,
    responses(
        (status = 201, description = "Created", body = Topic),
        (status = 400, description = "Bad name or settings", body = ErrorBody),
        (status = 403, description = "Over the topics quota", body = ErrorBody),
        (status = 409, description = "Name in use", body = ErrorBody),
    )
)]
pub async fn create_topic(
    State(messaging): State<Messaging>,
    caller: Caller,
    Json(body): Json<CreateTopic>,
) -> Result<(StatusCode, Json<Topic>), ApiError> {
    let name = TopicName::parse(&body.name)?;
    caller.authorize(Scope::MessagingPublish, &name.resource())?;
    let project_id = caller.project()?;
    let max = messaging.shared.config().messaging_max_partitions;
    let partitions = body.partitions.unwrap_or(1);
    if !(1..=max).contains(&partitions) {
        return Err(ApiError::InvalidField {
            field: "partitions".into(),
            reason: format!("must be 1 to {max}"),
        });
    }
    let quotas = project_quotas(&messaging, project_id).await?;
    if let Some(limit) = quotas.partitions_per_topic
        && u64::from(partitions) > limit
    {
        return Err(ApiError::QuotaExceeded {
            quota: "partitions_per_topic",
            limit,
        });
    }
    let seconds = within_ceiling(body.retention_seconds, quotas.retention_seconds)?;
    let retention_seconds = retention(seconds, "retention_seconds")?;
    let retention_bytes = retention(body.retention_bytes, "retention_bytes")?;

    // The logs come first, so that a committed topic always has them; if the row then
    // fails, they go again.
    let id = new_id("tpc");
    messaging
        .logs
        .create_topic(
            &id,
            partitions,
            kafka_retention(retention_seconds, retention_bytes),
        )
        .await
        .map_err(log_error)?;
    let created = insert_topic(
        &messaging,
        project_id,
        &id,
        &name,
        partitions,
        (retention_seconds, retention_bytes),
    )
    .await;
    let row = match created {
        Ok(row) => row,
        Err(err) => {
            if let Err(cleanup) = messaging.logs.delete_topic(&id).await {
                tracing::warn!(topic_id = %id, error = %cleanup, "logs of a refused topic left behind");
            }
            return Err(err);
        }
    };
    forget_cached(&messaging, project_id, &name);
    tracing::info!(project_id, topic = %name.as_str(), partitions, "topic created");
    Ok((StatusCode::CREATED, Json(row.topic)))
}

/// Inserts a topic's row under the project's topic quota.
async fn insert_topic(
    messaging: &Messaging,
    project_id: &str,
    id: &str,
    name: &TopicName,
    partitions: u32,
    (retention_seconds, retention_bytes): (Option<i64>, Option<i64>),
) -> Result<TopicRow, ApiError> {
    let now = now_millis();
    let mut tx = messaging.shared.store().begin().await?;
    messaging
        .shared
        .quotas()
        .reserve(&mut tx, project_id, Gauge::Topics, 1)
        .await?;
    let inserted = sqlx::query(
        "INSERT INTO topics (id, project_id, name, partitions, retention_seconds, \
         retention_bytes, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $7)",
    )
    .bind(id)
    .bind(project_id)
    .bind(name.as_str())
    .bind(i64::from(partitions))
    .bind(retention_seconds)
    .bind(retention_bytes)
    .bind(now)
    .execute(&mut *tx)
    .await;
    match inserted {
        Err(err) if is_unique_violation(&err) => {
            return Err(ApiError::TopicNameTaken(name.as_str().to_owned()));
        }
        other => other?,
    };
    let row = get_topic_row(&mut tx, project_id, name).await?;
    tx.commit().await?;
    Ok(row)
}

/// Lists the project's topics.
#[utoipa::path(
    get,
    path = "/topics",
    tag = "messaging",
    responses((status = 200, description = "Topics by name", body = Vec<Topic>))
)]
pub async fn list_topics(
    State(messaging): State<Messaging>,
    caller: Caller,
) -> Result<Json<Vec<Topic>>, ApiError> {
    caller
        .require_scope(Scope::MessagingConsume)
        .or_else(|_| caller.require_scope(Scope::MessagingPublish))?;
    let project_id = caller.project()?;

    let sql = format!("SELECT {COLUMNS} FROM topics t WHERE t.project_id = $1 ORDER BY t.name");
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(project_id)
        .fetch_all(messaging.shared.store().pool())
        .await?;
    let mut topics = Vec::with_capacity(rows.len());
    for row in &rows {
        let topic = topic_from_row(row)?.topic;
        // A credential limited to some topics sees only those.
        if authorize_read(&caller, &format!("topic:{}", topic.name)).is_ok() {
            topics.push(topic);
        }
    }
    Ok(Json(topics))
}

/// Reads a topic, with each partition's offsets.
#[utoipa::path(
    get,
    path = "/topics/{topic}",
    tag = "messaging",
    params(("topic" = String, Path, description = "Topic name")),
    responses(
        (status = 200, description = "The topic", body = Topic),
        (status = 404, description = "No such topic", body = ErrorBody),
    )
)]
pub async fn get_topic(
    State(messaging): State<Messaging>,
    caller: Caller,
    Path(topic): Path<String>,
) -> Result<Json<Topic>, ApiError> {
    let name = TopicName::parse(&topic)?;
    authorize_read(&caller, &name.resource())?;
    let project_id = caller.project()?;

    let mut conn = messaging.shared.store().pool().acquire().await?;
    let row = get_topic_row(&mut conn, project_id, &name).await?;
    drop(conn);
    let mut partitions = Vec::new();
    for partition in 0..row.topic.partition_count {
        let log = messaging
            .logs
            .partition(&row.id, partition)
            .await
            .map_err(log_error)?;
        let (start, end) = log.bounds().await.map_err(log_error)?;
        partitions.push(PartitionInfo {
            partition,
            start_offset: start,
            end_offset: end,
        });
    }
    Ok(Json(Topic {
        partitions: Some(partitions),
        ..row.topic
    }))
}

/// Changes a topic's retention.
#[utoipa::path(
    patch,
    path = "/topics/{topic}",
    tag = "messaging",
    params(("topic" = String, Path, description = "Topic name")),
    request_body = UpdateTopic,
    responses(
        (status = 200, description = "The updated topic", body = Topic),
        (status = 404, description = "No such topic", body = ErrorBody),
    )
)]
pub async fn update_topic(
    State(messaging): State<Messaging>,
    caller: Caller,
    Path(topic): Path<String>,
    Json(body): Json<UpdateTopic>,
) -> Result<Json<Topic>, ApiError> {
    let name = TopicName::parse(&topic)?;
    caller.authorize(Scope::MessagingPublish, &name.resource())?;
    let project_id = caller.project()?;

    let ceiling = project_quotas(&messaging, project_id)
        .await?
        .retention_seconds;
    let mut tx = messaging.shared.store().begin().await?;
    let current = get_topic_row(&mut tx, project_id, &name).await?;
    let seconds = match body.retention_seconds {
        Some(value) => retention(within_ceiling(Some(value), ceiling)?, "retention_seconds")?,
        None => retention(current.topic.retention_seconds, "retention_seconds")?,
    };
    let bytes = match body.retention_bytes {
        Some(value) => retention(Some(value), "retention_bytes")?,
        None => retention(current.topic.retention_bytes, "retention_bytes")?,
    };
    sqlx::query(
        "UPDATE topics SET retention_seconds = $1, retention_bytes = $2, updated_at = $3 \
         WHERE id = $4",
    )
    .bind(seconds)
    .bind(bytes)
    .bind(now_millis())
    .bind(&current.id)
    .execute(&mut *tx)
    .await?;
    let row = get_topic_row(&mut tx, project_id, &name).await?;
    tx.commit().await?;
    forget_cached(&messaging, project_id, &name);
    // Kafka is told after the commit (its call must not hold the store's writer); if it
    // fails the row holds the new retention and a retry of the update applies it.
    messaging
        .logs
        .update_retention(&current.id, kafka_retention(seconds, bytes))
        .await
        .map_err(log_error)?;

    tracing::info!(project_id, topic = %name.as_str(), "topic updated");
    Ok(Json(row.topic))
}

/// Deletes a topic and every message in it.
#[utoipa::path(
    delete,
    path = "/topics/{topic}",
    tag = "messaging",
    params(("topic" = String, Path, description = "Topic name")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, description = "No such topic", body = ErrorBody),
    )
)]
pub async fn delete_topic(
    State(messaging): State<Messaging>,
    caller: Caller,
    Path(topic): Path<String>,
) -> Result<StatusCode, ApiError> {
    let name = TopicName::parse(&topic)?;
    caller.authorize(Scope::MessagingPublish, &name.resource())?;
    let project_id = caller.project()?;

    let mut tx = messaging.shared.store().begin().await?;
    let row = get_topic_row(&mut tx, project_id, &name).await?;
    sqlx::query("DELETE FROM topics WHERE id = $1")
        .bind(&row.id)
        .execute(&mut *tx)
        .await?;
    messaging
        .shared
        .quotas()
        .release(&mut tx, project_id, Gauge::Topics, 1)
        .await?;
    tx.commit().await?;
    forget_cached(&messaging, project_id, &name);

    // The row is gone, so nothing reaches the logs any more; a crash before this leaves a
    // directory no row names, which the next start sweeps (`sweep_orphan_logs`).
    messaging
        .logs
        .delete_topic(&row.id)
        .await
        .map_err(log_error)?;
    tracing::info!(project_id, topic = %name.as_str(), "topic deleted");
    Ok(StatusCode::NO_CONTENT)
}
