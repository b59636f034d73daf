//! The analyzers that split text fields into words, registered on every index under the
//! names [`analyzer_name`] gives them.
//!
//! `cjk` follows the bigram approach of Lucene's CJK analyzer: Chinese and Japanese are
//! written without spaces, and without a dictionary a word cannot be cut out reliably, so a
//! run of CJK characters becomes every pair of neighbouring characters. A query is analyzed
//! the same way and its pairs must appear in order, which finds a word by its characters
//! without a dictionary (at the price of some false matches across word boundaries).

use plinth_types::search::Analyzer;
use tantivy::Index;
use tantivy::tokenizer::{
    AsciiFoldingFilter, Language, LowerCaser, RemoveLongFilter, SimpleTokenizer, Stemmer,
    TextAnalyzer, Token, TokenStream, Tokenizer,
};

/// Longest word indexed, in bytes; longer ones are dropped (they are rarely words).
const LONGEST_WORD: usize = 64;

/// The name an analyzer is registered under.
pub(crate) fn analyzer_name(analyzer: Analyzer) -> &'static str {
    match analyzer {
        Analyzer::Default => "plinth_default",
        Analyzer::English => "plinth_english",
        Analyzer::Cjk => "plinth_cjk",
    }
}

/// Builds an analyzer.
pub(crate) fn analyzer(analyzer: Analyzer) -> TextAnalyzer {
    match analyzer {
        Analyzer::Default => TextAnalyzer::builder(SimpleTokenizer::default())
            .filter(RemoveLongFilter::limit(LONGEST_WORD))
            .filter(LowerCaser)
            .filter(AsciiFoldingFilter)
            .build(),
        Analyzer::English => TextAnalyzer::builder(SimpleTokenizer::default())
            .filter(RemoveLongFilter::limit(LONGEST_WORD))
            .filter(LowerCaser)
            .filter(AsciiFoldingFilter)
            .filter(Stemmer::new(Language::English))
            .build(),
        Analyzer::Cjk => TextAnalyzer::builder(CjkTokenizer)
            .filter(RemoveLongFilter::limit(LONGEST_WORD))
            .filter(LowerCaser)
            .filter(AsciiFoldingFilter)
            .build(),
    }
}

/// Registers every analyzer on an index (tantivy keeps the names in the schema, not the
/// analyzers, so each opening registers them again).
pub(crate) fn register(index: &Index) {
    for which in [Analyzer::Default, Analyzer::English, Analyzer::Cjk] {
        index
            .tokenizers()
            .register(analyzer_name(which), analyzer(which));
    }
}

/// The words an analyzer makes of a text, with their positions.
pub(crate) fn words(analyzer: &mut TextAnalyzer, text: &str) -> Vec<(usize, String)> {
    let mut stream = analyzer.token_stream(text);
    let mut words = Vec::new();
    while stream.advance() {
        let token = stream.token();
        words.push((token.position, token.text.clone()));
    }
    words
}

/// Whether a character is written in a CJK script (Han, kana, Hangul).
fn is_cjk(c: char) -> bool {
    matches!(c as u32,
        0x3040..=0x30FF       // hiragana, katakana
        | 0x3400..=0x4DBF     // Han extension A
        | 0x4E00..=0x9FFF     // Han
        | 0xAC00..=0xD7AF     // Hangul syllables
        | 0xF900..=0xFAFF     // Han compatibility
        | 0xFF66..=0xFF9F     // half-width katakana
        | 0x20000..=0x2FA1F) // Han extensions B and on
}

/// Splits runs of CJK characters into overlapping pairs (a lone character stays one token)
/// and other text into words of letters and digits.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct CjkTokenizer;

/// The tokens of one text, made up front.
#[derive(Debug)]
pub(crate) struct CjkTokenStream {
    tokens: Vec<Token>,
    next: usize,
}

impl Tokenizer for CjkTokenizer {
    type TokenStream<'a> = CjkTokenStream;

    fn token_stream<'a>(&'a mut self, text: &'a str) -> CjkTokenStream {
        let mut tokens = Vec::new();
        let push = |from: usize, to: usize, tokens: &mut Vec<Token>| {
            tokens.push(Token {
                offset_from: from,
                offset_to: to,
                position: tokens.len(),
                text: text[from..to].to_owned(),
                position_length: 1,
            });
        };
        let chars: Vec<(usize, char)> = text.char_indices().collect();
        let end_of = |i: usize| chars.get(i).map_or(text.len(), |&(at, _)| at);
        let mut i = 0;
        while i < chars.len() {
            let (at, c) = chars[i];
            if is_cjk(c) {
                let mut j = i;
                while j < chars.len() && is_cjk(chars[j].1) {
                    j += 1;
                }
                if j - i == 1 {
                    push(at, end_of(i + 1), &mut tokens);
                } else {
                    for (k, &(from, _)) in chars.iter().enumerate().take(j - 1).skip(i) {
                        push(from, end_of(k + 2), &mut tokens);
                    }
                }
                i = j;
            } else if c.is_alphanumeric() {
                let mut j = i;
                while j < chars.len() && chars[j].1.is_alphanumeric() && !is_cjk(chars[j].1) {
                    j += 1;
                }
                push(at, end_of(j), &mut tokens);
                i = j;
            } else {
                i += 1;
            }
        }
        CjkTokenStream { tokens, next: 0 }
    }
}

impl TokenStream for CjkTokenStream {
    fn advance(&mut self) -> bool {
        self.next += 1;
        self.next <= self.tokens.len()
    }

    fn token(&self) -> &Token {
        &self.tokens[self.next - 1]
    }

    fn token_mut(&mut self) -> &mut Token {
        &mut self.tokens[self.next - 1]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(which: Analyzer, text: &str) -> Vec<String> {
        words(&mut analyzer(which), text)
            .into_iter()
            .map(|(_, w)| w)
            .collect()
    }

    #[test]
    fn cjk_runs_become_pairs_and_other_text_words() {
        assert_eq!(
            texts(Analyzer::Cjk, "我爱北京 Tiananmen 门"),
            ["我爱", "爱北", "北京", "tiananmen", "门"]
        );
        assert_eq!(
            texts(Analyzer::Cjk, "東京タワー"),
            ["東京", "京タ", "タワ", "ワー"]
        );
    }

    #[test]
    fn english_stems_and_default_folds() {
        assert_eq!(texts(Analyzer::English, "Running shoes"), ["run", "shoe"]);
        assert_eq!(
            texts(Analyzer::Default, "Crème Brûlée"),
            ["creme", "brulee"]
        );
    }
}
