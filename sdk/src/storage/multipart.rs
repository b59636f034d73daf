//! Multipart uploads: the five routes one by one, and helpers that upload a file or a reader
//! in parts sent side by side, and resume a file's upload after a failure.
//!
//! A part is a PUT of bytes held in memory, so each part is retried like any PUT, and the
//! helpers hold at most `concurrency` parts in memory at a time. Every part goes with its
//! `Content-MD5`, which the server checks, and whose hex is the part's ETag: a resumed
//! upload keeps a part the server has only if the local bytes hash to its ETag.

use std::io::SeekFrom;
use std::path::Path;
use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use md5::{Digest, Md5};
use reqwest::Method;
use reqwest::header::{HeaderMap, IF_MATCH, IF_NONE_MATCH};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncSeekExt};

use plinth_types::storage::{
    CompleteUpload, CompletedPart, CreateUpload, ObjectInfo, Upload, UploadPart,
};

use super::put::{PutOptions, hex};
use crate::client::Client;
use crate::error::Error;

/// Most parts an upload may have (the server's limit, as S3's).
const MAX_PARTS: u64 = 10_000;

/// Called with each part's number and size once the server has acknowledged it; parts a
/// resumed upload keeps are not reported.
pub type PartSent = Arc<dyn Fn(u32, u64) + Send + Sync>;

/// How a helper cuts an upload into parts and sends them.
#[derive(Clone)]
pub struct MultipartOptions {
    /// Bytes per part, all but the last. The server refuses parts below its minimum
    /// (5 MiB by default) except the last; the size grows by itself when the source would
    /// need more than 10,000 parts.
    pub part_size: u64,
    /// Parts in flight at once, and so in memory at once.
    pub concurrency: usize,
    /// Told of each part sent, for progress.
    pub on_part_sent: Option<PartSent>,
}

impl Default for MultipartOptions {
    /// 8 MiB parts, four at a time.
    fn default() -> Self {
        MultipartOptions {
            part_size: 8 << 20,
            concurrency: 4,
            on_part_sent: None,
        }
    }
}

impl std::fmt::Debug for MultipartOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MultipartOptions")
            .field("part_size", &self.part_size)
            .field("concurrency", &self.concurrency)
            .field("on_part_sent", &self.on_part_sent.is_some())
            .finish()
    }
}

impl MultipartOptions {
    /// The part size for `total` bytes: the chosen one, or more if that would need more than
    /// the server's 10,000 parts.
    fn part_size_for(&self, total: u64) -> u64 {
        self.part_size.max(1).max(total.div_ceil(MAX_PARTS))
    }

    fn report(&self, part: &UploadPart) {
        if let Some(on_part_sent) = &self.on_part_sent {
            on_part_sent(part.part_number, part.size);
        }
    }
}

/// The hex MD5 of `bytes`, quoted as an ETag.
fn etag_of(bytes: &[u8]) -> String {
    format!("\"{}\"", hex(&Md5::digest(bytes)))
}

/// The routes of a multipart upload, and the helpers built on them.
impl Client {
    /// Starts a multipart upload of `key`, stored with the content headers and metadata of
    /// `options` once completed (`POST /buckets/{bucket}/uploads`).
    ///
    /// # Errors
    ///
    /// Returns [`Error::InvalidKey`] before sending, [`Error::Api`] with `bucket_not_found`,
    /// `invalid_object_key` or `content_type_not_allowed`.
    pub async fn create_upload(
        &self,
        bucket: &str,
        key: &str,
        options: &PutOptions,
    ) -> Result<Upload, Error> {
        super::check_key(key)?;
        let url = self.storage_url(&["buckets", bucket, "uploads"])?;
        let body = CreateUpload {
            key: key.to_owned(),
            content_type: options.content_type.clone(),
            cache_control: options.cache_control.clone(),
            content_disposition: options.content_disposition.clone(),
            metadata: options.metadata.clone(),
        };
        self.send_json(self.request(Method::POST, url).json(&body))
            .await
    }

    /// Uploads one part (`PUT .../uploads/{upload}/parts/{part}`), with its `Content-MD5`.
    /// Uploading a part number again replaces that part. Retried like any PUT.
    ///
    /// # Errors
    ///
    /// Returns [`Error::Api`] with `upload_not_found`, `invalid_part`, `object_too_large`,
    /// `checksum_mismatch` or `quota_exceeded`.
    pub async fn upload_part(
        &self,
        bucket: &str,
        upload_id: &str,
        part_number: u32,
        bytes: Bytes,
    ) -> Result<UploadPart, Error> {
        let number = part_number.to_string();
        let url = self.storage_url(&["buckets", bucket, "uploads", upload_id, "parts", &number])?;
        let md5 = STANDARD.encode(Md5::digest(&bytes));
        let request = self
            .request(Method::PUT, url)
            .header("content-md5", md5)
            .body(bytes);
        self.send_json(request).await
    }

    /// Lists the parts the server holds for an upload, by number: where a resumed upload
    /// starts from (`GET .../uploads/{upload}/parts`).
    ///
    /// # Errors
    ///
    /// Returns [`Error::Api`] with `upload_not_found`.
    pub async fn list_parts(
        &self,
        bucket: &str,
        upload_id: &str,
    ) -> Result<Vec<UploadPart>, Error> {
        let url = self.storage_url(&["buckets", bucket, "uploads", upload_id, "parts"])?;
        self.send_json(self.request(Method::GET, url)).await
    }

    /// Completes an upload from `parts`, in ascending order (`POST .../complete`). Of
    /// `options`, only the conditions apply (`if_none_match_any`, `if_match`).
    ///
    /// # Errors
    ///
    /// Returns [`Error::Api`] with `upload_not_found`, `invalid_part` (a part missing, of
    /// another ETag, or under the minimum size), `precondition_failed` or `quota_exceeded`.
    pub async fn complete_upload(
        &self,
        bucket: &str,
        upload_id: &str,
        parts: &[UploadPart],
        options: &PutOptions,
    ) -> Result<ObjectInfo, Error> {
        let url = self.storage_url(&["buckets", bucket, "uploads", upload_id, "complete"])?;
        let body = CompleteUpload {
            parts: parts
                .iter()
                .map(|part| CompletedPart {
                    part_number: part.part_number,
                    etag: part.etag.clone(),
                })
                .collect(),
        };
        let mut headers = HeaderMap::new();
        let all = options.headers()?;
        for name in [IF_MATCH, IF_NONE_MATCH] {
            if let Some(value) = all.get(&name) {
                headers.insert(name, value.clone());
            }
        }
        let request = self.request(Method::POST, url).headers(headers).json(&body);
        self.send_json(request).await
    }

    /// Abandons an upload and deletes its parts (`DELETE .../uploads/{upload}`).
    ///
    /// # Errors
    ///
    /// Returns [`Error::Api`] with `upload_not_found`.
    pub async fn abort_upload(&self, bucket: &str, upload_id: &str) -> Result<(), Error> {
        let url = self.storage_url(&["buckets", bucket, "uploads", upload_id])?;
        self.send_empty(self.request(Method::DELETE, url)).await
    }

    /// Uploads a file in parts, `multipart.concurrency` at a time, and completes the upload.
    ///
    /// If a part still fails after its retries, the upload is left in place and the error
    /// is [`Error::UploadInterrupted`], which names it: [`Client::resume_file_upload`] then
    /// sends only what the server lacks. An upload left alone expires on the server.
    ///
    /// # Errors
    ///
    /// Returns [`Error::Io`] when the file cannot be read, the errors of
    /// [`Client::create_upload`] before any part is sent, and [`Error::UploadInterrupted`]
    /// afterwards.
    pub async fn put_file_multipart(
        &self,
        bucket: &str,
        key: &str,
        path: impl AsRef<Path>,
        options: &PutOptions,
        multipart: &MultipartOptions,
    ) -> Result<ObjectInfo, Error> {
        let path = path.as_ref();
        // Checked before the upload exists, so a missing file leaves nothing behind.
        tokio::fs::metadata(path).await.map_err(Error::Io)?;
        let upload = self.create_upload(bucket, key, options).await?;
        self.resume_file_upload(bucket, &upload.upload_id, path, options, multipart)
            .await
    }

    /// Sends the parts of a file that an upload lacks, or holds with other bytes, and
    /// completes it. `multipart` must cut the file as the first attempt did (same part
    /// size), or every part is sent again.
    ///
    /// # Errors
    ///
    /// Returns [`Error::UploadInterrupted`], naming the upload, for any failure once the
    /// upload is known to exist, so that it can be resumed again.
    pub async fn resume_file_upload(
        &self,
        bucket: &str,
        upload_id: &str,
        path: impl AsRef<Path>,
        options: &PutOptions,
        multipart: &MultipartOptions,
    ) -> Result<ObjectInfo, Error> {
        let interrupted = |source| Error::UploadInterrupted {
            upload_id: upload_id.to_owned(),
            source: Box::new(source),
        };
        let path = path.as_ref();
        let total = tokio::fs::metadata(path).await.map_err(Error::Io)?.len();
        let held = self
            .list_parts(bucket, upload_id)
            .await
            .map_err(interrupted)?;
        let part_size = multipart.part_size_for(total);
        // At most 10,000 parts, by the choice of their size.
        let count = u32::try_from(total.div_ceil(part_size).max(1)).unwrap_or(u32::MAX);

        let parts: Vec<UploadPart> = futures::stream::iter(1..=count)
            .map(|number| {
                let held = held.iter().find(|part| part.part_number == number);
                async move {
                    let offset = u64::from(number - 1) * part_size;
                    let len = part_size.min(total - offset);
                    let bytes = read_part(path, offset, len).await?;
                    if let Some(held) = held
                        && held.size == len
                        && held.etag == etag_of(&bytes)
                    {
                        return Ok(held.clone());
                    }
                    let part = self.upload_part(bucket, upload_id, number, bytes).await?;
                    multipart.report(&part);
                    Ok::<_, Error>(part)
                }
            })
            .buffered(multipart.concurrency.max(1))
            .try_collect()
            .await
            .map_err(interrupted)?;

        self.complete_upload(bucket, upload_id, &parts, options)
            .await
            .map_err(interrupted)
    }

    /// Uploads from a reader in parts, read one after another and sent
    /// `multipart.concurrency` at a time, and completes the upload. A reader cannot be
    /// read twice, so this upload cannot be resumed: on failure it is aborted, and nothing
    /// is stored.
    ///
    /// # Errors
    ///
    /// Returns [`Error::Io`] when the reader fails, and the errors of the part and
    /// completion routes.
    pub async fn put_reader_multipart(
        &self,
        bucket: &str,
        key: &str,
        reader: impl AsyncRead + Send + Unpin,
        options: &PutOptions,
        multipart: &MultipartOptions,
    ) -> Result<ObjectInfo, Error> {
        let upload = self.create_upload(bucket, key, options).await?;
        let upload_id = upload.upload_id.as_str();
        // The length is unknown, so the part count is too: the size is kept as chosen.
        let part_size = multipart.part_size.max(1);
        let chunks =
            futures::stream::try_unfold((reader, 0u32), move |(mut reader, n)| async move {
                if u64::from(n) == MAX_PARTS {
                    // The server takes no part 10,001: a longer source fails before it.
                    let more = reader.read(&mut [0u8; 1]).await.map_err(Error::Io)?;
                    if more > 0 {
                        return Err(Error::Io(std::io::Error::other(format!(
                            "the source is longer than {MAX_PARTS} parts of {part_size} bytes"
                        ))));
                    }
                    return Ok(None);
                }
                let mut bytes =
                    Vec::with_capacity(usize::try_from(part_size).unwrap_or(usize::MAX));
                (&mut reader)
                    .take(part_size)
                    .read_to_end(&mut bytes)
                    .await
                    .map_err(Error::Io)?;
                // An empty source still makes one (empty) part; a later empty read is the end.
                if bytes.is_empty() && n > 0 {
                    return Ok(None);
                }
                Ok(Some(((n + 1, Bytes::from(bytes)), (reader, n + 1))))
            });
        let sent: Result<Vec<UploadPart>, Error> = chunks
            .map_ok(|(number, bytes)| async move {
                let part = self.upload_part(bucket, upload_id, number, bytes).await?;
                multipart.report(&part);
                Ok(part)
            })
            .try_buffered(multipart.concurrency.max(1))
            .try_collect()
            .await;
        let result = match sent {
            Ok(parts) => {
                self.complete_upload(bucket, upload_id, &parts, options)
                    .await
            }
            Err(err) => Err(err),
        };
        if result.is_err() {
            // Best effort: an upload left behind expires on the server anyway.
            let _ = self.abort_upload(bucket, upload_id).await;
        }
        result
    }
}

/// Reads `len` bytes of a file at `offset`.
async fn read_part(path: &Path, offset: u64, len: u64) -> Result<Bytes, Error> {
    let mut file = tokio::fs::File::open(path).await.map_err(Error::Io)?;
    file.seek(SeekFrom::Start(offset))
        .await
        .map_err(Error::Io)?;
    let mut bytes = Vec::with_capacity(
        usize::try_from(len)
            .map_err(|_| Error::Io(std::io::Error::other("a part does not fit in memory")))?,
    );
    file.take(len)
        .read_to_end(&mut bytes)
        .await
        .map_err(Error::Io)?;
    if bytes.len() as u64 != len {
        return Err(Error::Io(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "the file shrank while it was uploaded",
        )));
    }
    Ok(Bytes::from(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_grow_to_stay_within_ten_thousand() {
        let options = MultipartOptions {
            part_size: 5 << 20,
            ..MultipartOptions::default()
        };
        assert_eq!(options.part_size_for(12 << 20), 5 << 20);
        let huge = 100_000 * (5u64 << 20);
        let size = options.part_size_for(huge);
        assert!(huge.div_ceil(size) <= MAX_PARTS);
        assert!(size > 5 << 20);
    }

    #[test]
    fn etags_are_quoted_hex_md5() {
        assert_eq!(etag_of(b""), "\"d41d8cd98f00b204e9800998ecf8427e\"");
    }
}
