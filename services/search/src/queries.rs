//! The search route.

use std::time::Instant;

use axum::extract::State;
use plinth_shared::ApiError;
use plinth_shared::auth::Caller;
use plinth_shared::extract::{Json, Path};
use plinth_types::search::{SearchRequest, SearchResponse};
use plinth_types::{ErrorBody, Scope};

use crate::engine::SearchError;
use crate::engine::highlight::SNIPPET_CHARS;
use crate::engine::search::DEFAULT_LIMIT;
use crate::indexes::authorized_index;
use crate::{Search, engine_error};

/// Most hits one page returns, and the deepest page an offset reaches.
const MAX_LIMIT: usize = 1000;
const MAX_OFFSET: usize = 10_000;
/// Most values a facet lists.
const MAX_FACET_LIMIT: usize = 100;

/// Searches an index.
#[utoipa::path(
    post,
    path = "/indexes/{index}/search",
    tag = "search",
    params(("index" = String, Path, description = "Index name")),
    request_body = SearchRequest,
    responses(
        (status = 200, description = "A page of hits, best first", body = SearchResponse),
        (status = 400, description = "A malformed query, with its position", body = ErrorBody),
        (status = 404, description = "No such index", body = ErrorBody),
    )
)]
pub async fn search(
    State(search): State<Search>,
    caller: Caller,
    Path(index): Path<String>,
    Json(body): Json<SearchRequest>,
) -> Result<Json<SearchResponse>, ApiError> {
    let started = Instant::now();
    let row = authorized_index(&search, &caller, &index, Scope::SearchRead).await?;
    let limit = body.limit.unwrap_or(DEFAULT_LIMIT);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(ApiError::InvalidField {
            field: "limit".into(),
            reason: format!("must be 1 to {MAX_LIMIT}"),
        });
    }
    let offset = body.offset.unwrap_or(0);
    if offset > MAX_OFFSET {
        return Err(ApiError::InvalidField {
            field: "offset".into(),
            reason: format!("must be at most {MAX_OFFSET}"),
        });
    }
    if let Some(n) = body.facet_limit
        && !(1..=MAX_FACET_LIMIT).contains(&n)
    {
        return Err(ApiError::InvalidField {
            field: "facet_limit".into(),
            reason: format!("must be 1 to {MAX_FACET_LIMIT}"),
        });
    }
    if let Some(n) = body.snippet_chars
        && !SNIPPET_CHARS.contains(&n)
    {
        return Err(ApiError::InvalidField {
            field: "snippet_chars".into(),
            reason: format!(
                "must be {} to {}",
                SNIPPET_CHARS.start(),
                SNIPPET_CHARS.end()
            ),
        });
    }
    let engine = search.engine(&row).await?;

    let settings = row.index.settings;
    // A token's search filter narrows every query; the request cannot lift it.
    let forced = caller.search_filter(&index);
    let found =
        tokio::task::spawn_blocking(move || engine.search(&settings, &body, forced.as_ref()))
            .await
            .map_err(ApiError::internal)?;
    let found = match found {
        Ok(found) => found,
        Err(SearchError::Query(err)) => return Err(err),
        Err(SearchError::Engine(err)) => return Err(engine_error(err)),
    };
    search
        .shared
        .usage()
        .record(&row.project_id, "search_queries", 1);
    Ok(Json(SearchResponse {
        hits: found.hits,
        total: found.total,
        facets: found.facets,
        next: found.next,
        took_ms: started.elapsed().as_secs_f64() * 1000.0,
    }))
}
