//! The public error codes and the JSON body every error response carries.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Declares the closed table of public error codes: variant, wire code and HTTP status, once.
macro_rules! error_codes {
    ($($(#[doc = $doc:literal])* $variant:ident = ($code:literal, $status:literal),)*) => {
        /// A public error code. The table is closed: every error a service returns maps to
        /// exactly one of these, and each code always answers with the same HTTP status.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum ErrorCode {
            $($(#[doc = $doc])* $variant,)*
        }

        impl ErrorCode {
            /// Every code, in table order.
            pub const ALL: &'static [ErrorCode] = &[$(ErrorCode::$variant,)*];

            /// Returns the stable snake_case code clients match on.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(ErrorCode::$variant => $code,)*
                }
            }

            /// Returns the HTTP status this code is always sent with.
            pub fn status(self) -> u16 {
                match self {
                    $(ErrorCode::$variant => $status,)*
                }
            }

            /// Looks a code up by its wire name; `None` for a code this build does not know.
            pub fn parse(code: &str) -> Option<ErrorCode> {
                match code {
                    $($code => Some(ErrorCode::$variant),)*
                    _ => None,
                }
            }
        }
    };
}

error_codes! {
    /// The body is not valid JSON.
    MalformedJson = ("malformed_json", 400),
    /// The body names a field the operation does not take.
    UnknownField = ("unknown_field", 400),
    /// A field of the body is missing or has the wrong type or value.
    InvalidField = ("invalid_field", 400),
    /// A query-string or path parameter cannot be parsed.
    InvalidParameter = ("invalid_parameter", 400),
    /// A project name breaks the naming rules.
    InvalidProjectName = ("invalid_project_name", 400),
    /// A key name is empty or too long.
    InvalidKeyName = ("invalid_key_name", 400),
    /// A scope is not one of the known scopes.
    InvalidScope = ("invalid_scope", 400),
    /// A resource pattern is malformed.
    InvalidResourcePattern = ("invalid_resource_pattern", 400),
    /// A quota or rate limit value is out of range.
    InvalidQuota = ("invalid_quota", 400),
    /// An expiry or lifetime is in the past or out of range.
    InvalidExpiry = ("invalid_expiry", 400),
    /// A pagination cursor was not issued by this server.
    InvalidCursor = ("invalid_cursor", 400),
    /// A bucket name breaks the naming rules (3 to 63 of `a-z`, `0-9`, `-`, `.`).
    InvalidBucketName = ("invalid_bucket_name", 400),
    /// An object key is empty, too long, or has a forbidden character or segment.
    InvalidObjectKey = ("invalid_object_key", 400),
    /// A `Content-MD5` or `x-plinth-checksum-sha256` does not match the body.
    ChecksumMismatch = ("checksum_mismatch", 400),
    /// A request header has a value that cannot be used.
    InvalidHeader = ("invalid_header", 400),
    /// A topic name breaks the naming rules (1 to 128 of `a-z`, `A-Z`, `0-9`, `.`, `_`,
    /// `-`).
    InvalidTopicName = ("invalid_topic_name", 400),
    /// A subscription name breaks the naming rules (those of topic names).
    InvalidSubscriptionName = ("invalid_subscription_name", 400),
    /// A push endpoint that is not an `http` or `https` URL, or whose host does not resolve.
    InvalidPushEndpoint = ("invalid_push_endpoint", 400),
    /// A push endpoint that reaches a loopback, private, link-local or metadata address the
    /// operator has not allowed.
    PushEndpointForbidden = ("push_endpoint_forbidden", 400),
    /// A message has no value or two, bad base64, a bad key or header, or a bad delay.
    InvalidMessage = ("invalid_message", 400),
    /// An offset or time lies outside what the partition holds.
    OffsetOutOfRange = ("offset_out_of_range", 400),
    /// An index name breaks the naming rules (those of topic names).
    InvalidIndexName = ("invalid_index_name", 400),
    /// An index schema is unusable: an unknown type or analyzer, a duplicate or reserved
    /// field, a missing primary key, an option the field's type cannot have.
    InvalidSchema = ("invalid_schema", 400),
    /// A document does not fit its index's schema; `details` name its position and field.
    InvalidDocument = ("invalid_document", 400),
    /// A query string cannot be parsed; `details` give the position.
    InvalidQuery = ("invalid_query", 400),
    /// A filter, sort, facet or highlight is malformed or names a field that cannot be used
    /// so; `details.parameter` says which.
    InvalidFilter = ("invalid_filter", 400),
    /// No `Authorization: Bearer` credential was sent.
    MissingCredentials = ("missing_credentials", 401),
    /// The API key or admin token is not known.
    InvalidCredentials = ("invalid_credentials", 401),
    /// The access token is malformed, badly signed, or for another audience or issuer.
    InvalidToken = ("invalid_token", 401),
    /// The access token has expired.
    TokenExpired = ("token_expired", 401),
    /// The access token is not valid yet.
    TokenNotYetValid = ("token_not_yet_valid", 401),
    /// The API key (or the key a token was minted from) has been revoked.
    KeyRevoked = ("key_revoked", 401),
    /// The API key (or the key a token was minted from) has expired.
    KeyExpired = ("key_expired", 401),
    /// The operation needs the admin token.
    AdminRequired = ("admin_required", 403),
    /// The credential lacks the scope the operation needs.
    MissingScope = ("missing_scope", 403),
    /// The credential's resource patterns do not cover the resource.
    ResourceNotAllowed = ("resource_not_allowed", 403),
    /// A down-scoped token asked for more than the credential it came from.
    ScopeEscalation = ("scope_escalation", 403),
    /// No such multipart upload in the bucket (or it expired).
    UploadNotFound = ("upload_not_found", 404),
    /// A completion names a part that was not uploaded, or with another ETag, or out of
    /// order, or a part other than the last is below the minimum size.
    InvalidPart = ("invalid_part", 400),
    /// A signed URL was altered, or used for another object or method.
    SignedUrlInvalid = ("signed_url_invalid", 403),
    /// A signed URL has expired.
    SignedUrlExpired = ("signed_url_expired", 403),
    /// The write would take the project over one of its quotas.
    QuotaExceeded = ("quota_exceeded", 403),
    /// No such project (or it belongs to someone else).
    ProjectNotFound = ("project_not_found", 404),
    /// No such bucket in the project (or it belongs to someone else).
    BucketNotFound = ("bucket_not_found", 404),
    /// No such object in the bucket.
    ObjectNotFound = ("object_not_found", 404),
    /// No such API key in the project.
    KeyNotFound = ("key_not_found", 404),
    /// No such topic in the project (or it belongs to someone else).
    TopicNotFound = ("topic_not_found", 404),
    /// No such subscription in the project.
    SubscriptionNotFound = ("subscription_not_found", 404),
    /// No such bucket notification in the project.
    NotificationNotFound = ("notification_not_found", 404),
    /// The topic has no partition of that number.
    PartitionNotFound = ("partition_not_found", 404),
    /// No such index in the project (or it belongs to someone else).
    IndexNotFound = ("index_not_found", 404),
    /// No document with that id in the index.
    DocumentNotFound = ("document_not_found", 404),
    /// No route matches the path.
    RouteNotFound = ("route_not_found", 404),
    /// The route exists but not for this method.
    MethodNotAllowed = ("method_not_allowed", 405),
    /// The request took longer than the server's request timeout.
    RequestTimeout = ("request_timeout", 408),
    /// Another project already has this name.
    ProjectNameTaken = ("project_name_taken", 409),
    /// The project already has a bucket of this name.
    BucketNameTaken = ("bucket_name_taken", 409),
    /// The bucket still holds objects; delete them or pass `force=true`.
    BucketNotEmpty = ("bucket_not_empty", 409),
    /// The project already has a subscription of this name.
    SubscriptionNameTaken = ("subscription_name_taken", 409),
    /// The bucket already publishes its events to that topic.
    NotificationExists = ("notification_exists", 409),
    /// A push subscription delivers by itself; it cannot be pulled or streamed.
    SubscriptionIsPush = ("subscription_is_push", 409),
    /// The project already has a topic of this name.
    TopicNameTaken = ("topic_name_taken", 409),
    /// The project already has an index of this name.
    IndexNameTaken = ("index_name_taken", 409),
    /// The object is larger than the bucket's or project's largest object.
    ObjectTooLarge = ("object_too_large", 413),
    /// A message value is larger than the project's or the server's largest message.
    MessageTooLarge = ("message_too_large", 413),
    /// A condition of the request (`If-Match`, `If-None-Match`, ...) does not hold.
    PreconditionFailed = ("precondition_failed", 412),
    /// The body is larger than the route accepts.
    PayloadTooLarge = ("payload_too_large", 413),
    /// The body is not `application/json`.
    UnsupportedMediaType = ("unsupported_media_type", 415),
    /// The bucket does not accept this content type.
    ContentTypeNotAllowed = ("content_type_not_allowed", 415),
    /// The requested range lies outside the object.
    RangeNotSatisfiable = ("range_not_satisfiable", 416),
    /// The key has used up its request rate; retry after `Retry-After` seconds.
    RateLimited = ("rate_limited", 429),
    /// The server failed; the request id finds the cause in its logs.
    Internal = ("internal", 500),
    /// A backend is unreachable; retry after `Retry-After` seconds.
    Unavailable = ("unavailable", 503),
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The JSON body of every error response.
///
/// `code` is kept as a string on the wire so that a client built against an older table can
/// still read a code it does not know; [`ErrorBody::error_code`] parses it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ErrorBody {
    /// One of the public error codes.
    pub code: String,
    /// A human-readable explanation; not stable, do not match on it.
    pub message: String,
    /// The id of the request, as in the `x-request-id` response header.
    pub request_id: Option<String>,
    /// Extra structured context where one helps (the offending field, the quota, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<serde_json::Value>,
}

impl ErrorBody {
    /// Returns the code as a known [`ErrorCode`], or `None` for a code newer than this build.
    pub fn error_code(&self) -> Option<ErrorCode> {
        ErrorCode::parse(&self.code)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    #[test]
    fn codes_are_unique_and_round_trip() {
        let mut seen = HashSet::new();
        for code in ErrorCode::ALL {
            assert!(seen.insert(code.as_str()), "duplicate code {code}");
            assert_eq!(ErrorCode::parse(code.as_str()), Some(*code));
            assert!(
                (400..600).contains(&code.status()),
                "{code} has no error status"
            );
        }
        assert_eq!(ErrorCode::parse("no_such_code"), None);
    }

    #[test]
    fn retryable_codes_have_their_statuses() {
        assert_eq!(ErrorCode::RateLimited.status(), 429);
        assert_eq!(ErrorCode::Unavailable.status(), 503);
    }
}
