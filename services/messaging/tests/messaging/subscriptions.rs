//! Subscriptions: pull, ack, nack, lease expiry, delays, dead letters, restarts.

use std::time::{Duration, Instant};

use crate::common::*;

/// A project key, a topic and a subscription on it with the given settings.
async fn subscribed(server: &Server, tenant: &str, topic: &str, settings: Value) -> String {
    let key = server.publisher(tenant).await;
    server
        .ok(&key, Method::POST, "/topics", Some(json!({"name": topic})))
        .await;
    let mut body = json!({"name": format!("{topic}-sub"), "topic": topic, "start": "earliest"});
    body.as_object_mut()
        .unwrap()
        .extend(settings.as_object().unwrap().clone());
    server
        .ok(&key, Method::POST, "/subscriptions", Some(body))
        .await;
    key
}

async fn publish(server: &Server, key: &str, topic: &str, messages: Value) {
    server
        .ok(
            key,
            Method::POST,
            &format!("/topics/{topic}/messages"),
            Some(json!({ "messages": messages })),
        )
        .await;
}

async fn pull(server: &Server, key: &str, sub: &str, max: usize, wait: u64) -> Vec<Value> {
    let body = json!({"max_messages": max, "wait_seconds": wait});
    let pulled = server
        .ok(
            key,
            Method::POST,
            &format!("/subscriptions/{sub}/pull"),
            Some(body),
        )
        .await;
    pulled["messages"].as_array().unwrap().clone()
}

async fn settle(
    server: &Server,
    key: &str,
    sub: &str,
    verb: &str,
    leases: &[&Value],
    seconds: Option<u64>,
) -> Value {
    let mut body = json!({ "lease_ids": leases });
    if let Some(seconds) = seconds {
        body["seconds"] = json!(seconds);
    }
    server
        .ok(
            key,
            Method::POST,
            &format!("/subscriptions/{sub}/{verb}"),
            Some(body),
        )
        .await
}

fn values(deliveries: &[Value]) -> Vec<Value> {
    deliveries
        .iter()
        .map(|d| d["message"]["value"].clone())
        .collect()
}

async fn an_unacked_delivery_comes_back_after_its_lease(backend: TestBackend) {
    let server = Server::start(backend).await;
    let key = subscribed(&server, "lease", "jobs", json!({"ack_deadline_seconds": 1})).await;
    publish(
        &server,
        &key,
        "jobs",
        json!([{"value": 1}, {"value": 2}, {"value": 3}]),
    )
    .await;

    let first = pull(&server, &key, "jobs-sub", 10, 0).await;
    assert_eq!(values(&first), [json!(1), json!(2), json!(3)]);
    assert!(first.iter().all(|d| d["attempt"] == 1));
    settle(
        &server,
        &key,
        "jobs-sub",
        "ack",
        &[&first[0]["lease_id"]],
        None,
    )
    .await;
    // Leased messages are not handed to a second puller.
    assert!(pull(&server, &key, "jobs-sub", 10, 0).await.is_empty());

    tokio::time::sleep(Duration::from_millis(1300)).await;
    let again = pull(&server, &key, "jobs-sub", 10, 0).await;
    assert_eq!(values(&again), [json!(2), json!(3)]);
    assert!(again.iter().all(|d| d["attempt"] == 2));
    // The first lease of message 2 no longer holds; its new one does.
    let answer = settle(
        &server,
        &key,
        "jobs-sub",
        "ack",
        &[
            &first[1]["lease_id"],
            &again[0]["lease_id"],
            &again[1]["lease_id"],
        ],
        None,
    )
    .await;
    assert_eq!(answer["expired"], json!([first[1]["lease_id"]]));
    tokio::time::sleep(Duration::from_millis(1300)).await;
    assert!(pull(&server, &key, "jobs-sub", 10, 0).await.is_empty());
}

async fn a_nack_redelivers_after_its_delay_and_extend_keeps_a_lease(backend: TestBackend) {
    let server = Server::start(backend).await;
    let key = subscribed(&server, "nack", "work", json!({"ack_deadline_seconds": 1})).await;
    publish(
        &server,
        &key,
        "work",
        json!([{"value": "a"}, {"value": "b"}]),
    )
    .await;
    let got = pull(&server, &key, "work-sub", 10, 0).await;
    assert_eq!(got.len(), 2);

    settle(
        &server,
        &key,
        "work-sub",
        "nack",
        &[&got[0]["lease_id"]],
        Some(1),
    )
    .await;
    settle(
        &server,
        &key,
        "work-sub",
        "extend",
        &[&got[1]["lease_id"]],
        Some(5),
    )
    .await;
    assert!(
        pull(&server, &key, "work-sub", 10, 0).await.is_empty(),
        "a nack's delay or an extended lease was ignored"
    );

    tokio::time::sleep(Duration::from_millis(1300)).await;
    let retried = pull(&server, &key, "work-sub", 10, 0).await;
    // Only the nacked one: the other's lease now runs 5 s.
    assert_eq!(values(&retried), [json!("a")]);
    assert_eq!(retried[0]["attempt"], 2);
    // A nack without a delay waits for the backoff (1 s minimum by default).
    settle(
        &server,
        &key,
        "work-sub",
        "nack",
        &[&retried[0]["lease_id"]],
        None,
    )
    .await;
    assert!(pull(&server, &key, "work-sub", 10, 0).await.is_empty());
    let later = pull(&server, &key, "work-sub", 10, 3).await;
    assert_eq!(values(&later), [json!("a")]);
}

async fn a_delayed_message_is_not_delivered_before_its_time(backend: TestBackend) {
    let server = Server::start(backend).await;
    let key = subscribed(&server, "delay", "later", json!({})).await;
    // The first pull may take a while on Kafka (joining the subscription's consumer group),
    // and must not be counted against the delay.
    assert!(pull(&server, &key, "later-sub", 10, 0).await.is_empty());
    let published = Instant::now();
    publish(
        &server,
        &key,
        "later",
        json!([{"value": "later", "delay_seconds": 2}, {"value": "now"}]),
    )
    .await;

    let now = pull(&server, &key, "later-sub", 10, 0).await;
    assert_eq!(values(&now), [json!("now")]);
    settle(
        &server,
        &key,
        "later-sub",
        "ack",
        &[&now[0]["lease_id"]],
        None,
    )
    .await;
    let mut delayed = Vec::new();
    while delayed.is_empty() && published.elapsed() < Duration::from_secs(10) {
        delayed = pull(&server, &key, "later-sub", 10, 1).await;
    }
    assert_eq!(values(&delayed), [json!("later")]);
    assert!(
        published.elapsed() >= Duration::from_secs(2),
        "delivered after {:?}",
        published.elapsed()
    );
}

async fn a_message_past_its_last_attempt_goes_to_the_dead_letter_topic(backend: TestBackend) {
    let server = Server::start(backend).await;
    let key = server.publisher("dlq").await;
    for topic in ["orders", "orders-dlq"] {
        server
            .ok(&key, Method::POST, "/topics", Some(json!({"name": topic})))
            .await;
    }
    server
        .ok(
            &key,
            Method::POST,
            "/subscriptions",
            Some(json!({
                "name": "billing", "topic": "orders", "start": "earliest",
                "max_delivery_attempts": 2, "dead_letter_topic": "orders-dlq",
            })),
        )
        .await;
    server
        .ok(
            &key,
            Method::POST,
            "/subscriptions",
            Some(json!({"name": "dead", "topic": "orders-dlq", "start": "earliest"})),
        )
        .await;
    publish(
        &server,
        &key,
        "orders",
        json!([{"value": {"id": 9}, "key": "c-1", "headers": {"trace": "t-1"}}]),
    )
    .await;

    for attempt in 1..=2 {
        let got = pull(&server, &key, "billing", 10, 0).await;
        assert_eq!(got.len(), 1);
        assert_eq!(got[0]["attempt"], attempt);
        settle(
            &server,
            &key,
            "billing",
            "nack",
            &[&got[0]["lease_id"]],
            Some(0),
        )
        .await;
    }
    assert!(
        pull(&server, &key, "billing", 10, 0).await.is_empty(),
        "a third attempt was delivered"
    );

    let dead = pull(&server, &key, "dead", 10, 0).await;
    assert_eq!(dead.len(), 1);
    let message = &dead[0]["message"];
    assert_eq!(message["value"], json!({"id": 9}));
    assert_eq!(message["key"], "c-1");
    assert_eq!(message["headers"]["trace"], "t-1");
    assert_eq!(message["headers"]["plinth-dead-letter-topic"], "orders");
    assert_eq!(
        message["headers"]["plinth-dead-letter-subscription"],
        "billing"
    );
    assert_eq!(message["headers"]["plinth-dead-letter-attempts"], "2");
    assert_eq!(message["headers"]["plinth-dead-letter-offset"], "0");
}

async fn dead_letters_are_kept_listed_and_redriven(backend: TestBackend) {
    let server = Server::start(backend).await;
    let key = subscribed(
        &server,
        "redrive",
        "jobs",
        json!({"max_delivery_attempts": 1, "ack_deadline_seconds": 30}),
    )
    .await;
    publish(
        &server,
        &key,
        "jobs",
        json!([{"value": 0}, {"value": 1}, {"value": 2}]),
    )
    .await;
    let got = pull(&server, &key, "jobs-sub", 10, 0).await;
    assert_eq!(values(&got), [json!(0), json!(1), json!(2)]);
    settle(
        &server,
        &key,
        "jobs-sub",
        "ack",
        &[&got[1]["lease_id"]],
        None,
    )
    .await;
    let failed = [&got[0]["lease_id"], &got[2]["lease_id"]];
    settle(&server, &key, "jobs-sub", "nack", &failed, Some(0)).await;
    assert!(pull(&server, &key, "jobs-sub", 10, 0).await.is_empty());

    // Listed page by page, and kept across a restart.
    let server = server.restart().await;
    let path = "/subscriptions/jobs-sub/dead-letters";
    let first = server
        .ok(&key, Method::GET, &format!("{path}?limit=1"), None)
        .await;
    assert_eq!(first["dead_letters"].as_array().unwrap().len(), 1);
    assert_eq!(first["dead_letters"][0]["message"]["value"], 0);
    assert_eq!(first["dead_letters"][0]["attempts"], 1);
    let next = first["next"].as_str().unwrap();
    let second = server
        .ok(
            &key,
            Method::GET,
            &format!("{path}?limit=1&after={next}"),
            None,
        )
        .await;
    assert_eq!(second["dead_letters"][0]["message"]["value"], 2);
    assert!(second["next"].is_null(), "{second}");
    let refused = server
        .refused(&key, Method::GET, &format!("{path}?after=x"), None)
        .await;
    assert_eq!(refused.1, "invalid_parameter");

    // Redrive one: delivered again from its first attempt; the other stays dead.
    let redrive =
        json!({"messages": [{"partition": 0, "offset": 2}, {"partition": 0, "offset": 1}]});
    let redriven = server
        .ok(
            &key,
            Method::POST,
            "/subscriptions/jobs-sub/redrive",
            Some(redrive),
        )
        .await;
    assert_eq!(
        redriven["redriven"], 1,
        "offset 1 was acknowledged, not dead"
    );
    let again = pull(&server, &key, "jobs-sub", 10, 0).await;
    assert_eq!(values(&again), [json!(2)]);
    assert_eq!(again[0]["attempt"], 1);
    let acked = settle(
        &server,
        &key,
        "jobs-sub",
        "ack",
        // The lease of its first life names the same message and attempt: it is stale.
        &[&got[2]["lease_id"], &again[0]["lease_id"]],
        None,
    )
    .await;
    assert_eq!(acked["expired"], json!([got[2]["lease_id"]]));
    let left = server.ok(&key, Method::GET, path, None).await;
    let left = left["dead_letters"].as_array().unwrap().clone();
    assert_eq!(left.len(), 1);
    assert_eq!(left[0]["message"]["offset"], 0);

    // The subscription moved on: a new message is the only one delivered.
    publish(&server, &key, "jobs", json!([{"value": 3}])).await;
    let fresh = pull(&server, &key, "jobs-sub", 10, 0).await;
    assert_eq!(values(&fresh), [json!(3)]);
    let refused = server
        .refused(
            &key,
            Method::POST,
            "/subscriptions/jobs-sub/redrive",
            Some(json!({"messages": []})),
        )
        .await;
    assert_eq!(refused.1, "invalid_field");
}

async fn start_positions_and_long_polls(backend: TestBackend) {
    let server = Server::start(backend).await;
    let key = server.publisher("start").await;
    server
        .ok(
            &key,
            Method::POST,
            "/topics",
            Some(json!({"name": "feed", "partitions": 2})),
        )
        .await;
    publish(
        &server,
        &key,
        "feed",
        json!([{"value": "old", "key": "a"}, {"value": "old", "key": "b"}]),
    )
    .await;
    for (name, start) in [("from-start", "earliest"), ("from-now", "latest")] {
        server
            .ok(
                &key,
                Method::POST,
                "/subscriptions",
                Some(json!({"name": name, "topic": "feed", "start": start})),
            )
            .await;
    }
    assert_eq!(pull(&server, &key, "from-start", 10, 0).await.len(), 2);
    assert!(pull(&server, &key, "from-now", 10, 0).await.is_empty());

    // A waiting pull is answered as soon as a message arrives.
    let publisher = (server.url.clone(), key.clone());
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        reqwest::Client::new()
            .post(format!("{}/messaging/v1/topics/feed/messages", publisher.0))
            .bearer_auth(publisher.1)
            .json(&json!({"messages": [{"value": "new"}]}))
            .send()
            .await
            .unwrap();
    });
    let asked = Instant::now();
    let got = pull(&server, &key, "from-now", 10, 20).await;
    assert_eq!(values(&got), [json!("new")]);
    assert!(
        asked.elapsed() < Duration::from_secs(10),
        "the long poll slept on: {:?}",
        asked.elapsed()
    );
}

async fn delivery_state_survives_a_restart(backend: TestBackend) {
    let server = Server::start(backend).await;
    let key = subscribed(
        &server,
        "restart",
        "tasks",
        json!({"ack_deadline_seconds": 1}),
    )
    .await;
    let batch: Vec<Value> = (0..5).map(|n| json!({ "value": n })).collect();
    publish(&server, &key, "tasks", json!(batch)).await;
    let got = pull(&server, &key, "tasks-sub", 10, 0).await;
    assert_eq!(got.len(), 5);
    settle(
        &server,
        &key,
        "tasks-sub",
        "ack",
        &[&got[0]["lease_id"], &got[3]["lease_id"]],
        None,
    )
    .await;

    let again = server.restart().await;
    tokio::time::sleep(Duration::from_millis(1300)).await;
    let redelivered = pull(&again, &key, "tasks-sub", 10, 0).await;
    assert_eq!(values(&redelivered), [json!(1), json!(2), json!(4)]);
    assert!(redelivered.iter().all(|d| d["attempt"] == 2));
}

async fn subscriptions_are_private_and_bad_requests_are_refused(backend: TestBackend) {
    let server = Server::start(backend).await;
    let owner = subscribed(&server, "owner", "mine", json!({})).await;
    let other = server.publisher("other").await;
    publish(&server, &owner, "mine", json!([{"value": 1}])).await;
    let lease = json!({"lease_ids": ["0.0.1.abcd"], "seconds": 5});
    for (method, path, body) in [
        (Method::GET, "/subscriptions/mine-sub", None),
        (Method::DELETE, "/subscriptions/mine-sub", None),
        (
            Method::POST,
            "/subscriptions/mine-sub/pull",
            Some(json!({})),
        ),
        (
            Method::POST,
            "/subscriptions/mine-sub/ack",
            Some(lease.clone()),
        ),
        (
            Method::POST,
            "/subscriptions/mine-sub/nack",
            Some(lease.clone()),
        ),
        (
            Method::POST,
            "/subscriptions/mine-sub/extend",
            Some(lease.clone()),
        ),
        (Method::GET, "/subscriptions/mine-sub/dead-letters", None),
        (
            Method::POST,
            "/subscriptions/mine-sub/redrive",
            Some(json!({})),
        ),
        (Method::GET, "/subscriptions/mine-sub/push-attempts", None),
    ] {
        let (status, code) = server.refused(&other, method.clone(), path, body).await;
        assert_eq!(
            (status, code.as_str()),
            (StatusCode::NOT_FOUND, "subscription_not_found"),
            "{method} {path}"
        );
    }
    let (status, code) = server
        .refused(
            &other,
            Method::POST,
            "/subscriptions",
            Some(json!({"name": "spy", "topic": "mine"})),
        )
        .await;
    assert_eq!(
        (status, code.as_str()),
        (StatusCode::NOT_FOUND, "topic_not_found")
    );
    assert_eq!(
        server.ok(&other, Method::GET, "/subscriptions", None).await,
        json!([])
    );

    for (path, body, code) in [
        (
            "/subscriptions",
            json!({"name": "bad name", "topic": "mine"}),
            "invalid_subscription_name",
        ),
        (
            "/subscriptions",
            json!({"name": "mine-sub", "topic": "mine"}),
            "subscription_name_taken",
        ),
        (
            "/subscriptions",
            json!({"name": "x", "topic": "mine", "ack_deadline_seconds": 0}),
            "invalid_field",
        ),
        (
            "/subscriptions",
            json!({"name": "x", "topic": "mine", "dead_letter_topic": "nope"}),
            "topic_not_found",
        ),
        (
            "/subscriptions",
            json!({"name": "x", "topic": "mine", "dead_letter_topic": "mine"}),
            "invalid_field",
        ),
        (
            "/subscriptions",
            json!({"name": "x", "topic": "mine", "start": "latest", "start_time": "2020-01-01T00:00:00Z"}),
            "invalid_field",
        ),
        (
            "/subscriptions/mine-sub/pull",
            json!({"max_messages": 0}),
            "invalid_field",
        ),
        (
            "/subscriptions/mine-sub/pull",
            json!({"wait_seconds": 31}),
            "invalid_field",
        ),
        (
            "/subscriptions/mine-sub/ack",
            json!({"lease_ids": []}),
            "invalid_field",
        ),
        (
            "/subscriptions/mine-sub/extend",
            json!({"lease_ids": ["0.0.1.x"]}),
            "invalid_field",
        ),
    ] {
        let (_, got) = server
            .refused(&owner, Method::POST, path, Some(body.clone()))
            .await;
        assert_eq!(got, code, "{path} {body}");
    }
    // A refused request left the message where it was.
    assert_eq!(pull(&server, &owner, "mine-sub", 10, 0).await.len(), 1);
    let listed = server.ok(&owner, Method::GET, "/subscriptions", None).await;
    assert_eq!(listed.as_array().unwrap().len(), 1);
}

async fn seeking_replays_or_skips(backend: TestBackend) {
    let server = Server::start(backend).await;
    let key = subscribed(&server, "seek", "log", json!({})).await;
    let batch: Vec<Value> = (0..6).map(|n| json!({ "value": n })).collect();
    publish(&server, &key, "log", json!(batch)).await;
    let got = pull(&server, &key, "log-sub", 10, 0).await;
    let leases: Vec<&Value> = got.iter().map(|d| &d["lease_id"]).collect();
    settle(&server, &key, "log-sub", "ack", &leases, None).await;
    assert!(pull(&server, &key, "log-sub", 10, 0).await.is_empty());

    // Back to offset 2: 2..6 are delivered again, as first deliveries.
    let (status, _) = server
        .call(
            &key,
            Method::POST,
            "/subscriptions/log-sub/seek",
            Some(json!({"partition": 0, "offset": 2})),
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let replayed = pull(&server, &key, "log-sub", 10, 0).await;
    assert_eq!(values(&replayed), [json!(2), json!(3), json!(4), json!(5)]);
    assert!(replayed.iter().all(|d| d["attempt"] == 1));
    // Their old leases died with the seek.
    let stale = settle(&server, &key, "log-sub", "ack", &leases[2..3], None).await;
    assert_eq!(stale["expired"], json!([leases[2]]));

    // To a time after everything: nothing is left to deliver.
    let (status, _) = server
        .call(
            &key,
            Method::POST,
            "/subscriptions/log-sub/seek",
            Some(json!({"time": "2999-01-01T00:00:00Z"})),
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(pull(&server, &key, "log-sub", 10, 0).await.is_empty());

    for (body, code) in [
        (json!({}), "invalid_field"),
        (json!({"partition": 0}), "invalid_field"),
        (json!({"partition": 0, "offset": 7}), "offset_out_of_range"),
        (json!({"partition": 3, "offset": 0}), "partition_not_found"),
        (
            json!({"time": "2020-01-01T00:00:00Z", "partition": 0, "offset": 0}),
            "invalid_field",
        ),
    ] {
        let (_, got) = server
            .refused(
                &key,
                Method::POST,
                "/subscriptions/log-sub/seek",
                Some(body.clone()),
            )
            .await;
        assert_eq!(got, code, "{body}");
    }
}

plinth_shared::log_backend_tests!(
    seeking_replays_or_skips,
    an_unacked_delivery_comes_back_after_its_lease,
    a_nack_redelivers_after_its_delay_and_extend_keeps_a_lease,
    a_delayed_message_is_not_delivered_before_its_time,
    a_message_past_its_last_attempt_goes_to_the_dead_letter_topic,
    dead_letters_are_kept_listed_and_redriven,
    start_positions_and_long_polls,
    delivery_state_survives_a_restart,
    subscriptions_are_private_and_bad_requests_are_refused,
);
