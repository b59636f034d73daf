//! What the writer threads of a service's indexes share: the writer memory budget, and the
//! registry of the threads themselves.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

/// The writer memory of one index, taken from the [`WriterBudget`] while it writes.
pub(super) const WRITER_MEMORY: usize = plinth_shared::config::SEARCH_WRITER_SHARE;

/// The writer memory all indexes share: an index takes a share before it opens its writer
/// and gives it back when the writer has been idle a while, so many small indexes never
/// buffer more than the budget together (and never hold more writer threads than it
/// allows).
#[derive(Debug)]
pub(crate) struct WriterBudget {
    free: Mutex<usize>,
    returned: std::sync::Condvar,
}

impl WriterBudget {
    /// A budget of `bytes`, in whole writer shares (at least one).
    pub(crate) fn new(bytes: usize) -> WriterBudget {
        WriterBudget {
            free: Mutex::new((bytes / WRITER_MEMORY).max(1)),
            returned: std::sync::Condvar::new(),
        }
    }

    /// Waits for a share.
    pub(super) fn take(self: &Arc<Self>) -> Share {
        let mut free = self.free.lock().unwrap_or_else(|p| p.into_inner());
        while *free == 0 {
            free = self.returned.wait(free).unwrap_or_else(|p| p.into_inner());
        }
        *free -= 1;
        Share(Arc::clone(self))
    }

    /// The shares not taken.
    pub(crate) fn free(&self) -> usize {
        *self.free.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A share of the writer budget, given back when dropped.
pub(super) struct Share(Arc<WriterBudget>);

impl Drop for Share {
    fn drop(&mut self) {
        *self.0.free.lock().unwrap_or_else(|p| p.into_inner()) += 1;
        self.0.returned.notify_one();
    }
}

/// The writer threads of a service's indexes, by index directory. A closed index's thread
/// goes on until its last commit, holding tantivy's writer lock, so an index opens again
/// only once the thread of its last opening has ended; a graceful shutdown waits for all.
#[derive(Debug, Default)]
pub(crate) struct WriterThreads(Mutex<HashMap<PathBuf, JoinHandle<()>>>);

impl WriterThreads {
    fn threads(&self) -> std::sync::MutexGuard<'_, HashMap<PathBuf, JoinHandle<()>>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Waits until the thread last started for `dir` has ended. Blocks; the caller must
    /// know that the index it ran for is closed, or it waits for ever.
    pub(crate) fn wait_for(&self, dir: &Path) {
        let thread = self.threads().remove(dir);
        if let Some(thread) = thread
            && thread.join().is_err()
        {
            tracing::error!(dir = %dir.display(), "an index writer thread panicked");
        }
    }

    /// Records the thread started for `dir`.
    pub(super) fn started(&self, dir: PathBuf, thread: JoinHandle<()>) {
        self.threads().insert(dir, thread);
    }

    /// Waits until every thread recorded has ended, each after its index is closed. Blocks.
    pub(crate) fn join_all(&self) {
        let threads: Vec<(PathBuf, JoinHandle<()>)> = self.threads().drain().collect();
        for (dir, thread) in threads {
            if thread.join().is_err() {
                tracing::error!(dir = %dir.display(), "an index writer thread panicked");
            }
        }
    }
}
