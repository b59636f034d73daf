//! The builder of a [`Client`]: defaults, the environment, and the checks that catch a
//! misconfiguration before the first request.

use std::env::{self, VarError};
use std::fmt;
use std::time::Duration;

use url::Url;

use crate::client::{Client, redacted};
use crate::error::Error;

/// The server a client talks to when neither the builder nor `PLINTH_URL` names one.
pub const DEFAULT_URL: &str = "http://127.0.0.1:8080";

/// The per-attempt timeout unless [`ClientBuilder::timeout`] sets another.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// How many times an idempotent request is retried unless [`ClientBuilder::max_retries`] says.
const DEFAULT_MAX_RETRIES: u32 = 3;

/// Configures a [`Client`]: base URL, credential, timeout and retries.
pub struct ClientBuilder {
    base_url: String,
    token: Option<String>,
    timeout: Duration,
    max_retries: u32,
    /// A problem met reading `PLINTH_URL`, reported by [`ClientBuilder::build`] unless a
    /// setter replaced the value; this keeps `from_env` and the setters infallible.
    url_env_error: Option<String>,
    /// The same for `PLINTH_TOKEN`.
    token_env_error: Option<String>,
}

impl ClientBuilder {
    /// Starts a builder with the base URL from `PLINTH_URL` and the token from
    /// `PLINTH_TOKEN`, where they are set and not empty; setters called afterwards win.
    pub fn from_env() -> ClientBuilder {
        let mut builder = ClientBuilder::default();

        match env_var("PLINTH_URL") {
            Ok(Some(url)) => builder.base_url = url,
            Ok(None) => {}
            Err(err) => builder.url_env_error = Some(err),
        }
        match env_var("PLINTH_TOKEN") {
            Ok(token) => builder.token = token,
            Err(err) => builder.token_env_error = Some(err),
        }

        builder
    }

    /// Sets the base URL of the deployment, such as `https://plinth.example.com`. A path is
    /// kept, for a deployment served under a prefix.
    pub fn base_url(mut self, url: impl Into<String>) -> ClientBuilder {
        self.base_url = url.into();
        self.url_env_error = None;
        self
    }

    /// Sets the bearer credential: the admin token, an API key or an access token.
    pub fn token(mut self, token: impl Into<String>) -> ClientBuilder {
        self.token = Some(token.into());
        self.token_env_error = None;
        self
    }

    /// Sets how long one attempt may take, from connecting to reading the whole body
    /// (default 30 seconds). Retries get the same time again each.
    pub fn timeout(mut self, timeout: Duration) -> ClientBuilder {
        self.timeout = timeout;
        self
    }

    /// Sets how many times an idempotent request is retried after a transient failure
    /// (default 3); 0 turns retries off.
    pub fn max_retries(mut self, max_retries: u32) -> ClientBuilder {
        self.max_retries = max_retries;
        self
    }

    /// Builds the client.
    ///
    /// # Errors
    ///
    /// Returns [`Error::Config`] when the environment could not be read, the base URL is not
    /// an `http` or `https` URL without query or fragment, or the token cannot be sent in a
    /// header; [`Error::Transport`] when the HTTP client cannot be set up (no TLS roots).
    pub fn build(self) -> Result<Client, Error> {
        if let Some(err) = self.url_env_error.or(self.token_env_error) {
            return Err(Error::Config(err));
        }

        let base_url = parse_base_url(&self.base_url)?;
        if let Some(token) = &self.token {
            check_token(token)?;
        }

        let http = reqwest::Client::builder()
            .timeout(self.timeout)
            .user_agent(concat!("plinth-sdk/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(Error::Transport)?;
        Ok(Client::new(http, base_url, self.token, self.max_retries))
    }
}

impl Default for ClientBuilder {
    fn default() -> Self {
        ClientBuilder {
            base_url: DEFAULT_URL.to_owned(),
            token: None,
            timeout: DEFAULT_TIMEOUT,
            max_retries: DEFAULT_MAX_RETRIES,
            url_env_error: None,
            token_env_error: None,
        }
    }
}

impl fmt::Debug for ClientBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientBuilder")
            .field("base_url", &self.base_url)
            .field("token", &redacted(self.token.as_deref()))
            .field("timeout", &self.timeout)
            .field("max_retries", &self.max_retries)
            .finish_non_exhaustive()
    }
}

/// Reads an environment variable, treating an empty value as unset.
fn env_var(name: &str) -> Result<Option<String>, String> {
    match env::var(name) {
        Ok(value) if value.is_empty() => Ok(None),
        Ok(value) => Ok(Some(value)),
        Err(VarError::NotPresent) => Ok(None),
        Err(VarError::NotUnicode(_)) => Err(format!("{name} is not valid UTF-8")),
    }
}

/// Parses and checks a base URL.
fn parse_base_url(raw: &str) -> Result<Url, Error> {
    let url = Url::parse(raw).map_err(|err| Error::Config(format!("base URL `{raw}`: {err}")))?;

    if !matches!(url.scheme(), "http" | "https") {
        return Err(Error::Config(format!(
            "base URL `{raw}` is not http or https"
        )));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(Error::Config(format!(
            "base URL `{raw}` has a query or fragment"
        )));
    }
    Ok(url)
}

/// Checks that a token can be sent as `Authorization: Bearer <token>`.
fn check_token(token: &str) -> Result<(), Error> {
    if token.is_empty() {
        return Err(Error::Config("the token is empty".to_owned()));
    }
    // A header value is visible ASCII; anything else would fail on every request.
    if !token.bytes().all(|byte| byte.is_ascii_graphic()) {
        return Err(Error::Config(
            "the token has characters a header cannot carry".to_owned(),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_base_urls_are_config_errors() {
        for base in [
            "not a url",
            "ftp://plinth.test",
            "mailto:ops@plinth.test",
            "http://h/?a=1",
        ] {
            let result = Client::builder().base_url(base).build();
            assert!(
                matches!(result, Err(Error::Config(_))),
                "{base}: {result:?}"
            );
        }
    }

    #[test]
    fn tokens_that_no_header_can_carry_are_config_errors() {
        for token in ["", "two words", "line\nbreak", "caf\u{e9}"] {
            let result = Client::builder().token(token).build();
            assert!(
                matches!(result, Err(Error::Config(_))),
                "{token:?}: {result:?}"
            );
        }
        assert!(
            Client::builder()
                .token("plinth_sk_abc.DEF-123_x")
                .build()
                .is_ok()
        );
    }
}
