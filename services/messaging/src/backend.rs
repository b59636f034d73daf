//! The message log the service runs on, as `messaging_url` chooses: the embedded log
//! ([`FileLogs`]) or Kafka ([`KafkaLogs`]). [`Logs`] and [`Log`] give the rest of the service
//! one interface to both, so publishing, replay and subscriptions (whose delivery state is in
//! the metadata store either way) are the same code on each.

use bytes::Bytes;
use plinth_shared::ids::now_millis;
use tokio::sync::watch;

use crate::kafka::{KafkaLogs, KafkaPartition, Retention};
use crate::log::{LogError, Partition, Record};
use crate::logs::FileLogs;

/// Every topic's partitions, on one backend.
#[derive(Debug)]
pub enum Logs {
    /// The embedded log, under a directory.
    File(FileLogs),
    /// A Kafka cluster.
    Kafka(KafkaLogs),
}

/// One partition's log.
#[derive(Clone, Debug)]
pub enum Log {
    /// On the embedded log.
    File(Partition),
    /// On Kafka.
    Kafka(KafkaPartition),
}

impl Logs {
    /// One partition of a topic.
    ///
    /// # Errors
    ///
    /// Returns [`LogError::NoSuchLog`] for a topic without logs (on Kafka, from the first
    /// call that reaches the broker instead), and the log's error when it cannot be opened.
    pub async fn partition(&self, topic_id: &str, partition: u32) -> Result<Log, LogError> {
        match self {
            Logs::File(logs) => Ok(Log::File(logs.partition(topic_id, partition).await?)),
            Logs::Kafka(logs) => Ok(Log::Kafka(logs.partition(topic_id, partition))),
        }
    }

    /// Makes a new topic's partitions.
    ///
    /// # Errors
    ///
    /// Returns the backend's error.
    pub async fn create_topic(
        &self,
        topic_id: &str,
        partitions: u32,
        retention: Retention,
    ) -> Result<(), LogError> {
        match self {
            Logs::File(logs) => logs.create_topic(topic_id, partitions).await,
            Logs::Kafka(logs) => logs.create_topic(topic_id, partitions, retention).await,
        }
    }

    /// Changes a topic's retention. The embedded log reads it from the topic's row at each
    /// sweep, so only Kafka is told.
    ///
    /// # Errors
    ///
    /// Returns the backend's error.
    pub async fn update_retention(
        &self,
        topic_id: &str,
        retention: Retention,
    ) -> Result<(), LogError> {
        match self {
            Logs::File(_) => Ok(()),
            Logs::Kafka(logs) => logs.update_retention(topic_id, retention).await,
        }
    }

    /// Deletes a topic's partitions and their messages.
    ///
    /// # Errors
    ///
    /// Returns the backend's error.
    pub async fn delete_topic(&self, topic_id: &str) -> Result<(), LogError> {
        match self {
            Logs::File(logs) => Ok(logs.delete_topic(topic_id).await?),
            Logs::Kafka(logs) => logs.delete_topic(topic_id).await,
        }
    }

    /// The embedded log, whose retention the service applies itself.
    pub(crate) fn file(&self) -> Option<&FileLogs> {
        match self {
            Logs::File(logs) => Some(logs),
            Logs::Kafka(_) => None,
        }
    }

    /// The Kafka cluster, whose consumer groups share out subscriptions' partitions.
    pub fn kafka(&self) -> Option<&KafkaLogs> {
        match self {
            Logs::File(_) => None,
            Logs::Kafka(logs) => Some(logs),
        }
    }
}

impl Log {
    /// Appends records in order; returns each one's offset once it is durable.
    ///
    /// # Errors
    ///
    /// Returns [`LogError::PayloadTooLarge`] and the backend's errors.
    pub async fn append(&self, payloads: Vec<Bytes>) -> Result<Vec<u64>, LogError> {
        match self {
            Log::File(log) => {
                let count = payloads.len() as u64;
                let appended = log.append(payloads).await?;
                Ok((appended.first_offset..appended.first_offset + count).collect())
            }
            Log::Kafka(log) => log.append(payloads, now_millis()).await,
        }
    }

    /// The first offset kept and the offset the next record will get.
    ///
    /// # Errors
    ///
    /// Returns the backend's errors (never, on the embedded log).
    pub async fn bounds(&self) -> Result<(u64, u64), LogError> {
        match self {
            Log::File(log) => Ok((log.start(), log.high_water())),
            Log::Kafka(log) => log.bounds().await,
        }
    }

    /// The first offset kept (on Kafka, without checking the end).
    ///
    /// # Errors
    ///
    /// Returns the backend's errors (never, on the embedded log).
    pub async fn start(&self) -> Result<u64, LogError> {
        match self {
            Log::File(log) => Ok(log.start()),
            Log::Kafka(log) => log.start().await,
        }
    }

    /// Watches the offset the next record will get, for readers that wait for new ones.
    pub fn watch(&self) -> watch::Receiver<u64> {
        match self {
            Log::File(log) => log.watch(),
            Log::Kafka(log) => log.watch(),
        }
    }

    /// Reads records from `from` on: at most `max_records`, and no more than `max_bytes`
    /// once the first is in; fewer, or none, at the end.
    ///
    /// # Errors
    ///
    /// Returns [`LogError::OffsetOutOfRange`] outside the partition, and the backend's errors.
    pub async fn read(
        &self,
        from: u64,
        max_records: usize,
        max_bytes: usize,
    ) -> Result<Vec<Record>, LogError> {
        match self {
            Log::File(log) => log.read(from, max_records, max_bytes).await,
            Log::Kafka(log) => log.read(from, max_records, max_bytes).await,
        }
    }

    /// The offset of the first record stored at or after `timestamp` (milliseconds since the
    /// epoch); the end when there is none.
    ///
    /// # Errors
    ///
    /// Returns the backend's errors.
    pub async fn offset_for_time(&self, timestamp: i64) -> Result<u64, LogError> {
        match self {
            Log::File(log) => log.offset_for_time(timestamp).await,
            Log::Kafka(log) => log.offset_for_time(timestamp).await,
        }
    }
}
