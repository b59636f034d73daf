//! Structured filters: a JSON tree of conditions on keyword, number, boolean and date
//! fields, combined with `and`, `or` and `not`. A filter narrows the hits without changing
//! their scores.
//!
//! ```json
//! {"and": [
//!     {"field": "tags", "in": ["home", "garden"]},
//!     {"field": "price", "gte": 10, "lt": 20},
//!     {"not": {"field": "listed", "eq": false}}
//! ]}
//! ```

use std::ops::Bound;

use plinth_shared::ApiError;
use plinth_types::search::FieldType;
use serde_json::{Map, Value};
use tantivy::query::{AllQuery, BooleanQuery, Occur, Query, RangeQuery, TermQuery};
use tantivy::schema::IndexRecordOption;
use tantivy::{DateTime, Term};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::schema::{Compiled, FieldInfo};

/// Deepest nesting of `and`, `or` and `not`, and most conditions in all.
const MAX_DEPTH: usize = 16;
const MAX_CONDITIONS: usize = 1000;

/// Builds the query of a filter given as `parameter` of the request (`filter`), or as a
/// token's (`search_filters`).
///
/// # Errors
///
/// Returns `invalid_filter` with the path of the mistake (`filter.and[1].field`).
pub(crate) fn filter_query(
    schema: &Compiled,
    filter: &Value,
    parameter: &'static str,
) -> Result<Box<dyn Query>, ApiError> {
    let mut builder = Builder {
        schema,
        parameter,
        conditions: 0,
    };
    builder.node(filter, parameter, 0)
}

/// Walks a filter's tree.
struct Builder<'a> {
    schema: &'a Compiled,
    parameter: &'static str,
    conditions: usize,
}

impl Builder<'_> {
    fn invalid(&self, path: &str, reason: impl std::fmt::Display) -> ApiError {
        ApiError::InvalidFilter {
            parameter: self.parameter,
            reason: format!("at `{path}`: {reason}"),
        }
    }

    fn node(
        &mut self,
        value: &Value,
        path: &str,
        depth: usize,
    ) -> Result<Box<dyn Query>, ApiError> {
        if depth > MAX_DEPTH {
            return Err(self.invalid(path, format!("nested deeper than {MAX_DEPTH}")));
        }
        self.conditions += 1;
        if self.conditions > MAX_CONDITIONS {
            return Err(self.invalid(path, format!("more than {MAX_CONDITIONS} conditions")));
        }
        let Value::Object(object) = value else {
            return Err(self.invalid(path, "a condition is a JSON object"));
        };
        for (combinator, occur) in [("and", Occur::Must), ("or", Occur::Should)] {
            if let Some(children) = object.get(combinator) {
                self.only(object, path, &[combinator])?;
                let Value::Array(children) = children else {
                    return Err(self.invalid(path, format!("`{combinator}` takes an array")));
                };
                if children.is_empty() {
                    return Err(self.invalid(path, format!("`{combinator}` needs a condition")));
                }
                let mut parts = Vec::with_capacity(children.len());
                for (n, child) in children.iter().enumerate() {
                    let child_path = format!("{path}.{combinator}[{n}]");
                    parts.push((occur, self.node(child, &child_path, depth + 1)?));
                }
                return Ok(Box::new(BooleanQuery::new(parts)));
            }
        }
        if let Some(child) = object.get("not") {
            self.only(object, path, &["not"])?;
            let inner = self.node(child, &format!("{path}.not"), depth + 1)?;
            return Ok(Box::new(BooleanQuery::new(vec![
                (Occur::Must, Box::new(AllQuery)),
                (Occur::MustNot, inner),
            ])));
        }
        self.condition(object, path)
    }

    /// Refuses keys other than `allowed`.
    fn only(
        &self,
        object: &Map<String, Value>,
        path: &str,
        allowed: &[&str],
    ) -> Result<(), ApiError> {
        match object.keys().find(|k| !allowed.contains(&k.as_str())) {
            Some(key) => Err(self.invalid(
                path,
                format!("`{key}` cannot stand beside `{}`", allowed[0]),
            )),
            None => Ok(()),
        }
    }

    /// One condition on a field: `eq`, `in`, or bounds (`gt`, `gte`, `lt`, `lte`).
    fn condition(
        &self,
        object: &Map<String, Value>,
        path: &str,
    ) -> Result<Box<dyn Query>, ApiError> {
        let Some(Value::String(name)) = object.get("field") else {
            return Err(self.invalid(path, "give `field`, or `and`, `or`, `not`"));
        };
        let info =
            self.schema.fields.get(name).ok_or_else(|| {
                self.invalid(path, format!("`{name}` is not a field of the index"))
            })?;
        if info.field_type == FieldType::Text {
            return Err(self.invalid(
                path,
                format!("`{name}` is a text field; filter on a keyword field"),
            ));
        }
        if !info.indexed {
            return Err(self.invalid(path, format!("`{name}` is not indexed")));
        }
        self.only(
            object,
            path,
            &["field", "eq", "in", "gt", "gte", "lt", "lte"],
        )?;
        let term_at = |key: &str, value: &Value| {
            term(info, value).map_err(|r| self.invalid(&format!("{path}.{key}"), r))
        };
        if let Some(value) = object.get("eq") {
            self.only(object, path, &["field", "eq"])?;
            return Ok(Box::new(TermQuery::new(
                term_at("eq", value)?,
                IndexRecordOption::Basic,
            )));
        }
        if let Some(values) = object.get("in") {
            self.only(object, path, &["field", "in"])?;
            let Value::Array(values) = values else {
                return Err(self.invalid(path, "`in` takes an array"));
            };
            if values.is_empty() || values.len() > MAX_CONDITIONS {
                return Err(self.invalid(path, format!("`in` takes 1 to {MAX_CONDITIONS} values")));
            }
            let mut parts: Vec<(Occur, Box<dyn Query>)> = Vec::with_capacity(values.len());
            for value in values {
                let query = TermQuery::new(term_at("in", value)?, IndexRecordOption::Basic);
                parts.push((Occur::Should, Box::new(query)));
            }
            return Ok(Box::new(BooleanQuery::new(parts)));
        }
        let bound = |inclusive: &str, exclusive: &str| -> Result<Bound<Term>, ApiError> {
            match (object.get(inclusive), object.get(exclusive)) {
                (Some(_), Some(_)) => Err(self.invalid(
                    path,
                    format!("give `{inclusive}` or `{exclusive}`, not both"),
                )),
                (Some(value), None) => Ok(Bound::Included(term_at(inclusive, value)?)),
                (None, Some(value)) => Ok(Bound::Excluded(term_at(exclusive, value)?)),
                (None, None) => Ok(Bound::Unbounded),
            }
        };
        let (lower, upper) = (bound("gte", "gt")?, bound("lte", "lt")?);
        if matches!((&lower, &upper), (Bound::Unbounded, Bound::Unbounded)) {
            return Err(self.invalid(
                path,
                "give `eq`, `in`, or bounds (`gt`, `gte`, `lt`, `lte`)",
            ));
        }
        if matches!(info.field_type, FieldType::Boolean) {
            return Err(self.invalid(path, "a boolean field takes `eq`"));
        }
        Ok(Box::new(RangeQuery::new(lower, upper)))
    }
}

/// The term of a value for a field, or why it cannot be one.
fn term(info: &FieldInfo, value: &Value) -> Result<Term, String> {
    let field = info.field;
    match (info.field_type, value) {
        (FieldType::Keyword | FieldType::Text, Value::String(s)) => {
            Ok(Term::from_field_text(field, s))
        }
        (FieldType::Integer, Value::Number(n)) if n.is_i64() => {
            Ok(Term::from_field_i64(field, n.as_i64().unwrap_or_default()))
        }
        (FieldType::Float, Value::Number(n)) => {
            Ok(Term::from_field_f64(field, n.as_f64().unwrap_or_default()))
        }
        (FieldType::Boolean, Value::Bool(b)) => Ok(Term::from_field_bool(field, *b)),
        (FieldType::Date, Value::String(s)) => OffsetDateTime::parse(s, &Rfc3339)
            .map(|at| Term::from_field_date(field, DateTime::from_utc(at)))
            .map_err(|_| "expected an RFC 3339 date".to_owned()),
        (FieldType::Keyword | FieldType::Text, _) => Err("expected a string".into()),
        (FieldType::Integer, _) => Err("expected an integer".into()),
        (FieldType::Float, _) => Err("expected a number".into()),
        (FieldType::Boolean, _) => Err("expected true or false".into()),
        (FieldType::Date, _) => Err("expected an RFC 3339 date string".into()),
    }
}
