//! Bucket notifications: a project's storage bucket publishes its object events to a topic.
//!
//! The storage service records every object change in its outbox (`object_events`) in the
//! change's own transaction; this service relays the outbox, oldest first, to the topics
//! that asked for the events, and deletes an event only once every message made from it is
//! durable. A restart of either service loses nothing: unrelayed events wait in the outbox.
//! An event relayed again after a crash carries the same `message_id` (its event id), so
//! within the deduplication window it is not stored twice. Events no notification wants
//! are dropped from the outbox.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use plinth_shared::ApiError;
use plinth_shared::auth::Caller;
use plinth_shared::extract::{Json, Path};
use plinth_shared::ids::{from_millis, new_id, now_millis};
use plinth_shared::store::{Backend, is_unique_violation};
use plinth_types::messaging::{
    BucketNotification, CreateBucketNotification, ObjectEvent, ObjectEventKind,
};
use plinth_types::{ErrorBody, Scope};
use sqlx::Row;

use crate::message::StoredMessage;
use crate::names::TopicName;
use crate::topics::{TopicRow, get_topic_by_id, get_topic_row};
use crate::{Background, Messaging, dedup};

/// Events relayed per round.
const BATCH: i64 = 500;
/// Longest prefix a notification may filter on (an object key's limit).
const MAX_PREFIX_BYTES: usize = 1024;

fn kind_name(kind: ObjectEventKind) -> &'static str {
    match kind {
        ObjectEventKind::Created => "object.created",
        ObjectEventKind::Deleted => "object.deleted",
    }
}

fn parse_kind(name: &str) -> Option<ObjectEventKind> {
    match name {
        "object.created" => Some(ObjectEventKind::Created),
        "object.deleted" => Some(ObjectEventKind::Deleted),
        _ => None,
    }
}

/// A bucket name as storage accepts them: 3 to 63 of `a-z`, `0-9`, `-` and `.`.
fn check_bucket(name: &str) -> Result<(), ApiError> {
    let allowed = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.';
    if (3..=63).contains(&name.len()) && name.chars().all(allowed) {
        Ok(())
    } else {
        Err(ApiError::InvalidBucketName(format!(
            "`{name}` is not a bucket name: 3 to 63 of a-z, 0-9, `-` and `.`"
        )))
    }
}

fn from_row(row: &sqlx::any::AnyRow, topic: &str) -> Result<BucketNotification, ApiError> {
    let events: String = row.try_get("events")?;
    Ok(BucketNotification {
        id: row.try_get("id")?,
        bucket: row.try_get("bucket")?,
        topic: topic.to_owned(),
        events: events.split(',').filter_map(parse_kind).collect(),
        prefix: row.try_get("prefix")?,
        created_at: from_millis(row.try_get("created_at")?),
    })
}

/// Publishes a bucket's object events to a topic.
#[utoipa::path(
    post,
    path = "/bucket-notifications",
    tag = "messaging",
    request_body = CreateBucketNotification,
    responses(
        (status = 201, description = "Created", body = BucketNotification),
        (status = 400, description = "A bad bucket name or prefix", body = ErrorBody),
        (status = 404, description = "No such topic", body = ErrorBody),
        (status = 409, description = "The bucket already notifies the topic", body = ErrorBody),
    )
)]
pub async fn create_notification(
    State(messaging): State<Messaging>,
    caller: Caller,
    Json(body): Json<CreateBucketNotification>,
) -> Result<(StatusCode, Json<BucketNotification>), ApiError> {
    check_bucket(&body.bucket)?;
    let topic = TopicName::parse(&body.topic)?;
    // Events name keys, sizes and ETags: only someone who may read the bucket can route them.
    caller.authorize(Scope::StorageRead, &format!("bucket:{}", body.bucket))?;
    caller.authorize(Scope::MessagingPublish, &topic.resource())?;
    let project_id = caller.project()?;
    let prefix = body.prefix.unwrap_or_default();
    if prefix.len() > MAX_PREFIX_BYTES {
        return Err(ApiError::InvalidField {
            field: "prefix".into(),
            reason: "is longer than 1024 bytes".into(),
        });
    }
    let mut events = body
        .events
        .unwrap_or_else(|| vec![ObjectEventKind::Created, ObjectEventKind::Deleted]);
    events.sort();
    events.dedup();
    if events.is_empty() {
        return Err(ApiError::InvalidField {
            field: "events".into(),
            reason: "must name at least one event".into(),
        });
    }
    let names: Vec<&str> = events.iter().map(|k| kind_name(*k)).collect();

    let id = new_id("ntf");
    let created_at = now_millis();
    let mut tx = messaging.shared.store().begin().await?;
    let topic_row = get_topic_row(&mut tx, project_id, &topic).await?;
    let inserted = sqlx::query(
        "INSERT INTO bucket_notifications (id, project_id, bucket, topic_id, events, prefix, \
         created_at) VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(&id)
    .bind(project_id)
    .bind(&body.bucket)
    .bind(&topic_row.id)
    .bind(names.join(","))
    .bind(&prefix)
    .bind(created_at)
    .execute(&mut *tx)
    .await;
    match inserted {
        Err(err) if is_unique_violation(&err) => {
            return Err(ApiError::NotificationExists {
                bucket: body.bucket,
                topic: body.topic,
            });
        }
        other => other?,
    };
    tx.commit().await?;
    tracing::info!(project_id, bucket = %body.bucket, topic = %topic.as_str(), "bucket notification created");
    Ok((
        StatusCode::CREATED,
        Json(BucketNotification {
            id,
            bucket: body.bucket,
            topic: topic.as_str().to_owned(),
            events,
            prefix,
            created_at: from_millis(created_at),
        }),
    ))
}

/// Lists the project's bucket notifications.
#[utoipa::path(
    get,
    path = "/bucket-notifications",
    tag = "messaging",
    responses((status = 200, description = "By bucket and topic", body = Vec<BucketNotification>))
)]
pub async fn list_notifications(
    State(messaging): State<Messaging>,
    caller: Caller,
) -> Result<Json<Vec<BucketNotification>>, ApiError> {
    caller.require_scope(Scope::MessagingPublish)?;
    let project_id = caller.project()?;
    let rows = sqlx::query(
        "SELECT n.id, n.bucket, n.events, n.prefix, n.created_at, t.name AS topic \
         FROM bucket_notifications n JOIN topics t ON t.id = n.topic_id \
         WHERE n.project_id = $1 ORDER BY n.bucket, t.name",
    )
    .bind(project_id)
    .fetch_all(messaging.shared.store().pool())
    .await?;
    let mut listed = Vec::with_capacity(rows.len());
    for row in &rows {
        let topic: String = row.try_get("topic")?;
        if caller
            .authorize(Scope::MessagingPublish, &format!("topic:{topic}"))
            .is_ok()
        {
            listed.push(from_row(row, &topic)?);
        }
    }
    Ok(Json(listed))
}

/// Stops a bucket notification; events already relayed stay in the topic.
#[utoipa::path(
    delete,
    path = "/bucket-notifications/{id}",
    tag = "messaging",
    params(("id" = String, Path, description = "The notification's id")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, description = "No such notification", body = ErrorBody),
    )
)]
pub async fn delete_notification(
    State(messaging): State<Messaging>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    caller.require_scope(Scope::MessagingPublish)?;
    let project_id = caller.project()?;
    let mut tx = messaging.shared.store().begin().await?;
    let row = sqlx::query(
        "SELECT t.name AS topic FROM bucket_notifications n JOIN topics t ON t.id = n.topic_id \
         WHERE n.id = $1 AND n.project_id = $2",
    )
    .bind(&id)
    .bind(project_id)
    .fetch_optional(&mut *tx)
    .await?
    .ok_or_else(|| ApiError::NotificationNotFound(id.clone()))?;
    let topic: String = row.try_get("topic")?;
    caller
        .authorize(Scope::MessagingPublish, &format!("topic:{topic}"))
        .map_err(|_| ApiError::NotificationNotFound(id.clone()))?;
    sqlx::query("DELETE FROM bucket_notifications WHERE id = $1")
        .bind(&id)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}

/// A notification as the relay matches events against it.
struct Route {
    project_id: String,
    bucket: String,
    topic_id: String,
    events: Vec<ObjectEventKind>,
    prefix: String,
}

/// Relays the outbox until the service is dropped: at once while events are waiting, every
/// quarter second when it is empty.
pub(crate) async fn relay(background: Background) {
    loop {
        let Some(messaging) = background.upgrade() else {
            return;
        };
        // A round that has begun ends before a graceful shutdown closes the store.
        let Some(working) = messaging.shared.hold_open().await else {
            return;
        };
        let relayed = messaging.relay_object_events().await;
        drop((working, messaging));
        let pause = match relayed {
            Ok(n) if n as i64 == BATCH => Duration::ZERO,
            Ok(_) => Duration::from_millis(250),
            Err(err) => {
                tracing::warn!(error = %err, "object events not relayed; retrying");
                Duration::from_secs(2)
            }
        };
        tokio::time::sleep(pause).await;
    }
}

impl Messaging {
    /// Relays one batch of the storage outbox to the topics of bucket notifications;
    /// returns how many events it took from the outbox. The background relay calls it.
    ///
    /// # Errors
    ///
    /// Returns the store's or the log's failure; the events then stay in the outbox.
    pub async fn relay_object_events(&self) -> Result<usize, ApiError> {
        let pool = self.shared.store().pool();
        // In the order the events were recorded: for one object, the order its changes
        // committed in (they are serialized by its row).
        let order = match self.shared.store().backend() {
            Backend::Sqlite => "rowid",
            Backend::Postgres => "seq",
        };
        let sql = format!(
            "SELECT id, project_id, bucket, key, kind, size, etag, at FROM object_events \
             ORDER BY {order} LIMIT $1"
        );
        let events = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(BATCH)
            .fetch_all(pool)
            .await?;
        if events.is_empty() {
            return Ok(0);
        }
        let routes = sqlx::query(
            "SELECT project_id, bucket, topic_id, events, prefix FROM bucket_notifications",
        )
        .fetch_all(pool)
        .await?
        .iter()
        .map(|row| {
            let events: String = row.try_get("events")?;
            Ok(Route {
                project_id: row.try_get("project_id")?,
                bucket: row.try_get("bucket")?,
                topic_id: row.try_get("topic_id")?,
                events: events.split(',').filter_map(parse_kind).collect(),
                prefix: row.try_get("prefix")?,
            })
        })
        .collect::<Result<Vec<_>, ApiError>>()?;

        // Messages per topic, in outbox order, with the events they came from.
        let mut batches: BTreeMap<String, Batch> = BTreeMap::new();
        let mut ids = Vec::with_capacity(events.len());
        for (position, row) in events.iter().enumerate() {
            let id: String = row.try_get("id")?;
            ids.push(id.clone());
            let Some(kind) = parse_kind(&row.try_get::<String, _>("kind")?) else {
                continue;
            };
            let project_id: String = row.try_get("project_id")?;
            let event = ObjectEvent {
                id,
                kind,
                bucket: row.try_get("bucket")?,
                key: row.try_get("key")?,
                size: row.try_get::<i64, _>("size")?.max(0) as u64,
                etag: row.try_get("etag")?,
                time: from_millis(row.try_get("at")?),
            };
            let wanted = routes.iter().filter(|r| {
                r.project_id == project_id
                    && r.bucket == event.bucket
                    && r.events.contains(&kind)
                    && event.key.starts_with(&r.prefix)
            });
            for route in wanted {
                let message = StoredMessage {
                    value: serde_json::to_vec(&event)
                        .map_err(ApiError::internal)?
                        .into(),
                    json: true,
                    key: Some(format!("{}/{}", event.bucket, event.key)),
                    message_id: Some(event.id.clone()),
                    headers: [("plinth-event-type".to_owned(), kind_name(kind).to_owned())].into(),
                    deliver_at: None,
                };
                let batch = batches
                    .entry(route.topic_id.clone())
                    .or_insert_with(|| Batch {
                        project_id: project_id.clone(),
                        messages: Vec::new(),
                        events: Vec::new(),
                    });
                batch.messages.push(message);
                batch.events.push(position);
            }
        }

        let mut topics: HashMap<String, TopicRow> = HashMap::new();
        // One failing topic holds back only the events it was to receive.
        let mut failed: Option<ApiError> = None;
        let mut held = HashSet::new();
        for (topic_id, batch) in batches {
            let Batch {
                project_id,
                messages,
                events: from,
            } = batch;
            let topic = match topics.get(&topic_id) {
                Some(topic) => topic.clone(),
                None => {
                    let mut conn = pool.acquire().await?;
                    match get_topic_by_id(&mut conn, &topic_id).await {
                        Ok(topic) => topics.entry(topic_id).or_insert(topic).clone(),
                        // Deleted since the routes were read (its notifications with it).
                        Err(ApiError::TopicNotFound(_)) => continue,
                        Err(err) => {
                            held.extend(from);
                            failed.get_or_insert(err);
                            continue;
                        }
                    }
                }
            };
            let count = messages.len() as u64;
            let bytes: u64 = messages.iter().map(|m| m.value.len() as u64).sum();
            match dedup::append_once(self, &topic, messages).await {
                Ok(_) => {}
                Err(ApiError::TopicNotFound(_)) => continue,
                Err(err) => {
                    held.extend(from);
                    failed.get_or_insert(err);
                    continue;
                }
            }
            let usage = self.shared.usage();
            usage.record(&project_id, "messages_published", count);
            usage.record(&project_id, "message_bytes_published", bytes);
        }

        // Every message made from these events is durable: they can leave the outbox.
        let mut tx = self.shared.store().begin().await?;
        let mut relayed = 0;
        for (position, id) in ids.iter().enumerate() {
            if held.contains(&position) {
                continue;
            }
            sqlx::query("DELETE FROM object_events WHERE id = $1")
                .bind(id)
                .execute(&mut *tx)
                .await?;
            relayed += 1;
        }
        tx.commit().await?;
        match failed {
            Some(err) => Err(err),
            None => Ok(relayed),
        }
    }
}

/// The messages one topic gets from a round of the relay.
struct Batch {
    project_id: String,
    messages: Vec<StoredMessage>,
    /// For each message, the position of its event in the round.
    events: Vec<usize>,
}
