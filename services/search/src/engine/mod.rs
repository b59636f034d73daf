//! One index on tantivy: its writer, its reader, and the searches made on it. No HTTP here.
//!
//! - [`schema`]: a schema checked and turned into tantivy's.
//! - [`analysis`]: the analyzers of text fields.
//! - [`document`]: a JSON document checked against the schema.
//! - [`filter`]: structured filters.
//! - [`query`]: the query language, with the typos and prefixes it [`expand`]s to.
//! - [`search`]: a search run: query, filter, [`rank`] (order, pages, cursors), [`facets`]
//!   and [`highlight`]s.
//! - [`writer`]: the writer thread and its [`Ledger`]; [`writers`]: what all writers share,
//!   the [`WriterBudget`] and the registry of their threads.
//! - [`journal`]: the writes acknowledged since the last commit.
//!
//! Writes go to one thread per open index, which takes every write queued, appends them to
//! the index's journal and syncs it once, applies them, and answers: an answered write
//! survives a crash (the journal is replayed when the index opens), and concurrent writers
//! share the sync. The thread commits at most once per refresh interval, or at once for a
//! write that asks to wait until it is searchable, and empties the journal after each commit;
//! searches see a reader that is reloaded after every commit. Committing seldom is what keeps
//! bulk loads fast: each commit ends a segment, and small segments cost merging.

pub(crate) mod analysis;
pub(crate) mod document;
pub(crate) mod expand;
pub(crate) mod facets;
pub(crate) mod filter;
pub(crate) mod highlight;
mod journal;
pub(crate) mod query;
pub(crate) mod rank;
pub(crate) mod schema;
pub(crate) mod search;
pub(crate) mod writer;
mod writers;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, mpsc};

use plinth_types::search::IndexStats;
use serde_json::{Map, Value};
use tantivy::collector::TopDocs;
use tantivy::query::{BooleanQuery, Occur, Query, TermQuery};
use tantivy::schema::{IndexRecordOption, Value as _};
use tantivy::{Index, IndexReader, ReloadPolicy, TantivyDocument, Term};
use tokio::sync::oneshot;

use self::document::Prepared;
use self::schema::Compiled;
pub(crate) use self::search::SearchThreads;
pub(crate) use self::writer::{EngineOptions, Ledger};
use self::writer::{MOST_PER_COMMIT, Write, WriterThread, dir_bytes};
pub(crate) use self::writers::{WriterBudget, WriterThreads};

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

/// An open index.
pub(crate) struct Engine {
    schema: Compiled,
    reader: IndexReader,
    dir: PathBuf,
    writes: mpsc::SyncSender<Write>,
    threads: SearchThreads,
    /// Set by the writer thread when it ends.
    stopped: Arc<AtomicBool>,
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
        options.writers.wait_for(dir);
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
        let stopped = Arc::new(AtomicBool::new(false));
        let thread = WriterThread::open(
            (index, dir.to_path_buf()),
            reader.clone(),
            schema.clone(),
            ledger,
            options.clone(),
            stopped.clone(),
        )?;
        let (writes, queue) = mpsc::sync_channel(MOST_PER_COMMIT);
        let threads = options.threads.clone();
        let running = std::thread::Builder::new()
            .name("plinth-index".into())
            .spawn(move || thread.run(queue))
            .map_err(tantivy::TantivyError::from)?;
        options.writers.started(dir.to_path_buf(), running);
        Ok(Engine {
            schema,
            reader,
            dir: dir.to_path_buf(),
            writes,
            threads,
            stopped,
        })
    }

    /// Whether the index's writer thread has ended (after a failure it could not recover
    /// from): the index must be opened anew to take writes.
    pub(crate) fn is_stopped(&self) -> bool {
        self.stopped.load(Ordering::SeqCst)
    }

    /// The index's schema.
    pub(crate) fn schema(&self) -> &Compiled {
        &self.schema
    }

    /// Applies a change once it is journaled (a deletion by filter: once it is committed);
    /// with `wait`, answers once it is searchable. Returns the documents it applied to (for
    /// a deletion by filter, those it deleted).
    ///
    /// # Errors
    ///
    /// Returns why the change could not be journaled, applied or (with `wait`, or for a
    /// deletion by filter) committed. A journaled change whose commit failed is kept and
    /// committed later.
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

impl From<tantivy::TantivyError> for SearchError {
    fn from(err: tantivy::TantivyError) -> Self {
        SearchError::Engine(EngineError::Tantivy(err))
    }
}

impl From<plinth_shared::ApiError> for SearchError {
    fn from(err: plinth_shared::ApiError) -> Self {
        SearchError::Query(err)
    }
}
