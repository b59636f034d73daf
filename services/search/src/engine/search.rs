//! Running a search: the query and filter, the order and page, facet counts and highlights.

use std::collections::BTreeMap;
use std::sync::Arc;

use plinth_types::search::{FacetCount, Hit, IndexSettings, SearchRequest};
use serde_json::Value;
use tantivy::TantivyDocument;
use tantivy::collector::Count;
use tantivy::query::{BooleanQuery, ConstScoreQuery, EnableScoring, Occur};

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

/// The threads searches spread an index's segments over, shared by all indexes.
#[derive(Clone)]
pub(crate) struct SearchThreads(tantivy::Executor);

impl SearchThreads {
    /// `threads` threads; one searches in the caller's thread.
    ///
    /// # Errors
    ///
    /// Returns an error when the threads cannot be started.
    pub(crate) fn new(threads: usize) -> tantivy::Result<SearchThreads> {
        Ok(SearchThreads(if threads <= 1 {
            tantivy::Executor::single_thread()
        } else {
            tantivy::Executor::multi_thread(threads, "plinth-search-")?
        }))
    }
}

impl std::fmt::Debug for SearchThreads {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SearchThreads")
    }
}

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
        let searcher = self.reader.searcher();
        let planner = Planner {
            schema: &self.schema,
            settings,
            prefix: request.prefix.unwrap_or(true),
            searcher: &searcher,
        };
        let plan = planner.plan(&request.q)?;
        let mut query = plan.query;
        // A filter joins the query in an intersection that tantivy does not prune.
        let filtered = request.filter.is_some() || forced.is_some();
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
            let chars = request.snippet_chars.unwrap_or(DEFAULT_SNIPPET_CHARS);
            Some(
                Highlighter::new(&self.schema, &request.highlight, &plan.sought, chars)
                    .map_err(SearchError::Query)?,
            )
        };
        let limit = request.limit.unwrap_or(DEFAULT_LIMIT);
        let offset = request.offset.unwrap_or(0);

        // Facets need every match, and so does a query tantivy cannot prune: the ranking
        // counts them as it goes. Otherwise it skips what cannot make the page, and the
        // matches are counted apart, unscored.
        let prune = plan.terms.is_some() && !filtered && facets.is_empty();
        let scoring = EnableScoring::enabled_from_searcher(&searcher);
        // The terms are weighed again, alone, only for a ranking that sums them again.
        let terms = match &plan.terms {
            Some(terms) if sort.best_scores_first() => Some(
                terms
                    .iter()
                    .map(|term| term.weight(scoring))
                    .collect::<tantivy::Result<Vec<_>>>()?,
            ),
            _ => None,
        };
        let ranking = Ranking::new(Arc::clone(&sort), after, (limit, offset), prune, terms);
        let executor = &self.threads.0;
        let (ranked, facets) = if facets.is_empty() {
            let ranked = searcher.search_with_executor(&query, &ranking, executor, scoring)?;
            (ranked, BTreeMap::new())
        } else {
            let both = (ranking, facets);
            let (ranked, counts) =
                searcher.search_with_executor(&query, &both, executor, scoring)?;
            (ranked, both.1.answer(counts))
        };
        let total = match ranked.total {
            Some(total) => total,
            None => {
                let unscored = EnableScoring::disabled_from_searcher(&searcher);
                searcher.search_with_executor(&query, &Count, executor, unscored)? as u64
            }
        };
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
        let next = match ranked.hits.last() {
            Some(last) if ranked.more => Some(Cursor::after(&sort, last)),
            _ => None,
        };
        Ok(Found {
            hits,
            total,
            facets,
            next,
        })
    }
}
