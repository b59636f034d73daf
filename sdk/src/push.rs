//! The function side of push delivery: check that a request came from Plinth, and read the
//! CloudEvent it carries.
//!
//! A push subscription sends each message as an HTTP `POST` in CloudEvents binary mode: the
//! body is the message's value, the attributes are `ce-*` headers, message headers are
//! `plinth-header-*`, and `plinth-signature: t={unix seconds},v1={hex}` is the HMAC-SHA256
//! of `{t}.{body}` keyed with the secret the subscription was created with. Answer 2xx to
//! acknowledge; anything else is retried.
//!
//! ```no_run
//! # fn handle(headers: &reqwest::header::HeaderMap, body: &[u8]) -> Result<(), plinth_sdk::push::VerifyError> {
//! let event = plinth_sdk::push::verify("whsec_...", headers, body)?;
//! println!("{} from {} (attempt {})", event.id, event.source, event.attempt);
//! # Ok(()) }
//! ```

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_lc_rs::hmac;
use bytes::Bytes;
use percent_encoding::percent_decode_str;
use reqwest::header::{CONTENT_TYPE, HeaderMap};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// How far a signature's time may be from the clock, either way, by default.
pub const DEFAULT_TOLERANCE: Duration = Duration::from_secs(300);

/// A verified push delivery.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PushEvent {
    /// `ce-id`: `{partition}-{offset}`, the same on every redelivery.
    pub id: String,
    /// `ce-source`: `/projects/{project}/topics/{topic}`.
    pub source: String,
    /// `ce-type`.
    pub event_type: String,
    /// `ce-time`: when the message was published.
    pub time: Option<OffsetDateTime>,
    /// The subscription that pushed it.
    pub subscription: String,
    /// The message's partition.
    pub partition: u32,
    /// The message's offset.
    pub offset: u64,
    /// Which delivery of the message this is, from 1.
    pub attempt: u32,
    /// The message's key, if any.
    pub key: Option<String>,
    /// The producer's message id, if any.
    pub message_id: Option<String>,
    /// The message's headers.
    pub headers: BTreeMap<String, String>,
    /// `application/json` for a JSON value, `application/octet-stream` for bytes.
    pub content_type: Option<String>,
    /// The message's value.
    pub data: Bytes,
}

impl PushEvent {
    /// Parses the value as JSON.
    ///
    /// # Errors
    ///
    /// Returns the parse error when the value is not a `T` in JSON.
    pub fn json<T: serde::de::DeserializeOwned>(&self) -> Result<T, serde_json::Error> {
        serde_json::from_slice(&self.data)
    }
}

/// Why a push request was not accepted as Plinth's.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum VerifyError {
    /// No `plinth-signature` header.
    #[error("the request has no plinth-signature header")]
    MissingSignature,
    /// A `plinth-signature` header that is not `t=...,v1=...`.
    #[error("the plinth-signature header is malformed")]
    MalformedSignature,
    /// The signature's time is too far from the clock: a replay, or a skewed clock.
    #[error("the signature's time is {0} seconds from now, outside the tolerance")]
    Stale(i64),
    /// No signature matches: another secret, or a changed body.
    #[error("the signature does not match the body")]
    Mismatch,
    /// A CloudEvents attribute is missing or unreadable.
    #[error("the `{0}` header is missing or malformed")]
    Attribute(&'static str),
}

/// Verifies a push request against the subscription's secret, within
/// [`DEFAULT_TOLERANCE`] of the system clock, and parses its event.
///
/// # Errors
///
/// Returns a [`VerifyError`] when the request is not a signed push of this subscription.
pub fn verify(secret: &str, headers: &HeaderMap, body: &[u8]) -> Result<PushEvent, VerifyError> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    verify_at(secret, headers, body, now, DEFAULT_TOLERANCE)
}

/// [`verify`] at a given time (Unix seconds) and tolerance.
///
/// # Errors
///
/// Returns a [`VerifyError`] when the request is not a signed push of this subscription.
pub fn verify_at(
    secret: &str,
    headers: &HeaderMap,
    body: &[u8],
    now: i64,
    tolerance: Duration,
) -> Result<PushEvent, VerifyError> {
    let signature = headers
        .get("plinth-signature")
        .ok_or(VerifyError::MissingSignature)?
        .to_str()
        .map_err(|_| VerifyError::MalformedSignature)?;
    let mut timestamp = None;
    let mut signatures = Vec::new();
    for part in signature.split(',') {
        match part.trim().split_once('=') {
            Some(("t", t)) => timestamp = t.parse::<i64>().ok(),
            Some(("v1", hex)) => signatures.push(from_hex(hex)?),
            _ => {}
        }
    }
    let timestamp = timestamp.ok_or(VerifyError::MalformedSignature)?;
    if signatures.is_empty() {
        return Err(VerifyError::MalformedSignature);
    }
    let skew = now.saturating_sub(timestamp);
    if skew.unsigned_abs() > tolerance.as_secs() {
        return Err(VerifyError::Stale(skew));
    }
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes());
    let mut signed = Vec::with_capacity(body.len() + 21);
    signed.extend_from_slice(timestamp.to_string().as_bytes());
    signed.push(b'.');
    signed.extend_from_slice(body);
    // Constant-time comparison; any one signature may match (several during a rotation).
    if !signatures
        .iter()
        .any(|tag| hmac::verify(&key, &signed, tag).is_ok())
    {
        return Err(VerifyError::Mismatch);
    }
    parse(headers, body)
}

fn from_hex(hex: &str) -> Result<Vec<u8>, VerifyError> {
    if !hex.len().is_multiple_of(2) {
        return Err(VerifyError::MalformedSignature);
    }
    (0..hex.len())
        .step_by(2)
        .map(|i| {
            hex.get(i..i + 2)
                .and_then(|pair| u8::from_str_radix(pair, 16).ok())
                .ok_or(VerifyError::MalformedSignature)
        })
        .collect()
}

fn decoded(text: &str) -> Cow<'_, str> {
    percent_decode_str(text).decode_utf8_lossy()
}

fn parse(headers: &HeaderMap, body: &[u8]) -> Result<PushEvent, VerifyError> {
    let text = |name: &'static str| -> Result<Option<String>, VerifyError> {
        match headers.get(name) {
            None => Ok(None),
            Some(value) => value
                .to_str()
                .map(|v| Some(decoded(v).into_owned()))
                .map_err(|_| VerifyError::Attribute(name)),
        }
    };
    let required = |name: &'static str| text(name)?.ok_or(VerifyError::Attribute(name));
    let number = |name: &'static str| -> Result<u64, VerifyError> {
        required(name)?
            .parse()
            .map_err(|_| VerifyError::Attribute(name))
    };
    if required("ce-specversion")? != "1.0" {
        return Err(VerifyError::Attribute("ce-specversion"));
    }
    let time = match text("ce-time")? {
        Some(time) => Some(
            OffsetDateTime::parse(&time, &Rfc3339)
                .map_err(|_| VerifyError::Attribute("ce-time"))?,
        ),
        None => None,
    };
    let mut message_headers = BTreeMap::new();
    for (name, value) in headers {
        let Some(encoded) = name.as_str().strip_prefix("plinth-header-") else {
            continue;
        };
        let value = value
            .to_str()
            .map_err(|_| VerifyError::Attribute("plinth-header-*"))?;
        message_headers.insert(decoded(encoded).into_owned(), decoded(value).into_owned());
    }
    Ok(PushEvent {
        id: required("ce-id")?,
        source: required("ce-source")?,
        event_type: required("ce-type")?,
        time,
        subscription: required("ce-plinthsubscription")?,
        partition: number("ce-plinthpartition")? as u32,
        offset: number("ce-plinthoffset")?,
        attempt: number("ce-plinthattempt")? as u32,
        key: text("ce-partitionkey")?,
        message_id: text("ce-plinthmessageid")?,
        headers: message_headers,
        content_type: headers
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
        data: Bytes::copy_from_slice(body),
    })
}

#[cfg(test)]
mod tests {
    use reqwest::header::HeaderValue;

    use super::*;

    fn signed(secret: &str, t: i64, body: &[u8]) -> HeaderMap {
        let key = hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes());
        let tag = hmac::sign(&key, &[t.to_string().as_bytes(), b".", body].concat());
        let hex: String = tag.as_ref().iter().map(|b| format!("{b:02x}")).collect();
        let mut headers = HeaderMap::new();
        let mut put = |name: &'static str, value: &str| {
            headers.insert(name, HeaderValue::from_str(value).unwrap());
        };
        put("plinth-signature", &format!("t={t},v1={hex}"));
        put("ce-specversion", "1.0");
        put("ce-id", "0-7");
        put("ce-source", "/projects/p/topics/t");
        put("ce-type", "dev.plinth.message.published");
        put("ce-plinthsubscription", "s");
        put("ce-plinthpartition", "0");
        put("ce-plinthoffset", "7");
        put("ce-plinthattempt", "1");
        put("plinth-header-%54race", "a%25b");
        headers
    }

    #[test]
    fn a_signed_request_verifies_and_a_changed_one_does_not() {
        let headers = signed("k", 1000, b"{}");
        let event = verify_at("k", &headers, b"{}", 1010, DEFAULT_TOLERANCE).unwrap();
        assert_eq!((event.offset, event.attempt), (7, 1));
        assert_eq!(event.headers["Trace"], "a%b");
        assert_eq!(
            verify_at("k", &headers, b"{ }", 1010, DEFAULT_TOLERANCE),
            Err(VerifyError::Mismatch)
        );
        assert_eq!(
            verify_at("other", &headers, b"{}", 1010, DEFAULT_TOLERANCE),
            Err(VerifyError::Mismatch)
        );
        assert_eq!(
            verify_at("k", &headers, b"{}", 1400, DEFAULT_TOLERANCE),
            Err(VerifyError::Stale(400))
        );
        let mut unsigned = headers.clone();
        unsigned.remove("plinth-signature");
        assert_eq!(
            verify_at("k", &unsigned, b"{}", 1010, DEFAULT_TOLERANCE),
            Err(VerifyError::MissingSignature)
        );
        let mut garbled = headers;
        garbled.insert("plinth-signature", HeaderValue::from_static("t=1000,v1=zz"));
        assert_eq!(
            verify_at("k", &garbled, b"{}", 1010, DEFAULT_TOLERANCE),
            Err(VerifyError::MalformedSignature)
        );
    }
}
