//! Publishing, and reading a partition from an offset or a time (replay).

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;

use axum::extract::State;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use plinth_shared::ApiError;
use plinth_shared::auth::Caller;
use plinth_shared::extract::{Json, Path, Query};
use plinth_shared::ids::from_millis;
use plinth_types::messaging::{
    Message, OutgoingMessage, PublishRequest, PublishResponse, Published, ReadResponse,
};
use plinth_types::{ErrorBody, Scope};
use serde::Deserialize;
use time::OffsetDateTime;

use crate::log::LogError;
use crate::message::StoredMessage;
use crate::names::TopicName;
use crate::topics::{TopicRow, get_topic_and_quotas, get_topic_row};
use crate::{Messaging, dedup, log_error};

/// Most messages in one publish request.
pub const MAX_BATCH: usize = 1000;
/// Longest key, in bytes.
const MAX_KEY_BYTES: usize = 1024;
/// Longest producer message id, in bytes.
const MAX_MESSAGE_ID_BYTES: usize = 128;
/// Most headers on one message, and the longest name and value.
const MAX_HEADERS: usize = 64;
const MAX_HEADER_NAME_BYTES: usize = 256;
const MAX_HEADER_VALUE_BYTES: usize = 8 << 10;
/// The furthest ahead a message may be held back.
const MAX_DELAY_SECONDS: u64 = 7 * 24 * 60 * 60;
/// Most messages one read returns.
const MAX_READ: usize = 1000;

/// Checks one outgoing message and turns it into what the log stores. Nothing is stored
/// until every message of the request has passed.
fn validate(
    index: usize,
    message: OutgoingMessage,
    limit: u64,
    now: OffsetDateTime,
) -> Result<StoredMessage, ApiError> {
    let invalid = |reason: &str| ApiError::InvalidMessage {
        index,
        reason: reason.into(),
    };
    let (value, json) = match (message.value, message.value_base64) {
        (Some(value), None) => (
            Bytes::from(serde_json::to_vec(&value).map_err(ApiError::internal)?),
            true,
        ),
        (None, Some(text)) => (
            Bytes::from(
                STANDARD
                    .decode(text.as_bytes())
                    .map_err(|err| invalid(&format!("`value_base64` is not base64: {err}")))?,
            ),
            false,
        ),
        (None, None) => return Err(invalid("set `value` or `value_base64`")),
        (Some(_), Some(_)) => return Err(invalid("set only one of `value` and `value_base64`")),
    };
    if value.len() as u64 > limit {
        return Err(ApiError::MessageTooLarge { index, limit });
    }
    if message
        .key
        .as_ref()
        .is_some_and(|k| k.len() > MAX_KEY_BYTES)
    {
        return Err(invalid("`key` is longer than 1024 bytes"));
    }
    if let Some(id) = &message.message_id
        && (id.is_empty() || id.len() > MAX_MESSAGE_ID_BYTES)
    {
        return Err(invalid("`message_id` must be 1 to 128 bytes"));
    }
    if message.headers.len() > MAX_HEADERS {
        return Err(invalid("more than 64 headers"));
    }
    for (name, value) in &message.headers {
        if name.is_empty() || name.len() > MAX_HEADER_NAME_BYTES {
            return Err(invalid("a header name must be 1 to 256 bytes"));
        }
        if value.len() > MAX_HEADER_VALUE_BYTES {
            return Err(invalid("a header value is longer than 8 KiB"));
        }
    }
    let deliver_at = match (message.delay_seconds, message.deliver_at) {
        (Some(_), Some(_)) => {
            return Err(invalid("set only one of `delay_seconds` and `deliver_at`"));
        }
        (Some(delay), None) if delay > MAX_DELAY_SECONDS => {
            return Err(invalid("`delay_seconds` is over 7 days"));
        }
        (Some(delay), None) => Some(now + time::Duration::seconds(delay as i64)),
        (None, Some(at)) if at > now + time::Duration::seconds(MAX_DELAY_SECONDS as i64) => {
            return Err(invalid("`deliver_at` is more than 7 days ahead"));
        }
        (None, at) => at,
    };
    Ok(StoredMessage {
        value,
        json,
        key: message.key,
        deliver_at: deliver_at.map(|at| (at.unix_timestamp_nanos() / 1_000_000) as i64),
        message_id: message.message_id,
        headers: message.headers,
    })
}

/// The partition a message goes to: by its key's hash when it has one, so one key keeps its
/// order, else the next in turn.
fn partition_for(messaging: &Messaging, key: Option<&str>, partitions: u32) -> u32 {
    match key {
        Some(key) => crc32fast::hash(key.as_bytes()) % partitions,
        None => {
            (messaging.round_robin.fetch_add(1, Ordering::Relaxed) % u64::from(partitions)) as u32
        }
    }
}

/// Publishes one message or a batch; answers once every message is durable.
#[utoipa::path(
    post,
    path = "/topics/{topic}/messages",
    tag = "messaging",
    params(("topic" = String, Path, description = "Topic name")),
    request_body = PublishRequest,
    responses(
        (status = 200, description = "Where each message was stored", body = PublishResponse),
        (status = 400, description = "A bad message; nothing was stored", body = ErrorBody),
        (status = 404, description = "No such topic", body = ErrorBody),
        (status = 413, description = "A message over the size limit", body = ErrorBody),
    )
)]
pub async fn publish(
    State(messaging): State<Messaging>,
    caller: Caller,
    Path(topic): Path<String>,
    Json(body): Json<PublishRequest>,
) -> Result<Json<PublishResponse>, ApiError> {
    let name = TopicName::parse(&topic)?;
    caller.authorize(Scope::MessagingPublish, &name.resource())?;
    let project_id = caller.project()?;
    if body.messages.is_empty() || body.messages.len() > MAX_BATCH {
        return Err(ApiError::InvalidField {
            field: "messages".into(),
            reason: format!("must hold 1 to {MAX_BATCH} messages"),
        });
    }
    let operator = messaging.shared.config().messaging_max_message_bytes;
    let (row, quotas) = get_topic_and_quotas(&messaging, project_id, &name).await?;
    let limit = quotas
        .message_size_max
        .map_or(operator, |q| q.min(operator));
    let now = OffsetDateTime::now_utc();
    let messages = body
        .messages
        .into_iter()
        .enumerate()
        .map(|(index, message)| validate(index, message, limit, now))
        .collect::<Result<Vec<_>, _>>()?;

    // Messages whose id was seen within the window are answered, not stored.
    let seen = if messages.iter().any(|m| m.message_id.is_some()) {
        dedup::claim(&messaging, &row.id, &messages).await?
    } else {
        dedup::Seen::default()
    };
    let (indexes, fresh): (Vec<usize>, Vec<StoredMessage>) = messages
        .into_iter()
        .enumerate()
        .filter(|(index, _)| seen.duplicates.get(*index).is_none_or(Option::is_none))
        .unzip();

    let bytes: u64 = fresh.iter().map(|m| m.value.len() as u64).sum();
    let count = fresh.len() as u64;
    // The day's count is reserved before the append and given back if it fails; a project
    // without the quota pays nothing for it.
    let daily = match quotas.messages_per_day {
        Some(limit) if count > 0 => {
            match reserve_today(&messaging, project_id, count as i64, limit).await {
                Ok(daily) => Some(daily),
                Err(err) => {
                    dedup::release(&messaging, &row.id, &seen).await;
                    return Err(err);
                }
            }
        }
        _ => None,
    };
    let stored = if fresh.is_empty() {
        Ok(Vec::new())
    } else {
        append_stored(&messaging, &row, fresh).await
    };
    let stored = match stored {
        Ok(stored) => stored,
        Err(err) => {
            if let Some((day, limit)) = daily
                && let Err(release) =
                    release_today(&messaging, project_id, &day, count as i64, limit).await
            {
                tracing::warn!(error = %release, "daily message count not given back");
            }
            dedup::release(&messaging, &row.id, &seen).await;
            return Err(err);
        }
    };
    let published = dedup::answers(&seen, &indexes, stored);
    // The messages are durable whatever happens next: a failure to record their ids costs
    // only the deduplication of a retry once the claims expire.
    if let Err(err) = dedup::complete(&messaging, &row.id, &seen, &published).await {
        tracing::warn!(error = %err, "message ids not recorded; their claims expire");
    }

    let usage = messaging.shared.usage();
    usage.record(project_id, "messages_published", count);
    usage.record(project_id, "message_bytes_published", bytes);
    Ok(Json(PublishResponse {
        messages: published,
    }))
}

/// Reserves `count` messages of today's `messages_per_day`; returns the day and limit, to
/// give them back with.
async fn reserve_today(
    messaging: &Messaging,
    project_id: &str,
    count: i64,
    limit: u64,
) -> Result<(String, u64), ApiError> {
    let day = plinth_shared::usage::day_string(OffsetDateTime::now_utc().date());
    let mut tx = messaging.shared.store().begin().await?;
    messaging
        .shared
        .quotas()
        .reserve_daily(&mut tx, project_id, "messages_per_day", &day, count, limit)
        .await?;
    tx.commit().await?;
    Ok((day, limit))
}

async fn release_today(
    messaging: &Messaging,
    project_id: &str,
    day: &str,
    count: i64,
    limit: u64,
) -> Result<(), ApiError> {
    let mut tx = messaging.shared.store().begin().await?;
    messaging
        .shared
        .quotas()
        .reserve_daily(&mut tx, project_id, "messages_per_day", day, -count, limit)
        .await?;
    tx.commit().await?;
    Ok(())
}

/// Appends validated messages to a topic and returns where each went, in their order.
/// Messages are grouped by partition, in order, and each group is one append, so a batch's
/// messages for one partition are stored together and in order.
pub(crate) async fn append_stored(
    messaging: &Messaging,
    topic: &TopicRow,
    messages: Vec<StoredMessage>,
) -> Result<Vec<Published>, ApiError> {
    let partitions = topic.topic.partition_count;
    let mut groups: BTreeMap<u32, (Vec<usize>, Vec<Bytes>)> = BTreeMap::new();
    for (index, message) in messages.iter().enumerate() {
        let partition = partition_for(messaging, message.key.as_deref(), partitions);
        let group = groups.entry(partition).or_default();
        group.0.push(index);
        group.1.push(message.encode());
    }
    let appends = groups.into_iter().map(|(partition, (indexes, payloads))| {
        let topic_id = topic.id.clone();
        async move {
            let log = messaging.logs.partition(&topic_id, partition).await?;
            let offsets = log.append(payloads).await?;
            Ok::<_, LogError>((partition, indexes, offsets))
        }
    });
    let mut published = vec![
        Published {
            partition: 0,
            offset: 0,
            duplicate: false,
        };
        messages.len()
    ];
    for result in futures::future::join_all(appends).await {
        let (partition, indexes, offsets) = result.map_err(log_error)?;
        for (index, offset) in indexes.into_iter().zip(offsets) {
            published[index] = Published {
                partition,
                offset,
                duplicate: false,
            };
        }
    }
    Ok(published)
}

/// Query of a partition read: from an offset, or from the first message at or after a time;
/// from the oldest kept when neither is given.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ReadQuery {
    /// Offset to start at.
    pub offset: Option<u64>,
    /// Start at the first message stored at or after this time (RFC 3339).
    #[serde(default, with = "time::serde::rfc3339::option")]
    #[param(value_type = Option<String>)]
    pub time: Option<OffsetDateTime>,
    /// Most messages to return (1 to 1000, default 100).
    pub limit: Option<usize>,
}

/// Reads a partition from an offset or a time, without a subscription (replay).
#[utoipa::path(
    get,
    path = "/topics/{topic}/partitions/{partition}/messages",
    tag = "messaging",
    params(
        ("topic" = String, Path, description = "Topic name"),
        ("partition" = u32, Path, description = "Partition number"),
        ReadQuery,
    ),
    responses(
        (status = 200, description = "Messages in offset order", body = ReadResponse),
        (status = 400, description = "An offset outside the partition", body = ErrorBody),
        (status = 404, description = "No such topic or partition", body = ErrorBody),
    )
)]
pub async fn read_partition(
    State(messaging): State<Messaging>,
    caller: Caller,
    Path((topic, partition)): Path<(String, u32)>,
    Query(query): Query<ReadQuery>,
) -> Result<Json<ReadResponse>, ApiError> {
    let name = TopicName::parse(&topic)?;
    caller.authorize(Scope::MessagingConsume, &name.resource())?;
    let project_id = caller.project()?;
    let limit = query.limit.unwrap_or(100);
    if !(1..=MAX_READ).contains(&limit) {
        return Err(ApiError::InvalidParameter(format!(
            "`limit` must be 1 to {MAX_READ}"
        )));
    }
    if query.offset.is_some() && query.time.is_some() {
        return Err(ApiError::InvalidParameter(
            "give `offset` or `time`, not both".into(),
        ));
    }

    let mut conn = messaging.shared.store().pool().acquire().await?;
    let row = get_topic_row(&mut conn, project_id, &name).await?;
    drop(conn);
    if partition >= row.topic.partition_count {
        return Err(ApiError::PartitionNotFound {
            topic: name.as_str().to_owned(),
            partition,
        });
    }
    let log = messaging
        .logs
        .partition(&row.id, partition)
        .await
        .map_err(log_error)?;
    let from = match (query.offset, query.time) {
        (Some(offset), _) => offset,
        (None, Some(time)) => log
            .offset_for_time((time.unix_timestamp_nanos() / 1_000_000) as i64)
            .await
            .map_err(log_error)?,
        (None, None) => log.bounds().await.map_err(log_error)?.0,
    };
    let records = log
        .read(from, limit, 4 << 20)
        .await
        .map_err(|err| match err {
            LogError::OffsetOutOfRange { offset, start, end } => ApiError::OffsetOutOfRange {
                partition,
                offset,
                start,
                end,
            },
            other => log_error(other),
        })?;

    let next_offset = records.last().map_or(from, |r| r.offset + 1);
    let bytes: usize = records.iter().map(|r| r.payload.len()).sum();
    let mut messages = Vec::with_capacity(records.len());
    for record in records {
        let stored = StoredMessage::decode(&record.payload).map_err(ApiError::internal)?;
        messages.push(to_wire(partition, record.offset, record.timestamp, stored)?);
    }
    let usage = messaging.shared.usage();
    usage.record(project_id, "messages_read", messages.len() as u64);
    usage.record(project_id, "message_bytes_read", bytes as u64);
    Ok(Json(ReadResponse {
        messages,
        next_offset,
    }))
}

/// A stored message as a reader sees it.
pub(crate) fn to_wire(
    partition: u32,
    offset: u64,
    timestamp: i64,
    stored: StoredMessage,
) -> Result<Message, ApiError> {
    let (value, value_base64) = if stored.json {
        (
            Some(serde_json::from_slice(&stored.value).map_err(ApiError::internal)?),
            None,
        )
    } else {
        (None, Some(STANDARD.encode(&stored.value)))
    };
    Ok(Message {
        partition,
        offset,
        published_at: from_millis(timestamp),
        value,
        value_base64,
        key: stored.key,
        headers: stored.headers,
        deliver_at: stored.deliver_at.map(from_millis),
        message_id: stored.message_id,
    })
}
