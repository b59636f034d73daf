//! Collecting a page of hits in a [`Sort`]'s order.
//!
//! One collector serves every order. Each segment keeps the best `offset + limit + 1` of its
//! matches (one past the page tells whether a next page exists) in a buffer of twice that,
//! cut back to the best when full, so a match that cannot make the page is turned away by
//! comparing it with the worst one kept; the segments' best are then merged.
//!
//! When relevance comes first, the collector tells tantivy the least score that can still
//! make the page, and tantivy skips whole blocks of documents that cannot reach it
//! (block-max WAND); the hit count is then made by a separate pass that does not score.
//!
//! tantivy adds up a document's term scores in an order that depends on how it reached the
//! document (which blocks it skipped), so the same document can score a last bit apart from
//! one search to the next, and a cursor could then skip or repeat a hit. When the query is
//! one union of terms, a [`Rescorer`] sums them again in one fixed order for every match
//! that could make the page; tantivy's own sum only turns away those far below the worst
//! kept. Other queries are never pruned, so tantivy reaches their matches the same way
//! every time.

use std::cmp::Ordering;
use std::sync::{Arc, OnceLock};

use plinth_types::search::FieldType;
use tantivy::DocSet as _;
use tantivy::collector::{Collector, SegmentCollector};
use tantivy::columnar::{Column, StrColumn, TermOrdHit};
use tantivy::query::{Scorer, Weight};
use tantivy::{DateTime, DocAddress, DocId, Score, SegmentOrdinal, SegmentReader};

use super::{Cursor, Key, KeyValue, Sort, Target};
#[cfg(doc)]
use crate::engine::query::Plan;
use crate::engine::schema::ID_FIELD;

/// How far tantivy's sum of a document's term scores may be from the [`Rescorer`]'s, as a
/// share of it: a few rounding errors of `f32` per term, with a wide margin.
const SUM_ERROR: f32 = 1.0 / 65_536.0;

/// The terms of a query that is one union of them, each scored alone, so that a document's
/// score is their sum in the order the query lists them, added in `f64`: the same however
/// tantivy reached the document.
pub(crate) struct Rescorer {
    terms: Vec<Box<dyn Scorer>>,
}

impl Rescorer {
    /// The score of `doc`; documents must be asked for in increasing order.
    fn score(&mut self, doc: DocId) -> Score {
        let mut sum = 0.0_f64;
        for term in &mut self.terms {
            let at = if term.doc() < doc {
                term.seek(doc)
            } else {
                term.doc()
            };
            if at == doc {
                sum += f64::from(term.score());
            }
        }
        sum as Score
    }
}

/// A hit with what it was ranked by.
#[derive(Clone, Debug)]
pub(crate) struct RankedHit {
    pub(crate) keys: Vec<KeyValue>,
    pub(crate) id: HitId,
    pub(crate) score: Score,
    pub(crate) address: DocAddress,
}

/// A hit's id, read from its segment's dictionary only when it is needed: to break a tie
/// with a hit of another segment, or to make a cursor. (Reading one decompresses a block.)
#[derive(Clone)]
pub(crate) struct HitId {
    /// The segment's ids and this one's place among them; none for an id already known.
    column: Option<(SegmentOrdinal, StrColumn)>,
    place: u64,
    word: OnceLock<String>,
}

impl HitId {
    /// An id known as a word.
    #[cfg(test)]
    pub(crate) fn known(word: &str) -> HitId {
        HitId {
            column: None,
            place: 0,
            word: OnceLock::from(word.to_owned()),
        }
    }

    pub(crate) fn word(&self) -> &str {
        self.word.get_or_init(|| match &self.column {
            Some((_, column)) => word_at(column, self.place),
            None => String::new(),
        })
    }

    pub(super) fn compare(&self, other: &HitId) -> Ordering {
        match (&self.column, &other.column) {
            // Places in one dictionary compare as its words do.
            (Some((a, _)), Some((b, _))) if a == b => self.place.cmp(&other.place),
            _ => self.word().cmp(other.word()),
        }
    }
}

impl std::fmt::Debug for HitId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("HitId").field(&self.word.get()).finish()
    }
}

/// A page of hits in order.
#[derive(Debug)]
pub(crate) struct Ranked {
    pub(crate) hits: Vec<RankedHit>,
    /// Whether a hit follows the page.
    pub(crate) more: bool,
    /// Every match, when every match was seen (not when tantivy skipped blocks).
    pub(crate) total: Option<u64>,
}

/// Collects a page of hits in a sort's order.
pub(crate) struct Ranking {
    sort: Arc<Sort>,
    after: Option<Arc<Cursor>>,
    offset: usize,
    limit: usize,
    /// Whether to let tantivy skip what scores too low (see [`Plan::terms`]).
    prune: bool,
    /// The terms of a query that is one union of them, for the [`Rescorer`]; given only
    /// when the best scores come first, the one order that may be pruned.
    terms: Option<Arc<Vec<Box<dyn Weight>>>>,
}

impl Ranking {
    pub(crate) fn new(
        sort: Arc<Sort>,
        after: Option<Cursor>,
        (limit, offset): (usize, usize),
        prune: bool,
        terms: Option<Vec<Box<dyn Weight>>>,
    ) -> Ranking {
        Ranking {
            sort,
            after: after.map(Arc::new),
            offset,
            limit,
            prune,
            terms: terms.map(Arc::new),
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

/// A keyword's place in a segment's dictionary: `2 * ord + 1` for the word of `ord`, so that
/// a word the dictionary lacks can sit between two (at an even place).
fn place_of_ord(ord: u64) -> u64 {
    2 * ord + 1
}

/// The place of any word in a segment's dictionary, held or not.
fn place_of_word(column: &StrColumn, word: &str) -> std::io::Result<u64> {
    let dictionary = column.dictionary();
    let end = dictionary.num_terms() as u64;
    Ok(match dictionary.term_ord_or_next(word.as_bytes())? {
        TermOrdHit::Exact(ord) => place_of_ord(ord),
        // Past the last word, the next is reported as `u64::MAX`.
        TermOrdHit::Next(ord) => 2 * ord.min(end),
    })
}

/// The word at a place a document's value took.
fn word_at(column: &StrColumn, place: u64) -> String {
    let mut word = String::new();
    let _ = column.ord_to_str(place / 2, &mut word);
    word
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

    /// A document's value; a keyword's is its [`KeyValue::Place`] in this segment.
    fn value(&self, doc: DocId, score: Score, descending: bool) -> KeyValue {
        let found = match self {
            KeyColumn::Score => Some(KeyValue::Float(f64::from(score))),
            KeyColumn::Bool(c) => pick(c.values_for_doc(doc), descending).map(KeyValue::Bool),
            KeyColumn::Int(c) => pick(c.values_for_doc(doc), descending).map(KeyValue::Int),
            KeyColumn::Float(c) => pick(c.values_for_doc(doc), descending).map(KeyValue::Float),
            KeyColumn::Date(c) => pick(c.values_for_doc(doc), descending)
                .map(|at| KeyValue::Int(at.into_timestamp_nanos())),
            KeyColumn::Text(c) => {
                pick(c.term_ords(doc), descending).map(|ord| KeyValue::Place(place_of_ord(ord)))
            }
            KeyColumn::Absent => None,
        };
        found.unwrap_or(KeyValue::Missing)
    }

    /// A value of the cursor as this segment compares it.
    fn localize(&self, value: &KeyValue) -> std::io::Result<KeyValue> {
        Ok(match (self, value) {
            (KeyColumn::Text(column), KeyValue::Text(word)) => {
                KeyValue::Place(place_of_word(column, word)?)
            }
            // No document has a keyword; any word is after them all, or before.
            (KeyColumn::Absent, KeyValue::Text(_)) => KeyValue::Place(0),
            (_, value) => value.clone(),
        })
    }

    /// A kept value as every segment compares it.
    fn globalize(&self, value: KeyValue) -> KeyValue {
        match (self, value) {
            (KeyColumn::Text(column), KeyValue::Place(place)) => {
                KeyValue::Text(word_at(column, place))
            }
            (_, value) => value,
        }
    }
}

/// A hit of one segment: keywords and the id by their places in its dictionaries, which
/// compare as the words do and cost no decompression to read.
#[derive(Clone, Debug)]
struct LocalHit {
    keys: Vec<KeyValue>,
    id: u64,
    score: Score,
    doc: DocId,
}

/// One segment's part of a [`Ranking`].
pub(crate) struct SegmentRanking {
    sort: Arc<Sort>,
    /// The cursor's keys and id as this segment compares them.
    after: Option<(Vec<KeyValue>, u64)>,
    segment: SegmentOrdinal,
    columns: Vec<KeyColumn>,
    ids: Option<StrColumn>,
    /// How many of the best to keep.
    keep: usize,
    kept: Vec<LocalHit>,
    /// The worst hit kept once the buffer was last cut back; nothing worse can make it.
    worst: Option<LocalHit>,
    total: u64,
    /// Sums a match's terms again when the query is a union of terms ranked best first.
    rescorer: Option<Rescorer>,
}

impl SegmentRanking {
    fn id(&self, doc: DocId) -> u64 {
        self.ids
            .as_ref()
            .and_then(|ids| ids.term_ords(doc).next())
            .map_or(0, place_of_ord)
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

    fn compare(&self, a: &LocalHit, b: &LocalHit) -> Ordering {
        self.sort.compare(&a.keys, &b.keys).then(a.id.cmp(&b.id))
    }

    /// Keeps the best `keep` hits, best first.
    fn cut_back(&mut self) {
        let mut kept = std::mem::take(&mut self.kept);
        kept.sort_unstable_by(|a, b| self.compare(a, b));
        kept.truncate(self.keep);
        if kept.len() == self.keep {
            self.worst = kept.last().cloned();
        }
        self.kept = kept;
    }

    /// The score a match must pass to be worth scoring, when the best scores come first:
    /// just under the worst kept, so that its ties still come through to be broken by id.
    fn floor(&self) -> Score {
        match self.worst.as_ref().map(|w| &w.keys[0]) {
            Some(KeyValue::Float(worst)) => {
                let worst = *worst as Score;
                if self.rescorer.is_some() {
                    (worst - worst * SUM_ERROR).next_down()
                } else {
                    worst.next_down()
                }
            }
            _ => Score::NEG_INFINITY,
        }
    }

    /// The [`Rescorer`]'s sum for a match; `None` when tantivy's score already shows that
    /// the match is before the cursor or after the worst kept.
    fn score(&mut self, doc: DocId, score: Score) -> Option<Score> {
        let rescorer = self.rescorer.as_mut()?;
        let margin = score * SUM_ERROR;
        if let Some(KeyValue::Float(after)) = self.after.as_ref().map(|(keys, _)| &keys[0])
            && f64::from(score - margin) > *after
        {
            return None;
        }
        if let Some(KeyValue::Float(worst)) = self.worst.as_ref().map(|w| &w.keys[0])
            && f64::from(score + margin) < *worst
        {
            return None;
        }
        Some(rescorer.score(doc))
    }

    /// Whether a document comes after `than` (keys and id), reading no more of it than
    /// that takes; what it did read is left in `keys` and `id`.
    fn after(
        &self,
        than: (&[KeyValue], u64),
        (doc, score, first): (DocId, Score, &KeyValue),
        keys: &mut Option<Vec<KeyValue>>,
        id: &mut Option<u64>,
    ) -> bool {
        match self.sort.compare_key(0, first, &than.0[0]) {
            Ordering::Less => return false,
            Ordering::Greater => return true,
            Ordering::Equal => {}
        }
        let all = keys.get_or_insert_with(|| self.keys(doc, score, first));
        match self.sort.compare(all, than.0) {
            Ordering::Less => false,
            Ordering::Greater => true,
            Ordering::Equal => *id.get_or_insert_with(|| self.id(doc)) > than.1,
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
        let columns: Vec<KeyColumn> = self
            .sort
            .keys
            .iter()
            .map(|key| KeyColumn::open(reader, key))
            .collect::<tantivy::Result<_>>()?;
        let ids = reader.fast_fields().str(ID_FIELD)?;
        // Terms come only for a search ranked best score first, the one order that may be
        // pruned; it sums them again whether pruned or not, so that facets do not change
        // the scores. Any other is never pruned: tantivy reaches its matches the same way
        // every time.
        let rescorer = match &self.terms {
            Some(terms) => Some(Rescorer {
                terms: terms
                    .iter()
                    .map(|term| term.scorer(reader, 1.0))
                    .collect::<tantivy::Result<_>>()?,
            }),
            _ => None,
        };
        let after = match &self.after {
            Some(cursor) => {
                let keys = columns
                    .iter()
                    .zip(&cursor.keys)
                    .map(|(column, value)| column.localize(value))
                    .collect::<std::io::Result<Vec<_>>>()?;
                let id = match &ids {
                    Some(ids) => place_of_word(ids, &cursor.id)?,
                    None => 0,
                };
                Some((keys, id))
            }
            None => None,
        };
        Ok(SegmentRanking {
            sort: Arc::clone(&self.sort),
            after,
            segment,
            columns,
            ids,
            keep: if self.limit == 0 {
                0
            } else {
                self.offset + self.limit + 1
            },
            kept: Vec::new(),
            worst: None,
            total: 0,
            rescorer,
        })
    }

    fn collect_segment(
        &self,
        weight: &dyn Weight,
        segment: SegmentOrdinal,
        reader: &SegmentReader,
    ) -> tantivy::Result<Ranked> {
        let mut child = self.for_segment(segment, reader)?;
        let alive = reader.alive_bitset();
        if self.prune && self.sort.best_scores_first() && child.keep > 0 {
            weight.for_each_pruning(Score::NEG_INFINITY, reader, &mut |doc, score| {
                if alive.is_none_or(|a| a.is_alive(doc)) {
                    child.collect(doc, score);
                }
                child.floor()
            })?;
            let mut ranked = child.harvest();
            ranked.total = None;
            return Ok(ranked);
        }
        weight.for_each(reader, &mut |doc, score| {
            if alive.is_none_or(|a| a.is_alive(doc)) {
                child.collect(doc, score);
            }
        })?;
        Ok(child.harvest())
    }

    fn requires_scoring(&self) -> bool {
        // Hits show their scores, whatever they are sorted by.
        true
    }

    fn merge_fruits(&self, segments: Vec<Ranked>) -> tantivy::Result<Ranked> {
        let mut total = Some(0);
        let mut lists = Vec::with_capacity(segments.len());
        for segment in segments {
            total = total.zip(segment.total).map(|(a, b)| a + b);
            if !segment.hits.is_empty() {
                let mut hits = segment.hits;
                // Reversed, so that the next is the last.
                hits.reverse();
                lists.push(hits);
            }
        }
        // Each segment's hits are in order: merging their heads compares (and so reads)
        // the ids of only the hits that tie at the front.
        let want = self.offset + self.limit + 1;
        let mut hits = Vec::with_capacity(want.min(1024));
        while hits.len() < want {
            let mut best: Option<usize> = None;
            for n in 0..lists.len() {
                let better = match (best, lists[n].last()) {
                    (_, None) => false,
                    (None, Some(_)) => true,
                    (Some(b), Some(hit)) => lists[b]
                        .last()
                        .is_some_and(|held| self.sort.compare_hits(hit, held) == Ordering::Less),
                };
                if better {
                    best = Some(n);
                }
            }
            match best.and_then(|b| lists[b].pop()) {
                Some(hit) => hits.push(hit),
                None => break,
            }
        }
        let more = hits.len() > self.offset + self.limit;
        let hits = hits
            .into_iter()
            .skip(self.offset)
            .take(self.limit)
            .collect();
        Ok(Ranked { hits, more, total })
    }
}

impl SegmentCollector for SegmentRanking {
    type Fruit = Ranked;

    fn collect(&mut self, doc: DocId, score: Score) {
        self.total += 1;
        if self.keep == 0 {
            return;
        }
        let score = if self.rescorer.is_some() {
            match self.score(doc, score) {
                Some(score) => score,
                None => return,
            }
        } else {
            score
        };
        // Most matches are settled by the first key alone (before the cursor, or worse than
        // the worst kept); the other keys and the id are read only for those it ties.
        let first = self.columns[0].value(doc, score, self.sort.keys[0].descending);
        let mut keys = None;
        let mut id = None;
        if let Some((after_keys, after_id)) = &self.after
            && !self.after(
                (after_keys, *after_id),
                (doc, score, &first),
                &mut keys,
                &mut id,
            )
        {
            return;
        }
        if let Some(worst) = &self.worst
            && self.after(
                (&worst.keys, worst.id),
                (doc, score, &first),
                &mut keys,
                &mut id,
            )
        {
            return;
        }
        let keys = keys.unwrap_or_else(|| self.keys(doc, score, &first));
        let id = id.unwrap_or_else(|| self.id(doc));
        self.kept.push(LocalHit {
            keys,
            id,
            score,
            doc,
        });
        if self.kept.len() >= self.keep.saturating_mul(2).max(64) {
            self.cut_back();
        }
    }

    fn harvest(mut self) -> Ranked {
        self.cut_back();
        let hits = std::mem::take(&mut self.kept)
            .into_iter()
            .map(|hit| RankedHit {
                keys: hit
                    .keys
                    .into_iter()
                    .zip(&self.columns)
                    .map(|(value, column)| column.globalize(value))
                    .collect(),
                id: HitId {
                    column: self.ids.clone().map(|ids| (self.segment, ids)),
                    place: hit.id,
                    word: OnceLock::new(),
                },
                score: hit.score,
                address: DocAddress::new(self.segment, hit.doc),
            })
            .collect();
        Ranked {
            hits,
            more: false,
            total: Some(self.total),
        }
    }
}
