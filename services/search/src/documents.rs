//! The document routes: upsert a batch, import NDJSON, get one by id, delete by ids or by
//! filter.

use axum::body::Body;
use axum::extract::State;
use futures::TryStreamExt as _;
use plinth_shared::ApiError;
use plinth_shared::auth::Caller;
use plinth_shared::extract::{Json, Path, Query};
use plinth_types::search::{DeleteDocuments, OnError, WriteResponse};
use plinth_types::{ErrorBody, Scope};
use serde::Deserialize;
use serde_json::{Map, Value};
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, BufReader};
use tokio_util::io::StreamReader;

use crate::engine::document::{Prepared, id_term, refused};
use crate::engine::filter::filter_query;
use crate::engine::{Change, Engine, SearchError};
use crate::indexes::{IndexRow, authorized_index};
use crate::{Search, engine_error};

/// Most documents in one batch.
const MAX_BATCH: usize = 10_000;
/// The longest line of an import: one document.
const MAX_LINE_BYTES: usize = 1024 * 1024;
/// The most an import that refuses on error may send: it is held until its end.
pub const MAX_HELD_IMPORT: usize = 64 * 1024 * 1024;
/// How an import is cut into writes.
const IMPORT_CHUNK: usize = 5_000;
const IMPORT_CHUNK_BYTES: usize = 8 * 1024 * 1024;
/// The bad lines of an import listed in its answer.
const MAX_LISTED_REJECTED: usize = 1000;

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
    Ok(Json(WriteResponse {
        applied,
        rejected,
        rejected_total: None,
    }))
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
    let engine = search.engine(&row).await?;
    let change = match (&body.filter, body.ids.is_empty()) {
        (Some(_), false) => {
            return Err(ApiError::InvalidField {
                field: "ids".into(),
                reason: "give `ids` or `filter`, not both".into(),
            });
        }
        (Some(filter), true) => {
            let query = filter_query(engine.schema(), filter, "filter")?;
            Change::DeleteMatching(query)
        }
        (None, _) if body.ids.is_empty() || body.ids.len() > MAX_BATCH => {
            return Err(ApiError::InvalidField {
                field: "ids".into(),
                reason: format!("send 1 to {MAX_BATCH} ids, or a `filter`"),
            });
        }
        (None, _) => {
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
            Change::Delete(ids)
        }
    };
    let applied = engine
        .write(change, params.wait)
        .await
        .map_err(engine_error)?;
    Ok(Json(WriteResponse {
        applied,
        rejected: Vec::new(),
        rejected_total: None,
    }))
}

/// Imports documents streamed as NDJSON, one per line, written in batches as they arrive.
///
/// With `on_error=refuse` (the default) every line is checked before any is written, so a
/// bad one refuses the import whole; the import is then held in memory and limited to
/// [`MAX_HELD_IMPORT`] bytes. With `on_error=skip` the import streams with no limit but
/// the one per line, and the bad lines are listed (the first thousand) and counted.
#[utoipa::path(
    post,
    path = "/indexes/{index}/documents/import",
    tag = "search",
    params(
        ("index" = String, Path, description = "Index name"),
        ("on_error" = Option<String>, Query, description = "`refuse` (default): a bad line refuses the import; `skip`: the rest is applied"),
        ("wait" = Option<bool>, Query, description = "Answer once the documents are searchable"),
    ),
    request_body(content = String, content_type = "application/x-ndjson", description = "One JSON document per line"),
    responses(
        (status = 200, description = "Applied (and what was left out)", body = WriteResponse),
        (status = 400, description = "A line does not fit the schema; nothing applied (with `on_error=refuse`)", body = ErrorBody),
        (status = 404, description = "No such index", body = ErrorBody),
    )
)]
pub async fn import_documents(
    State(search): State<Search>,
    caller: Caller,
    Path(index): Path<String>,
    Query(params): Query<WriteParams>,
    body: Body,
) -> Result<Json<WriteResponse>, ApiError> {
    let row = authorized_index(&search, &caller, &index, Scope::SearchWrite).await?;
    let engine = search.engine(&row).await?;
    let stream = body.into_data_stream().map_err(std::io::Error::other);
    let mut lines = BufReader::new(StreamReader::new(stream));
    let mut line = Vec::new();
    let mut position = 0;
    let mut held_bytes = 0;
    let mut held = Vec::new();
    let mut chunk = Vec::new();
    let mut chunk_bytes = 0;
    let mut applied = 0;
    let mut rejected = Vec::new();
    let mut rejected_total = 0;
    loop {
        line.clear();
        let read = (&mut lines)
            .take(MAX_LINE_BYTES as u64 + 1)
            .read_until(b'\n', &mut line)
            .await
            .map_err(|err| ApiError::InvalidField {
                field: "body".into(),
                reason: format!("the body could not be read: {err}"),
            })?;
        if read == 0 {
            break;
        }
        if line.len() > MAX_LINE_BYTES && line.last() != Some(&b'\n') {
            return Err(ApiError::InvalidDocument {
                position,
                field: String::new(),
                reason: format!("a line holds at most {MAX_LINE_BYTES} bytes"),
            });
        }
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let prepared = Prepared::from_json(engine.schema(), position, &line);
        position += 1;
        let prepared = match prepared {
            Ok(prepared) => prepared,
            Err(bad) if params.on_error == OnError::Refuse => return Err(refused(bad)),
            Err(bad) => {
                rejected_total += 1;
                if rejected.len() < MAX_LISTED_REJECTED {
                    rejected.push(bad);
                }
                continue;
            }
        };
        if params.on_error == OnError::Refuse {
            held_bytes += line.len();
            if held_bytes > MAX_HELD_IMPORT {
                return Err(ApiError::InvalidField {
                    field: "body".into(),
                    reason: format!(
                        "an import that refuses on error is held until its end: send at most \
                         {MAX_HELD_IMPORT} bytes per request, or use on_error=skip"
                    ),
                });
            }
            held.push(prepared);
            continue;
        }
        chunk_bytes += line.len();
        chunk.push(prepared);
        if chunk.len() >= IMPORT_CHUNK || chunk_bytes >= IMPORT_CHUNK_BYTES {
            applied +=
                write_chunk(&search, &row, &engine, std::mem::take(&mut chunk), false).await?;
            chunk_bytes = 0;
        }
    }
    // Held documents go in chunks too, so no single write is unbounded.
    let mut rest = held;
    rest.append(&mut chunk);
    if rest.is_empty() && params.wait {
        // Nothing left to write, but the caller waits for what came before to be
        // searchable: an empty commit that waits does it.
        engine
            .write(Change::Upsert(Vec::new()), true)
            .await
            .map_err(engine_error)?;
    }
    while !rest.is_empty() {
        let tail = rest.split_off(rest.len().min(IMPORT_CHUNK));
        let last = tail.is_empty();
        let this = std::mem::replace(&mut rest, tail);
        applied += write_chunk(&search, &row, &engine, this, params.wait && last).await?;
    }
    Ok(Json(WriteResponse {
        applied,
        rejected,
        rejected_total: (rejected_total > MAX_LISTED_REJECTED as u64).then_some(rejected_total),
    }))
}

/// Writes one chunk of an import and meters it.
async fn write_chunk(
    search: &Search,
    row: &IndexRow,
    engine: &Engine,
    documents: Vec<Prepared>,
    wait: bool,
) -> Result<u64, ApiError> {
    let applied = engine
        .write(Change::Upsert(documents), wait)
        .await
        .map_err(engine_error)?;
    search
        .shared
        .usage()
        .record(&row.project_id, "documents_indexed", applied);
    Ok(applied)
}
