//! Bucket names and object keys: a value that exists is valid.

use plinth_shared::ApiError;

/// A bucket name as S3 allows it: 3 to 63 characters of lowercase letters, digits, `-` and
/// `.`, starting and ending with a letter or digit, without `..` and not shaped like an IP
/// address.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct BucketName(String);

impl BucketName {
    /// Parses a bucket name.
    ///
    /// # Errors
    ///
    /// Returns `invalid_bucket_name` saying which rule the name breaks.
    pub fn parse(name: &str) -> Result<BucketName, ApiError> {
        let invalid =
            |why: &str| ApiError::InvalidBucketName(format!("bucket name `{name}`: {why}"));
        if !(3..=63).contains(&name.len()) {
            return Err(invalid("must be 3 to 63 characters"));
        }
        let allowed =
            |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.';
        if !name.bytes().all(allowed) {
            return Err(invalid(
                "only lowercase letters, digits, `-` and `.` are allowed",
            ));
        }
        let edge = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
        if !edge(name.as_bytes()[0]) || !edge(name.as_bytes()[name.len() - 1]) {
            return Err(invalid("must start and end with a letter or digit"));
        }
        if name.contains("..") {
            return Err(invalid("must not contain `..`"));
        }
        if name.parse::<std::net::Ipv4Addr>().is_ok() {
            return Err(invalid("must not look like an IP address"));
        }
        Ok(BucketName(name.to_owned()))
    }

    /// Returns the name.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Returns the resource name scopes are checked against: `bucket:NAME`.
    pub fn resource(&self) -> String {
        format!("bucket:{}", self.0)
    }
}

/// Longest object key, in bytes of UTF-8, as in S3.
pub const MAX_KEY_BYTES: usize = 1024;

/// An object key: 1 to 1024 bytes of UTF-8, `/` allowed as a separator, but no leading `/`,
/// no `.` or `..` segment, and no control characters. The key never names a file: blobs are
/// named by the server, so these rules are for the clients' sake (paths that tools and
/// browsers would resolve differently), not a defence of the disk.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ObjectKey(String);

impl ObjectKey {
    /// Parses an object key.
    ///
    /// # Errors
    ///
    /// Returns `invalid_object_key` saying which rule the key breaks.
    pub fn parse(key: &str) -> Result<ObjectKey, ApiError> {
        let invalid = |why: &str| ApiError::InvalidObjectKey(format!("object key: {why}"));
        if key.is_empty() {
            return Err(invalid("must not be empty"));
        }
        if key.len() > MAX_KEY_BYTES {
            return Err(invalid("must be at most 1024 bytes"));
        }
        if key.starts_with('/') {
            return Err(invalid("must not start with `/`"));
        }
        if key.chars().any(char::is_control) {
            return Err(invalid("must not contain control characters"));
        }
        if key
            .split('/')
            .any(|segment| segment == "." || segment == "..")
        {
            return Err(invalid("must not contain `.` or `..` segments"));
        }
        Ok(ObjectKey(key.to_owned()))
    }

    /// Returns the key.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Returns the resource name scopes are checked against: `bucket:BUCKET/KEY`.
    pub fn resource(&self, bucket: &BucketName) -> String {
        format!("bucket:{}/{}", bucket.as_str(), self.0)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn bucket_names_follow_s3() {
        for good in ["abc", "my-bucket.v2", "a1b", &"a".repeat(63)] {
            assert!(BucketName::parse(good).is_ok(), "{good}");
        }
        for bad in [
            "ab",
            "ABC",
            "-abc",
            "abc-",
            "a..b",
            "a_b",
            "192.168.1.1",
            &"a".repeat(64),
        ] {
            assert!(BucketName::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn object_keys_refuse_what_paths_would_resolve() {
        for good in [
            "a",
            "photos/2024/cat.png",
            "a//b",
            "..a",
            "a..",
            "ünïcødé/ключ",
            "a b",
        ] {
            assert!(ObjectKey::parse(good).is_ok(), "{good}");
        }
        let long = "k".repeat(1025);
        for bad in [
            "",
            "/a",
            "a/../b",
            "..",
            "./a",
            "a/.",
            "a\u{0}b",
            "a\nb",
            long.as_str(),
        ] {
            assert!(ObjectKey::parse(bad).is_err(), "{bad:?}");
        }
        assert!(
            ObjectKey::parse(&"é".repeat(512)).is_ok(),
            "1024 bytes of UTF-8 is the limit"
        );
        assert!(ObjectKey::parse(&"é".repeat(513)).is_err());
    }

    proptest! {
        #[test]
        fn parsed_keys_have_no_dot_segments(key in "\\PC{1,40}") {
            if let Ok(parsed) = ObjectKey::parse(&key) {
                prop_assert!(!parsed.as_str().split('/').any(|s| s == ".." || s == "."));
                prop_assert!(!parsed.as_str().starts_with('/'));
            }
        }

        #[test]
        fn parsed_bucket_names_are_dns_safe(name in "[a-z0-9.-]{0,70}") {
            if let Ok(parsed) = BucketName::parse(&name) {
                prop_assert!(!parsed.as_str().contains(".."));
                prop_assert!((3..=63).contains(&parsed.as_str().len()));
            }
        }
    }
}
