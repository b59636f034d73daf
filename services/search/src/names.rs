//! Index names: a value that exists is valid.

use plinth_shared::ApiError;

/// An index name: 1 to 128 of ASCII letters, digits, `.`, `_` and `-` (the rules of topic
/// names), minus `.` and `..`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct IndexName(String);

impl IndexName {
    /// Parses an index name.
    ///
    /// # Errors
    ///
    /// Returns `invalid_index_name` saying which rule the name breaks.
    pub fn parse(name: &str) -> Result<IndexName, ApiError> {
        let invalid = |why: &str| ApiError::InvalidIndexName(format!("index name `{name}`: {why}"));
        if !(1..=128).contains(&name.len()) {
            return Err(invalid("must be 1 to 128 characters"));
        }
        let allowed = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-');
        if !name.bytes().all(allowed) {
            return Err(invalid(
                "only letters, digits, `.`, `_` and `-` are allowed",
            ));
        }
        if name == "." || name == ".." {
            return Err(invalid("must not be `.` or `..`"));
        }
        Ok(IndexName(name.to_owned()))
    }

    /// Returns the name.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Returns the resource name scopes are checked against: `index:NAME`.
    pub fn resource(&self) -> String {
        format!("index:{}", self.0)
    }
}
