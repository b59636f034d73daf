//! The Kafka backend (`messaging_url = "kafka://HOST:PORT,..."`): each Plinth topic is a
//! Kafka topic named `plinth.{topic id}`, with the same partitions; a message is one Kafka
//! record whose value is the stored message (the same encoding as the embedded log) and
//! whose timestamp is its publication time.
//!
//! Appends go through one idempotent producer with `acks=all`, so a publish is answered once
//! every in-sync replica has its records, and retries never duplicate or reorder them.
//! Reads assign a pooled consumer to the partition at an offset. Subscriptions keep their
//! leases and positions in the metadata store, as on the embedded log, and share a topic's
//! partitions out among replicas through consumer groups ([`group`]), to which the positions
//! are committed. Retention is the topic's `retention.ms` and `retention.bytes`, applied by
//! Kafka.
//!
//! With `messaging_kafka_verify_offsets` the broker's offset answers are checked rather than
//! trusted, for brokers that get them wrong (Tansu's memory engine, which CI runs): the end
//! ListOffsets reports (there: the base offset of the last batch plus one, which hides the
//! rest of that batch) is checked by reading on from the record before it, and the offset
//! found for a time by reading the records around it (with a binary search by timestamp
//! when it is wrong). On a correct broker the checks change nothing and cost reads.

mod group;
mod topics;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use rdkafka::admin::AdminClient;
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use tokio::sync::watch;

use self::group::Groups;
pub use self::group::{Assignment, Member};
use crate::log::{LogError, MAX_PAYLOAD, Record};

/// How long a metadata request, a watermark query or a read may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// How often a watched partition's end is looked at.
const WATCH_EVERY: Duration = Duration::from_millis(100);
/// Most idle consumers the reader pool keeps.
const POOLED_READERS: usize = 16;
/// Most records the check of a reported end reads (a batch's worth).
const TAIL_RECORDS: usize = 10_000;

/// Retention settings of a topic, as Kafka topic configs.
#[derive(Clone, Copy, Debug, Default)]
pub struct Retention {
    /// `retention.ms`; unlimited when absent.
    pub max_age_ms: Option<u64>,
    /// `retention.bytes` (per partition); unlimited when absent.
    pub max_bytes: Option<u64>,
}

impl Retention {
    fn configs(self) -> [(&'static str, String); 2] {
        let limit = |value: Option<u64>| value.map_or_else(|| "-1".to_owned(), |v| v.to_string());
        [
            ("retention.ms", limit(self.max_age_ms)),
            ("retention.bytes", limit(self.max_bytes)),
        ]
    }
}

fn kafka_error(err: KafkaError) -> LogError {
    match err.rdkafka_error_code() {
        Some(
            RDKafkaErrorCode::UnknownTopicOrPartition
            | RDKafkaErrorCode::UnknownTopic
            | RDKafkaErrorCode::UnknownPartition,
        ) => LogError::NoSuchLog(err.to_string()),
        _ => LogError::Backend(err.to_string()),
    }
}

fn topic_name(topic_id: &str) -> String {
    format!("plinth.{topic_id}")
}

/// What every partition handle shares: the clients, the reader pool and the watches.
struct Client {
    producer: FutureProducer,
    admin: AdminClient<DefaultClientContext>,
    reader_config: ClientConfig,
    readers: Mutex<Vec<BaseConsumer>>,
    replication: i32,
    /// Whether the broker's offset answers are checked (see the module's note).
    verify: bool,
    watches: Mutex<HashMap<(String, i32), Watched>>,
    groups: Groups,
}

/// A partition's end, watched by a poller while anyone listens.
#[derive(Clone)]
struct Watched {
    high: watch::Sender<u64>,
    polling: Arc<AtomicBool>,
}

/// The Kafka cluster behind the service.
#[derive(Clone)]
pub struct KafkaLogs {
    client: Arc<Client>,
}

impl std::fmt::Debug for KafkaLogs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaLogs").finish_non_exhaustive()
    }
}

/// One partition of a topic on Kafka.
#[derive(Clone)]
pub struct KafkaPartition {
    client: Arc<Client>,
    topic: String,
    partition: i32,
}

impl std::fmt::Debug for KafkaPartition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaPartition")
            .field("topic", &self.topic)
            .field("partition", &self.partition)
            .finish()
    }
}

async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, LogError> + Send + 'static,
) -> Result<T, LogError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|err| LogError::Backend(format!("a Kafka call panicked: {err}")))?
}

impl KafkaLogs {
    /// Connects to the brokers (`host:port,host:port`) with topics of `replication` replicas
    /// (-1: the broker's default) and consumer groups with a session timeout of
    /// `session_ms`.
    ///
    /// # Errors
    ///
    /// Returns the client's error when the configuration is refused; brokers that cannot be
    /// reached show up as errors of the first requests.
    pub fn connect(
        brokers: &str,
        replication: i32,
        verify: bool,
        session_ms: u64,
    ) -> Result<KafkaLogs, LogError> {
        let mut base = ClientConfig::new();
        base.set("bootstrap.servers", brokers)
            .set("client.id", "plinth-messaging");
        let groups = Groups::new(&base, session_ms);
        let producer: FutureProducer = base
            .clone()
            .set("acks", "all")
            .set("enable.idempotence", "true")
            .set("linger.ms", "1")
            .set("message.max.bytes", (MAX_PAYLOAD + 4096).to_string())
            // A publish racing its topic's deletion must fail, not make the topic again.
            .set("allow.auto.create.topics", "false")
            // A publish answers within the request timeout, not librdkafka's five minutes.
            .set("message.timeout.ms", "30000")
            .create()
            .map_err(kafka_error)?;
        let admin: AdminClient<DefaultClientContext> = base.create().map_err(kafka_error)?;
        let mut reader_config = base;
        reader_config
            .set("group.id", "plinth-reader")
            .set("enable.auto.commit", "false")
            .set("enable.partition.eof", "true")
            .set("auto.offset.reset", "error")
            .set("fetch.wait.max.ms", "10")
            // Small prefetches (librdkafka grows a fetch for a larger record by itself): a
            // read of one record must not pull megabytes into the pooled consumer.
            .set("fetch.message.max.bytes", "1048576")
            .set("queued.max.messages.kbytes", "4096");
        Ok(KafkaLogs {
            client: Arc::new(Client {
                producer,
                admin,
                reader_config,
                readers: Mutex::new(Vec::new()),
                replication,
                verify,
                watches: Mutex::new(HashMap::new()),
                groups,
            }),
        })
    }

    /// A partition of a topic. Kafka is not asked whether it exists: a missing topic shows
    /// as [`LogError::NoSuchLog`] from the first call that reaches it.
    pub fn partition(&self, topic_id: &str, partition: u32) -> KafkaPartition {
        KafkaPartition {
            client: self.client.clone(),
            topic: topic_name(topic_id),
            partition: partition as i32,
        }
    }
}

impl Client {
    fn reader(&self) -> Result<BaseConsumer, LogError> {
        let pooled = self
            .readers
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .pop();
        match pooled {
            Some(reader) => Ok(reader),
            None => self.reader_config.create().map_err(kafka_error),
        }
    }

    fn give_back(&self, reader: BaseConsumer) {
        let _ = reader.unassign();
        let mut readers = self
            .readers
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if readers.len() < POOLED_READERS {
            readers.push(reader);
        }
    }

    fn watches(&self) -> std::sync::MutexGuard<'_, HashMap<(String, i32), Watched>> {
        self.watches
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Records from `from` on, until `max_records`, `max_bytes` (past the first record) or
    /// the partition's end.
    fn read(
        &self,
        topic: &str,
        partition: i32,
        from: u64,
        max_records: usize,
        max_bytes: usize,
    ) -> Result<Vec<Record>, LogError> {
        let reader = self.reader()?;
        let read = read_with(&reader, topic, partition, from, max_records, max_bytes);
        self.give_back(reader);
        read
    }

    /// The first offset kept and the offset the next record will get.
    fn bounds(&self, topic: &str, partition: i32) -> Result<(u64, u64), LogError> {
        let reader = self.reader()?;
        let reported = reader
            .fetch_watermarks(topic, partition, REQUEST_TIMEOUT)
            .map_err(kafka_error);
        let bounds = reported.and_then(|(low, high)| {
            let (low, high) = (low.max(0) as u64, high.max(0) as u64);
            if high <= low || !self.verify {
                return Ok((low, high));
            }
            // See the module's note: read on from the record before the reported end.
            let tail = read_with(
                &reader,
                topic,
                partition,
                high - 1,
                TAIL_RECORDS,
                usize::MAX,
            )?;
            let end = tail.last().map_or(high, |r| r.offset + 1).max(high);
            Ok((low, end))
        });
        self.give_back(reader);
        bounds
    }
}

fn read_with(
    reader: &BaseConsumer,
    topic: &str,
    partition: i32,
    from: u64,
    max_records: usize,
    max_bytes: usize,
) -> Result<Vec<Record>, LogError> {
    let mut assignment = TopicPartitionList::new();
    assignment
        .add_partition_offset(topic, partition, Offset::Offset(from as i64))
        .map_err(kafka_error)?;
    reader.assign(&assignment).map_err(kafka_error)?;
    let until = Instant::now() + REQUEST_TIMEOUT;
    let mut records = Vec::new();
    let mut bytes = 0;
    while records.len() < max_records && (records.is_empty() || bytes < max_bytes) {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        match reader.poll(left.min(Duration::from_millis(200))) {
            None => {}
            Some(Err(KafkaError::PartitionEOF(_))) => break,
            Some(Err(err)) => {
                if err.rdkafka_error_code() == Some(RDKafkaErrorCode::OffsetOutOfRange) {
                    return Err(LogError::OffsetOutOfRange {
                        offset: from,
                        start: 0,
                        end: 0,
                    });
                }
                return Err(kafka_error(err));
            }
            Some(Ok(message)) => {
                let offset = message.offset().max(0) as u64;
                if offset < from {
                    continue;
                }
                let payload = Bytes::copy_from_slice(message.payload().unwrap_or_default());
                bytes += payload.len();
                records.push(Record {
                    offset,
                    batch: offset,
                    timestamp: message.timestamp().to_millis().unwrap_or(0),
                    payload,
                });
            }
        }
    }
    Ok(records)
}

impl KafkaPartition {
    /// Appends records in order and returns their offsets, once every in-sync replica has
    /// them.
    ///
    /// # Errors
    ///
    /// Returns [`LogError::PayloadTooLarge`] and the producer's errors.
    pub async fn append(&self, payloads: Vec<Bytes>, timestamp: i64) -> Result<Vec<u64>, LogError> {
        if let Some(large) = payloads.iter().find(|p| p.len() > MAX_PAYLOAD) {
            return Err(LogError::PayloadTooLarge { size: large.len() });
        }
        // Enqueued one after another, so the idempotent producer keeps their order.
        let mut pending = Vec::with_capacity(payloads.len());
        for payload in &payloads {
            let record = FutureRecord::<(), [u8]>::to(&self.topic)
                .partition(self.partition)
                .payload(payload.as_ref())
                .timestamp(timestamp);
            let delivery = self
                .client
                .producer
                .send_result(record)
                .map_err(|(err, _)| kafka_error(err))?;
            pending.push(delivery);
        }
        let mut offsets = Vec::with_capacity(pending.len());
        for delivery in pending {
            let delivered = delivery
                .await
                .map_err(|_| LogError::Backend("the producer stopped".into()))?;
            let delivered = delivered.map_err(|(err, _)| kafka_error(err))?;
            offsets.push(delivered.offset.max(0) as u64);
        }
        if let Some(last) = offsets.iter().max()
            && let Some(watched) = self
                .client
                .watches()
                .get(&(self.topic.clone(), self.partition))
        {
            watched.high.send_if_modified(|high| {
                let moved = *high <= *last;
                *high = (*high).max(last + 1);
                moved
            });
        }
        Ok(offsets)
    }

    /// The first offset kept, from the broker's low watermark alone.
    ///
    /// # Errors
    ///
    /// Returns the broker's errors.
    pub async fn start(&self) -> Result<u64, LogError> {
        let (client, topic, partition) = (self.client.clone(), self.topic.clone(), self.partition);
        blocking(move || {
            let reader = client.reader()?;
            let reported = reader
                .fetch_watermarks(&topic, partition, REQUEST_TIMEOUT)
                .map_err(kafka_error);
            client.give_back(reader);
            Ok(reported?.0.max(0) as u64)
        })
        .await
    }

    /// The first offset kept and the offset the next record will get.
    ///
    /// # Errors
    ///
    /// Returns the broker's errors.
    pub async fn bounds(&self) -> Result<(u64, u64), LogError> {
        let (client, topic, partition) = (self.client.clone(), self.topic.clone(), self.partition);
        blocking(move || client.bounds(&topic, partition)).await
    }

    /// Reads records from `from` on, as [`crate::log::Partition::read`] does.
    ///
    /// # Errors
    ///
    /// Returns [`LogError::OffsetOutOfRange`] outside the partition, and the broker's errors.
    pub async fn read(
        &self,
        from: u64,
        max_records: usize,
        max_bytes: usize,
    ) -> Result<Vec<Record>, LogError> {
        let (start, end) = self.bounds().await?;
        if from < start || from > end {
            return Err(LogError::OffsetOutOfRange {
                offset: from,
                start,
                end,
            });
        }
        if from == end {
            return Ok(Vec::new());
        }
        let (client, topic, partition) = (self.client.clone(), self.topic.clone(), self.partition);
        let read =
            blocking(move || client.read(&topic, partition, from, max_records, max_bytes)).await;
        match read {
            // Retention moved the start since the bounds were read: say where it is now.
            Err(LogError::OffsetOutOfRange { offset, .. }) => {
                let (start, end) = self.bounds().await?;
                Err(LogError::OffsetOutOfRange { offset, start, end })
            }
            other => other,
        }
    }

    /// The offset of the first record at or after `timestamp`; the end when there is none.
    ///
    /// # Errors
    ///
    /// Returns the broker's errors.
    pub async fn offset_for_time(&self, timestamp: i64) -> Result<u64, LogError> {
        let (client, topic, partition) = (self.client.clone(), self.topic.clone(), self.partition);
        let found = blocking(move || {
            let reader = client.reader()?;
            let mut query = TopicPartitionList::new();
            query
                .add_partition_offset(&topic, partition, Offset::Offset(timestamp))
                .map_err(kafka_error)?;
            let answer = reader
                .offsets_for_times(query, REQUEST_TIMEOUT)
                .map_err(kafka_error);
            client.give_back(reader);
            let offset = answer?
                .find_partition(&topic, partition)
                .map(|elem| elem.offset());
            Ok(match offset {
                Some(Offset::Offset(offset)) if offset >= 0 => Some(offset as u64),
                _ => None,
            })
        })
        .await?;
        let (start, end) = self.bounds().await?;
        let candidate = found.unwrap_or(end).clamp(start, end);
        if !self.client.verify {
            return Ok(candidate);
        }
        // The broker's answer is checked (Tansu answers 0 whatever the time); if it is not
        // the first record at or after the time, a binary search over the records finds it.
        let at_or_after = |offset: u64| async move {
            Ok::<_, LogError>(offset == end || self.timestamp_at(offset).await? >= timestamp)
        };
        let before = |offset: u64| async move {
            Ok::<_, LogError>(offset == start || self.timestamp_at(offset - 1).await? < timestamp)
        };
        if at_or_after(candidate).await? && before(candidate).await? {
            return Ok(candidate);
        }
        let (mut low, mut high) = (start, end);
        while low < high {
            let middle = low + (high - low) / 2;
            if self.timestamp_at(middle).await? >= timestamp {
                high = middle;
            } else {
                low = middle + 1;
            }
        }
        Ok(low)
    }

    /// The timestamp of the record at `offset` (or the next one after it).
    async fn timestamp_at(&self, offset: u64) -> Result<i64, LogError> {
        let (client, topic, partition) = (self.client.clone(), self.topic.clone(), self.partition);
        let records = blocking(move || client.read(&topic, partition, offset, 1, 1)).await?;
        Ok(records.first().map_or(i64::MAX, |r| r.timestamp))
    }

    /// Watches the partition's end: a poller looks every [`WATCH_EVERY`] while someone
    /// listens, and appends of this process move it at once.
    pub fn watch(&self) -> watch::Receiver<u64> {
        let key = (self.topic.clone(), self.partition);
        let watched = self
            .client
            .watches()
            .entry(key)
            .or_insert_with(|| Watched {
                high: watch::Sender::new(0),
                polling: Arc::new(AtomicBool::new(false)),
            })
            .clone();
        let receiver = watched.high.subscribe();
        if !watched.polling.swap(true, Ordering::SeqCst) {
            let partition = self.clone();
            tokio::spawn(async move {
                loop {
                    while watched.high.receiver_count() > 0 {
                        if let Ok((_, end)) = partition.bounds().await {
                            watched.high.send_if_modified(|high| {
                                let moved = end > *high;
                                *high = (*high).max(end);
                                moved
                            });
                        }
                        tokio::time::sleep(WATCH_EVERY).await;
                    }
                    watched.polling.store(false, Ordering::SeqCst);
                    // A listener that came as this poller was ending found it still running.
                    if watched.high.receiver_count() == 0
                        || watched.polling.swap(true, Ordering::SeqCst)
                    {
                        break;
                    }
                }
            });
        }
        receiver
    }
}
