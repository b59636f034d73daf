//! Subscription rows and routes: a subscription is a named consumer group on a topic, with
//! a committed offset per partition.

use axum::extract::State;
use axum::http::StatusCode;
use plinth_shared::ApiError;
use plinth_shared::auth::Caller;
use plinth_shared::config::Secret;
use plinth_shared::extract::{Json, Path};
use plinth_shared::ids::{from_millis, new_id, now_millis, random_hex};
use plinth_shared::store::is_unique_violation;
use plinth_types::messaging::{CreateSubscription, Push, StartPosition, Subscription};
use plinth_types::{ErrorBody, Scope};
use sqlx::any::AnyRow;
use sqlx::{AnyConnection, Row};

use crate::names::{SubscriptionName, TopicName};
use crate::topics::{TopicRow, get_topic_by_id, get_topic_row};
use crate::{Messaging, log_error};

/// Longest lease, and longest explicit retry delay.
pub(crate) const MAX_DEADLINE_SECONDS: u64 = 600;

/// A subscription row with what delivery needs of its topics.
#[derive(Clone, Debug)]
pub struct SubscriptionRow {
    /// Internal id.
    pub id: String,
    /// The project it belongs to.
    pub project_id: String,
    /// The topic read.
    pub topic: TopicRow,
    /// The dead-letter topic, if any.
    pub dead_letter: Option<TopicRow>,
    /// A push subscription's signing secret (never printed).
    pub push_secret: Option<Secret>,
    /// The public description.
    pub subscription: Subscription,
}

impl SubscriptionRow {
    /// The retry wait after the `attempts`-th delivery failed: the minimum doubled per
    /// earlier attempt, capped at the maximum.
    pub(crate) fn backoff_ms(&self, attempts: u32) -> i64 {
        let min = self.subscription.retry_backoff_min_seconds * 1000;
        let max = self.subscription.retry_backoff_max_seconds * 1000;
        let doubled = min.saturating_mul(1u64 << attempts.saturating_sub(1).min(30));
        doubled.min(max) as i64
    }
}

const COLUMNS: &str = "s.id, s.project_id, s.name, s.topic_id, s.dead_letter_topic_id, \
     s.ack_deadline_seconds, s.max_delivery_attempts, s.backoff_min_ms, s.backoff_max_ms, \
     s.push_endpoint, s.push_secret, s.push_concurrency, s.created_at";

async fn from_row(conn: &mut AnyConnection, row: &AnyRow) -> Result<SubscriptionRow, ApiError> {
    let topic = get_topic_by_id(conn, &row.try_get::<String, _>("topic_id")?).await?;
    let dead_letter = match row.try_get::<Option<String>, _>("dead_letter_topic_id")? {
        Some(id) => Some(get_topic_by_id(conn, &id).await?),
        None => None,
    };
    let seconds = |column: &str| -> Result<u64, ApiError> {
        Ok(row.try_get::<i64, _>(column)?.max(0) as u64)
    };
    let push = match row.try_get::<Option<String>, _>("push_endpoint")? {
        Some(endpoint) => Some(Push {
            endpoint,
            secret: None,
            max_concurrency: row
                .try_get::<Option<i64>, _>("push_concurrency")?
                .unwrap_or(1)
                .max(1) as u32,
        }),
        None => None,
    };
    Ok(SubscriptionRow {
        id: row.try_get("id")?,
        project_id: row.try_get("project_id")?,
        subscription: Subscription {
            name: row.try_get("name")?,
            topic: topic.topic.name.clone(),
            ack_deadline_seconds: seconds("ack_deadline_seconds")?,
            max_delivery_attempts: seconds("max_delivery_attempts")? as u32,
            dead_letter_topic: dead_letter.as_ref().map(|t| t.topic.name.clone()),
            retry_backoff_min_seconds: seconds("backoff_min_ms")? / 1000,
            retry_backoff_max_seconds: seconds("backoff_max_ms")? / 1000,
            push,
            created_at: from_millis(row.try_get("created_at")?),
        },
        topic,
        dead_letter,
        push_secret: row
            .try_get::<Option<String>, _>("push_secret")?
            .map(Secret::new),
    })
}

/// Reads a subscription of a project; another project's answers like a missing one.
///
/// # Errors
///
/// Returns `subscription_not_found`.
pub async fn get_subscription_row(
    conn: &mut AnyConnection,
    project_id: &str,
    name: &SubscriptionName,
) -> Result<SubscriptionRow, ApiError> {
    let sql =
        format!("SELECT {COLUMNS} FROM subscriptions s WHERE s.project_id = $1 AND s.name = $2");
    let row = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(project_id)
        .bind(name.as_str())
        .fetch_optional(&mut *conn)
        .await?
        .ok_or_else(|| ApiError::SubscriptionNotFound(name.as_str().to_owned()))?;
    from_row(conn, &row).await
}

/// Reads a subscription by its internal id, if it still exists.
pub(crate) async fn get_subscription_by_id(
    conn: &mut AnyConnection,
    id: &str,
) -> Result<Option<SubscriptionRow>, ApiError> {
    let sql = format!("SELECT {COLUMNS} FROM subscriptions s WHERE s.id = $1");
    let row = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(id)
        .fetch_optional(&mut *conn)
        .await?;
    match row {
        Some(row) => Ok(Some(from_row(conn, &row).await?)),
        None => Ok(None),
    }
}

/// The internal ids of every push subscription, of every project.
pub(crate) async fn push_subscription_ids(
    conn: &mut AnyConnection,
) -> Result<Vec<String>, ApiError> {
    let rows = sqlx::query("SELECT id FROM subscriptions WHERE push_endpoint IS NOT NULL")
        .fetch_all(&mut *conn)
        .await?;
    rows.iter()
        .map(|row| Ok(row.try_get::<String, _>("id")?))
        .collect()
}

/// Looks a subscription up for a caller who must be allowed to consume its topic.
pub(crate) async fn authorized_subscription(
    messaging: &Messaging,
    caller: &Caller,
    name: &str,
) -> Result<SubscriptionRow, ApiError> {
    let name = SubscriptionName::parse(name)?;
    caller.require_scope(Scope::MessagingConsume)?;
    let project_id = caller.project()?;
    let mut conn = messaging.shared.store().pool().acquire().await?;
    let row = get_subscription_row(&mut conn, project_id, &name).await?;
    caller.authorize(
        Scope::MessagingConsume,
        &format!("topic:{}", row.topic.topic.name),
    )?;
    Ok(row)
}

/// A push subscription's signing secret: 32 random bytes.
fn new_push_secret() -> String {
    format!("whsec_{}", random_hex(32))
}

fn bounded(
    value: Option<u64>,
    default: u64,
    field: &str,
    range: std::ops::RangeInclusive<u64>,
) -> Result<u64, ApiError> {
    let value = value.unwrap_or(default);
    if range.contains(&value) {
        Ok(value)
    } else {
        Err(ApiError::InvalidField {
            field: field.into(),
            reason: format!("must be {} to {}", range.start(), range.end()),
        })
    }
}

/// Creates a subscription on a topic, starting at its earliest or latest message or at a
/// time.
#[utoipa::path(
    post,
    path = "/subscriptions",
    tag = "messaging",
    request_body = CreateSubscription,
    responses(
        (status = 201, description = "Created", body = Subscription),
        (status = 400, description = "Bad name or settings", body = ErrorBody),
        (status = 404, description = "No such topic", body = ErrorBody),
        (status = 409, description = "Name in use", body = ErrorBody),
    )
)]
pub async fn create_subscription(
    State(messaging): State<Messaging>,
    caller: Caller,
    Json(body): Json<CreateSubscription>,
) -> Result<(StatusCode, Json<Subscription>), ApiError> {
    let name = SubscriptionName::parse(&body.name)?;
    let topic = TopicName::parse(&body.topic)?;
    caller.authorize(Scope::MessagingConsume, &topic.resource())?;
    let project_id = caller.project()?;
    let deadline = bounded(
        body.ack_deadline_seconds,
        30,
        "ack_deadline_seconds",
        1..=MAX_DEADLINE_SECONDS,
    )?;
    let attempts = bounded(
        body.max_delivery_attempts.map(u64::from),
        5,
        "max_delivery_attempts",
        1..=100,
    )?;
    let backoff_min = bounded(
        body.retry_backoff_min_seconds,
        1,
        "retry_backoff_min_seconds",
        0..=3600,
    )?;
    if body.start.is_some() && body.start_time.is_some() {
        return Err(ApiError::InvalidField {
            field: "start_time".into(),
            reason: "give `start` or `start_time`, not both".into(),
        });
    }
    if body.dead_letter_topic.as_deref() == Some(body.topic.as_str()) {
        return Err(ApiError::InvalidField {
            field: "dead_letter_topic".into(),
            reason: "must be another topic than the one read".into(),
        });
    }
    let backoff_max = bounded(
        body.retry_backoff_max_seconds,
        600,
        "retry_backoff_max_seconds",
        backoff_min..=86_400,
    )?;
    let push = match &body.push {
        Some(push) => {
            let concurrency = bounded(
                push.max_concurrency.map(u64::from),
                16,
                "push.max_concurrency",
                1..=256,
            )?;
            let endpoint = messaging
                .push
                .guard()
                .check_endpoint(&push.endpoint)
                .await?;
            Some((endpoint.to_string(), new_push_secret(), concurrency as i64))
        }
        None => None,
    };

    let mut conn = messaging.shared.store().pool().acquire().await?;
    let topic_row = get_topic_row(&mut conn, project_id, &topic).await?;
    let dead_letter = match &body.dead_letter_topic {
        Some(dead) => {
            let dead = TopicName::parse(dead)?;
            caller.authorize(Scope::MessagingPublish, &dead.resource())?;
            Some(get_topic_row(&mut conn, project_id, &dead).await?)
        }
        None => None,
    };
    drop(conn);
    // Where each partition starts; the logs are asked before the row exists, so a message
    // published meanwhile may or may not be included for `latest`, as in Kafka.
    let mut starts = Vec::new();
    for partition in 0..topic_row.topic.partition_count {
        let log = messaging
            .logs
            .partition(&topic_row.id, partition)
            .await
            .map_err(log_error)?;
        let start = match (body.start_time, body.start.unwrap_or_default()) {
            (Some(time), _) => log
                .offset_for_time((time.unix_timestamp_nanos() / 1_000_000) as i64)
                .await
                .map_err(log_error)?,
            (None, StartPosition::Earliest) => log.bounds().await.map_err(log_error)?.0,
            (None, StartPosition::Latest) => log.bounds().await.map_err(log_error)?.1,
        };
        starts.push(start);
    }

    let id = new_id("sub");
    let mut tx = messaging.shared.store().begin().await?;
    let inserted = sqlx::query(
        "INSERT INTO subscriptions (id, project_id, topic_id, name, ack_deadline_seconds, \
         max_delivery_attempts, dead_letter_topic_id, backoff_min_ms, backoff_max_ms, \
         push_endpoint, push_secret, push_concurrency, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $13)",
    )
    .bind(&id)
    .bind(project_id)
    .bind(&topic_row.id)
    .bind(name.as_str())
    .bind(deadline as i64)
    .bind(attempts as i64)
    .bind(dead_letter.as_ref().map(|t| t.id.clone()))
    .bind((backoff_min * 1000) as i64)
    .bind((backoff_max * 1000) as i64)
    .bind(push.as_ref().map(|p| p.0.clone()))
    .bind(push.as_ref().map(|p| p.1.clone()))
    .bind(push.as_ref().map(|p| p.2))
    .bind(now_millis())
    .execute(&mut *tx)
    .await;
    match inserted {
        Err(err) if is_unique_violation(&err) => {
            return Err(ApiError::SubscriptionNameTaken(name.as_str().to_owned()));
        }
        other => other?,
    };
    for (partition, start) in starts.iter().enumerate() {
        sqlx::query(
            "INSERT INTO subscription_offsets (subscription_id, partition_no, committed) \
             VALUES ($1, $2, $3)",
        )
        .bind(&id)
        .bind(partition as i64)
        .bind(*start as i64)
        .execute(&mut *tx)
        .await?;
    }
    let mut row = get_subscription_row(&mut tx, project_id, &name).await?;
    tx.commit().await?;
    if let Some(push) = &mut row.subscription.push {
        push.secret = row.push_secret.as_ref().map(|s| s.expose().to_owned());
    }

    if push.is_some() {
        messaging.push.wake();
    }
    tracing::info!(project_id, subscription = %name.as_str(), topic = %topic.as_str(), "subscription created");
    Ok((StatusCode::CREATED, Json(row.subscription)))
}

/// Lists the project's subscriptions.
#[utoipa::path(
    get,
    path = "/subscriptions",
    tag = "messaging",
    responses((status = 200, description = "Subscriptions by name", body = Vec<Subscription>))
)]
pub async fn list_subscriptions(
    State(messaging): State<Messaging>,
    caller: Caller,
) -> Result<Json<Vec<Subscription>>, ApiError> {
    caller.require_scope(Scope::MessagingConsume)?;
    let project_id = caller.project()?;
    let mut conn = messaging.shared.store().pool().acquire().await?;
    let sql =
        format!("SELECT {COLUMNS} FROM subscriptions s WHERE s.project_id = $1 ORDER BY s.name");
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(project_id)
        .fetch_all(&mut *conn)
        .await?;
    let mut subscriptions = Vec::with_capacity(rows.len());
    for row in &rows {
        let row = from_row(&mut conn, row).await?;
        let resource = format!("topic:{}", row.topic.topic.name);
        if caller.authorize(Scope::MessagingConsume, &resource).is_ok() {
            subscriptions.push(row.subscription);
        }
    }
    Ok(Json(subscriptions))
}

/// Reads a subscription.
#[utoipa::path(
    get,
    path = "/subscriptions/{subscription}",
    tag = "messaging",
    params(("subscription" = String, Path, description = "Subscription name")),
    responses(
        (status = 200, description = "The subscription", body = Subscription),
        (status = 404, description = "No such subscription", body = ErrorBody),
    )
)]
pub async fn get_subscription(
    State(messaging): State<Messaging>,
    caller: Caller,
    Path(subscription): Path<String>,
) -> Result<Json<Subscription>, ApiError> {
    let row = authorized_subscription(&messaging, &caller, &subscription).await?;
    Ok(Json(row.subscription))
}

/// Deletes a subscription and its delivery state.
#[utoipa::path(
    delete,
    path = "/subscriptions/{subscription}",
    tag = "messaging",
    params(("subscription" = String, Path, description = "Subscription name")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, description = "No such subscription", body = ErrorBody),
    )
)]
pub async fn delete_subscription(
    State(messaging): State<Messaging>,
    caller: Caller,
    Path(subscription): Path<String>,
) -> Result<StatusCode, ApiError> {
    let row = authorized_subscription(&messaging, &caller, &subscription).await?;
    let mut tx = messaging.shared.store().begin().await?;
    for table in ["subscription_messages", "subscription_offsets"] {
        let sql = format!("DELETE FROM {table} WHERE subscription_id = $1");
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(&row.id)
            .execute(&mut *tx)
            .await?;
    }
    sqlx::query("DELETE FROM subscriptions WHERE id = $1")
        .bind(&row.id)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    messaging.deliveries.forget(&row.id);
    if let Some(kafka) = messaging.logs.kafka() {
        let kafka = kafka.clone();
        let id = row.id.clone();
        tokio::spawn(async move { kafka.forget_group(&id).await });
    }
    tracing::info!(subscription = %row.subscription.name, "subscription deleted");
    Ok(StatusCode::NO_CONTENT)
}
