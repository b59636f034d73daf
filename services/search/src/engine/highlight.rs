//! Highlighted snippets: a hit's text with the words the query matched in `<mark>`, cut
//! around the densest run of matches when it is longer than asked.
//!
//! A word of the text is marked when, analyzed as the index analyzes it, it is a word the
//! query sought in that field: the same word, or one the query expanded it to (within its
//! typos, begun by the last word, a synonym). The planned query lists those words, so a
//! snippet marks exactly what the query could match. The text is HTML-escaped, so a
//! snippet can be put in a page as it is.

use std::collections::{BTreeMap, BTreeSet};

use plinth_shared::ApiError;
use plinth_types::search::{Analyzer, FieldType};
use serde_json::{Map, Value};

use super::analysis::analyzer;
use super::schema::Compiled;

/// Snippet lengths a request may ask for, in characters.
pub(crate) const SNIPPET_CHARS: std::ops::RangeInclusive<usize> = 20..=2000;
/// How far a cut moves to fall between words, in characters.
const WORD_SLACK: usize = 20;

/// The fields to highlight, with the words sought in each.
pub(crate) struct Highlighter {
    fields: Vec<(String, Analyzer, BTreeSet<String>)>,
    chars: usize,
}

impl Highlighter {
    /// Checks the fields a request wants highlighted.
    ///
    /// # Errors
    ///
    /// Returns `invalid_filter` (parameter `highlight`) for a field that is not a stored
    /// text field.
    pub(crate) fn new(
        schema: &Compiled,
        names: &[String],
        sought: &BTreeMap<String, BTreeSet<String>>,
        chars: usize,
    ) -> Result<Highlighter, ApiError> {
        let invalid = |reason: String| ApiError::InvalidFilter {
            parameter: "highlight",
            reason,
        };
        let mut fields = Vec::with_capacity(names.len());
        for name in names {
            let info = schema
                .fields
                .get(name)
                .ok_or_else(|| invalid(format!("`{name}` is not a field of the index")))?;
            if info.field_type != FieldType::Text || !info.stored {
                return Err(invalid(format!("`{name}` is not a stored text field")));
            }
            if fields.iter().any(|(seen, _, _)| seen == name) {
                continue;
            }
            let words = sought.get(name).cloned().unwrap_or_default();
            fields.push((name.clone(), info.analyzer, words));
        }
        Ok(Highlighter { fields, chars })
    }

    /// The snippets of a document's fields, by field; fields it lacks have none.
    pub(crate) fn snippets(&self, document: &Map<String, Value>) -> BTreeMap<String, String> {
        let mut snippets = BTreeMap::new();
        for (name, which, words) in &self.fields {
            let texts: Vec<&str> = match document.get(name) {
                Some(Value::String(text)) => vec![text],
                Some(Value::Array(values)) => values.iter().filter_map(Value::as_str).collect(),
                _ => continue,
            };
            // Of several values, the one with the most matches.
            let best = texts
                .into_iter()
                .map(|text| (marks(text, *which, words), text))
                .max_by(|(a, _), (b, _)| a.len().cmp(&b.len()).then(std::cmp::Ordering::Greater));
            if let Some((marks, text)) = best {
                snippets.insert(name.clone(), snippet(text, &marks, self.chars));
            }
        }
        snippets
    }
}

/// The byte ranges of the words of `text` that match, in order, overlaps joined.
fn marks(text: &str, which: Analyzer, words: &BTreeSet<String>) -> Vec<(usize, usize)> {
    let mut marks: Vec<(usize, usize)> = Vec::new();
    if words.is_empty() {
        return marks;
    }
    let mut analyzer = analyzer(which);
    let mut stream = analyzer.token_stream(text);
    while stream.advance() {
        let token = stream.token();
        if !words.contains(&token.text) {
            continue;
        }
        let (from, to) = (token.offset_from, token.offset_to);
        match marks.last_mut() {
            Some(last) if from <= last.1 => last.1 = last.1.max(to),
            _ => marks.push((from, to)),
        }
    }
    marks
}

/// Escapes text for HTML.
fn escape(text: &str, into: &mut String) {
    for c in text.chars() {
        match c {
            '&' => into.push_str("&amp;"),
            '<' => into.push_str("&lt;"),
            '>' => into.push_str("&gt;"),
            '"' => into.push_str("&quot;"),
            '\'' => into.push_str("&#39;"),
            c => into.push(c),
        }
    }
}

/// The text, escaped, with its marks, cut to `chars` characters around the most marks.
fn snippet(text: &str, marks: &[(usize, usize)], chars: usize) -> String {
    // The byte offset of every character, and of the end.
    let bounds: Vec<usize> = text
        .char_indices()
        .map(|(at, _)| at)
        .chain(std::iter::once(text.len()))
        .collect();
    let total = bounds.len() - 1;
    let char_at = |byte: usize| bounds.partition_point(|&b| b < byte);
    let (mut start, mut end) = (0, total);
    if total > chars {
        // The window holding the most whole marks, a little lead before its first.
        let lead = chars / 5;
        let mut best = (0, 0);
        let mut last = 0;
        for (first, &(from, _)) in marks.iter().enumerate() {
            let begin = char_at(from).saturating_sub(lead);
            last = last.max(first);
            while last < marks.len() && char_at(marks[last].1) <= begin + chars {
                last += 1;
            }
            let count = last - first;
            if count > best.1 {
                best = (begin, count);
            }
        }
        start = best.0.min(total - chars);
        end = start + chars;
        let is_space = |i: usize| text[bounds[i]..].starts_with(char::is_whitespace);
        if start > 0
            && let Some(step) = (start..(start + WORD_SLACK).min(end)).position(is_space)
        {
            start += step + 1;
        }
        if end < total
            && let Some(step) = (end.saturating_sub(WORD_SLACK).max(start)..end)
                .rev()
                .position(is_space)
        {
            end -= step + 1;
        }
    }
    let (from, to) = (bounds[start], bounds[end]);
    let mut out = String::with_capacity(to - from + 32);
    if start > 0 {
        out.push('…');
    }
    let mut at = from;
    for &(mark_from, mark_to) in marks {
        let (mark_from, mark_to) = (mark_from.max(from), mark_to.min(to));
        if mark_from >= mark_to {
            continue;
        }
        escape(&text[at..mark_from], &mut out);
        out.push_str("<mark>");
        escape(&text[mark_from..mark_to], &mut out);
        out.push_str("</mark>");
        at = mark_to;
    }
    escape(&text[at..to], &mut out);
    if end < total {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(words: &[&str]) -> BTreeSet<String> {
        words.iter().map(|w| (*w).to_owned()).collect()
    }

    #[test]
    fn matched_words_are_marked_and_the_rest_escaped() {
        let text = "Running <fast> shoes & a shoe-horn";
        let marks = marks(text, Analyzer::English, &set(&["shoe", "run"]));
        assert_eq!(
            snippet(text, &marks, 200),
            "<mark>Running</mark> &lt;fast&gt; <mark>shoes</mark> &amp; a <mark>shoe</mark>-horn"
        );
    }

    #[test]
    fn only_the_words_sought_are_marked() {
        // The planner lists the words a typo or a prefix expanded to; others are not marked.
        let text = "the keyboard and the keystone";
        assert_eq!(
            marks(text, Analyzer::Default, &set(&["keyboard"])),
            [(4, 12)]
        );
        assert_eq!(
            marks(text, Analyzer::Default, &set(&["keyboard", "keystone"])).len(),
            2
        );
        assert!(marks(text, Analyzer::Default, &set(&["key"])).is_empty());
    }

    #[test]
    fn long_text_is_cut_around_its_matches_between_words() {
        let filler = "lorem ipsum dolor sit amet ".repeat(20);
        let text = format!("{filler}the rare word is here {filler}");
        let marks = marks(&text, Analyzer::Default, &set(&["rare"]));
        let cut = snippet(&text, &marks, 60);
        assert!(cut.starts_with('…') && cut.ends_with('…'), "{cut}");
        assert!(cut.contains("<mark>rare</mark>"), "{cut}");
        let inner = cut
            .trim_matches('…')
            .replace("<mark>", "")
            .replace("</mark>", "");
        assert!(inner.chars().count() <= 60, "{cut}");
        assert!(!inner.starts_with(' ') && !inner.ends_with(' '), "{cut}");
        // Words are not cut in half.
        for word in inner.split(' ') {
            assert!(
                [
                    "lorem", "ipsum", "dolor", "sit", "amet", "the", "rare", "word", "is", "here"
                ]
                .contains(&word),
                "{word:?} in {cut}"
            );
        }
    }

    #[test]
    fn cjk_pairs_join_into_one_mark() {
        let text = "我爱北京天安门";
        let marks = marks(text, Analyzer::Cjk, &set(&["北京", "京天"]));
        assert_eq!(snippet(text, &marks, 200), "我爱<mark>北京天</mark>安门");
    }
}
