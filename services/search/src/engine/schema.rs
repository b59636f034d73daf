//! An index's schema: checked once ([`Compiled::new`]), then turned into tantivy's schema and
//! the table of fields documents and queries are resolved against.
//!
//! Besides the declared fields every index has two of Plinth's own: `_id`, the primary key
//! as a string term (an upsert deletes the documents with it before adding the new one; a
//! fast field, so sorted results break ties by it),
//! and `_source`, the document's stored fields as JSON, which hits and `GET` return.

use std::collections::{BTreeMap, HashSet};

use plinth_shared::ApiError;
use plinth_types::search::{Analyzer, FieldType, IndexSchema};
use tantivy::schema::{
    BytesOptions, DateOptions, Field, IndexRecordOption, NumericOptions, STORED, STRING, Schema,
    TextFieldIndexing, TextOptions,
};

use super::analysis::analyzer_name;

/// Most fields an index may declare.
const MAX_FIELDS: usize = 256;
/// The name of the primary-key term field.
pub(crate) const ID_FIELD: &str = "_id";
/// The name of the stored-document field.
pub(crate) const SOURCE_FIELD: &str = "_source";

/// A declared field, resolved.
#[derive(Clone, Debug)]
pub(crate) struct FieldInfo {
    pub(crate) field: Field,
    pub(crate) field_type: FieldType,
    pub(crate) stored: bool,
    pub(crate) indexed: bool,
    /// Whether hits can be sorted by it (a fast field).
    pub(crate) sortable: bool,
    /// Whether its values can be counted (a fast field).
    pub(crate) facet: bool,
    /// The analyzer of a text field.
    pub(crate) analyzer: Analyzer,
}

/// A checked schema with its tantivy counterpart.
#[derive(Clone, Debug)]
pub(crate) struct Compiled {
    pub(crate) schema: Schema,
    pub(crate) fields: BTreeMap<String, FieldInfo>,
    pub(crate) primary_key: String,
    pub(crate) id: Field,
    pub(crate) source: Field,
    /// The text fields a query without a field searches.
    pub(crate) default_fields: Vec<String>,
}

fn invalid(reason: impl Into<String>) -> ApiError {
    ApiError::InvalidSchema(reason.into())
}

/// Checks a field name: 1 to 64 of `a-z`, `A-Z`, `0-9`, `_`, not starting with `_`.
fn check_name(name: &str) -> Result<(), ApiError> {
    let good = !name.is_empty()
        && name.len() <= 64
        && !name.starts_with('_')
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if good {
        Ok(())
    } else {
        Err(invalid(format!(
            "field name `{name}` must be 1 to 64 of a-z, A-Z, 0-9 and _, not starting with _"
        )))
    }
}

impl Compiled {
    /// Checks a schema and builds tantivy's.
    ///
    /// # Errors
    ///
    /// Returns `invalid_schema` with what is wrong.
    pub(crate) fn new(declared: &IndexSchema) -> Result<Compiled, ApiError> {
        if declared.fields.is_empty() || declared.fields.len() > MAX_FIELDS {
            return Err(invalid(format!("declare 1 to {MAX_FIELDS} fields")));
        }
        let mut builder = Schema::builder();
        let mut fields = BTreeMap::new();
        let mut seen = HashSet::new();
        for f in &declared.fields {
            check_name(&f.name)?;
            if !seen.insert(f.name.as_str()) {
                return Err(invalid(format!("field `{}` is declared twice", f.name)));
            }
            let is_key = f.name == declared.primary_key;
            if f.analyzer.is_some() && f.field_type != FieldType::Text {
                return Err(invalid(format!(
                    "field `{}`: only text fields have an analyzer",
                    f.name
                )));
            }
            if f.field_type == FieldType::Text && (f.sortable || f.facet) {
                return Err(invalid(format!(
                    "field `{}`: a text field cannot be sortable or a facet; add a keyword field",
                    f.name
                )));
            }
            if f.facet && matches!(f.field_type, FieldType::Float | FieldType::Date) {
                return Err(invalid(format!(
                    "field `{}`: facets count keyword, integer and boolean values",
                    f.name
                )));
            }
            if is_key && !matches!(f.field_type, FieldType::Keyword | FieldType::Integer) {
                return Err(invalid(format!(
                    "primary key `{}` must be a keyword or integer field",
                    f.name
                )));
            }
            let analyzer = f.analyzer.unwrap_or_default();
            let fast = f.sortable || f.facet;
            let field = match f.field_type {
                FieldType::Text => {
                    let mut options = TextOptions::default();
                    if f.indexed {
                        options = options.set_indexing_options(
                            TextFieldIndexing::default()
                                .set_tokenizer(analyzer_name(analyzer))
                                .set_index_option(IndexRecordOption::WithFreqsAndPositions),
                        );
                    }
                    builder.add_text_field(&f.name, options)
                }
                FieldType::Keyword => {
                    let mut options = if f.indexed {
                        STRING
                    } else {
                        TextOptions::default()
                    };
                    if fast {
                        options = options.set_fast("raw");
                    }
                    builder.add_text_field(&f.name, options)
                }
                FieldType::Integer => builder.add_i64_field(&f.name, numeric(f.indexed, fast)),
                FieldType::Float => builder.add_f64_field(&f.name, numeric(f.indexed, fast)),
                FieldType::Boolean => builder.add_bool_field(&f.name, numeric(f.indexed, fast)),
                FieldType::Date => {
                    let mut options = DateOptions::default();
                    if f.indexed {
                        options = options.set_indexed();
                    }
                    if fast {
                        options = options.set_fast();
                    }
                    builder.add_date_field(&f.name, options)
                }
            };
            fields.insert(
                f.name.clone(),
                FieldInfo {
                    field,
                    field_type: f.field_type,
                    // The primary key is always returned: it names the hit.
                    stored: f.stored || is_key,
                    indexed: f.indexed,
                    sortable: f.sortable,
                    facet: f.facet,
                    analyzer,
                },
            );
        }
        if !fields.contains_key(&declared.primary_key) {
            return Err(invalid(format!(
                "primary key `{}` is not a declared field",
                declared.primary_key
            )));
        }
        let default_fields = if declared.default_search_fields.is_empty() {
            fields
                .iter()
                .filter(|(_, f)| f.field_type == FieldType::Text && f.indexed)
                .map(|(name, _)| name.clone())
                .collect()
        } else {
            for name in &declared.default_search_fields {
                match fields.get(name) {
                    Some(f) if f.field_type == FieldType::Text && f.indexed => {}
                    _ => {
                        return Err(invalid(format!(
                            "default search field `{name}` is not an indexed text field"
                        )));
                    }
                }
            }
            declared.default_search_fields.clone()
        };
        // A fast field too: it breaks ties in sorted results and cursors.
        let id = builder.add_text_field(ID_FIELD, STRING.set_fast("raw"));
        let source = builder.add_bytes_field(SOURCE_FIELD, BytesOptions::from(STORED));
        Ok(Compiled {
            schema: builder.build(),
            fields,
            primary_key: declared.primary_key.clone(),
            id,
            source,
            default_fields,
        })
    }
}

fn numeric(indexed: bool, fast: bool) -> NumericOptions {
    let mut options = NumericOptions::default();
    if indexed {
        options = options.set_indexed();
    }
    if fast {
        options = options.set_fast();
    }
    options
}
