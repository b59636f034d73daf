//! Object bytes in an S3 bucket (AWS S3, MinIO, Ceph, SeaweedFS, Garage) through
//! aws-sdk-s3.
//!
//! A blob is the S3 object `<prefix>blobs/<blob id>`. Small bodies go up in one PutObject;
//! larger ones in a multipart upload of fixed-size parts, so memory stays at one part per
//! upload whatever the object's size. S3's 200 is the durable acknowledgement.

use std::io;

use aws_sdk_s3::Client;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use axum::body::Bytes;
use futures::stream::BoxStream;
use futures::{Stream, StreamExt, TryStreamExt};
use md5::{Digest, Md5};
use plinth_shared::ids::new_id;
use tokio_util::io::ReaderStream;

use super::{WriteError, Written};

/// Size of the parts a large blob is uploaded in (S3's minimum is 5 MiB).
const PART_BYTES: usize = 8 * 1024 * 1024;

/// How to reach the bucket.
#[derive(Clone, Debug, Default)]
pub struct S3Settings {
    /// The bucket.
    pub bucket: String,
    /// Key prefix, empty or ending in `/`.
    pub prefix: String,
    /// Endpoint URL; AWS when absent.
    pub endpoint: Option<String>,
    /// Region.
    pub region: String,
    /// Path-style addressing.
    pub path_style: bool,
    /// Static credentials; the AWS default chain when absent.
    pub credentials: Option<(String, String)>,
}

/// Object bytes in an S3 bucket.
#[derive(Clone, Debug)]
pub struct S3Blobs {
    client: Client,
    bucket: String,
    prefix: String,
}

fn s3_error(err: impl std::error::Error + Send + Sync + 'static) -> io::Error {
    io::Error::other(aws_sdk_s3::error::DisplayErrorContext(err).to_string())
}

impl S3Blobs {
    /// Connects to the bucket and checks that it answers.
    ///
    /// # Errors
    ///
    /// Returns an error when the bucket cannot be reached.
    pub async fn open(settings: S3Settings) -> io::Result<S3Blobs> {
        let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .region(aws_config::Region::new(settings.region.clone()));
        if let Some((id, secret)) = &settings.credentials {
            let credentials =
                aws_sdk_s3::config::Credentials::new(id, secret, None, None, "plinth");
            loader = loader.credentials_provider(credentials);
        }
        let shared = loader.load().await;
        let mut config =
            aws_sdk_s3::config::Builder::from(&shared).force_path_style(settings.path_style);
        if let Some(endpoint) = &settings.endpoint {
            config = config.endpoint_url(endpoint);
        }
        let client = Client::from_conf(config.build());
        client
            .head_bucket()
            .bucket(&settings.bucket)
            .send()
            .await
            .map_err(s3_error)?;
        Ok(S3Blobs {
            client,
            bucket: settings.bucket,
            prefix: settings.prefix,
        })
    }

    fn key_of(&self, blob_id: &str) -> String {
        format!("{}blobs/{blob_id}", self.prefix)
    }

    /// Streams `body` into a new blob of at most `limit` bytes.
    ///
    /// # Errors
    ///
    /// Returns `TooLarge`, `Body` or `Io`; an unfinished multipart upload is aborted.
    pub async fn write<S>(&self, body: S, limit: u64) -> Result<Written, WriteError>
    where
        S: Stream<Item = Result<Bytes, axum::Error>> + Send,
    {
        let blob_id = new_id("blob");
        let key = self.key_of(&blob_id);
        let mut md5 = Md5::new();
        let mut sha256 = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
        let mut size = 0u64;
        let mut buffer: Vec<u8> = Vec::with_capacity(PART_BYTES.min(1 << 20));
        let mut upload: Option<(String, Vec<CompletedPart>)> = None;
        let mut body = std::pin::pin!(body);

        let result: Result<(), WriteError> = async {
            while let Some(chunk) = body.next().await {
                let chunk = chunk.map_err(WriteError::Body)?;
                size += chunk.len() as u64;
                if size > limit {
                    return Err(WriteError::TooLarge { limit });
                }
                md5.update(&chunk);
                sha256.update(&chunk);
                buffer.extend_from_slice(&chunk);
                if buffer.len() >= PART_BYTES {
                    let part = std::mem::replace(&mut buffer, Vec::with_capacity(PART_BYTES));
                    self.upload_part(&key, &mut upload, part).await?;
                }
            }
            match &mut upload {
                None => {
                    self.client
                        .put_object()
                        .bucket(&self.bucket)
                        .key(&key)
                        .body(ByteStream::from(std::mem::take(&mut buffer)))
                        .send()
                        .await
                        .map_err(|err| WriteError::Io(s3_error(err)))?;
                }
                Some(_) => {
                    if !buffer.is_empty() {
                        let part = std::mem::take(&mut buffer);
                        self.upload_part(&key, &mut upload, part).await?;
                    }
                    let (upload_id, parts) = upload.take().unwrap_or_default();
                    self.client
                        .complete_multipart_upload()
                        .bucket(&self.bucket)
                        .key(&key)
                        .upload_id(&upload_id)
                        .multipart_upload(
                            CompletedMultipartUpload::builder()
                                .set_parts(Some(parts))
                                .build(),
                        )
                        .send()
                        .await
                        .map_err(|err| WriteError::Io(s3_error(err)))?;
                }
            }
            Ok(())
        }
        .await;

        if let Err(err) = result {
            if let Some((upload_id, _)) = upload {
                let _ = self
                    .client
                    .abort_multipart_upload()
                    .bucket(&self.bucket)
                    .key(&key)
                    .upload_id(upload_id)
                    .send()
                    .await;
            }
            return Err(err);
        }
        let sha256: [u8; 32] = sha256.finish().as_ref().try_into().unwrap_or([0; 32]);
        Ok(Written {
            blob_id,
            size,
            md5: md5.finalize().into(),
            sha256,
        })
    }

    async fn upload_part(
        &self,
        key: &str,
        upload: &mut Option<(String, Vec<CompletedPart>)>,
        part: Vec<u8>,
    ) -> Result<(), WriteError> {
        if upload.is_none() {
            let created = self
                .client
                .create_multipart_upload()
                .bucket(&self.bucket)
                .key(key)
                .send()
                .await
                .map_err(|err| WriteError::Io(s3_error(err)))?;
            let id = created.upload_id().unwrap_or_default().to_owned();
            *upload = Some((id, Vec::new()));
        }
        let Some((upload_id, parts)) = upload.as_mut() else {
            return Ok(());
        };
        let number = parts.len() as i32 + 1;
        let uploaded = self
            .client
            .upload_part()
            .bucket(&self.bucket)
            .key(key)
            .upload_id(upload_id.as_str())
            .part_number(number)
            .body(ByteStream::from(part))
            .send()
            .await
            .map_err(|err| WriteError::Io(s3_error(err)))?;
        parts.push(
            CompletedPart::builder()
                .part_number(number)
                .set_e_tag(uploaded.e_tag().map(str::to_owned))
                .build(),
        );
        Ok(())
    }

    /// Streams `len` bytes of a blob from `offset`, as a ranged GET.
    ///
    /// # Errors
    ///
    /// Returns `NotFound` when the blob is gone, another error when S3 fails.
    pub async fn read(
        &self,
        blob_id: &str,
        offset: u64,
        len: u64,
    ) -> io::Result<BoxStream<'static, io::Result<Bytes>>> {
        if len == 0 {
            return Ok(futures::stream::empty().boxed());
        }
        let range = format!("bytes={offset}-{}", offset + len - 1);
        let object = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(self.key_of(blob_id))
            .range(range)
            .send()
            .await
            .map_err(|err| {
                if err.as_service_error().is_some_and(|e| e.is_no_such_key()) {
                    io::Error::new(io::ErrorKind::NotFound, "blob not found")
                } else {
                    s3_error(err)
                }
            })?;
        let reader = object.body.into_async_read();
        Ok(ReaderStream::with_capacity(reader, super::file::READ_CHUNK)
            .map_err(io::Error::other)
            .boxed())
    }

    /// Deletes a blob; S3 answers the same whether it existed.
    ///
    /// # Errors
    ///
    /// Returns the failure.
    pub async fn delete(&self, blob_id: &str) -> io::Result<()> {
        self.client
            .delete_object()
            .bucket(&self.bucket)
            .key(self.key_of(blob_id))
            .send()
            .await
            .map_err(s3_error)?;
        Ok(())
    }

    /// Copies a blob server-side (CopyObject).
    ///
    /// # Errors
    ///
    /// Returns the failure.
    pub async fn copy(&self, source: &str) -> io::Result<String> {
        let blob_id = new_id("blob");
        self.client
            .copy_object()
            .bucket(&self.bucket)
            .key(self.key_of(&blob_id))
            .copy_source(format!("{}/{}", self.bucket, self.key_of(source)))
            .send()
            .await
            .map_err(s3_error)?;
        Ok(blob_id)
    }

    /// Writes a new blob with the bytes of `parts` in order, streaming them through; this
    /// works whatever the parts' sizes, which UploadPartCopy (5 MiB at least) would not.
    ///
    /// # Errors
    ///
    /// Returns the failure.
    pub async fn concat(&self, parts: &[String]) -> io::Result<Written> {
        // Owned pieces and a boxed stream: the body must not borrow from this call.
        let sources: Vec<(Client, String, String)> = parts
            .iter()
            .map(|part| (self.client.clone(), self.bucket.clone(), self.key_of(part)))
            .collect();
        let body = futures::stream::iter(sources)
            .then(|(client, bucket, key)| async move {
                let object = client
                    .get_object()
                    .bucket(bucket)
                    .key(key)
                    .send()
                    .await
                    .map_err(s3_error)?;
                let reader = object.body.into_async_read();
                Ok::<_, io::Error>(ReaderStream::with_capacity(reader, super::file::READ_CHUNK))
            })
            .try_flatten()
            .map_err(axum::Error::new)
            .boxed();
        self.write(body, u64::MAX).await.map_err(|err| match err {
            WriteError::Io(err) => err,
            other => io::Error::other(other.to_string()),
        })
    }

    async fn keys(&self) -> io::Result<Vec<String>> {
        let prefix = format!("{}blobs/", self.prefix);
        let mut keys = Vec::new();
        let mut pages = self
            .client
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(&prefix)
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(s3_error)?;
            keys.extend(
                page.contents()
                    .iter()
                    .filter_map(|o| o.key().map(str::to_owned)),
            );
        }
        Ok(keys)
    }

    /// Aborts unfinished multipart uploads under the prefix and deletes blobs no row names.
    /// Run it before serving, when no write is in flight.
    ///
    /// # Errors
    ///
    /// Returns the first failure.
    pub async fn collect_orphans<F, Fut, E>(&self, is_named: F) -> Result<usize, E>
    where
        F: Fn(String) -> Fut,
        Fut: std::future::Future<Output = Result<bool, E>>,
        E: From<io::Error>,
    {
        let mut removed = 0;
        let prefix = format!("{}blobs/", self.prefix);
        let uploads = self
            .client
            .list_multipart_uploads()
            .bucket(&self.bucket)
            .prefix(&prefix)
            .send()
            .await
            .map_err(s3_error)?;
        for upload in uploads.uploads() {
            if let (Some(key), Some(id)) = (upload.key(), upload.upload_id()) {
                self.client
                    .abort_multipart_upload()
                    .bucket(&self.bucket)
                    .key(key)
                    .upload_id(id)
                    .send()
                    .await
                    .map_err(s3_error)?;
                removed += 1;
            }
        }
        for key in self.keys().await? {
            let Some(blob_id) = key.strip_prefix(&prefix) else {
                continue;
            };
            if !is_named(blob_id.to_owned()).await? {
                self.delete(blob_id).await?;
                removed += 1;
            }
        }
        Ok(removed)
    }

    /// Counts the blobs under the prefix.
    ///
    /// # Errors
    ///
    /// Returns the failure.
    pub async fn count(&self) -> io::Result<usize> {
        Ok(self.keys().await?.len())
    }
}
