//! The embedded backend: every partition of every topic as a [`Partition`] log under one
//! directory (`<dir>/<topic id>/<partition>/`), opened on first use.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use tokio::sync::OnceCell;

use crate::log::{LogConfig, LogError, Partition};

/// Each partition's log cell, by topic id and partition.
type Cells = HashMap<(String, u32), Arc<OnceCell<Partition>>>;

/// The open partition logs of the embedded backend.
#[derive(Debug)]
pub struct FileLogs {
    dir: PathBuf,
    /// An exclusive lock on `<dir>/.lock`, held while the logs are open: two processes
    /// appending to one log would overwrite each other's acknowledged records.
    _lock: std::fs::File,
    config: LogConfig,
    /// Each partition's log, opened once: requests for one that is opening wait on its cell
    /// (so no log is recovered twice), while others go on.
    open: Mutex<Cells>,
}

impl FileLogs {
    /// Uses `dir` for the logs, creating it, and locks it against other processes.
    ///
    /// # Errors
    ///
    /// Returns the file system's error, and `WouldBlock` when another process (or another
    /// open instance) holds the directory.
    pub async fn open(dir: &Path, config: LogConfig) -> std::io::Result<FileLogs> {
        tokio::fs::create_dir_all(dir).await?;
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join(".lock"))?;
        lock.try_lock().map_err(|err| match err {
            std::fs::TryLockError::WouldBlock => std::io::Error::new(
                std::io::ErrorKind::WouldBlock,
                format!("{} is in use by another plinth process", dir.display()),
            ),
            std::fs::TryLockError::Error(err) => err,
        })?;
        Ok(FileLogs {
            dir: dir.to_owned(),
            _lock: lock,
            config,
            open: Mutex::new(HashMap::new()),
        })
    }

    /// The log of one partition of a topic, opening (and recovering) it on first use.
    ///
    /// # Errors
    ///
    /// Returns [`LogError::NoSuchLog`] when the topic's logs were never made or have been
    /// deleted (a request racing the topic's deletion must not bring them back), and the
    /// log's error when it cannot be opened.
    pub async fn partition(&self, topic_id: &str, partition: u32) -> Result<Partition, LogError> {
        self.open_partition(topic_id, partition, false).await
    }

    async fn open_partition(
        &self,
        topic_id: &str,
        partition: u32,
        create: bool,
    ) -> Result<Partition, LogError> {
        let key = (topic_id.to_owned(), partition);
        let cell = self.cells().entry(key.clone()).or_default().clone();
        if let Some(log) = cell.get() {
            return Ok(log.clone());
        }
        let dir = self.dir.join(topic_id).join(partition.to_string());
        let opened = cell
            .get_or_try_init(|| async {
                if !create && !tokio::fs::try_exists(&dir).await? {
                    return Err(LogError::NoSuchLog(topic_id.to_owned()));
                }
                Partition::open(&dir, self.config).await
            })
            .await;
        match opened {
            Ok(log) => Ok(log.clone()),
            Err(err) => {
                // A failed open leaves no empty cell behind (a deleted topic's id, say).
                let mut cells = self.cells();
                if cells
                    .get(&key)
                    .is_some_and(|c| Arc::ptr_eq(c, &cell) && !c.initialized())
                {
                    cells.remove(&key);
                }
                Err(err)
            }
        }
    }

    fn cells(&self) -> std::sync::MutexGuard<'_, Cells> {
        self.open
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Creates the logs of a new topic's partitions, so that publishing never has to.
    ///
    /// # Errors
    ///
    /// Returns the log's error.
    pub async fn create_topic(&self, topic_id: &str, partitions: u32) -> Result<(), LogError> {
        for partition in 0..partitions {
            self.open_partition(topic_id, partition, true).await?;
        }
        // The topic's own directory is new in the root: make that entry durable too.
        tokio::fs::File::open(&self.dir).await?.sync_all().await?;
        Ok(())
    }

    /// The topic ids that have log directories.
    ///
    /// # Errors
    ///
    /// Returns the file system's error.
    pub async fn topic_ids(&self) -> std::io::Result<Vec<String>> {
        let mut ids = Vec::new();
        let mut entries = tokio::fs::read_dir(&self.dir).await?;
        while let Some(entry) = entries.next_entry().await? {
            if entry.file_type().await?.is_dir()
                && let Some(name) = entry.file_name().to_str()
            {
                ids.push(name.to_owned());
            }
        }
        Ok(ids)
    }

    /// Closes a deleted topic's logs and removes their files.
    ///
    /// # Errors
    ///
    /// Returns the file system's error.
    pub async fn delete_topic(&self, topic_id: &str) -> std::io::Result<()> {
        self.cells().retain(|(id, _), _| id != topic_id);
        match tokio::fs::remove_dir_all(self.dir.join(topic_id)).await {
            Err(err) if err.kind() != std::io::ErrorKind::NotFound => Err(err),
            _ => Ok(()),
        }
    }
}
