//! Bodies of the console API: projects, API keys, access tokens, quotas, usage and audit.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::scope::Scope;

/// One page of a listing. Pass `next_cursor` back as `cursor` to get the next page; it is
/// absent on the last page.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Page<T> {
    /// The items of this page, in the listing's order.
    pub items: Vec<T>,
    /// The cursor of the next page, if there is one.
    pub next_cursor: Option<String>,
}

/// Pagination parameters of a listing.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::IntoParams))]
#[serde(deny_unknown_fields)]
pub struct PageQuery {
    /// Items per page, 1 to 1000 (default 100).
    pub limit: Option<u32>,
    /// A `next_cursor` from the previous page.
    pub cursor: Option<String>,
}

/// Per-project limits. An absent value means "the operator's default"; a default that is
/// absent too means unlimited.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Quotas {
    /// Bytes stored across all buckets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stored_bytes: Option<u64>,
    /// Objects stored across all buckets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub objects: Option<u64>,
    /// Size of the largest single object, in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object_size_max: Option<u64>,
    /// Topics in the project.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topics: Option<u64>,
    /// Partitions a topic may have.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partitions_per_topic: Option<u64>,
    /// Size of the largest message value, in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message_size_max: Option<u64>,
    /// Messages published per UTC day.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub messages_per_day: Option<u64>,
    /// Longest retention a topic may ask for, in seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention_seconds: Option<u64>,
    /// Documents indexed across all indexes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub documents: Option<u64>,
    /// Search indexes in the project.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub indexes: Option<u64>,
    /// Bytes the project's search indexes may take on disk. An index is measured after each
    /// commit and a write is refused once the project is at the limit, so the write that
    /// crosses it still goes in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index_bytes: Option<u64>,
    /// Sustained requests per second allowed to each of the project's keys.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requests_per_second: Option<u64>,
    /// Requests a key may send in a burst above its sustained rate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_burst: Option<u64>,
}

/// A project: the tenant every bucket, topic and index belongs to.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Project {
    /// Server-assigned id (`prj_...`), used in every URL.
    pub id: String,
    /// Unique name: 3 to 63 lowercase letters, digits and `-`, starting with a letter.
    pub name: String,
    /// The project's own quota values (defaults apply where absent).
    pub quotas: Quotas,
    /// When the project was created.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// When the project was last changed.
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
}

/// Body of `POST /console/v1/projects`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CreateProject {
    /// The project's unique name.
    pub name: String,
    /// Quota values that differ from the operator's defaults.
    #[serde(default)]
    pub quotas: Option<Quotas>,
}

/// Body of `PATCH /console/v1/projects/{project}`; absent fields are left as they are.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct UpdateProject {
    /// A new unique name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Replaces the project's quota values.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quotas: Option<Quotas>,
}

/// A request-rate limit for one API key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct RateLimit {
    /// Sustained requests per second.
    pub per_second: u32,
    /// Requests allowed in a burst (the bucket's size); at least 1.
    pub burst: u32,
}

/// An API key as listed: everything but the secret, which is shown only once.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ApiKey {
    /// Server-assigned id (`key_...`).
    pub id: String,
    /// The project the key belongs to.
    pub project_id: String,
    /// A label for people.
    pub name: String,
    /// What the key may do.
    pub scopes: Vec<Scope>,
    /// Resource patterns the key is limited to (`bucket:avatars/*`); empty means all.
    pub resources: Vec<String>,
    /// The first characters of the secret, to recognise it.
    pub secret_prefix: String,
    /// The key's own rate limit, if it overrides the project's.
    pub rate_limit: Option<RateLimit>,
    /// When the key was created.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// When the key stops working by itself.
    #[serde(with = "time::serde::rfc3339::option")]
    pub expires_at: Option<OffsetDateTime>,
    /// When the key was revoked.
    #[serde(with = "time::serde::rfc3339::option")]
    pub revoked_at: Option<OffsetDateTime>,
    /// When the secret was last replaced.
    #[serde(with = "time::serde::rfc3339::option")]
    pub rotated_at: Option<OffsetDateTime>,
}

/// Body of `POST /console/v1/projects/{project}/keys`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CreateKey {
    /// A label for people, 1 to 100 characters.
    pub name: String,
    /// What the key may do; at least one scope.
    pub scopes: Vec<Scope>,
    /// Resource patterns (`bucket:NAME/KEY*`, `topic:NAME*`, `index:NAME*`); empty means all.
    #[serde(default)]
    pub resources: Vec<String>,
    /// When the key stops working; must be in the future.
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub expires_at: Option<OffsetDateTime>,
    /// A rate limit for this key instead of the project's.
    #[serde(default)]
    pub rate_limit: Option<RateLimit>,
}

/// Body of `PATCH /console/v1/projects/{project}/keys/{key}`; absent fields are left as they
/// are.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct UpdateKey {
    /// A new label.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// A new rate limit for the key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<RateLimit>,
    /// Drops the key's own rate limit so the project's applies again.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub clear_rate_limit: bool,
}

/// A key together with its secret: the only time the secret is shown.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct KeyWithSecret {
    /// The key.
    pub key: ApiKey,
    /// The secret (`plinth_sk_...`), to send as `Authorization: Bearer`.
    pub secret: String,
}

/// Body of `POST /console/v1/tokens`: mints an access token from the bearer credential, an
/// API key or another token. Absent fields inherit from that credential; every present one
/// must be within it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct TokenRequest {
    /// A subset of the credential's scopes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scopes: Option<Vec<Scope>>,
    /// Resource patterns, each within one of the credential's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<Vec<String>>,
    /// Lifetime in seconds; capped by the server's maximum and by the credential's own expiry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_seconds: Option<u64>,
    /// Filters added to every search the token makes, by index name (`*`: every index), in
    /// the form of a search's `filter`. They are kept in every token minted from this one,
    /// combined with any that token adds, and no query can remove or widen them. A token with
    /// them may not hold `search:write` or `admin`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>))]
    pub search_filters: Option<BTreeMap<String, serde_json::Value>>,
}

/// A minted access token.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AccessToken {
    /// The JWT, to send as `Authorization: Bearer`.
    pub token: String,
    /// Always `Bearer`.
    pub token_type: String,
    /// When the token stops working.
    #[serde(with = "time::serde::rfc3339")]
    pub expires_at: OffsetDateTime,
    /// The project the token acts in.
    pub project_id: String,
    /// The token's scopes.
    pub scopes: Vec<Scope>,
    /// The token's resource patterns; empty means all.
    pub resources: Vec<String>,
    /// The filters added to the token's searches, by index name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub search_filters: BTreeMap<String, serde_json::Value>,
}

/// The claims inside a Plinth access token.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TokenClaims {
    /// Issuer, the deployment's configured `token_issuer`.
    pub iss: String,
    /// Audience, the deployment's configured `token_audience`.
    pub aud: String,
    /// Subject: the id of the API key the token descends from.
    pub sub: String,
    /// The project the token acts in.
    pub project: String,
    /// Scopes, as wire names.
    pub scopes: Vec<Scope>,
    /// Resource patterns; empty means all.
    #[serde(default)]
    pub resources: Vec<String>,
    /// Expiry, seconds since the epoch.
    pub exp: i64,
    /// Not before, seconds since the epoch.
    pub nbf: i64,
    /// Issued at, seconds since the epoch.
    pub iat: i64,
    /// A unique id of the token.
    pub jti: String,
    /// Limits on what the token may upload (signed upload URLs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upload: Option<UploadLimits>,
    /// Filters added to the token's searches, by index name (`*`: every index).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub search_filters: BTreeMap<String, serde_json::Value>,
}

/// Limits a signed upload URL puts on the object it stores.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct UploadLimits {
    /// The only content type the upload may have.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_type: Option<String>,
    /// The largest body the upload may send, in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_size: Option<u64>,
}

/// A public signing key in a JSON Web Key Set (RFC 7517, OKP keys of RFC 8037).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Jwk {
    /// Key type, `OKP`.
    pub kty: String,
    /// Curve, `Ed25519`.
    pub crv: String,
    /// The public key, base64url without padding.
    pub x: String,
    /// Key id, as in the tokens' `kid` header.
    pub kid: String,
    /// Algorithm, `EdDSA`.
    pub alg: String,
    /// Use, `sig`.
    #[serde(rename = "use")]
    pub use_: String,
}

/// The JWKS document at `/.well-known/jwks.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Jwks {
    /// The keys tokens may currently be signed with.
    pub keys: Vec<Jwk>,
}

/// A signing key as the console lists it (never the private half).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SigningKey {
    /// Key id.
    pub kid: String,
    /// When it was created.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// When a newer key replaced it for signing; tokens it signed stay valid until they expire.
    #[serde(with = "time::serde::rfc3339::option")]
    pub retired_at: Option<OffsetDateTime>,
    /// Whether new tokens are signed with it.
    pub active: bool,
}

/// Body of `GET /console/v1/projects/{project}/quotas`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct QuotaReport {
    /// The values in force: the project's own, else the operator's defaults.
    pub limits: Quotas,
    /// The project's own values only.
    pub overrides: Quotas,
    /// Current gauge readings (`stored_bytes`, `objects`, `documents`, ...).
    pub usage: std::collections::BTreeMap<String, u64>,
}

/// Query of `GET /console/v1/projects/{project}/usage`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::IntoParams))]
#[serde(deny_unknown_fields)]
pub struct UsageQuery {
    /// First day, `YYYY-MM-DD` (UTC), inclusive; default 30 days ago.
    pub from: Option<String>,
    /// Last day, `YYYY-MM-DD` (UTC), inclusive; default today.
    pub to: Option<String>,
    /// Only this metric.
    pub metric: Option<String>,
}

/// One counter of one project on one UTC day.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct UsageRecord {
    /// The day, `YYYY-MM-DD` (UTC).
    pub day: String,
    /// The metric (`requests`, `ingress_bytes`, ...).
    pub metric: String,
    /// The count for that day.
    pub value: u64,
}

/// Body of `GET /console/v1/projects/{project}/usage`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct UsageReport {
    /// The project.
    pub project_id: String,
    /// Records ordered by day, then metric.
    pub items: Vec<UsageRecord>,
}

/// Query of `GET /console/v1/audit`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::IntoParams))]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    /// Only entries about this project (a project key always sees only its own).
    pub project: Option<String>,
    /// Items per page, 1 to 1000 (default 100).
    pub limit: Option<u32>,
    /// A `next_cursor` from the previous page.
    pub cursor: Option<String>,
}

/// One admin change, newest first in listings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AuditEntry {
    /// Entry id.
    pub id: String,
    /// When it happened.
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    /// Who did it: `admin`, or `key:<id>` of a project key.
    pub actor: String,
    /// The project it concerns, if any.
    pub project_id: Option<String>,
    /// What was done (`project.create`, `key.revoke`, ...).
    pub action: String,
    /// The id of the thing it was done to.
    pub target: String,
    /// The request that did it.
    pub request_id: String,
    /// Non-secret particulars of the change.
    pub details: serde_json::Value,
}

/// Body of `GET /readyz`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Readiness {
    /// `ready` or `unavailable`.
    pub status: String,
    /// Each backend and whether it answered.
    pub checks: std::collections::BTreeMap<String, bool>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_fields_are_refused() {
        let err =
            serde_json::from_str::<CreateProject>(r#"{"name":"a","colour":"red"}"#).unwrap_err();
        assert!(err.to_string().contains("unknown field"), "{err}");
    }

    #[test]
    fn absent_quotas_are_not_serialized() {
        let quotas = Quotas {
            objects: Some(5),
            ..Quotas::default()
        };
        assert_eq!(serde_json::to_string(&quotas).unwrap(), r#"{"objects":5}"#);
    }
}
