//! A message as the log stores it: the payload of one record.
//!
//! ```text
//! | version: u8 = 1 | flags: u8 | [key] | [deliver_at] | [message_id] | headers | value |
//! ```
//!
//! Flags say which optional parts are present and whether the value is JSON text. Lengths
//! are little-endian: a key is `u32` length and bytes, `deliver_at` an `i64` of milliseconds,
//! a message id `u16` length and bytes, headers a `u16` count of (`u16` name length, name,
//! `u32` value length, value); the value is the rest of the payload. The format is the
//! same on both backends (on Kafka it is the record value), so a message read back is the
//! message published.

use std::collections::BTreeMap;

use bytes::{BufMut, Bytes};

const VERSION: u8 = 1;
const JSON: u8 = 1;
const KEY: u8 = 1 << 1;
const DELIVER_AT: u8 = 1 << 2;
const MESSAGE_ID: u8 = 1 << 3;

/// A message, validated, as it is stored.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StoredMessage {
    /// The value's bytes (JSON text when `json`).
    pub value: Bytes,
    /// Whether the value was published as JSON.
    pub json: bool,
    /// The partitioning key.
    pub key: Option<String>,
    /// When subscriptions may deliver it, in milliseconds since the epoch.
    pub deliver_at: Option<i64>,
    /// The producer's id for it.
    pub message_id: Option<String>,
    /// Its headers.
    pub headers: BTreeMap<String, String>,
}

/// A stored payload that does not parse: only a bug or damage the CRC missed makes one.
#[derive(Debug, thiserror::Error)]
#[error("a stored message does not parse: {0}")]
pub struct Malformed(&'static str);

impl StoredMessage {
    /// Encodes the message as a log payload.
    pub fn encode(&self) -> Bytes {
        let mut flags = 0;
        for (present, flag) in [
            (self.json, JSON),
            (self.key.is_some(), KEY),
            (self.deliver_at.is_some(), DELIVER_AT),
            (self.message_id.is_some(), MESSAGE_ID),
        ] {
            if present {
                flags |= flag;
            }
        }
        let mut buf = Vec::with_capacity(self.value.len() + 64);
        buf.put_u8(VERSION);
        buf.put_u8(flags);
        if let Some(key) = &self.key {
            buf.put_u32_le(key.len() as u32);
            buf.put_slice(key.as_bytes());
        }
        if let Some(at) = self.deliver_at {
            buf.put_i64_le(at);
        }
        if let Some(id) = &self.message_id {
            buf.put_u16_le(id.len() as u16);
            buf.put_slice(id.as_bytes());
        }
        buf.put_u16_le(self.headers.len() as u16);
        for (name, value) in &self.headers {
            buf.put_u16_le(name.len() as u16);
            buf.put_slice(name.as_bytes());
            buf.put_u32_le(value.len() as u32);
            buf.put_slice(value.as_bytes());
        }
        buf.put_slice(&self.value);
        Bytes::from(buf)
    }

    /// Decodes a log payload; the value shares the payload's memory.
    ///
    /// # Errors
    ///
    /// Returns [`Malformed`] for bytes [`StoredMessage::encode`] did not write.
    pub fn decode(payload: &Bytes) -> Result<StoredMessage, Malformed> {
        let mut reader = Reader {
            buf: payload,
            at: 0,
        };
        if reader.u8()? != VERSION {
            return Err(Malformed("unknown version"));
        }
        let flags = reader.u8()?;
        let key = if flags & KEY != 0 {
            let len = reader.u32()? as usize;
            Some(reader.text(len)?)
        } else {
            None
        };
        let deliver_at = if flags & DELIVER_AT != 0 {
            Some(i64::from_le_bytes(reader.array()?))
        } else {
            None
        };
        let message_id = if flags & MESSAGE_ID != 0 {
            let len = reader.u16()? as usize;
            Some(reader.text(len)?)
        } else {
            None
        };
        let mut headers = BTreeMap::new();
        for _ in 0..reader.u16()? {
            let len = reader.u16()? as usize;
            let name = reader.text(len)?;
            let len = reader.u32()? as usize;
            headers.insert(name, reader.text(len)?);
        }
        Ok(StoredMessage {
            value: payload.slice(reader.at..),
            json: flags & JSON != 0,
            key,
            deliver_at,
            message_id,
            headers,
        })
    }
}

struct Reader<'a> {
    buf: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn take(&mut self, len: usize) -> Result<&[u8], Malformed> {
        let end = self
            .at
            .checked_add(len)
            .filter(|&end| end <= self.buf.len());
        let end = end.ok_or(Malformed("truncated"))?;
        let bytes = &self.buf[self.at..end];
        self.at = end;
        Ok(bytes)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], Malformed> {
        self.take(N)?.try_into().map_err(|_| Malformed("truncated"))
    }

    fn u8(&mut self) -> Result<u8, Malformed> {
        Ok(self.array::<1>()?[0])
    }

    fn u16(&mut self) -> Result<u16, Malformed> {
        Ok(u16::from_le_bytes(self.array()?))
    }

    fn u32(&mut self) -> Result<u32, Malformed> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    fn text(&mut self, len: usize) -> Result<String, Malformed> {
        String::from_utf8(self.take(len)?.to_vec()).map_err(|_| Malformed("text is not UTF-8"))
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        #[test]
        fn a_message_decodes_to_what_was_encoded(
            value in proptest::collection::vec(any::<u8>(), 0..200),
            json in any::<bool>(),
            key in proptest::option::of("\\PC{0,20}"),
            deliver_at in proptest::option::of(any::<i64>()),
            message_id in proptest::option::of("[a-z0-9-]{1,20}"),
            headers in proptest::collection::btree_map("[a-z-]{1,10}", "\\PC{0,20}", 0..5),
        ) {
            let message = StoredMessage {
                value: Bytes::from(value),
                json,
                key,
                deliver_at,
                message_id,
                headers,
            };
            prop_assert_eq!(StoredMessage::decode(&message.encode()).unwrap(), message);
        }

        #[test]
        fn any_bytes_decode_or_fail_without_panicking(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = StoredMessage::decode(&Bytes::from(bytes));
        }
    }
}
