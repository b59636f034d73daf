//! Producer deduplication: a `message_id` seen on a topic within the window is stored once.

use std::time::Duration;

use crate::common::*;

async fn publish(server: &Server, key: &str, topic: &str, messages: Value) -> Vec<Value> {
    let answer = server
        .ok(
            key,
            Method::POST,
            &format!("/topics/{topic}/messages"),
            Some(json!({ "messages": messages })),
        )
        .await;
    answer["messages"].as_array().unwrap().clone()
}

async fn stored(server: &Server, key: &str, topic: &str) -> Vec<Value> {
    let read = server
        .ok(
            key,
            Method::GET,
            &format!("/topics/{topic}/partitions/0/messages"),
            None,
        )
        .await;
    read["messages"].as_array().unwrap().clone()
}

async fn a_message_id_is_stored_once_within_the_window(backend: TestBackend) {
    let server = Server::start(backend).await;
    let key = server.publisher("dedup").await;
    for topic in ["orders", "refunds"] {
        server
            .ok(&key, Method::POST, "/topics", Some(json!({"name": topic})))
            .await;
    }
    let first = publish(
        &server,
        &key,
        "orders",
        json!([{"value": 1, "message_id": "a"}]),
    )
    .await;
    assert_eq!(first, [json!({"partition": 0, "offset": 0})]);
    let retry = publish(
        &server,
        &key,
        "orders",
        json!([{"value": 1, "message_id": "a"}]),
    )
    .await;
    assert_eq!(
        retry,
        [json!({"partition": 0, "offset": 0, "duplicate": true})]
    );

    // In one batch: a new id twice, a seen id, and a message without id.
    let batch = publish(
        &server,
        &key,
        "orders",
        json!([
            {"value": 2, "message_id": "b"},
            {"value": 2, "message_id": "b"},
            {"value": 1, "message_id": "a"},
            {"value": 3},
        ]),
    )
    .await;
    assert_eq!(
        batch,
        [
            json!({"partition": 0, "offset": 1}),
            json!({"partition": 0, "offset": 1, "duplicate": true}),
            json!({"partition": 0, "offset": 0, "duplicate": true}),
            json!({"partition": 0, "offset": 2}),
        ]
    );
    let values: Vec<Value> = stored(&server, &key, "orders")
        .await
        .iter()
        .map(|m| m["value"].clone())
        .collect();
    assert_eq!(values, [json!(1), json!(2), json!(3)]);

    // Ids are per topic, and per project.
    let other_topic = publish(
        &server,
        &key,
        "refunds",
        json!([{"value": 1, "message_id": "a"}]),
    )
    .await;
    assert_eq!(other_topic, [json!({"partition": 0, "offset": 0})]);
    let other = server.publisher("other").await;
    server
        .ok(
            &other,
            Method::POST,
            "/topics",
            Some(json!({"name": "orders"})),
        )
        .await;
    let other_project = publish(
        &server,
        &other,
        "orders",
        json!([{"value": 9, "message_id": "a"}]),
    )
    .await;
    assert_eq!(other_project, [json!({"partition": 0, "offset": 0})]);
}

async fn concurrent_retries_of_one_message_store_it_once(backend: TestBackend) {
    let server = Server::start(backend).await;
    let key = server.publisher("race").await;
    server
        .ok(
            &key,
            Method::POST,
            "/topics",
            Some(json!({"name": "jobs", "partitions": 4})),
        )
        .await;
    let retries = (0..16).map(|_| {
        publish(
            &server,
            &key,
            "jobs",
            json!([{"value": "job", "message_id": "job-1"}]),
        )
    });
    let answers = futures::future::join_all(retries).await;
    let places: Vec<(Value, Value)> = answers
        .iter()
        .map(|a| (a[0]["partition"].clone(), a[0]["offset"].clone()))
        .collect();
    assert!(places.iter().all(|p| *p == places[0]), "{answers:?}");
    let fresh = answers
        .iter()
        .filter(|a| a[0].get("duplicate").is_none())
        .count();
    assert_eq!(fresh, 1, "{answers:?}");
    let topic = server.ok(&key, Method::GET, "/topics/jobs", None).await;
    let total: u64 = topic["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["end_offset"].as_u64().unwrap())
        .sum();
    assert_eq!(total, 1, "{topic}");
}

async fn an_id_is_forgotten_after_the_window(mut backend: TestBackend) {
    backend.config.messaging_dedup_window = Duration::from_secs(1);
    let server = Server::start(backend).await;
    let key = server.publisher("window").await;
    server
        .ok(
            &key,
            Method::POST,
            "/topics",
            Some(json!({"name": "ticks"})),
        )
        .await;
    let message = json!([{"value": 1, "message_id": "t"}]);
    publish(&server, &key, "ticks", message.clone()).await;
    let again = publish(&server, &key, "ticks", message.clone()).await;
    assert_eq!(again[0]["duplicate"], true);
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let later = publish(&server, &key, "ticks", message).await;
    assert_eq!(later, [json!({"partition": 0, "offset": 1})]);
}

plinth_shared::log_backend_tests!(
    a_message_id_is_stored_once_within_the_window,
    concurrent_retries_of_one_message_store_it_once,
    an_id_is_forgotten_after_the_window,
);
