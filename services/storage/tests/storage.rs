//! The storage API end to end on every metadata backend, with the file blob store.

use plinth_sdk::Client;
use plinth_shared::Shared;
use plinth_shared::config::StorageBackend;
use plinth_shared::testkit::TestBackend;
use plinth_shared::{backend_tests, s3_tests};
use plinth_types::console::{CreateKey, CreateProject, Project, Quotas};
use plinth_types::{ErrorBody, Scope};
use reqwest::StatusCode;
use serde_json::{Value, json};

struct Server {
    url: String,
    storage: plinth_storage::Storage,
    shared: Shared,
    admin: Client,
    http: reqwest::Client,
    blob_dir: std::path::PathBuf,
    _backend: TestBackend,
}

impl Server {
    async fn start(backend: TestBackend) -> Server {
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
    async fn tenant(&self, name: &str, quotas: Quotas) -> (Project, String) {
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

    fn url(&self, path: &str) -> String {
        format!("{}/storage/v1{path}", self.url)
    }

    async fn create_bucket(&self, key: &str, body: Value) -> reqwest::Response {
        self.http
            .post(self.url("/buckets"))
            .bearer_auth(key)
            .json(&body)
            .send()
            .await
            .unwrap()
    }

    async fn put(&self, key: &str, bucket: &str, object: &str, body: Vec<u8>) -> reqwest::Response {
        let url = self.url(&format!("/buckets/{bucket}/objects/{object}"));
        self.http
            .put(url)
            .bearer_auth(key)
            .body(body)
            .send()
            .await
            .unwrap()
    }

    async fn get(&self, key: &str, bucket: &str, object: &str) -> reqwest::Response {
        let url = self.url(&format!("/buckets/{bucket}/objects/{object}"));
        self.http.get(url).bearer_auth(key).send().await.unwrap()
    }

    async fn gauges(&self, project: &Project) -> (u64, u64) {
        let usage = self.admin.get_quotas(&project.id).await.unwrap().usage;
        (usage["objects"], usage["stored_bytes"])
    }

    /// Blobs in the store, unfinished writes included.
    async fn blob_files(&self) -> usize {
        self.storage.blobs().count().await.unwrap()
    }

    async fn events(&self) -> Vec<(String, String)> {
        use sqlx::Row;
        let rows = sqlx::query("SELECT kind, key FROM object_events ORDER BY id")
            .fetch_all(self.shared.store().pool())
            .await
            .unwrap();
        rows.iter().map(|r| (r.get("kind"), r.get("key"))).collect()
    }
}

/// Creates the S3 test bucket if it is not there yet.
async fn create_test_bucket(config: &plinth_shared::config::Config, bucket: &str) {
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

async fn code(response: reqwest::Response) -> (StatusCode, String) {
    let status = response.status();
    let body: ErrorBody = response.json().await.unwrap();
    assert!(body.request_id.is_some());
    (status, body.code)
}

async fn buckets_are_managed_per_project(backend: TestBackend) {
    let server = Server::start(backend).await;
    let (_, key) = server.tenant("alpha", Quotas::default()).await;

    let created = server
        .create_bucket(&key, json!({"name": "avatars", "max_object_size": 1000}))
        .await;
    assert_eq!(created.status(), StatusCode::CREATED);
    let bucket: Value = created.json().await.unwrap();
    assert_eq!(
        (bucket["name"].as_str(), bucket["max_object_size"].as_u64()),
        (Some("avatars"), Some(1000))
    );
    assert_eq!(
        code(server.create_bucket(&key, json!({"name": "avatars"})).await)
            .await
            .1,
        "bucket_name_taken"
    );
    for bad in ["ab", "Avatars", "a..b", "-x-", "10.0.0.1"] {
        assert_eq!(
            code(server.create_bucket(&key, json!({"name": bad})).await)
                .await
                .1,
            "invalid_bucket_name",
            "{bad}"
        );
    }
    let bad_types = json!({"name": "docs", "allowed_content_types": ["pdf"]});
    assert_eq!(
        code(server.create_bucket(&key, bad_types).await).await.1,
        "invalid_field"
    );

    server.create_bucket(&key, json!({"name": "docs"})).await;
    let listed: Value = server
        .http
        .get(server.url("/buckets"))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let names: Vec<_> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["avatars", "docs"]);

    let patched: Value = server
        .http
        .patch(server.url("/buckets/docs"))
        .bearer_auth(&key)
        .json(&json!({"public_read": true, "allowed_content_types": ["application/pdf"]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(patched["public_read"], true);

    assert_eq!(
        server
            .put(&key, "docs", "a.pdf", b"%PDF".to_vec())
            .await
            .status(),
        415
    );
    let pdf = server
        .http
        .put(server.url("/buckets/docs/objects/a.pdf"))
        .bearer_auth(&key)
        .header("content-type", "application/pdf")
        .body("%PDF")
        .send()
        .await
        .unwrap();
    assert_eq!(pdf.status(), 200);
    let refused = server
        .http
        .delete(server.url("/buckets/docs"))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(code(refused).await.1, "bucket_not_empty");
    let forced = server
        .http
        .delete(server.url("/buckets/docs?force=true"))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(forced.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        code(
            server
                .http
                .get(server.url("/buckets/docs"))
                .bearer_auth(&key)
                .send()
                .await
                .unwrap()
        )
        .await
        .1,
        "bucket_not_found"
    );
}

async fn objects_round_trip_with_headers_ranges_and_quotas(backend: TestBackend) {
    let server = Server::start(backend).await;
    let (project, key) = server.tenant("alpha", Quotas::default()).await;
    server.create_bucket(&key, json!({"name": "files"})).await;

    let body: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
    let put = server
        .http
        .put(server.url("/buckets/files/objects/reports/2024/q1.bin"))
        .bearer_auth(&key)
        .header("content-type", "application/x-report")
        .header("cache-control", "max-age=60")
        .header("x-plinth-meta-owner", "user-42")
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), 200);
    let info: Value = put.json().await.unwrap();
    let md5_hex = format!("\"{:x}\"", md5_of(&body));
    assert_eq!(info["etag"], md5_hex.as_str());
    assert_eq!(info["size"], 100_000);
    assert_eq!(info["metadata"]["owner"], "user-42");

    let got = server.get(&key, "files", "reports/2024/q1.bin").await;
    assert_eq!(got.status(), 200);
    let headers = got.headers().clone();
    assert_eq!(headers["etag"], md5_hex.as_str());
    assert_eq!(headers["content-type"], "application/x-report");
    assert_eq!(headers["cache-control"], "max-age=60");
    assert_eq!(headers["x-plinth-meta-owner"], "user-42");
    assert_eq!(headers["x-content-type-options"], "nosniff");
    assert_eq!(headers["content-length"], "100000");
    assert!(headers.contains_key("last-modified"));
    assert_eq!(got.bytes().await.unwrap().as_ref(), body.as_slice());

    // Objects are served byte for byte even to a client that accepts gzip.
    let raw = server
        .http
        .get(server.url("/buckets/files/objects/reports/2024/q1.bin"))
        .bearer_auth(&key)
        .header("accept-encoding", "gzip")
        .send()
        .await
        .unwrap();
    assert!(raw.headers().get("content-encoding").is_none());
    assert_eq!(raw.headers()["content-length"], "100000");

    let ranged = server
        .http
        .get(server.url("/buckets/files/objects/reports/2024/q1.bin"))
        .bearer_auth(&key)
        .header("range", "bytes=1000-1999")
        .send()
        .await
        .unwrap();
    assert_eq!(ranged.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(ranged.headers()["content-range"], "bytes 1000-1999/100000");
    assert_eq!(ranged.bytes().await.unwrap().as_ref(), &body[1000..2000]);
    let outside = server
        .http
        .get(server.url("/buckets/files/objects/reports/2024/q1.bin"))
        .bearer_auth(&key)
        .header("range", "bytes=100000-")
        .send()
        .await
        .unwrap();
    assert_eq!(outside.headers()["content-range"], "bytes */100000");
    assert_eq!(
        code(outside).await,
        (
            StatusCode::RANGE_NOT_SATISFIABLE,
            "range_not_satisfiable".into()
        )
    );

    let head = server
        .http
        .head(server.url("/buckets/files/objects/reports/2024/q1.bin"))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(
        (
            head.status(),
            head.headers()["content-length"].to_str().unwrap()
        ),
        (StatusCode::OK, "100000")
    );

    // Active content is never served as a page on the API's origin.
    let page = server
        .http
        .put(server.url("/buckets/files/objects/x.html"))
        .bearer_auth(&key)
        .header("content-type", "text/html")
        .body("<script>alert(1)</script>")
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    let page = server.get(&key, "files", "x.html").await;
    assert_eq!(page.headers()["content-security-policy"], "sandbox");
    assert_eq!(page.headers()["content-disposition"], "attachment");

    assert_eq!(server.gauges(&project).await, (2, 100_000 + 25));
    // An overwrite counts the size difference, not a second object.
    assert_eq!(
        server
            .put(&key, "files", "x.html", vec![b'a'; 5])
            .await
            .status(),
        200
    );
    assert_eq!(server.gauges(&project).await, (2, 100_005));
    assert_eq!(server.blob_files().await, 2, "the replaced blob is removed");

    for object in ["reports/2024/q1.bin", "x.html"] {
        let deleted = server
            .http
            .delete(server.url(&format!("/buckets/files/objects/{object}")))
            .bearer_auth(&key)
            .send()
            .await
            .unwrap();
        assert_eq!(deleted.status(), StatusCode::NO_CONTENT);
        assert_eq!(
            code(server.get(&key, "files", object).await).await.1,
            "object_not_found"
        );
    }
    assert_eq!(server.gauges(&project).await, (0, 0));
    assert_eq!(server.blob_files().await, 0);
    let again = server
        .http
        .delete(server.url("/buckets/files/objects/x.html"))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(
        again.status(),
        StatusCode::NO_CONTENT,
        "deleting a missing key succeeds, as in S3"
    );

    let events = server.events().await;
    let kinds: Vec<_> = events.iter().map(|(kind, _)| kind.as_str()).collect();
    assert_eq!(
        kinds,
        [
            "object.created",
            "object.created",
            "object.created",
            "object.deleted",
            "object.deleted"
        ]
    );
}

fn md5_of(bytes: &[u8]) -> u128 {
    use md5::{Digest, Md5};
    u128::from_be_bytes(Md5::digest(bytes).into())
}

async fn bad_input_is_refused_and_stores_nothing(backend: TestBackend) {
    let server = Server::start(backend).await;
    let (project, key) = server
        .tenant(
            "alpha",
            Quotas {
                object_size_max: Some(10_000),
                ..Quotas::default()
            },
        )
        .await;
    server
        .create_bucket(&key, json!({"name": "files", "max_object_size": 5000}))
        .await;

    let long_key = "k".repeat(1025);
    for (object, expected) in [
        // Escaped so that the client does not resolve the dot segments itself.
        ("a/..%2Fb", "invalid_object_key"),
        ("a/.%2Fb", "invalid_object_key"),
        ("%2Fleading", "invalid_object_key"),
        ("nul%00byte", "invalid_object_key"),
        ("line%0Abreak", "invalid_object_key"),
        ("bad%FFutf8", "invalid_object_key"),
        (long_key.as_str(), "invalid_object_key"),
    ] {
        let response = server.put(&key, "files", object, b"x".to_vec()).await;
        assert_eq!(
            code(response).await,
            (StatusCode::BAD_REQUEST, expected.to_owned()),
            "{object}"
        );
    }

    let body = b"hello".to_vec();
    let wrong_md5 = server
        .http
        .put(server.url("/buckets/files/objects/a"))
        .bearer_auth(&key)
        .header("content-md5", "AAAAAAAAAAAAAAAAAAAAAA==")
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(code(wrong_md5).await.1, "checksum_mismatch");
    let wrong_sha = server
        .http
        .put(server.url("/buckets/files/objects/a"))
        .bearer_auth(&key)
        .header("x-plinth-checksum-sha256", "00".repeat(32))
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(code(wrong_sha).await.1, "checksum_mismatch");
    let garbled = server
        .http
        .put(server.url("/buckets/files/objects/a"))
        .bearer_auth(&key)
        .header("content-md5", "not base64")
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(code(garbled).await.1, "invalid_header");

    // The bucket's 5000 bytes win over the project's 10000: refused by Content-Length up
    // front, and by counting when the body streams without one.
    let oversize = server.put(&key, "files", "big", vec![0; 5001]).await;
    assert_eq!(
        code(oversize).await,
        (StatusCode::PAYLOAD_TOO_LARGE, "object_too_large".into())
    );
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        (0..6).map(|_| Ok(vec![0u8; 1000])).collect();
    let streamed = server
        .http
        .put(server.url("/buckets/files/objects/big"))
        .bearer_auth(&key)
        .body(reqwest::Body::wrap_stream(futures::stream::iter(chunks)))
        .send()
        .await
        .unwrap();
    assert_eq!(code(streamed).await.1, "object_too_large");
    let missing_bucket = server.put(&key, "nope", "a", b"x".to_vec()).await;
    assert_eq!(code(missing_bucket).await.1, "bucket_not_found");

    assert_eq!(server.gauges(&project).await, (0, 0));
    assert_eq!(
        server.blob_files().await,
        0,
        "no blob, not even a temporary one, is left"
    );
    assert!(server.events().await.is_empty());
}

async fn concurrent_uploads_never_overshoot_the_quota(backend: TestBackend) {
    let server = Server::start(backend).await;
    let quotas = Quotas {
        stored_bytes: Some(10_000),
        ..Quotas::default()
    };
    let (project, key) = server.tenant("alpha", quotas).await;
    server.create_bucket(&key, json!({"name": "files"})).await;

    let names: Vec<String> = (0..64).map(|i| format!("o-{i}")).collect();
    let uploads = names
        .iter()
        .map(|name| server.put(&key, "files", name, vec![7; 1000]));
    let responses = futures::future::join_all(uploads).await;
    let mut stored = 0;
    for response in responses {
        match response.status() {
            StatusCode::OK => stored += 1,
            StatusCode::FORBIDDEN => assert_eq!(code(response).await.1, "quota_exceeded"),
            other => panic!("unexpected {other}"),
        }
    }
    assert_eq!(stored, 10, "exactly the quota's worth is stored");
    assert_eq!(server.gauges(&project).await, (10, 10_000));
    assert_eq!(
        server.blob_files().await,
        10,
        "refused uploads leave no blob"
    );
}

async fn other_projects_see_nothing(backend: TestBackend) {
    let server = Server::start(backend).await;
    let (_, owner) = server.tenant("alpha", Quotas::default()).await;
    let (_, stranger) = server.tenant("beta", Quotas::default()).await;
    server
        .create_bucket(&owner, json!({"name": "private"}))
        .await;
    assert_eq!(
        server
            .put(&owner, "private", "secret.txt", b"s3cr3t".to_vec())
            .await
            .status(),
        200
    );

    let upload: Value = server
        .http
        .post(server.url("/buckets/private/uploads"))
        .bearer_auth(&owner)
        .json(&json!({"key": "secret.txt"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let upload = upload["upload_id"].as_str().unwrap().to_owned();

    // The stranger gets exactly what a missing bucket gives, on every route.
    for bucket in ["private", "missing"] {
        let base = server.url(&format!("/buckets/{bucket}"));
        let object = format!("{base}/objects/secret.txt");
        let requests = [
            server.http.get(&base),
            server.http.patch(&base).json(&json!({"public_read": true})),
            server.http.delete(&base),
            server.http.get(&object),
            server.http.put(&object).body("x"),
            server.http.delete(&object),
            server.http.get(format!("{base}/objects?prefix=")),
            server
                .http
                .put(&object)
                .header("x-plinth-copy-source", format!("{bucket}/secret.txt")),
            server
                .http
                .post(format!("{base}/uploads"))
                .json(&json!({"key": "secret.txt"})),
            server.http.get(format!("{base}/uploads/{upload}/parts")),
            server
                .http
                .put(format!("{base}/uploads/{upload}/parts/1"))
                .body("x"),
            server
                .http
                .post(format!("{base}/uploads/{upload}/complete"))
                .json(&json!({"parts": []})),
            server.http.delete(format!("{base}/uploads/{upload}")),
            server
                .http
                .post(format!("{base}/signed-urls"))
                .json(&json!({"key": "secret.txt", "method": "GET"})),
        ];
        for request in requests {
            let response = request.bearer_auth(&stranger).send().await.unwrap();
            assert_eq!(
                code(response).await,
                (StatusCode::NOT_FOUND, "bucket_not_found".into()),
                "{bucket}"
            );
        }
        let head = server
            .http
            .head(&object)
            .bearer_auth(&stranger)
            .send()
            .await
            .unwrap();
        assert_eq!(head.status(), StatusCode::NOT_FOUND);
    }
    let listed: Value = server
        .http
        .get(server.url("/buckets"))
        .bearer_auth(&stranger)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(listed, json!([]));
    assert_eq!(
        server
            .get(&owner, "private", "secret.txt")
            .await
            .bytes()
            .await
            .unwrap()
            .as_ref(),
        b"s3cr3t"
    );
}

async fn scopes_and_patterns_limit_storage(backend: TestBackend) {
    let server = Server::start(backend).await;
    let (project, writer) = server.tenant("alpha", Quotas::default()).await;
    server
        .create_bucket(&writer, json!({"name": "avatars"}))
        .await;
    let limited = CreateKey {
        name: "user-42".into(),
        scopes: vec![Scope::StorageRead, Scope::StorageWrite],
        resources: vec!["bucket:avatars/user-42/*".into()],
        ..CreateKey::default()
    };
    let limited = server
        .admin
        .create_key(&project.id, &limited)
        .await
        .unwrap()
        .secret;
    let reader = CreateKey {
        name: "ro".into(),
        scopes: vec![Scope::StorageRead],
        ..CreateKey::default()
    };
    let reader = server
        .admin
        .create_key(&project.id, &reader)
        .await
        .unwrap()
        .secret;

    assert_eq!(
        server
            .put(&limited, "avatars", "user-42/face.png", b"png".to_vec())
            .await
            .status(),
        200
    );
    assert_eq!(
        code(
            server
                .put(&limited, "avatars", "user-43/face.png", b"png".to_vec())
                .await
        )
        .await
        .1,
        "resource_not_allowed"
    );
    assert_eq!(
        code(server.put(&reader, "avatars", "x", b"png".to_vec()).await)
            .await
            .1,
        "missing_scope"
    );
    assert_eq!(
        server
            .get(&reader, "avatars", "user-42/face.png")
            .await
            .status(),
        200
    );
    let own = server.url("/buckets/avatars/objects?prefix=user-42/");
    let own = server
        .http
        .get(own)
        .bearer_auth(&limited)
        .send()
        .await
        .unwrap();
    assert_eq!(own.status(), 200);
    let everything = server.url("/buckets/avatars/objects");
    let everything = server
        .http
        .get(everything)
        .bearer_auth(&limited)
        .send()
        .await
        .unwrap();
    assert_eq!(code(everything).await.1, "resource_not_allowed");
}

async fn listings_page_by_key_with_common_prefixes(backend: TestBackend) {
    let server = Server::start(backend).await;
    let (_, key) = server.tenant("alpha", Quotas::default()).await;
    server.create_bucket(&key, json!({"name": "files"})).await;
    let keys = ["a/1", "a/2", "b/1", "c", "d/x/y", "d/z", "e"];
    for object in keys {
        let response = server
            .http
            .put(server.url(&format!("/buckets/files/objects/{object}")))
            .bearer_auth(&key)
            .header("x-plinth-meta-name", object)
            .body(object.as_bytes().to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
    }
    let list = |query: &str| {
        let url = server.url(&format!("/buckets/files/objects?{query}"));
        let request = server.http.get(url).bearer_auth(&key);
        async move {
            let response = request.send().await.unwrap();
            assert_eq!(response.status(), 200);
            response.json::<Value>().await.unwrap()
        }
    };
    let names = |page: &Value| -> Vec<String> {
        page["objects"]
            .as_array()
            .unwrap()
            .iter()
            .map(|o| o["key"].as_str().unwrap().to_owned())
            .collect()
    };
    let prefixes = |page: &Value| -> Vec<String> {
        page["common_prefixes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p.as_str().unwrap().to_owned())
            .collect()
    };

    let all = list("").await;
    assert_eq!(names(&all), keys);
    assert_eq!(
        all["objects"][3]["metadata"]["name"], "c",
        "metadata comes with listings"
    );
    assert!(all["next_cursor"].is_null());

    let grouped = list("delimiter=/").await;
    assert_eq!(names(&grouped), ["c", "e"]);
    assert_eq!(prefixes(&grouped), ["a/", "b/", "d/"]);

    let inside = list("prefix=d/&delimiter=/").await;
    assert_eq!(
        (names(&inside), prefixes(&inside)),
        (vec!["d/z".to_owned()], vec!["d/x/".to_owned()])
    );
    assert_eq!(names(&list("prefix=a/").await), ["a/1", "a/2"]);
    assert_eq!(names(&list("start_after=c").await), ["d/x/y", "d/z", "e"]);

    // Pages of two, entries being objects and prefixes alike, until the cursor runs out.
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..10 {
        let query = match &cursor {
            Some(c) => format!("delimiter=/&limit=2&cursor={c}"),
            None => "delimiter=/&limit=2".to_owned(),
        };
        let page = list(&query).await;
        seen.extend(prefixes(&page));
        seen.extend(names(&page));
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    seen.sort();
    assert_eq!(seen, ["a/", "b/", "c", "d/", "e"]);

    let bad = server
        .http
        .get(server.url("/buckets/files/objects?limit=0"))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(code(bad).await.1, "invalid_parameter");
    let forged = server
        .http
        .get(server.url("/buckets/files/objects?cursor=!!"))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(code(forged).await.1, "invalid_cursor");
}

async fn conditional_requests_behave_as_in_s3(backend: TestBackend) {
    let server = Server::start(backend).await;
    let (project, key) = server.tenant("alpha", Quotas::default()).await;
    server.create_bucket(&key, json!({"name": "files"})).await;
    let url = server.url("/buckets/files/objects/doc");
    let put = |body: &'static str, condition: Option<(&'static str, String)>| {
        let mut request = server.http.put(&url).bearer_auth(&key).body(body);
        if let Some((name, value)) = condition {
            request = request.header(name, value);
        }
        request.send()
    };

    // Create-only: the first wins, the second gets 412, even when they race.
    let racing =
        futures::future::join_all((0..8).map(|_| put("v1", Some(("if-none-match", "*".into())))))
            .await;
    let created = racing
        .iter()
        .filter(|r| r.as_ref().unwrap().status() == 200)
        .count();
    assert_eq!(created, 1, "exactly one create-only PUT succeeds");
    for response in racing
        .into_iter()
        .map(Result::unwrap)
        .filter(|r| r.status() != 200)
    {
        assert_eq!(
            code(response).await,
            (
                StatusCode::PRECONDITION_FAILED,
                "precondition_failed".into()
            )
        );
    }
    let v1: Value = server.get(&key, "files", "doc").await.headers()["etag"]
        .to_str()
        .map(|e| json!(e))
        .unwrap();
    let v1 = v1.as_str().unwrap().to_owned();

    let stale = put("v2", Some(("if-match", "\"0000\"".into())))
        .await
        .unwrap();
    assert_eq!(code(stale).await.1, "precondition_failed");
    assert_eq!(
        put("v2", Some(("if-match", v1.clone())))
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        server.get(&key, "files", "doc").await.text().await.unwrap(),
        "v2"
    );

    let get = |name: &'static str, value: String| {
        server
            .http
            .get(&url)
            .bearer_auth(&key)
            .header(name, value)
            .send()
    };
    let current = server.get(&key, "files", "doc").await;
    let etag = current.headers()["etag"].to_str().unwrap().to_owned();
    let modified = current.headers()["last-modified"]
        .to_str()
        .unwrap()
        .to_owned();
    let not_modified = get("if-none-match", etag.clone()).await.unwrap();
    assert_eq!(not_modified.status(), StatusCode::NOT_MODIFIED);
    assert_eq!(not_modified.headers()["etag"], etag.as_str());
    assert!(not_modified.bytes().await.unwrap().is_empty());
    assert_eq!(
        get("if-none-match", v1.clone()).await.unwrap().status(),
        200
    );
    assert_eq!(
        get("if-modified-since", modified.clone())
            .await
            .unwrap()
            .status(),
        StatusCode::NOT_MODIFIED
    );
    assert_eq!(
        get("if-modified-since", "Thu, 01 Jan 1970 00:00:00 GMT".into())
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        code(get("if-match", v1).await.unwrap()).await.1,
        "precondition_failed"
    );
    let long_ago = "Thu, 01 Jan 1970 00:00:00 GMT".to_owned();
    assert_eq!(
        code(get("if-unmodified-since", long_ago).await.unwrap())
            .await
            .1,
        "precondition_failed"
    );
    assert_eq!(server.gauges(&project).await, (1, 2));
}

async fn signed_urls_work_without_credentials_and_only_as_signed(backend: TestBackend) {
    let server = Server::start(backend).await;
    let (project, key) = server.tenant("alpha", Quotas::default()).await;
    server.create_bucket(&key, json!({"name": "files"})).await;
    assert_eq!(
        server
            .put(&key, "files", "docs/report.txt", b"quarterly".to_vec())
            .await
            .status(),
        200
    );
    let sign = |body: Value| {
        let request = server
            .http
            .post(server.url("/buckets/files/signed-urls"))
            .bearer_auth(&key)
            .json(&body);
        async move {
            let response = request.send().await.unwrap();
            assert_eq!(response.status(), 200);
            response.json::<Value>().await.unwrap()["url"]
                .as_str()
                .unwrap()
                .to_owned()
        }
    };
    let absolute = |path: &str| format!("{}{path}", server.url);

    let download = sign(json!({"key": "docs/report.txt", "method": "GET", "expires_in": 60})).await;
    let fetched = server.http.get(absolute(&download)).send().await.unwrap();
    assert_eq!(fetched.status(), 200);
    assert_eq!(fetched.headers()["x-content-type-options"], "nosniff");
    assert_eq!(fetched.text().await.unwrap(), "quarterly");
    assert_eq!(
        server
            .http
            .head(absolute(&download))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );

    // Altered: another key in the path, a broken signature, no token, PUT with a GET URL.
    let other_key = download.replace("report.txt", "other.txt");
    let tampered = {
        let (head, signature) = download.rsplit_once('.').unwrap();
        let flipped = if signature.starts_with('A') { "B" } else { "A" };
        format!("{head}.{flipped}{}", &signature[1..])
    };
    let no_token = download.split('?').next().unwrap().to_owned();
    for url in [other_key, tampered, no_token] {
        let response = server.http.get(absolute(&url)).send().await.unwrap();
        assert_eq!(
            code(response).await,
            (StatusCode::FORBIDDEN, "signed_url_invalid".into()),
            "{url}"
        );
    }
    let wrong_method = server
        .http
        .put(absolute(&download))
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(code(wrong_method).await.1, "signed_url_invalid");

    // Expired.
    let caller = server.shared.auth().authenticate(&key).await.unwrap();
    let mut claims: plinth_types::console::TokenClaims = {
        let token = download.split("token=").nth(1).unwrap();
        let payload = token.split('.').nth(1).unwrap();
        use base64::Engine;
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .unwrap();
        serde_json::from_slice(&bytes).unwrap()
    };
    assert_eq!(claims.project, caller.project_id().unwrap());
    claims.exp = claims.iat - 60;
    claims.nbf = claims.iat - 120;
    let expired = server.shared.auth().keyring().sign(&claims).unwrap();
    let expired_url = format!("{}?token={expired}", download.split('?').next().unwrap());
    let response = server
        .http
        .get(absolute(&expired_url))
        .send()
        .await
        .unwrap();
    assert_eq!(
        code(response).await,
        (StatusCode::FORBIDDEN, "signed_url_expired".into())
    );

    // An upload URL holds its content type and size.
    let upload = sign(json!({"key": "in/photo.png", "method": "PUT", "content_type": "image/png", "max_size": 10})).await;
    let put = |content_type: &'static str, body: &'static [u8]| {
        server
            .http
            .put(absolute(&upload))
            .header("content-type", content_type)
            .body(body)
            .send()
    };
    assert_eq!(
        code(put("text/html", b"<b>").await.unwrap()).await.1,
        "content_type_not_allowed"
    );
    assert_eq!(
        code(put("image/png", b"0123456789abc").await.unwrap())
            .await
            .1,
        "object_too_large"
    );
    assert_eq!(put("image/png", b"png").await.unwrap().status(), 200);
    assert_eq!(
        server
            .get(&key, "files", "in/photo.png")
            .await
            .bytes()
            .await
            .unwrap()
            .as_ref(),
        b"png"
    );
    assert_eq!(server.gauges(&project).await, (2, 12));

    // Revoking the key that signed them ends its URLs.
    let keys = server
        .admin
        .list_keys(&project.id, &Default::default())
        .await
        .unwrap();
    server
        .admin
        .revoke_key(&project.id, &keys.items[0].id)
        .await
        .unwrap();
    let response = server.http.get(absolute(&download)).send().await.unwrap();
    assert_eq!(code(response).await.1, "signed_url_invalid");
}

async fn public_buckets_serve_reads_without_credentials(backend: TestBackend) {
    let server = Server::start(backend).await;
    let (project, key) = server.tenant("alpha", Quotas::default()).await;
    let (other, other_key) = server.tenant("beta", Quotas::default()).await;
    server
        .create_bucket(&key, json!({"name": "site", "public_read": true}))
        .await;
    server.create_bucket(&key, json!({"name": "private"})).await;
    server
        .create_bucket(&other_key, json!({"name": "site"}))
        .await;
    for bucket in ["site", "private"] {
        let response = server
            .http
            .put(server.url(&format!("/buckets/{bucket}/objects/index.svg")))
            .bearer_auth(&key)
            .header("content-type", "image/svg+xml")
            .body("<svg onload=alert(1)/>")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
    }

    let public = server.url(&format!("/public/{}/site/index.svg", project.id));
    let response = server.http.get(&public).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-security-policy"], "sandbox");
    assert_eq!(response.headers()["content-disposition"], "attachment");
    assert_eq!(
        server.http.head(&public).send().await.unwrap().status(),
        200
    );
    assert_eq!(
        server
            .http
            .put(&public)
            .body("x")
            .send()
            .await
            .unwrap()
            .status(),
        405
    );

    // A private bucket, or another project's bucket of the same name, answers as missing.
    for url in [
        server.url(&format!("/public/{}/private/index.svg", project.id)),
        server.url(&format!("/public/{}/site/index.svg", other.id)),
        server.url("/public/prj_000000000000ffffffffffffffff/site/index.svg"),
    ] {
        let response = server.http.get(&url).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::NOT_FOUND, "{url}");
    }
}

async fn copies_are_server_side_and_stay_in_the_project(backend: TestBackend) {
    let server = Server::start(backend).await;
    let (project, key) = server.tenant("alpha", Quotas::default()).await;
    let (_, stranger) = server.tenant("beta", Quotas::default()).await;
    server.create_bucket(&key, json!({"name": "src"})).await;
    server.create_bucket(&key, json!({"name": "dst"})).await;
    server
        .create_bucket(&stranger, json!({"name": "dst"}))
        .await;
    let original = server
        .http
        .put(server.url("/buckets/src/objects/a.txt"))
        .bearer_auth(&key)
        .header("content-type", "text/plain")
        .header("x-plinth-meta-owner", "42")
        .body("copy me")
        .send()
        .await
        .unwrap();
    let etag = original.headers()["etag"].to_str().unwrap().to_owned();

    let copy = |credential: &str, source: &str| {
        server
            .http
            .put(server.url("/buckets/dst/objects/b.txt"))
            .bearer_auth(credential)
            .header("x-plinth-copy-source", source)
            .send()
    };
    let copied = copy(&key, "src/a.txt").await.unwrap();
    assert_eq!(copied.status(), 200);
    assert_eq!(copied.headers()["etag"], etag.as_str());
    let got = server.get(&key, "dst", "b.txt").await;
    assert_eq!(got.headers()["x-plinth-meta-owner"], "42");
    assert_eq!(got.headers()["content-type"], "text/plain");
    assert_eq!(got.text().await.unwrap(), "copy me");
    assert_eq!(server.gauges(&project).await, (2, 14));

    // The copy does not depend on its source.
    server
        .http
        .delete(server.url("/buckets/src/objects/a.txt"))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(
        server.get(&key, "dst", "b.txt").await.text().await.unwrap(),
        "copy me"
    );

    assert_eq!(
        code(copy(&key, "src/a.txt").await.unwrap()).await.1,
        "object_not_found"
    );
    assert_eq!(
        code(copy(&key, "no-slash").await.unwrap()).await.1,
        "invalid_header"
    );
    // Another project cannot name this project's objects as a source.
    assert_eq!(
        code(copy(&stranger, "dst/b.txt").await.unwrap()).await.1,
        "object_not_found"
    );
    assert_eq!(
        code(copy(&stranger, "src/a.txt").await.unwrap()).await.1,
        "bucket_not_found"
    );
}

async fn multipart_uploads_complete_resume_abort_and_expire(mut backend: TestBackend) {
    backend.config.storage_min_part_bytes = 5;
    backend.config.storage_upload_expiry = std::time::Duration::from_secs(3600);
    let server = Server::start(backend).await;
    let (project, key) = server.tenant("alpha", Quotas::default()).await;
    server.create_bucket(&key, json!({"name": "files"})).await;
    let start = |object: &str| {
        let request = server
            .http
            .post(server.url("/buckets/files/uploads"))
            .bearer_auth(&key)
            .json(
                &json!({"key": object, "content_type": "text/plain", "metadata": {"kind": "log"}}),
            );
        async move {
            let response = request.send().await.unwrap();
            assert_eq!(response.status(), StatusCode::CREATED);
            response.json::<Value>().await.unwrap()["upload_id"]
                .as_str()
                .unwrap()
                .to_owned()
        }
    };
    let part = |upload: &str, number: u32, body: &'static str| {
        let url = server.url(&format!("/buckets/files/uploads/{upload}/parts/{number}"));
        server.http.put(url).bearer_auth(&key).body(body).send()
    };

    let upload = start("logs/big.txt").await;
    // Parts in any order and at once; part 1 sent again, as after a dropped connection.
    let (second, first) = tokio::join!(part(&upload, 2, "bbb"), part(&upload, 1, "aaaaaaaaaa"));
    assert_eq!(
        (second.unwrap().status(), first.unwrap().status()),
        (StatusCode::OK, StatusCode::OK)
    );
    let again: Value = part(&upload, 1, "AAAAAAAAAA")
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        server.gauges(&project).await,
        (0, 13),
        "pending parts count against stored bytes"
    );
    let listed: Value = server
        .http
        .get(server.url(&format!("/buckets/files/uploads/{upload}/parts")))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let parts = listed.as_array().unwrap();
    assert_eq!(parts.len(), 2);
    assert_eq!(parts[0]["etag"], again["etag"]);

    let complete = |upload: &str, parts: Value| {
        let url = server.url(&format!("/buckets/files/uploads/{upload}/complete"));
        server
            .http
            .post(url)
            .bearer_auth(&key)
            .json(&json!({"parts": parts}))
            .send()
    };
    let etag_1 = parts[0]["etag"].clone();
    let etag_2 = parts[1]["etag"].clone();
    for bad in [
        json!([{"part_number": 1, "etag": "\"nope\""}, {"part_number": 2, "etag": etag_2}]),
        json!([{"part_number": 2, "etag": etag_2}, {"part_number": 1, "etag": etag_1}]),
        json!([{"part_number": 2, "etag": etag_2}, {"part_number": 3, "etag": etag_2}]),
        json!([]),
    ] {
        assert_eq!(
            code(complete(&upload, bad).await.unwrap()).await.1,
            "invalid_part"
        );
    }
    let done = complete(
        &upload,
        json!([{"part_number": 1, "etag": etag_1}, {"part_number": 2, "etag": etag_2}]),
    )
    .await
    .unwrap();
    assert_eq!(done.status(), 200);
    let info: Value = done.json().await.unwrap();
    assert!(info["etag"].as_str().unwrap().ends_with("-2\""), "{info}");
    assert_eq!(info["metadata"]["kind"], "log");
    let got = server.get(&key, "files", "logs/big.txt").await;
    assert_eq!(got.headers()["content-type"], "text/plain");
    assert_eq!(got.text().await.unwrap(), "AAAAAAAAAAbbb");
    assert_eq!(server.gauges(&project).await, (1, 13));
    assert_eq!(server.blob_files().await, 1, "the parts' blobs are gone");
    assert_eq!(
        code(part(&upload, 3, "x").await.unwrap()).await.1,
        "upload_not_found"
    );

    // A part below the minimum is refused anywhere but last.
    let small = start("small.txt").await;
    let a: Value = part(&small, 1, "abc").await.unwrap().json().await.unwrap();
    let b: Value = part(&small, 2, "defgh")
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let parts =
        json!([{"part_number": 1, "etag": a["etag"]}, {"part_number": 2, "etag": b["etag"]}]);
    assert_eq!(
        code(complete(&small, parts).await.unwrap()).await.1,
        "invalid_part"
    );

    // Abort releases the parts; so does expiry.
    let url = server.url(&format!("/buckets/files/uploads/{small}"));
    let aborted = server
        .http
        .delete(url)
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(aborted.status(), StatusCode::NO_CONTENT);
    assert_eq!(server.gauges(&project).await, (1, 13));
    let stale = start("stale.txt").await;
    part(&stale, 1, "zzzz").await.unwrap();
    assert_eq!(server.gauges(&project).await, (1, 17));
    sqlx::query("UPDATE uploads SET expires_at = 0 WHERE id = $1")
        .bind(&stale)
        .execute(server.shared.store().pool())
        .await
        .unwrap();
    assert_eq!(
        plinth_storage::multipart::sweep_once(&server.storage)
            .await
            .unwrap(),
        1
    );
    assert_eq!(server.gauges(&project).await, (1, 13));
    assert_eq!(server.blob_files().await, 1);
    assert_eq!(
        code(part(&stale, 2, "x").await.unwrap()).await.1,
        "upload_not_found"
    );
}

async fn orphaned_blob_files_are_collected_at_start(backend: TestBackend) {
    let server = Server::start(backend).await;
    let (_, key) = server.tenant("alpha", Quotas::default()).await;
    server.create_bucket(&key, json!({"name": "files"})).await;
    assert_eq!(
        server
            .put(&key, "files", "kept", b"kept".to_vec())
            .await
            .status(),
        200
    );
    // What a crash can leave: a half-written temporary file, and a synced blob whose row
    // never committed.
    std::fs::write(server.blob_dir.join("tmp").join("blob_dead.part"), b"half").unwrap();
    std::fs::create_dir_all(server.blob_dir.join("ff")).unwrap();
    std::fs::write(
        server
            .blob_dir
            .join("ff")
            .join("blob_00000000000000000000000000ff"),
        b"x",
    )
    .unwrap();
    assert_eq!(server.blob_files().await, 3);

    plinth_storage::Storage::open(server.shared.clone())
        .await
        .unwrap();
    assert_eq!(server.blob_files().await, 1);
    assert_eq!(
        server
            .get(&key, "files", "kept")
            .await
            .text()
            .await
            .unwrap(),
        "kept"
    );
}

backend_tests!(
    orphaned_blob_files_are_collected_at_start,
    multipart_uploads_complete_resume_abort_and_expire,
    copies_are_server_side_and_stay_in_the_project,
    signed_urls_work_without_credentials_and_only_as_signed,
    public_buckets_serve_reads_without_credentials,
    conditional_requests_behave_as_in_s3,
    listings_page_by_key_with_common_prefixes,
    buckets_are_managed_per_project,
    objects_round_trip_with_headers_ranges_and_quotas,
    bad_input_is_refused_and_stores_nothing,
    concurrent_uploads_never_overshoot_the_quota,
    other_projects_see_nothing,
    scopes_and_patterns_limit_storage,
);

// The same scenarios on the S3 blob store; the orphan test above is about files.
s3_tests!(
    multipart_uploads_complete_resume_abort_and_expire,
    copies_are_server_side_and_stay_in_the_project,
    signed_urls_work_without_credentials_and_only_as_signed,
    public_buckets_serve_reads_without_credentials,
    conditional_requests_behave_as_in_s3,
    listings_page_by_key_with_common_prefixes,
    buckets_are_managed_per_project,
    objects_round_trip_with_headers_ranges_and_quotas,
    bad_input_is_refused_and_stores_nothing,
    concurrent_uploads_never_overshoot_the_quota,
    other_projects_see_nothing,
    scopes_and_patterns_limit_storage,
);
