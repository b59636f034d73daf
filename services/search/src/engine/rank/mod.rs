//! The order of hits: by relevance or by sortable fields, ties broken by the document's id,
//! and cursors that resume a listing after its last hit.
//!
//! - this file: a [`Sort`] checked from a request, the values hits are ordered by, and the
//!   [`Cursor`] that names a position in that order;
//! - [`collect`]: the collector that finds a page of hits in that order.
//!
//! A field with several values sorts by its least value ascending and its greatest
//! descending; a document without the field sorts last either way.

use std::cmp::Ordering;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use plinth_shared::ApiError;
use plinth_types::search::FieldType;
use serde::{Deserialize, Serialize};

use super::schema::Compiled;

mod collect;

pub(crate) use self::collect::{RankedHit, Ranking};

/// Most keys one sort may have.
const MAX_KEYS: usize = 8;
/// The name that stands for relevance in a sort.
const SCORE: &str = "_score";

/// What one key sorts by.
#[derive(Clone, Debug, PartialEq)]
enum Target {
    Score,
    Field { name: String, field_type: FieldType },
}

/// One key of a sort.
#[derive(Clone, Debug, PartialEq)]
struct Key {
    target: Target,
    descending: bool,
}

/// A checked sort: its keys, and how it is written (a cursor names the sort it was made
/// for).
#[derive(Clone, Debug)]
pub(crate) struct Sort {
    keys: Vec<Key>,
    spelled: String,
}

/// A hit's value for one key.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub(crate) enum KeyValue {
    /// The document has no value for the field.
    Missing,
    Bool(bool),
    /// Integers, and dates as nanoseconds since 1970.
    Int(i64),
    /// Floats, and scores; a cursor holds their bits, which JSON's decimals may not.
    Float(#[serde(with = "float_bits")] f64),
    Text(String),
    /// A keyword's place in one segment's dictionary, while that segment is collected.
    #[serde(skip)]
    Place(u64),
}

/// A float written as `{"f": bits}`: a cursor must give back the very value it was made
/// with, or it would skip or repeat the hit it stands at.
mod float_bits {
    use serde::ser::SerializeMap as _;
    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(value: &f64, into: S) -> Result<S::Ok, S::Error> {
        let mut map = into.serialize_map(Some(1))?;
        map.serialize_entry("f", &value.to_bits())?;
        map.end()
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(from: D) -> Result<f64, D::Error> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Bits {
            f: u64,
        }
        Ok(f64::from_bits(Bits::deserialize(from)?.f))
    }
}

fn invalid(reason: impl Into<String>) -> ApiError {
    ApiError::InvalidFilter {
        parameter: "sort",
        reason: reason.into(),
    }
}

impl Sort {
    /// Relevance, best first.
    pub(crate) fn relevance() -> Sort {
        Sort {
            keys: vec![Key {
                target: Target::Score,
                descending: true,
            }],
            spelled: format!("{SCORE}:desc"),
        }
    }

    /// Checks a sort as the request writes it (`["price:desc", "_score"]`).
    ///
    /// # Errors
    ///
    /// Returns `invalid_filter` (parameter `sort`) for an unknown or unsortable field, an
    /// order other than `asc` or `desc`, a key given twice, or too many keys.
    pub(crate) fn parse(schema: &Compiled, written: &[String]) -> Result<Sort, ApiError> {
        if written.is_empty() {
            return Ok(Sort::relevance());
        }
        if written.len() > MAX_KEYS {
            return Err(invalid(format!("at most {MAX_KEYS} keys")));
        }
        let mut keys: Vec<Key> = Vec::with_capacity(written.len());
        let mut spelled = Vec::with_capacity(written.len());
        for key in written {
            let (name, order) = match key.split_once(':') {
                Some((name, order)) => (name, Some(order)),
                None => (key.as_str(), None),
            };
            let target = if name == SCORE {
                Target::Score
            } else {
                let info = schema
                    .fields
                    .get(name)
                    .ok_or_else(|| invalid(format!("`{name}` is not a field of the index")))?;
                if !info.sortable {
                    return Err(invalid(format!("`{name}` is not declared sortable")));
                }
                Target::Field {
                    name: name.to_owned(),
                    field_type: info.field_type,
                }
            };
            let descending = match order {
                None => target == Target::Score,
                Some("asc") => false,
                Some("desc") => true,
                Some(other) => {
                    return Err(invalid(format!(
                        "`{other}` is not an order; write `{name}:asc` or `{name}:desc`"
                    )));
                }
            };
            if keys.iter().any(|k| k.target == target) {
                return Err(invalid(format!("`{name}` is given twice")));
            }
            spelled.push(format!(
                "{name}:{}",
                if descending { "desc" } else { "asc" }
            ));
            keys.push(Key { target, descending });
        }
        Ok(Sort {
            keys,
            spelled: spelled.join(","),
        })
    }

    /// How two hits' keys compare: `Less` when the first comes first.
    fn compare(&self, a: &[KeyValue], b: &[KeyValue]) -> Ordering {
        for (n, (a, b)) in a.iter().zip(b).enumerate() {
            let order = self.compare_key(n, a, b);
            if order != Ordering::Equal {
                return order;
            }
        }
        Ordering::Equal
    }

    /// How two values of key `n` compare: `Less` when the first comes first.
    fn compare_key(&self, n: usize, a: &KeyValue, b: &KeyValue) -> Ordering {
        match (a, b) {
            (KeyValue::Missing, KeyValue::Missing) => Ordering::Equal,
            (KeyValue::Missing, _) => Ordering::Greater,
            (_, KeyValue::Missing) => Ordering::Less,
            (a, b) => {
                let natural = match (a, b) {
                    (KeyValue::Bool(a), KeyValue::Bool(b)) => a.cmp(b),
                    (KeyValue::Int(a), KeyValue::Int(b)) => a.cmp(b),
                    (KeyValue::Float(a), KeyValue::Float(b)) => a.total_cmp(b),
                    (KeyValue::Text(a), KeyValue::Text(b)) => a.cmp(b),
                    (KeyValue::Place(a), KeyValue::Place(b)) => a.cmp(b),
                    // A checked cursor holds values of the keys' own types.
                    _ => Ordering::Equal,
                };
                if self.keys.get(n).is_some_and(|k| k.descending) {
                    natural.reverse()
                } else {
                    natural
                }
            }
        }
    }

    fn compare_hits(&self, a: &RankedHit, b: &RankedHit) -> Ordering {
        self.compare(&a.keys, &b.keys)
            .then_with(|| a.id.compare(&b.id))
    }

    /// Whether the best come first by score, so that tantivy can skip what scores too low.
    pub(crate) fn best_scores_first(&self) -> bool {
        self.keys
            .first()
            .is_some_and(|k| k.target == Target::Score && k.descending)
    }
}

/// Where a page resumes: the keys and id of the last hit before it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) struct Cursor {
    /// The sort it was made for, as [`Sort`] spells it.
    #[serde(rename = "s")]
    sort: String,
    #[serde(rename = "k")]
    keys: Vec<KeyValue>,
    #[serde(rename = "i")]
    id: String,
}

impl Cursor {
    /// The cursor that resumes after `hit`.
    pub(crate) fn after(sort: &Sort, hit: &RankedHit) -> String {
        let cursor = Cursor {
            sort: sort.spelled.clone(),
            keys: hit.keys.clone(),
            id: hit.id.word().to_owned(),
        };
        let json = serde_json::to_vec(&cursor).unwrap_or_default();
        URL_SAFE_NO_PAD.encode(json)
    }

    /// Reads a cursor made for `sort`.
    ///
    /// # Errors
    ///
    /// Returns `invalid_cursor` for one that is malformed or was made for another sort.
    pub(crate) fn parse(sort: &Sort, written: &str) -> Result<Cursor, ApiError> {
        let cursor: Cursor = URL_SAFE_NO_PAD
            .decode(written)
            .ok()
            .and_then(|json| serde_json::from_slice(&json).ok())
            .ok_or(ApiError::InvalidCursor)?;
        if cursor.sort != sort.spelled || cursor.keys.len() != sort.keys.len() {
            return Err(ApiError::InvalidCursor);
        }
        for (key, value) in sort.keys.iter().zip(&cursor.keys) {
            let fits = match (&key.target, value) {
                (_, KeyValue::Missing) => true,
                (Target::Score, KeyValue::Float(_)) => true,
                (Target::Field { field_type, .. }, value) => matches!(
                    (field_type, value),
                    (FieldType::Boolean, KeyValue::Bool(_))
                        | (FieldType::Integer | FieldType::Date, KeyValue::Int(_))
                        | (FieldType::Float, KeyValue::Float(_))
                        | (FieldType::Keyword, KeyValue::Text(_))
                ),
                _ => false,
            };
            if !fits {
                return Err(ApiError::InvalidCursor);
            }
        }
        Ok(cursor)
    }
}

#[cfg(test)]
mod tests {
    use tantivy::DocAddress;

    use super::collect::HitId;
    use super::*;

    fn hit(keys: Vec<KeyValue>, id: &str) -> RankedHit {
        RankedHit {
            keys,
            id: HitId::known(id),
            score: 0.0,
            address: DocAddress::new(0, 0),
        }
    }

    fn sort(keys: &[(FieldType, bool)]) -> Sort {
        Sort {
            keys: keys
                .iter()
                .map(|&(field_type, descending)| Key {
                    target: Target::Field {
                        name: "f".into(),
                        field_type,
                    },
                    descending,
                })
                .collect(),
            spelled: "f".into(),
        }
    }

    #[test]
    fn missing_values_sort_last_both_ways_and_ids_break_ties() {
        for descending in [false, true] {
            let s = sort(&[(FieldType::Integer, descending)]);
            let mut hits = [
                hit(vec![KeyValue::Missing], "a"),
                hit(vec![KeyValue::Int(2)], "b"),
                hit(vec![KeyValue::Int(1)], "d"),
                hit(vec![KeyValue::Int(1)], "c"),
            ];
            hits.sort_by(|a, b| s.compare_hits(a, b));
            let ids: Vec<&str> = hits.iter().map(|h| h.id.word()).collect();
            let expected = if descending {
                ["b", "c", "d", "a"]
            } else {
                ["c", "d", "b", "a"]
            };
            assert_eq!(ids, expected);
        }
    }

    #[test]
    fn cursors_name_their_sort_and_keep_their_types() {
        let s = sort(&[(FieldType::Float, true)]);
        let written = Cursor::after(&s, &hit(vec![KeyValue::Float(5.0)], "x"));
        let cursor = Cursor::parse(&s, &written).unwrap();
        assert_eq!(cursor.keys, [KeyValue::Float(5.0)]);
        assert_eq!(cursor.id, "x");
        let other = sort(&[(FieldType::Float, false)]);
        let other = Sort {
            spelled: "f:asc".into(),
            ..other
        };
        assert!(matches!(
            Cursor::parse(&other, &written),
            Err(ApiError::InvalidCursor)
        ));
        assert!(matches!(
            Cursor::parse(&s, "not a cursor"),
            Err(ApiError::InvalidCursor)
        ));
        // A float comes back bit for bit, even one whose shortest decimal parses back wrong
        // by a naive reader.
        for value in [2.0642948150634766_f64, 0.1 + 0.2, f64::MIN_POSITIVE, 1e300] {
            let written = Cursor::after(&s, &hit(vec![KeyValue::Float(value)], "x"));
            let cursor = Cursor::parse(&s, &written).unwrap();
            assert_eq!(cursor.keys[0], KeyValue::Float(value));
        }
        let ints = sort(&[(FieldType::Integer, true)]);
        let wrong_type = Cursor::after(&ints, &hit(vec![KeyValue::Text("a".into())], "x"));
        assert!(matches!(
            Cursor::parse(&ints, &wrong_type),
            Err(ApiError::InvalidCursor)
        ));
    }
}
