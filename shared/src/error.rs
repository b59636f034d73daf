//! The error every handler returns, and its one mapping onto the public code table.

use std::time::Duration;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use plinth_types::{ErrorBody, ErrorCode, Scope};

/// A failed request. Each variant carries the context its message needs; [`ApiError::code`]
/// maps it onto the closed table of public codes.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("the body is not valid JSON: {0}")]
    MalformedJson(String),
    #[error("{0}")]
    UnknownField(String),
    #[error("invalid field `{field}`: {reason}")]
    InvalidField { field: String, reason: String },
    #[error("invalid parameter: {0}")]
    InvalidParameter(String),
    #[error("{0}")]
    InvalidProjectName(String),
    #[error("{0}")]
    InvalidKeyName(String),
    #[error("{0}")]
    InvalidScope(String),
    #[error("{0}")]
    InvalidResourcePattern(String),
    #[error("{0}")]
    InvalidQuota(String),
    #[error("{0}")]
    InvalidExpiry(String),
    #[error("the cursor was not issued by this server")]
    InvalidCursor,
    #[error("{0}")]
    InvalidBucketName(String),
    #[error("{0}")]
    InvalidObjectKey(String),
    #[error("the body does not match its `{0}`")]
    ChecksumMismatch(&'static str),
    #[error("header `{name}`: {reason}")]
    InvalidHeader { name: &'static str, reason: String },
    #[error("{0}")]
    InvalidTopicName(String),
    #[error("message {index}: {reason}")]
    InvalidMessage { index: usize, reason: String },
    #[error("offset {offset} is outside partition {partition}, which holds {start}..{end}")]
    OffsetOutOfRange {
        partition: u32,
        offset: u64,
        start: u64,
        end: u64,
    },
    #[error("{0}")]
    InvalidSubscriptionName(String),
    #[error("{0}")]
    InvalidIndexName(String),
    #[error("invalid schema: {0}")]
    InvalidSchema(String),
    #[error("document {position}: field `{field}`: {reason}")]
    InvalidDocument {
        position: usize,
        field: String,
        reason: String,
    },
    #[error("query at character {position}: {reason}")]
    InvalidQuery { position: usize, reason: String },
    #[error("invalid `{parameter}`: {reason}")]
    InvalidFilter {
        parameter: &'static str,
        reason: String,
    },
    #[error("index `{0}` not found")]
    IndexNotFound(String),
    #[error("document `{0}` not found")]
    DocumentNotFound(String),
    #[error("an index named `{0}` already exists in the project")]
    IndexNameTaken(String),
    #[error("subscription `{0}` not found")]
    SubscriptionNotFound(String),
    #[error("a subscription named `{0}` already exists in the project")]
    SubscriptionNameTaken(String),
    #[error("invalid push endpoint: {0}")]
    InvalidPushEndpoint(String),
    #[error("push endpoint refused: {0}")]
    PushEndpointForbidden(String),
    #[error("subscription `{0}` pushes its messages; it cannot be pulled or streamed")]
    SubscriptionIsPush(String),
    #[error("bucket notification `{0}` not found")]
    NotificationNotFound(String),
    #[error("bucket `{bucket}` already publishes its events to topic `{topic}`")]
    NotificationExists { bucket: String, topic: String },
    #[error("topic `{0}` not found")]
    TopicNotFound(String),
    #[error("topic `{topic}` has no partition {partition}")]
    PartitionNotFound { topic: String, partition: u32 },
    #[error("a topic named `{0}` already exists in the project")]
    TopicNameTaken(String),
    #[error("message {index} is larger than the {limit}-byte limit")]
    MessageTooLarge { index: usize, limit: u64 },
    #[error("bucket `{0}` not found")]
    BucketNotFound(String),
    #[error("object `{0}` not found")]
    ObjectNotFound(String),
    #[error("a bucket named `{0}` already exists in the project")]
    BucketNameTaken(String),
    #[error("bucket `{0}` is not empty; delete its objects or pass `force=true`")]
    BucketNotEmpty(String),
    #[error("the object is larger than the {limit}-byte limit")]
    ObjectTooLarge { limit: u64 },
    #[error("upload `{0}` not found")]
    UploadNotFound(String),
    #[error("{0}")]
    InvalidPart(String),
    #[error("the signed URL is not valid: {0}")]
    SignedUrlInvalid(&'static str),
    #[error("the signed URL has expired")]
    SignedUrlExpired,
    #[error("the condition in `{0}` does not hold")]
    PreconditionFailed(&'static str),
    #[error("the bucket does not accept content type `{0}`")]
    ContentTypeNotAllowed(String),
    #[error("the range is outside the object's {size} bytes")]
    RangeNotSatisfiable { size: u64 },
    #[error("send a credential as `Authorization: Bearer <key or token>`")]
    MissingCredentials,
    #[error("the credential is not known")]
    InvalidCredentials,
    #[error("invalid access token: {0}")]
    InvalidToken(&'static str),
    #[error("the access token has expired")]
    TokenExpired,
    #[error("the access token is not valid yet")]
    TokenNotYetValid,
    #[error("the API key has been revoked")]
    KeyRevoked,
    #[error("the API key has expired")]
    KeyExpired,
    #[error("this operation needs the admin token")]
    AdminRequired,
    #[error("the credential lacks the `{0}` scope")]
    MissingScope(Scope),
    #[error("the credential does not cover `{0}`")]
    ResourceNotAllowed(String),
    #[error("a token cannot widen its credential: {0}")]
    ScopeEscalation(String),
    #[error("the project's `{quota}` quota of {limit} would be exceeded")]
    QuotaExceeded { quota: &'static str, limit: u64 },
    #[error("project `{0}` not found")]
    ProjectNotFound(String),
    #[error("key `{0}` not found")]
    KeyNotFound(String),
    #[error("no route for this path")]
    RouteNotFound,
    #[error("the route does not take this method")]
    MethodNotAllowed,
    #[error("the request took too long")]
    RequestTimeout,
    #[error("a project named `{0}` already exists")]
    ProjectNameTaken(String),
    #[error("the body is larger than this route accepts")]
    PayloadTooLarge,
    #[error("send the body as `Content-Type: application/json`")]
    UnsupportedMediaType,
    #[error("too many requests for this key; retry in {}s", retry_after_secs(*retry_after))]
    RateLimited { retry_after: Duration, limit: u32 },
    #[error("internal error")]
    Internal(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("a backend is unavailable")]
    Unavailable(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl ApiError {
    /// Returns the public code of this error. The match is exhaustive on purpose: a new
    /// variant cannot ship without choosing its code.
    pub fn code(&self) -> ErrorCode {
        match self {
            ApiError::MalformedJson(_) => ErrorCode::MalformedJson,
            ApiError::UnknownField(_) => ErrorCode::UnknownField,
            ApiError::InvalidField { .. } => ErrorCode::InvalidField,
            ApiError::InvalidParameter(_) => ErrorCode::InvalidParameter,
            ApiError::InvalidProjectName(_) => ErrorCode::InvalidProjectName,
            ApiError::InvalidKeyName(_) => ErrorCode::InvalidKeyName,
            ApiError::InvalidScope(_) => ErrorCode::InvalidScope,
            ApiError::InvalidResourcePattern(_) => ErrorCode::InvalidResourcePattern,
            ApiError::InvalidQuota(_) => ErrorCode::InvalidQuota,
            ApiError::InvalidExpiry(_) => ErrorCode::InvalidExpiry,
            ApiError::InvalidCursor => ErrorCode::InvalidCursor,
            ApiError::InvalidBucketName(_) => ErrorCode::InvalidBucketName,
            ApiError::InvalidObjectKey(_) => ErrorCode::InvalidObjectKey,
            ApiError::ChecksumMismatch(_) => ErrorCode::ChecksumMismatch,
            ApiError::InvalidHeader { .. } => ErrorCode::InvalidHeader,
            ApiError::InvalidTopicName(_) => ErrorCode::InvalidTopicName,
            ApiError::InvalidMessage { .. } => ErrorCode::InvalidMessage,
            ApiError::OffsetOutOfRange { .. } => ErrorCode::OffsetOutOfRange,
            ApiError::InvalidSubscriptionName(_) => ErrorCode::InvalidSubscriptionName,
            ApiError::SubscriptionNotFound(_) => ErrorCode::SubscriptionNotFound,
            ApiError::SubscriptionNameTaken(_) => ErrorCode::SubscriptionNameTaken,
            ApiError::InvalidPushEndpoint(_) => ErrorCode::InvalidPushEndpoint,
            ApiError::PushEndpointForbidden(_) => ErrorCode::PushEndpointForbidden,
            ApiError::SubscriptionIsPush(_) => ErrorCode::SubscriptionIsPush,
            ApiError::NotificationNotFound(_) => ErrorCode::NotificationNotFound,
            ApiError::NotificationExists { .. } => ErrorCode::NotificationExists,
            ApiError::TopicNotFound(_) => ErrorCode::TopicNotFound,
            ApiError::PartitionNotFound { .. } => ErrorCode::PartitionNotFound,
            ApiError::TopicNameTaken(_) => ErrorCode::TopicNameTaken,
            ApiError::InvalidIndexName(_) => ErrorCode::InvalidIndexName,
            ApiError::InvalidSchema(_) => ErrorCode::InvalidSchema,
            ApiError::InvalidDocument { .. } => ErrorCode::InvalidDocument,
            ApiError::InvalidQuery { .. } => ErrorCode::InvalidQuery,
            ApiError::InvalidFilter { .. } => ErrorCode::InvalidFilter,
            ApiError::IndexNotFound(_) => ErrorCode::IndexNotFound,
            ApiError::DocumentNotFound(_) => ErrorCode::DocumentNotFound,
            ApiError::IndexNameTaken(_) => ErrorCode::IndexNameTaken,
            ApiError::MessageTooLarge { .. } => ErrorCode::MessageTooLarge,
            ApiError::BucketNotFound(_) => ErrorCode::BucketNotFound,
            ApiError::ObjectNotFound(_) => ErrorCode::ObjectNotFound,
            ApiError::BucketNameTaken(_) => ErrorCode::BucketNameTaken,
            ApiError::BucketNotEmpty(_) => ErrorCode::BucketNotEmpty,
            ApiError::ObjectTooLarge { .. } => ErrorCode::ObjectTooLarge,
            ApiError::PreconditionFailed(_) => ErrorCode::PreconditionFailed,
            ApiError::UploadNotFound(_) => ErrorCode::UploadNotFound,
            ApiError::InvalidPart(_) => ErrorCode::InvalidPart,
            ApiError::SignedUrlInvalid(_) => ErrorCode::SignedUrlInvalid,
            ApiError::SignedUrlExpired => ErrorCode::SignedUrlExpired,
            ApiError::ContentTypeNotAllowed(_) => ErrorCode::ContentTypeNotAllowed,
            ApiError::RangeNotSatisfiable { .. } => ErrorCode::RangeNotSatisfiable,
            ApiError::MissingCredentials => ErrorCode::MissingCredentials,
            ApiError::InvalidCredentials => ErrorCode::InvalidCredentials,
            ApiError::InvalidToken(_) => ErrorCode::InvalidToken,
            ApiError::TokenExpired => ErrorCode::TokenExpired,
            ApiError::TokenNotYetValid => ErrorCode::TokenNotYetValid,
            ApiError::KeyRevoked => ErrorCode::KeyRevoked,
            ApiError::KeyExpired => ErrorCode::KeyExpired,
            ApiError::AdminRequired => ErrorCode::AdminRequired,
            ApiError::MissingScope(_) => ErrorCode::MissingScope,
            ApiError::ResourceNotAllowed(_) => ErrorCode::ResourceNotAllowed,
            ApiError::ScopeEscalation(_) => ErrorCode::ScopeEscalation,
            ApiError::QuotaExceeded { .. } => ErrorCode::QuotaExceeded,
            ApiError::ProjectNotFound(_) => ErrorCode::ProjectNotFound,
            ApiError::KeyNotFound(_) => ErrorCode::KeyNotFound,
            ApiError::RouteNotFound => ErrorCode::RouteNotFound,
            ApiError::MethodNotAllowed => ErrorCode::MethodNotAllowed,
            ApiError::RequestTimeout => ErrorCode::RequestTimeout,
            ApiError::ProjectNameTaken(_) => ErrorCode::ProjectNameTaken,
            ApiError::PayloadTooLarge => ErrorCode::PayloadTooLarge,
            ApiError::UnsupportedMediaType => ErrorCode::UnsupportedMediaType,
            ApiError::RateLimited { .. } => ErrorCode::RateLimited,
            ApiError::Internal(_) => ErrorCode::Internal,
            ApiError::Unavailable(_) => ErrorCode::Unavailable,
        }
    }

    /// Wraps any failure the client cannot fix as a 500.
    pub fn internal(err: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        ApiError::Internal(err.into())
    }

    fn details(&self) -> Option<serde_json::Value> {
        match self {
            ApiError::InvalidField { field, .. } => Some(serde_json::json!({ "field": field })),
            ApiError::QuotaExceeded { quota, limit } => {
                Some(serde_json::json!({ "quota": quota, "limit": limit }))
            }
            ApiError::MissingScope(scope) => Some(serde_json::json!({ "scope": scope })),
            ApiError::ObjectTooLarge { limit } => Some(serde_json::json!({ "limit": limit })),
            ApiError::RangeNotSatisfiable { size } => Some(serde_json::json!({ "size": size })),
            ApiError::InvalidMessage { index, .. } => Some(serde_json::json!({ "index": index })),
            ApiError::MessageTooLarge { index, limit } => {
                Some(serde_json::json!({ "index": index, "limit": limit }))
            }
            ApiError::OffsetOutOfRange { start, end, .. } => {
                Some(serde_json::json!({ "start": start, "end": end }))
            }
            ApiError::InvalidDocument {
                position, field, ..
            } => Some(serde_json::json!({ "position": position, "field": field })),
            ApiError::InvalidQuery { position, .. } => {
                Some(serde_json::json!({ "position": position }))
            }
            ApiError::InvalidFilter { parameter, .. } => {
                Some(serde_json::json!({ "parameter": parameter }))
            }
            _ => None,
        }
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(err: sqlx::Error) -> Self {
        match err {
            sqlx::Error::PoolTimedOut | sqlx::Error::Io(_) | sqlx::Error::PoolClosed => {
                ApiError::Unavailable(err.into())
            }
            other => ApiError::Internal(other.into()),
        }
    }
}

fn retry_after_secs(wait: Duration) -> u64 {
    wait.as_secs_f64().ceil().max(1.0) as u64
}

/// The facts of an error response, left in the response's extensions for the middleware that
/// adds the request id to the body and logs the cause of a 5xx once.
#[derive(Clone, Debug)]
pub struct ErrorReport {
    /// The public code.
    pub code: ErrorCode,
    /// The client-facing message (generic for a 5xx).
    pub message: String,
    /// Structured details for the body.
    pub details: Option<serde_json::Value>,
    /// The full cause chain, for the log only.
    pub cause: Option<String>,
}

impl ErrorReport {
    /// Renders the JSON body of this report for the request `request_id`.
    pub fn body(&self, request_id: Option<String>) -> ErrorBody {
        ErrorBody {
            code: self.code.as_str().to_owned(),
            message: self.message.clone(),
            request_id,
            details: self.details.clone(),
        }
    }
}

/// Builds an error response for `report`; the body lacks a request id until the middleware
/// adds it.
pub fn error_response(report: ErrorReport, request_id: Option<String>) -> Response {
    let status =
        StatusCode::from_u16(report.code.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let body = axum::Json(report.body(request_id));
    let mut response = (status, body).into_response();
    response.extensions_mut().insert(report);
    response
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let code = self.code();
        let is_server_error = code.status() >= 500;
        let message = match &self {
            // A 5xx shows the client a generic message; the cause goes to the log.
            ApiError::Internal(_) => "internal error; quote the request id to the operator".into(),
            ApiError::Unavailable(_) => "a backend is unavailable; retry later".into(),
            other => other.to_string(),
        };
        let cause = is_server_error.then(|| error_chain(&self));
        let retry_after = match &self {
            ApiError::RateLimited { retry_after, .. } => Some(retry_after_secs(*retry_after)),
            ApiError::Unavailable(_) => Some(1),
            _ => None,
        };
        let limit = match &self {
            ApiError::RateLimited { limit, .. } => Some(*limit),
            _ => None,
        };
        let content_range = match &self {
            ApiError::RangeNotSatisfiable { size } => Some(format!("bytes */{size}")),
            _ => None,
        };
        let report = ErrorReport {
            code,
            message,
            details: self.details(),
            cause,
        };
        let mut response = error_response(report, None);
        let headers = response.headers_mut();
        // RFC 9110, section 15.5.17: a 416 says how long the representation is.
        if let Some(value) = content_range.and_then(|v| HeaderValue::from_str(&v).ok()) {
            headers.insert(header::CONTENT_RANGE, value);
        }
        if let Some(secs) = retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(secs));
            if let Some(limit) = limit {
                // The IETF RateLimit header fields (draft-ietf-httpapi-ratelimit-headers).
                headers.insert("ratelimit-limit", HeaderValue::from(limit));
                headers.insert("ratelimit-remaining", HeaderValue::from(0));
                headers.insert("ratelimit-reset", HeaderValue::from(secs));
            }
        }
        response
    }
}

fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_limited_carries_retry_after_and_ratelimit_headers() {
        let err = ApiError::RateLimited {
            retry_after: Duration::from_millis(1500),
            limit: 5,
        };
        let response = err.into_response();
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(response.headers()[header::RETRY_AFTER], "2");
        assert_eq!(response.headers()["ratelimit-limit"], "5");
        assert_eq!(response.headers()["ratelimit-remaining"], "0");
    }

    #[test]
    fn internal_errors_hide_their_cause_from_the_client() {
        let err = ApiError::internal(std::io::Error::other("disk on fire"));
        let response = err.into_response();
        let report = response.extensions().get::<ErrorReport>().unwrap();
        assert_eq!(report.code, ErrorCode::Internal);
        assert!(!report.message.contains("disk"));
        assert!(report.cause.as_deref().unwrap().contains("disk on fire"));
    }
}
