//! Messaging: topics, publishing and subscriptions under `/messaging/v1`.
//!
//! - [`log`]: the embedded durable log, one per partition (segment files, group commit,
//!   recovery of a torn tail, retention).
//!
//! Still to come, all part of issue #4: topics and their metadata, publish, subscriptions
//! (pull, push, stream), dead letters, replay, bucket notifications, the Kafka backend, and
//! the HTTP routes that mount it in `plinth serve`.

pub mod log;
