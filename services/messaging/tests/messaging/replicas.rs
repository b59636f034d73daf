//! Two messaging replicas on one Kafka cluster and one metadata store serve one
//! subscription together: every message is delivered, none is lost.

use std::collections::BTreeSet;

use crate::common::*;

/// A second backend on the same metadata store and message log, with its own data directory.
fn same_cluster(backend: &TestBackend) -> TestBackend {
    let dir = tempfile::tempdir().unwrap();
    let mut config = backend.config.clone();
    config.data_dir = dir.path().to_path_buf();
    TestBackend {
        name: backend.name,
        config,
        admin_token: backend.admin_token.clone(),
        dir,
    }
}

/// Leases up to 20 messages from a replica.
async fn pull(server: &Server, key: &str) -> Vec<Value> {
    let pulled = server
        .ok(
            key,
            Method::POST,
            "/subscriptions/workers/pull",
            Some(json!({"max_messages": 20})),
        )
        .await;
    pulled["messages"].as_array().unwrap().clone()
}

/// Acknowledges deliveries through the replica that made them.
async fn ack(server: &Server, key: &str, deliveries: &[Value]) {
    if deliveries.is_empty() {
        return;
    }
    let leases: Vec<&Value> = deliveries.iter().map(|d| &d["lease_id"]).collect();
    let acked = server
        .ok(
            key,
            Method::POST,
            "/subscriptions/workers/ack",
            Some(json!({ "lease_ids": leases })),
        )
        .await;
    assert_eq!(acked["expired"], json!([]));
}

async fn replicas_share_a_subscription_without_losing_a_message(backend: TestBackend) {
    let second = same_cluster(&backend);
    let first = Server::start(backend).await;
    let second = Server::start(second).await;
    let key = first.publisher("replicas").await;
    first
        .ok(
            &key,
            Method::POST,
            "/topics",
            Some(json!({"name": "work", "partitions": 3})),
        )
        .await;
    first
        .ok(
            &key,
            Method::POST,
            "/subscriptions",
            Some(json!({"name": "workers", "topic": "work", "start": "earliest"})),
        )
        .await;
    let messages: Vec<Value> = (0..300).map(|n| json!({ "value": n })).collect();
    for chunk in messages.chunks(100) {
        second
            .ok(
                &key,
                Method::POST,
                "/topics/work/messages",
                Some(json!({ "messages": chunk })),
            )
            .await;
    }

    // The replicas take turns (each going first in turn) while the other's leases still
    // hold, then ack; every third round the first works alone, so the second falls behind
    // what was acknowledged. Neither may get what the other leased or acknowledged.
    let (mut a, mut b) = (Vec::new(), Vec::new());
    let mut idle = 0;
    for round in 0..200 {
        let (got_a, got_b) = match round % 3 {
            0 => {
                let got_a = pull(&first, &key).await;
                (got_a, pull(&second, &key).await)
            }
            1 => {
                let got_b = pull(&second, &key).await;
                (pull(&first, &key).await, got_b)
            }
            _ => (pull(&first, &key).await, Vec::new()),
        };
        if got_a.is_empty() && got_b.is_empty() {
            idle += 1;
            if idle == 3 {
                break;
            }
            continue;
        }
        idle = 0;
        ack(&first, &key, &got_a).await;
        ack(&second, &key, &got_b).await;
        let value = |d: &Value| d["message"]["value"].as_u64().unwrap();
        a.extend(got_a.iter().map(value));
        b.extend(got_b.iter().map(value));
    }
    assert!(
        !a.is_empty() && !b.is_empty(),
        "one replica did all the work: {} / {}",
        a.len(),
        b.len()
    );
    let mut all: Vec<u64> = a.iter().chain(&b).copied().collect();
    all.sort_unstable();
    let distinct: BTreeSet<u64> = all.iter().copied().collect();
    assert_eq!(distinct.len(), 300, "lost messages");
    assert_eq!(all.len(), 300, "a message was delivered to both replicas");
}

/// Only on Kafka: two processes cannot share the embedded log (it is locked to one).
mod kafka {
    #[::tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn replicas_share_a_subscription_without_losing_a_message() {
        if let Some(backend) = plinth_shared::testkit::TestBackend::kafka() {
            super::replicas_share_a_subscription_without_losing_a_message(backend).await;
        }
    }
}
