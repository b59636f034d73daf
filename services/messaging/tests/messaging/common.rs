//! What every messaging scenario shares: a server on a free port, and request helpers.

pub(crate) use plinth_sdk::Client;
pub(crate) use plinth_shared::Shared;
pub(crate) use plinth_shared::testkit::TestBackend;
pub(crate) use plinth_types::console::{CreateKey, CreateProject, Project, Quotas};
pub(crate) use plinth_types::{ErrorBody, Scope};
pub(crate) use reqwest::{Method, StatusCode};
pub(crate) use serde_json::{Value, json};

pub(crate) struct Server {
    pub(crate) url: String,
    pub(crate) messaging: plinth_messaging::Messaging,
    pub(crate) admin: Client,
    pub(crate) http: reqwest::Client,
    pub(crate) backend: TestBackend,
    stop: tokio::sync::oneshot::Sender<()>,
    serving: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Server {
    pub(crate) async fn start(backend: TestBackend) -> Server {
        // `PLINTH_TEST_LOG=debug` (any tracing filter) shows the servers' logs.
        if let Ok(filter) = std::env::var("PLINTH_TEST_LOG") {
            let _ = tracing_subscriber::fmt()
                .with_env_filter(filter)
                .with_test_writer()
                .try_init();
        }
        let mut config = backend.config.clone();
        // Push tests deliver to endpoints on this host, which only the operator can allow.
        config.messaging_push_allow = vec!["127.0.0.1".into()];
        let shared = Shared::open(config, &backend.admin_token).await.unwrap();
        let messaging = plinth_messaging::Messaging::open(shared.clone())
            .await
            .unwrap();
        // Storage too, for bucket notifications.
        let storage = plinth_storage::Storage::open(shared.clone()).await.unwrap();
        let routes = plinth_console::router(shared.clone())
            .merge(plinth_storage::router(storage))
            .merge(plinth_messaging::router(messaging.clone()));
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
            messaging,
            admin,
            http: reqwest::Client::new(),
            backend,
            stop,
            serving,
        }
    }

    /// Stops this server (and with it the message log's lock) and starts a new one on the
    /// same metadata store and data directory, as a restart of the process would.
    pub(crate) async fn restart(self) -> Server {
        let backend = self.stop().await;
        Server::start(backend).await
    }

    /// Stops this server and gives back its backend, once the message log is free.
    pub(crate) async fn stop(self) -> TestBackend {
        let Server {
            messaging,
            backend,
            stop,
            serving,
            admin,
            http,
            ..
        } = self;
        let open = messaging.open_handle();
        drop((messaging, admin, http));
        let _ = stop.send(());
        serving.await.unwrap().unwrap();
        // Tasks of the old server let go of the service as they notice it is stopping
        // (within moments; a task that never does is a leak, and fails here). Until then it
        // could still be relaying, pushing or holding the embedded log's lock.
        let until = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while open.is_open() {
            assert!(
                std::time::Instant::now() < until,
                "the stopped server's service is still open"
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        backend
    }

    /// A project with the given quotas and a key with the given scopes.
    pub(crate) async fn tenant(
        &self,
        name: &str,
        quotas: Quotas,
        scopes: Vec<Scope>,
    ) -> (Project, String) {
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
            scopes,
            ..CreateKey::default()
        };
        let key = self.admin.create_key(&project.id, &key).await.unwrap();
        (project, key.secret)
    }

    pub(crate) async fn publisher(&self, name: &str) -> String {
        let scopes = vec![Scope::MessagingPublish, Scope::MessagingConsume];
        self.tenant(name, Quotas::default(), scopes).await.1
    }

    pub(crate) async fn call(
        &self,
        key: &str,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        // Paths of other services come whole; messaging paths without their prefix.
        let path = if path.starts_with("/storage/") {
            path.to_owned()
        } else {
            format!("/messaging/v1{path}")
        };
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.url))
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
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Value {
        let (status, value) = self.call(key, method, path, body).await;
        assert!(status.is_success(), "{status}: {value}");
        value
    }

    pub(crate) async fn refused(
        &self,
        key: &str,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, String) {
        let (status, value) = self.call(key, method, path, body).await;
        assert!(status.is_client_error(), "{status}: {value}");
        let error: ErrorBody = serde_json::from_value(value).unwrap();
        (status, error.code)
    }
}
