//! The writer side of an index: one thread per open index that takes the writes queued,
//! admits them against the [`Ledger`], journals and applies them, answers, and commits once
//! per refresh interval (at once for a write that waits to be searchable), then settles; the
//! writer itself, and its share of the [`WriterBudget`], only while there is writing to do.
//! What the writers of all indexes share is in [`super::writers`].

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use plinth_shared::ApiError;
use tantivy::indexer::IndexWriterOptions;
use tantivy::query::TermQuery;
use tantivy::schema::IndexRecordOption;
use tantivy::{Index, IndexReader, IndexWriter, Term};
use tokio::sync::oneshot;

use super::document::Prepared;
use super::journal::{Entry, Journal};
use super::schema::Compiled;
use super::writers::{Share, WRITER_MEMORY, WriterBudget, WriterThreads};
use super::{Change, EngineError};

/// How an index's writer and reader behave.
#[derive(Clone, Debug)]
pub(crate) struct EngineOptions {
    /// How often readers are reloaded at most.
    pub(crate) refresh: Duration,
    /// How long a writer with nothing to do keeps its share.
    pub(crate) writer_idle: Duration,
    pub(crate) budget: Arc<WriterBudget>,
    /// The threads searches spread the index's segments over.
    pub(crate) threads: super::search::SearchThreads,
    /// The writer threads of the service's indexes.
    pub(crate) writers: Arc<WriterThreads>,
}

/// Most writes taken from the queue at once.
pub(super) const MOST_PER_COMMIT: usize = 256;
/// The journal bytes past which the writer commits before the refresh interval is up, so
/// that a replay after a crash stays short.
const MOST_JOURNAL_BYTES: u64 = 64 << 20;

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
fn held_documents(index: &Index) -> tantivy::Result<u64> {
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
    journal: Journal,
    /// The seq of the last journal entry the index's last commit holds.
    committed: u64,
    /// Whether the writer holds changes not committed yet.
    pending: bool,
    last_commit: Instant,
    last_write: Instant,
    /// Why the writer refuses writes: it could not be restored after a failure.
    broken: Option<String>,
    /// Set when the thread ends or breaks, so that the service opens the index anew (which
    /// replays its journal) instead of sending it more writes.
    stopped: Arc<AtomicBool>,
}

impl WriterThread {
    /// The thread's state for the index in `dir`, with the journal entries its last commit
    /// lacks applied and committed, and the ledger settled. Blocks.
    ///
    /// # Errors
    ///
    /// Returns why the journal could not be read or its entries committed: the index cannot
    /// be served without them.
    pub(super) fn open(
        (index, dir): (Index, PathBuf),
        reader: IndexReader,
        schema: Compiled,
        ledger: Box<dyn Ledger>,
        options: EngineOptions,
        stopped: Arc<AtomicBool>,
    ) -> Result<WriterThread, EngineError> {
        let committed = super::journal::committed_through(index.load_metas()?.payload.as_deref());
        let (journal, entries) =
            Journal::open(&dir, committed).map_err(tantivy::TantivyError::from)?;
        let mut thread = WriterThread {
            index,
            dir,
            writer: None,
            reader,
            schema,
            ledger,
            options,
            journal,
            committed,
            pending: false,
            last_commit: Instant::now(),
            last_write: Instant::now(),
            broken: None,
            stopped,
        };
        if entries.is_empty() {
            // What a crash left unsettled is settled before the first write.
            thread.settle();
        } else {
            tracing::info!(entries = entries.len(), "replaying the index journal");
            thread.replay(entries)?;
            thread.commit()?;
            thread.close_writer();
        }
        Ok(thread)
    }

    /// Takes what is queued, admits it against the ledger, journals and applies it, answers,
    /// and commits when the refresh interval is up (at once when a write waits for it).
    /// Ends when the engine is dropped, after a last commit.
    pub(super) fn run(mut self, queue: mpsc::Receiver<Write>) {
        let mut held: Option<Write> = None;
        // A broken writer ends the thread; the writes still queued are answered as closed.
        while self.broken.is_none() {
            let received = match held.take() {
                Some(write) => Ok(write),
                None => queue.recv_timeout(self.until_due()),
            };
            let first = match received {
                Ok(write) => write,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    if self.pending && self.last_commit.elapsed() >= self.options.refresh {
                        // A failure is logged; the changes stay pending and are tried again.
                        let _ = self.commit();
                    }
                    if self.last_write.elapsed() >= self.options.writer_idle {
                        self.close_writer();
                    }
                    continue;
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            };
            if matches!(first.change, Change::DeleteMatching(_)) {
                self.delete_matching(first);
                continue;
            }
            let mut batch = vec![first];
            while batch.len() < MOST_PER_COMMIT {
                match queue.try_recv() {
                    Ok(write) if matches!(write.change, Change::DeleteMatching(_)) => {
                        held = Some(write);
                        break;
                    }
                    Ok(write) => batch.push(write),
                    Err(_) => break,
                }
            }
            let admitted = self.admit(batch);
            if !admitted.is_empty() {
                self.last_write = Instant::now();
                self.write(admitted);
            }
        }
        self.stopped.store(true, Ordering::SeqCst);
        self.close_writer();
    }

    /// How long the thread may wait for a write: until pending changes are due to be
    /// committed, and at most the tick at which it looks whether its writer is idle.
    fn until_due(&self) -> Duration {
        let tick = self.options.refresh.min(self.options.writer_idle);
        if self.pending {
            (self
                .options
                .refresh
                .saturating_sub(self.last_commit.elapsed()))
            .clamp(Duration::from_millis(1), tick)
        } else {
            tick
        }
    }

    /// Journals the admitted writes, applies them, and answers those that do not wait; then
    /// commits if a write waits, the refresh interval is up or the journal is long, and
    /// answers the rest.
    fn write(&mut self, batch: Vec<Write>) {
        if let Err(err) = self.journal.append(batch.iter().map(|w| &w.change)) {
            // Nothing of it is applied; what it reserved is returned by the next settle.
            tracing::error!(error = %err, "index journal write failed; the writes are refused");
            let reason = format!("the index journal could not be written: {err}");
            for write in batch {
                let _ = write.reply.send(Err(failed(&reason)));
            }
            return;
        }
        let mut answers = Vec::with_capacity(batch.len());
        let mut failure = None;
        for Write {
            change,
            wait,
            reply,
        } in batch
        {
            answers.push((reply, wait, change.count()));
            if failure.is_none()
                && let Err(err) = self.apply(change)
            {
                failure = Some(err);
            }
        }
        self.pending = true;
        if let Some(err) = failure {
            // The writes are journaled: applying the journal again puts them back.
            tracing::error!(error = %err, "index write failed; applying the journal again");
            self.restore();
        }
        if let Some(broken) = &self.broken {
            let reason = broken.clone();
            for (reply, _, _) in answers {
                let _ = reply.send(Err(failed(&reason)));
            }
            return;
        }
        let mut waiting = Vec::new();
        for (reply, wait, count) in answers {
            if wait {
                waiting.push((reply, count));
            } else {
                let _ = reply.send(Ok(count));
            }
        }
        let due = !waiting.is_empty()
            || self.last_commit.elapsed() >= self.options.refresh
            || self.journal.bytes() >= MOST_JOURNAL_BYTES;
        if due {
            let committed = self.commit().map_err(|err| err.to_string());
            for (reply, count) in waiting {
                let _ = reply.send(committed.clone().map(|()| count).map_err(|e| failed(&e)));
            }
        }
    }

    /// Deletes what a filter matches, alone in its commit and after every pending change is
    /// committed: the reader, brought up to that commit, counts exactly what it removes. The
    /// deletion is not journaled, as it is committed before it is answered.
    fn delete_matching(&mut self, write: Write) {
        let Change::DeleteMatching(query) = write.change else {
            return;
        };
        let result = (|| {
            if self.pending {
                self.commit()?;
            }
            self.reader.reload()?;
            let count = self
                .reader
                .searcher()
                .search(&query, &tantivy::collector::Count)?;
            Self::writer(&mut self.writer, &self.index, &self.options.budget)?
                .delete_query(query)?;
            self.pending = true;
            self.commit()?;
            Ok(count as u64)
        })();
        self.last_write = Instant::now();
        let _ = write.reply.send(result);
    }

    /// Commits what the writer holds, with the journal's last seq as the commit's payload;
    /// then empties the journal, settles the ledger and reloads the reader. A failed commit
    /// rolls the writer back and applies the journal again, so the changes stay pending.
    fn commit(&mut self) -> Result<(), EngineError> {
        if let Some(broken) = &self.broken {
            return Err(failed(broken));
        }
        let through = self.journal.last();
        let writer = Self::writer(&mut self.writer, &self.index, &self.options.budget)?;
        let committed = writer.prepare_commit().and_then(|mut prepared| {
            prepared.set_payload(&through.to_string());
            prepared.commit()
        });
        self.last_commit = Instant::now();
        if let Err(err) = committed {
            tracing::error!(error = %err, "index commit failed; the journal keeps the writes");
            self.restore();
            return Err(err.into());
        }
        self.committed = through;
        self.pending = false;
        if let Err(err) = self.journal.clear() {
            // Harmless: the commit's payload says the entries are in, so none is replayed.
            tracing::warn!(error = %err, "index journal not emptied after a commit");
        }
        self.settle();
        if let Err(err) = self.reader.reload() {
            tracing::warn!(error = %err, "index reader not reloaded after a commit");
        }
        Ok(())
    }

    /// Rolls the writer back to the last commit and applies the journal's entries after it
    /// again. If that fails too, the thread refuses every write from then on, and the index
    /// is whole again when it next opens (the journal still holds the entries).
    fn restore(&mut self) {
        let restored = (|| -> Result<(), EngineError> {
            if let Some((writer, _)) = &mut self.writer {
                writer.rollback()?;
            }
            let entries = self
                .journal
                .entries_after(self.committed)
                .map_err(tantivy::TantivyError::from)?;
            self.pending = !entries.is_empty();
            self.replay(entries)
        })();
        if let Err(err) = restored {
            tracing::error!(error = %err, "index writer not restored; the index opens anew");
            self.broken = Some(err.to_string());
            self.stopped.store(true, Ordering::SeqCst);
        }
    }

    /// Applies journal entries (their documents checked against the schema again).
    fn replay(&mut self, entries: Vec<Entry>) -> Result<(), EngineError> {
        for entry in entries {
            let change = match entry {
                Entry::Upsert(lines) => Change::Upsert(
                    lines
                        .iter()
                        .enumerate()
                        .filter_map(|(position, line)| {
                            Prepared::from_json(&self.schema, position, line)
                                .inspect_err(|bad| {
                                    tracing::error!(
                                        reason = %bad.reason,
                                        "a journaled document no longer fits the schema; skipped"
                                    );
                                })
                                .ok()
                        })
                        .collect(),
                ),
                Entry::Delete(ids) => Change::Delete(ids),
            };
            self.apply(change)?;
            self.pending = true;
        }
        Ok(())
    }

    /// The writer, opened (after waiting for a share of the budget) when there is none.
    fn writer<'a>(
        slot: &'a mut Option<(IndexWriter, Share)>,
        index: &Index,
        budget: &Arc<WriterBudget>,
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

    /// Commits what is pending, then closes the writer once its merges are done and gives
    /// its share back. A writer whose commit fails stays open, so the changes stay pending.
    fn close_writer(&mut self) {
        if self.pending && self.commit().is_err() {
            return;
        }
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

    /// Applies an upsert or a deletion by ids to the writer.
    fn apply(&mut self, change: Change) -> tantivy::Result<()> {
        let writer = Self::writer(&mut self.writer, &self.index, &self.options.budget)?;
        let id = self.schema.id;
        match change {
            Change::Upsert(documents) => {
                for prepared in documents {
                    writer.delete_term(Term::from_field_text(id, &prepared.id));
                    writer.add_document(prepared.document)?;
                }
            }
            Change::Delete(ids) => {
                for doc_id in ids {
                    writer.delete_term(Term::from_field_text(id, &doc_id));
                }
            }
            // Never queued here: it commits alone, in `delete_matching`.
            Change::DeleteMatching(query) => {
                writer.delete_query(query)?;
            }
        }
        Ok(())
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

/// The error a write gets when the writer cannot take it.
fn failed(reason: &str) -> EngineError {
    EngineError::Tantivy(tantivy::TantivyError::SystemError(reason.to_owned()))
}

impl Change {
    /// The documents an upsert or a deletion by ids names.
    fn count(&self) -> u64 {
        match self {
            Change::Upsert(documents) => documents.len() as u64,
            Change::Delete(ids) => ids.len() as u64,
            Change::DeleteMatching(_) => 0,
        }
    }

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
