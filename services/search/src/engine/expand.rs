//! The words a query word stands for besides itself: those within the typos its length
//! allows, and, for the last word, those it begins. They are looked up in the term
//! dictionaries of the searcher's segments when the query is planned, so that the query
//! holds plain terms: they score by BM25 like the word itself and let tantivy skip the
//! blocks of documents that cannot make the page (block-max WAND), where an automaton query
//! would score every match alike and read every posting of every word it matches.
//!
//! A word can stand for very many: a short prefix begins thousands of words, and a word
//! within two typos has hundreds of neighbours in a large vocabulary. As Meilisearch does,
//! each kind is capped; the words kept are the nearest (typos) and then the most frequent,
//! which are the likeliest meant.

use std::collections::HashMap;

use tantivy::query::{DfaWrapper, FuzzyTermQuery};
use tantivy::schema::Field;
use tantivy::termdict::TermStreamer;
use tantivy::{Searcher, Term};

/// Most words one query word stands for by typos, and by prefix.
pub(crate) const MOST_TYPO_WORDS: usize = 30;
pub(crate) const MOST_PREFIX_WORDS: usize = 20;

/// How a word found stands for the query word.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Kind {
    /// It begins with the query word.
    Prefix,
    /// It is this many typos from the query word.
    Typos(u8),
}

/// A word found in a field's dictionary.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Expansion {
    pub(crate) word: String,
    pub(crate) kind: Kind,
}

/// What is looked for beyond the word itself.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Reach {
    pub(crate) typos: u8,
    pub(crate) prefix: bool,
}

/// A found word's kind (the nearest way it was found) and how many documents hold it.
type Found = HashMap<Vec<u8>, (Kind, u64)>;

fn gather(stream: &mut TermStreamer<'_, &DfaWrapper>, kind: Kind, found: &mut Found) {
    while stream.advance() {
        let docs = u64::from(stream.value().doc_freq);
        let entry = found.entry(stream.key().to_vec()).or_insert((kind, 0));
        entry.0 = entry.0.min(kind);
        entry.1 += docs;
    }
}

/// The words of `field` that `word` stands for within `reach`, itself left out.
///
/// # Errors
///
/// Returns tantivy's error reading a term dictionary.
pub(crate) fn expand(
    searcher: &Searcher,
    field: Field,
    word: &str,
    reach: Reach,
) -> tantivy::Result<Vec<Expansion>> {
    if reach.typos == 0 && !reach.prefix {
        return Ok(Vec::new());
    }
    let mut typo_words = Found::new();
    let mut prefix_words = Found::new();
    let term = Term::from_field_text(field, word);
    // Nearer typos first, so a word within one typo is not counted as two.
    let automata = (1..=reach.typos)
        .map(|typos| {
            let automaton = FuzzyTermQuery::new(term.clone(), typos, true).automaton()?;
            Ok((typos, automaton))
        })
        .collect::<tantivy::Result<Vec<_>>>()?;
    for segment in searcher.segment_readers() {
        let terms = segment.inverted_index(field)?;
        let dictionary = terms.terms();
        for (typos, automaton) in &automata {
            let mut stream = dictionary.search(automaton).into_stream()?;
            gather(&mut stream, Kind::Typos(*typos), &mut typo_words);
        }
        if reach.prefix {
            let mut stream = dictionary.range().ge(word.as_bytes()).into_stream()?;
            while stream.advance() {
                if !stream.key().starts_with(word.as_bytes()) {
                    break;
                }
                let docs = u64::from(stream.value().doc_freq);
                prefix_words
                    .entry(stream.key().to_vec())
                    .or_insert((Kind::Prefix, 0))
                    .1 += docs;
            }
        }
    }
    let own = word.as_bytes();
    let mut kept = best(prefix_words, own, MOST_PREFIX_WORDS);
    for typo in best(typo_words, own, MOST_TYPO_WORDS) {
        // A word both begun and near is kept once, as a prefix match (it scores higher).
        if !kept.iter().any(|k| k.word == typo.word) {
            kept.push(typo);
        }
    }
    Ok(kept)
}

/// The `most` best words found: nearest, then held by the most documents, then in
/// dictionary order (so the choice does not depend on how segments happen to be cut).
fn best(found: Found, own: &[u8], most: usize) -> Vec<Expansion> {
    let mut found: Vec<(Vec<u8>, (Kind, u64))> =
        found.into_iter().filter(|(w, _)| w != own).collect();
    found.sort_unstable_by(|(a, (ka, da)), (b, (kb, db))| {
        ka.cmp(kb).then(db.cmp(da)).then(a.cmp(b))
    });
    found
        .into_iter()
        .take(most)
        .filter_map(|(word, (kind, _))| {
            Some(Expansion {
                word: String::from_utf8(word).ok()?,
                kind,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_nearest_then_the_most_frequent_are_kept() {
        let found: Found = [
            ("shoe", (Kind::Typos(1), 1)),
            ("shop", (Kind::Typos(2), 90)),
            ("shoes", (Kind::Typos(1), 40)),
            ("show", (Kind::Typos(1), 40)),
            ("shod", (Kind::Typos(2), 5)),
            ("shoo", (Kind::Typos(0), 500)),
        ]
        .into_iter()
        .map(|(w, v)| (w.as_bytes().to_vec(), v))
        .collect();
        let kept: Vec<String> = best(found, b"shoo", 4)
            .into_iter()
            .map(|e| e.word)
            .collect();
        // The word itself is left out; ties of frequency go by dictionary order.
        assert_eq!(kept, ["shoes", "show", "shoe", "shop"]);
    }
}
