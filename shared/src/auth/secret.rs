//! API-key secrets: how they look, and how they are stored.
//!
//! A secret reads `plinth_sk_` + 32 base64url characters (24 random bytes) + 8 hex digits of
//! a CRC-32 over everything before them. The fixed prefix lets secret scanners find a leaked
//! key; the checksum lets them (and the server, before any lookup) tell a real key from a
//! random string. Only a SHA-256 hash of the secret is stored: the secret carries 192 random
//! bits, so a slow password hash would add cost and no safety.

use aws_lc_rs::digest::{SHA256, digest};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use crate::ids::fill_random;

/// The prefix of every API-key secret.
pub const KEY_PREFIX: &str = "plinth_sk_";

/// The prefix of generated admin tokens, so scanners find those too.
pub const ADMIN_PREFIX: &str = "plinth_admin_";

const BODY_LEN: usize = 32;
const CHECKSUM_LEN: usize = 8;

/// Characters of a secret shown in listings to recognise it.
pub const SHOWN_PREFIX_LEN: usize = KEY_PREFIX.len() + 6;

/// Returns a new API-key secret.
pub fn generate_key_secret() -> String {
    with_checksum(KEY_PREFIX)
}

/// Returns a new admin token.
pub fn generate_admin_token() -> String {
    with_checksum(ADMIN_PREFIX)
}

fn with_checksum(prefix: &str) -> String {
    let mut random = [0u8; 24];
    fill_random(&mut random);
    let head = format!("{prefix}{}", URL_SAFE_NO_PAD.encode(random));
    let checksum = crc32fast::hash(head.as_bytes());
    format!("{head}{checksum:08x}")
}

/// Returns whether `text` has the shape and checksum of an API-key secret.
pub fn is_well_formed_key(text: &str) -> bool {
    text.len() == KEY_PREFIX.len() + BODY_LEN + CHECKSUM_LEN
        && text.starts_with(KEY_PREFIX)
        && checksum_ok(text)
}

fn checksum_ok(text: &str) -> bool {
    let Some(split) = text.len().checked_sub(CHECKSUM_LEN) else {
        return false;
    };
    let (head, tail) = text.split_at(split);
    u32::from_str_radix(tail, 16).is_ok_and(|sum| sum == crc32fast::hash(head.as_bytes()))
}

/// Returns the stored form of a secret: its SHA-256, as hex.
pub fn hash_secret(secret: &str) -> String {
    use std::fmt::Write;

    let mut hex = String::with_capacity(64);
    for byte in digest(&SHA256, secret.as_bytes()).as_ref() {
        let _ = write!(hex, "{byte:02x}");
    }
    hex
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_secrets_are_well_formed_and_unique() {
        let a = generate_key_secret();
        assert!(a.starts_with(KEY_PREFIX));
        assert!(is_well_formed_key(&a), "{a}");
        assert_ne!(a, generate_key_secret());
    }

    #[test]
    fn a_changed_character_fails_the_checksum() {
        let secret = generate_key_secret();
        let mut bytes = secret.into_bytes();
        let i = KEY_PREFIX.len() + 3;
        bytes[i] = if bytes[i] == b'A' { b'B' } else { b'A' };
        assert!(!is_well_formed_key(&String::from_utf8(bytes).unwrap()));
        assert!(!is_well_formed_key("plinth_sk_short"));
    }

    #[test]
    fn hashes_are_stable_hex() {
        assert_eq!(hash_secret("x"), hash_secret("x"));
        assert_eq!(hash_secret("x").len(), 64);
        assert_ne!(hash_secret("x"), hash_secret("y"));
    }
}
