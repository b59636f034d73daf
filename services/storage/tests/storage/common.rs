//! What every storage scenario shares: a server on a free port, and request helpers.

pub(crate) use plinth_sdk::Client;
pub(crate) use plinth_shared::Shared;
pub(crate) use plinth_shared::config::StorageBackend;
pub(crate) use plinth_shared::testkit::TestBackend;
pub(crate) use plinth_types::console::{CreateKey, CreateProject, Project, Quotas};
pub(crate) use plinth_types::{ErrorBody, Scope};
pub(crate) use reqwest::StatusCode;
pub(crate) use serde_json::{Value, json};

pub(crate) struct Server {
    pub(crate) url: String,
    pub(crate) storage: plinth_storage::Storage,
    pub(crate) shared: Shared,
    pub(crate) admin: Client,
    pub(crate) http: reqwest::Client,
    pub(crate) blob_dir: std::path::PathBuf,
    pub(crate) _backend: TestBackend,
}

impl Server {
    pub(crate) async fn start(backend: TestBackend) -> Server {
        let shared = Shared::open(backend.config.clone(), &backend.admin_token)
            .await
            .unwrap();
        let storage = plinth_storage::Storage::open(shared.clone()).await.unwrap();
        let routes =
            plinth_console::router(shared.clone()).merge(plinth_storage::router(storage.clone()));
        let (routes, api) = routes.split_for_parts();
        let app = plinth_shared::http::app(routes, api, &shared);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let serving = shared.clone();
        tokio::spawn(async move {
            plinth_shared::http::serve(listener, app, serving, std::future::pending()).await
        });
        let admin = Client::builder()
            .base_url(&url)
            .token(&backend.admin_token)
            .max_retries(0)
            .build()
            .unwrap();
        let blob_dir = match backend.config.storage_backend().unwrap() {
            StorageBackend::File(dir) => dir,
            StorageBackend::S3 { bucket, .. } => {
                create_test_bucket(&backend.config, &bucket).await;
                std::path::PathBuf::new()
            }
        };
        Server {
            url,
            storage,
            shared,
            admin,
            http: reqwest::Client::new(),
            blob_dir,
            _backend: backend,
        }
    }

    /// A project with the given quotas and a key with every storage scope.
    pub(crate) async fn tenant(&self, name: &str, quotas: Quotas) -> (Project, String) {
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
            scopes: vec![Scope::StorageRead, Scope::StorageWrite],
            ..CreateKey::default()
        };
        let key = self.admin.create_key(&project.id, &key).await.unwrap();
        (project, key.secret)
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("{}/storage/v1{path}", self.url)
    }

    pub(crate) async fn create_bucket(&self, key: &str, body: Value) -> reqwest::Response {
        self.http
            .post(self.url("/buckets"))
            .bearer_auth(key)
            .json(&body)
            .send()
            .await
            .unwrap()
    }

    pub(crate) async fn put(
        &self,
        key: &str,
        bucket: &str,
        object: &str,
        body: Vec<u8>,
    ) -> reqwest::Response {
        let url = self.url(&format!("/buckets/{bucket}/objects/{object}"));
        self.http
            .put(url)
            .bearer_auth(key)
            .body(body)
            .send()
            .await
            .unwrap()
    }

    pub(crate) async fn get(&self, key: &str, bucket: &str, object: &str) -> reqwest::Response {
        let url = self.url(&format!("/buckets/{bucket}/objects/{object}"));
        self.http.get(url).bearer_auth(key).send().await.unwrap()
    }

    pub(crate) async fn gauges(&self, project: &Project) -> (u64, u64) {
        let usage = self.admin.get_quotas(&project.id).await.unwrap().usage;
        (usage["objects"], usage["stored_bytes"])
    }

    /// Blobs in the store, unfinished writes included.
    pub(crate) async fn blob_files(&self) -> usize {
        self.storage.blobs().count().await.unwrap()
    }

    pub(crate) async fn events(&self) -> Vec<(String, String)> {
        use sqlx::Row;
        let rows = sqlx::query("SELECT kind, key FROM object_events ORDER BY id")
            .fetch_all(self.shared.store().pool())
            .await
            .unwrap();
        rows.iter().map(|r| (r.get("kind"), r.get("key"))).collect()
    }
}

/// Creates the S3 test bucket if it is not there yet.
pub(crate) async fn create_test_bucket(config: &plinth_shared::config::Config, bucket: &str) {
    let secret = config.storage_s3_secret_access_key().unwrap().unwrap();
    let credentials = aws_sdk_s3::config::Credentials::new(
        config.storage_s3_access_key_id.clone().unwrap(),
        secret.expose(),
        None,
        None,
        "tests",
    );
    let s3 = aws_sdk_s3::Config::builder()
        .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
        .region(aws_sdk_s3::config::Region::new(
            config.storage_s3_region.clone(),
        ))
        .endpoint_url(config.storage_s3_endpoint.clone().unwrap())
        .force_path_style(true)
        .credentials_provider(credentials)
        .build();
    let client = aws_sdk_s3::Client::from_conf(s3);
    if client.head_bucket().bucket(bucket).send().await.is_err() {
        let created = client.create_bucket().bucket(bucket).send().await;
        if let Err(err) = created {
            // Another test may have created it in between.
            assert!(
                client.head_bucket().bucket(bucket).send().await.is_ok(),
                "cannot create {bucket}: {err:?}"
            );
        }
    }
}

pub(crate) async fn code(response: reqwest::Response) -> (StatusCode, String) {
    let status = response.status();
    let body: ErrorBody = response.json().await.unwrap();
    assert!(body.request_id.is_some());
    (status, body.code)
}

pub(crate) fn md5_of(bytes: &[u8]) -> u128 {
    use md5::{Digest, Md5};
    u128::from_be_bytes(Md5::digest(bytes).into())
}
