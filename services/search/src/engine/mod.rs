//! One index on tantivy: its writer, its reader, and the searches made on it. No HTTP here.
//!
//! - [`schema`]: a schema checked and turned into tantivy's.
//! - [`analysis`]: the analyzers of text fields.
//! - [`document`]: a JSON document checked against the schema.
//! - [`filter`]: structured filters.
//! - [`query`]: the query language.
//! - [`search`]: a search run: query, filter, [`rank`] (order, pages, cursors), [`facets`]
//!   and [`highlight`]s.
//!
//! Writes go to one thread per open index, which takes every write queued, applies them and
//! commits once (tantivy's commit syncs the new segments and the index's meta file before it
//! returns), then answers each: an answered write survives a crash, and concurrent writers
//! share the commit. Searches see a reader that is reloaded after a commit at most once per
//! refresh interval, or at once for a write that asks to wait until it is searchable.

pub(crate) mod analysis;
pub(crate) mod document;
pub(crate) mod facets;
pub(crate) mod filter;
pub(crate) mod highlight;
pub(crate) mod query;
pub(crate) mod rank;
pub(crate) mod schema;
pub(crate) mod search;

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use plinth_shared::ApiError;
use plinth_types::search::IndexStats;
use serde_json::{Map, Value};
use tantivy::collector::TopDocs;
use tantivy::indexer::IndexWriterOptions;
use tantivy::query::{BooleanQuery, Occur, Query, TermQuery};
use tantivy::schema::{IndexRecordOption, Value as _};
use tantivy::{Index, IndexReader, IndexWriter, ReloadPolicy, TantivyDocument, Term};
use tokio::sync::oneshot;

use self::document::Prepared;
use self::schema::Compiled;

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
}
/// Most writes one commit takes.
const MOST_PER_COMMIT: usize = 256;

/// What can go wrong in an index.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// tantivy failed (I/O, a damaged index).
    #[error("index: {0}")]
    Tantivy(#[from] tantivy::TantivyError),
    /// The index's files hold another schema than its row.
    #[error("the index's files do not match its schema")]
    SchemaMismatch,
    /// The writer thread has stopped.
    #[error("the index writer has stopped")]
    Closed,
    /// The write was not admitted (over the documents quota, the index deleted, the
    /// metadata store unreachable); nothing of it was applied.
    #[error("{0}")]
    Refused(plinth_shared::ApiError),
}

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

/// A change to an index.
#[derive(Debug)]
pub(crate) enum Change {
    /// Adds documents, replacing those with the same ids.
    Upsert(Vec<Prepared>),
    /// Deletes the documents with these ids.
    Delete(Vec<String>),
    /// Deletes the documents a filter matches.
    DeleteMatching(Box<dyn Query>),
}

/// A change on its way to the writer.
struct Write {
    change: Change,
    /// Answer once the change is searchable, not only durable.
    wait: bool,
    /// Answers with the documents the change applied to.
    reply: oneshot::Sender<Result<u64, EngineError>>,
}

/// An open index.
pub(crate) struct Engine {
    schema: Compiled,
    reader: IndexReader,
    dir: PathBuf,
    writes: mpsc::SyncSender<Write>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

impl Engine {
    /// Opens the index in `dir`, creating it when the directory holds none, and starts its
    /// writer thread. Blocks: call it on a blocking thread.
    ///
    /// # Errors
    ///
    /// Returns tantivy's error, or [`EngineError::SchemaMismatch`].
    pub(crate) fn open(
        dir: &Path,
        schema: Compiled,
        options: EngineOptions,
        ledger: Box<dyn Ledger>,
    ) -> Result<Engine, EngineError> {
        std::fs::create_dir_all(dir).map_err(tantivy::TantivyError::from)?;
        let index = if dir.join("meta.json").exists() {
            let index = Index::open_in_dir(dir)?;
            if index.schema() != schema.schema {
                return Err(EngineError::SchemaMismatch);
            }
            index
        } else {
            Index::create_in_dir(dir, schema.schema.clone())?
        };
        analysis::register(&index);
        let reader = index
            .reader_builder()
            .reload_policy(ReloadPolicy::Manual)
            .try_into()?;
        // What a crash left unsettled is settled before the first write.
        ledger
            .settle(held_documents(&index)?, dir_bytes(dir))
            .map_err(EngineError::Refused)?;
        let (writes, queue) = mpsc::sync_channel(MOST_PER_COMMIT);
        let thread_reader = reader.clone();
        let thread_dir = dir.to_path_buf();
        let thread_schema = schema.clone();
        std::thread::Builder::new()
            .name("plinth-index".into())
            .spawn(move || {
                let thread = WriterThread {
                    dir: thread_dir,
                    index,
                    writer: None,
                    reader: thread_reader,
                    schema: thread_schema,
                    ledger,
                    options,
                };
                thread.run(queue);
            })
            .map_err(tantivy::TantivyError::from)?;
        Ok(Engine {
            schema,
            reader,
            dir: dir.to_path_buf(),
            writes,
        })
    }

    /// The index's schema.
    pub(crate) fn schema(&self) -> &Compiled {
        &self.schema
    }

    /// Applies a change and commits it; with `wait`, answers once it is searchable. Returns
    /// the documents it applied to (for a deletion by filter, those it deleted).
    ///
    /// # Errors
    ///
    /// Returns why the commit failed (nothing of the change is then kept).
    pub(crate) async fn write(&self, change: Change, wait: bool) -> Result<u64, EngineError> {
        let (reply, answer) = oneshot::channel();
        let write = Write {
            change,
            wait,
            reply,
        };
        let writes = self.writes.clone();
        // The queue is bounded: a full one holds the caller back, on a blocking thread.
        tokio::task::spawn_blocking(move || writes.send(write))
            .await
            .map_err(|_| EngineError::Closed)?
            .map_err(|_| EngineError::Closed)?;
        answer.await.unwrap_or(Err(EngineError::Closed))
    }

    /// The stored fields of the document with this id, if there is one (and it meets the
    /// `forced` filter, a token's, when there is one).
    ///
    /// # Errors
    ///
    /// Returns `invalid_filter` for a forced filter that does not fit the schema, and
    /// tantivy's error.
    pub(crate) fn get(
        &self,
        id: &str,
        forced: Option<&Value>,
    ) -> Result<Option<Map<String, Value>>, SearchError> {
        let searcher = self.reader.searcher();
        let mut query: Box<dyn Query> = Box::new(TermQuery::new(
            Term::from_field_text(self.schema.id, id),
            IndexRecordOption::Basic,
        ));
        if let Some(forced) = forced {
            let filter = filter::filter_query(&self.schema, forced, "search_filters")
                .map_err(SearchError::Query)?;
            query = Box::new(BooleanQuery::new(vec![
                (Occur::Must, query),
                (Occur::Must, filter),
            ]));
        }
        let top = searcher
            .search(&query, &TopDocs::with_limit(1).order_by_score())
            .map_err(EngineError::from)?;
        match top.first() {
            Some((_, address)) => {
                let document = searcher.doc(*address).map_err(EngineError::from)?;
                Ok(Some(self.source(&document)))
            }
            None => Ok(None),
        }
    }

    /// The documents searchable now and the bytes of the index's files.
    pub(crate) fn stats(&self) -> IndexStats {
        IndexStats {
            documents: self.reader.searcher().num_docs(),
            bytes: dir_bytes(&self.dir),
        }
    }

    pub(crate) fn source(&self, document: &TantivyDocument) -> Map<String, Value> {
        document
            .get_first(self.schema.source)
            .and_then(|value| value.as_bytes())
            .and_then(|bytes| serde_json::from_slice(bytes).ok())
            .unwrap_or_default()
    }
}

/// A search that failed.
#[derive(Debug)]
pub(crate) enum SearchError {
    /// The query is malformed.
    Query(plinth_shared::ApiError),
    /// The index failed.
    Engine(EngineError),
}

impl From<EngineError> for SearchError {
    fn from(err: EngineError) -> Self {
        SearchError::Engine(err)
    }
}

/// The bytes of the files in an index's directory.
fn dir_bytes(dir: &Path) -> u64 {
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
struct WriterThread {
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
    /// Takes what is queued, admits it against the ledger, applies it, commits, settles and
    /// answers; reloads the reader at most once per `refresh` (at once when a write waits
    /// for it). Ends when the engine is dropped.
    fn run(mut self, queue: mpsc::Receiver<Write>) {
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
