//! Bodies of the messaging API: topics, publishing and reading partitions.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

/// A topic of a project.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Topic {
    /// The topic's name, unique within its project.
    pub name: String,
    /// How many partitions it has; messages with the same key go to the same one.
    pub partition_count: u32,
    /// Messages older than this are deleted (whole segments at a time), if set.
    pub retention_seconds: Option<u64>,
    /// A partition is trimmed (oldest segments first) once it holds more than this, if set.
    pub retention_bytes: Option<u64>,
    /// Each partition's offsets; only on `GET /topics/{topic}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partitions: Option<Vec<PartitionInfo>>,
    /// When the topic was created.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// When its settings last changed.
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
}

/// The offsets a partition holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PartitionInfo {
    /// The partition's number, from 0.
    pub partition: u32,
    /// The oldest offset retention has kept.
    pub start_offset: u64,
    /// The offset the next message will get (the high-water mark).
    pub end_offset: u64,
}

/// Body of `POST /messaging/v1/topics`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CreateTopic {
    /// 1 to 128 of `a-z`, `A-Z`, `0-9`, `.`, `_` and `-`.
    pub name: String,
    /// Number of partitions; 1 when absent.
    #[serde(default)]
    pub partitions: Option<u32>,
    /// Delete messages older than this many seconds.
    #[serde(default)]
    pub retention_seconds: Option<u64>,
    /// Trim a partition past this many bytes.
    #[serde(default)]
    pub retention_bytes: Option<u64>,
}

/// Body of `PATCH /messaging/v1/topics/{topic}`; absent fields are left as they are, `0`
/// removes a limit.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct UpdateTopic {
    /// Delete messages older than this many seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention_seconds: Option<u64>,
    /// Trim a partition past this many bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention_bytes: Option<u64>,
}

/// A message to publish. Exactly one of `value` (any JSON) and `value_base64` (bytes) is set.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct OutgoingMessage {
    /// A JSON value, stored as its JSON text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<serde_json::Value>,
    /// Bytes, in standard base64.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value_base64: Option<String>,
    /// Messages with the same key go to the same partition, in the order published.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// Header names and values, passed through to consumers.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    /// Hold the message back from subscriptions for this many seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay_seconds: Option<u64>,
    /// Hold the message back from subscriptions until this time.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "time::serde::rfc3339::option"
    )]
    pub deliver_at: Option<OffsetDateTime>,
    /// The producer's id for the message: a retry with the same id within the
    /// deduplication window is not stored twice.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message_id: Option<String>,
}

/// Body of `POST /messaging/v1/topics/{topic}/messages`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct PublishRequest {
    /// One message or many; all are validated before any is stored.
    pub messages: Vec<OutgoingMessage>,
}

/// Where a published message was stored.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Published {
    /// Its partition.
    pub partition: u32,
    /// Its offset in the partition.
    pub offset: u64,
    /// True when its `message_id` was already published within the deduplication window:
    /// nothing was stored, and partition and offset are the first message's.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub duplicate: bool,
}

/// Answer to a publish: one entry per message, in the order sent.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PublishResponse {
    /// Where each message went.
    pub messages: Vec<Published>,
}

/// A stored message as a reader gets it. Exactly one of `value` and `value_base64` is set:
/// `value` for a message published as JSON.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Message {
    /// Its partition.
    pub partition: u32,
    /// Its offset in the partition.
    pub offset: u64,
    /// When the log stored it.
    #[serde(with = "time::serde::rfc3339")]
    pub published_at: OffsetDateTime,
    /// The JSON value, for a message published with `value`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<serde_json::Value>,
    /// The bytes, in base64, for a message published with `value_base64`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value_base64: Option<String>,
    /// Its key, if it had one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// Its headers.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    /// When subscriptions may deliver it, if it was delayed.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "time::serde::rfc3339::option"
    )]
    pub deliver_at: Option<OffsetDateTime>,
    /// The producer's id for it, if it had one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message_id: Option<String>,
}

/// Answer to a partition read.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ReadResponse {
    /// The messages, in offset order.
    pub messages: Vec<Message>,
    /// The offset to read from next.
    pub next_offset: u64,
}

/// Where a new subscription starts reading.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum StartPosition {
    /// The oldest message retention has kept.
    Earliest,
    /// Only messages published after the subscription is created.
    #[default]
    Latest,
}

/// Body of `POST /messaging/v1/subscriptions`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CreateSubscription {
    /// 1 to 128 of `a-z`, `A-Z`, `0-9`, `.`, `_` and `-`, unique within the project.
    pub name: String,
    /// The topic to read.
    pub topic: String,
    /// Where to start: `earliest` or `latest` (the default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start: Option<StartPosition>,
    /// Start at the first message stored at or after this time instead.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "time::serde::rfc3339::option"
    )]
    pub start_time: Option<OffsetDateTime>,
    /// How long a delivery is leased before it is redelivered; 30 when absent.
    #[serde(default)]
    pub ack_deadline_seconds: Option<u64>,
    /// Deliveries before a message is dead-lettered; 5 when absent.
    #[serde(default)]
    pub max_delivery_attempts: Option<u32>,
    /// A topic of the same project that receives messages past their last attempt.
    #[serde(default)]
    pub dead_letter_topic: Option<String>,
    /// The first retry waits this long after a nack; each later one twice as long.
    #[serde(default)]
    pub retry_backoff_min_seconds: Option<u64>,
    /// The longest a retry waits.
    #[serde(default)]
    pub retry_backoff_max_seconds: Option<u64>,
    /// Deliver by HTTP to an endpoint instead of waiting for pulls.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub push: Option<PushConfig>,
}

/// Where a push subscription delivers.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct PushConfig {
    /// An `http` or `https` URL. Hosts that resolve to loopback, private, link-local or
    /// cloud metadata addresses are refused unless the operator allows them.
    pub endpoint: String,
    /// Most deliveries in flight at once (1 to 256; 16 when absent).
    #[serde(default)]
    pub max_concurrency: Option<u32>,
}

/// How a push subscription delivers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Push {
    /// The endpoint every message is sent to, as a CloudEvent in binary mode.
    pub endpoint: String,
    /// Most deliveries in flight at once.
    pub max_concurrency: u32,
    /// The key of the `plinth-signature` header (HMAC-SHA256 of `{timestamp}.{body}`). Only
    /// the answer to the create shows it: keep it with the function.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
}

/// A subscription: a named consumer group on a topic.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Subscription {
    /// Its name, unique within the project.
    pub name: String,
    /// The topic it reads.
    pub topic: String,
    /// How long a delivery is leased.
    pub ack_deadline_seconds: u64,
    /// Deliveries before a message is dead-lettered.
    pub max_delivery_attempts: u32,
    /// Where messages past their last attempt go, if anywhere.
    pub dead_letter_topic: Option<String>,
    /// The shortest retry wait after a nack, in seconds.
    pub retry_backoff_min_seconds: u64,
    /// The longest retry wait, in seconds.
    pub retry_backoff_max_seconds: u64,
    /// Push delivery, for a push subscription.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub push: Option<Push>,
    /// When it was created.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}

/// Body of `POST /messaging/v1/subscriptions/{subscription}/pull`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct PullRequest {
    /// Most messages to return (1 to 1000; 10 when absent).
    #[serde(default)]
    pub max_messages: Option<usize>,
    /// How long to wait for a first message (0 to 30 seconds; 0 when absent).
    #[serde(default)]
    pub wait_seconds: Option<u64>,
}

/// A delivered message with its lease.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Delivery {
    /// Acknowledges, nacks or extends this delivery.
    pub lease_id: String,
    /// Which delivery of the message this is, from 1.
    pub attempt: u32,
    /// The message.
    pub message: Message,
}

/// Answer to a pull.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PullResponse {
    /// The deliveries, possibly none.
    pub messages: Vec<Delivery>,
}

/// Body of an ack, a nack or a lease extension.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct LeaseRequest {
    /// The leases, as deliveries named them.
    pub lease_ids: Vec<String>,
    /// Nack: redeliver after this many seconds instead of the backoff. Extend: the new
    /// lease length from now.
    #[serde(default)]
    pub seconds: Option<u64>,
}

/// Answer to an ack, a nack or an extension: the leases that no longer held (expired, or
/// already settled) and so changed nothing.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LeaseResponse {
    /// Leases that changed nothing.
    pub expired: Vec<String>,
}

/// Body of `POST /messaging/v1/subscriptions/{subscription}/seek`: either a time (every
/// partition), or a partition and an offset. Messages before the target count as
/// acknowledged, messages from it on as never delivered.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct SeekRequest {
    /// Seek every partition to its first message stored at or after this time.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "time::serde::rfc3339::option"
    )]
    pub time: Option<OffsetDateTime>,
    /// Seek this partition...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partition: Option<u32>,
    /// ...to this offset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offset: Option<u64>,
}

/// One push delivery attempt, as the delivery log keeps it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PushAttempt {
    /// When the request was sent.
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    /// The message's partition.
    pub partition: u32,
    /// The message's offset.
    pub offset: u64,
    /// Which delivery of the message it was, from 1.
    pub attempt: u32,
    /// The endpoint's HTTP status, when it answered.
    pub status: Option<u16>,
    /// From sending the request to the end of the answer, in milliseconds.
    pub latency_ms: u64,
    /// Why the attempt failed, when it did (a status other than 2xx, a timeout, a refused
    /// connection).
    pub error: Option<String>,
}

/// Answer to `GET /messaging/v1/subscriptions/{subscription}/push-attempts`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PushAttemptsResponse {
    /// The latest attempts, newest first.
    pub attempts: Vec<PushAttempt>,
}

/// A message that used up its delivery attempts, kept with its payload until redriven.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DeadLetter {
    /// How often it was delivered.
    pub attempts: u32,
    /// When it was dead-lettered.
    #[serde(with = "time::serde::rfc3339")]
    pub dead_at: OffsetDateTime,
    /// The message, as it was published.
    pub message: Message,
}

/// Answer to `GET /messaging/v1/subscriptions/{subscription}/dead-letters`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DeadLettersResponse {
    /// Dead letters by partition and offset.
    pub dead_letters: Vec<DeadLetter>,
    /// Pass as `after` for the next page; absent on the last.
    pub next: Option<String>,
}

/// A message's place in a topic.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct MessageRef {
    /// The partition.
    pub partition: u32,
    /// The offset.
    pub offset: u64,
}

/// Body of `POST /messaging/v1/subscriptions/{subscription}/redrive`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct RedriveRequest {
    /// The dead letters to deliver again (up to 1000); every one when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub messages: Option<Vec<MessageRef>>,
}

/// Answer to a redrive.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RedriveResponse {
    /// How many dead letters are due for delivery again.
    pub redriven: u64,
}

/// What happened to an object, as bucket notifications name it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum ObjectEventKind {
    /// A new object, or a new version of one (a PUT, a copy, a completed multipart upload).
    #[serde(rename = "object.created")]
    Created,
    /// An object was deleted.
    #[serde(rename = "object.deleted")]
    Deleted,
}

/// Body of `POST /messaging/v1/bucket-notifications`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CreateBucketNotification {
    /// The storage bucket whose object events are published (the caller needs
    /// `storage:read` on it).
    pub bucket: String,
    /// The topic they are published to (the caller needs `messaging:publish` on it).
    pub topic: String,
    /// Which events; both when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub events: Option<Vec<ObjectEventKind>>,
    /// Only objects whose key starts with this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
}

/// A bucket's object events, published to a topic.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct BucketNotification {
    /// Names it for a delete.
    pub id: String,
    /// The bucket.
    pub bucket: String,
    /// The topic.
    pub topic: String,
    /// The events published.
    pub events: Vec<ObjectEventKind>,
    /// Only keys with this prefix (empty: every key).
    pub prefix: String,
    /// When it was created.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}

/// The value of a message a bucket notification publishes. Its `message_id` is the event's
/// id, so a relay repeated after a restart is not stored twice; its key is `bucket/key`, so
/// one object's events keep their order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ObjectEvent {
    /// The event's id.
    pub id: String,
    /// What happened.
    #[serde(rename = "type")]
    pub kind: ObjectEventKind,
    /// The bucket.
    pub bucket: String,
    /// The object's key.
    pub key: String,
    /// The object's size (for a delete, the size it had).
    pub size: u64,
    /// The object's ETag, for a created object.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etag: Option<String>,
    /// When it happened.
    #[serde(with = "time::serde::rfc3339")]
    pub time: OffsetDateTime,
}
