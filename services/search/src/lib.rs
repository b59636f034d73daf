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
//! Still to come, part of issue #5: NDJSON bulk loads and delete by filter, closing idle
//! indexes, the SDK and CLI, and the benchmark.

pub mod documents;
pub mod engine;
pub mod indexes;
mod ledger;
pub mod names;
pub mod queries;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use axum::extract::{DefaultBodyLimit, FromRef};
use plinth_shared::{ApiError, Shared};
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::engine::schema::Compiled;
use crate::engine::{Engine, EngineError};
use crate::indexes::IndexRow;
use crate::ledger::IndexLedger;

/// The search service's state.
#[derive(Clone, Debug)]
pub struct Search {
    shared: Shared,
    dir: PathBuf,
    /// The indexes opened so far, by id.
    engines: Arc<Mutex<HashMap<String, Arc<Engine>>>>,
}

impl FromRef<Search> for Shared {
    fn from_ref(search: &Search) -> Shared {
        search.shared.clone()
    }
}

impl Search {
    /// Prepares the index directory the configuration names.
    ///
    /// # Errors
    ///
    /// Returns an error when `search_dir` cannot be created.
    pub async fn open(shared: Shared) -> Result<Search, std::io::Error> {
        let dir = shared.config().search_dir();
        tokio::fs::create_dir_all(&dir).await?;
        Ok(Search {
            shared,
            dir,
            engines: Arc::default(),
        })
    }

    fn engines(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Engine>>> {
        self.engines.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The open index of a row, opening it on first use.
    pub(crate) async fn engine(&self, row: &IndexRow) -> Result<Arc<Engine>, ApiError> {
        if let Some(engine) = self.engines().get(&row.id) {
            return Ok(engine.clone());
        }
        let dir = self.dir.join(&row.id);
        let schema = Compiled::new(&row.index.schema)?;
        let refresh = self.shared.config().search_refresh_interval;
        let ledger = Box::new(IndexLedger {
            shared: self.shared.clone(),
            runtime: tokio::runtime::Handle::current(),
            project_id: row.project_id.clone(),
            index_id: row.id.clone(),
        });
        let opened =
            tokio::task::spawn_blocking(move || Engine::open(&dir, schema, refresh, ledger))
                .await
                .map_err(ApiError::internal)?
                .map_err(engine_error)?;
        let mut engines = self.engines();
        // Another request opened it meanwhile: the one already listed wins.
        let engine = engines
            .entry(row.id.clone())
            .or_insert_with(|| Arc::new(opened))
            .clone();
        Ok(engine)
    }

    /// Closes a deleted index and removes its files.
    pub(crate) async fn remove(&self, id: &str) -> Result<(), ApiError> {
        self.engines().remove(id);
        let dir = self.dir.join(id);
        match tokio::fs::remove_dir_all(&dir).await {
            Ok(()) => Ok(()),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(err) => Err(ApiError::internal(err)),
        }
    }
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
