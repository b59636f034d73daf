//! The embedded durable log: one append-only log per partition, in segment files.
//!
//! - [`record`]: how one record is framed on disk (length, CRC, offset, batch, timestamp).
//! - [`segment`]: one segment file, its recovery and its sparse index.
//! - `read`: reads from an offset across segments, and time lookups.
//! - [`Partition`] (here): appends with group commit, retention, and the public API.
//!
//! An append is acknowledged only after the bytes are synced, and readers see a record only
//! from then on, so nothing that could still be lost is ever delivered. Appends that arrive
//! while a sync is running are written and synced together by the next one (group commit):
//! the partition's writer task takes everything queued, writes it with one positional write
//! and syncs once.

mod read;
pub mod record;
mod segment;

use std::collections::VecDeque;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use plinth_shared::ids::now_millis;
use tokio::sync::{mpsc, oneshot, watch};

pub use self::record::{MAX_PAYLOAD, Record};
use self::segment::Segment;

/// A writer batch stops taking queued appends past this many bytes.
const MAX_BATCH_BYTES: usize = 4 << 20;

/// Appends waiting for the writer; a full queue makes publishers wait.
const QUEUE_DEPTH: usize = 4096;

/// What can go wrong in a partition's log.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// A read asked for an offset the log does not hold.
    #[error("offset {offset} is outside the log, which holds {start}..{end}")]
    OffsetOutOfRange {
        /// The offset asked for.
        offset: u64,
        /// The first offset still held.
        start: u64,
        /// The offset the next record will get.
        end: u64,
    },
    /// A segment holds bytes that are not valid records, before its last synced point.
    #[error("{} is corrupt at byte {position}: {reason}", path.display())]
    Corrupt {
        /// The segment file.
        path: PathBuf,
        /// Where its valid records stop.
        position: u64,
        /// What was found there.
        reason: &'static str,
    },
    /// A payload over [`MAX_PAYLOAD`].
    #[error("a payload of {size} bytes is over the log's limit of {MAX_PAYLOAD}")]
    PayloadTooLarge {
        /// Its size.
        size: usize,
    },
    /// An earlier write or sync failed. After a failed sync the kernel may have dropped the
    /// unsynced pages, so the partition takes no more appends until a restart recovers it.
    #[error("an earlier write to this partition failed; it takes no appends until restarted")]
    Failed,
    /// The partition's writer has stopped.
    #[error("the partition is closed")]
    Closed,
    /// No log exists for this topic (it was deleted, or never made).
    #[error("no log for topic {0}")]
    NoSuchLog(String),
    /// The Kafka backend's failure (a broker unreachable, a refused request).
    #[error("kafka: {0}")]
    Backend(String),
    /// The file system's error.
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// How a partition's segments are cut.
#[derive(Clone, Copy, Debug)]
pub struct LogConfig {
    /// A segment takes no more batches once it holds this many bytes.
    pub segment_bytes: u64,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            segment_bytes: 64 << 20,
        }
    }
}

/// Where an acknowledged append landed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Appended {
    /// Offset of its first record; the others follow without gaps.
    pub first_offset: u64,
    /// The timestamp all its records got.
    pub timestamp: i64,
}

/// One partition's log. Clones share it.
#[derive(Clone, Debug)]
pub struct Partition {
    inner: Arc<Inner>,
    queue: mpsc::Sender<Append>,
}

#[derive(Debug)]
struct Inner {
    dir: PathBuf,
    config: LogConfig,
    segments: Mutex<VecDeque<Segment>>,
    /// The offset the next record will get: every record below it is synced and readable.
    high_water: watch::Sender<u64>,
    /// Timestamp of the last record appended.
    last_timestamp: AtomicI64,
    failed: AtomicBool,
    /// Syncs performed by the writer, for tests of group commit.
    syncs: AtomicU64,
}

#[derive(Debug)]
struct Append {
    payloads: Vec<Bytes>,
    reply: oneshot::Sender<Result<Appended, LogError>>,
}

impl Partition {
    /// Opens the partition stored in `dir` (creating it if need be), recovering its tail, and
    /// starts its writer.
    ///
    /// # Errors
    ///
    /// Returns [`LogError::Corrupt`] when a segment is damaged before its last synced
    /// point, and the file system's errors.
    pub async fn open(dir: &Path, config: LogConfig) -> Result<Self, LogError> {
        let opening = dir.to_owned();
        let segments = blocking(move || open_segments(&opening)).await?;
        let next = segments.back().map_or(0, |s| s.next);
        let last_timestamp = segments.iter().map(|s| s.max_timestamp).max();
        let inner = Arc::new(Inner {
            dir: dir.to_owned(),
            config,
            segments: Mutex::new(segments),
            high_water: watch::Sender::new(next),
            last_timestamp: AtomicI64::new(last_timestamp.unwrap_or(i64::MIN)),
            failed: AtomicBool::new(false),
            syncs: AtomicU64::new(0),
        });
        let (queue, appends) = mpsc::channel(QUEUE_DEPTH);
        tokio::spawn(write_appends(inner.clone(), appends));
        Ok(Self { inner, queue })
    }

    /// Appends `payloads` as consecutive records and returns once they are synced.
    ///
    /// # Errors
    ///
    /// Returns [`LogError::PayloadTooLarge`], [`LogError::Failed`] after an earlier failed
    /// write, and the file system's errors.
    pub async fn append(&self, payloads: Vec<Bytes>) -> Result<Appended, LogError> {
        if let Some(large) = payloads.iter().find(|p| p.len() > MAX_PAYLOAD) {
            return Err(LogError::PayloadTooLarge { size: large.len() });
        }
        let (reply, answer) = oneshot::channel();
        self.queue
            .send(Append { payloads, reply })
            .await
            .map_err(|_| LogError::Closed)?;
        answer.await.map_err(|_| LogError::Closed)?
    }

    /// The offset the next record will get; every record below it can be read.
    pub fn high_water(&self) -> u64 {
        *self.inner.high_water.borrow()
    }

    /// The first offset retention has kept.
    pub fn start(&self) -> u64 {
        self.inner.segments().front().map_or(0, |s| s.base)
    }

    /// Watches the high-water offset, for readers that wait for new records.
    pub fn watch(&self) -> watch::Receiver<u64> {
        self.inner.high_water.subscribe()
    }

    /// Bytes of records the partition holds.
    pub fn size_bytes(&self) -> u64 {
        self.inner.segments().iter().map(|s| s.size).sum()
    }

    /// Syncs the writer has performed since the partition was opened.
    pub fn syncs(&self) -> u64 {
        self.inner.syncs.load(Ordering::Relaxed)
    }

    /// Reads records from offset `from` on: at most `max_records`, and no more than
    /// `max_bytes` of payload once the first record is in (that one always is). Returns
    /// fewer, or none, when the log ends first.
    ///
    /// # Errors
    ///
    /// Returns [`LogError::OffsetOutOfRange`] for an offset below [`Partition::start`] or
    /// above [`Partition::high_water`], [`LogError::Corrupt`] for a record that fails its
    /// checksum, and the file system's errors.
    pub async fn read(
        &self,
        from: u64,
        max_records: usize,
        max_bytes: usize,
    ) -> Result<Vec<Record>, LogError> {
        let inner = self.inner.clone();
        blocking(move || inner.read(from, max_records, max_bytes)).await
    }

    /// The offset of the first record appended at or after `timestamp` (milliseconds since
    /// the epoch); the high-water offset when there is none.
    ///
    /// # Errors
    ///
    /// Returns [`LogError::Corrupt`] and the file system's errors.
    pub async fn offset_for_time(&self, timestamp: i64) -> Result<u64, LogError> {
        let inner = self.inner.clone();
        blocking(move || inner.offset_for_time(timestamp)).await
    }

    /// Deletes whole sealed segments from the front while the partition is over `max_bytes`,
    /// or while their newest record is older than `max_age_ms` before `now`. The segment that
    /// takes appends is never deleted. Returns the number of segments deleted.
    ///
    /// # Errors
    ///
    /// Returns the file system's errors.
    pub async fn apply_retention(
        &self,
        now: i64,
        max_age_ms: Option<u64>,
        max_bytes: Option<u64>,
    ) -> Result<usize, LogError> {
        let inner = self.inner.clone();
        blocking(move || inner.apply_retention(now, max_age_ms, max_bytes)).await
    }
}

impl Inner {
    fn segments(&self) -> MutexGuard<'_, VecDeque<Segment>> {
        self.segments
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Writes and syncs one batch of appends; returns where each landed.
    fn write_batch(&self, batch: &[Vec<Bytes>]) -> Result<Vec<Appended>, LogError> {
        if self.failed.load(Ordering::Acquire) {
            return Err(LogError::Failed);
        }
        let result = self.write_batch_once(batch);
        if matches!(result, Err(LogError::Io(_))) {
            self.failed.store(true, Ordering::Release);
        }
        result
    }

    fn write_batch_once(&self, batch: &[Vec<Bytes>]) -> Result<Vec<Appended>, LogError> {
        let (file, position, mut next) = self.batch_start()?;
        let batch_first = next;

        // Timestamps never go backwards within a partition, so a time seek can trust them.
        let timestamp = now_millis().max(self.last_timestamp.load(Ordering::Acquire));
        let mut buf = Vec::new();
        let mut records = Vec::new();
        let mut appended = Vec::with_capacity(batch.len());
        for payloads in batch {
            appended.push(Appended {
                first_offset: next,
                timestamp,
            });
            for payload in payloads {
                record::encode(&mut buf, next, batch_first, timestamp, payload);
                records.push((next, Record::encoded_len(payload.len())));
                next += 1;
            }
        }
        file.write_all_at(&buf, position)?;
        file.sync_data()?;
        self.syncs.fetch_add(1, Ordering::Relaxed);

        self.segments()
            .back_mut()
            .ok_or(LogError::Closed)?
            .note_batch(&records, timestamp);
        self.last_timestamp.store(timestamp, Ordering::Release);
        self.high_water.send_replace(next);
        Ok(appended)
    }

    /// The file, end and next offset of the segment this batch goes to, rolling to a new one
    /// when the current one is full. Only the writer changes the last segment, so what is
    /// read here stays true until it notes the batch.
    fn batch_start(&self) -> Result<(Arc<std::fs::File>, u64, u64), LogError> {
        let (full, next) = {
            let segments = self.segments();
            let active = segments.back().ok_or(LogError::Closed)?;
            (active.size >= self.config.segment_bytes, active.next)
        };
        if full {
            self.roll(next)?;
        }
        let segments = self.segments();
        let active = segments.back().ok_or(LogError::Closed)?;
        Ok((active.file.clone(), active.size, active.next))
    }

    /// Starts a new segment at `base`, durable in the directory, as the one taking appends.
    fn roll(&self, base: u64) -> Result<(), LogError> {
        let segment = Segment::create(&self.dir, base)?;
        std::fs::File::open(&self.dir)?.sync_all()?;
        tracing::debug!(segment = %segment.path.display(), "new log segment");
        self.segments().push_back(segment);
        Ok(())
    }

    fn apply_retention(
        &self,
        now: i64,
        max_age_ms: Option<u64>,
        max_bytes: Option<u64>,
    ) -> Result<usize, LogError> {
        let cutoff =
            max_age_ms.map(|age| now.saturating_sub(i64::try_from(age).unwrap_or(i64::MAX)));
        let doomed: Vec<PathBuf> = {
            let mut segments = self.segments();
            let mut total: u64 = segments.iter().map(|s| s.size).sum();
            let mut doomed = Vec::new();
            while segments.len() > 1 {
                let oldest = &segments[0];
                let too_big = max_bytes.is_some_and(|max| total > max);
                let too_old = cutoff.is_some_and(|cutoff| oldest.max_timestamp < cutoff);
                if !(too_big || too_old) {
                    break;
                }
                total -= oldest.size;
                if let Some(segment) = segments.pop_front() {
                    doomed.push(segment.path);
                }
            }
            doomed
        };
        // Readers holding a removed segment's file keep reading it; the name goes now.
        for path in &doomed {
            std::fs::remove_file(path)?;
        }
        Ok(doomed.len())
    }
}

/// Opens the segments in `dir`, oldest first; creates the first one in an empty directory.
fn open_segments(dir: &Path) -> Result<VecDeque<Segment>, LogError> {
    std::fs::create_dir_all(dir)?;
    let mut bases = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if let Some(base) = entry.file_name().to_str().and_then(Segment::parse_name) {
            bases.push(base);
        }
    }
    bases.sort_unstable();
    let mut segments: VecDeque<Segment> = VecDeque::with_capacity(bases.len().max(1));
    for (i, &base) in bases.iter().enumerate() {
        let path = dir.join(Segment::file_name(base));
        let segment = Segment::open(&path, base, i + 1 == bases.len())?;
        if let Some(previous) = segments.back()
            && previous.next != base
        {
            return Err(LogError::Corrupt {
                path,
                position: 0,
                reason: "the previous segment does not end where this one begins",
            });
        }
        segments.push_back(segment);
    }
    if segments.is_empty() {
        segments.push_back(Segment::create(dir, 0)?);
        std::fs::File::open(dir)?.sync_all()?;
        if let Some(parent) = dir.parent() {
            std::fs::File::open(parent)?.sync_all()?;
        }
    }
    Ok(segments)
}

/// The partition's writer: takes every queued append, writes and syncs them as one batch,
/// then answers each. Ends when every handle to the partition is dropped.
async fn write_appends(inner: Arc<Inner>, mut queue: mpsc::Receiver<Append>) {
    while let Some(first) = queue.recv().await {
        let mut batch_bytes: usize = first.payloads.iter().map(Bytes::len).sum();
        let mut batch = vec![first];
        while batch_bytes < MAX_BATCH_BYTES {
            let Ok(next) = queue.try_recv() else {
                break;
            };
            batch_bytes += next.payloads.iter().map(Bytes::len).sum::<usize>();
            batch.push(next);
        }
        let (payloads, replies): (Vec<_>, Vec<_>) =
            batch.into_iter().map(|a| (a.payloads, a.reply)).unzip();
        let writer = inner.clone();
        let written = blocking(move || writer.write_batch(&payloads)).await;
        match written {
            Ok(appended) => {
                for (reply, appended) in replies.into_iter().zip(appended) {
                    let _ = reply.send(Ok(appended));
                }
            }
            Err(err) => {
                tracing::error!(partition = %inner.dir.display(), error = %err, "log append failed");
                for reply in replies {
                    let _ = reply.send(Err(copy_of(&err)));
                }
            }
        }
    }
}

/// The same failure for each append of a failed batch.
fn copy_of(err: &LogError) -> LogError {
    match err {
        LogError::Io(io) => LogError::Io(io::Error::new(io.kind(), io.to_string())),
        LogError::Closed => LogError::Closed,
        _ => LogError::Failed,
    }
}

async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, LogError> + Send + 'static,
) -> Result<T, LogError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|err| LogError::Io(io::Error::other(err)))?
}

#[cfg(test)]
mod tests;
