//! The [`Caller`] extractor.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::{FromRef, FromRequestParts};
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use plinth_types::Scope;
use plinth_types::console::{RateLimit, UploadLimits};

use super::pattern::{self, ResourcePattern};
use crate::error::ApiError;
use crate::shared::Shared;

/// The key of a search filter that applies to every index.
pub const ALL_INDEXES: &str = "*";

/// Whose credential a request carries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Principal {
    /// The operator's admin token: every scope, every project.
    Admin,
    /// A project's API key.
    Key {
        /// The key's project.
        project_id: Arc<str>,
        /// The key.
        key_id: Arc<str>,
    },
    /// An access token minted from a project's API key.
    Token {
        /// The token's project.
        project_id: Arc<str>,
        /// The key the token descends from.
        key_id: Arc<str>,
    },
}

/// What a verified credential allows.
#[derive(Debug)]
pub struct Credential {
    /// Whose credential it is.
    pub principal: Principal,
    /// The scopes the credential grants.
    pub scopes: Vec<Scope>,
    /// The resources the credential is limited to; empty means all.
    pub resources: Vec<ResourcePattern>,
    /// When the credential itself stops working, in milliseconds since the epoch.
    pub expires_at_ms: Option<i64>,
    /// The request rate allowed to the credential's key, if limited.
    pub rate_limit: Option<RateLimit>,
    /// Limits on uploads, for the token of a signed upload URL.
    pub upload: Option<UploadLimits>,
    /// Filters added to the credential's searches, by index name (`*`: every index).
    pub search_filters: BTreeMap<String, serde_json::Value>,
}

/// The authenticated caller of a request: a shared, read-only [`Credential`].
///
/// As an extractor it reads `Authorization: Bearer`, authenticates, applies the key's rate
/// limit and counts the request in the project's usage; the body of a handler only ever sees
/// a caller that passed all three. A clone is one reference-count increment, since the auth
/// cache and the request both hold it.
#[derive(Clone, Debug)]
pub struct Caller(Arc<Credential>);

impl std::ops::Deref for Caller {
    type Target = Credential;

    fn deref(&self) -> &Credential {
        &self.0
    }
}

impl Caller {
    /// Wraps a verified credential.
    pub fn new(credential: Credential) -> Caller {
        Caller(Arc::new(credential))
    }

    /// The operator, with every scope.
    pub fn admin() -> Caller {
        Caller::new(Credential {
            principal: Principal::Admin,
            scopes: Scope::ALL.to_vec(),
            resources: Vec::new(),
            expires_at_ms: None,
            rate_limit: None,
            upload: None,
            search_filters: BTreeMap::new(),
        })
    }

    /// Returns whether this is the admin token.
    pub fn is_admin(&self) -> bool {
        self.principal == Principal::Admin
    }

    /// Returns the project a key or token acts in; `None` for the admin.
    pub fn project_id(&self) -> Option<&str> {
        match &self.principal {
            Principal::Admin => None,
            Principal::Key { project_id, .. } | Principal::Token { project_id, .. } => {
                Some(project_id)
            }
        }
    }

    /// Returns the project a key or token acts in, for the routes whose data belongs to a
    /// project (buckets, topics, indexes).
    ///
    /// # Errors
    ///
    /// Returns `invalid_parameter` for the admin token, which belongs to no project.
    pub fn project(&self) -> Result<&str, ApiError> {
        self.project_id().ok_or_else(|| {
            ApiError::InvalidParameter(
                "the admin token belongs to no project; use a project key or token".into(),
            )
        })
    }

    /// Returns the API key behind the credential; `None` for the admin.
    pub fn key_id(&self) -> Option<&str> {
        match &self.principal {
            Principal::Admin => None,
            Principal::Key { key_id, .. } | Principal::Token { key_id, .. } => Some(key_id),
        }
    }

    /// Returns who the audit log names: `admin` or `key:<id>`.
    pub fn actor(&self) -> String {
        match self.key_id() {
            None => "admin".into(),
            Some(key_id) => format!("key:{key_id}"),
        }
    }

    /// The filter the credential adds to every search of `index`: its filter for every
    /// index and its own for this one, both when it has both.
    pub fn search_filter(&self, index: &str) -> Option<serde_json::Value> {
        let filters: Vec<&serde_json::Value> = [ALL_INDEXES, index]
            .iter()
            .filter_map(|name| self.search_filters.get(*name))
            .collect();
        match filters.as_slice() {
            [] => None,
            [one] => Some((*one).clone()),
            several => Some(serde_json::json!({ "and": several })),
        }
    }

    /// Requires a scope.
    ///
    /// # Errors
    ///
    /// Returns `missing_scope` when the credential lacks it.
    pub fn require_scope(&self, scope: Scope) -> Result<(), ApiError> {
        if super::has_scope(&self.scopes, scope) {
            Ok(())
        } else {
            Err(ApiError::MissingScope(scope))
        }
    }

    /// Requires a scope on a resource named `kind:name` (`bucket:avatars/a.png`).
    ///
    /// # Errors
    ///
    /// Returns `missing_scope`, or `resource_not_allowed` when the credential's patterns do
    /// not cover the resource.
    pub fn authorize(&self, scope: Scope, resource: &str) -> Result<(), ApiError> {
        self.require_scope(scope)?;
        if pattern::allowed(&self.resources, resource) {
            Ok(())
        } else {
            Err(ApiError::ResourceNotAllowed(resource.to_owned()))
        }
    }

    /// Requires that the caller may see `project_id`: the admin, or a credential of that
    /// project. Another project's id answers exactly like a missing one.
    ///
    /// # Errors
    ///
    /// Returns `project_not_found` for any other project.
    pub fn require_project(&self, project_id: &str) -> Result<(), ApiError> {
        match self.project_id() {
            None => Ok(()),
            Some(own) if own == project_id => Ok(()),
            Some(_) => Err(ApiError::ProjectNotFound(project_id.to_owned())),
        }
    }

    /// Requires that the caller may manage `project_id`: the admin, or a credential of that
    /// project with the `admin` scope.
    ///
    /// # Errors
    ///
    /// Returns `project_not_found` for another project, `missing_scope` without `admin`.
    pub fn require_project_admin(&self, project_id: &str) -> Result<(), ApiError> {
        self.require_project(project_id)?;
        self.require_scope(Scope::Admin)
    }

    /// Requires the admin token.
    ///
    /// # Errors
    ///
    /// Returns `admin_required` for any project credential.
    pub fn require_admin(&self) -> Result<(), ApiError> {
        if self.is_admin() {
            Ok(())
        } else {
            Err(ApiError::AdminRequired)
        }
    }
}

impl<S> FromRequestParts<S> for Caller
where
    S: Send + Sync,
    Shared: FromRef<S>,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        // A second extraction in the same request (a middleware and the handler) reuses the
        // first one, so the request is counted and rate-limited once.
        if let Some(caller) = parts.extensions.get::<Caller>() {
            return Ok(caller.clone());
        }
        let shared = Shared::from_ref(state);
        let header = parts
            .headers
            .get(AUTHORIZATION)
            .ok_or(ApiError::MissingCredentials)?;
        let value = header.to_str().map_err(|_| ApiError::InvalidCredentials)?;
        // The scheme is case-insensitive (RFC 9110, section 11.1).
        let credential = match (value.get(..7), value.get(7..)) {
            (Some(scheme), Some(credential)) if scheme.eq_ignore_ascii_case("bearer ") => {
                credential
            }
            _ => return Err(ApiError::MissingCredentials),
        };

        let caller = shared.auth().authenticate(credential.trim()).await?;
        if let (Some(key_id), Some(limit)) = (caller.key_id(), caller.rate_limit) {
            shared.rate_limits().check(key_id, limit)?;
        }

        if let Some(project_id) = caller.project_id() {
            tracing::Span::current().record("project_id", project_id);
            shared.usage().record(project_id, "requests", 1);
        }
        parts.extensions.insert(caller.clone());
        Ok(caller)
    }
}
