//! The error every SDK call returns, and how an HTTP error response becomes one.

use plinth_types::{ErrorBody, ErrorCode};

/// The code given to an error response whose body is not Plinth's JSON error body, such as the
/// HTML page of a proxy in front of the server.
const UNKNOWN_CODE: &str = "unknown";

/// How much of a non-JSON error body is kept as the message.
const MESSAGE_MAX_CHARS: usize = 200;

/// An error from a Plinth call.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The server answered with an error status.
    ///
    /// `code` is the stable snake_case code of the body, or `unknown` when the body was not
    /// Plinth's JSON error body; [`Error::code`] turns it into an [`ErrorCode`].
    #[error("{code}: {message} (HTTP {status}{})", request_suffix(.request_id.as_deref()))]
    Api {
        /// The HTTP status.
        status: u16,
        /// The error code, as sent.
        code: String,
        /// A human-readable explanation; not stable, do not match on it.
        message: String,
        /// The id the server gave the request, to find it in the server's logs.
        request_id: Option<String>,
    },
    /// The request could not be sent or its response could not be read: the server is
    /// unreachable, the connection broke, or the request timed out.
    #[error("request to plinth failed")]
    Transport(#[source] reqwest::Error),
    /// A success response carried a body that is not what the operation returns, which
    /// usually means the server is a different version than the SDK.
    #[error("cannot decode the response body")]
    Decode(#[source] serde_json::Error),
    /// An id passed to a call cannot name a resource in a URL path: it is empty, `.` or `..`.
    /// No request was sent.
    #[error("`{0}` cannot be sent as an id: ids must not be empty, `.` or `..`")]
    InvalidId(String),
    /// An object key cannot be sent in a URL path: it is empty, or one of its `/`-separated
    /// segments is `.` or `..`, which the URL standard would resolve away. No request was sent.
    #[error("`{0}` cannot be sent as an object key: it is empty or has a `.` or `..` segment")]
    InvalidKey(String),
    /// A value meant for a request header cannot be sent in one: a metadata name that is no
    /// header name, or a value that is not visible ASCII. No request was sent.
    #[error("cannot send the request: {0}")]
    InvalidHeader(String),
    /// A local file or stream could not be read or written during a transfer.
    #[error("local input or output failed")]
    Io(#[source] std::io::Error),
    /// A success response lacks a header the operation needs, or has one the SDK cannot read.
    #[error("unexpected response from the server: {0}")]
    MalformedResponse(String),
    /// The client is misconfigured: a malformed base URL or an unusable token.
    #[error("invalid client configuration: {0}")]
    Config(String),
    /// A multipart upload failed after it was created. It is still on the server (until it
    /// expires): [`Client::resume_file_upload`](crate::Client::resume_file_upload) with
    /// this `upload_id` sends only the parts it lacks. [`Error::code`] and
    /// [`Error::status`] are those of `source`.
    #[error("multipart upload {upload_id} was interrupted")]
    UploadInterrupted {
        /// The upload, to resume or abort.
        upload_id: String,
        /// What failed.
        #[source]
        source: Box<Error>,
    },
}

impl Error {
    /// Builds the error for an error response from its status, its `x-request-id` header and
    /// its body.
    pub(crate) fn from_response(
        status: u16,
        header_request_id: Option<String>,
        body: &[u8],
    ) -> Self {
        if let Ok(parsed) = serde_json::from_slice::<ErrorBody>(body) {
            return Error::Api {
                status,
                code: parsed.code,
                message: parsed.message,
                request_id: parsed.request_id.or(header_request_id),
            };
        }

        // Something other than Plinth answered (a proxy, a load balancer): keep the start of
        // what it said, so the caller sees more than a bare status.
        let text = String::from_utf8_lossy(body);
        let text = text.trim();
        let message = if text.is_empty() {
            format!("HTTP {status} with no error body")
        } else {
            text.chars().take(MESSAGE_MAX_CHARS).collect()
        };
        Error::Api {
            status,
            code: UNKNOWN_CODE.to_owned(),
            message,
            request_id: header_request_id,
        }
    }

    /// Returns the error code of an [`Error::Api`], or `None` for other errors and for a code
    /// this SDK does not know (including `unknown`).
    pub fn code(&self) -> Option<ErrorCode> {
        self.response()
            .and_then(|(_, code, _)| ErrorCode::parse(code))
    }

    /// Returns the HTTP status of an [`Error::Api`], or `None` when no response arrived.
    pub fn status(&self) -> Option<u16> {
        self.response().map(|(status, _, _)| status)
    }

    /// Returns the server's id of the failed request, when it sent one.
    pub fn request_id(&self) -> Option<&str> {
        self.response().and_then(|(_, _, request_id)| request_id)
    }

    /// The error response behind this error, as status, code and request id: its own, or
    /// the one that interrupted a multipart upload.
    fn response(&self) -> Option<(u16, &str, Option<&str>)> {
        match self {
            Error::Api {
                status,
                code,
                request_id,
                ..
            } => Some((*status, code, request_id.as_deref())),
            Error::UploadInterrupted { source, .. } => source.response(),
            Error::Transport(_)
            | Error::Decode(_)
            | Error::InvalidId(_)
            | Error::InvalidKey(_)
            | Error::InvalidHeader(_)
            | Error::Io(_)
            | Error::MalformedResponse(_)
            | Error::Config(_) => None,
        }
    }
}

/// Formats the request id part of an [`Error::Api`] message.
fn request_suffix(request_id: Option<&str>) -> String {
    match request_id {
        Some(id) => format!(", request {id}"),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_error_body_is_parsed() {
        let body = br#"{"code":"project_not_found","message":"no such project","request_id":"r1"}"#;

        let err = Error::from_response(404, Some("header-id".to_owned()), body);

        assert_eq!(err.code(), Some(ErrorCode::ProjectNotFound));
        assert_eq!(err.status(), Some(404));
        assert_eq!(err.request_id(), Some("r1"));
        assert_eq!(
            err.to_string(),
            "project_not_found: no such project (HTTP 404, request r1)"
        );
    }

    #[test]
    fn request_id_falls_back_to_the_header() {
        let body = br#"{"code":"internal","message":"internal error","request_id":null}"#;

        let err = Error::from_response(500, Some("header-id".to_owned()), body);

        assert_eq!(err.request_id(), Some("header-id"));
    }

    #[test]
    fn code_newer_than_the_sdk_is_kept_as_a_string() {
        let body = br#"{"code":"brand_new","message":"m","request_id":null}"#;

        let err = Error::from_response(400, None, body);

        assert_eq!(err.code(), None);
        assert!(matches!(&err, Error::Api { code, .. } if code == "brand_new"));
    }

    #[test]
    fn non_json_error_body_becomes_an_unknown_api_error() {
        let body = b"<html><body>502 Bad Gateway</body></html>\n";

        let err = Error::from_response(502, None, body);

        let Error::Api {
            status,
            code,
            message,
            request_id,
        } = &err
        else {
            panic!("expected an api error, got {err:?}");
        };
        assert_eq!((*status, code.as_str()), (502, "unknown"));
        assert_eq!(message, "<html><body>502 Bad Gateway</body></html>");
        assert_eq!(*request_id, None);
        assert_eq!(
            err.to_string(),
            "unknown: <html><body>502 Bad Gateway</body></html> (HTTP 502)"
        );
    }

    #[test]
    fn empty_and_long_bodies_get_bounded_messages() {
        let empty = Error::from_response(503, None, b"");
        let long = Error::from_response(500, None, "x".repeat(10_000).as_bytes());

        assert!(matches!(&empty, Error::Api { message, .. } if message.contains("no error body")));
        assert!(matches!(&long, Error::Api { message, .. } if message.len() == MESSAGE_MAX_CHARS));
    }
}
