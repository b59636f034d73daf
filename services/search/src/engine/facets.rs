//! Facet counts: how many matches hold each value of a keyword, integer or boolean field
//! declared `facet`. A document holding a value twice counts once for it.

use std::collections::{BTreeMap, HashMap};

use plinth_shared::ApiError;
use plinth_types::search::{FacetCount, FieldType};
use serde_json::Value;
use tantivy::collector::{Collector, SegmentCollector};
use tantivy::columnar::{Column, StrColumn};
use tantivy::{DocId, Score, SegmentOrdinal, SegmentReader};

use super::schema::Compiled;

/// Most facets one search may count.
const MAX_FACETS: usize = 32;

/// A value of a facet.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum FacetValue {
    Bool(bool),
    Int(i64),
    Text(String),
}

impl FacetValue {
    fn into_json(self) -> Value {
        match self {
            FacetValue::Bool(b) => Value::Bool(b),
            FacetValue::Int(n) => Value::from(n),
            FacetValue::Text(s) => Value::String(s),
        }
    }
}

/// Counts the values of some facet fields over every match.
pub(crate) struct Facets {
    fields: Vec<(String, FieldType)>,
    limit: usize,
}

impl Facets {
    /// Checks the facets a request asks for.
    ///
    /// # Errors
    ///
    /// Returns `invalid_filter` (parameter `facets`) for a field that is unknown or not
    /// declared a facet, or too many.
    pub(crate) fn new(
        schema: &Compiled,
        names: &[String],
        limit: usize,
    ) -> Result<Facets, ApiError> {
        let invalid = |reason: String| ApiError::InvalidFilter {
            parameter: "facets",
            reason,
        };
        if names.len() > MAX_FACETS {
            return Err(invalid(format!("at most {MAX_FACETS} facets")));
        }
        let mut fields: Vec<(String, FieldType)> = Vec::with_capacity(names.len());
        for name in names {
            let info = schema
                .fields
                .get(name)
                .ok_or_else(|| invalid(format!("`{name}` is not a field of the index")))?;
            if !info.facet {
                return Err(invalid(format!("`{name}` is not declared a facet")));
            }
            if !fields.iter().any(|(seen, _)| seen == name) {
                fields.push((name.clone(), info.field_type));
            }
        }
        Ok(Facets { fields, limit })
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.fields.is_empty()
    }
}

/// A facet's column in one segment, with its counts so far.
enum Counter {
    /// Counts by term ordinal, turned into text at the end.
    Text(StrColumn, Vec<u64>),
    Int(Column<i64>, HashMap<i64, u64>),
    Bool(Column<bool>, [u64; 2]),
    /// No document of the segment has the field.
    Absent,
}

/// One segment's part of [`Facets`].
pub(crate) struct SegmentFacets {
    counters: Vec<Counter>,
    /// The values of the document at hand, to count each once.
    ords: Vec<u64>,
    ints: Vec<i64>,
}

impl Collector for Facets {
    type Fruit = Vec<HashMap<FacetValue, u64>>;
    type Child = SegmentFacets;

    fn for_segment(
        &self,
        _segment: SegmentOrdinal,
        reader: &SegmentReader,
    ) -> tantivy::Result<SegmentFacets> {
        let fast = reader.fast_fields();
        let mut counters = Vec::with_capacity(self.fields.len());
        for (name, field_type) in &self.fields {
            let counter = match field_type {
                FieldType::Keyword => fast.str(name)?.map(|column| {
                    let terms = column.num_terms();
                    Counter::Text(column, vec![0; terms])
                }),
                FieldType::Integer => fast
                    .column_opt(name)?
                    .map(|column| Counter::Int(column, HashMap::new())),
                FieldType::Boolean => fast
                    .column_opt(name)?
                    .map(|column| Counter::Bool(column, [0; 2])),
                // The schema refuses facets of other types.
                _ => None,
            };
            counters.push(counter.unwrap_or(Counter::Absent));
        }
        Ok(SegmentFacets {
            counters,
            ords: Vec::new(),
            ints: Vec::new(),
        })
    }

    fn requires_scoring(&self) -> bool {
        false
    }

    fn merge_fruits(
        &self,
        segments: Vec<Vec<HashMap<FacetValue, u64>>>,
    ) -> tantivy::Result<Vec<HashMap<FacetValue, u64>>> {
        let mut merged: Vec<HashMap<FacetValue, u64>> = vec![HashMap::new(); self.fields.len()];
        for segment in segments {
            for (into, counts) in merged.iter_mut().zip(segment) {
                for (value, count) in counts {
                    *into.entry(value).or_default() += count;
                }
            }
        }
        Ok(merged)
    }
}

impl Facets {
    /// The counts as answered: each facet's most frequent values first, ties by value.
    pub(crate) fn answer(
        &self,
        counts: Vec<HashMap<FacetValue, u64>>,
    ) -> BTreeMap<String, Vec<FacetCount>> {
        self.fields
            .iter()
            .zip(counts)
            .map(|((name, _), counts)| {
                let mut counts: Vec<(FacetValue, u64)> = counts.into_iter().collect();
                counts.sort_unstable_by(|(va, ca), (vb, cb)| cb.cmp(ca).then_with(|| va.cmp(vb)));
                counts.truncate(self.limit);
                let counts = counts
                    .into_iter()
                    .map(|(value, count)| FacetCount {
                        value: value.into_json(),
                        count,
                    })
                    .collect();
                (name.clone(), counts)
            })
            .collect()
    }
}

impl SegmentCollector for SegmentFacets {
    type Fruit = Vec<HashMap<FacetValue, u64>>;

    fn collect(&mut self, doc: DocId, _score: Score) {
        for counter in &mut self.counters {
            match counter {
                Counter::Text(column, counts) => {
                    self.ords.clear();
                    self.ords.extend(column.term_ords(doc));
                    if self.ords.len() > 1 {
                        self.ords.sort_unstable();
                        self.ords.dedup();
                    }
                    for &ord in &self.ords {
                        if let Some(count) = counts.get_mut(ord as usize) {
                            *count += 1;
                        }
                    }
                }
                Counter::Int(column, counts) => {
                    self.ints.clear();
                    self.ints.extend(column.values_for_doc(doc));
                    if self.ints.len() > 1 {
                        self.ints.sort_unstable();
                        self.ints.dedup();
                    }
                    for &n in &self.ints {
                        *counts.entry(n).or_default() += 1;
                    }
                }
                Counter::Bool(column, counts) => {
                    let (mut no, mut yes) = (false, false);
                    for value in column.values_for_doc(doc) {
                        if value { yes = true } else { no = true }
                    }
                    counts[0] += u64::from(no);
                    counts[1] += u64::from(yes);
                }
                Counter::Absent => {}
            }
        }
    }

    fn harvest(self) -> Vec<HashMap<FacetValue, u64>> {
        self.counters
            .into_iter()
            .map(|counter| match counter {
                Counter::Text(column, counts) => {
                    let mut values = HashMap::new();
                    for (ord, count) in counts.into_iter().enumerate() {
                        if count == 0 {
                            continue;
                        }
                        let mut text = String::new();
                        if column.ord_to_str(ord as u64, &mut text).unwrap_or(false) {
                            values.insert(FacetValue::Text(text), count);
                        }
                    }
                    values
                }
                Counter::Int(_, counts) => counts
                    .into_iter()
                    .map(|(n, count)| (FacetValue::Int(n), count))
                    .collect(),
                Counter::Bool(_, [no, yes]) => [(false, no), (true, yes)]
                    .into_iter()
                    .filter(|&(_, count)| count > 0)
                    .map(|(b, count)| (FacetValue::Bool(b), count))
                    .collect(),
                Counter::Absent => HashMap::new(),
            })
            .collect()
    }
}
