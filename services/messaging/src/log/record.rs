//! How a record is laid out in a segment file.
//!
//! ```text
//! | length: u32 | crc: u32 | offset: u64 | batch: u64 | timestamp: i64 | payload |
//! ```
//!
//! All integers are little-endian. `length` counts every byte after itself; `crc` is the
//! CRC-32 (IEEE) of everything after it. Storing the offset in each record lets recovery check
//! that a segment's records follow each other without gaps, and lets a record read from
//! anywhere say where it belongs. `batch` is the offset of the first record written (and
//! synced) together with this one: a batch is written only after the one before it is synced,
//! so a valid record of a later batch behind damaged bytes proves the damage was synced data,
//! while damage inside the last batch is a write cut short.

use bytes::Bytes;

/// Bytes before the payload: length, crc, offset, batch, timestamp.
pub(crate) const HEADER: usize = 4 + 4 + 8 + 8 + 8;

/// The largest payload a record can carry. The service sets its own, lower limit on message
/// size; this bound only keeps a corrupt length field from asking for gigabytes.
pub const MAX_PAYLOAD: usize = 64 << 20;

/// One record of a partition's log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    /// Position in the partition, from 0, without gaps.
    pub offset: u64,
    /// Offset of the first record of the write it came in.
    pub batch: u64,
    /// When the log appended it, in milliseconds since the Unix epoch; never decreases
    /// within a partition.
    pub timestamp: i64,
    /// The bytes the caller appended.
    pub payload: Bytes,
}

impl Record {
    /// Bytes this record takes in a segment file.
    pub(crate) fn encoded_len(payload_len: usize) -> usize {
        HEADER + payload_len
    }
}

/// Appends the framing and payload of one record to `buf`.
pub(crate) fn encode(buf: &mut Vec<u8>, offset: u64, batch: u64, timestamp: i64, payload: &[u8]) {
    debug_assert!(payload.len() <= MAX_PAYLOAD);
    let length = u32::try_from(HEADER - 4 + payload.len()).unwrap_or(u32::MAX);
    let mut crc = crc32fast::Hasher::new();
    crc.update(&offset.to_le_bytes());
    crc.update(&batch.to_le_bytes());
    crc.update(&timestamp.to_le_bytes());
    crc.update(payload);
    buf.extend_from_slice(&length.to_le_bytes());
    buf.extend_from_slice(&crc.finalize().to_le_bytes());
    buf.extend_from_slice(&offset.to_le_bytes());
    buf.extend_from_slice(&batch.to_le_bytes());
    buf.extend_from_slice(&timestamp.to_le_bytes());
    buf.extend_from_slice(payload);
}

/// What the bytes at the start of a buffer hold.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Decoded {
    /// A whole record, valid, taking `len` bytes.
    Record { record: Record, len: usize },
    /// The start of a record whose end is not in the buffer: `needed` bytes in all would
    /// hold it (or at least its header).
    Incomplete { needed: usize },
    /// Bytes that are not a record: a length out of bounds, or a checksum that does not
    /// match.
    Invalid,
}

/// Decodes the record that starts `at` bytes into `chunk`; its payload shares `chunk`'s
/// memory rather than copying it.
pub(crate) fn decode(chunk: &Bytes, at: usize) -> Decoded {
    let buf = &chunk[at..];
    if buf.len() < HEADER {
        return Decoded::Incomplete { needed: HEADER };
    }
    let length = u32::from_le_bytes(buf[0..4].try_into().unwrap_or_default()) as usize;
    if !(HEADER - 4..=HEADER - 4 + MAX_PAYLOAD).contains(&length) {
        return Decoded::Invalid;
    }
    let len = 4 + length;
    if buf.len() < len {
        return Decoded::Incomplete { needed: len };
    }
    let crc = u32::from_le_bytes(buf[4..8].try_into().unwrap_or_default());
    if crc32fast::hash(&buf[8..len]) != crc {
        return Decoded::Invalid;
    }
    let offset = u64::from_le_bytes(buf[8..16].try_into().unwrap_or_default());
    let batch = u64::from_le_bytes(buf[16..24].try_into().unwrap_or_default());
    let timestamp = i64::from_le_bytes(buf[24..32].try_into().unwrap_or_default());
    let payload = chunk.slice(at + HEADER..at + len);
    Decoded::Record {
        record: Record {
            offset,
            batch,
            timestamp,
            payload,
        },
        len,
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn encoded(offset: u64, timestamp: i64, payload: &[u8]) -> Bytes {
        let mut buf = Vec::new();
        encode(&mut buf, offset, offset, timestamp, payload);
        Bytes::from(buf)
    }

    #[test]
    fn a_record_decodes_to_what_was_encoded() {
        let bytes = encoded(7, 1_700_000_000_000, b"hello");
        assert_eq!(bytes.len(), Record::encoded_len(5));
        let Decoded::Record { record, len } = decode(&bytes, 0) else {
            panic!("not a record");
        };
        assert_eq!(len, bytes.len());
        assert_eq!(record.offset, 7);
        assert_eq!(record.timestamp, 1_700_000_000_000);
        assert_eq!(&record.payload[..], b"hello");
    }

    #[test]
    fn a_cut_record_is_incomplete_and_a_wild_length_is_invalid() {
        let bytes = encoded(0, 0, b"payload");
        let cut = bytes.slice(..bytes.len() - 1);
        assert_eq!(
            decode(&cut, 0),
            Decoded::Incomplete {
                needed: bytes.len()
            }
        );
        assert_eq!(
            decode(&bytes.slice(..3), 0),
            Decoded::Incomplete { needed: HEADER }
        );
        let mut wild = bytes.to_vec();
        wild[..4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(decode(&Bytes::from(wild), 0), Decoded::Invalid);
    }

    proptest! {
        /// No single changed byte goes unnoticed: the record either fails to decode or (when
        /// the length grew) is incomplete; it never decodes to different contents.
        #[test]
        fn a_changed_byte_never_decodes_as_a_record(
            payload in proptest::collection::vec(any::<u8>(), 0..300),
            offset in any::<u64>(),
            timestamp in any::<i64>(),
            at in any::<prop::sample::Index>(),
            flip in 1u8..=255,
        ) {
            let mut bytes = encoded(offset, timestamp, &payload).to_vec();
            let at = at.index(bytes.len());
            bytes[at] ^= flip;
            let decoded = decode(&Bytes::from(bytes), 0);
            prop_assert!(!matches!(decoded, Decoded::Record { .. }), "{decoded:?}");
        }

        #[test]
        fn records_decode_one_after_another(
            payloads in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..100), 1..20),
        ) {
            let mut buf = Vec::new();
            for (i, payload) in payloads.iter().enumerate() {
                encode(&mut buf, i as u64, 0, i as i64 * 10, payload);
            }
            let buf = Bytes::from(buf);
            let mut at = 0;
            for (i, payload) in payloads.iter().enumerate() {
                let Decoded::Record { record, len } = decode(&buf, at) else {
                    panic!("record {i} did not decode");
                };
                prop_assert_eq!(record.offset, i as u64);
                prop_assert_eq!(&record.payload[..], &payload[..]);
                at += len;
            }
            prop_assert_eq!(at, buf.len());
        }
    }
}
