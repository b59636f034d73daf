//! The naming rule topics, subscriptions and search indexes share: 1 to 128 ASCII letters,
//! digits, `.`, `_` and `-` (Kafka's rule for topic names), but not `.` or `..`. Each
//! service wraps it in a newtype with its own error code.

/// The longest name.
pub const MAX_NAME_LEN: usize = 128;

/// Says which part of the rule `name` breaks, if any.
pub fn name_problem(name: &str) -> Option<&'static str> {
    if !(1..=MAX_NAME_LEN).contains(&name.len()) {
        return Some("must be 1 to 128 characters");
    }
    let allowed = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-');
    if !name.bytes().all(allowed) {
        return Some("only letters, digits, `.`, `_` and `-` are allowed");
    }
    if name == "." || name == ".." {
        return Some("must not be `.` or `..`");
    }
    None
}
