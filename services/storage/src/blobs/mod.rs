//! Where object bytes live: files in a directory ([`FileBlobs`], the default) or an S3
//! bucket ([`S3Blobs`]). The service above cannot tell which: [`Blobs`] answers the same
//! calls on both, and the same tests run on both.
//!
//! On either, a blob is written in full and made durable (synced to disk, or acknowledged by
//! S3) before the metadata row that names it commits, and is never changed afterwards.

mod file;
mod s3;

use std::io;

use axum::body::Bytes;
use futures::stream::BoxStream;
use futures::{Stream, StreamExt};
use plinth_shared::http::FileRegion;

pub use self::file::FileBlobs;
pub use self::s3::{S3Blobs, S3Settings};

/// A blob as written: its id and what was learnt while writing it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Written {
    /// The server-assigned id the object row will name.
    pub blob_id: String,
    /// Bytes written.
    pub size: u64,
    /// MD5 of the bytes (the single-part ETag).
    pub md5: [u8; 16],
    /// SHA-256 of the bytes.
    pub sha256: [u8; 32],
}

/// Why a write did not produce a blob. Nothing is left behind in any case.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("the body is larger than {limit} bytes")]
    TooLarge { limit: u64 },
    #[error("the request body failed: {0}")]
    Body(#[source] axum::Error),
    #[error("blob store: {0}")]
    Io(#[from] io::Error),
}

/// The blob store a deployment uses.
#[derive(Clone, Debug)]
pub enum Blobs {
    /// Files in a directory.
    File(FileBlobs),
    /// An S3 bucket.
    S3(S3Blobs),
}

impl Blobs {
    /// Streams `body` into a new blob of at most `limit` bytes and makes it durable.
    ///
    /// # Errors
    ///
    /// Returns `TooLarge`, `Body` or `Io`; nothing is left behind in any case.
    pub async fn write<S>(&self, body: S, limit: u64) -> Result<Written, WriteError>
    where
        S: Stream<Item = Result<Bytes, axum::Error>> + Send,
    {
        match self {
            Blobs::File(blobs) => blobs.write(body, limit).await,
            Blobs::S3(blobs) => blobs.write(body, limit).await,
        }
    }

    /// Opens `len` bytes of a blob from `offset` to serve them: their stream and, where the
    /// blob is a local file, the file region a response can hand to the socket instead.
    ///
    /// # Errors
    ///
    /// Returns the I/O error, `NotFound` when the blob is gone.
    pub async fn open_region(
        &self,
        blob_id: &str,
        offset: u64,
        len: u64,
    ) -> io::Result<(BoxStream<'static, io::Result<Bytes>>, Option<FileRegion>)> {
        match self {
            Blobs::File(blobs) => {
                let (file, stream) = blobs.open_region(blob_id, offset, len)?;
                let region = FileRegion { file, offset, len };
                Ok((stream.boxed(), Some(region)))
            }
            Blobs::S3(blobs) => Ok((blobs.read(blob_id, offset, len).await?, None)),
        }
    }

    /// Deletes a blob; one already gone is not an error.
    ///
    /// # Errors
    ///
    /// Returns any other failure.
    pub async fn delete(&self, blob_id: &str) -> io::Result<()> {
        match self {
            Blobs::File(blobs) => blobs.delete(blob_id).await,
            Blobs::S3(blobs) => blobs.delete(blob_id).await,
        }
    }

    /// Makes a new blob with the bytes of `source`.
    ///
    /// # Errors
    ///
    /// Returns the failure, `NotFound` when the source is gone.
    pub async fn copy(&self, source: &str) -> io::Result<String> {
        match self {
            Blobs::File(blobs) => blobs.copy(source).await,
            Blobs::S3(blobs) => blobs.copy(source).await,
        }
    }

    /// Writes a new blob with the bytes of `parts` in order.
    ///
    /// # Errors
    ///
    /// Returns the failure; nothing is left behind.
    pub async fn concat(&self, parts: &[String]) -> io::Result<Written> {
        match self {
            Blobs::File(blobs) => blobs.concat(parts).await,
            Blobs::S3(blobs) => blobs.concat(parts).await,
        }
    }

    /// Removes what interrupted writes left behind (see [`FileBlobs::collect_orphans`]).
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
        match self {
            Blobs::File(blobs) => blobs.collect_orphans(is_named).await,
            Blobs::S3(blobs) => blobs.collect_orphans(is_named).await,
        }
    }

    /// Counts the blobs present, unfinished writes included: for tests and repair.
    ///
    /// # Errors
    ///
    /// Returns the failure.
    pub async fn count(&self) -> io::Result<usize> {
        match self {
            Blobs::File(blobs) => blobs.count().await,
            Blobs::S3(blobs) => blobs.count().await,
        }
    }
}
