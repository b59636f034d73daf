//! Resource patterns: which buckets, objects, topics and indexes a credential may touch.
//!
//! A resource is named `kind:name`, for example `bucket:avatars/user-42/face.png` (a bucket
//! and an object key), `bucket:avatars` (the bucket itself), `topic:orders.eu` or
//! `index:products`. A pattern has the same form where `*` stands for any run of characters,
//! `/` included: `bucket:avatars/user-42/*`, `topic:orders.*`.

use std::fmt;

use crate::error::ApiError;

/// The kinds of resource a pattern can name.
const KINDS: &[&str] = &["bucket", "topic", "index"];

/// Longest pattern accepted: a bucket name, `/`, and a 1024-byte object key, with room left.
const MAX_LEN: usize = 1100;

/// A parsed resource pattern; a value that exists is well-formed.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ResourcePattern(String);

impl ResourcePattern {
    /// Parses a pattern such as `bucket:avatars/*`.
    ///
    /// # Errors
    ///
    /// Returns `invalid_resource_pattern` for an unknown kind, an empty name, control
    /// characters or an overlong pattern.
    pub fn parse(text: &str) -> Result<ResourcePattern, ApiError> {
        let invalid = |why: &str| ApiError::InvalidResourcePattern(format!("`{text}`: {why}"));
        let (kind, name) = text
            .split_once(':')
            .ok_or_else(|| invalid("expected `kind:name`"))?;
        if !KINDS.contains(&kind) {
            return Err(invalid("the kind must be bucket, topic or index"));
        }
        if name.is_empty() {
            return Err(invalid("the name is empty"));
        }
        if text.len() > MAX_LEN {
            return Err(invalid("longer than 1100 bytes"));
        }
        if name.chars().any(char::is_control) {
            return Err(invalid("control characters are not allowed"));
        }
        Ok(ResourcePattern(text.to_owned()))
    }

    /// Returns the pattern as written.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Returns whether `resource` (a `kind:name` string) matches this pattern.
    pub fn matches(&self, resource: &str) -> bool {
        glob_matches(self.0.as_bytes(), resource.as_bytes())
    }

    /// Returns whether every resource `narrower` matches is also matched by `self`, which is
    /// what down-scoping a token requires.
    pub fn covers(&self, narrower: &ResourcePattern) -> bool {
        glob_covers(self.0.as_bytes(), narrower.0.as_bytes())
    }
}

impl fmt::Display for ResourcePattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Returns whether `resource` matches `patterns`; an empty list allows every resource.
pub fn allowed(patterns: &[ResourcePattern], resource: &str) -> bool {
    patterns.is_empty() || patterns.iter().any(|pattern| pattern.matches(resource))
}

/// Wildcard matching with `*` only, by the usual greedy walk that backtracks to the last star.
fn glob_matches(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        if p < pattern.len() && pattern[p] == b'*' {
            star = Some((p, t));
            p += 1;
        } else if p < pattern.len() && pattern[p] == text[t] {
            p += 1;
            t += 1;
        } else if let Some((star_p, star_t)) = star {
            p = star_p + 1;
            t = star_t + 1;
            star = Some((star_p, star_t + 1));
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

/// Pattern containment: `wide` covers `narrow` when a `*` of `narrow` is only ever absorbed
/// by a `*` of `wide` (a literal of `wide` cannot stand for a whole run), and literals match
/// literals. This is exact for `*`-only globs and never answers yes wrongly.
fn glob_covers(wide: &[u8], narrow: &[u8]) -> bool {
    // reach[j]: can the first i bytes of `wide` produce the first j bytes of `narrow`.
    let mut reach = vec![false; narrow.len() + 1];
    reach[0] = true;
    for &w in wide {
        let mut next = vec![false; narrow.len() + 1];
        if w == b'*' {
            let mut seen = false;
            for j in 0..=narrow.len() {
                seen |= reach[j];
                next[j] = seen;
            }
        } else {
            for j in 1..=narrow.len() {
                next[j] = reach[j - 1] && narrow[j - 1] == w && w != b'*';
            }
        }
        reach = next;
    }
    reach[narrow.len()]
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn pattern(text: &str) -> ResourcePattern {
        ResourcePattern::parse(text).unwrap()
    }

    #[test]
    fn parse_refuses_bad_patterns() {
        for bad in ["avatars/*", "queue:x", "bucket:", "bucket:a\u{0}b"] {
            assert!(ResourcePattern::parse(bad).is_err(), "{bad}");
        }
        assert!(ResourcePattern::parse(&format!("bucket:{}", "a".repeat(1100))).is_err());
    }

    #[test]
    fn stars_match_any_run_including_slashes() {
        let p = pattern("bucket:avatars/user-42/*");
        assert!(p.matches("bucket:avatars/user-42/face.png"));
        assert!(p.matches("bucket:avatars/user-42/a/b/c"));
        assert!(!p.matches("bucket:avatars/user-43/face.png"));
        assert!(!p.matches("bucket:avatars"));
        assert!(pattern("topic:orders.*").matches("topic:orders.eu"));
        assert!(!pattern("topic:orders.*").matches("topic:ordersXeu"));
        assert!(pattern("index:products").matches("index:products"));
        assert!(!pattern("index:products").matches("index:products2"));
    }

    #[test]
    fn covers_is_containment() {
        assert!(pattern("bucket:avatars/*").covers(&pattern("bucket:avatars/user-42/*")));
        assert!(pattern("bucket:*").covers(&pattern("bucket:avatars/x")));
        assert!(!pattern("bucket:avatars/user-42/*").covers(&pattern("bucket:avatars/*")));
        assert!(!pattern("bucket:avatars/a").covers(&pattern("bucket:avatars/*")));
        assert!(!pattern("bucket:avatars/*").covers(&pattern("topic:avatars/x")));
    }

    #[test]
    fn an_empty_list_allows_everything() {
        assert!(allowed(&[], "bucket:anything"));
        assert!(!allowed(&[pattern("bucket:a")], "bucket:b"));
    }

    proptest! {
        #[test]
        fn a_pattern_without_stars_matches_only_itself(name in "[a-z0-9/._-]{1,20}", other in "[a-z0-9/._-]{1,20}") {
            let p = pattern(&format!("bucket:{name}"));
            let itself = format!("bucket:{name}");
            prop_assert!(p.matches(&itself));
            prop_assert_eq!(p.matches(&format!("bucket:{other}")), name == other);
        }

        #[test]
        fn covering_patterns_match_whatever_the_narrow_one_matches(
            wide in "[ab*]{0,6}", narrow in "[ab*]{0,6}", text in "[ab]{0,8}"
        ) {
            let wide = pattern(&format!("bucket:{wide}x"));
            let narrow = pattern(&format!("bucket:{narrow}x"));
            let text = format!("bucket:{text}x");
            if wide.covers(&narrow) && narrow.matches(&text) {
                prop_assert!(wide.matches(&text));
            }
        }

        #[test]
        fn every_pattern_covers_itself(body in "[ab*/]{1,10}") {
            let p = pattern(&format!("bucket:{body}"));
            prop_assert!(p.covers(&p));
        }
    }
}
