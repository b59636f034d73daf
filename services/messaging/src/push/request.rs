//! A push delivery as an HTTP request: a CloudEvents 1.0 event in binary mode, signed.
//!
//! The body is the message's value as published (JSON text, `application/json`; bytes,
//! `application/octet-stream`). The event's attributes are `ce-*` headers:
//!
//! - `ce-specversion` `1.0`, `ce-type` `dev.plinth.message.published`;
//! - `ce-source` `/projects/{project}/topics/{topic}`, `ce-id` `{partition}-{offset}` (the
//!   same on every redelivery, so a function can deduplicate on source and id);
//! - `ce-time`, the publication time;
//! - `ce-partitionkey`, the message's key, if any;
//! - `ce-plinthsubscription`, `ce-plinthpartition`, `ce-plinthoffset`, `ce-plinthattempt`
//!   and `ce-plinthmessageid` (the producer's id, if any).
//!
//! Each message header `name: value` travels as `plinth-header-{name}: {value}`, with every
//! byte of the name other than `a-z`, `0-9`, `-`, `_`, `.` and every byte of the value
//! outside printable ASCII (and `%`) percent-encoded, so nothing is lost to case folding.
//!
//! `plinth-signature: t={unix seconds},v1={hex}` carries the HMAC-SHA256, keyed with the
//! subscription's secret, of `{t}.{body}`.

use aws_lc_rs::hmac;
use bytes::Bytes;
use percent_encoding::{AsciiSet, CONTROLS, utf8_percent_encode};
use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};
use time::format_description::well_known::Rfc3339;

use crate::delivery::Taken;

/// Bytes a header value escapes: controls, non-ASCII (always), `%` and `"`.
const VALUE_ESCAPES: &AsciiSet = &CONTROLS.add(b'%').add(b'"');

/// The CloudEvents type of every pushed message.
pub(crate) const EVENT_TYPE: &str = "dev.plinth.message.published";

/// What a push request says about where its message comes from.
pub(crate) struct Origin<'a> {
    pub(crate) project_id: &'a str,
    pub(crate) topic: &'a str,
    pub(crate) subscription: &'a str,
}

/// The signature header's value for a body sent at `timestamp` (Unix seconds).
pub(crate) fn signature(secret: &str, timestamp: i64, body: &[u8]) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes());
    let mut context = hmac::Context::with_key(&key);
    context.update(timestamp.to_string().as_bytes());
    context.update(b".");
    context.update(body);
    let tag = context.sign();
    let hex: String = tag.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    format!("t={timestamp},v1={hex}")
}

/// A message header's name as an HTTP header name: `plinth-header-` and the name with every
/// byte but `a-z`, `0-9`, `-`, `_` and `.` percent-encoded (HTTP folds case).
fn header_name(name: &str) -> Option<HeaderName> {
    let mut encoded = String::from("plinth-header-");
    for byte in name.bytes() {
        match byte {
            b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => encoded.push(char::from(byte)),
            _ => encoded.push_str(&format!("%{byte:02X}")),
        }
    }
    HeaderName::from_bytes(encoded.as_bytes()).ok()
}

fn value(text: &str) -> HeaderValue {
    let encoded = utf8_percent_encode(text, VALUE_ESCAPES).to_string();
    // Only visible ASCII and spaces are left, which a header value always accepts.
    HeaderValue::from_str(&encoded).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// The headers and body of the push of one delivery, signed at `timestamp`.
pub(crate) fn build(
    origin: &Origin<'_>,
    taken: &Taken,
    secret: &str,
    timestamp: i64,
) -> (HeaderMap, Bytes) {
    let message = &taken.message;
    let mut headers = HeaderMap::new();
    let mut put = |name: &'static str, text: &str| {
        headers.insert(HeaderName::from_static(name), value(text));
    };
    put("ce-specversion", "1.0");
    put("ce-type", EVENT_TYPE);
    put(
        "ce-source",
        &format!("/projects/{}/topics/{}", origin.project_id, origin.topic),
    );
    put("ce-id", &format!("{}-{}", taken.partition, taken.offset));
    let published = plinth_shared::ids::from_millis(taken.timestamp);
    if let Ok(time) = published.format(&Rfc3339) {
        put("ce-time", &time);
    }
    if let Some(key) = &message.key {
        put("ce-partitionkey", key);
    }
    put("ce-plinthsubscription", origin.subscription);
    put("ce-plinthpartition", &taken.partition.to_string());
    put("ce-plinthoffset", &taken.offset.to_string());
    put("ce-plinthattempt", &taken.attempt.to_string());
    if let Some(id) = &message.message_id {
        put("ce-plinthmessageid", id);
    }
    put(
        "plinth-signature",
        &signature(secret, timestamp, &message.value),
    );
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static(if message.json {
            "application/json"
        } else {
            "application/octet-stream"
        }),
    );
    for (name, text) in &message.headers {
        if let Some(name) = header_name(name) {
            headers.append(name, value(text));
        }
    }
    (headers, message.value.clone())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::message::StoredMessage;

    #[test]
    fn the_signature_is_an_hmac_of_timestamp_and_body() {
        // The same computation with Python's `hmac` module:
        // hmac.new(b"secret", b"1700000000.hello", "sha256").hexdigest()
        assert_eq!(
            signature("secret", 1_700_000_000, b"hello"),
            "t=1700000000,v1=47b1df0ab12338b2685470b0d2b37033add7c3b2bc8172f313e77413f1bb78c8"
        );
    }

    #[test]
    fn headers_keep_names_and_values_whole() {
        let taken = Taken {
            lease_id: "0.5.1.ab".into(),
            attempt: 2,
            partition: 0,
            offset: 5,
            timestamp: 1_700_000_000_000,
            message: StoredMessage {
                value: Bytes::from_static(b"{\"a\":1}"),
                json: true,
                key: Some("user 7".into()),
                headers: BTreeMap::from([
                    ("Trace-Id".into(), "abc".into()),
                    ("note".into(), "é 100%".into()),
                ]),
                ..StoredMessage::default()
            },
        };
        let origin = Origin {
            project_id: "prj_1",
            topic: "orders",
            subscription: "hook",
        };
        let (headers, body) = build(&origin, &taken, "s", 1_700_000_001);
        let get = |name: &str| {
            let value = headers
                .get(name)
                .unwrap_or_else(|| panic!("no {name} in {headers:?}"));
            value.to_str().unwrap().to_owned()
        };
        assert_eq!(body.as_ref(), b"{\"a\":1}");
        assert_eq!(get("content-type"), "application/json");
        assert_eq!(get("ce-id"), "0-5");
        assert_eq!(get("ce-source"), "/projects/prj_1/topics/orders");
        assert_eq!(get("ce-time"), "2023-11-14T22:13:20Z");
        assert_eq!(get("ce-partitionkey"), "user 7");
        assert_eq!(get("ce-plinthattempt"), "2");
        assert_eq!(get("plinth-header-%54race-%49d"), "abc");
        assert_eq!(get("plinth-header-note"), "%C3%A9 100%25");
        assert!(get("plinth-signature").starts_with("t=1700000001,v1="));
    }
}
