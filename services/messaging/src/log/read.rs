//! Reads: from an offset, up to a record and a byte limit, across segments; and the first
//! offset at or after a time.

use std::io;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;

use super::record::{self, Decoded};
use super::{Inner, LogError, Record};

impl Inner {
    pub(super) fn read(
        &self,
        from: u64,
        max_records: usize,
        max_bytes: usize,
    ) -> Result<Vec<Record>, LogError> {
        let end = self.high_water.borrow().to_owned();
        let start = self.segments().front().map_or(0, |s| s.base);
        if from < start || from > end {
            return Err(LogError::OffsetOutOfRange {
                offset: from,
                start,
                end,
            });
        }
        let mut records = Vec::new();
        let mut bytes = 0;
        let mut next = from;
        while next < end && records.len() < max_records && (records.is_empty() || bytes < max_bytes)
        {
            let Some(span) = self.span_of(next) else {
                break;
            };
            let before = records.len();
            span.read_into(next, end, max_records, max_bytes, &mut records, &mut bytes)?;
            match records.last() {
                Some(last) if records.len() > before => next = last.offset + 1,
                // The segment ended before `next` (retention raced the read): stop here.
                _ => break,
            }
        }
        Ok(records)
    }

    /// What a read needs of the segment holding `offset`, taken under the lock.
    fn span_of(&self, offset: u64) -> Option<Span> {
        let segments = self.segments();
        let at = segments
            .partition_point(|s| s.base <= offset)
            .checked_sub(1)?;
        let segment = &segments[at];
        (offset < segment.next).then(|| Span {
            path: segment.path.clone(),
            file: segment.file.clone(),
            from: segment.position_before(offset),
            to: segment.size,
        })
    }

    pub(super) fn offset_for_time(&self, timestamp: i64) -> Result<u64, LogError> {
        let first = {
            let segments = self.segments();
            match segments.iter().find(|s| s.max_timestamp >= timestamp) {
                Some(segment) => segment.base,
                None => return Ok(*self.high_water.borrow()),
            }
        };
        let mut next = first;
        loop {
            let records = self.read(next, 1024, 1 << 20)?;
            let Some(last) = records.last() else {
                return Ok(*self.high_water.borrow());
            };
            if let Some(found) = records.iter().find(|r| r.timestamp >= timestamp) {
                return Ok(found.offset);
            }
            next = last.offset + 1;
        }
    }
}

/// The part of a segment a read may look at.
struct Span {
    path: PathBuf,
    file: Arc<std::fs::File>,
    /// A record boundary at or before the offset wanted.
    from: u64,
    /// The end of the segment's synced records.
    to: u64,
}

impl Span {
    /// Reads the records of this span from `offset` on into `records`, until `end`, the
    /// record limit or the byte limit.
    fn read_into(
        &self,
        offset: u64,
        end: u64,
        max_records: usize,
        max_bytes: usize,
        records: &mut Vec<Record>,
        bytes: &mut usize,
    ) -> Result<(), LogError> {
        // Takes a record if it is wanted; true once the read is done.
        let mut take = |record: Record| {
            if record.offset < offset {
                return false;
            }
            if record.offset >= end {
                return true;
            }
            *bytes += record.payload.len();
            records.push(record);
            records.len() >= max_records || *bytes >= max_bytes
        };
        // Chunks big enough for the byte limit plus the records skipped before `offset` (at
        // most one index interval).
        let chunk = (max_bytes as u64 + (64 << 10)).clamp(64 << 10, 8 << 20);
        let mut position = self.from;
        while position < self.to {
            let buf = self.read_at(position, chunk.min(self.to - position))?;
            let mut at = 0;
            while at < buf.len() {
                match record::decode(&buf, at) {
                    Decoded::Record { record, len } => {
                        at += len;
                        if take(record) {
                            return Ok(());
                        }
                    }
                    Decoded::Incomplete { needed }
                        if position + (at + needed) as u64 <= self.to =>
                    {
                        if at == 0 {
                            // One record longer than the chunk: read the whole of it.
                            let whole = self.read_at(position, needed as u64)?;
                            let Decoded::Record { record, len } = record::decode(&whole, 0) else {
                                return Err(self.corrupt(position));
                            };
                            at = len;
                            if take(record) {
                                return Ok(());
                            }
                        }
                        break;
                    }
                    Decoded::Incomplete { .. } | Decoded::Invalid => {
                        return Err(self.corrupt(position + at as u64));
                    }
                }
            }
            position += at as u64;
        }
        Ok(())
    }

    fn read_at(&self, position: u64, len: u64) -> Result<Bytes, LogError> {
        let mut buf = vec![0u8; usize::try_from(len).map_err(io::Error::other)?];
        self.file.read_exact_at(&mut buf, position)?;
        Ok(Bytes::from(buf))
    }

    fn corrupt(&self, position: u64) -> LogError {
        LogError::Corrupt {
            path: self.path.clone(),
            position,
            reason: "a synced record fails its checks",
        }
    }
}
