//! A JSON document checked against its index's schema and turned into what tantivy indexes.

use plinth_shared::ApiError;
use plinth_types::search::{FieldType, RejectedDocument};
use serde_json::{Map, Value};
use tantivy::{DateTime, TantivyDocument};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::schema::{Compiled, FieldInfo};

/// Longest primary key, in bytes.
const MAX_ID_BYTES: usize = 512;
/// Most values one field of a document may hold.
const MAX_VALUES: usize = 1000;

/// A document ready to index.
#[derive(Debug)]
pub(crate) struct Prepared {
    /// Its primary key as a term.
    pub(crate) id: String,
    pub(crate) document: TantivyDocument,
    /// The document's JSON as it was accepted, for the index's journal.
    pub(crate) journaled: Vec<u8>,
}

impl Prepared {
    /// Checks `value` (the document at `position` of its batch) against the schema.
    ///
    /// # Errors
    ///
    /// Returns what is wrong with it: not an object, an unknown field, a value of the wrong
    /// type, a missing or bad primary key.
    pub(crate) fn new(
        schema: &Compiled,
        position: usize,
        value: Value,
    ) -> Result<Prepared, RejectedDocument> {
        let journaled = serde_json::to_vec(&value).map_err(|err| RejectedDocument {
            position,
            field: String::new(),
            reason: err.to_string(),
        })?;
        Self::checked(schema, position, value, journaled)
    }

    /// Parses `line` (the document at `position` of its batch) and checks it against the
    /// schema; the line itself is what the journal keeps.
    ///
    /// # Errors
    ///
    /// Returns why the line is not JSON, or what [`Prepared::new`] finds wrong with it.
    pub(crate) fn from_json(
        schema: &Compiled,
        position: usize,
        line: &[u8],
    ) -> Result<Prepared, RejectedDocument> {
        let value = serde_json::from_slice(line).map_err(|err| RejectedDocument {
            position,
            field: String::new(),
            reason: format!("not JSON: {err}"),
        })?;
        Self::checked(schema, position, value, line.trim_ascii().to_vec())
    }

    fn checked(
        schema: &Compiled,
        position: usize,
        value: Value,
        journaled: Vec<u8>,
    ) -> Result<Prepared, RejectedDocument> {
        let reject = |field: &str, reason: String| RejectedDocument {
            position,
            field: field.to_owned(),
            reason,
        };
        let Value::Object(object) = value else {
            return Err(reject("", "a document is a JSON object".into()));
        };
        let id = match object.get(&schema.primary_key) {
            Some(value) => id_term(value).map_err(|reason| reject(&schema.primary_key, reason))?,
            None => {
                return Err(reject(
                    &schema.primary_key,
                    "the primary key is missing".into(),
                ));
            }
        };
        let mut document = TantivyDocument::default();
        let mut source = Map::new();
        for (name, value) in object {
            let Some(info) = schema.fields.get(&name) else {
                return Err(reject(&name, "not a field of the schema".into()));
            };
            if value.is_null() {
                continue;
            }
            add_values(&mut document, info, &value).map_err(|reason| reject(&name, reason))?;
            if info.stored {
                source.insert(name, value);
            }
        }
        document.add_text(schema.id, &id);
        let source = serde_json::to_vec(&source).map_err(|err| reject("", err.to_string()))?;
        document.add_bytes(schema.source, &source);
        Ok(Prepared {
            id,
            document,
            journaled,
        })
    }
}

/// The term of a primary key: a string as it is, an integer in decimal.
///
/// # Errors
///
/// Returns why the value cannot be an id.
pub(crate) fn id_term(value: &Value) -> Result<String, String> {
    let id = match value {
        Value::String(s) if !s.is_empty() => s.clone(),
        Value::Number(n) if n.is_i64() => n.to_string(),
        _ => return Err("an id is a non-empty string or an integer".into()),
    };
    if id.len() > MAX_ID_BYTES {
        return Err(format!("an id is at most {MAX_ID_BYTES} bytes"));
    }
    Ok(id)
}

/// Adds a field's value, or each value of an array, to a document.
fn add_values(
    document: &mut TantivyDocument,
    info: &FieldInfo,
    value: &Value,
) -> Result<(), String> {
    let values = match value {
        Value::Array(values) if values.len() > MAX_VALUES => {
            return Err(format!("at most {MAX_VALUES} values"));
        }
        Value::Array(values) => values.as_slice(),
        single => std::slice::from_ref(single),
    };
    for value in values {
        add_value(document, info, value)?;
    }
    Ok(())
}

fn add_value(
    document: &mut TantivyDocument,
    info: &FieldInfo,
    value: &Value,
) -> Result<(), String> {
    let field = info.field;
    let wrong = |expected: &str| format!("expected {expected}, got {}", kind(value));
    match (info.field_type, value) {
        (FieldType::Text | FieldType::Keyword, Value::String(text)) => {
            document.add_text(field, text);
        }
        (FieldType::Text, _) => return Err(wrong("a string")),
        (FieldType::Keyword, _) => return Err(wrong("a string")),
        (FieldType::Integer, Value::Number(n)) => match n.as_i64() {
            Some(n) => document.add_i64(field, n),
            None => return Err(wrong("an integer")),
        },
        (FieldType::Integer, _) => return Err(wrong("an integer")),
        (FieldType::Float, Value::Number(n)) => match n.as_f64() {
            Some(n) => document.add_f64(field, n),
            None => return Err(wrong("a number")),
        },
        (FieldType::Float, _) => return Err(wrong("a number")),
        (FieldType::Boolean, Value::Bool(b)) => document.add_bool(field, *b),
        (FieldType::Boolean, _) => return Err(wrong("true or false")),
        (FieldType::Date, Value::String(text)) => {
            let at = OffsetDateTime::parse(text, &Rfc3339)
                .map_err(|_| "expected an RFC 3339 date, such as 2026-12-04T08:00:00Z")?;
            document.add_date(field, DateTime::from_utc(at));
        }
        (FieldType::Date, _) => return Err(wrong("an RFC 3339 date string")),
    }
    Ok(())
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// The error of a whole batch refused for one document.
pub(crate) fn refused(rejected: RejectedDocument) -> ApiError {
    ApiError::InvalidDocument {
        position: rejected.position,
        field: rejected.field,
        reason: rejected.reason,
    }
}
