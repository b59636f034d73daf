//! The writer side of an index: one thread per open index that takes the writes queued,
//! admits them against the [`Ledger`], applies and commits them, and settles; the writer
//! itself, and its share of the [`WriterBudget`], only while there is writing to do.

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use plinth_shared::ApiError;
use tantivy::indexer::IndexWriterOptions;
use tantivy::query::TermQuery;
use tantivy::schema::IndexRecordOption;
use tantivy::{Index, IndexReader, IndexWriter, Term};
use tokio::sync::oneshot;

use super::schema::Compiled;
use super::{Change, EngineError};

/// The writer memory of one index, taken from the [`WriterBudget`] while it writes.
const WRITER_MEMORY: usize = plinth_shared::config::SEARCH_WRITER_SHARE;

/// The writer memory all indexes share: an index takes a share before it opens its writer
/// and gives it back when the writer has been idle a while, so many small indexes never
/// buffer more than the budget together (and never hold more writer threads than it
/// allows).
#[derive(Debug)]
pub(crate) struct WriterBudget {
    free: std::sync::Mutex<usize>,
    returned: std::sync::Condvar,
}

impl WriterBudget {
    /// A budget of `bytes`, in whole writer shares (at least one).
    pub(crate) fn new(bytes: usize) -> WriterBudget {
        WriterBudget {
            free: std::sync::Mutex::new((bytes / WRITER_MEMORY).max(1)),
            returned: std::sync::Condvar::new(),
        }
    }

    /// Waits for a share.
    fn take(self: &std::sync::Arc<Self>) -> Share {
        let mut free = self.free.lock().unwrap_or_else(|p| p.into_inner());
        while *free == 0 {
            free = self.returned.wait(free).unwrap_or_else(|p| p.into_inner());
        }
        *free -= 1;
        Share(std::sync::Arc::clone(self))
    }

    /// The shares not taken.
    pub(crate) fn free(&self) -> usize {
        *self.free.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A share of the writer budget, given back when dropped.
struct Share(std::sync::Arc<WriterBudget>);

impl Drop for Share {
    fn drop(&mut self) {
        *self.0.free.lock().unwrap_or_else(|p| p.into_inner()) += 1;
        self.0.returned.notify_one();
    }
}

/// How an index's writer and reader behave.
#[derive(Clone, Debug)]
pub(crate) struct EngineOptions {
    /// How often readers are reloaded at most.
    pub(crate) refresh: Duration,
    /// How long a writer with nothing to do keeps its share.
    pub(crate) writer_idle: Duration,
    pub(crate) budget: std::sync::Arc<WriterBudget>,
    /// The threads searches spread the index's segments over.
    pub(crate) threads: super::search::SearchThreads,
}
/// Most writes one commit takes.
pub(super) const MOST_PER_COMMIT: usize = 256;

/// The writer's bookkeeping of the documents an index holds, against its project's quota:
/// the service's side of the writer, called on its thread.
///
/// Before a commit the writer reserves, for each write, room for as many documents as it
/// could add; after the commit it settles with the count the index's files hold, which
/// returns whatever was reserved and not used. A reservation a crash leaves unsettled is
/// settled when the index next opens.
pub(crate) trait Ledger: Send + Sync + 'static {
    /// Reserves room for at most `bounds[i]` more documents for each write, in order;
    /// answers, for each, why it is refused (`None`: admitted).
    ///
    /// # Errors
    ///
    /// Returns why nothing could be reserved.
    fn reserve(&self, bounds: &[u64]) -> Result<Vec<Option<ApiError>>, ApiError>;

    /// Records that the index holds `documents` now, in files of `bytes`.
    ///
    /// # Errors
    ///
    /// Returns why the record failed; the next settle makes up for it.
    fn settle(&self, documents: u64, bytes: u64) -> Result<(), ApiError>;
}

/// A change on its way to the writer.
pub(super) struct Write {
    pub(super) change: Change,
    /// Answer once the change is searchable, not only durable.
    pub(super) wait: bool,
    /// Answers with the documents the change applied to.
    pub(super) reply: oneshot::Sender<Result<u64, EngineError>>,
}

/// The bytes of the files in an index's directory.
pub(super) fn dir_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok()?.metadata().ok())
                .filter(|m| m.is_file())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

/// The documents an index's committed files hold.
pub(super) fn held_documents(index: &Index) -> tantivy::Result<u64> {
    Ok(index
        .searchable_segment_metas()?
        .iter()
        .map(|meta| u64::from(meta.num_docs()))
        .sum())
}

/// The writer thread's state.
pub(super) struct WriterThread {
    index: Index,
    dir: PathBuf,
    /// The writer, with its share of the budget, while there is writing to do.
    writer: Option<(IndexWriter, Share)>,
    reader: IndexReader,
    schema: Compiled,
    ledger: Box<dyn Ledger>,
    options: EngineOptions,
}

impl WriterThread {
    /// The thread's state for the index in `dir`; its writer opens on the first write.
    pub(super) fn new(
        (index, dir): (Index, PathBuf),
        reader: IndexReader,
        schema: Compiled,
        ledger: Box<dyn Ledger>,
        options: EngineOptions,
    ) -> WriterThread {
        WriterThread {
            index,
            dir,
            writer: None,
            reader,
            schema,
            ledger,
            options,
        }
    }

    /// Takes what is queued, admits it against the ledger, applies it, commits, settles and
    /// answers; reloads the reader at most once per `refresh` (at once when a write waits
    /// for it). Ends when the engine is dropped.
    pub(super) fn run(mut self, queue: mpsc::Receiver<Write>) {
        let mut reloaded = Instant::now();
        let mut stale = false;
        let mut held: Option<Write> = None;
        let mut wrote = Instant::now();
        let tick = self.options.refresh.min(self.options.writer_idle);
        loop {
            let received = match held.take() {
                Some(write) => Ok(write),
                None => queue.recv_timeout(tick),
            };
            let first = match received {
                Ok(write) => write,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    if stale
                        && reloaded.elapsed() >= self.options.refresh
                        && self.reader.reload().is_ok()
                    {
                        stale = false;
                        reloaded = Instant::now();
                    }
                    if wrote.elapsed() >= self.options.writer_idle {
                        self.close_writer();
                    }
                    continue;
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            };
            // A deletion by filter commits alone, so it counts what it deletes exactly.
            let alone = matches!(first.change, Change::DeleteMatching(_));
            let mut batch = vec![first];
            while !alone && batch.len() < MOST_PER_COMMIT {
                match queue.try_recv() {
                    Ok(write) if matches!(write.change, Change::DeleteMatching(_)) => {
                        held = Some(write);
                        break;
                    }
                    Ok(write) => batch.push(write),
                    Err(_) => break,
                }
            }
            let mut admitted = self.admit(batch);
            if admitted.is_empty() {
                continue;
            }
            wrote = Instant::now();
            let applied = match self.commit(&mut admitted) {
                Ok(applied) => applied,
                Err(err) => {
                    tracing::error!(error = %err, "index commit failed; the writes are lost");
                    if let Some((writer, _)) = &mut self.writer {
                        let _ = writer.rollback();
                    }
                    self.settle();
                    for write in admitted {
                        let _ = write.reply.send(Err(EngineError::Tantivy(
                            tantivy::TantivyError::SystemError(err.to_string()),
                        )));
                    }
                    continue;
                }
            };
            self.settle();
            stale = true;
            let wait = admitted.iter().any(|w| w.wait);
            if (wait || reloaded.elapsed() >= self.options.refresh) && self.reader.reload().is_ok()
            {
                stale = false;
                reloaded = Instant::now();
            }
            for (write, applied) in admitted.into_iter().zip(applied) {
                let _ = write.reply.send(Ok(applied));
            }
        }
        self.close_writer();
    }

    /// The writer, opened (after waiting for a share of the budget) when there is none.
    fn writer<'a>(
        slot: &'a mut Option<(IndexWriter, Share)>,
        index: &Index,
        budget: &std::sync::Arc<WriterBudget>,
    ) -> tantivy::Result<&'a mut IndexWriter> {
        let open = match slot.take() {
            Some(open) => open,
            None => {
                let share = budget.take();
                let options = IndexWriterOptions::builder()
                    .memory_budget_per_thread(WRITER_MEMORY)
                    .num_worker_threads(1)
                    .num_merge_threads(1)
                    .build();
                (index.writer_with_options(options)?, share)
            }
        };
        Ok(&mut slot.insert(open).0)
    }

    /// Closes the writer, once its merges are done, and gives its share back.
    fn close_writer(&mut self) {
        if let Some((writer, share)) = self.writer.take() {
            if let Err(err) = writer.wait_merging_threads() {
                tracing::warn!(error = %err, "index merges did not finish");
            }
            drop(share);
        }
    }

    /// Reserves room for the batch's writes; answers those refused and returns the rest.
    ///
    /// A write first asks room for every document it upserts. When that is refused (a
    /// project near its quota), it asks again for only those whose ids the index does not
    /// hold yet, so replacing documents at the limit still works.
    fn admit(&self, batch: Vec<Write>) -> Vec<Write> {
        let bounds: Vec<u64> = batch.iter().map(|w| w.change.most_added()).collect();
        if bounds.iter().all(|&b| b == 0) {
            return batch;
        }
        let mut verdicts = match self.ledger.reserve(&bounds) {
            Ok(verdicts) => verdicts,
            Err(err) => {
                let reason = err.to_string();
                for write in batch {
                    let refused = ApiError::Unavailable(reason.clone().into());
                    let _ = write.reply.send(Err(EngineError::Refused(refused)));
                }
                return Vec::new();
            }
        };
        let retry: Vec<usize> = (0..batch.len())
            .filter(|&n| verdicts[n].is_some())
            .collect();
        if !retry.is_empty() {
            let searcher = self.reader.searcher();
            let tighter: Vec<(usize, u64)> = retry
                .iter()
                .map(|&n| (n, batch[n].change.new_ids(&searcher, &self.schema)))
                .filter(|&(n, tight)| tight < bounds[n])
                .collect();
            let asks: Vec<u64> = tighter.iter().map(|&(_, tight)| tight).collect();
            if !asks.is_empty()
                && let Ok(again) = self.ledger.reserve(&asks)
            {
                for ((n, _), verdict) in tighter.into_iter().zip(again) {
                    verdicts[n] = verdict;
                }
            }
        }
        let mut admitted = Vec::with_capacity(batch.len());
        for (write, verdict) in batch.into_iter().zip(verdicts) {
            match verdict {
                None => admitted.push(write),
                Some(refused) => {
                    let _ = write.reply.send(Err(EngineError::Refused(refused)));
                }
            }
        }
        admitted
    }

    /// Applies the batch and commits it; returns the documents each write applied to.
    fn commit(&mut self, batch: &mut [Write]) -> tantivy::Result<Vec<u64>> {
        let mut applied = Vec::with_capacity(batch.len());
        for write in batch {
            let change = std::mem::replace(&mut write.change, Change::Delete(Vec::new()));
            applied.push(self.apply(change)?);
        }
        Self::writer(&mut self.writer, &self.index, &self.options.budget)?.commit()?;
        Ok(applied)
    }

    fn apply(&mut self, change: Change) -> tantivy::Result<u64> {
        let writer = Self::writer(&mut self.writer, &self.index, &self.options.budget)?;
        let schema = &self.schema;
        Ok(match change {
            Change::Upsert(documents) => {
                let count = documents.len() as u64;
                for prepared in documents {
                    writer.delete_term(Term::from_field_text(schema.id, &prepared.id));
                    writer.add_document(prepared.document)?;
                }
                count
            }
            Change::Delete(ids) => {
                let count = ids.len() as u64;
                for id in ids {
                    writer.delete_term(Term::from_field_text(schema.id, &id));
                }
                count
            }
            Change::DeleteMatching(query) => {
                // Alone in its commit: the reader, brought up to the last commit, sees
                // exactly what the deletion will remove.
                self.reader.reload()?;
                let count = self
                    .reader
                    .searcher()
                    .search(&query, &tantivy::collector::Count)?;
                writer.delete_query(query)?;
                count as u64
            }
        })
    }

    /// Settles the ledger with what the index holds now; a failure is made up for by the
    /// next settle.
    fn settle(&self) {
        let settled = held_documents(&self.index)
            .map_err(ApiError::internal)
            .and_then(|documents| self.ledger.settle(documents, dir_bytes(&self.dir)));
        if let Err(err) = settled {
            tracing::warn!(error = %err, "the index's document count is not recorded yet");
        }
    }
}

impl Change {
    /// The most documents the change can add to the index.
    fn most_added(&self) -> u64 {
        match self {
            Change::Upsert(documents) => documents.len() as u64,
            Change::Delete(_) | Change::DeleteMatching(_) => 0,
        }
    }

    /// The documents of an upsert whose ids the index does not hold (as `searcher` sees
    /// it; one committed since counts as new, which errs on the side of the quota).
    fn new_ids(&self, searcher: &tantivy::Searcher, schema: &Compiled) -> u64 {
        let Change::Upsert(documents) = self else {
            return 0;
        };
        let mut seen = std::collections::HashSet::new();
        let held = |id: &str| {
            let term = Term::from_field_text(schema.id, id);
            let query = TermQuery::new(term, IndexRecordOption::Basic);
            searcher
                .search(&query, &tantivy::collector::Count)
                .is_ok_and(|n| n > 0)
        };
        documents
            .iter()
            .filter(|d| seen.insert(d.id.as_str()) && !held(&d.id))
            .count() as u64
    }
}
