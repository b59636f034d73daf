//! Uploads: the PUT of an object from bytes, a file or a reader, and server-side copies.
//!
//! A PUT is idempotent, so an upload from bytes is retried like any other PUT. An upload
//! from a file or a reader streams its body and cannot send it a second time: it is made
//! exactly once, and a transient failure is returned to the caller, who can open the source
//! again and start over.

use std::collections::BTreeMap;
use std::path::Path;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use reqwest::header::{
    CACHE_CONTROL, CONTENT_DISPOSITION, CONTENT_LENGTH, CONTENT_TYPE, HeaderMap, HeaderName,
    HeaderValue, IF_MATCH, IF_NONE_MATCH,
};
use reqwest::{Body, Method};
use tokio::io::AsyncRead;
use tokio_util::io::ReaderStream;

use plinth_types::storage::ObjectInfo;

use crate::client::Client;
use crate::error::Error;

/// Prefix of the headers carrying user metadata.
const META_PREFIX: &str = "x-plinth-meta-";

/// Header carrying the hex SHA-256 the server checks the body against.
const SHA256_HEADER: &str = "x-plinth-checksum-sha256";

/// Header naming the object a PUT copies (`bucket/key`) instead of reading a body.
const COPY_SOURCE_HEADER: &str = "x-plinth-copy-source";

/// How much a streamed upload reads from its source at a time: large enough that a fast
/// disk is not throttled by per-chunk overhead, small enough to keep memory flat.
const UPLOAD_CHUNK_BYTES: usize = 64 * 1024;

/// How an object is stored and served, and the conditions its upload is subject to.
///
/// The default stores the bytes as `application/octet-stream`, with no metadata and no
/// condition: a PUT replaces whatever the key held.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PutOptions {
    /// The content type the object is served with.
    pub content_type: Option<String>,
    /// The `Cache-Control` the object is served with.
    pub cache_control: Option<String>,
    /// The `Content-Disposition` the object is served with (the server sends `attachment`
    /// instead for types a browser would render as a page).
    pub content_disposition: Option<String>,
    /// User metadata, sent as `x-plinth-meta-{name}` headers. HTTP header names are
    /// case-insensitive, so names come back lowercased; values must be visible ASCII, and
    /// names and values together at most 2 KiB.
    pub metadata: BTreeMap<String, String>,
    /// A digest of the body for the server to check before storing it.
    pub checksum: Option<Checksum>,
    /// Store the object only if the key holds none yet (`If-None-Match: *`).
    pub if_none_match_any: bool,
    /// Store the object only if the key's current version has this entity tag
    /// (`If-Match`), as [`ObjectInfo::etag`] gives it, quotes included.
    pub if_match: Option<String>,
}

/// A digest of an upload's body. The server computes its own and refuses the upload with
/// `checksum_mismatch` when they differ, so nothing corrupted in transit is stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Checksum {
    /// The SHA-256 of the body, sent hex-encoded as `x-plinth-checksum-sha256`.
    Sha256([u8; 32]),
    /// The MD5 of the body, sent base64-encoded as `Content-MD5` (RFC 1864).
    Md5([u8; 16]),
}

impl PutOptions {
    /// Turns the options into request headers.
    pub(super) fn headers(&self) -> Result<HeaderMap, Error> {
        let mut headers = HeaderMap::new();

        let content = [
            (CONTENT_TYPE, &self.content_type),
            (CACHE_CONTROL, &self.cache_control),
            (CONTENT_DISPOSITION, &self.content_disposition),
            (IF_MATCH, &self.if_match),
        ];
        for (name, value) in content {
            if let Some(value) = value {
                headers.insert(name.clone(), ascii_value(name.as_str(), value)?);
            }
        }
        if self.if_none_match_any {
            headers.insert(IF_NONE_MATCH, HeaderValue::from_static("*"));
        }

        for (name, value) in &self.metadata {
            let header = format!("{META_PREFIX}{name}");
            let header_name = HeaderName::from_bytes(header.as_bytes()).map_err(|_| {
                Error::InvalidHeader(format!("metadata name `{name}` is not a header name"))
            })?;
            headers.insert(header_name, ascii_value(&header, value)?);
        }

        match self.checksum {
            Some(Checksum::Sha256(digest)) => {
                headers.insert(SHA256_HEADER, ascii_value(SHA256_HEADER, &hex(&digest))?);
            }
            Some(Checksum::Md5(digest)) => {
                let encoded = STANDARD.encode(digest);
                headers.insert("content-md5", ascii_value("content-md5", &encoded)?);
            }
            None => {}
        }

        Ok(headers)
    }
}

/// Uploads and copies.
impl Client {
    /// Stores an object from bytes held in memory
    /// (`PUT /buckets/{bucket}/objects/{key}`). Retried like any PUT.
    ///
    /// # Errors
    ///
    /// Returns [`Error::InvalidKey`] or [`Error::InvalidHeader`] before sending, and
    /// [`Error::Api`] with `bucket_not_found`, `invalid_object_key`, `invalid_header`,
    /// `checksum_mismatch`, `precondition_failed`, `content_type_not_allowed`,
    /// `object_too_large` or `quota_exceeded` when the upload is refused.
    pub async fn put_object(
        &self,
        bucket: &str,
        key: &str,
        body: impl Into<Bytes>,
        options: &PutOptions,
    ) -> Result<ObjectInfo, Error> {
        let body = Body::from(body.into());
        self.put(bucket, key, body, None, options).await
    }

    /// Stores an object from a file, streamed: memory use does not grow with the file's
    /// size. Sent once, never retried (see the module documentation), and bounded by the
    /// client's timeout as a whole, so a large file needs a [`ClientBuilder::timeout`] to
    /// match.
    ///
    /// [`ClientBuilder::timeout`]: crate::ClientBuilder::timeout
    ///
    /// # Errors
    ///
    /// Returns [`Error::Io`] when the file cannot be opened, [`Error::Transport`] when it
    /// cannot be read to the end, and the errors of [`Client::put_object`].
    pub async fn put_file(
        &self,
        bucket: &str,
        key: &str,
        path: impl AsRef<Path>,
        options: &PutOptions,
    ) -> Result<ObjectInfo, Error> {
        let file = tokio::fs::File::open(path).await.map_err(Error::Io)?;
        let length = file.metadata().await.map_err(Error::Io)?.len();

        // The length lets the server refuse an object over its limits before any byte is
        // sent, and refuse the upload if the file changes size while it is read.
        let stream = ReaderStream::with_capacity(file, UPLOAD_CHUNK_BYTES);
        let body = Body::wrap_stream(stream);

        self.put(bucket, key, body, Some(length), options).await
    }

    /// Stores an object from a reader, streamed until the reader ends. Sent once, never
    /// retried, and bounded by the client's timeout, as [`Client::put_file`].
    ///
    /// # Errors
    ///
    /// Returns [`Error::Transport`] when the reader fails (the upload is then abandoned and
    /// nothing is stored), and the errors of [`Client::put_object`].
    pub async fn put_reader(
        &self,
        bucket: &str,
        key: &str,
        reader: impl AsyncRead + Send + 'static,
        options: &PutOptions,
    ) -> Result<ObjectInfo, Error> {
        let stream = ReaderStream::with_capacity(reader, UPLOAD_CHUNK_BYTES);
        let body = Body::wrap_stream(stream);
        self.put(bucket, key, body, None, options).await
    }

    /// Copies an object, server-side, within the project: the bytes are not downloaded,
    /// and the copy keeps the source's content type, caching headers and metadata
    /// (`PUT` of the destination with `x-plinth-copy-source`).
    ///
    /// The server reads the source from a header, which carries ASCII only, so a source key
    /// outside ASCII cannot be copied.
    ///
    /// # Errors
    ///
    /// Returns [`Error::InvalidKey`] for either key and [`Error::InvalidHeader`] for a
    /// source that is not visible ASCII, before sending; [`Error::Api`] with
    /// `bucket_not_found` or `object_not_found` for a missing source or destination bucket,
    /// and the destination's refusals of [`Client::put_object`].
    pub async fn copy_object(
        &self,
        source_bucket: &str,
        source_key: &str,
        bucket: &str,
        key: &str,
    ) -> Result<ObjectInfo, Error> {
        super::check_key(source_key)?;
        let url = self.object_url(bucket, key)?;
        let source = format!("{source_bucket}/{source_key}");
        let source = ascii_value(COPY_SOURCE_HEADER, &source)?;

        let request = self
            .request(Method::PUT, url)
            .header(COPY_SOURCE_HEADER, source);

        self.send_json(request).await
    }

    /// Sends one PUT of an object with the options' headers.
    async fn put(
        &self,
        bucket: &str,
        key: &str,
        body: Body,
        length: Option<u64>,
        options: &PutOptions,
    ) -> Result<ObjectInfo, Error> {
        let url = self.object_url(bucket, key)?;
        let mut headers = options.headers()?;
        if let Some(length) = length {
            headers.insert(CONTENT_LENGTH, HeaderValue::from(length));
        }

        let request = self.request(Method::PUT, url).headers(headers).body(body);
        self.send_json(request).await
    }
}

/// Builds a header value the server will read: visible ASCII, spaces and tabs. The `http`
/// crate would also let other bytes through, which the server refuses.
fn ascii_value(name: &str, value: &str) -> Result<HeaderValue, Error> {
    let visible = value
        .bytes()
        .all(|byte| byte == b'\t' || (b' '..=b'~').contains(&byte));
    let parsed = visible.then(|| HeaderValue::from_str(value).ok()).flatten();
    parsed.ok_or_else(|| Error::InvalidHeader(format!("`{name}` must be visible ASCII")))
}

/// Encodes bytes as lowercase hex.
pub(super) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_become_headers() {
        let options = PutOptions {
            content_type: Some("image/png".to_owned()),
            cache_control: Some("max-age=60".to_owned()),
            metadata: BTreeMap::from([("Owner".to_owned(), "ada".to_owned())]),
            checksum: Some(Checksum::Md5([0xab; 16])),
            if_none_match_any: true,
            ..PutOptions::default()
        };

        let headers = options.headers().unwrap();

        assert_eq!(headers["content-type"], "image/png");
        assert_eq!(headers["cache-control"], "max-age=60");
        assert_eq!(headers["x-plinth-meta-owner"], "ada");
        assert_eq!(headers["content-md5"], STANDARD.encode([0xab; 16]).as_str());
        assert_eq!(headers["if-none-match"], "*");
        assert!(!headers.contains_key("if-match"));
        assert!(!headers.contains_key("content-disposition"));
    }

    #[test]
    fn sha256_is_sent_as_hex() {
        let mut digest = [0; 32];
        digest[0] = 0x0f;
        let options = PutOptions {
            checksum: Some(Checksum::Sha256(digest)),
            ..PutOptions::default()
        };

        let headers = options.headers().unwrap();

        let sent = headers[SHA256_HEADER].to_str().unwrap();
        assert_eq!(sent.len(), 64);
        assert!(sent.starts_with("0f00"), "{sent}");
    }

    #[test]
    fn values_a_header_cannot_carry_are_refused() {
        let bad_name = PutOptions {
            metadata: BTreeMap::from([("two words".to_owned(), "v".to_owned())]),
            ..PutOptions::default()
        };
        let bad_value = PutOptions {
            metadata: BTreeMap::from([("city".to_owned(), "Zürich".to_owned())]),
            ..PutOptions::default()
        };
        let line_break = PutOptions {
            content_type: Some("text/plain\r\nx-evil: 1".to_owned()),
            ..PutOptions::default()
        };

        for options in [bad_name, bad_value, line_break] {
            let result = options.headers();
            assert!(matches!(result, Err(Error::InvalidHeader(_))), "{result:?}");
        }
    }
}
