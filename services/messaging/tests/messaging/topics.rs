//! Topics: their settings, quotas, isolation, retention and durability across restarts.

use crate::common::*;

async fn topics_are_created_listed_updated_and_deleted(backend: TestBackend) {
    let server = Server::start(backend).await;
    let key = server.publisher("topics").await;

    let created = server
        .ok(
            &key,
            Method::POST,
            "/topics",
            Some(json!({"name": "orders", "partitions": 3, "retention_seconds": 3600})),
        )
        .await;
    assert_eq!(created["name"], "orders");
    assert_eq!(created["partition_count"], 3);
    assert_eq!(created["retention_seconds"], 3600);
    server
        .ok(
            &key,
            Method::POST,
            "/topics",
            Some(json!({"name": "audit"})),
        )
        .await;
    let (status, code) = server
        .refused(
            &key,
            Method::POST,
            "/topics",
            Some(json!({"name": "orders"})),
        )
        .await;
    assert_eq!(
        (status, code.as_str()),
        (StatusCode::CONFLICT, "topic_name_taken")
    );

    let listed = server.ok(&key, Method::GET, "/topics", None).await;
    let names: Vec<_> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].clone())
        .collect();
    assert_eq!(names, [json!("audit"), json!("orders")]);

    let one = server.ok(&key, Method::GET, "/topics/orders", None).await;
    let partitions = one["partitions"].as_array().unwrap();
    assert_eq!(partitions.len(), 3);
    assert_eq!(
        partitions[2],
        json!({"partition": 2, "start_offset": 0, "end_offset": 0})
    );

    let updated = server
        .ok(
            &key,
            Method::PATCH,
            "/topics/orders",
            Some(json!({"retention_seconds": 0, "retention_bytes": 1048576})),
        )
        .await;
    assert_eq!(updated["retention_seconds"], Value::Null);
    assert_eq!(updated["retention_bytes"], 1048576);

    server
        .ok(
            &key,
            Method::POST,
            "/topics/orders/messages",
            Some(json!({"messages": [{"value": "old"}, {"value": "older"}]})),
        )
        .await;
    let (status, _) = server
        .call(&key, Method::DELETE, "/topics/orders", None)
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, code) = server
        .refused(&key, Method::GET, "/topics/orders", None)
        .await;
    assert_eq!(
        (status, code.as_str()),
        (StatusCode::NOT_FOUND, "topic_not_found")
    );
    // The name is free again, and the new topic starts empty.
    server
        .ok(
            &key,
            Method::POST,
            "/topics",
            Some(json!({"name": "orders"})),
        )
        .await;
    let read = server
        .ok(
            &key,
            Method::GET,
            "/topics/orders/partitions/0/messages",
            None,
        )
        .await;
    assert_eq!(read["messages"], json!([]));
    // Publishing (whose topic lookups are cached) reaches the new topic, not the old.
    let published = server
        .ok(
            &key,
            Method::POST,
            "/topics/orders/messages",
            Some(json!({"messages": [{"value": "new"}]})),
        )
        .await;
    assert_eq!(published["messages"][0]["offset"], 0);
    let read = server
        .ok(
            &key,
            Method::GET,
            "/topics/orders/partitions/0/messages",
            None,
        )
        .await;
    assert_eq!(read["messages"][0]["value"], "new");
}

async fn another_project_cannot_reach_a_topic(backend: TestBackend) {
    let server = Server::start(backend).await;
    let owner = server.publisher("owner").await;
    let other = server.publisher("other").await;
    server
        .ok(
            &owner,
            Method::POST,
            "/topics",
            Some(json!({"name": "private"})),
        )
        .await;
    server
        .ok(
            &owner,
            Method::POST,
            "/topics/private/messages",
            Some(json!({"messages": [{"value": "secret"}]})),
        )
        .await;

    for (method, path, body) in [
        (Method::GET, "/topics/private", None),
        (
            Method::PATCH,
            "/topics/private",
            Some(json!({"retention_seconds": 1})),
        ),
        (Method::DELETE, "/topics/private", None),
        (
            Method::POST,
            "/topics/private/messages",
            Some(json!({"messages": [{"value": "x"}]})),
        ),
        (
            Method::GET,
            "/topics/private/partitions/0/messages?offset=0",
            None,
        ),
    ] {
        let (status, code) = server.refused(&other, method.clone(), path, body).await;
        assert_eq!(
            (status, code.as_str()),
            (StatusCode::NOT_FOUND, "topic_not_found"),
            "{method} {path}"
        );
    }
    assert_eq!(
        server.ok(&other, Method::GET, "/topics", None).await,
        json!([])
    );
    // The same name is the other project's own topic, with its own messages.
    server
        .ok(
            &other,
            Method::POST,
            "/topics",
            Some(json!({"name": "private"})),
        )
        .await;
    let read = server
        .ok(
            &other,
            Method::GET,
            "/topics/private/partitions/0/messages",
            None,
        )
        .await;
    assert_eq!(read["messages"], json!([]));
    let mine = server
        .ok(
            &owner,
            Method::GET,
            "/topics/private/partitions/0/messages",
            None,
        )
        .await;
    assert_eq!(mine["messages"][0]["value"], "secret");
}

async fn scopes_and_the_topic_quota_are_enforced(backend: TestBackend) {
    let server = Server::start(backend).await;
    let quotas = Quotas {
        topics: Some(2),
        ..Quotas::default()
    };
    let (_, key) = server
        .tenant(
            "quota",
            quotas,
            vec![Scope::MessagingPublish, Scope::MessagingConsume],
        )
        .await;
    for name in ["one", "two"] {
        server
            .ok(&key, Method::POST, "/topics", Some(json!({"name": name})))
            .await;
    }
    let (status, code) = server
        .refused(
            &key,
            Method::POST,
            "/topics",
            Some(json!({"name": "three"})),
        )
        .await;
    assert_eq!(
        (status, code.as_str()),
        (StatusCode::FORBIDDEN, "quota_exceeded")
    );
    server.call(&key, Method::DELETE, "/topics/one", None).await;
    server
        .ok(
            &key,
            Method::POST,
            "/topics",
            Some(json!({"name": "three"})),
        )
        .await;

    // A retention ceiling: a topic without its own retention gets the ceiling, one asking
    // for more is refused, on create and on update.
    let quotas = Quotas {
        retention_seconds: Some(3600),
        ..Quotas::default()
    };
    let (_, capped) = server
        .tenant(
            "capped",
            quotas,
            vec![Scope::MessagingPublish, Scope::MessagingConsume],
        )
        .await;
    let topic = server
        .ok(
            &capped,
            Method::POST,
            "/topics",
            Some(json!({"name": "kept"})),
        )
        .await;
    assert_eq!(topic["retention_seconds"], 3600);
    let (status, code) = server
        .refused(
            &capped,
            Method::POST,
            "/topics",
            Some(json!({"name": "long", "retention_seconds": 7200})),
        )
        .await;
    assert_eq!(
        (status, code.as_str()),
        (StatusCode::FORBIDDEN, "quota_exceeded")
    );
    let (_, code) = server
        .refused(
            &capped,
            Method::PATCH,
            "/topics/kept",
            Some(json!({"retention_seconds": 7200})),
        )
        .await;
    assert_eq!(code, "quota_exceeded");
    let shorter = server
        .ok(
            &capped,
            Method::PATCH,
            "/topics/kept",
            Some(json!({"retention_seconds": 60})),
        )
        .await;
    assert_eq!(shorter["retention_seconds"], 60);
    // Partitions per topic and the largest message.
    let quotas = Quotas {
        partitions_per_topic: Some(2),
        message_size_max: Some(10),
        messages_per_day: Some(3),
        ..Quotas::default()
    };
    let (_, small) = server
        .tenant(
            "small",
            quotas,
            vec![Scope::MessagingPublish, Scope::MessagingConsume],
        )
        .await;
    let (status, code) = server
        .refused(
            &small,
            Method::POST,
            "/topics",
            Some(json!({"name": "wide", "partitions": 3})),
        )
        .await;
    assert_eq!(
        (status, code.as_str()),
        (StatusCode::FORBIDDEN, "quota_exceeded")
    );
    server
        .ok(
            &small,
            Method::POST,
            "/topics",
            Some(json!({"name": "narrow", "partitions": 2})),
        )
        .await;
    let (status, body) = server
        .call(
            &small,
            Method::POST,
            "/topics/narrow/messages",
            Some(json!({"messages": [{"value": "short"}, {"value": "a good deal longer"}]})),
        )
        .await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{body}");
    assert_eq!(body["code"], "message_too_large");
    assert_eq!(body["details"], json!({"index": 1, "limit": 10}));
    server
        .ok(
            &small,
            Method::POST,
            "/topics/narrow/messages",
            Some(json!({"messages": [{"value": "short"}]})),
        )
        .await;
    // Three a day: the short one and two more fit; a fourth does not, and stores nothing.
    server
        .ok(
            &small,
            Method::POST,
            "/topics/narrow/messages",
            Some(json!({"messages": [{"value": 1}, {"value": 2}]})),
        )
        .await;
    let (status, code) = server
        .refused(
            &small,
            Method::POST,
            "/topics/narrow/messages",
            Some(json!({"messages": [{"value": 3}]})),
        )
        .await;
    assert_eq!(
        (status, code.as_str()),
        (StatusCode::FORBIDDEN, "quota_exceeded")
    );
    let topic = server.ok(&small, Method::GET, "/topics/narrow", None).await;
    let stored: u64 = topic["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["end_offset"].as_u64().unwrap())
        .sum();
    assert_eq!(stored, 3);

    // Removing the topic's own retention falls back to the ceiling, never to none.
    let reset = server
        .ok(
            &capped,
            Method::PATCH,
            "/topics/kept",
            Some(json!({"retention_seconds": 0})),
        )
        .await;
    assert_eq!(reset["retention_seconds"], 3600);

    let (_, consumer) = server
        .tenant("consumer", Quotas::default(), vec![Scope::MessagingConsume])
        .await;
    let (status, code) = server
        .refused(
            &consumer,
            Method::POST,
            "/topics",
            Some(json!({"name": "mine"})),
        )
        .await;
    assert_eq!(
        (status, code.as_str()),
        (StatusCode::FORBIDDEN, "missing_scope")
    );
    let (_, storage_only) = server
        .tenant("storage", Quotas::default(), vec![Scope::StorageRead])
        .await;
    let (status, code) = server
        .refused(&storage_only, Method::GET, "/topics", None)
        .await;
    assert_eq!(
        (status, code.as_str()),
        (StatusCode::FORBIDDEN, "missing_scope")
    );
}

async fn messages_survive_a_restart_of_the_service(backend: TestBackend) {
    let server = Server::start(backend).await;
    let key = server.publisher("restart").await;
    server
        .ok(
            &key,
            Method::POST,
            "/topics",
            Some(json!({"name": "durable", "partitions": 2})),
        )
        .await;
    let batch: Vec<Value> = (0..50)
        .map(|n| json!({"value": n, "key": format!("k{}", n % 5)}))
        .collect();
    server
        .ok(
            &key,
            Method::POST,
            "/topics/durable/messages",
            Some(json!({"messages": batch})),
        )
        .await;

    // While the server runs, no second one may open its embedded log (replicas share a
    // Kafka cluster, so there is nothing to lock there).
    if server.backend.name != "kafka" {
        let second = Shared::open(server.backend.config.clone(), &server.backend.admin_token)
            .await
            .unwrap();
        let refused = plinth_messaging::Messaging::open(second).await.unwrap_err();
        assert_eq!(refused.kind(), std::io::ErrorKind::WouldBlock, "{refused}");
    }

    // A new server on the same metadata and data directory: the logs are recovered.
    let again = server.restart().await;
    let mut values = Vec::new();
    for partition in 0..2 {
        let read = again
            .ok(
                &key,
                Method::GET,
                &format!("/topics/durable/partitions/{partition}/messages?limit=1000"),
                None,
            )
            .await;
        values.extend(
            read["messages"]
                .as_array()
                .unwrap()
                .iter()
                .map(|m| m["value"].as_u64().unwrap()),
        );
    }
    values.sort_unstable();
    assert_eq!(values, (0..50).collect::<Vec<_>>());
}

async fn retention_trims_old_segments_and_subscriptions_follow(mut backend: TestBackend) {
    backend.config.messaging_segment_bytes = 4096;
    let server = Server::start(backend).await;
    let key = server.publisher("retention").await;
    server
        .ok(
            &key,
            Method::POST,
            "/topics",
            Some(json!({"name": "short", "retention_bytes": 8192})),
        )
        .await;
    server
        .ok(
            &key,
            Method::POST,
            "/subscriptions",
            Some(json!({"name": "slow", "topic": "short", "start": "earliest"})),
        )
        .await;
    for n in 0..100 {
        let value = format!("{n:03}{}", "x".repeat(200));
        server
            .ok(
                &key,
                Method::POST,
                "/topics/short/messages",
                Some(json!({"messages": [{"value": value}]})),
            )
            .await;
    }
    assert!(server.messaging.apply_retention().await.unwrap() > 0);

    let topic = server.ok(&key, Method::GET, "/topics/short", None).await;
    let start = topic["partitions"][0]["start_offset"].as_u64().unwrap();
    assert!(start > 0 && start < 100, "{topic}");
    assert_eq!(topic["partitions"][0]["end_offset"], 100);
    let (status, code) = server
        .refused(
            &key,
            Method::GET,
            "/topics/short/partitions/0/messages?offset=0",
            None,
        )
        .await;
    assert_eq!(
        (status, code.as_str()),
        (StatusCode::BAD_REQUEST, "offset_out_of_range")
    );
    // A subscription that had read nothing goes on from the oldest message kept.
    let pulled = server
        .ok(
            &key,
            Method::POST,
            "/subscriptions/slow/pull",
            Some(json!({"max_messages": 1000})),
        )
        .await;
    let pulled = pulled["messages"].as_array().unwrap();
    assert_eq!(pulled[0]["message"]["offset"].as_u64(), Some(start));
    assert_eq!(pulled.len() as u64, 100 - start);
}

async fn logs_no_topic_names_are_swept_at_start(backend: TestBackend) {
    let server = Server::start(backend).await;
    let key = server.publisher("sweep").await;
    server
        .ok(&key, Method::POST, "/topics", Some(json!({"name": "kept"})))
        .await;
    server
        .ok(
            &key,
            Method::POST,
            "/topics/kept/messages",
            Some(json!({"messages": [{"value": "still here"}]})),
        )
        .await;
    let backend = server.stop().await;
    // What a crash between a topic's row delete and its files' leaves.
    let orphan = backend.dir.path().join("messages/tpc_orphan/0");
    std::fs::create_dir_all(&orphan).unwrap();
    std::fs::write(orphan.join("00000000000000000000.log"), b"old").unwrap();
    let server = Server::start(backend).await;
    assert!(
        !server
            .backend
            .dir
            .path()
            .join("messages/tpc_orphan")
            .exists()
    );
    let read = server
        .ok(
            &key,
            Method::GET,
            "/topics/kept/partitions/0/messages",
            None,
        )
        .await;
    assert_eq!(read["messages"][0]["value"], "still here");
}

/// Segment files are the embedded log's: retention by them (Kafka applies its own), and the
/// sweep of files no topic names.
mod embedded_log {
    use super::*;

    plinth_shared::backend_tests!(
        retention_trims_old_segments_and_subscriptions_follow,
        logs_no_topic_names_are_swept_at_start,
    );
}

plinth_shared::log_backend_tests!(
    topics_are_created_listed_updated_and_deleted,
    another_project_cannot_reach_a_topic,
    scopes_and_the_topic_quota_are_enforced,
    messages_survive_a_restart_of_the_service,
);
