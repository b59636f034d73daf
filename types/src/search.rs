//! Bodies of the search API: indexes and their schemas, documents, queries and hits.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

/// The type of a field's values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum FieldType {
    /// Full text, split into words by the field's analyzer.
    Text,
    /// A string matched whole (tags, ids, categories).
    Keyword,
    /// A 64-bit signed integer.
    Integer,
    /// A 64-bit float.
    Float,
    /// `true` or `false`.
    Boolean,
    /// An RFC 3339 date and time.
    Date,
}

/// How a text field is split into words.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Analyzer {
    /// Words split on anything but letters and digits, lowercased, accents folded.
    #[default]
    Default,
    /// As `default`, then reduced to their English stems ("running" finds "run").
    English,
    /// For Chinese and Japanese: runs of CJK characters become overlapping pairs of
    /// characters (so a word is found by its characters in order), other text as `default`.
    Cjk,
}

/// One field of a schema.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct FieldSchema {
    /// The field's name in documents: 1 to 64 of `a-z`, `A-Z`, `0-9`, `_`, not starting with
    /// `_` (those are Plinth's).
    pub name: String,
    /// The type of its values; a document may also give an array of them.
    #[serde(rename = "type")]
    pub field_type: FieldType,
    /// Returned in hits and by `GET`; default true.
    #[serde(default = "yes")]
    pub stored: bool,
    /// Searchable (text) or filterable (other types); default true.
    #[serde(default = "yes")]
    pub indexed: bool,
    /// Hits can be sorted by it (not on text fields); default false.
    #[serde(default)]
    pub sortable: bool,
    /// Searches can count hits per value (keyword, integer, boolean); default false.
    #[serde(default)]
    pub facet: bool,
    /// How a text field is split into words; only on text fields.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub analyzer: Option<Analyzer>,
}

fn yes() -> bool {
    true
}

/// The fields of an index's documents.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct IndexSchema {
    /// The fields; a document may leave any out but the primary key.
    pub fields: Vec<FieldSchema>,
    /// The field that identifies a document (keyword or integer): upserting a document with
    /// an id already present replaces it.
    pub primary_key: String,
    /// The text fields a query searches when it names none; every indexed text field when
    /// empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub default_search_fields: Vec<String>,
}

/// When a query word may match a word that differs from it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct TypoTolerance {
    /// Whether words may match with typos at all; default true.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Words at least this long may match with one typo; default 5.
    #[serde(default = "five")]
    pub one_typo_from: u32,
    /// Words at least this long may match with two typos; default 9.
    #[serde(default = "nine")]
    pub two_typos_from: u32,
}

fn five() -> u32 {
    5
}

fn nine() -> u32 {
    9
}

impl Default for TypoTolerance {
    fn default() -> Self {
        TypoTolerance {
            enabled: true,
            one_typo_from: 5,
            two_typos_from: 9,
        }
    }
}

/// An index's query-time settings.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct IndexSettings {
    /// Words and the words a query for them also finds (`"tv": ["television"]`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub synonyms: BTreeMap<String, Vec<String>>,
    /// Words queries ignore.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stop_words: Vec<String>,
    /// When words may match with typos.
    #[serde(default)]
    pub typo_tolerance: TypoTolerance,
}

/// Body of `POST /search/v1/indexes`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CreateIndex {
    /// The index's name, unique within its project (the rules of topic names).
    pub name: String,
    /// Its fields.
    pub schema: IndexSchema,
    /// Its settings; defaults where absent.
    #[serde(default)]
    pub settings: IndexSettings,
}

/// What an index holds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct IndexStats {
    /// Searchable documents.
    pub documents: u64,
    /// Bytes its files take on disk.
    pub bytes: u64,
}

/// An index of a project.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Index {
    /// The index's name.
    pub name: String,
    /// Its fields.
    pub schema: IndexSchema,
    /// Its settings.
    pub settings: IndexSettings,
    /// What it holds; only on `GET /indexes/{index}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stats: Option<IndexStats>,
    /// When it was created.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}

/// Body of `GET /search/v1/indexes`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct IndexList {
    /// The project's indexes, by name.
    pub indexes: Vec<Index>,
}

/// What a write does with the documents that do not fit the schema.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum OnError {
    /// Refuse the whole batch, naming the first bad document.
    #[default]
    Refuse,
    /// Apply the valid ones and list the others.
    Skip,
}

impl OnError {
    /// The name in a query string.
    pub fn as_str(self) -> &'static str {
        match self {
            OnError::Refuse => "refuse",
            OnError::Skip => "skip",
        }
    }
}

/// A document of a batch that was not applied, and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RejectedDocument {
    /// Its position in the batch, from 0.
    pub position: usize,
    /// The field at fault.
    pub field: String,
    /// What is wrong with it.
    pub reason: String,
}

/// The answer to an upsert or a delete.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct WriteResponse {
    /// Documents written (upserted or deleted), durable once this is answered.
    pub applied: u64,
    /// Documents of the batch left out (only with `on_error=skip`); an import lists the
    /// first thousand.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rejected: Vec<RejectedDocument>,
    /// How many were left out in all, when more than are listed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rejected_total: Option<u64>,
}

/// Body of `POST /indexes/{index}/documents/delete`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct DeleteDocuments {
    /// The ids of the documents to delete.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ids: Vec<serde_json::Value>,
    /// Instead of ids, a filter (as a search's): every document it matches is deleted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>))]
    pub filter: Option<serde_json::Value>,
}

/// Body of `POST /indexes/{index}/search`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct SearchRequest {
    /// The query: words, `"phrases"`, `+required`, `-excluded`, `field:word`, `word^2`
    /// (boost). Empty matches every document.
    #[serde(default)]
    pub q: String,
    /// Conditions hits must meet, without changing their scores: `{"field": F, "eq": V}`,
    /// `{"field": F, "in": [V, ...]}`, `{"field": F, "gte": A, "lt": B}` (also `gt`, `lte`),
    /// combined with `{"and": [...]}`, `{"or": [...]}` and `{"not": {...}}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>))]
    pub filter: Option<serde_json::Value>,
    /// Hits to return; default 20, at most 1000.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<usize>,
    /// Hits to skip first; default 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offset: Option<usize>,
    /// Whether the last word also matches words it begins (search as you type); default
    /// true.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<bool>,
    /// The order of the hits: sortable fields and `_score`, each `name`, `name:asc` or
    /// `name:desc` (fields ascend by default, `_score` descends); ties go to the next key,
    /// then to the id. Default: by relevance.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sort: Vec<String>,
    /// A cursor from an earlier page's `next`: this page starts after that page's last hit.
    /// Only good with the same `sort`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<String>,
    /// Facet fields whose values to count over all matches.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub facets: Vec<String>,
    /// Values each facet lists, most frequent first; default 10, at most 100.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub facet_limit: Option<usize>,
    /// Text fields to highlight: each hit gets a snippet of them with the words that matched
    /// in `<mark>` and the rest HTML-escaped.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub highlight: Vec<String>,
    /// The length of a snippet in characters; longer text is cut around its matches;
    /// default 200, 20 to 2000.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snippet_chars: Option<usize>,
}

/// One hit of a search.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Hit {
    /// The document's id.
    pub id: serde_json::Value,
    /// Its relevance to the query.
    pub score: f32,
    /// Its stored fields.
    pub document: serde_json::Map<String, serde_json::Value>,
    /// Snippets of the fields asked to be highlighted, by field.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub highlights: BTreeMap<String, String>,
}

/// How many matches hold one value of a facet field.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct FacetCount {
    /// The value.
    pub value: serde_json::Value,
    /// The matches holding it.
    pub count: u64,
}

/// The answer to a search.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SearchResponse {
    /// The hits of this page, best first.
    pub hits: Vec<Hit>,
    /// How many documents match in all.
    pub total: u64,
    /// The counts of the facets asked for, by field, most frequent first.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub facets: BTreeMap<String, Vec<FacetCount>>,
    /// The cursor of the next page (pass it as `after`), when there are more hits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
    /// How long the search took, in milliseconds.
    pub took_ms: f64,
}
