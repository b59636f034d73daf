//! The console API: projects, API keys, access tokens, quotas, usage, audit and signing keys.
//!
//! Every route but the JWKS lives under `{base}/console/v1`. Project-level routes need the
//! admin token or a key of that project with the `admin` scope; `mint_token` takes any key or
//! token; signing keys and the audit of every project need the admin token.
//!
//! The `# Errors` of each method name the codes particular to it; the failures every call
//! shares are listed on [`Client`].

use reqwest::Method;

use plinth_types::console::{
    AccessToken, ApiKey, AuditEntry, AuditQuery, CreateKey, CreateProject, Jwks, KeyWithSecret,
    Page, PageQuery, Project, QuotaReport, Quotas, SigningKey, TokenRequest, UpdateKey,
    UpdateProject, UsageQuery, UsageReport,
};

use crate::client::Client;
use crate::error::Error;

/// Projects.
impl Client {
    /// Creates a project (`POST /projects`).
    ///
    /// # Errors
    ///
    /// Returns [`Error::Api`] with `invalid_project_name`, `project_name_taken` or
    /// `invalid_quota` when the body is refused, or `admin_required` without the admin token.
    pub async fn create_project(&self, project: &CreateProject) -> Result<Project, Error> {
        let url = self.console_url(&["projects"])?;
        self.send_json(self.request(Method::POST, url).json(project))
            .await
    }

    /// Lists one page of projects (`GET /projects`); a project key sees only its own.
    ///
    /// # Errors
    ///
    /// Returns [`Error::Api`] with `invalid_cursor` for a cursor this server did not issue.
    pub async fn list_projects(&self, page: &PageQuery) -> Result<Page<Project>, Error> {
        let url = self.console_url(&["projects"])?;
        self.send_json(self.request(Method::GET, url).query(page))
            .await
    }

    /// Returns a project (`GET /projects/{project}`).
    ///
    /// # Errors
    ///
    /// Returns [`Error::Api`] with `project_not_found` when there is no such project.
    pub async fn get_project(&self, project: &str) -> Result<Project, Error> {
        let url = self.console_url(&["projects", project])?;
        self.send_json(self.request(Method::GET, url)).await
    }

    /// Renames a project or replaces its quotas (`PATCH /projects/{project}`).
    ///
    /// # Errors
    ///
    /// Returns [`Error::Api`] with `project_not_found`, or the validation codes of
    /// [`Client::create_project`].
    pub async fn update_project(
        &self,
        project: &str,
        update: &UpdateProject,
    ) -> Result<Project, Error> {
        let url = self.console_url(&["projects", project])?;
        self.send_json(self.request(Method::PATCH, url).json(update))
            .await
    }

    /// Deletes a project with everything in it (`DELETE /projects/{project}`).
    ///
    /// # Errors
    ///
    /// Returns [`Error::Api`] with `project_not_found` when there is no such project, which
    /// is also what a retried delete whose first attempt went through gets.
    pub async fn delete_project(&self, project: &str) -> Result<(), Error> {
        let url = self.console_url(&["projects", project])?;
        self.send_empty(self.request(Method::DELETE, url)).await
    }
}

/// API keys and access tokens.
impl Client {
    /// Creates an API key in a project (`POST /projects/{project}/keys`). The returned
    /// secret is never shown again.
    ///
    /// # Errors
    ///
    /// Returns [`Error::Api`] with `project_not_found`, `invalid_key_name`, `invalid_scope`,
    /// `invalid_resource_pattern` or `invalid_expiry`, or `scope_escalation` when a project
    /// key asks for more than it has.
    pub async fn create_key(&self, project: &str, key: &CreateKey) -> Result<KeyWithSecret, Error> {
        let url = self.console_url(&["projects", project, "keys"])?;
        self.send_json(self.request(Method::POST, url).json(key))
            .await
    }

    /// Lists one page of a project's API keys, revoked ones included
    /// (`GET /projects/{project}/keys`).
    ///
    /// # Errors
    ///
    /// Returns [`Error::Api`] with `project_not_found` or `invalid_cursor`.
    pub async fn list_keys(&self, project: &str, page: &PageQuery) -> Result<Page<ApiKey>, Error> {
        let url = self.console_url(&["projects", project, "keys"])?;
        self.send_json(self.request(Method::GET, url).query(page))
            .await
    }

    /// Returns an API key, without its secret (`GET /projects/{project}/keys/{key}`).
    ///
    /// # Errors
    ///
    /// Returns [`Error::Api`] with `project_not_found` or `key_not_found`.
    pub async fn get_key(&self, project: &str, key: &str) -> Result<ApiKey, Error> {
        let url = self.console_url(&["projects", project, "keys", key])?;
        self.send_json(self.request(Method::GET, url)).await
    }

    /// Renames an API key or changes its rate limit (`PATCH /projects/{project}/keys/{key}`).
    ///
    /// # Errors
    ///
    /// Returns [`Error::Api`] with `key_not_found`, `invalid_key_name` or `invalid_quota`, or
    /// `admin_required` when a project key tries to change a rate limit.
    pub async fn update_key(
        &self,
        project: &str,
        key: &str,
        update: &UpdateKey,
    ) -> Result<ApiKey, Error> {
        let url = self.console_url(&["projects", project, "keys", key])?;
        self.send_json(self.request(Method::PATCH, url).json(update))
            .await
    }

    /// Revokes an API key and every token minted from it, and returns the revoked key
    /// (`DELETE /projects/{project}/keys/{key}`).
    ///
    /// # Errors
    ///
    /// Returns [`Error::Api`] with `project_not_found` or `key_not_found`.
    pub async fn revoke_key(&self, project: &str, key: &str) -> Result<ApiKey, Error> {
        let url = self.console_url(&["projects", project, "keys", key])?;
        self.send_json(self.request(Method::DELETE, url)).await
    }

    /// Replaces an API key's secret, keeping its id, scopes and resources
    /// (`POST /projects/{project}/keys/{key}/rotate`). The old secret stops working.
    ///
    /// # Errors
    ///
    /// Returns [`Error::Api`] with `key_not_found`, or `key_revoked` for a revoked key.
    pub async fn rotate_key(&self, project: &str, key: &str) -> Result<KeyWithSecret, Error> {
        let url = self.console_url(&["projects", project, "keys", key, "rotate"])?;
        self.send_json(self.request(Method::POST, url)).await
    }

    /// Exchanges the client's own credential, an API key or a token, for an access token
    /// with at most its rights (`POST /tokens`).
    ///
    /// # Errors
    ///
    /// Returns [`Error::Api`] with `scope_escalation` when the request asks for more than the
    /// credential has, `invalid_expiry` for a bad lifetime, or one of the 401 codes when the
    /// credential itself is not accepted.
    pub async fn mint_token(&self, request: &TokenRequest) -> Result<AccessToken, Error> {
        let url = self.console_url(&["tokens"])?;
        self.send_json(self.request(Method::POST, url).json(request))
            .await
    }
}

/// Quotas, usage and audit.
impl Client {
    /// Returns a project's limits in force, its own overrides and its current usage
    /// (`GET /projects/{project}/quotas`).
    ///
    /// # Errors
    ///
    /// Returns [`Error::Api`] with `project_not_found`.
    pub async fn get_quotas(&self, project: &str) -> Result<QuotaReport, Error> {
        let url = self.console_url(&["projects", project, "quotas"])?;
        self.send_json(self.request(Method::GET, url)).await
    }

    /// Replaces a project's quota overrides: an absent value falls back to the operator's
    /// default (`PUT /projects/{project}/quotas`).
    ///
    /// # Errors
    ///
    /// Returns [`Error::Api`] with `project_not_found` or `invalid_quota`.
    pub async fn set_quotas(&self, project: &str, quotas: &Quotas) -> Result<QuotaReport, Error> {
        let url = self.console_url(&["projects", project, "quotas"])?;
        self.send_json(self.request(Method::PUT, url).json(quotas))
            .await
    }

    /// Returns a project's daily usage counters (`GET /projects/{project}/usage`).
    ///
    /// # Errors
    ///
    /// Returns [`Error::Api`] with `project_not_found`, or `invalid_parameter` for a day that
    /// is not `YYYY-MM-DD` or a range that is reversed or too long.
    pub async fn usage(&self, project: &str, query: &UsageQuery) -> Result<UsageReport, Error> {
        let url = self.console_url(&["projects", project, "usage"])?;
        self.send_json(self.request(Method::GET, url).query(query))
            .await
    }

    /// Lists one page of the audit log, newest first (`GET /audit`).
    ///
    /// # Errors
    ///
    /// Returns [`Error::Api`] with `invalid_cursor`, or `project_not_found` when a project key
    /// asks about another project.
    pub async fn audit(&self, query: &AuditQuery) -> Result<Page<AuditEntry>, Error> {
        let url = self.console_url(&["audit"])?;
        self.send_json(self.request(Method::GET, url).query(query))
            .await
    }
}

/// Token signing keys.
impl Client {
    /// Lists the token signing keys, active and retired (`GET /signing-keys`).
    ///
    /// # Errors
    ///
    /// Returns [`Error::Api`] with `admin_required` without the admin token.
    pub async fn signing_keys(&self) -> Result<Vec<SigningKey>, Error> {
        let url = self.console_url(&["signing-keys"])?;
        self.send_json(self.request(Method::GET, url)).await
    }

    /// Makes a new signing key the active one (`POST /signing-keys/rotate`). Tokens signed
    /// by the previous key stay valid until they expire.
    ///
    /// # Errors
    ///
    /// Returns [`Error::Api`] with `admin_required` without the admin token.
    pub async fn rotate_signing_key(&self) -> Result<SigningKey, Error> {
        let url = self.console_url(&["signing-keys", "rotate"])?;
        self.send_json(self.request(Method::POST, url)).await
    }

    /// Returns the public keys tokens may be signed with (`GET /.well-known/jwks.json`, at
    /// the root of the deployment), to verify tokens without calling Plinth.
    ///
    /// # Errors
    ///
    /// Returns [`Error::Transport`] or [`Error::Api`] when the document cannot be fetched.
    pub async fn jwks(&self) -> Result<Jwks, Error> {
        let url = self.url([".well-known", "jwks.json"])?;
        self.send_json(self.request(Method::GET, url)).await
    }
}
