//! The query language: words, `"phrases"`, `+required` and `-excluded` clauses, `field:word`
//! and `word^2` boosts, parsed with the character position of every mistake, then turned
//! into a tantivy query with typo tolerance and prefix matching on the last word.
//!
//! Every clause must match (as in Meilisearch and Typesense: more words, fewer hits) unless
//! it is excluded with `-`; `+` is accepted for those used to it. A word matches itself
//! (scored by BM25), a word within the typos its length allows (one from
//! `one_typo_from` characters, two from `two_typos_from`) and, when it is the last word of
//! the query, the words it begins, both looked up and capped when the query is planned
//! ([`super::expand`]). Typo and prefix matches score below exact ones.

use std::collections::{BTreeMap, BTreeSet};

use plinth_shared::ApiError;
use plinth_types::search::{FieldType, IndexSettings};
use tantivy::query::{AllQuery, BooleanQuery, BoostQuery, Occur, PhraseQuery, Query, TermQuery};
use tantivy::schema::IndexRecordOption;
use tantivy::{DateTime, Searcher, Term};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::SearchError;
use super::analysis::{analyzer, words};
use super::expand::{Kind, Reach, expand};
use super::schema::{Compiled, FieldInfo};

/// Longest query, in characters.
const MAX_QUERY_CHARS: usize = 2000;
/// Most clauses in one query.
const MAX_CLAUSES: usize = 64;
/// How typo and prefix matches score against an exact match of the same word.
const TYPO_BOOST: f32 = 0.4;
const PREFIX_BOOST: f32 = 0.6;
/// How a synonym's match scores against a match of the word written.
const SYNONYM_BOOST: f32 = 0.8;

/// How a clause takes part in the query.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Sign {
    Required,
    Excluded,
}

/// One clause as written.
#[derive(Clone, Debug, PartialEq)]
struct Clause {
    sign: Sign,
    field: Option<String>,
    text: String,
    phrase: bool,
    boost: f32,
    /// Where the clause starts, in characters from 0.
    position: usize,
}

fn invalid(position: usize, reason: impl Into<String>) -> ApiError {
    ApiError::InvalidQuery {
        position,
        reason: reason.into(),
    }
}

/// Splits a query into clauses.
fn parse(query: &str) -> Result<Vec<Clause>, ApiError> {
    let chars: Vec<char> = query.chars().collect();
    if chars.len() > MAX_QUERY_CHARS {
        return Err(invalid(MAX_QUERY_CHARS, "the query is too long"));
    }
    let mut clauses = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        if chars[i].is_whitespace() {
            i += 1;
            continue;
        }
        let position = i;
        let sign = match chars[i] {
            '+' => {
                i += 1;
                Sign::Required
            }
            '-' => {
                i += 1;
                Sign::Excluded
            }
            _ => Sign::Required,
        };
        if i >= chars.len() || chars[i].is_whitespace() {
            return Err(invalid(
                position,
                "a sign must be followed by a word or phrase",
            ));
        }
        // `field:` before a word or phrase.
        let mut field = None;
        let mut j = i;
        while j < chars.len() && (chars[j].is_ascii_alphanumeric() || chars[j] == '_') {
            j += 1;
        }
        if j > i && j < chars.len() && chars[j] == ':' {
            field = Some(chars[i..j].iter().collect::<String>());
            i = j + 1;
            if i >= chars.len() || chars[i].is_whitespace() {
                return Err(invalid(j, "a field must be followed by a word or phrase"));
            }
        }
        let (text, phrase) = if chars[i] == '"' {
            let open = i;
            let close = chars[i + 1..]
                .iter()
                .position(|&c| c == '"')
                .ok_or_else(|| invalid(open, "the phrase is not closed"))?;
            let text: String = chars[i + 1..i + 1 + close].iter().collect();
            i += close + 2;
            (text, true)
        } else {
            let start = i;
            while i < chars.len() && !chars[i].is_whitespace() && chars[i] != '^' {
                if chars[i] == '"' {
                    return Err(invalid(i, "a quote inside a word"));
                }
                i += 1;
            }
            (chars[start..i].iter().collect(), false)
        };
        let mut boost = 1.0;
        if i < chars.len() && chars[i] == '^' {
            let at = i;
            i += 1;
            let start = i;
            while i < chars.len() && (chars[i].is_ascii_digit() || chars[i] == '.') {
                i += 1;
            }
            let digits: String = chars[start..i].iter().collect();
            boost = match digits.parse::<f32>() {
                Ok(b) if b > 0.0 && b <= 100.0 => b,
                _ => return Err(invalid(at, "a boost is a number above 0, up to 100")),
            };
        }
        if i < chars.len() && !chars[i].is_whitespace() {
            return Err(invalid(i, "clauses are separated by spaces"));
        }
        clauses.push(Clause {
            sign,
            field,
            text,
            phrase,
            boost,
            position,
        });
        if clauses.len() > MAX_CLAUSES {
            return Err(invalid(position, format!("at most {MAX_CLAUSES} clauses")));
        }
    }
    Ok(clauses)
}

/// A query planned: what to run, and the words it seeks in each text field (for
/// highlighting its hits: exactly the words it can match, expansions included).
pub(crate) struct Plan {
    pub(crate) query: Box<dyn Query>,
    pub(crate) sought: BTreeMap<String, BTreeSet<String>>,
    /// The terms of the query, each alone, when it is one union of terms scored by their
    /// frequencies: tantivy can prune such a query (block-max WAND) when only the best hits
    /// are wanted, and a match's score can be summed again in a fixed order. Other queries
    /// score every match in any case, so they are best counted in the same pass.
    pub(crate) terms: Option<Vec<Box<dyn Query>>>,
}

/// What turns clauses into a query for one index.
pub(crate) struct Planner<'a> {
    pub(crate) schema: &'a Compiled,
    pub(crate) settings: &'a IndexSettings,
    /// Whether the last word also matches the words it begins.
    pub(crate) prefix: bool,
    /// Whose term dictionaries typos and prefixes are looked up in.
    pub(crate) searcher: &'a Searcher,
}

/// A clause's parts over one field, to be joined into one union.
type Alternatives = Vec<(Occur, Box<dyn Query>)>;

fn boosted(query: Box<dyn Query>, boost: f32) -> Box<dyn Query> {
    if boost == 1.0 {
        query
    } else {
        Box::new(BoostQuery::new(query, boost))
    }
}

impl Planner<'_> {
    /// Plans a query string.
    ///
    /// # Errors
    ///
    /// Returns `invalid_query` with the position of the mistake, or tantivy's error reading
    /// a term dictionary.
    pub(crate) fn plan(&self, query: &str) -> Result<Plan, SearchError> {
        let clauses = parse(query)?;
        let last = clauses.len().saturating_sub(1);
        let mut parts: Vec<(Occur, Box<dyn Query>)> = Vec::new();
        let mut sought = BTreeMap::new();
        let mut only_terms = true;
        for (n, clause) in clauses.iter().enumerate() {
            let occur = match clause.sign {
                Sign::Required => Occur::Must,
                Sign::Excluded => Occur::MustNot,
            };
            // An excluded word is excluded as written: `-red` must not also drop `bed`.
            let into = (occur == Occur::Must).then_some(&mut sought);
            let Some(query) = self.clause(clause, n == last, into, &mut only_terms)? else {
                continue;
            };
            parts.push((occur, query));
        }
        if parts.iter().all(|(occur, _)| *occur == Occur::MustNot) {
            parts.push((Occur::Must, Box::new(AllQuery)));
        }
        let union_of_terms = only_terms && parts.len() == 1 && parts[0].0 == Occur::Must;
        let query = if parts.len() == 1 && parts[0].0 == Occur::Must {
            parts.remove(0).1
        } else {
            Box::new(BooleanQuery::new(parts))
        };
        let terms = union_of_terms.then(|| match query.downcast_ref::<BooleanQuery>() {
            Some(union) => union.clauses().iter().map(|(_, q)| q.box_clone()).collect(),
            None => vec![query.box_clone()],
        });
        Ok(Plan {
            query,
            sought,
            terms,
        })
    }

    /// One clause over its field, or over the default fields, as one flat union of its
    /// terms and phrases (so that a one-word query is a union of terms, which tantivy can
    /// prune); `None` when nothing of it is left to search for (only stop words or
    /// punctuation). Its words are added to `sought` when given; `only_terms` is cleared
    /// when it holds anything but terms with frequencies.
    fn clause(
        &self,
        clause: &Clause,
        last: bool,
        mut sought: Option<&mut BTreeMap<String, BTreeSet<String>>>,
        only_terms: &mut bool,
    ) -> Result<Option<Box<dyn Query>>, SearchError> {
        let targets: Vec<(&str, &FieldInfo)> = match &clause.field {
            Some(name) => {
                let info = self.schema.fields.get(name).ok_or_else(|| {
                    invalid(
                        clause.position,
                        format!("`{name}` is not a field of the index"),
                    )
                })?;
                if !info.indexed {
                    return Err(invalid(clause.position, format!("`{name}` is not indexed")).into());
                }
                vec![(name.as_str(), info)]
            }
            None => {
                if self.schema.default_fields.is_empty() {
                    return Err(invalid(
                        clause.position,
                        "the index has no text field to search; name a field",
                    )
                    .into());
                }
                self.schema
                    .default_fields
                    .iter()
                    .filter_map(|name| Some((name.as_str(), self.schema.fields.get(name)?)))
                    .collect()
            }
        };
        let mut alternatives: Alternatives = Vec::new();
        for (name, info) in targets {
            if info.field_type == FieldType::Text {
                let words = self.text(info, clause, last, &mut alternatives, only_terms)?;
                if let Some(sought) = sought.as_deref_mut() {
                    sought.entry(name.to_owned()).or_default().extend(words);
                }
            } else {
                alternatives.push((Occur::Should, boosted(exact(info, clause)?, clause.boost)));
                *only_terms = false;
            }
        }
        Ok(match alternatives.len() {
            0 => None,
            1 => Some(alternatives.remove(0).1),
            _ => Some(Box::new(BooleanQuery::new(alternatives))),
        })
    }

    /// A clause over one text field: its parts are added to `into`, and the words it
    /// seeks are returned. A single word that is neither quoted nor excluded also matches
    /// the words within its typos, and, when it is the `last`, those it begins.
    fn text(
        &self,
        info: &FieldInfo,
        clause: &Clause,
        last: bool,
        into: &mut Alternatives,
        only_terms: &mut bool,
    ) -> Result<Vec<String>, SearchError> {
        let mut analyzer = analyzer(info.analyzer);
        let found: Vec<(usize, String)> = words(&mut analyzer, &clause.text)
            .into_iter()
            .filter(|(_, w)| clause.phrase || !self.is_stop_word(w))
            .collect();
        let term = |word: &str| Term::from_field_text(info.field, word);
        let exact_term =
            |word: &str| Box::new(TermQuery::new(term(word), IndexRecordOption::WithFreqs)) as _;
        let mut sought: Vec<String> = Vec::new();
        match found.as_slice() {
            [] => return Ok(sought),
            [(_, word)] => {
                into.push((Occur::Should, boosted(exact_term(word), clause.boost)));
                // A quoted word, and an excluded one, is meant as written.
                let widen = !clause.phrase && clause.sign == Sign::Required;
                let reach = Reach {
                    typos: if widen { self.typos(word) } else { 0 },
                    prefix: widen && last && self.prefix,
                };
                for expansion in expand(self.searcher, info.field, word, reach)? {
                    let boost = match expansion.kind {
                        Kind::Prefix => PREFIX_BOOST,
                        Kind::Typos(_) => TYPO_BOOST,
                    };
                    into.push((
                        Occur::Should,
                        boosted(exact_term(&expansion.word), boost * clause.boost),
                    ));
                    sought.push(expansion.word);
                }
                sought.push(word.clone());
            }
            several => {
                into.push((Occur::Should, boosted(phrase(info, several), clause.boost)));
                *only_terms = false;
                sought.extend(several.iter().map(|(_, w)| w.clone()));
            }
        }
        for synonym in self.synonyms(clause) {
            let words = words(&mut analyzer, synonym);
            let query = match words.as_slice() {
                [] => continue,
                [(_, word)] => exact_term(word),
                several => {
                    *only_terms = false;
                    phrase(info, several)
                }
            };
            into.push((Occur::Should, boosted(query, SYNONYM_BOOST * clause.boost)));
            sought.extend(words.into_iter().map(|(_, w)| w));
        }
        Ok(sought)
    }

    /// The synonyms of a clause: those of its word, or of its phrase, as the settings list
    /// them (one way: `"tv": ["television"]` finds television for tv, not tv for
    /// television).
    fn synonyms(&self, clause: &Clause) -> &[String] {
        let key = clause.text.trim().to_lowercase();
        self.settings
            .synonyms
            .get(&key)
            .or_else(|| {
                // Keys are matched without regard to case.
                self.settings
                    .synonyms
                    .iter()
                    .find(|(k, _)| k.to_lowercase() == key)
                    .map(|(_, v)| v)
            })
            .map_or(&[], Vec::as_slice)
    }

    /// The typos a word of the query may match with.
    fn typos(&self, word: &str) -> u8 {
        let typos = self.settings.typo_tolerance;
        let length = word.chars().count() as u32;
        if !typos.enabled {
            0
        } else if length >= typos.two_typos_from {
            2
        } else if length >= typos.one_typo_from {
            1
        } else {
            0
        }
    }

    fn is_stop_word(&self, word: &str) -> bool {
        self.settings
            .stop_words
            .iter()
            .any(|s| s.eq_ignore_ascii_case(word))
    }
}

/// The words of a phrase in their order, gaps (stop words) kept.
fn phrase(info: &FieldInfo, words: &[(usize, String)]) -> Box<dyn Query> {
    let first = words[0].0;
    let terms = words
        .iter()
        .map(|(at, w)| (at - first, Term::from_field_text(info.field, w)))
        .collect();
    Box::new(PhraseQuery::new_with_offset(terms))
}

/// A clause naming a keyword, number, boolean or date field: the value itself.
fn exact(info: &FieldInfo, clause: &Clause) -> Result<Box<dyn Query>, ApiError> {
    let text = clause.text.as_str();
    let bad = |expected: &str| invalid(clause.position, format!("expected {expected}"));
    let term = match info.field_type {
        FieldType::Keyword | FieldType::Text => Term::from_field_text(info.field, text),
        FieldType::Integer => {
            Term::from_field_i64(info.field, text.parse().map_err(|_| bad("an integer"))?)
        }
        FieldType::Float => {
            Term::from_field_f64(info.field, text.parse().map_err(|_| bad("a number"))?)
        }
        FieldType::Boolean => {
            Term::from_field_bool(info.field, text.parse().map_err(|_| bad("true or false"))?)
        }
        FieldType::Date => {
            let at = OffsetDateTime::parse(text, &Rfc3339).map_err(|_| bad("an RFC 3339 date"))?;
            Term::from_field_date(info.field, DateTime::from_utc(at))
        }
    };
    Ok(Box::new(TermQuery::new(term, IndexRecordOption::Basic)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn position(query: &str) -> usize {
        match parse(query) {
            Err(ApiError::InvalidQuery { position, .. }) => position,
            other => panic!("{query:?} parsed: {other:?}"),
        }
    }

    #[test]
    fn clauses_keep_signs_fields_phrases_and_boosts() {
        let clauses = parse(r#"  +red -title:"old shoe" size^2.5 "#).unwrap();
        assert_eq!(clauses.len(), 3);
        assert_eq!(
            (clauses[0].sign, clauses[0].text.as_str()),
            (Sign::Required, "red")
        );
        assert_eq!(clauses[1].sign, Sign::Excluded);
        assert_eq!(clauses[1].field.as_deref(), Some("title"));
        assert!(clauses[1].phrase);
        assert_eq!(clauses[1].text, "old shoe");
        assert_eq!((clauses[2].boost, clauses[2].position), (2.5, 25));
    }

    #[test]
    fn mistakes_are_reported_where_they_are() {
        assert_eq!(position(r#"red "old shoe"#), 4);
        assert_eq!(position("red + blue"), 4);
        assert_eq!(position("title: red"), 5);
        assert_eq!(position("red^x"), 3);
        assert_eq!(position("red^0"), 3);
        assert_eq!(position(r#"re"d"#), 2);
        assert_eq!(position(r#""a"b"#), 3);
    }
}
