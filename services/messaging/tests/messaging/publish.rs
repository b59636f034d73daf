//! Publishing and replay: keys and partitions, value kinds, reads by offset and time, and
//! bad input.

use crate::common::*;

async fn published_messages_read_back_by_offset_key_and_time(backend: TestBackend) {
    let server = Server::start(backend).await;
    let key = server.publisher("publish").await;
    server
        .ok(
            &key,
            Method::POST,
            "/topics",
            Some(json!({"name": "events", "partitions": 4})),
        )
        .await;

    let one = server
        .ok(
            &key,
            Method::POST,
            "/topics/events/messages",
            Some(json!({"messages": [{
                "value": {"order": 1},
                "key": "customer-7",
                "headers": {"source": "test"},
                "message_id": "m-1",
            }]})),
        )
        .await;
    let first = one["messages"][0].clone();
    let partition = first["partition"].as_u64().unwrap();

    // Every message with the same key goes to the same partition, in order.
    let batch: Vec<Value> = (2..=20)
        .map(|n| json!({"value": {"order": n}, "key": "customer-7"}))
        .collect();
    let published = server
        .ok(
            &key,
            Method::POST,
            "/topics/events/messages",
            Some(json!({"messages": batch})),
        )
        .await;
    let published = published["messages"].as_array().unwrap();
    assert_eq!(published.len(), 19);
    for (n, entry) in published.iter().enumerate() {
        assert_eq!(entry["partition"].as_u64(), Some(partition));
        assert_eq!(
            entry["offset"].as_u64(),
            Some(first["offset"].as_u64().unwrap() + 1 + n as u64)
        );
    }
    // Bytes come back as the bytes sent; keyless messages spread over partitions.
    let bytes = server
        .ok(&key, Method::POST, "/topics/events/messages", Some(json!({"messages": [
            {"value_base64": "AAEC/w=="}, {"value_base64": "AAEC/w=="}, {"value_base64": "AAEC/w=="}, {"value_base64": "AAEC/w=="}
        ]})))
        .await;
    let spread: std::collections::BTreeSet<_> = bytes["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["partition"].as_u64().unwrap())
        .collect();
    assert_eq!(spread.len(), 4, "{bytes}");

    let path = format!("/topics/events/partitions/{partition}/messages");
    let read = server
        .ok(
            &key,
            Method::GET,
            &format!("{path}?offset=0&limit=1000"),
            None,
        )
        .await;
    let messages = read["messages"].as_array().unwrap();
    let orders: Vec<_> = messages
        .iter()
        .filter(|m| m["key"] == "customer-7")
        .map(|m| m["value"]["order"].as_u64().unwrap())
        .collect();
    assert_eq!(orders, (1..=20).collect::<Vec<_>>());
    assert_eq!(messages[0]["headers"], json!({"source": "test"}));
    assert_eq!(messages[0]["message_id"], "m-1");
    assert_eq!(
        read["next_offset"],
        messages.last().unwrap()["offset"].as_u64().unwrap() + 1
    );
    let raw = messages
        .iter()
        .find(|m| m.get("value_base64").is_some())
        .unwrap();
    assert_eq!(raw["value_base64"], "AAEC/w==");

    // Paging: a limit, then on from `next_offset`.
    let page = server
        .ok(&key, Method::GET, &format!("{path}?offset=0&limit=5"), None)
        .await;
    assert_eq!(page["messages"].as_array().unwrap().len(), 5);
    assert_eq!(page["next_offset"], 5);
    let rest = server
        .ok(
            &key,
            Method::GET,
            &format!("{path}?offset=5&limit=1000"),
            None,
        )
        .await;
    assert_eq!(rest["messages"][0]["offset"], 5);

    // By time: from a time after everything, nothing; from the first message's time, all.
    let published_at = messages[0]["published_at"].as_str().unwrap();
    let from_time = server
        .ok(
            &key,
            Method::GET,
            &format!("{path}?time={}", published_at.replace('+', "%2B")),
            None,
        )
        .await;
    assert_eq!(from_time["messages"][0]["offset"], messages[0]["offset"]);
    let later = server
        .ok(
            &key,
            Method::GET,
            &format!("{path}?time=2999-01-01T00:00:00Z"),
            None,
        )
        .await;
    assert_eq!(later["messages"], json!([]));

    // A delayed message carries its delivery time.
    let delayed = server
        .ok(
            &key,
            Method::POST,
            "/topics/events/messages",
            Some(json!({"messages": [{"value": 1, "key": "d", "delay_seconds": 60}]})),
        )
        .await;
    let at = &delayed["messages"][0];
    let read = server
        .ok(
            &key,
            Method::GET,
            &format!(
                "/topics/events/partitions/{}/messages?offset={}",
                at["partition"], at["offset"]
            ),
            None,
        )
        .await;
    assert!(read["messages"][0]["deliver_at"].is_string(), "{read}");

    // The topic shows where each partition ends.
    let topic = server.ok(&key, Method::GET, "/topics/events", None).await;
    let total: u64 = topic["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["end_offset"].as_u64().unwrap())
        .sum();
    assert_eq!(total, 20 + 4 + 1);
}

async fn bad_input_is_refused_and_stores_nothing(mut backend: TestBackend) {
    backend.config.messaging_max_message_bytes = 100;
    let server = Server::start(backend).await;
    let key = server.publisher("bad").await;
    server
        .ok(&key, Method::POST, "/topics", Some(json!({"name": "t"})))
        .await;

    let publish = |messages: Value| Some(json!({ "messages": messages }));
    let good = json!({"value": "fine"});
    for (messages, status, code) in [
        (
            json!([good, {}]),
            StatusCode::BAD_REQUEST,
            "invalid_message",
        ),
        (
            json!([good, {"value": 1, "value_base64": "AA=="}]),
            StatusCode::BAD_REQUEST,
            "invalid_message",
        ),
        (
            json!([good, {"value_base64": "not base64!"}]),
            StatusCode::BAD_REQUEST,
            "invalid_message",
        ),
        (
            json!([good, {"value": "x".repeat(200)}]),
            StatusCode::PAYLOAD_TOO_LARGE,
            "message_too_large",
        ),
        (
            json!([good, {"value": 1, "delay_seconds": 1, "deliver_at": "2030-01-01T00:00:00Z"}]),
            StatusCode::BAD_REQUEST,
            "invalid_message",
        ),
        (
            json!([good, {"value": 1, "delay_seconds": 100_000_000}]),
            StatusCode::BAD_REQUEST,
            "invalid_message",
        ),
        (
            json!([good, {"value": 1, "message_id": ""}]),
            StatusCode::BAD_REQUEST,
            "invalid_message",
        ),
        (
            json!([good, {"value": 1, "color": "red"}]),
            StatusCode::BAD_REQUEST,
            "unknown_field",
        ),
        (json!([]), StatusCode::BAD_REQUEST, "invalid_field"),
    ] {
        let (got_status, got_code) = server
            .refused(
                &key,
                Method::POST,
                "/topics/t/messages",
                publish(messages.clone()),
            )
            .await;
        assert_eq!(
            (got_status, got_code.as_str()),
            (status, code),
            "{messages}"
        );
    }
    let topic = server.ok(&key, Method::GET, "/topics/t", None).await;
    assert_eq!(
        topic["partitions"][0]["end_offset"], 0,
        "a refused batch stored something"
    );

    for (method, path, body, status, code) in [
        (
            Method::POST,
            "/topics/nope/messages",
            publish(json!([good])),
            StatusCode::NOT_FOUND,
            "topic_not_found",
        ),
        (
            Method::POST,
            "/topics",
            Some(json!({"name": "a/b"})),
            StatusCode::BAD_REQUEST,
            "invalid_topic_name",
        ),
        (
            Method::POST,
            "/topics",
            Some(json!({"name": "p", "partitions": 0})),
            StatusCode::BAD_REQUEST,
            "invalid_field",
        ),
        (
            Method::POST,
            "/topics",
            Some(json!({"name": "p", "partitions": 100000})),
            StatusCode::BAD_REQUEST,
            "invalid_field",
        ),
        (
            Method::GET,
            "/topics/t/partitions/1/messages",
            None,
            StatusCode::NOT_FOUND,
            "partition_not_found",
        ),
        (
            Method::GET,
            "/topics/t/partitions/0/messages?offset=5",
            None,
            StatusCode::BAD_REQUEST,
            "offset_out_of_range",
        ),
        (
            Method::GET,
            "/topics/t/partitions/0/messages?offset=-1",
            None,
            StatusCode::BAD_REQUEST,
            "invalid_parameter",
        ),
        (
            Method::GET,
            "/topics/t/partitions/0/messages?limit=0",
            None,
            StatusCode::BAD_REQUEST,
            "invalid_parameter",
        ),
        (
            Method::GET,
            "/topics/t/partitions/0/messages?offset=0&time=2020-01-01T00:00:00Z",
            None,
            StatusCode::BAD_REQUEST,
            "invalid_parameter",
        ),
    ] {
        let (got_status, got_code) = server.refused(&key, method.clone(), path, body).await;
        assert_eq!(
            (got_status, got_code.as_str()),
            (status, code),
            "{method} {path}"
        );
    }
    let listed = server.ok(&key, Method::GET, "/topics", None).await;
    assert_eq!(
        listed.as_array().unwrap().len(),
        1,
        "a refused create made a topic"
    );
}

plinth_shared::log_backend_tests!(
    published_messages_read_back_by_offset_key_and_time,
    bad_input_is_refused_and_stores_nothing,
);
