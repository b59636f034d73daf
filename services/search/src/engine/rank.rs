//! The order of hits: by relevance or by sortable fields, ties broken by the document's id,
//! and cursors that resume a listing after its last hit.
//!
//! One collector serves every order. Each segment keeps the best `offset + limit` of its
//! matches (a buffer of twice that, cut back to the best when full, so a match that cannot
//! make the page is turned away by comparing it with the worst one kept); the segments'
//! best are then merged. A field with several values sorts by its least value ascending and
//! its greatest descending; a document without the field sorts last either way.

use std::cmp::Ordering;
use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use plinth_shared::ApiError;
use plinth_types::search::FieldType;
use serde::{Deserialize, Serialize};
use tantivy::collector::{Collector, SegmentCollector};
use tantivy::columnar::{Column, StrColumn};
use tantivy::{DateTime, DocAddress, DocId, Score, SegmentOrdinal, SegmentReader};

use super::schema::{Compiled, ID_FIELD};

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
    /// Floats, and scores.
    Float(f64),
    Text(String),
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
        self.compare(&a.keys, &b.keys).then_with(|| a.id.cmp(&b.id))
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
            id: hit.id.clone(),
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

/// A hit with what it was ranked by.
#[derive(Clone, Debug)]
pub(crate) struct RankedHit {
    pub(crate) keys: Vec<KeyValue>,
    pub(crate) id: String,
    pub(crate) score: Score,
    pub(crate) address: DocAddress,
}

/// A page of hits in order, with the counts around it.
#[derive(Debug)]
pub(crate) struct Ranked {
    pub(crate) hits: Vec<RankedHit>,
    /// Every match.
    pub(crate) total: u64,
    /// The matches after the cursor (all of them without one).
    pub(crate) after_cursor: u64,
}

/// Collects a page of hits in a sort's order.
pub(crate) struct Ranking {
    sort: Arc<Sort>,
    after: Option<Arc<Cursor>>,
    offset: usize,
    limit: usize,
}

impl Ranking {
    pub(crate) fn new(
        sort: Arc<Sort>,
        after: Option<Cursor>,
        (limit, offset): (usize, usize),
    ) -> Ranking {
        Ranking {
            sort,
            after: after.map(Arc::new),
            offset,
            limit,
        }
    }
}

/// A sort key's column in one segment.
enum KeyColumn {
    Score,
    Bool(Column<bool>),
    Int(Column<i64>),
    Float(Column<f64>),
    Date(Column<DateTime>),
    Text(StrColumn),
    /// No document of the segment has the field.
    Absent,
}

/// The least (ascending) or greatest (descending) of a document's values.
fn pick<T: PartialOrd>(values: impl Iterator<Item = T>, descending: bool) -> Option<T> {
    values.reduce(|best, v| {
        let better = if descending { v > best } else { v < best };
        if better { v } else { best }
    })
}

impl KeyColumn {
    fn open(reader: &SegmentReader, key: &Key) -> tantivy::Result<KeyColumn> {
        let Target::Field { name, field_type } = &key.target else {
            return Ok(KeyColumn::Score);
        };
        let fast = reader.fast_fields();
        let column = match field_type {
            FieldType::Boolean => fast.column_opt(name)?.map(KeyColumn::Bool),
            FieldType::Integer => fast.column_opt(name)?.map(KeyColumn::Int),
            FieldType::Float => fast.column_opt(name)?.map(KeyColumn::Float),
            FieldType::Date => fast.column_opt(name)?.map(KeyColumn::Date),
            FieldType::Keyword | FieldType::Text => fast.str(name)?.map(KeyColumn::Text),
        };
        Ok(column.unwrap_or(KeyColumn::Absent))
    }

    fn value(&self, doc: DocId, score: Score, descending: bool) -> KeyValue {
        let found = match self {
            KeyColumn::Score => Some(KeyValue::Float(f64::from(score))),
            KeyColumn::Bool(c) => pick(c.values_for_doc(doc), descending).map(KeyValue::Bool),
            KeyColumn::Int(c) => pick(c.values_for_doc(doc), descending).map(KeyValue::Int),
            KeyColumn::Float(c) => pick(c.values_for_doc(doc), descending).map(KeyValue::Float),
            KeyColumn::Date(c) => pick(c.values_for_doc(doc), descending)
                .map(|at| KeyValue::Int(at.into_timestamp_nanos())),
            KeyColumn::Text(c) => pick(c.term_ords(doc), descending).and_then(|ord| {
                let mut text = String::new();
                c.ord_to_str(ord, &mut text).ok()?;
                Some(KeyValue::Text(text))
            }),
            KeyColumn::Absent => None,
        };
        found.unwrap_or(KeyValue::Missing)
    }
}

/// One segment's part of a [`Ranking`].
pub(crate) struct SegmentRanking {
    sort: Arc<Sort>,
    after: Option<Arc<Cursor>>,
    segment: SegmentOrdinal,
    columns: Vec<KeyColumn>,
    ids: Option<StrColumn>,
    /// How many of the best to keep.
    keep: usize,
    kept: Vec<RankedHit>,
    /// The worst hit kept once the buffer was last cut back; nothing worse can make it.
    worst: Option<RankedHit>,
    total: u64,
    after_cursor: u64,
}

impl SegmentRanking {
    fn id(&self, doc: DocId) -> String {
        let mut id = String::new();
        if let Some(ids) = &self.ids
            && let Some(ord) = ids.term_ords(doc).next()
        {
            let _ = ids.ord_to_str(ord, &mut id);
        }
        id
    }

    /// Every key of a document, the first already read.
    fn keys(&self, doc: DocId, score: Score, first: &KeyValue) -> Vec<KeyValue> {
        let mut keys = Vec::with_capacity(self.columns.len());
        keys.push(first.clone());
        for (column, key) in self.columns.iter().zip(&self.sort.keys).skip(1) {
            keys.push(column.value(doc, score, key.descending));
        }
        keys
    }

    /// Keeps the best `keep` hits, best first.
    fn cut_back(&mut self) {
        let sort = &self.sort;
        self.kept.sort_unstable_by(|a, b| sort.compare_hits(a, b));
        self.kept.truncate(self.keep);
        if self.kept.len() == self.keep {
            self.worst = self.kept.last().cloned();
        }
    }
}

impl Collector for Ranking {
    type Fruit = Ranked;
    type Child = SegmentRanking;

    fn for_segment(
        &self,
        segment: SegmentOrdinal,
        reader: &SegmentReader,
    ) -> tantivy::Result<SegmentRanking> {
        let columns = self
            .sort
            .keys
            .iter()
            .map(|key| KeyColumn::open(reader, key))
            .collect::<tantivy::Result<_>>()?;
        Ok(SegmentRanking {
            sort: Arc::clone(&self.sort),
            after: self.after.clone(),
            segment,
            columns,
            ids: reader.fast_fields().str(ID_FIELD)?,
            keep: self.offset + self.limit,
            kept: Vec::new(),
            worst: None,
            total: 0,
            after_cursor: 0,
        })
    }

    fn requires_scoring(&self) -> bool {
        // Hits show their scores, whatever they are sorted by.
        true
    }

    fn merge_fruits(&self, segments: Vec<Ranked>) -> tantivy::Result<Ranked> {
        let mut total = 0;
        let mut after_cursor = 0;
        let mut hits = Vec::new();
        for segment in segments {
            total += segment.total;
            after_cursor += segment.after_cursor;
            hits.extend(segment.hits);
        }
        hits.sort_unstable_by(|a, b| self.sort.compare_hits(a, b));
        let hits = hits
            .into_iter()
            .skip(self.offset)
            .take(self.limit)
            .collect();
        Ok(Ranked {
            hits,
            total,
            after_cursor,
        })
    }
}

impl SegmentCollector for SegmentRanking {
    type Fruit = Ranked;

    fn collect(&mut self, doc: DocId, score: Score) {
        self.total += 1;
        // Most matches are settled by the first key alone (before the cursor, or worse than
        // the worst kept); the other keys and the id are read only for those it ties.
        let first = self.columns[0].value(doc, score, self.sort.keys[0].descending);
        let mut keys: Option<Vec<KeyValue>> = None;
        let mut id = None;
        if let Some(after) = &self.after {
            match self.sort.compare_key(0, &first, &after.keys[0]) {
                Ordering::Less => return,
                Ordering::Greater => {}
                Ordering::Equal => {
                    let all = self.keys(doc, score, &first);
                    match self.sort.compare(&all, &after.keys) {
                        Ordering::Less => return,
                        Ordering::Greater => {}
                        Ordering::Equal => {
                            let mine = self.id(doc);
                            if mine <= after.id {
                                return;
                            }
                            id = Some(mine);
                        }
                    }
                    keys = Some(all);
                }
            }
        }
        self.after_cursor += 1;
        if self.keep == 0 {
            return;
        }
        if let Some(worst) = &self.worst {
            match self.sort.compare_key(0, &first, &worst.keys[0]) {
                Ordering::Greater => return,
                Ordering::Less => {}
                Ordering::Equal => {
                    let all = keys.take().unwrap_or_else(|| self.keys(doc, score, &first));
                    match self.sort.compare(&all, &worst.keys) {
                        Ordering::Greater => return,
                        Ordering::Less => {}
                        Ordering::Equal => {
                            let mine = id.take().unwrap_or_else(|| self.id(doc));
                            if mine >= worst.id {
                                return;
                            }
                            id = Some(mine);
                        }
                    }
                    keys = Some(all);
                }
            }
        }
        let keys = keys.unwrap_or_else(|| self.keys(doc, score, &first));
        let id = id.unwrap_or_else(|| self.id(doc));
        self.kept.push(RankedHit {
            keys,
            id,
            score,
            address: DocAddress::new(self.segment, doc),
        });
        if self.kept.len() >= self.keep.saturating_mul(2).max(64) {
            self.cut_back();
        }
    }

    fn harvest(mut self) -> Ranked {
        self.cut_back();
        Ranked {
            hits: self.kept,
            total: self.total,
            after_cursor: self.after_cursor,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hit(keys: Vec<KeyValue>, id: &str) -> RankedHit {
        RankedHit {
            keys,
            id: id.into(),
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
            let ids: Vec<&str> = hits.iter().map(|h| h.id.as_str()).collect();
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
        let ints = sort(&[(FieldType::Integer, true)]);
        let wrong_type = Cursor::after(&ints, &hit(vec![KeyValue::Text("a".into())], "x"));
        assert!(matches!(
            Cursor::parse(&ints, &wrong_type),
            Err(ApiError::InvalidCursor)
        ));
    }
}
