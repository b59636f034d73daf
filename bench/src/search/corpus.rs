//! The benchmark's corpus and query mix: products generated from a seeded source, so every
//! system gets the same documents, and queries drawn from the same vocabulary.

use serde_json::{Value, json};

/// Words in the vocabulary.
const VOCABULARY: usize = 20_000;

/// Tags documents draw from.
const TAGS: usize = 50;

/// A small, fast, seeded source of numbers (SplitMix64).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// In `[0, 1)`.
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    /// A word rank, log-uniform over the vocabulary: rank 0 is the most common.
    fn rank(&mut self) -> usize {
        ((VOCABULARY as f64).powf(self.unit()) as usize - 1).min(VOCABULARY - 1)
    }
}

/// The vocabulary's word of a rank: syllables spelling the rank, so words are distinct.
fn word(rank: usize) -> String {
    const SYLLABLES: [&str; 20] = [
        "ka", "lo", "mi", "ne", "ru", "sa", "ti", "vo", "zu", "pe", "da", "fi", "go", "hu", "ja",
        "be", "co", "ly", "wa", "xe",
    ];
    let mut n = rank + 20;
    let mut word = String::new();
    while n > 0 {
        word.push_str(SYLLABLES[n % 20]);
        n /= 20;
    }
    word
}

fn words(rng: &mut Rng, count: usize) -> String {
    (0..count)
        .map(|_| word(rng.rank()))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Document `n` as one line of JSON.
pub(super) fn document(n: usize) -> String {
    let mut rng = Rng(n as u64 ^ 0x5EED);
    let title_words = 3 + rng.below(6);
    let title = words(&mut rng, title_words);
    let body_words = 30 + rng.below(50);
    let body = words(&mut rng, body_words);
    let tags: Vec<String> = (0..1 + rng.below(3))
        .map(|_| format!("tag{}", rng.below(TAGS)))
        .collect();
    let price = (rng.below(100_000) as f64) / 100.0;
    let day = rng.below(3 * 365);
    let date = time::Date::from_calendar_date(2023, time::Month::January, 1)
        .expect("a date")
        .saturating_add(time::Duration::days(day as i64));
    json!({
        "id": format!("d{n}"), "title": title, "body": body, "tags": tags,
        "price": price, "date": format!("{date}T12:00:00Z"),
    })
    .to_string()
}

/// One query of the mix, as each system writes it.
#[derive(Debug, Clone)]
pub(super) struct Probe {
    pub(super) kind: &'static str,
    /// Plinth's search body.
    pub(super) plinth: Value,
    /// tantivy's query parser syntax, or a prefix, which its parser cannot write.
    pub(super) tantivy: String,
    pub(super) tantivy_prefix: bool,
    /// PostgreSQL: the `tsquery` and an optional price ceiling.
    pub(super) pg_query: String,
    pub(super) pg_price_below: Option<f64>,
}

/// The query mix: the same kinds each round, words drawn from the vocabulary.
pub(super) fn probes(count: usize) -> Vec<Probe> {
    let mut rng = Rng(0xC0FFEE);
    (0..count)
        .map(|n| {
            let common = word(rng.below(20));
            let rare = word(1_000 + rng.below(VOCABULARY - 1_000));
            let other = word(rng.below(500));
            match n % 6 {
                0 => Probe {
                    kind: "common word",
                    plinth: json!({"q": common, "limit": 20}),
                    tantivy: common.clone(),
                    tantivy_prefix: false,
                    pg_query: common,
                    pg_price_below: None,
                },
                1 => Probe {
                    kind: "rare word",
                    plinth: json!({"q": rare, "limit": 20}),
                    tantivy: rare.clone(),
                    tantivy_prefix: false,
                    pg_query: rare,
                    pg_price_below: None,
                },
                2 => Probe {
                    kind: "two words",
                    plinth: json!({"q": format!("{common} {other}"), "limit": 20}),
                    tantivy: format!("+{common} +{other}"),
                    tantivy_prefix: false,
                    pg_query: format!("{common} & {other}"),
                    pg_price_below: None,
                },
                3 => Probe {
                    kind: "phrase",
                    plinth: json!({"q": format!("\"{common} {other}\""), "limit": 20}),
                    tantivy: format!("\"{common} {other}\""),
                    tantivy_prefix: false,
                    pg_query: format!("{common} <-> {other}"),
                    pg_price_below: None,
                },
                4 => {
                    let prefix: String = other.chars().take(4).collect();
                    Probe {
                        kind: "prefix",
                        plinth: json!({"q": prefix, "limit": 20}),
                        tantivy: prefix.clone(),
                        tantivy_prefix: true,
                        pg_query: format!("{prefix}:*"),
                        pg_price_below: None,
                    }
                }
                _ => Probe {
                    kind: "two words, price filter",
                    plinth: json!({
                        "q": format!("{common} {other}"), "limit": 20,
                        "filter": {"field": "price", "lt": 100.0}
                    }),
                    tantivy: format!("+{common} +{other} +price:[0 TO 100}}"),
                    tantivy_prefix: false,
                    pg_query: format!("{common} & {other}"),
                    pg_price_below: Some(100.0),
                },
            }
        })
        .collect()
}
