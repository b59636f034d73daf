//! Minting access tokens from a key, and down-scoping one token into another.

use std::collections::BTreeMap;
use std::time::Duration;

use plinth_types::Scope;
use plinth_types::console::{AccessToken, TokenClaims, TokenRequest, UploadLimits};
use serde_json::Value;

use super::pattern::ResourcePattern;
use super::{ALL_INDEXES, Authenticator, Caller, Principal};
use crate::error::ApiError;
use crate::ids::{from_millis, new_id, now_millis};

/// The most JSON a token's search filters may add: they travel in every request.
const MAX_SEARCH_FILTER_BYTES: usize = 4096;

impl Authenticator {
    /// Mints an access token for `caller` as narrowed by `request`.
    ///
    /// Absent fields inherit from the caller's credential. Scopes must be a subset, each
    /// resource pattern must lie within one of the credential's, and a token's lifetime may
    /// not reach past the token it came from. A key's own expiry caps the lifetime silently.
    ///
    /// # Errors
    ///
    /// Returns `scope_escalation` for any widening, `invalid_resource_pattern` or
    /// `invalid_expiry` for malformed requests, `invalid_filter` for malformed search filters
    /// or search filters beside a scope that writes, and `invalid_parameter` for the admin
    /// token, which belongs to no project.
    pub fn mint(&self, caller: &Caller, request: &TokenRequest) -> Result<AccessToken, ApiError> {
        self.mint_with(caller, request, None)
    }

    /// Mints like [`Authenticator::mint`], with limits on what the token may upload (the
    /// token of a signed upload URL). A token that already carries limits keeps them.
    ///
    /// # Errors
    ///
    /// As [`Authenticator::mint`].
    pub fn mint_with(
        &self,
        caller: &Caller,
        request: &TokenRequest,
        upload: Option<UploadLimits>,
    ) -> Result<AccessToken, ApiError> {
        let (project_id, key_id, from_token) = match &caller.principal {
            Principal::Admin => {
                return Err(ApiError::InvalidParameter(
                    "the admin token belongs to no project; mint tokens with a project key".into(),
                ));
            }
            Principal::Key { project_id, key_id } => (project_id, key_id, false),
            Principal::Token { project_id, key_id } => (project_id, key_id, true),
        };

        let scopes = match &request.scopes {
            None => caller.scopes.to_vec(),
            Some(asked) => {
                if let Some(extra) = asked.iter().find(|scope| !caller.scopes.contains(scope)) {
                    return Err(ApiError::ScopeEscalation(format!(
                        "scope `{extra}` not held"
                    )));
                }
                let mut scopes = asked.clone();
                scopes.sort();
                scopes.dedup();
                scopes
            }
        };

        let resources = match &request.resources {
            None => caller.resources.to_vec(),
            Some(asked) => {
                let asked = asked
                    .iter()
                    .map(|text| ResourcePattern::parse(text))
                    .collect::<Result<Vec<_>, _>>()?;
                if !caller.resources.is_empty() {
                    if asked.is_empty() {
                        return Err(ApiError::ScopeEscalation(
                            "an empty resource list means every resource".into(),
                        ));
                    }
                    for pattern in &asked {
                        if !caller.resources.iter().any(|held| held.covers(pattern)) {
                            return Err(ApiError::ScopeEscalation(format!(
                                "resource `{pattern}` is outside the credential's"
                            )));
                        }
                    }
                }
                asked
            }
        };

        let search_filters = search_filters(caller, request)?;
        if !search_filters.is_empty()
            && let Some(scope) = scopes
                .iter()
                .find(|s| matches!(s, Scope::SearchWrite | Scope::Admin))
        {
            return Err(ApiError::InvalidFilter {
                parameter: "search_filters",
                reason: format!(
                    "a token with search filters only reads; leave `{scope}` out of its scopes"
                ),
            });
        }

        let now = now_millis();
        let ttl = match request.ttl_seconds {
            Some(0) => {
                return Err(ApiError::InvalidExpiry(
                    "`ttl_seconds` must be positive".into(),
                ));
            }
            Some(secs) => Duration::from_secs(secs),
            None => self.token_ttl,
        };
        if ttl > self.token_ttl_max {
            return Err(ApiError::InvalidExpiry(format!(
                "`ttl_seconds` is above the maximum of {}",
                self.token_ttl_max.as_secs()
            )));
        }
        let mut exp_ms = now.saturating_add(ttl.as_millis() as i64);
        if let Some(limit) = caller.expires_at_ms
            && exp_ms > limit
        {
            if from_token && request.ttl_seconds.is_some() {
                return Err(ApiError::ScopeEscalation(
                    "the lifetime reaches past the token's own".into(),
                ));
            }
            exp_ms = limit;
        }
        let claims = TokenClaims {
            iss: self.issuer.clone(),
            aud: self.audience.clone(),
            sub: key_id.to_string(),
            project: project_id.to_string(),
            scopes: scopes.clone(),
            resources: resources.iter().map(|p| p.as_str().to_owned()).collect(),
            exp: exp_ms / 1000,
            nbf: now / 1000,
            iat: now / 1000,
            jti: new_id("tok"),
            upload: caller.upload.clone().or(upload),
            search_filters,
        };
        let token = self.keyring.sign(&claims).map_err(ApiError::internal)?;
        Ok(AccessToken {
            token,
            token_type: "Bearer".into(),
            expires_at: from_millis(claims.exp * 1000),
            project_id: project_id.to_string(),
            scopes,
            resources: claims.resources,
            search_filters: claims.search_filters,
        })
    }
}

/// The search filters of a new token: every one of the credential's, and those asked for,
/// each joined with the credential's filter for the same index, so a token can only narrow
/// what it descends from.
fn search_filters(
    caller: &Caller,
    request: &TokenRequest,
) -> Result<BTreeMap<String, Value>, ApiError> {
    let mut filters = caller.search_filters.clone();
    let Some(asked) = &request.search_filters else {
        return Ok(filters);
    };
    let invalid = |reason: String| ApiError::InvalidFilter {
        parameter: "search_filters",
        reason,
    };
    let size = serde_json::to_vec(asked).map_or(usize::MAX, |json| json.len());
    if size > MAX_SEARCH_FILTER_BYTES {
        return Err(invalid(format!(
            "at most {MAX_SEARCH_FILTER_BYTES} bytes of JSON"
        )));
    }
    for (index, filter) in asked {
        if index != ALL_INDEXES && crate::names::name_problem(index).is_some() {
            return Err(invalid(format!(
                "`{index}` is not an index name or `{ALL_INDEXES}`"
            )));
        }
        if !filter.is_object() {
            return Err(invalid(format!(
                "the filter for `{index}` is a JSON object, as a search's `filter`"
            )));
        }
        let joined = match filters.remove(index) {
            Some(held) => serde_json::json!({ "and": [held, filter] }),
            None => filter.clone(),
        };
        filters.insert(index.clone(), joined);
    }
    Ok(filters)
}
