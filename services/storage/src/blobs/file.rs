//! The embedded blob store: object bytes as files under one directory.
//!
//! Blob files are named by the server (`<root>/<fan-out>/<blob id>`), never by the user's key,
//! so no key can reach outside the directory. A write goes to `<root>/tmp/`, is hashed on the
//! way, synced, renamed into place, and the directory synced, all before the metadata row
//! that makes it visible commits; so a crash leaves either nothing visible or the whole blob.

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::body::Bytes;
use futures::{Stream, StreamExt, TryStreamExt};
use md5::{Digest, Md5};
use plinth_shared::ids::new_id;
use tokio::fs::{self, File};
use tokio_util::io::ReaderStream;

use super::{WriteError, Written};

/// Size of the chunks copies and the S3 store stream out. Each chunk is one read on tokio's
/// blocking pool, so bigger chunks mean fewer round trips to it; 256 KiB keeps 64 concurrent
/// transfers within 16 MiB of buffers.
pub(crate) const READ_CHUNK: usize = 256 * 1024;

/// Size of the chunks a GET of a blob file streams out. The first one is read by the same
/// trip to the blocking pool that opens the file, so an object of up to this size costs one
/// trip in all; that is worth a larger buffer than [`READ_CHUNK`], since most reads are of
/// small objects. 64 concurrent downloads hold at most 64 MiB.
const FILE_CHUNK: usize = 1 << 20;

/// About how many bytes of an upload are gathered before they are written out.
const WRITE_BATCH: usize = 1 << 20;

/// Object bytes in a directory.
#[derive(Clone, Debug)]
pub struct FileBlobs {
    root: PathBuf,
    syncs: Arc<DirSyncs>,
}

/// Group commit of directory syncs: a rename is durable once its directory is synced, and
/// one sync covers every rename made before it began. Concurrent writers into a directory
/// therefore wait for one shared sync instead of queueing one each.
#[derive(Debug, Default)]
struct DirSyncs {
    dirs: std::sync::Mutex<HashMap<PathBuf, Arc<DirSync>>>,
    /// Directory syncs actually performed, for tests.
    performed: AtomicU64,
}

#[derive(Debug, Default)]
struct DirSync {
    /// Renames announced so far.
    requested: AtomicU64,
    /// Renames covered by a completed sync.
    synced: AtomicU64,
    /// One sync at a time per directory. Waiters are threads of the blocking pool.
    running: std::sync::Mutex<()>,
}

impl DirSyncs {
    /// Makes the renames done so far in `dir` durable, sharing the sync with concurrent
    /// callers.
    async fn sync(self: &Arc<Self>, dir: &Path) -> io::Result<()> {
        let (syncs, dir) = (self.clone(), dir.to_owned());
        blocking(move || syncs.sync_blocking(&dir)).await
    }

    /// [`DirSyncs::sync`] on the calling thread, which must be one that may block.
    fn sync_blocking(&self, dir: &Path) -> io::Result<()> {
        let entry = {
            let mut dirs = self
                .dirs
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            dirs.entry(dir.to_owned()).or_default().clone()
        };
        // This caller's rename happened before this point, so a sync that starts after it
        // (one that reads `requested` at or above `mine`) covers it.
        let mine = entry.requested.fetch_add(1, Ordering::AcqRel) + 1;
        let _running = entry
            .running
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if entry.synced.load(Ordering::Acquire) >= mine {
            return Ok(());
        }
        let covers = entry.requested.load(Ordering::Acquire);
        std::fs::File::open(dir)?.sync_all()?;
        self.performed.fetch_add(1, Ordering::Relaxed);
        entry.synced.fetch_max(covers, Ordering::AcqRel);
        Ok(())
    }
}

impl FileBlobs {
    /// Opens (and creates) the blob directory.
    ///
    /// # Errors
    ///
    /// Returns the I/O error when the directory cannot be created.
    pub async fn open(root: impl Into<PathBuf>) -> io::Result<FileBlobs> {
        let root = root.into();
        // Every directory a blob can go to exists, and its entry is durable, before the
        // first write: a blob synced into a directory the root does not durably list could
        // be lost with it.
        let dirs = root.clone();
        blocking(move || {
            std::fs::create_dir_all(dirs.join("tmp"))?;
            for fan_out in 0..=255u8 {
                std::fs::create_dir_all(dirs.join(format!("{fan_out:02x}")))?;
            }
            std::fs::File::open(&dirs)?.sync_all()
        })
        .await?;
        Ok(FileBlobs {
            root,
            syncs: Arc::default(),
        })
    }

    fn path_of(&self, blob_id: &str) -> PathBuf {
        self.root.join(fan_out(blob_id)).join(blob_id)
    }

    /// Streams `body` into a new blob of at most `limit` bytes and makes it durable.
    ///
    /// # Errors
    ///
    /// Returns `TooLarge` as soon as the body passes `limit`, `Body` when the client's body
    /// fails, `Io` when the disk does; the partial file is removed in every case.
    pub async fn write<S>(&self, body: S, limit: u64) -> Result<Written, WriteError>
    where
        S: Stream<Item = Result<Bytes, axum::Error>> + Send,
    {
        let blob_id = new_id("blob");
        let temp = self.root.join("tmp").join(format!("{blob_id}.part"));
        let result = self.write_to(&temp, &blob_id, body, limit).await;
        if result.is_err() {
            let _ = fs::remove_file(&temp).await;
        }
        result
    }

    async fn write_to<S>(
        &self,
        temp: &Path,
        blob_id: &str,
        body: S,
        limit: u64,
    ) -> Result<Written, WriteError>
    where
        S: Stream<Item = Result<Bytes, axum::Error>> + Send,
    {
        let mut md5 = Md5::new();
        let mut sha256 = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
        let mut size = 0u64;
        // The body is gathered into batches of about WRITE_BATCH bytes; each batch is written
        // by one trip to the blocking pool while the next one arrives, and the last trip also
        // syncs and renames. A small object thus costs one trip, plus the shared directory
        // sync.
        let mut batch = Vec::new();
        let mut batched = 0;
        let mut writing: Option<tokio::task::JoinHandle<io::Result<std::fs::File>>> = None;
        let mut body = std::pin::pin!(body);
        let received = loop {
            let chunk = match body.next().await {
                None => break Ok(()),
                Some(Err(err)) => break Err(WriteError::Body(err)),
                Some(Ok(chunk)) => chunk,
            };
            size += chunk.len() as u64;
            if size > limit {
                break Err(WriteError::TooLarge { limit });
            }
            md5.update(&chunk);
            sha256.update(&chunk);
            batched += chunk.len();
            batch.push(chunk);
            if batched >= WRITE_BATCH {
                let file = match writing.take() {
                    Some(handle) => Some(joined(handle).await?),
                    None => None,
                };
                let (temp, chunks) = (temp.to_owned(), std::mem::take(&mut batch));
                batched = 0;
                writing = Some(tokio::task::spawn_blocking(move || {
                    append(file, &temp, &chunks)
                }));
            }
        };
        // A write still in flight must end before the caller removes the temporary file.
        let file = match writing {
            Some(handle) => Some(joined(handle).await?),
            None => None,
        };
        received?;

        let path = self.path_of(blob_id);
        let dir = path.parent().unwrap_or(&self.root).to_owned();
        let (temp, syncs) = (temp.to_owned(), self.syncs.clone());
        blocking(move || {
            let file = append(file, &temp, &batch)?;
            // The file's own data must reach the disk; the directory's sync is shared.
            file.sync_data()?;
            drop(file);
            // `open` made every blob directory, so the rename needs none made here.
            std::fs::rename(&temp, &path)?;
            syncs.sync_blocking(&dir)
        })
        .await?;
        let sha256: [u8; 32] = sha256.finish().as_ref().try_into().unwrap_or([0; 32]);
        Ok(Written {
            blob_id: blob_id.to_owned(),
            size,
            md5: md5.finalize().into(),
            sha256,
        })
    }

    /// Opens a blob to serve `len` bytes of it from `offset`: the open file, whose region a
    /// response can hand to the socket as it is, and a stream of the same bytes, read as it
    /// is polled, for a response that cannot.
    ///
    /// The file is opened on the caller's thread, not the blocking pool: an open is a lookup
    /// of a directory entry that is nearly always cached, and the region's bytes are then
    /// sent from the connection's task as well (see `plinth_shared::http::FileRegion`).
    ///
    /// # Errors
    ///
    /// Returns the I/O error, `NotFound` when the blob is gone.
    pub fn open_region(
        &self,
        blob_id: &str,
        offset: u64,
        len: u64,
    ) -> io::Result<(
        Arc<std::fs::File>,
        impl Stream<Item = io::Result<Bytes>> + Send + 'static,
    )> {
        let file = Arc::new(std::fs::File::open(self.path_of(blob_id))?);
        Ok((file.clone(), chunks(file, offset, len)))
    }

    /// Deletes a blob; a blob already gone is not an error.
    ///
    /// # Errors
    ///
    /// Returns any other I/O error.
    pub async fn delete(&self, blob_id: &str) -> io::Result<()> {
        match fs::remove_file(self.path_of(blob_id)).await {
            Err(err) if err.kind() != io::ErrorKind::NotFound => Err(err),
            _ => Ok(()),
        }
    }

    /// Writes a new blob with the bytes of `parts`, one after the other, and makes it durable:
    /// the body of a completed multipart upload.
    ///
    /// # Errors
    ///
    /// Returns the I/O error, `NotFound` when a part is gone; nothing is left behind.
    pub async fn concat(&self, parts: &[String]) -> io::Result<Written> {
        let mut sources = Vec::with_capacity(parts.len());
        for part in parts {
            sources.push(self.path_of(part));
        }
        let chunks = futures::stream::iter(sources).then(|path| async move {
            let file = File::open(path).await?;
            Ok::<_, io::Error>(ReaderStream::with_capacity(file, READ_CHUNK))
        });
        let body = chunks.try_flatten().map_err(axum::Error::new).boxed();
        self.write(body, u64::MAX).await.map_err(|err| match err {
            WriteError::Io(err) => err,
            other => io::Error::other(other.to_string()),
        })
    }

    /// Makes a new blob with the bytes of `source`: a hard link where the file system allows
    /// (blobs are never modified, so sharing the inode is safe), a synced copy otherwise.
    ///
    /// # Errors
    ///
    /// Returns the I/O error, `NotFound` when the source is gone.
    pub async fn copy(&self, source: &str) -> io::Result<String> {
        let blob_id = new_id("blob");
        let from = self.path_of(source);
        let to = self.path_of(&blob_id);
        let dir = to.parent().unwrap_or(&self.root).to_owned();
        if fs::hard_link(&from, &to).await.is_err() {
            let temp = self.root.join("tmp").join(format!("{blob_id}.part"));
            let copied = async {
                fs::copy(&from, &temp).await?;
                File::open(&temp).await?.sync_all().await?;
                fs::rename(&temp, &to).await
            };
            if let Err(err) = copied.await {
                let _ = fs::remove_file(&temp).await;
                return Err(err);
            }
        }
        self.syncs.sync(&dir).await?;
        Ok(blob_id)
    }

    /// Removes what interrupted writes left behind: every temporary file, and every blob
    /// for which `is_named` says no metadata row refers to it; moves a named blob found
    /// outside the directory its id chooses (an older layout) into it. Run it before serving, when no
    /// write is in flight: a blob is written before the row that names it commits.
    ///
    /// # Errors
    ///
    /// Returns the first I/O error, or the first error of `is_named`.
    pub async fn collect_orphans<F, Fut, E>(&self, is_named: F) -> Result<usize, E>
    where
        F: Fn(String) -> Fut,
        Fut: std::future::Future<Output = Result<bool, E>>,
        E: From<io::Error>,
    {
        let (mut removed, mut moved) = (0, 0);
        let mut touched = std::collections::BTreeSet::new();
        let mut temps = fs::read_dir(self.root.join("tmp")).await?;
        while let Some(entry) = temps.next_entry().await? {
            fs::remove_file(entry.path()).await?;
            removed += 1;
        }
        let mut dirs = fs::read_dir(&self.root).await?;
        while let Some(dir) = dirs.next_entry().await? {
            if dir.file_name() == "tmp" || !dir.file_type().await?.is_dir() {
                continue;
            }
            let mut blobs = fs::read_dir(dir.path()).await?;
            while let Some(blob) = blobs.next_entry().await? {
                let Some(blob_id) = blob.file_name().to_str().map(str::to_owned) else {
                    continue;
                };
                if !is_named(blob_id.clone()).await? {
                    fs::remove_file(blob.path()).await?;
                    removed += 1;
                } else if dir.file_name().to_str() != Some(fan_out(&blob_id).as_str()) {
                    // Written by a build that chose directories by the id's last byte.
                    let target = self.path_of(&blob_id);
                    let target_dir = target.parent().unwrap_or(&self.root).to_owned();
                    fs::create_dir_all(&target_dir).await?;
                    fs::rename(blob.path(), &target).await?;
                    touched.insert(target_dir);
                    touched.insert(dir.path());
                    moved += 1;
                }
            }
        }
        // A crash before these syncs leaves some blobs where they were; the next start moves
        // them again.
        for dir in &touched {
            self.syncs.sync(dir).await?;
        }
        if moved > 0 {
            tracing::info!(moved, "blobs moved to the directories their ids choose");
        }
        Ok(removed)
    }

    /// Returns whether a blob exists, for tests and repair.
    pub async fn exists(&self, blob_id: &str) -> bool {
        fs::metadata(self.path_of(blob_id)).await.is_ok()
    }

    /// Counts blob files, temporary ones included.
    ///
    /// # Errors
    ///
    /// Returns the I/O error.
    pub async fn count(&self) -> io::Result<usize> {
        let mut count = 0;
        let mut dirs = fs::read_dir(&self.root).await?;
        while let Some(dir) = dirs.next_entry().await? {
            if dir.file_type().await?.is_dir() {
                let mut files = fs::read_dir(dir.path()).await?;
                while files.next_entry().await?.is_some() {
                    count += 1;
                }
            }
        }
        Ok(count)
    }
}

/// The directory a blob lives in: one of 256, picked by the second the id was made in
/// (ids begin with their creation time in milliseconds, as hex). Blobs written at the same
/// time share a directory, so concurrent writes share its sync; over time the 256 fill
/// evenly. An id without a time falls back to its last byte.
fn fan_out(blob_id: &str) -> String {
    let millis = blob_id
        .split_once('_')
        .and_then(|(_, rest)| rest.get(..12))
        .and_then(|hex| u64::from_str_radix(hex, 16).ok());
    match millis {
        Some(millis) => format!("{:02x}", (millis / 1000) % 256),
        None => blob_id[blob_id.len().saturating_sub(2)..].to_owned(),
    }
}

/// Appends `chunks` to the temporary file, creating it on the first call.
fn append(file: Option<std::fs::File>, temp: &Path, chunks: &[Bytes]) -> io::Result<std::fs::File> {
    use std::io::Write;
    let mut file = match file {
        Some(file) => file,
        None => std::fs::File::create(temp)?,
    };
    for chunk in chunks {
        file.write_all(chunk)?;
    }
    Ok(file)
}

/// Waits for a write on the blocking pool.
async fn joined(
    handle: tokio::task::JoinHandle<io::Result<std::fs::File>>,
) -> io::Result<std::fs::File> {
    handle.await.map_err(io::Error::other)?
}

/// Runs blocking file work on tokio's blocking pool.
async fn blocking<T, F>(work: F) -> io::Result<T>
where
    F: FnOnce() -> io::Result<T> + Send + 'static,
    T: Send + 'static,
{
    tokio::task::spawn_blocking(work)
        .await
        .map_err(io::Error::other)?
}

/// `len` bytes of `file` from `offset`, read on the blocking pool a chunk at a time as the
/// stream is polled.
fn chunks(
    file: Arc<std::fs::File>,
    offset: u64,
    len: u64,
) -> impl Stream<Item = io::Result<Bytes>> + Send + 'static {
    futures::stream::try_unfold((file, offset, len), |(file, at, left)| async move {
        if left == 0 {
            return Ok(None);
        }
        let want = left.min(FILE_CHUNK as u64);
        let reader = file.clone();
        let chunk = blocking(move || read_at(&reader, at, want)).await?;
        Ok(Some((chunk, (file, at + want, left - want))))
    })
}

/// Reads exactly `len` bytes at `offset`; a blob shorter than its row says is an error.
/// (`read_to_end` fills the buffer without zeroing it first, which a buffer handed to
/// `read_exact` would need.)
fn read_at(mut file: &std::fs::File, offset: u64, len: u64) -> io::Result<Bytes> {
    use std::io::{Read, Seek};
    file.seek(io::SeekFrom::Start(offset))?;
    let mut buf = Vec::with_capacity(usize::try_from(len).map_err(io::Error::other)?);
    file.take(len).read_to_end(&mut buf)?;
    if buf.len() as u64 != len {
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    Ok(Bytes::from(buf))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(chunks: &[&'static [u8]]) -> impl Stream<Item = Result<Bytes, axum::Error>> + Send {
        let chunks: Vec<_> = chunks.iter().map(|c| Ok(Bytes::from_static(c))).collect();
        futures::stream::iter(chunks)
    }

    async fn read_all(blobs: &FileBlobs, id: &str, offset: u64, len: u64) -> Vec<u8> {
        let (_, stream) = blobs.open_region(id, offset, len).unwrap();
        let chunks: Vec<Bytes> = stream.try_collect().await.unwrap();
        chunks.concat()
    }

    #[tokio::test]
    async fn a_blob_round_trips_with_its_hashes() {
        let dir = tempfile::tempdir().unwrap();
        let blobs = FileBlobs::open(dir.path()).await.unwrap();
        let written = blobs
            .write(body(&[b"hello ", b"world"]), 100)
            .await
            .unwrap();
        assert_eq!(written.size, 11);
        let md5_hex: String = written.md5.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(md5_hex, "5eb63bbbe01eeed093cb22bb8f5acdc3");
        assert_eq!(
            read_all(&blobs, &written.blob_id, 0, 11).await,
            b"hello world"
        );
        assert_eq!(read_all(&blobs, &written.blob_id, 6, 3).await, b"wor");
        blobs.delete(&written.blob_id).await.unwrap();
        assert!(!blobs.exists(&written.blob_id).await);
        blobs.delete(&written.blob_id).await.unwrap();
    }

    #[tokio::test]
    async fn blobs_of_the_old_layout_are_moved_where_their_ids_point() {
        let dir = tempfile::tempdir().unwrap();
        let blobs = FileBlobs::open(dir.path()).await.unwrap();
        let written = blobs.write(body(&[b"kept"]), 100).await.unwrap();
        let id = written.blob_id.clone();
        // Where a build that fanned out by the id's last byte put it.
        let legacy = dir.path().join(&id[id.len() - 2..]);
        std::fs::create_dir_all(&legacy).unwrap();
        std::fs::rename(blobs.path_of(&id), legacy.join(&id)).unwrap();
        if fan_out(&id) != id[id.len() - 2..] {
            assert!(!blobs.exists(&id).await);
        }

        let removed = blobs
            .collect_orphans(|_| async { Ok::<_, io::Error>(true) })
            .await
            .unwrap();
        assert_eq!(removed, 0);
        assert!(blobs.exists(&id).await);
        assert_eq!(read_all(&blobs, &id, 0, 4).await, b"kept");
        assert!(
            fan_out("blob_nothex") == "ex",
            "ids without a time keep their last byte"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_writes_share_directory_syncs() {
        let dir = tempfile::tempdir().unwrap();
        let blobs = FileBlobs::open(dir.path()).await.unwrap();
        let target = dir.path().join("shared");
        std::fs::create_dir_all(&target).unwrap();
        let calls: Vec<_> = (0..64)
            .map(|_| {
                let (blobs, target) = (blobs.clone(), target.clone());
                tokio::spawn(async move { blobs.syncs.sync(&target).await })
            })
            .collect();
        for call in futures::future::join_all(calls).await {
            call.unwrap().unwrap();
        }
        let performed = blobs.syncs.performed.load(Ordering::Relaxed);
        assert!((1..=64).contains(&performed));
        // Each caller is covered: a sync after the last announcement has happened.
        let entry = blobs.syncs.dirs.lock().unwrap()[&target].clone();
        assert_eq!(entry.synced.load(Ordering::Acquire), 64);
        eprintln!("64 concurrent directory syncs took {performed} fsyncs");
    }

    #[tokio::test]
    async fn an_oversize_body_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let blobs = FileBlobs::open(dir.path()).await.unwrap();
        let err = blobs
            .write(body(&[b"12345", b"67890"]), 7)
            .await
            .unwrap_err();
        assert!(matches!(err, WriteError::TooLarge { limit: 7 }));
        let mut entries = std::fs::read_dir(dir.path().join("tmp")).unwrap();
        assert!(entries.next().is_none(), "the partial file was removed");
    }
}
