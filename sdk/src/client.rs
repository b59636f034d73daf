//! The client: the URLs it builds, and the send loop with its retries.

use std::fmt;

use reqwest::{Method, Request, RequestBuilder, Response};
use serde::de::DeserializeOwned;
use url::Url;

use crate::builder::ClientBuilder;
use crate::error::Error;
use crate::retry::{self, Backoff};

/// The response header carrying the id the server gave a request.
const REQUEST_ID_HEADER: &str = "x-request-id";

/// A client of a Plinth deployment.
///
/// It holds the deployment's base URL and one bearer credential: the admin token, a project's
/// API key (`plinth_sk_...`) or an access token (a JWT). Every API call is a method of this
/// type. Cloning is cheap and clones share one connection pool, so a program should build one
/// client and clone it, or derive others from it with [`Client::with_token`].
///
/// Idempotent requests (GET, PUT, DELETE, HEAD) are retried with exponential backoff when the
/// connection fails, the attempt times out, or the server answers 429, 502, 503 or 504;
/// POST and PATCH are sent exactly once.
///
/// # Errors
///
/// Every call can fail with [`Error::Transport`] when no response arrives, with
/// [`Error::Api`] for an error status (`missing_credentials`, `invalid_credentials`,
/// `invalid_token`, `token_expired`, `missing_scope`, `rate_limited`, `unavailable`... on any
/// route), and with [`Error::Decode`] when a success body is not what the SDK expects. A call
/// that takes an id fails with [`Error::InvalidId`], before sending, for an empty, `.` or
/// `..` id.
///
/// # Examples
///
/// ```no_run
/// use plinth_sdk::Client;
/// use plinth_sdk::types::Scope;
/// use plinth_sdk::types::console::{CreateKey, CreateProject, TokenRequest};
///
/// # async fn example() -> Result<(), plinth_sdk::Error> {
/// // PLINTH_URL and PLINTH_TOKEN (here the admin token) configure the client.
/// let admin = Client::from_env()?;
///
/// let project = admin
///     .create_project(&CreateProject { name: "shop".to_owned(), quotas: None })
///     .await?;
/// let key = admin
///     .create_key(
///         &project.id,
///         &CreateKey {
///             name: "web".to_owned(),
///             scopes: vec![Scope::StorageRead],
///             resources: vec!["bucket:avatars/*".to_owned()],
///             ..CreateKey::default()
///         },
///     )
///     .await?;
///
/// // The key's secret is returned only here; exchange it for a short-lived token.
/// let app = admin.with_token(key.secret);
/// let token = app
///     .mint_token(&TokenRequest { ttl_seconds: Some(600), ..TokenRequest::default() })
///     .await?;
/// println!("token for {} expires at {}", token.project_id, token.expires_at);
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    base_url: Url,
    token: Option<String>,
    max_retries: u32,
}

impl Client {
    /// Assembles a client from what [`ClientBuilder::build`] checked.
    pub(crate) fn new(
        http: reqwest::Client,
        base_url: Url,
        token: Option<String>,
        max_retries: u32,
    ) -> Client {
        Client {
            http,
            base_url,
            token,
            max_retries,
        }
    }

    /// Starts a builder with the defaults and nothing read from the environment.
    pub fn builder() -> ClientBuilder {
        ClientBuilder::default()
    }

    /// Builds a client from `PLINTH_URL` (default [`DEFAULT_URL`](crate::DEFAULT_URL)) and
    /// `PLINTH_TOKEN`.
    ///
    /// # Errors
    ///
    /// Returns [`Error::Config`] when either variable is not valid UTF-8, the URL is not an
    /// `http` or `https` URL, or the token cannot be sent in a header.
    pub fn from_env() -> Result<Client, Error> {
        ClientBuilder::from_env().build()
    }

    /// Returns a client for the same deployment, sharing this one's connections, that sends
    /// `token` as its credential instead.
    ///
    /// A token that cannot be sent in a header (one with a line break, say) makes each call of
    /// the returned client fail with [`Error::Config`].
    pub fn with_token(&self, token: impl Into<String>) -> Client {
        Client {
            token: Some(token.into()),
            ..self.clone()
        }
    }

    /// Returns the base URL the client sends its requests under.
    pub fn base_url(&self) -> &Url {
        &self.base_url
    }

    /// Checks that the server is up (`GET /healthz`).
    ///
    /// # Errors
    ///
    /// Returns [`Error::Transport`] when the server cannot be reached and [`Error::Api`] when
    /// it answers with an error status.
    pub async fn health(&self) -> Result<(), Error> {
        let url = self.url(["healthz"])?;
        self.send_empty(self.request(Method::GET, url)).await
    }

    /// Returns the URL of a console route: `{base}/console/v1/{segments...}`.
    ///
    /// # Errors
    ///
    /// As [`Client::url`].
    pub(crate) fn console_url(&self, segments: &[&str]) -> Result<Url, Error> {
        self.url(
            ["console", "v1"]
                .into_iter()
                .chain(segments.iter().copied()),
        )
    }

    /// Returns the URL of `{base}/{segments...}`, each segment percent-encoded, so that an id
    /// can never add a path level.
    ///
    /// # Errors
    ///
    /// Returns [`Error::InvalidId`] for an empty, `.` or `..` segment: the URL standard drops
    /// the dot segments (even percent-encoded), and an empty one changes the route, so such
    /// an id would reach another resource than the one named.
    pub(crate) fn url<'a>(
        &self,
        segments: impl IntoIterator<Item = &'a str>,
    ) -> Result<Url, Error> {
        let mut url = self.base_url.clone();

        let mut path = url
            .path_segments_mut()
            .map_err(|()| Error::Config("the base URL cannot have a path".to_owned()))?;
        path.pop_if_empty();
        for segment in segments {
            if matches!(segment, "" | "." | "..") {
                return Err(Error::InvalidId(segment.to_owned()));
            }
            path.push(segment);
        }
        drop(path);

        Ok(url)
    }

    /// Starts a request carrying the client's credential.
    pub(crate) fn request(&self, method: Method, url: Url) -> RequestBuilder {
        let request = self.http.request(method, url);
        match &self.token {
            Some(token) => request.bearer_auth(token),
            None => request,
        }
    }

    /// Sends a request and decodes its JSON success body.
    pub(crate) async fn send_json<T: DeserializeOwned>(
        &self,
        request: RequestBuilder,
    ) -> Result<T, Error> {
        let response = self.send(request).await?;

        let body = response.bytes().await.map_err(Error::Transport)?;
        serde_json::from_slice(&body).map_err(Error::Decode)
    }

    /// Sends a request whose success body, if any, carries nothing the caller needs.
    pub(crate) async fn send_empty(&self, request: RequestBuilder) -> Result<(), Error> {
        self.send(request).await.map(drop)
    }

    /// Sends a request, with retries, and turns an error status into [`Error::Api`].
    ///
    /// A request whose body is a stream cannot be copied, so it is sent exactly once
    /// whatever its method.
    pub(crate) async fn send(&self, request: RequestBuilder) -> Result<Response, Error> {
        // Building fails only on what went into the request: in practice, a token that is no
        // valid header value.
        let request = request
            .build()
            .map_err(|err| Error::Config(format!("cannot build the request: {err}")))?;

        let response = self.execute(request).await?;
        if response.status().is_success() {
            return Ok(response);
        }

        let status = response.status().as_u16();
        let request_id = response
            .headers()
            .get(REQUEST_ID_HEADER)
            .and_then(|value| value.to_str().ok())
            .map(str::to_owned);
        let body = response.bytes().await.map_err(Error::Transport)?;
        Err(Error::from_response(status, request_id, &body))
    }

    /// Sends a request up to `1 + max_retries` times while it fails in a way worth retrying,
    /// and returns the last response, whatever its status.
    async fn execute(&self, request: Request) -> Result<Response, Error> {
        let idempotent = retry::is_idempotent(request.method());
        let mut backoff = Backoff::new();
        let mut attempt = 0;

        loop {
            // Every attempt but the last sends a copy, so the original is still there to
            // send again; the last one, or a request that may not be retried, is sent as is.
            let copy = if idempotent && attempt < self.max_retries {
                request.try_clone()
            } else {
                None
            };
            let Some(copy) = copy else {
                return self.http.execute(request).await.map_err(Error::Transport);
            };

            let wait = match self.http.execute(copy).await {
                Ok(response) if retry::is_retryable_status(response.status()) => {
                    retry::retry_after(response.headers()).unwrap_or_else(|| backoff.next_wait())
                }
                Ok(response) => return Ok(response),
                Err(err) if retry::is_retryable_transport(&err) => backoff.next_wait(),
                Err(err) => return Err(Error::Transport(err)),
            };

            attempt += 1;
            tracing::debug!(
                method = %request.method(),
                url = %request.url(),
                attempt,
                wait_ms = wait.as_millis(),
                "retrying request"
            );
            tokio::time::sleep(wait).await;
        }
    }
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("base_url", &self.base_url.as_str())
            .field("token", &redacted(self.token.as_deref()))
            .field("max_retries", &self.max_retries)
            .finish_non_exhaustive()
    }
}

/// Stands in for a credential in `Debug` output.
pub(crate) fn redacted(token: Option<&str>) -> Option<&'static str> {
    token.map(|_| "<redacted>")
}

#[cfg(test)]
mod tests {
    use plinth_types::console::{AuditQuery, PageQuery, UsageQuery};
    use serde::Serialize;

    use super::*;

    fn client(base_url: &str) -> Client {
        Client::builder()
            .base_url(base_url)
            .token("secret-token")
            .build()
            .unwrap()
    }

    #[test]
    fn path_segments_are_percent_encoded() {
        let url = client("http://plinth.test").console_url(&["projects", "a/b c?d", "keys"]);

        assert_eq!(
            url.unwrap().as_str(),
            "http://plinth.test/console/v1/projects/a%2Fb%20c%3Fd/keys"
        );
    }

    #[test]
    fn ids_the_url_standard_would_drop_are_refused() {
        let client = client("http://plinth.test");

        for id in ["", ".", ".."] {
            let url = client.console_url(&["projects", id, "quotas"]);
            assert!(
                matches!(&url, Err(Error::InvalidId(got)) if got == id),
                "{id:?}: {url:?}"
            );
        }
        assert!(client.console_url(&["projects", "..."]).is_ok());
    }

    #[test]
    fn base_path_is_kept_with_or_without_trailing_slash() {
        for base in ["http://plinth.test/prefix", "http://plinth.test/prefix/"] {
            let url = client(base).console_url(&["projects"]).unwrap();
            assert_eq!(
                url.as_str(),
                "http://plinth.test/prefix/console/v1/projects",
                "{base}"
            );
        }
        let root = client("http://plinth.test/")
            .url([".well-known", "jwks.json"])
            .unwrap();
        assert_eq!(root.as_str(), "http://plinth.test/.well-known/jwks.json");
    }

    /// Returns the query string a request with `query` would be sent with.
    fn query_string<Q: Serialize>(query: &Q) -> Option<String> {
        let client = client("http://plinth.test");
        let request = client.request(Method::GET, client.console_url(&["projects"]).unwrap());
        request
            .query(query)
            .build()
            .unwrap()
            .url()
            .query()
            .map(str::to_owned)
    }

    #[test]
    fn absent_query_fields_are_not_sent() {
        let page = PageQuery {
            limit: Some(5),
            cursor: None,
        };
        let audit = AuditQuery {
            project: Some("prj 1".to_owned()),
            ..AuditQuery::default()
        };

        assert_eq!(query_string(&page).as_deref(), Some("limit=5"));
        assert_eq!(query_string(&audit).as_deref(), Some("project=prj+1"));
        assert_eq!(query_string(&UsageQuery::default()), None);
    }

    #[test]
    fn debug_output_hides_the_token() {
        let builder = Client::builder().token("secret-token");
        let client = client("http://plinth.test").with_token("other-secret");

        let printed = format!("{builder:?} {client:?} {:?}", client.clone());

        assert!(!printed.contains("secret"), "{printed}");
        assert!(printed.contains("<redacted>"), "{printed}");
    }

    #[tokio::test]
    async fn a_bad_token_given_later_fails_the_call_as_config() {
        let client = client("http://plinth.test").with_token("line\nbreak");

        let result = client.health().await;

        assert!(matches!(result, Err(Error::Config(_))), "{result:?}");
    }
}
