//! Conditional requests (RFC 9110, section 13), evaluated as S3 does.

use std::time::{Duration, SystemTime};

use axum::http::HeaderMap;
use plinth_shared::ApiError;
use plinth_types::storage::ObjectInfo;

/// What a read's conditions decide.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Read {
    /// Serve the object.
    Proceed,
    /// Answer 304 Not Modified.
    NotModified,
}

/// An entity-tag condition: `*`, or a list of tags.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Tags {
    Any,
    List(Vec<String>),
}

impl Tags {
    fn parse(headers: &HeaderMap, name: &'static str) -> Result<Option<Tags>, ApiError> {
        let Some(value) = headers.get(name) else {
            return Ok(None);
        };
        let text = value.to_str().map_err(|_| ApiError::InvalidHeader {
            name,
            reason: "must be visible ASCII".into(),
        })?;
        if text.trim() == "*" {
            return Ok(Some(Tags::Any));
        }
        // Weak tags compare by their opaque part; ours are all strong.
        let tags = text
            .split(',')
            .map(|tag| tag.trim().trim_start_matches("W/").to_owned())
            .filter(|tag| !tag.is_empty())
            .collect();
        Ok(Some(Tags::List(tags)))
    }

    fn matches(&self, etag: &str) -> bool {
        match self {
            Tags::Any => true,
            Tags::List(tags) => tags.iter().any(|tag| tag == etag),
        }
    }
}

fn date(headers: &HeaderMap, name: &'static str) -> Option<SystemTime> {
    // An unparsable date is ignored, as RFC 9110 asks.
    headers
        .get(name)?
        .to_str()
        .ok()
        .and_then(|text| httpdate::parse_http_date(text).ok())
}

/// HTTP dates have whole seconds; so must the comparison.
fn modified_after(info: &ObjectInfo, since: SystemTime) -> bool {
    let modified: SystemTime = info.last_modified.into();
    let modified = modified
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    let since = since
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs();
    modified > since
}

/// Evaluates the conditions of a GET or HEAD against the current version.
///
/// # Errors
///
/// Returns `precondition_failed` when `If-Match` or `If-Unmodified-Since` fails.
pub(crate) fn check_read(headers: &HeaderMap, info: &ObjectInfo) -> Result<Read, ApiError> {
    let if_match = Tags::parse(headers, "if-match")?;
    match &if_match {
        Some(tags) if !tags.matches(&info.etag) => {
            return Err(ApiError::PreconditionFailed("If-Match"));
        }
        Some(_) => {}
        None => {
            if let Some(since) = date(headers, "if-unmodified-since")
                && modified_after(info, since)
            {
                return Err(ApiError::PreconditionFailed("If-Unmodified-Since"));
            }
        }
    }
    match Tags::parse(headers, "if-none-match")? {
        Some(tags) if tags.matches(&info.etag) => Ok(Read::NotModified),
        Some(_) => Ok(Read::Proceed),
        None => match date(headers, "if-modified-since") {
            Some(since) if !modified_after(info, since) => Ok(Read::NotModified),
            _ => Ok(Read::Proceed),
        },
    }
}

/// The conditions of a PUT, checked against the version it would replace inside the
/// writing transaction, so that two racing create-only writes cannot both succeed.
#[derive(Clone, Debug, Default)]
pub(crate) struct WriteConditions {
    if_match: Option<Tags>,
    if_none_match: Option<Tags>,
}

impl WriteConditions {
    /// Returns whether the request states no condition at all.
    pub(crate) fn is_empty(&self) -> bool {
        self.if_match.is_none() && self.if_none_match.is_none()
    }

    /// Reads `If-Match` and `If-None-Match`.
    ///
    /// # Errors
    ///
    /// Returns `invalid_header` for a header that is not text.
    pub(crate) fn parse(headers: &HeaderMap) -> Result<WriteConditions, ApiError> {
        Ok(WriteConditions {
            if_match: Tags::parse(headers, "if-match")?,
            if_none_match: Tags::parse(headers, "if-none-match")?,
        })
    }

    /// Checks the conditions against the current version's ETag (`None`: no object).
    ///
    /// # Errors
    ///
    /// Returns `precondition_failed` naming the header that failed.
    pub(crate) fn check(&self, current: Option<&str>) -> Result<(), ApiError> {
        if let Some(tags) = &self.if_match
            && !current.is_some_and(|etag| tags.matches(etag))
        {
            return Err(ApiError::PreconditionFailed("If-Match"));
        }
        if let Some(tags) = &self.if_none_match
            && current.is_some_and(|etag| tags.matches(etag))
        {
            return Err(ApiError::PreconditionFailed("If-None-Match"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;
    use time::macros::datetime;

    use super::*;

    fn info() -> ObjectInfo {
        ObjectInfo {
            bucket: "b".into(),
            key: "k".into(),
            size: 1,
            etag: "\"abc\"".into(),
            content_type: "text/plain".into(),
            cache_control: None,
            content_disposition: None,
            metadata: Default::default(),
            sha256: String::new(),
            last_modified: datetime!(2026-12-03 12:00:00.500 UTC),
        }
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(*name, HeaderValue::from_str(value).unwrap());
        }
        map
    }

    #[test]
    fn reads_follow_rfc_9110() {
        let object = info();
        let check = |pairs: &[(&'static str, &str)]| check_read(&headers(pairs), &object);
        assert_eq!(check(&[]).unwrap(), Read::Proceed);
        assert_eq!(
            check(&[("if-none-match", "\"abc\"")]).unwrap(),
            Read::NotModified
        );
        assert_eq!(
            check(&[("if-none-match", "W/\"abc\", \"x\"")]).unwrap(),
            Read::NotModified
        );
        assert_eq!(
            check(&[("if-none-match", "\"other\"")]).unwrap(),
            Read::Proceed
        );
        assert!(check(&[("if-match", "\"other\"")]).is_err());
        assert_eq!(check(&[("if-match", "*")]).unwrap(), Read::Proceed);
        let same_second = "Thu, 03 Dec 2026 12:00:00 GMT";
        let earlier = "Thu, 03 Dec 2026 11:59:59 GMT";
        assert_eq!(
            check(&[("if-modified-since", same_second)]).unwrap(),
            Read::NotModified
        );
        assert_eq!(
            check(&[("if-modified-since", earlier)]).unwrap(),
            Read::Proceed
        );
        assert!(check(&[("if-unmodified-since", earlier)]).is_err());
        assert_eq!(
            check(&[("if-unmodified-since", same_second)]).unwrap(),
            Read::Proceed
        );
        // If-None-Match wins over If-Modified-Since, If-Match over If-Unmodified-Since.
        assert_eq!(
            check(&[
                ("if-none-match", "\"x\""),
                ("if-modified-since", same_second)
            ])
            .unwrap(),
            Read::Proceed
        );
        assert_eq!(
            check(&[("if-match", "\"abc\""), ("if-unmodified-since", earlier)]).unwrap(),
            Read::Proceed
        );
        assert_eq!(
            check(&[("if-modified-since", "not a date")]).unwrap(),
            Read::Proceed
        );
    }

    #[test]
    fn writes_check_the_version_they_replace() {
        let create_only = WriteConditions::parse(&headers(&[("if-none-match", "*")])).unwrap();
        assert!(create_only.check(None).is_ok());
        assert!(create_only.check(Some("\"abc\"")).is_err());
        let replace = WriteConditions::parse(&headers(&[("if-match", "\"abc\"")])).unwrap();
        assert!(replace.check(Some("\"abc\"")).is_ok());
        assert!(replace.check(Some("\"def\"")).is_err());
        assert!(replace.check(None).is_err());
        assert!(WriteConditions::default().check(Some("\"x\"")).is_ok());
    }
}
