//! Reads of an object (whole, ranged, streamed to a writer), its headers alone, and deletes.

use std::collections::BTreeMap;

use bytes::Bytes;
use reqwest::header::{
    CACHE_CONTROL, CONTENT_DISPOSITION, CONTENT_LENGTH, CONTENT_TYPE, ETAG, HeaderMap,
    LAST_MODIFIED, RANGE,
};
use reqwest::{Method, Response, StatusCode};
use serde::Serialize;
use time::OffsetDateTime;
use tokio::io::{AsyncWrite, AsyncWriteExt};

use crate::client::Client;
use crate::error::Error;

/// Prefix of the headers carrying user metadata.
const META_PREFIX: &str = "x-plinth-meta-";

/// What the headers of a read say about an object: [`ObjectInfo`] without the SHA-256,
/// which the server does not send on reads.
///
/// [`ObjectInfo`]: plinth_types::storage::ObjectInfo
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ObjectHead {
    /// Size in bytes: of the whole object, or of the range that was read.
    pub size: u64,
    /// Entity tag, quoted, as in [`PutOptions::if_match`](crate::PutOptions::if_match).
    pub etag: String,
    /// The content type.
    pub content_type: String,
    /// `Cache-Control`, if the object has one.
    pub cache_control: Option<String>,
    /// `Content-Disposition` as served, if any.
    pub content_disposition: Option<String>,
    /// User metadata, names lowercased without the `x-plinth-meta-` prefix.
    pub metadata: BTreeMap<String, String>,
    /// When this version was written, to the second (HTTP dates carry no more).
    #[serde(with = "time::serde::rfc3339")]
    pub last_modified: OffsetDateTime,
}

impl ObjectHead {
    /// Reads the object's description from a successful GET or HEAD.
    fn from_headers(headers: &HeaderMap) -> Result<ObjectHead, Error> {
        let text = |name: &str| {
            headers
                .get(name)
                .and_then(|value| value.to_str().ok())
                .map(str::to_owned)
        };
        let required = |name: &str| {
            text(name).ok_or_else(|| Error::MalformedResponse(format!("no readable `{name}`")))
        };

        let size = required(CONTENT_LENGTH.as_str())?
            .parse()
            .map_err(|_| Error::MalformedResponse("`content-length` is not a number".into()))?;
        let last_modified = httpdate::parse_http_date(&required(LAST_MODIFIED.as_str())?)
            .map_err(|_| Error::MalformedResponse("`last-modified` is not an HTTP date".into()))?;

        let metadata = headers
            .iter()
            .filter_map(|(name, value)| {
                let field = name.as_str().strip_prefix(META_PREFIX)?;
                Some((field.to_owned(), value.to_str().ok()?.to_owned()))
            })
            .collect();

        Ok(ObjectHead {
            size,
            etag: required(ETAG.as_str())?,
            content_type: required(CONTENT_TYPE.as_str())?,
            cache_control: text(CACHE_CONTROL.as_str()),
            content_disposition: text(CONTENT_DISPOSITION.as_str()),
            metadata,
            last_modified: OffsetDateTime::from(last_modified),
        })
    }
}

/// Reads and deletes.
impl Client {
    /// Reads a whole object into memory (`GET /buckets/{bucket}/objects/{key}`); for large
    /// objects prefer [`Client::download`], whose memory use stays flat.
    ///
    /// # Errors
    ///
    /// Returns [`Error::InvalidKey`] before sending, and [`Error::Api`] with
    /// `bucket_not_found` or `object_not_found`.
    pub async fn get_object(&self, bucket: &str, key: &str) -> Result<Bytes, Error> {
        let url = self.object_url(bucket, key)?;
        let response = self.send(self.request(Method::GET, url)).await?;
        response.bytes().await.map_err(Error::Transport)
    }

    /// Reads bytes `start` to `end_inclusive` of an object (`Range: bytes=start-end`). A
    /// range that runs past the end is cut at the end, as HTTP does.
    ///
    /// # Errors
    ///
    /// Returns [`Error::InvalidHeader`] when `end_inclusive < start`, before sending;
    /// [`Error::Api`] with `range_not_satisfiable` when `start` is at or past the end of the
    /// object, and the errors of [`Client::get_object`].
    pub async fn get_range(
        &self,
        bucket: &str,
        key: &str,
        start: u64,
        end_inclusive: u64,
    ) -> Result<Bytes, Error> {
        if end_inclusive < start {
            return Err(Error::InvalidHeader(format!(
                "the range {start}-{end_inclusive} ends before it starts"
            )));
        }
        let url = self.object_url(bucket, key)?;
        let range = format!("bytes={start}-{end_inclusive}");

        let response = self
            .send(self.request(Method::GET, url).header(RANGE, range))
            .await?;
        let partial = response.status() == StatusCode::PARTIAL_CONTENT;
        let body = response.bytes().await.map_err(Error::Transport)?;

        if partial {
            return Ok(body);
        }
        // Something between client and server dropped the range and sent the whole object:
        // the caller still gets the bytes it asked for.
        let from = usize::try_from(start).map_or(body.len(), |from| from.min(body.len()));
        let to = usize::try_from(end_inclusive)
            .map_or(body.len(), |end| end.saturating_add(1).min(body.len()));
        Ok(body.slice(from..to))
    }

    /// Streams an object into `writer`, one chunk at a time, so memory use does not grow with
    /// the object's size; `writer` is flushed at the end.
    ///
    /// The request is retried until the response starts; a failure while the bytes arrive
    /// is returned as is, with part of the object already written, so a caller writing to a
    /// file should write to a temporary one and rename it only on success. The whole
    /// transfer is bounded by the client's timeout.
    ///
    /// # Errors
    ///
    /// Returns [`Error::Transport`] when the connection breaks mid-way, [`Error::Io`] when
    /// `writer` fails, [`Error::MalformedResponse`] when the headers lack the object's
    /// description, and the errors of [`Client::get_object`].
    pub async fn download<W>(
        &self,
        bucket: &str,
        key: &str,
        writer: &mut W,
    ) -> Result<ObjectHead, Error>
    where
        W: AsyncWrite + Unpin + ?Sized,
    {
        let url = self.object_url(bucket, key)?;
        let mut response = self.send(self.request(Method::GET, url)).await?;
        let head = ObjectHead::from_headers(response.headers())?;

        while let Some(chunk) = response.chunk().await.map_err(Error::Transport)? {
            writer.write_all(&chunk).await.map_err(Error::Io)?;
        }
        writer.flush().await.map_err(Error::Io)?;

        Ok(head)
    }

    /// Reads an object's description without its bytes
    /// (`HEAD /buckets/{bucket}/objects/{key}`).
    ///
    /// # Errors
    ///
    /// A HEAD response has no body, so an error carries only its status: [`Error::Api`]
    /// with status 404 and code `unknown` for a missing bucket or object. Also
    /// [`Error::InvalidKey`] before sending and [`Error::MalformedResponse`].
    pub async fn head_object(&self, bucket: &str, key: &str) -> Result<ObjectHead, Error> {
        let url = self.object_url(bucket, key)?;
        let response: Response = self.send(self.request(Method::HEAD, url)).await?;
        ObjectHead::from_headers(response.headers())
    }

    /// Deletes an object (`DELETE /buckets/{bucket}/objects/{key}`). As in S3, deleting a key
    /// that holds nothing succeeds.
    ///
    /// # Errors
    ///
    /// Returns [`Error::InvalidKey`] before sending, and [`Error::Api`] with
    /// `bucket_not_found`.
    pub async fn delete_object(&self, bucket: &str, key: &str) -> Result<(), Error> {
        let url = self.object_url(bucket, key)?;
        self.send_empty(self.request(Method::DELETE, url)).await
    }
}

#[cfg(test)]
mod tests {
    use reqwest::header::HeaderValue;
    use time::macros::datetime;

    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(name, value)| {
                let name = reqwest::header::HeaderName::from_static(name);
                (name, HeaderValue::from_static(value))
            })
            .collect()
    }

    #[test]
    fn head_is_read_from_the_headers() {
        let headers = headers(&[
            ("content-length", "42"),
            ("etag", "\"abc\""),
            ("content-type", "text/plain"),
            ("last-modified", "Sun, 06 Nov 1994 08:49:37 GMT"),
            ("x-plinth-meta-owner", "ada"),
            ("x-content-type-options", "nosniff"),
        ]);

        let head = ObjectHead::from_headers(&headers).unwrap();

        assert_eq!(head.size, 42);
        assert_eq!(head.etag, "\"abc\"");
        assert_eq!(head.content_type, "text/plain");
        assert_eq!(head.last_modified, datetime!(1994-11-06 08:49:37 UTC));
        assert_eq!(head.metadata.len(), 1);
        assert_eq!(head.metadata["owner"], "ada");
        assert_eq!(head.cache_control, None);
    }

    #[test]
    fn head_without_a_length_is_malformed() {
        let headers = headers(&[
            ("etag", "\"abc\""),
            ("content-type", "text/plain"),
            ("last-modified", "Sun, 06 Nov 1994 08:49:37 GMT"),
        ]);

        let result = ObjectHead::from_headers(&headers);

        assert!(
            matches!(&result, Err(Error::MalformedResponse(why)) if why.contains("content-length")),
            "{result:?}"
        );
    }
}
