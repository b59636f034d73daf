//! Server-assigned ids and the clock they share.
//!
//! An id is a type prefix, the creation time in milliseconds (48 bits, hex) and 64 random
//! bits, so ids sort by creation and listings can page by id alone.

use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use time::OffsetDateTime;

/// Returns a new id such as `prj_0193a1b2c3d4e5f60718293a4b5c6d7e`.
pub fn new_id(prefix: &str) -> String {
    let millis = now_millis() as u64 & 0xffff_ffff_ffff;
    format!("{prefix}_{millis:012x}{}", random_hex(8))
}

/// Returns `bytes` random bytes as lowercase hex.
pub fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    fill_random(&mut buf);
    buf.iter().map(|b| format!("{b:02x}")).collect()
}

/// Fills `buf` from the operating system's secure random source.
pub fn fill_random(buf: &mut [u8]) {
    // The system source only fails when the OS cannot supply entropy at all; nothing secure
    // can be minted then, so this is a broken invariant, not a recoverable error.
    SystemRandom::new()
        .fill(buf)
        .expect("the system random source failed");
}

/// Milliseconds since the Unix epoch, now.
pub fn now_millis() -> i64 {
    (OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64
}

/// Converts milliseconds since the epoch into a UTC date-time.
pub fn from_millis(millis: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(millis) * 1_000_000)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

/// Converts a date-time into milliseconds since the epoch.
pub fn to_millis(at: OffsetDateTime) -> i64 {
    (at.unix_timestamp_nanos() / 1_000_000) as i64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_sort_by_creation_and_do_not_repeat() {
        let a = new_id("prj");
        std::thread::sleep(std::time::Duration::from_millis(2));
        let b = new_id("prj");
        assert!(a < b, "{a} !< {b}");
        assert_eq!(a.len(), "prj_".len() + 12 + 16);
        assert_ne!(new_id("prj"), new_id("prj"));
    }

    #[test]
    fn millis_round_trip() {
        let now = now_millis();
        assert_eq!(to_millis(from_millis(now)), now);
    }
}
