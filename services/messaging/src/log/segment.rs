//! One segment file of a partition: records from a base offset, appended and never changed.
//!
//! A segment is named by its base offset (`00000000000000000042.log`). Only the last segment
//! of a partition takes appends; the others are sealed and only read or, by retention,
//! deleted whole.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;

use super::LogError;
use super::record::{self, Decoded, HEADER};

/// A sparse index entry is kept every this many bytes of records, so a read seeks to within
/// this distance of the record it wants.
const INDEX_INTERVAL: u64 = 64 << 10;

/// Recovery reads a segment in chunks of this size.
const SCAN_CHUNK: usize = 1 << 20;

/// A segment file and what is known about its records.
#[derive(Debug)]
pub(crate) struct Segment {
    /// Offset of its first record.
    pub(crate) base: u64,
    pub(crate) path: PathBuf,
    pub(crate) file: Arc<File>,
    /// Bytes of whole, synced records.
    pub(crate) size: u64,
    /// The offset the next record appended here gets.
    pub(crate) next: u64,
    /// Timestamp of its last record; `i64::MIN` while it has none.
    pub(crate) max_timestamp: i64,
    /// `(offset, position)` of a record every [`INDEX_INTERVAL`] bytes, first one included.
    index: Vec<(u64, u64)>,
    /// `(offset, position)` of the first record of the last batch a scan found.
    last_batch: Option<(u64, u64)>,
}

/// What lies behind damaged bytes in the tail segment.
enum AfterDamage {
    Nothing,
    /// Records of the damaged record's own batch, which began at this offset.
    SameBatch(u64),
    LaterBatch,
}

/// Where a segment's records stop being valid, found while opening it.
enum Scanned {
    /// Every byte belongs to a whole, valid record.
    Clean,
    /// Bytes from `position` on are not a valid record.
    BadFrom { position: u64, reason: &'static str },
}

impl Segment {
    /// The file name of the segment whose first offset is `base`.
    pub(crate) fn file_name(base: u64) -> String {
        format!("{base:020}.log")
    }

    /// The base offset a segment file name stands for, if it is one.
    pub(crate) fn parse_name(name: &str) -> Option<u64> {
        let digits = name.strip_suffix(".log")?;
        if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        digits.parse().ok()
    }

    /// Creates an empty segment; the caller syncs the directory.
    pub(crate) fn create(dir: &Path, base: u64) -> io::Result<Self> {
        let path = dir.join(Self::file_name(base));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)?;
        Ok(Self {
            base,
            path,
            file: Arc::new(file),
            size: 0,
            next: base,
            max_timestamp: i64::MIN,
            index: Vec::new(),
            last_batch: None,
        })
    }

    /// Opens a segment and checks every record in it.
    ///
    /// A sealed segment must be whole. The tail segment may end in a torn write (the batch
    /// being written when the process died, never acknowledged): that batch is cut off. If a
    /// valid record of a later batch follows the damage, the damage is before the last
    /// synced point and the segment is refused.
    pub(crate) fn open(path: &Path, base: u64, tail: bool) -> Result<Self, LogError> {
        let file = OpenOptions::new().read(true).write(true).open(path)?;
        let mut segment = Self {
            base,
            path: path.to_owned(),
            file: Arc::new(file),
            size: 0,
            next: base,
            max_timestamp: i64::MIN,
            index: Vec::new(),
            last_batch: None,
        };
        let Scanned::BadFrom { position, reason } = segment.scan()? else {
            return Ok(segment);
        };
        if !tail {
            return Err(segment.corrupt(position, reason));
        }
        // The last batch was cut short: it was never acknowledged, so all of it goes, from
        // the record it began with (one of the valid ones before the damage, or the damaged
        // one itself).
        let cut = match segment.after_damage(position)? {
            AfterDamage::LaterBatch => return Err(segment.corrupt(position, reason)),
            AfterDamage::SameBatch(batch) if batch < segment.next => match segment.last_batch {
                Some((first, at)) if first == batch => at,
                _ => return Err(segment.corrupt(position, "a batch without its start")),
            },
            AfterDamage::SameBatch(_) | AfterDamage::Nothing => position,
        };
        tracing::warn!(
            segment = %path.display(),
            position = cut,
            "cutting a torn write from the end of the log"
        );
        segment.file.set_len(cut)?;
        segment.file.sync_all()?;
        segment.reset();
        match segment.scan()? {
            Scanned::Clean => Ok(segment),
            Scanned::BadFrom { position, reason } => Err(segment.corrupt(position, reason)),
        }
    }

    /// Forgets what a scan found, for a scan from the start.
    fn reset(&mut self) {
        self.size = 0;
        self.next = self.base;
        self.max_timestamp = i64::MIN;
        self.index.clear();
        self.last_batch = None;
    }

    /// Reads the file from the start, recording each valid record, up to the first byte
    /// that is not one.
    fn scan(&mut self) -> Result<Scanned, LogError> {
        let len = self.file.metadata()?.len();
        let file = self.file.clone();
        let mut reader = &*file;
        reader.seek(io::SeekFrom::Start(0))?;
        let mut pending: Vec<u8> = Vec::new();
        let mut consumed = 0u64; // file position of pending[0]
        loop {
            let mut chunk = Vec::with_capacity(SCAN_CHUNK);
            (&mut reader)
                .take(SCAN_CHUNK as u64)
                .read_to_end(&mut chunk)?;
            let at_end = chunk.is_empty();
            pending.extend_from_slice(&chunk);
            let bytes = Bytes::from(std::mem::take(&mut pending));
            let mut at = 0;
            loop {
                match record::decode(&bytes, at) {
                    Decoded::Record { record, len } => {
                        if record.offset != self.next {
                            return Ok(Scanned::BadFrom {
                                position: consumed + at as u64,
                                reason: "offsets out of sequence",
                            });
                        }
                        self.note_appended(consumed + at as u64, &record, len);
                        at += len;
                    }
                    Decoded::Incomplete { .. } if !at_end => break,
                    Decoded::Incomplete { .. } if at == bytes.len() => return Ok(Scanned::Clean),
                    Decoded::Incomplete { .. } => {
                        return Ok(Scanned::BadFrom {
                            position: consumed + at as u64,
                            reason: "incomplete record",
                        });
                    }
                    Decoded::Invalid => {
                        return Ok(Scanned::BadFrom {
                            position: consumed + at as u64,
                            reason: "invalid record",
                        });
                    }
                }
            }
            consumed += at as u64;
            pending = bytes[at..].to_vec();
            debug_assert!(consumed + pending.len() as u64 <= len);
        }
    }

    /// What follows damage at `position`: valid records of a later batch (the damage was
    /// synced data), of the damaged record's own batch (a write cut short), or nothing.
    /// Reads the rest of the file once.
    fn after_damage(&self, position: u64) -> Result<AfterDamage, LogError> {
        let len = self.file.metadata()?.len();
        let rest = usize::try_from(len.saturating_sub(position + 1)).unwrap_or(usize::MAX);
        let mut buf = vec![0u8; rest];
        self.file.read_exact_at(&mut buf, position + 1)?;
        let buf = Bytes::from(buf);
        let max_records = (rest / HEADER) as u64;
        let mut found = AfterDamage::Nothing;
        for at in 0..buf.len().saturating_sub(HEADER - 1) {
            // Check the offset field first: it rules out nearly every position cheaply.
            let offset = u64::from_le_bytes(buf[at + 8..at + 16].try_into().unwrap_or_default());
            if offset < self.next || offset > self.next + max_records {
                continue;
            }
            if let Decoded::Record { record, .. } = record::decode(&buf, at) {
                // The damaged record's offset is `self.next`; a batch begun after it was
                // written after that record was synced.
                if record.batch > self.next {
                    return Ok(AfterDamage::LaterBatch);
                }
                found = AfterDamage::SameBatch(record.batch);
            }
        }
        Ok(found)
    }

    fn corrupt(&self, position: u64, reason: &'static str) -> LogError {
        LogError::Corrupt {
            path: self.path.clone(),
            position,
            reason,
        }
    }

    /// Records that `record`, taking `len` bytes, was found at the end of the segment.
    fn note_appended(&mut self, position: u64, record: &record::Record, len: usize) {
        debug_assert_eq!(position, self.size);
        if record.batch == record.offset {
            self.last_batch = Some((record.offset, position));
        }
        self.push_record(record.offset, len);
        self.max_timestamp = self.max_timestamp.max(record.timestamp);
    }

    /// Notes a batch the partition's writer has written and synced: `records` are the
    /// `(offset, encoded length)` of each, in order, from the current end on.
    pub(crate) fn note_batch(&mut self, records: &[(u64, usize)], timestamp: i64) {
        for &(offset, len) in records {
            self.push_record(offset, len);
        }
        self.max_timestamp = self.max_timestamp.max(timestamp);
    }

    fn push_record(&mut self, offset: u64, len: usize) {
        let position = self.size;
        if self
            .index
            .last()
            .is_none_or(|&(_, indexed)| position - indexed >= INDEX_INTERVAL)
        {
            self.index.push((offset, position));
        }
        self.size += len as u64;
        self.next = offset + 1;
    }

    /// The file position of a record at or before `offset`, from which a read finds it.
    pub(crate) fn position_before(&self, offset: u64) -> u64 {
        let at = self
            .index
            .partition_point(|&(indexed, _)| indexed <= offset);
        at.checked_sub(1).map_or(0, |i| self.index[i].1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_strangers_are_ignored() {
        assert_eq!(Segment::file_name(42), "00000000000000000042.log");
        assert_eq!(Segment::parse_name(&Segment::file_name(42)), Some(42));
        assert_eq!(Segment::parse_name("42.log"), None);
        assert_eq!(Segment::parse_name("0000000000000000004x.log"), None);
        assert_eq!(Segment::parse_name("00000000000000000042.tmp"), None);
    }
}
