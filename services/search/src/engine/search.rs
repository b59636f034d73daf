//! Running a search: the query and filter, the order and page, facet counts and highlights.

use std::collections::BTreeMap;
use std::sync::Arc;

use plinth_types::search::{FacetCount, Hit, IndexSettings, SearchRequest};
use serde_json::Value;
use tantivy::TantivyDocument;
use tantivy::query::{BooleanQuery, ConstScoreQuery, Occur, Query};

use super::facets::Facets;
use super::filter::filter_query;
use super::highlight::Highlighter;
use super::query::Planner;
use super::rank::{Cursor, Ranking, Sort};
use super::{Engine, EngineError, SearchError};

/// What a request that does not say gets.
pub(crate) const DEFAULT_LIMIT: usize = 20;
pub(crate) const DEFAULT_FACET_LIMIT: usize = 10;
pub(crate) const DEFAULT_SNIPPET_CHARS: usize = 200;

/// What a search found.
#[derive(Debug)]
pub(crate) struct Found {
    pub(crate) hits: Vec<Hit>,
    pub(crate) total: u64,
    pub(crate) facets: BTreeMap<String, Vec<FacetCount>>,
    /// The cursor of the next page, when there is one.
    pub(crate) next: Option<String>,
}

impl Engine {
    /// Runs a search whose limits the route has checked. `forced` is a filter every hit
    /// must also meet, whatever the request says (a tenant token's).
    ///
    /// # Errors
    ///
    /// Returns the request's mistake (`invalid_query`, `invalid_filter`, `invalid_cursor`),
    /// or tantivy's error.
    pub(crate) fn search(
        &self,
        settings: &IndexSettings,
        request: &SearchRequest,
        forced: Option<&Value>,
    ) -> Result<Found, SearchError> {
        let planner = Planner {
            schema: &self.schema,
            settings,
            prefix: request.prefix.unwrap_or(true),
        };
        let mut query: Box<dyn Query> = planner.plan(&request.q).map_err(SearchError::Query)?;
        let filters = request
            .filter
            .iter()
            .map(|f| (f, "filter"))
            .chain(forced.map(|f| (f, "search_filters")));
        for (filter, parameter) in filters {
            let filter =
                filter_query(&self.schema, filter, parameter).map_err(SearchError::Query)?;
            query = Box::new(BooleanQuery::new(vec![
                (Occur::Must, query),
                (Occur::Must, Box::new(ConstScoreQuery::new(filter, 0.0))),
            ]));
        }
        let sort = Arc::new(Sort::parse(&self.schema, &request.sort).map_err(SearchError::Query)?);
        let after = match &request.after {
            Some(written) => Some(Cursor::parse(&sort, written).map_err(SearchError::Query)?),
            None => None,
        };
        let facets = Facets::new(
            &self.schema,
            &request.facets,
            request.facet_limit.unwrap_or(DEFAULT_FACET_LIMIT),
        )
        .map_err(SearchError::Query)?;
        let highlighter = if request.highlight.is_empty() {
            None
        } else {
            let sought = planner.sought(&request.q).map_err(SearchError::Query)?;
            let chars = request.snippet_chars.unwrap_or(DEFAULT_SNIPPET_CHARS);
            Some(
                Highlighter::new(&self.schema, &request.highlight, &sought, chars)
                    .map_err(SearchError::Query)?,
            )
        };
        let limit = request.limit.unwrap_or(DEFAULT_LIMIT);
        let offset = request.offset.unwrap_or(0);

        let searcher = self.reader.searcher();
        let collectors = (
            Ranking::new(Arc::clone(&sort), after, (limit, offset)),
            facets,
        );
        let (ranked, counts) = searcher
            .search(&query, &collectors)
            .map_err(EngineError::from)?;
        let mut hits = Vec::with_capacity(ranked.hits.len());
        for hit in &ranked.hits {
            let document: TantivyDocument = searcher.doc(hit.address).map_err(EngineError::from)?;
            let document = self.source(&document);
            let id = document
                .get(&self.schema.primary_key)
                .cloned()
                .unwrap_or(Value::Null);
            let highlights = highlighter
                .as_ref()
                .map(|h| h.snippets(&document))
                .unwrap_or_default();
            hits.push(Hit {
                id,
                score: hit.score,
                document,
                highlights,
            });
        }
        let shown = offset as u64 + ranked.hits.len() as u64;
        let next = match ranked.hits.last() {
            Some(last) if ranked.after_cursor > shown => Some(Cursor::after(&sort, last)),
            _ => None,
        };
        Ok(Found {
            hits,
            total: ranked.total,
            facets: if collectors.1.is_empty() {
                BTreeMap::new()
            } else {
                collectors.1.answer(counts)
            },
            next,
        })
    }
}
