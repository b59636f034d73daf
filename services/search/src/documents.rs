//! The document routes: upsert a batch, get one by id, delete by ids.

use axum::extract::State;
use plinth_shared::ApiError;
use plinth_shared::auth::Caller;
use plinth_shared::extract::{Json, Path, Query};
use plinth_types::search::{DeleteDocuments, WriteResponse};
use plinth_types::{ErrorBody, Scope};
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::engine::document::{Prepared, id_term, refused};
use crate::engine::{Change, SearchError};
use crate::indexes::authorized_index;
use crate::{Search, engine_error};

/// Most documents in one batch.
const MAX_BATCH: usize = 10_000;

/// What to do with the documents of a batch that do not fit the schema.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnError {
    /// Refuse the whole batch, naming the first bad document.
    #[default]
    Refuse,
    /// Apply the valid ones and list the others.
    Skip,
}

/// The query string of a write.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WriteParams {
    /// What to do with documents that do not fit the schema.
    #[serde(default)]
    on_error: OnError,
    /// Answer once the documents are searchable, not only durable.
    #[serde(default)]
    wait: bool,
}

/// Adds documents, replacing those with the same ids; answers once they are durable.
#[utoipa::path(
    post,
    path = "/indexes/{index}/documents",
    tag = "search",
    params(
        ("index" = String, Path, description = "Index name"),
        ("on_error" = Option<String>, Query, description = "`refuse` (default): a bad document refuses the batch; `skip`: the rest is applied"),
        ("wait" = Option<bool>, Query, description = "Answer once the documents are searchable"),
    ),
    request_body = Vec<Object>,
    responses(
        (status = 200, description = "Applied (and what was left out)", body = WriteResponse),
        (status = 400, description = "A document does not fit the schema; nothing applied", body = ErrorBody),
        (status = 404, description = "No such index", body = ErrorBody),
    )
)]
pub async fn upsert_documents(
    State(search): State<Search>,
    caller: Caller,
    Path(index): Path<String>,
    Query(params): Query<WriteParams>,
    Json(documents): Json<Vec<Value>>,
) -> Result<Json<WriteResponse>, ApiError> {
    let row = authorized_index(&search, &caller, &index, Scope::SearchWrite).await?;
    if documents.is_empty() || documents.len() > MAX_BATCH {
        return Err(ApiError::InvalidField {
            field: "documents".into(),
            reason: format!("send 1 to {MAX_BATCH} documents"),
        });
    }
    let engine = search.engine(&row).await?;

    let mut prepared = Vec::with_capacity(documents.len());
    let mut rejected = Vec::new();
    for (position, document) in documents.into_iter().enumerate() {
        match Prepared::new(engine.schema(), position, document) {
            Ok(document) => prepared.push(document),
            Err(bad) if params.on_error == OnError::Refuse => return Err(refused(bad)),
            Err(bad) => rejected.push(bad),
        }
    }
    let applied = prepared.len() as u64;
    if applied > 0 {
        // The writer books the documents against the project's quota before it commits.
        engine
            .write(Change::Upsert(prepared), params.wait)
            .await
            .map_err(engine_error)?;
        search
            .shared
            .usage()
            .record(&row.project_id, "documents_indexed", applied);
    }
    Ok(Json(WriteResponse { applied, rejected }))
}

/// Reads a document's stored fields by its id.
#[utoipa::path(
    get,
    path = "/indexes/{index}/documents/{id}",
    tag = "search",
    params(
        ("index" = String, Path, description = "Index name"),
        ("id" = String, Path, description = "The document's primary key"),
    ),
    responses(
        (status = 200, description = "The document", body = Object),
        (status = 404, description = "No such index or document", body = ErrorBody),
    )
)]
pub async fn get_document(
    State(search): State<Search>,
    caller: Caller,
    Path((index, id)): Path<(String, String)>,
) -> Result<Json<Map<String, Value>>, ApiError> {
    let row = authorized_index(&search, &caller, &index, Scope::SearchRead).await?;
    let engine = search.engine(&row).await?;
    // A token's search filter holds here too: a document it cannot find is not there.
    let forced = caller.search_filter(&index);
    let lookup = id.clone();
    let found = tokio::task::spawn_blocking(move || engine.get(&lookup, forced.as_ref()))
        .await
        .map_err(ApiError::internal)?;
    match found {
        Ok(Some(document)) => Ok(Json(document)),
        Ok(None) => Err(ApiError::DocumentNotFound(id)),
        Err(SearchError::Query(err)) => Err(err),
        Err(SearchError::Engine(err)) => Err(engine_error(err)),
    }
}

/// Deletes documents by their ids; ids that name no document are no error.
#[utoipa::path(
    post,
    path = "/indexes/{index}/documents/delete",
    tag = "search",
    params(
        ("index" = String, Path, description = "Index name"),
        ("wait" = Option<bool>, Query, description = "Answer once the deletion is searchable"),
    ),
    request_body = DeleteDocuments,
    responses(
        (status = 200, description = "Deleted", body = WriteResponse),
        (status = 400, description = "A bad id; nothing deleted", body = ErrorBody),
        (status = 404, description = "No such index", body = ErrorBody),
    )
)]
pub async fn delete_documents(
    State(search): State<Search>,
    caller: Caller,
    Path(index): Path<String>,
    Query(params): Query<WriteParams>,
    Json(body): Json<DeleteDocuments>,
) -> Result<Json<WriteResponse>, ApiError> {
    let row = authorized_index(&search, &caller, &index, Scope::SearchWrite).await?;
    if body.ids.is_empty() || body.ids.len() > MAX_BATCH {
        return Err(ApiError::InvalidField {
            field: "ids".into(),
            reason: format!("send 1 to {MAX_BATCH} ids"),
        });
    }
    let ids = body
        .ids
        .iter()
        .enumerate()
        .map(|(position, id)| {
            id_term(id).map_err(|reason| ApiError::InvalidDocument {
                position,
                field: row.index.schema.primary_key.clone(),
                reason,
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let engine = search.engine(&row).await?;
    let count = ids.len() as u64;
    engine
        .write(Change::Delete(ids), params.wait)
        .await
        .map_err(engine_error)?;
    Ok(Json(WriteResponse {
        applied: count,
        rejected: Vec::new(),
    }))
}
