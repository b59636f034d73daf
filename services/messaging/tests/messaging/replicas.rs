//! Two messaging replicas on one Kafka cluster and one metadata store serve one
//! subscription together, sharing its partitions through its consumer group: every message
//! is delivered, none is lost.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

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

/// This replica's share of the one subscription it delivers from: (subscription id, topic
/// id, partitions).
fn share(server: &Server) -> Option<(String, String, BTreeSet<u32>)> {
    let kafka = server.messaging.kafka().expect("a Kafka backend");
    let members = kafka.members();
    let (id, member) = members.first()?;
    Some((
        id.clone(),
        member.topic_id().to_owned(),
        member.partitions(),
    ))
}

/// Waits until the replicas hold disjoint shares of the subscription's partitions that
/// together make all four, and both a part; returns the shares.
async fn shared_out(servers: &[&Server], key: &str) -> Vec<BTreeSet<u32>> {
    let until = Instant::now() + Duration::from_secs(60);
    loop {
        // A replica stays in the group while it delivers: keep both pulling.
        for server in servers {
            let got = pull(server, key).await;
            assert!(got.is_empty(), "nothing was published yet: {got:?}");
        }
        let shares: Vec<BTreeSet<u32>> = servers
            .iter()
            .filter_map(|s| share(s).map(|(_, _, partitions)| partitions))
            .collect();
        let total: usize = shares.iter().map(BTreeSet::len).sum();
        let union: BTreeSet<u32> = shares.iter().flatten().copied().collect();
        if shares.len() == servers.len()
            && shares.iter().all(|s| !s.is_empty())
            && total == 4
            && union.len() == 4
        {
            return shares;
        }
        assert!(
            Instant::now() < until,
            "the group never shared out: {shares:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Publishes `count` messages with keys spread over the partitions; returns each one's
/// (partition, offset).
async fn publish_keyed(server: &Server, key: &str, from: u64, count: u64) -> Vec<(u64, u64)> {
    let messages: Vec<Value> = (from..from + count)
        .map(|n| json!({ "key": format!("k{n}"), "value": n }))
        .collect();
    let published = server
        .ok(
            key,
            Method::POST,
            "/topics/work/messages",
            Some(json!({ "messages": messages })),
        )
        .await;
    published["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["partition"].as_u64().unwrap(),
                r["offset"].as_u64().unwrap(),
            )
        })
        .collect()
}

/// Pulls and acks from a replica until `count` deliveries came or none came for `patience`;
/// returns what came as (partition, value).
async fn drain(server: &Server, key: &str, count: usize, patience: Duration) -> Vec<(u64, u64)> {
    let mut got = Vec::new();
    let mut last = Instant::now();
    while got.len() < count && last.elapsed() < patience {
        let pulled = pull(server, key).await;
        if pulled.is_empty() {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        }
        last = Instant::now();
        ack(server, key, &pulled).await;
        got.extend(pulled.iter().map(|d| {
            (
                d["message"]["partition"].as_u64().unwrap(),
                d["message"]["value"].as_u64().unwrap(),
            )
        }));
    }
    got
}

/// On Kafka the subscription's consumer group shares the topic's partitions out: each
/// replica fetches only from its own; when one stops, the other takes its partitions over;
/// the offsets acknowledged are committed to the group. No message is lost or delivered
/// twice on the way.
async fn the_consumer_group_shares_the_partitions_out(backend: TestBackend) {
    let second = same_cluster(&backend);
    let first = Server::start(backend).await;
    let second = Server::start(second).await;
    let key = first.publisher("groups").await;
    first
        .ok(
            &key,
            Method::POST,
            "/topics",
            Some(json!({"name": "work", "partitions": 4})),
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
    let shares = shared_out(&[&first, &second], &key).await;

    // Each replica delivers the messages of its own partitions, and only those.
    let published = publish_keyed(&first, &key, 0, 200).await;
    let (from_first, from_second) = tokio::join!(
        drain(&first, &key, 200, Duration::from_secs(2)),
        drain(&second, &key, 200, Duration::from_secs(2))
    );
    for (partition, value) in &from_first {
        assert!(
            shares[0].contains(&(*partition as u32)),
            "{value} from partition {partition}"
        );
    }
    for (partition, value) in &from_second {
        assert!(
            shares[1].contains(&(*partition as u32)),
            "{value} from partition {partition}"
        );
    }
    let mut values: Vec<u64> = from_first.iter().chain(&from_second).map(|d| d.1).collect();
    values.sort_unstable();
    assert_eq!(values, (0..200).collect::<Vec<_>>(), "lost or doubled");

    // What was acknowledged is committed to the group: each partition's end.
    let (subscription_id, topic_id, _) = share(&first).unwrap();
    let mut ends = [0u64; 4];
    for (partition, offset) in &published {
        ends[*partition as usize] = ends[*partition as usize].max(offset + 1);
    }
    let kafka = first.messaging.kafka().unwrap();
    let until = Instant::now() + Duration::from_secs(30);
    loop {
        let committed = kafka
            .group_offsets(&subscription_id, &topic_id, 4)
            .await
            .unwrap();
        let expected: Vec<Option<u64>> = ends.iter().map(|&end| Some(end)).collect();
        if committed == expected {
            break;
        }
        assert!(
            Instant::now() < until,
            "committed {committed:?}, acknowledged up to {ends:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // A seek made through one replica moves the other's positions too: back to the start,
    // each replica delivers its partitions' messages again.
    for partition in 0..4 {
        let (status, body) = second
            .call(
                &key,
                Method::POST,
                "/subscriptions/workers/seek",
                Some(json!({"partition": partition, "offset": 0})),
            )
            .await;
        assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    }
    let (again_first, again_second) = tokio::join!(
        drain(&first, &key, 200, Duration::from_secs(2)),
        drain(&second, &key, 200, Duration::from_secs(2))
    );
    assert!(
        again_first
            .iter()
            .all(|d| shares[0].contains(&(d.0 as u32)))
    );
    assert!(
        again_second
            .iter()
            .all(|d| shares[1].contains(&(d.0 as u32)))
    );
    let mut values: Vec<u64> = again_first
        .iter()
        .chain(&again_second)
        .map(|d| d.1)
        .collect();
    values.sort_unstable();
    assert_eq!(values, (0..200).collect::<Vec<_>>(), "not all replayed");

    // The first replica stops: the second takes all partitions over and loses nothing
    // published meanwhile.
    publish_keyed(&second, &key, 200, 100).await;
    // Its backend holds the metadata store both use: kept until the end.
    let _store = first.stop().await;
    let rest = drain(&second, &key, 100, Duration::from_secs(30)).await;
    assert_eq!(share(&second).map(|s| s.2.len()), Some(4), "not taken over");
    let mut values: Vec<u64> = rest.iter().map(|d| d.1).collect();
    values.sort_unstable();
    assert_eq!(values, (200..300).collect::<Vec<_>>(), "lost or doubled");
}

/// Only on Kafka: two processes cannot share the embedded log (it is locked to one).
mod kafka {
    #[::tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn replicas_share_a_subscription_without_losing_a_message() {
        if let Some(backend) = plinth_shared::testkit::TestBackend::kafka() {
            super::replicas_share_a_subscription_without_losing_a_message(backend).await;
        }
    }

    #[::tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_consumer_group_shares_the_partitions_out() {
        if let Some(backend) = plinth_shared::testkit::TestBackend::kafka() {
            super::the_consumer_group_shares_the_partitions_out(backend).await;
        }
    }
}
