//! Search: indexes, documents and queries on tantivy under `/search/v1`, on the shared auth
//! and quota layer.
//!
//! - [`names`]: index names, validated once.
//! - [`engine`]: one index on tantivy (schema, analyzers, documents, the query language, the
//!   writer and reader); no HTTP.
//! - [`indexes`], [`documents`], [`queries`]: the HTTP routes.
//!
//! An index is a row in the metadata store (schema and settings) and a tantivy directory
//! under `search_dir`, named by the row's id. Indexes are opened on first use.
//!
//! - [`ledger`]: the documents an index holds, booked against the project's quota.
//!
//! Open indexes close when idle or past `search_max_open_indexes`; their writers exist only
//! while there is writing to do, within one memory budget (`engine::WriterBudget`).
//! Writes are journaled and committed once per refresh interval (see [`engine`]).

pub mod documents;
pub mod engine;
pub mod indexes;
mod ledger;
pub mod names;
pub mod queries;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{DefaultBodyLimit, FromRef};
use plinth_shared::{ApiError, Shared};
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::engine::schema::Compiled;
use crate::engine::{
    Engine, EngineError, EngineOptions, SearchThreads, WriterBudget, WriterThreads,
};
use crate::indexes::IndexRow;
use crate::ledger::IndexLedger;

/// The search service's state.
#[derive(Clone, Debug)]
pub struct Search {
    shared: Shared,
    dir: PathBuf,
    /// The indexes open now, by id.
    engines: Arc<Mutex<HashMap<String, Open>>>,
    /// One gate per index that has been opened: an index is opened by one request at a
    /// time (a second opening would wait for the first one's writer thread).
    opening: Arc<Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>>,
    budget: Arc<WriterBudget>,
    threads: SearchThreads,
    writers: Arc<WriterThreads>,
}

/// An open index and when a request last took it.
#[derive(Debug)]
struct Open {
    engine: Arc<Engine>,
    used: Instant,
}

impl FromRef<Search> for Shared {
    fn from_ref(search: &Search) -> Shared {
        search.shared.clone()
    }
}

impl Search {
    /// Prepares the index directory the configuration names, removes the directories of
    /// indexes that have no row (a crash between deleting an index's row and its files),
    /// and starts closing indexes nobody uses.
    ///
    /// # Errors
    ///
    /// Returns an error when `search_dir` cannot be created or read, or the metadata store
    /// cannot be.
    pub async fn open(shared: Shared) -> Result<Search, std::io::Error> {
        let dir = shared.config().search_dir();
        tokio::fs::create_dir_all(&dir).await?;
        sweep_orphans(&shared, &dir).await?;
        let threads = SearchThreads::new(shared.config().search_query_threads)
            .map_err(std::io::Error::other)?;
        let search = Search {
            budget: Arc::new(WriterBudget::new(
                shared.config().search_writer_memory_bytes,
            )),
            threads,
            shared,
            dir,
            engines: Arc::default(),
            opening: Arc::default(),
            writers: Arc::default(),
        };
        tokio::spawn(close_at_shutdown(
            search.shared.clone(),
            Arc::downgrade(&search.engines),
            Arc::clone(&search.writers),
        ));
        let engines = Arc::downgrade(&search.engines);
        let idle = search.shared.config().search_idle_timeout;
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval((idle / 4).max(Duration::from_millis(250)));
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticks.tick().await;
                // Ends with the service.
                let Some(engines) = engines.upgrade() else {
                    break;
                };
                let mut engines = engines.lock().unwrap_or_else(|p| p.into_inner());
                engines.retain(|_, open| in_use(open) || open.used.elapsed() < idle);
            }
        });
        Ok(search)
    }

    fn engines(&self) -> std::sync::MutexGuard<'_, HashMap<String, Open>> {
        self.engines.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The open index of `id`, if it is open, marked as used now.
    fn open_engine(&self, id: &str) -> Option<Arc<Engine>> {
        let limit = self.shared.config().search_max_open_indexes;
        let mut engines = self.engines();
        let open = engines.get_mut(id)?;
        if open.engine.is_stopped() {
            // Its writer broke: opening it anew replays its journal.
            engines.remove(id);
            return None;
        }
        open.used = Instant::now();
        let engine = open.engine.clone();
        // Indexes all in use when the last one opened may have left it over.
        trim(&mut engines, limit, id);
        Some(engine)
    }

    /// How many indexes are open now.
    pub fn open_indexes(&self) -> usize {
        self.engines().len()
    }

    /// How many writer shares of `search_writer_memory_bytes` are not taken.
    pub fn free_writer_shares(&self) -> usize {
        self.budget.free()
    }

    /// The open index of a row, opening it on first use.
    pub(crate) async fn engine(&self, row: &IndexRow) -> Result<Arc<Engine>, ApiError> {
        if let Some(engine) = self.open_engine(&row.id) {
            return Ok(engine);
        }
        // Opened on a task of its own, which a cancelled request does not stop: an opening
        // cut short could leave the gate open while its writer thread starts.
        let search = self.clone();
        let row = row.clone();
        tokio::spawn(async move { search.open_index(&row).await })
            .await
            .map_err(ApiError::internal)?
    }

    /// Opens the index of a row, one opening at a time for each index, and lists it.
    async fn open_index(&self, row: &IndexRow) -> Result<Arc<Engine>, ApiError> {
        let gate = {
            let mut opening = self.opening.lock().unwrap_or_else(|p| p.into_inner());
            opening.entry(row.id.clone()).or_default().clone()
        };
        let _opening = gate.lock().await;
        if let Some(engine) = self.open_engine(&row.id) {
            return Ok(engine);
        }
        let limit = self.shared.config().search_max_open_indexes;
        let dir = self.dir.join(&row.id);
        let schema = Compiled::new(&row.index.schema)?;
        let config = self.shared.config();
        let options = EngineOptions {
            refresh: config.search_refresh_interval,
            writer_idle: config.search_writer_idle,
            budget: Arc::clone(&self.budget),
            threads: self.threads.clone(),
            writers: Arc::clone(&self.writers),
        };
        let ledger = Box::new(IndexLedger {
            shared: self.shared.clone(),
            runtime: tokio::runtime::Handle::current(),
            project_id: row.project_id.clone(),
            index_id: row.id.clone(),
        });
        let opened =
            tokio::task::spawn_blocking(move || Engine::open(&dir, schema, options, ledger))
                .await
                .map_err(ApiError::internal)?
                .map_err(engine_error)?;
        let engine = Arc::new(opened);
        let mut engines = self.engines();
        engines.insert(
            row.id.clone(),
            Open {
                engine: engine.clone(),
                used: Instant::now(),
            },
        );
        trim(&mut engines, limit, &row.id);
        Ok(engine)
    }

    /// Closes a deleted index and removes its files.
    pub(crate) async fn remove(&self, id: &str) -> Result<(), ApiError> {
        self.engines().remove(id);
        self.opening
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id);
        let dir = self.dir.join(id);
        // Its writer thread ends with the requests still using it, after a last commit into
        // the directory: the files go after that.
        let writers = Arc::clone(&self.writers);
        let closed = dir.clone();
        tokio::task::spawn_blocking(move || writers.wait_for(&closed))
            .await
            .map_err(ApiError::internal)?;
        match tokio::fs::remove_dir_all(&dir).await {
            Ok(()) => Ok(()),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(err) => Err(ApiError::internal(err)),
        }
    }
}

/// Closes every index once the server begins to shut down, and holds the metadata store
/// open until their writer threads have committed what they hold and ended (each ends when
/// the last request using its index is done). An index that a request still draining opens
/// after that is not waited for; what it was sent is in its journal.
async fn close_at_shutdown(
    shared: Shared,
    engines: std::sync::Weak<Mutex<HashMap<String, Open>>>,
    writers: Arc<WriterThreads>,
) {
    let Some(_working) = shared.hold_open().await else {
        return;
    };
    let mut stopping = shared.stopping();
    if stopping.wait_for(|stopping| *stopping).await.is_err() {
        return;
    }
    if let Some(engines) = engines.upgrade() {
        engines.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }
    if tokio::task::spawn_blocking(move || writers.join_all())
        .await
        .is_err()
    {
        tracing::error!("index writers not closed at shutdown");
    }
}

/// Past the limit, closes the least recently used indexes no request holds (but `keep`).
fn trim(engines: &mut HashMap<String, Open>, limit: usize, keep: &str) {
    while engines.len() > limit {
        let oldest = engines
            .iter()
            .filter(|(id, open)| id.as_str() != keep && !in_use(open))
            .min_by_key(|(_, open)| open.used)
            .map(|(id, _)| id.clone());
        match oldest {
            Some(id) => engines.remove(&id),
            None => break,
        };
    }
}

/// Whether a request holds the index (the map's is the only other reference).
fn in_use(open: &Open) -> bool {
    Arc::strong_count(&open.engine) > 1
}

/// Removes the index directories that no index row names.
async fn sweep_orphans(shared: &Shared, dir: &std::path::Path) -> Result<(), std::io::Error> {
    let rows: Vec<String> = sqlx::query_scalar("SELECT id FROM search_indexes")
        .fetch_all(shared.store().pool())
        .await
        .map_err(std::io::Error::other)?;
    let known: std::collections::HashSet<String> = rows.into_iter().collect();
    let mut entries = tokio::fs::read_dir(dir).await?;
    while let Some(entry) = entries.next_entry().await? {
        let name = entry.file_name().to_string_lossy().into_owned();
        if entry.file_type().await?.is_dir() && !known.contains(&name) {
            tracing::warn!(directory = %entry.path().display(), "removing the files of a deleted index");
            tokio::fs::remove_dir_all(entry.path()).await?;
        }
    }
    Ok(())
}

/// The answer to an index failure: the server's fault.
pub(crate) fn engine_error(err: EngineError) -> ApiError {
    match err {
        EngineError::Closed => ApiError::Unavailable(err.into()),
        EngineError::Tantivy(_) | EngineError::SchemaMismatch => ApiError::internal(err),
        EngineError::Refused(refused) => refused,
    }
}

#[derive(OpenApi)]
#[openapi(tags((name = "search", description = "Indexes, documents and queries")))]
struct SearchDoc;

/// A route whose body streams past the JSON body limit (it sets its own).
fn unlimited<R>(
    (schemas, paths, method): (
        R,
        utoipa::openapi::path::Paths,
        axum::routing::MethodRouter<Search>,
    ),
) -> (
    R,
    utoipa::openapi::path::Paths,
    axum::routing::MethodRouter<Search>,
) {
    (schemas, paths, method.layer(DefaultBodyLimit::disable()))
}

/// Builds the search routes (and their OpenAPI paths).
pub fn router(search: Search) -> OpenApiRouter {
    let v1 = OpenApiRouter::new()
        .routes(routes!(indexes::create_index, indexes::list_indexes))
        .routes(routes!(indexes::get_index, indexes::delete_index))
        .routes(routes!(indexes::update_settings))
        .routes(routes!(documents::upsert_documents))
        .routes(unlimited(routes!(documents::import_documents)))
        .routes(routes!(documents::get_document))
        .routes(routes!(documents::delete_documents))
        .routes(routes!(queries::search));
    OpenApiRouter::with_openapi(SearchDoc::openapi())
        .nest("/search/v1", v1)
        .with_state(search)
}
