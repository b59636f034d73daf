//! Bucket notifications: object events of a bucket published to topics, through restarts.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::common::*;

async fn put_object(server: &Server, key: &str, path: &str, body: &'static str) {
    let response = server
        .http
        .put(format!("{}/storage/v1/buckets/{path}", server.url))
        .bearer_auth(key)
        .body(body)
        .send()
        .await
        .unwrap();
    assert!(response.status().is_success(), "{}", response.status());
}

async fn delete_object(server: &Server, key: &str, path: &str) {
    let response = server
        .http
        .delete(format!("{}/storage/v1/buckets/{path}", server.url))
        .bearer_auth(key)
        .send()
        .await
        .unwrap();
    assert!(response.status().is_success(), "{}", response.status());
}

/// The events in a topic's partition 0, waiting until there are `n` of them.
async fn events(server: &Server, key: &str, topic: &str, n: usize) -> Vec<Value> {
    let until = Instant::now() + Duration::from_secs(15);
    loop {
        let read = server
            .ok(
                key,
                Method::GET,
                &format!("/topics/{topic}/partitions/0/messages?limit=1000"),
                None,
            )
            .await;
        let messages = read["messages"].as_array().unwrap().clone();
        if messages.len() >= n || Instant::now() > until {
            return messages;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn summary(messages: &[Value]) -> Vec<(String, String)> {
    messages
        .iter()
        .map(|m| {
            let event = &m["value"];
            assert_eq!(m["message_id"], event["id"], "{m}");
            assert_eq!(m["headers"]["plinth-event-type"], event["type"], "{m}");
            (
                event["type"].as_str().unwrap().to_owned(),
                event["key"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

/// Runs `work` against a server of the storage service alone on the backend: the object
/// events it records have no relay until messaging starts again.
async fn with_storage_alone<F, Fut>(backend: TestBackend, work: F) -> TestBackend
where
    F: FnOnce(String, reqwest::Client) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let shared = Shared::open(backend.config.clone(), &backend.admin_token)
        .await
        .unwrap();
    let storage = plinth_storage::Storage::open(shared.clone()).await.unwrap();
    let (routes, api) = plinth_storage::router(storage).split_for_parts();
    let app = plinth_shared::http::app(routes, api, &shared);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(plinth_shared::http::serve(
        listener,
        app,
        shared,
        async move {
            let _ = stopped.await;
        },
    ));
    work(url, reqwest::Client::new()).await;
    let _ = stop.send(());
    serving.await.unwrap().unwrap();
    backend
}

fn pair(kind: &str, key: &str) -> (String, String) {
    (kind.to_owned(), key.to_owned())
}

async fn object_events_reach_their_topics_through_restarts(backend: TestBackend) {
    let server = Server::start(backend).await;
    let scopes = vec![
        Scope::StorageRead,
        Scope::StorageWrite,
        Scope::MessagingPublish,
        Scope::MessagingConsume,
    ];
    let (_, key) = server.tenant("notify", Quotas::default(), scopes).await;
    server
        .ok(
            &key,
            Method::POST,
            "/storage/v1/buckets",
            Some(json!({"name": "photos"})),
        )
        .await;
    for topic in ["all-events", "new-images", "flips"] {
        server
            .ok(&key, Method::POST, "/topics", Some(json!({"name": topic})))
            .await;
    }
    let all = server
        .ok(
            &key,
            Method::POST,
            "/bucket-notifications",
            Some(json!({"bucket": "photos", "topic": "all-events"})),
        )
        .await;
    assert_eq!(all["events"], json!(["object.created", "object.deleted"]));
    server
        .ok(
            &key,
            Method::POST,
            "/bucket-notifications",
            Some(json!({
                "bucket": "photos", "topic": "new-images",
                "events": ["object.created"], "prefix": "img/",
            })),
        )
        .await;

    server
        .ok(
            &key,
            Method::POST,
            "/bucket-notifications",
            Some(json!({"bucket": "photos", "topic": "flips", "prefix": "flip/"})),
        )
        .await;
    // One object's changes, faster than the clock's millisecond, arrive in their order.
    for _ in 0..5 {
        put_object(&server, &key, "photos/objects/flip/x", "1").await;
        delete_object(&server, &key, "photos/objects/flip/x").await;
    }
    let flips = events(&server, &key, "flips", 10).await;
    let kinds: Vec<String> = summary(&flips).into_iter().map(|(kind, _)| kind).collect();
    let expected: Vec<&str> = (0..5)
        .flat_map(|_| ["object.created", "object.deleted"])
        .collect();
    assert_eq!(kinds, expected);

    put_object(&server, &key, "photos/objects/img/a.png", "png").await;
    put_object(&server, &key, "photos/objects/doc/b.txt", "text").await;
    delete_object(&server, &key, "photos/objects/img/a.png").await;
    let got = events(&server, &key, "all-events", 13).await;
    let got = got[10..].to_vec();
    assert_eq!(
        summary(&got),
        [
            pair("object.created", "img/a.png"),
            pair("object.created", "doc/b.txt"),
            pair("object.deleted", "img/a.png"),
        ]
    );
    assert_eq!(got[0]["value"]["bucket"], "photos");
    assert_eq!(got[0]["value"]["size"], 3);
    assert!(got[0]["value"]["etag"].is_string(), "{}", got[0]);
    assert_eq!(got[0]["key"], "photos/img/a.png");
    let images = events(&server, &key, "new-images", 1).await;
    assert_eq!(summary(&images), [pair("object.created", "img/a.png")]);

    // Events recorded while no messaging service runs wait in the outbox; restarts while
    // objects are written lose none and store none twice.
    let mut server = server;
    for round in 0..3 {
        let backend = server.stop().await;
        let writer = key.clone();
        let backend = with_storage_alone(backend, |url, http| async move {
            for n in 0..3 {
                let path = format!("{url}/storage/v1/buckets/photos/objects/batch/{round}-{n}");
                let put = http
                    .put(path)
                    .bearer_auth(&writer)
                    .body("x")
                    .send()
                    .await
                    .unwrap();
                assert!(put.status().is_success(), "{}", put.status());
            }
        })
        .await;
        server = Server::start(backend).await;
        for n in 3..5 {
            let path = format!("photos/objects/batch/{round}-{n}");
            put_object(&server, &key, &path, "x").await;
        }
    }
    let got = events(&server, &key, "all-events", 28).await;
    let got = got[10..].to_vec();
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    for message in &got {
        *seen
            .entry(message["value"]["id"].as_str().unwrap().to_owned())
            .or_default() += 1;
    }
    assert_eq!(got.len(), 18, "{:?}", summary(&got));
    assert!(seen.values().all(|n| *n == 1), "{seen:?}");
    let batch: Vec<_> = summary(&got[3..]).into_iter().map(|(_, key)| key).collect();
    let expected: Vec<String> = (0..3)
        .flat_map(|round| (0..5).map(move |n| format!("batch/{round}-{n}")))
        .collect();
    assert_eq!(batch, expected, "in the order they were written");
    assert_eq!(events(&server, &key, "new-images", 1).await.len(), 1);
}

async fn notifications_are_private_and_checked(backend: TestBackend) {
    let server = Server::start(backend).await;
    let scopes = vec![Scope::StorageRead, Scope::MessagingPublish];
    let (_, key) = server.tenant("owner", Quotas::default(), scopes).await;
    server
        .ok(
            &key,
            Method::POST,
            "/topics",
            Some(json!({"name": "events"})),
        )
        .await;
    let body = |bucket: &str, topic: &str| json!({"bucket": bucket, "topic": topic});
    let created = server
        .ok(
            &key,
            Method::POST,
            "/bucket-notifications",
            Some(body("files", "events")),
        )
        .await;
    let id = created["id"].as_str().unwrap().to_owned();
    for (request, code) in [
        (body("Files!", "events"), "invalid_bucket_name"),
        (body("files", "nope"), "topic_not_found"),
        (body("files", "events"), "notification_exists"),
        (
            json!({"bucket": "files", "topic": "events", "events": []}),
            "invalid_field",
        ),
        (
            json!({"bucket": "files", "topic": "events", "events": ["object.moved"]}),
            "invalid_field",
        ),
    ] {
        let (_, got) = server
            .refused(
                &key,
                Method::POST,
                "/bucket-notifications",
                Some(request.clone()),
            )
            .await;
        assert_eq!(got, code, "{request}");
    }

    // Routing a bucket's events needs the right to read the bucket.
    let (_, publisher) = server
        .tenant(
            "publisher-only",
            Quotas::default(),
            vec![Scope::MessagingPublish],
        )
        .await;
    server
        .ok(
            &publisher,
            Method::POST,
            "/topics",
            Some(json!({"name": "events"})),
        )
        .await;
    let (status, _) = server
        .refused(
            &publisher,
            Method::POST,
            "/bucket-notifications",
            Some(body("files", "events")),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    // Another project sees nothing of them.
    let other = server.publisher("other").await;
    let listed = server
        .ok(&other, Method::GET, "/bucket-notifications", None)
        .await;
    assert_eq!(listed, json!([]));
    let refused = server
        .refused(
            &other,
            Method::DELETE,
            &format!("/bucket-notifications/{id}"),
            None,
        )
        .await;
    assert_eq!(
        refused,
        (StatusCode::NOT_FOUND, "notification_not_found".into())
    );
    let listed = server
        .ok(&key, Method::GET, "/bucket-notifications", None)
        .await;
    assert_eq!(listed.as_array().unwrap().len(), 1);
    server
        .ok(
            &key,
            Method::DELETE,
            &format!("/bucket-notifications/{id}"),
            None,
        )
        .await;
    let listed = server
        .ok(&key, Method::GET, "/bucket-notifications", None)
        .await;
    assert_eq!(listed, json!([]));
}

plinth_shared::log_backend_tests!(
    object_events_reach_their_topics_through_restarts,
    notifications_are_private_and_checked,
);
