//! What every search scenario shares: a server on a free port, and request helpers.

pub(crate) use plinth_sdk::Client;
pub(crate) use plinth_shared::Shared;
pub(crate) use plinth_shared::testkit::TestBackend;
pub(crate) use plinth_types::Scope;
pub(crate) use plinth_types::console::{CreateKey, CreateProject, Quotas};
pub(crate) use reqwest::{Method, StatusCode};
pub(crate) use serde_json::{Value, json};

pub(crate) struct Server {
    pub(crate) url: String,
    pub(crate) admin: Client,
    pub(crate) http: reqwest::Client,
    pub(crate) backend: TestBackend,
    /// The service itself, for what only it can tell (open indexes, writer shares).
    pub(crate) search: plinth_search::Search,
    stop: tokio::sync::oneshot::Sender<()>,
    serving: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Server {
    pub(crate) async fn start(backend: TestBackend) -> Server {
        if let Ok(filter) = std::env::var("PLINTH_TEST_LOG") {
            let _ = tracing_subscriber::fmt()
                .with_env_filter(filter)
                .with_test_writer()
                .try_init();
        }
        let shared = Shared::open(backend.config.clone(), &backend.admin_token)
            .await
            .unwrap();
        let search = plinth_search::Search::open(shared.clone()).await.unwrap();
        let routes =
            plinth_console::router(shared.clone()).merge(plinth_search::router(search.clone()));
        let (routes, api) = routes.split_for_parts();
        let app = plinth_shared::http::app(routes, api, &shared);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let serving = tokio::spawn(async move {
            let stopped = async move {
                let _ = stopped.await;
            };
            plinth_shared::http::serve(listener, app, shared, stopped).await
        });
        let admin = Client::builder()
            .base_url(&url)
            .token(&backend.admin_token)
            .max_retries(0)
            .build()
            .unwrap();
        Server {
            url,
            admin,
            http: reqwest::Client::new(),
            backend,
            search,
            stop,
            serving,
        }
    }

    /// Stops this server and starts another on the same data.
    pub(crate) async fn restart(self) -> Server {
        let Server {
            backend,
            stop,
            serving,
            ..
        } = self;
        let _ = stop.send(());
        serving.await.unwrap().unwrap();
        Server::start(backend).await
    }

    /// A project with the given quotas and a key with both search scopes.
    pub(crate) async fn tenant(&self, name: &str, quotas: Quotas) -> String {
        let project = self
            .admin
            .create_project(&CreateProject {
                name: name.into(),
                quotas: Some(quotas),
            })
            .await
            .unwrap();
        let key = CreateKey {
            name: "fn".into(),
            scopes: vec![Scope::SearchRead, Scope::SearchWrite],
            ..CreateKey::default()
        };
        self.admin
            .create_key(&project.id, &key)
            .await
            .unwrap()
            .secret
    }

    /// Mints an access token from `credential` (`POST /console/v1/tokens`).
    pub(crate) async fn mint(&self, credential: &str, body: Value) -> (StatusCode, Value) {
        let response = self
            .http
            .post(format!("{}/console/v1/tokens", self.url))
            .bearer_auth(credential)
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = response.status();
        (status, response.json().await.unwrap())
    }

    /// Mints a token that must be granted; returns the JWT.
    pub(crate) async fn token(&self, credential: &str, body: Value) -> String {
        let (status, token) = self.mint(credential, body).await;
        assert_eq!(status, StatusCode::OK, "{token}");
        token["token"].as_str().unwrap().to_owned()
    }

    /// Sends a request to a search path (without its `/search/v1` prefix).
    pub(crate) async fn call(
        &self,
        key: &str,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut request = self
            .http
            .request(method, format!("{}/search/v1{path}", self.url))
            .bearer_auth(key);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        let text = response.text().await.unwrap();
        let value = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON: {text}"))
        };
        (status, value)
    }

    pub(crate) async fn ok(
        &self,
        key: &str,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> Value {
        let (status, value) = self.call(key, method, path, body).await;
        assert!(status.is_success(), "{status}: {value}");
        value
    }

    /// Sends a request that must fail; returns its status and code.
    pub(crate) async fn refused(
        &self,
        key: &str,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, String, Value) {
        let (status, value) = self.call(key, method, path, body).await;
        assert!(!status.is_success(), "succeeded: {value}");
        let code = value["code"].as_str().unwrap_or_default().to_owned();
        (status, code, value)
    }

    /// Searches and returns the ids of the hits, best first, and the total.
    pub(crate) async fn ids(&self, key: &str, index: &str, query: Value) -> (Vec<Value>, u64) {
        let found = self
            .ok(
                key,
                Method::POST,
                &format!("/indexes/{index}/search"),
                Some(query),
            )
            .await;
        let ids = found["hits"]
            .as_array()
            .unwrap()
            .iter()
            .map(|hit| hit["id"].clone())
            .collect();
        (ids, found["total"].as_u64().unwrap())
    }
}

/// The schema most scenarios use: products with a title, a body, tags, a price and a date.
pub(crate) fn products() -> Value {
    json!({
        "name": "products",
        "schema": {
            "primary_key": "id",
            "fields": [
                {"name": "id", "type": "keyword"},
                {"name": "title", "type": "text", "analyzer": "english"},
                {"name": "body", "type": "text"},
                {"name": "body_zh", "type": "text", "analyzer": "cjk"},
                {"name": "tags", "type": "keyword", "facet": true},
                {"name": "price", "type": "float", "sortable": true},
                {"name": "stock", "type": "integer", "sortable": true, "facet": true},
                {"name": "listed", "type": "boolean", "facet": true},
                {"name": "added", "type": "date", "sortable": true},
                {"name": "tenant", "type": "keyword"},
                {"name": "secret", "type": "keyword", "stored": false}
            ]
        }
    })
}

/// Creates the products index and upserts `documents`, waiting until they are searchable.
pub(crate) async fn with_products(server: &Server, key: &str, documents: Value) {
    server
        .ok(key, Method::POST, "/indexes", Some(products()))
        .await;
    server
        .ok(
            key,
            Method::POST,
            "/indexes/products/documents?wait=true",
            Some(documents),
        )
        .await;
}
