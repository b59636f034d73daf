//! The messaging methods of the SDK against a real server, started in-process on every
//! metadata backend.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use plinth_sdk::types::console::{CreateKey, CreateProject};
use plinth_sdk::types::messaging::{
    CreateBucketNotification, CreateSubscription, CreateTopic, MessageRef, OutgoingMessage,
    SeekRequest, StartPosition, UpdateTopic,
};
use plinth_sdk::types::{ErrorCode, Scope};
use plinth_sdk::{Client, ConsumerOptions, ReadFrom};
use plinth_shared::backend_tests;
use plinth_shared::testkit::TestBackend;
use serde_json::json;

struct Tenant {
    client: Client,
    _backend: TestBackend,
}

async fn start(backend: TestBackend) -> Tenant {
    let shared = plinth_shared::Shared::open(backend.config.clone(), &backend.admin_token)
        .await
        .unwrap();
    let messaging = plinth_messaging::Messaging::open(shared.clone())
        .await
        .unwrap();
    let routes = plinth_console::router(shared.clone()).merge(plinth_messaging::router(messaging));
    let (routes, api) = routes.split_for_parts();
    let app = plinth_shared::http::app(routes, api, &shared);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        plinth_shared::http::serve(listener, app, shared, std::future::pending()).await
    });
    let admin = Client::builder()
        .base_url(&url)
        .token(&backend.admin_token)
        .max_retries(0)
        .build()
        .unwrap();
    let project = CreateProject {
        name: "sdk-messaging".to_owned(),
        quotas: None,
    };
    let project = admin.create_project(&project).await.unwrap();
    let key = CreateKey {
        name: "sdk".to_owned(),
        scopes: vec![Scope::MessagingPublish, Scope::MessagingConsume],
        ..CreateKey::default()
    };
    let key = admin.create_key(&project.id, &key).await.unwrap();
    Tenant {
        client: admin.with_token(key.secret),
        _backend: backend,
    }
}

fn message(value: serde_json::Value) -> OutgoingMessage {
    OutgoingMessage {
        value: Some(value),
        ..OutgoingMessage::default()
    }
}

async fn subscribe(client: &Client, name: &str, topic: &str, deadline: u64) {
    client
        .create_subscription(&CreateSubscription {
            name: name.into(),
            topic: topic.into(),
            start: Some(StartPosition::Earliest),
            ack_deadline_seconds: Some(deadline),
            ..CreateSubscription::default()
        })
        .await
        .unwrap();
}

async fn topics_publish_and_replay_through_the_sdk(backend: TestBackend) {
    let tenant = start(backend).await;
    let client = &tenant.client;
    let topic = CreateTopic {
        name: "events".into(),
        partitions: Some(2),
        ..CreateTopic::default()
    };
    client.create_topic(&topic).await.unwrap();
    let err = client.create_topic(&topic).await.unwrap_err();
    assert!(err.code() == Some(ErrorCode::TopicNameTaken), "{err:?}");

    let one = client
        .publish(
            "events",
            OutgoingMessage {
                key: Some("k".into()),
                ..message(json!(0))
            },
        )
        .await
        .unwrap();
    let batch: Vec<_> = (1..=5)
        .map(|n| OutgoingMessage {
            key: Some("k".into()),
            ..message(json!(n))
        })
        .collect();
    let rest = client.publish_batch("events", batch).await.unwrap();
    assert!(rest.iter().all(|p| p.partition == one.partition));
    assert_eq!(rest[4].offset, one.offset + 5);

    let read = client
        .read_partition(
            "events",
            one.partition,
            ReadFrom::Offset(one.offset + 2),
            100,
        )
        .await
        .unwrap();
    let values: Vec<_> = read
        .messages
        .iter()
        .map(|m| m.value.clone().unwrap())
        .collect();
    assert_eq!(values, [json!(2), json!(3), json!(4), json!(5)]);
    let from_start = client
        .read_partition("events", one.partition, ReadFrom::Start, 2)
        .await
        .unwrap();
    assert_eq!(from_start.next_offset, 2);

    let topic = client
        .update_topic(
            "events",
            &UpdateTopic {
                retention_seconds: Some(60),
                ..UpdateTopic::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(topic.retention_seconds, Some(60));
    let described = client.get_topic("events").await.unwrap();
    let ends: u64 = described
        .partitions
        .unwrap()
        .iter()
        .map(|p| p.end_offset)
        .sum();
    assert_eq!(ends, 6);
    assert_eq!(client.list_topics().await.unwrap().len(), 1);
    client.delete_topic("events").await.unwrap();
    let err = client.get_topic("events").await.unwrap_err();
    assert!(err.code() == Some(ErrorCode::TopicNotFound), "{err:?}");
}

async fn the_consumer_acks_successes_retries_failures_and_keeps_long_leases(backend: TestBackend) {
    let tenant = start(backend).await;
    let client = tenant.client.clone();
    client
        .create_topic(&CreateTopic {
            name: "jobs".into(),
            ..CreateTopic::default()
        })
        .await
        .unwrap();
    // A lease of 1 s, but one handler takes 3 s: the consumer must keep extending it.
    subscribe(&client, "workers", "jobs", 1).await;
    let batch: Vec<_> = (0..6).map(|n| message(json!(n))).collect();
    client.publish_batch("jobs", batch).await.unwrap();

    let seen: Arc<Mutex<BTreeMap<u64, Vec<u32>>>> = Arc::default();
    let consumer = {
        let (client, seen) = (client.clone(), seen.clone());
        tokio::spawn(async move {
            let options = ConsumerOptions {
                wait_seconds: 1,
                lease_seconds: 2,
                ..ConsumerOptions::default()
            };
            client
                .consume("workers", options, |delivery| {
                    let seen = seen.clone();
                    async move {
                        let n = delivery
                            .message
                            .value
                            .as_ref()
                            .and_then(|v| v.as_u64())
                            .unwrap();
                        seen.lock()
                            .unwrap()
                            .entry(n)
                            .or_default()
                            .push(delivery.attempt);
                        if n == 0 {
                            tokio::time::sleep(Duration::from_secs(3)).await;
                        }
                        // Message 3 fails on its first delivery.
                        if n == 3 && delivery.attempt == 1 {
                            return Err("not yet");
                        }
                        Ok(())
                    }
                })
                .await
        })
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let done = {
            let seen = seen.lock().unwrap();
            seen.len() == 6 && seen.get(&3).is_some_and(|attempts| attempts.len() == 2)
        };
        if done || tokio::time::Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Let any wrong redelivery show before looking.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    consumer.abort();
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.get(&3), Some(&vec![1, 2]), "{seen:?}");
    assert_eq!(
        seen.get(&0),
        Some(&vec![1]),
        "the slow handler's lease ran out: {seen:?}"
    );
    for n in [1, 2, 4, 5] {
        assert_eq!(seen.get(&n), Some(&vec![1]), "{seen:?}");
    }
    // Everything was acknowledged: nothing is left to pull.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert!(client.pull("workers", 10, 0).await.unwrap().is_empty());
}

async fn pull_ack_nack_extend_and_seek_through_the_sdk(backend: TestBackend) {
    let tenant = start(backend).await;
    let client = &tenant.client;
    client
        .create_topic(&CreateTopic {
            name: "t".into(),
            ..CreateTopic::default()
        })
        .await
        .unwrap();
    subscribe(client, "s", "t", 30).await;
    client
        .publish_batch("t", vec![message(json!("a")), message(json!("b"))])
        .await
        .unwrap();

    let got = client.pull("s", 10, 0).await.unwrap();
    assert_eq!(got.len(), 2);
    let extended = client
        .extend("s", vec![got[1].lease_id.clone()], 60)
        .await
        .unwrap();
    assert!(extended.expired.is_empty());
    client
        .nack("s", vec![got[0].lease_id.clone()], Some(0))
        .await
        .unwrap();
    let again = client.pull("s", 10, 0).await.unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].attempt, 2);
    let acked = client
        .ack(
            "s",
            vec![
                again[0].lease_id.clone(),
                got[0].lease_id.clone(),
                got[1].lease_id.clone(),
            ],
        )
        .await
        .unwrap();
    assert_eq!(acked.expired, [got[0].lease_id.clone()]);

    client
        .seek(
            "s",
            &SeekRequest {
                partition: Some(0),
                offset: Some(0),
                ..SeekRequest::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(client.pull("s", 10, 0).await.unwrap().len(), 2);
    assert_eq!(client.list_subscriptions().await.unwrap().len(), 1);
    client.delete_subscription("s").await.unwrap();
    let err = client.pull("s", 1, 0).await.unwrap_err();
    assert!(
        err.code() == Some(ErrorCode::SubscriptionNotFound),
        "{err:?}"
    );
}

async fn dead_letters_redrive_and_bucket_notifications_through_the_sdk(backend: TestBackend) {
    let tenant = start(backend).await;
    let client = &tenant.client;
    let topic = CreateTopic {
        name: "work".into(),
        ..CreateTopic::default()
    };
    client.create_topic(&topic).await.unwrap();
    let sub = CreateSubscription {
        name: "once".into(),
        topic: "work".into(),
        start: Some(StartPosition::Earliest),
        max_delivery_attempts: Some(1),
        ..CreateSubscription::default()
    };
    client.create_subscription(&sub).await.unwrap();
    client.publish("work", message(json!("job"))).await.unwrap();
    let got = client.pull("once", 10, 5).await.unwrap();
    client
        .nack("once", vec![got[0].lease_id.clone()], Some(0))
        .await
        .unwrap();
    assert!(client.pull("once", 10, 0).await.unwrap().is_empty());
    let dead = client.dead_letters("once", None, None).await.unwrap();
    assert_eq!(dead.dead_letters.len(), 1);
    assert_eq!(dead.dead_letters[0].message.value, Some(json!("job")));
    let at = MessageRef {
        partition: dead.dead_letters[0].message.partition,
        offset: dead.dead_letters[0].message.offset,
    };
    assert_eq!(client.redrive("once", Some(vec![at])).await.unwrap(), 1);
    let again = client.pull("once", 10, 5).await.unwrap();
    assert_eq!(again[0].attempt, 1);
    client
        .ack("once", vec![again[0].lease_id.clone()])
        .await
        .unwrap();
    assert!(
        client
            .dead_letters("once", None, None)
            .await
            .unwrap()
            .dead_letters
            .is_empty()
    );
    let err = client.push_attempts("missing").await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::SubscriptionNotFound));

    // Bucket notifications: this key has no storage scope, so it cannot route a bucket.
    let notification = CreateBucketNotification {
        bucket: "files".into(),
        topic: "work".into(),
        ..CreateBucketNotification::default()
    };
    let err = client
        .create_bucket_notification(&notification)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::MissingScope));
    assert!(client.list_bucket_notifications().await.unwrap().is_empty());
    let err = client
        .delete_bucket_notification("ntf_x")
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::NotificationNotFound));
}

/// The next delivery of a stream, or `None` if none comes within `wait` seconds.
async fn next<S>(stream: &mut S, wait: u64) -> Option<plinth_sdk::types::messaging::Delivery>
where
    S: futures::Stream<Item = Result<plinth_sdk::types::messaging::Delivery, plinth_sdk::Error>>
        + Unpin,
{
    use futures::StreamExt;
    tokio::time::timeout(Duration::from_secs(wait), stream.next())
        .await
        .ok()
        .flatten()
        .map(Result::unwrap)
}

async fn a_subscription_streams_through_the_sdk(backend: TestBackend) {
    let tenant = start(backend).await;
    let client = &tenant.client;
    let topic = CreateTopic {
        name: "live".into(),
        ..CreateTopic::default()
    };
    client.create_topic(&topic).await.unwrap();
    subscribe(client, "watch", "live", 30).await;
    let batch: Vec<OutgoingMessage> = (0..3).map(|n| message(json!(n))).collect();
    client.publish_batch("live", batch).await.unwrap();

    let stream = client.stream("watch", Some(2)).await.unwrap();
    let mut stream = std::pin::pin!(stream);
    let first = next(&mut stream, 10).await.unwrap();
    let second = next(&mut stream, 10).await.unwrap();
    assert_eq!(first.message.value, Some(json!(0)));
    assert_eq!(second.message.value, Some(json!(1)));
    assert!(
        next(&mut stream, 1).await.is_none(),
        "a third while two are in flight"
    );
    client.ack("watch", vec![first.lease_id]).await.unwrap();
    let third = next(&mut stream, 10).await.unwrap();
    assert_eq!(third.message.value, Some(json!(2)));

    let err = client.stream("missing", None).await.err().unwrap();
    assert_eq!(err.code(), Some(ErrorCode::SubscriptionNotFound));
}

backend_tests!(
    topics_publish_and_replay_through_the_sdk,
    the_consumer_acks_successes_retries_failures_and_keeps_long_leases,
    pull_ack_nack_extend_and_seek_through_the_sdk,
    dead_letters_redrive_and_bucket_notifications_through_the_sdk,
    a_subscription_streams_through_the_sdk,
);
