//! The search API: indexes, documents and queries at `{base}/search/v1`, with typed
//! documents through serde, a [`Query`] builder with its [`Filter`]s, and (in `bulk`) a
//! [`BulkLoader`] that cuts a stream of documents into NDJSON imports sent side by side.

use std::collections::BTreeMap;

use reqwest::Method;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use tokio::io::AsyncRead;
use tokio_util::io::ReaderStream;
use url::Url;

use plinth_types::search::{
    CreateIndex, DeleteDocuments, FacetCount, Index, IndexList, IndexSettings, OnError,
    SearchRequest, WriteResponse,
};

mod bulk;

pub use self::bulk::{BulkLoader, BulkOptions, BulkSummary};
use crate::client::Client;
use crate::error::Error;

/// How a write is applied.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WriteOptions {
    /// Answer once the documents are searchable, not only durable.
    pub wait: bool,
    /// Refuse the whole batch for one bad document (the default), or apply the rest.
    pub on_error: OnError,
}

impl WriteOptions {
    fn query(&self) -> [(&'static str, &'static str); 2] {
        [
            ("wait", if self.wait { "true" } else { "false" }),
            ("on_error", self.on_error.as_str()),
        ]
    }
}

/// One hit, its document read into `T`.
#[derive(Clone, Debug, PartialEq, serde::Deserialize)]
pub struct SearchHit<T> {
    /// The document's id.
    pub id: Value,
    /// Its relevance to the query.
    pub score: f32,
    /// Its stored fields.
    pub document: T,
    /// Snippets of the fields asked to be highlighted.
    #[serde(default)]
    pub highlights: BTreeMap<String, String>,
}

/// A page of hits, their documents read into `T`.
#[derive(Clone, Debug, PartialEq, serde::Deserialize)]
pub struct SearchPage<T> {
    /// The hits of this page, in order.
    pub hits: Vec<SearchHit<T>>,
    /// How many documents match in all.
    pub total: u64,
    /// The counts of the facets asked for.
    #[serde(default)]
    pub facets: BTreeMap<String, Vec<FacetCount>>,
    /// The cursor of the next page, when there are more hits ([`Query::after`]).
    #[serde(default)]
    pub next: Option<String>,
    /// How long the search took on the server, in milliseconds.
    pub took_ms: f64,
}

/// A structured filter, as a search's `filter` and a token's `search_filters` take it.
#[derive(Clone, Debug, PartialEq)]
pub struct Filter(Value);

impl Filter {
    /// `field` equals `value`.
    pub fn eq(field: &str, value: impl Into<Value>) -> Filter {
        Filter(json!({"field": field, "eq": value.into()}))
    }

    /// `field` equals one of `values`.
    pub fn any_of<V: Into<Value>>(field: &str, values: impl IntoIterator<Item = V>) -> Filter {
        let values: Vec<Value> = values.into_iter().map(Into::into).collect();
        Filter(json!({"field": field, "in": values}))
    }

    /// `field` is at least `value`.
    pub fn gte(field: &str, value: impl Into<Value>) -> Filter {
        Filter(json!({"field": field, "gte": value.into()}))
    }

    /// `field` is above `value`.
    pub fn gt(field: &str, value: impl Into<Value>) -> Filter {
        Filter(json!({"field": field, "gt": value.into()}))
    }

    /// `field` is at most `value`.
    pub fn lte(field: &str, value: impl Into<Value>) -> Filter {
        Filter(json!({"field": field, "lte": value.into()}))
    }

    /// `field` is below `value`.
    pub fn lt(field: &str, value: impl Into<Value>) -> Filter {
        Filter(json!({"field": field, "lt": value.into()}))
    }

    /// `field` is in `[from, to)`.
    pub fn between(field: &str, from: impl Into<Value>, to: impl Into<Value>) -> Filter {
        Filter(json!({"field": field, "gte": from.into(), "lt": to.into()}))
    }

    /// Both this and `other`.
    #[must_use]
    pub fn and(self, other: Filter) -> Filter {
        Filter(json!({"and": [self.0, other.0]}))
    }

    /// This or `other`.
    #[must_use]
    pub fn or(self, other: Filter) -> Filter {
        Filter(json!({"or": [self.0, other.0]}))
    }

    /// Not `filter`.
    #[allow(clippy::should_implement_trait)]
    pub fn not(filter: Filter) -> Filter {
        Filter(json!({"not": filter.0}))
    }

    /// The filter as JSON.
    pub fn into_json(self) -> Value {
        self.0
    }
}

/// A search, built step by step: `Query::new("lamp").filter(...).sort_desc("price")`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Query(SearchRequest);

impl Query {
    /// A query for `text` (words, `"phrases"`, `-excluded`, `field:word`, `word^2`).
    pub fn new(text: impl Into<String>) -> Query {
        Query(SearchRequest {
            q: text.into(),
            ..SearchRequest::default()
        })
    }

    /// Hits must meet `filter` too (joined with any given before).
    #[must_use]
    pub fn filter(mut self, filter: Filter) -> Query {
        let joined = match self.0.filter.take() {
            Some(before) => Filter(before).and(filter),
            None => filter,
        };
        self.0.filter = Some(joined.0);
        self
    }

    /// Sorts by a sortable field, ascending, after any sort given before.
    #[must_use]
    pub fn sort_asc(mut self, field: &str) -> Query {
        self.0.sort.push(format!("{field}:asc"));
        self
    }

    /// Sorts by a sortable field, descending, after any sort given before.
    #[must_use]
    pub fn sort_desc(mut self, field: &str) -> Query {
        self.0.sort.push(format!("{field}:desc"));
        self
    }

    /// Hits per page (default 20, at most 1000).
    #[must_use]
    pub fn limit(mut self, limit: usize) -> Query {
        self.0.limit = Some(limit);
        self
    }

    /// Hits to skip.
    #[must_use]
    pub fn offset(mut self, offset: usize) -> Query {
        self.0.offset = Some(offset);
        self
    }

    /// Starts after the page whose `next` this is.
    #[must_use]
    pub fn after(mut self, cursor: impl Into<String>) -> Query {
        self.0.after = Some(cursor.into());
        self
    }

    /// Counts the values of these facet fields over every match.
    #[must_use]
    pub fn facets<S: Into<String>>(mut self, fields: impl IntoIterator<Item = S>) -> Query {
        self.0.facets.extend(fields.into_iter().map(Into::into));
        self
    }

    /// Returns snippets of these text fields with the matched words marked.
    #[must_use]
    pub fn highlight<S: Into<String>>(mut self, fields: impl IntoIterator<Item = S>) -> Query {
        self.0.highlight.extend(fields.into_iter().map(Into::into));
        self
    }

    /// Whether the last word also matches the words it begins (default true).
    #[must_use]
    pub fn prefix(mut self, prefix: bool) -> Query {
        self.0.prefix = Some(prefix);
        self
    }

    /// The request as sent.
    pub fn request(&self) -> &SearchRequest {
        &self.0
    }
}

impl From<Query> for SearchRequest {
    fn from(query: Query) -> SearchRequest {
        query.0
    }
}

/// Indexes, documents and searches.
impl Client {
    fn search_url(&self, segments: &[&str]) -> Result<Url, Error> {
        self.url(["search", "v1"].into_iter().chain(segments.iter().copied()))
    }

    /// Creates an index (`POST /indexes`).
    ///
    /// # Errors
    ///
    /// Returns [`Error::Api`] with `invalid_index_name`, `invalid_schema`, `index_name_taken`
    /// or `quota_exceeded`.
    pub async fn create_index(&self, index: &CreateIndex) -> Result<Index, Error> {
        let url = self.search_url(&["indexes"])?;
        self.send_json(self.request(Method::POST, url).json(index))
            .await
    }

    /// Lists the project's indexes (`GET /indexes`).
    ///
    /// # Errors
    ///
    /// Only the failures every call shares.
    pub async fn list_indexes(&self) -> Result<Vec<Index>, Error> {
        let url = self.search_url(&["indexes"])?;
        let list: IndexList = self.send_json(self.request(Method::GET, url)).await?;
        Ok(list.indexes)
    }

    /// Returns an index with its stats (`GET /indexes/{index}`).
    ///
    /// # Errors
    ///
    /// Returns [`Error::Api`] with `index_not_found`.
    pub async fn get_index(&self, index: &str) -> Result<Index, Error> {
        let url = self.search_url(&["indexes", index])?;
        self.send_json(self.request(Method::GET, url)).await
    }

    /// Replaces an index's settings (`PUT /indexes/{index}/settings`).
    ///
    /// # Errors
    ///
    /// Returns [`Error::Api`] with `index_not_found` or `invalid_field`.
    pub async fn update_index_settings(
        &self,
        index: &str,
        settings: &IndexSettings,
    ) -> Result<Index, Error> {
        let url = self.search_url(&["indexes", index, "settings"])?;
        self.send_json(self.request(Method::PUT, url).json(settings))
            .await
    }

    /// Deletes an index and its documents (`DELETE /indexes/{index}`).
    ///
    /// # Errors
    ///
    /// Returns [`Error::Api`] with `index_not_found`.
    pub async fn delete_index(&self, index: &str) -> Result<(), Error> {
        let url = self.search_url(&["indexes", index])?;
        self.send_empty(self.request(Method::DELETE, url)).await
    }

    /// Upserts up to 10,000 documents by primary key (`POST /indexes/{index}/documents`);
    /// answered once they are durable. For more, use [`Client::bulk_loader`].
    ///
    /// # Errors
    ///
    /// Returns [`Error::Api`] with `invalid_document` (its position and field) or
    /// `quota_exceeded`; [`Error::Decode`] when a document does not serialize.
    pub async fn upsert_documents<T: Serialize>(
        &self,
        index: &str,
        documents: &[T],
        options: WriteOptions,
    ) -> Result<WriteResponse, Error> {
        let url = self.search_url(&["indexes", index, "documents"])?;
        let request = self
            .request(Method::POST, url)
            .query(&options.query())
            .json(documents);
        self.send_json(request).await
    }

    /// Streams NDJSON (one document a line) from `reader` as one import
    /// (`POST /indexes/{index}/documents/import`). The body is a stream, so the call is
    /// sent once, without retries.
    ///
    /// # Errors
    ///
    /// As [`Client::upsert_documents`], and [`Error::Transport`] when the reader fails.
    pub async fn import_ndjson(
        &self,
        index: &str,
        reader: impl AsyncRead + Send + 'static,
        options: WriteOptions,
    ) -> Result<WriteResponse, Error> {
        let url = self.search_url(&["indexes", index, "documents", "import"])?;
        let body = reqwest::Body::wrap_stream(ReaderStream::new(reader));
        self.import_body(url, body, options).await
    }

    async fn import_body(
        &self,
        url: Url,
        body: reqwest::Body,
        options: WriteOptions,
    ) -> Result<WriteResponse, Error> {
        let request = self
            .request(Method::POST, url)
            .query(&options.query())
            .header(reqwest::header::CONTENT_TYPE, "application/x-ndjson")
            .body(body);
        self.send_json(request).await
    }

    /// Reads a document by id into `T` (`GET /indexes/{index}/documents/{id}`).
    ///
    /// # Errors
    ///
    /// Returns [`Error::Api`] with `document_not_found` or `index_not_found`;
    /// [`Error::Decode`] when the document does not fit `T`.
    pub async fn get_document<T: DeserializeOwned>(
        &self,
        index: &str,
        id: &str,
    ) -> Result<T, Error> {
        let url = self.search_url(&["indexes", index, "documents", id])?;
        self.send_json(self.request(Method::GET, url)).await
    }

    /// Deletes documents by id (`POST /indexes/{index}/documents/delete`).
    ///
    /// # Errors
    ///
    /// Returns [`Error::Api`] with `invalid_document` for an id of the wrong type.
    pub async fn delete_documents(
        &self,
        index: &str,
        ids: impl IntoIterator<Item = Value>,
        wait: bool,
    ) -> Result<WriteResponse, Error> {
        let body = DeleteDocuments {
            ids: ids.into_iter().collect(),
            filter: None,
        };
        self.delete_request(index, &body, wait).await
    }

    /// Deletes every document `filter` matches; answers how many.
    ///
    /// # Errors
    ///
    /// Returns [`Error::Api`] with `invalid_filter`.
    pub async fn delete_matching(
        &self,
        index: &str,
        filter: Filter,
        wait: bool,
    ) -> Result<WriteResponse, Error> {
        let body = DeleteDocuments {
            ids: Vec::new(),
            filter: Some(filter.0),
        };
        self.delete_request(index, &body, wait).await
    }

    async fn delete_request(
        &self,
        index: &str,
        body: &DeleteDocuments,
        wait: bool,
    ) -> Result<WriteResponse, Error> {
        let url = self.search_url(&["indexes", index, "documents", "delete"])?;
        let request = self
            .request(Method::POST, url)
            .query(&[("wait", wait)])
            .json(body);
        self.send_json(request).await
    }

    /// Searches an index; hits' documents are read into `T`
    /// (`POST /indexes/{index}/search`).
    ///
    /// # Errors
    ///
    /// Returns [`Error::Api`] with `invalid_query` (its position), `invalid_filter`,
    /// `invalid_cursor` or `index_not_found`; [`Error::Decode`] when a document does not
    /// fit `T`.
    pub async fn search<T: DeserializeOwned>(
        &self,
        index: &str,
        query: impl Into<SearchRequest>,
    ) -> Result<SearchPage<T>, Error> {
        let url = self.search_url(&["indexes", index, "search"])?;
        let request: SearchRequest = query.into();
        self.send_json(self.request(Method::POST, url).json(&request))
            .await
    }
}
