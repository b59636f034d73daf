//! Event streams: deliveries as Server-Sent Events, acked over the normal routes, with a
//! bound on what is in flight.

use std::time::Duration;

use futures::StreamExt;

use crate::common::*;

/// The `message` events of an open stream, one at a time.
struct Events {
    body: futures::stream::BoxStream<'static, reqwest::Result<bytes::Bytes>>,
    buffer: String,
}

impl Events {
    async fn open(server: &Server, key: &str, query: &str) -> Events {
        let response = server
            .http
            .get(format!(
                "{}/messaging/v1/subscriptions/jobs/stream{query}",
                server.url
            ))
            .bearer_auth(key)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let kind = response.headers()["content-type"]
            .to_str()
            .unwrap()
            .to_owned();
        assert_eq!(kind, "text/event-stream");
        Events {
            body: response.bytes_stream().boxed(),
            buffer: String::new(),
        }
    }

    /// The next delivery, or `None` if none comes within `wait`.
    async fn next(&mut self, wait: Duration) -> Option<Value> {
        let until = tokio::time::Instant::now() + wait;
        loop {
            while let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let mut event = "message";
                let mut data = String::new();
                for line in block.lines() {
                    if let Some(name) = line.strip_prefix("event: ") {
                        event = if name == "message" {
                            "message"
                        } else {
                            "other"
                        };
                    } else if let Some(text) = line.strip_prefix("data: ") {
                        data.push_str(text);
                    }
                }
                if data.is_empty() {
                    continue; // a keep-alive comment
                }
                assert_eq!(event, "message", "{block}");
                return Some(serde_json::from_str(&data).unwrap());
            }
            let chunk = tokio::time::timeout_at(until, self.body.next())
                .await
                .ok()?;
            let chunk = chunk.expect("the stream ended").unwrap();
            self.buffer.push_str(std::str::from_utf8(&chunk).unwrap());
        }
    }
}

async fn lease_call(
    server: &Server,
    key: &str,
    verb: &str,
    delivery: &Value,
    seconds: Option<u64>,
) {
    let mut body = json!({"lease_ids": [delivery["lease_id"]]});
    if let Some(seconds) = seconds {
        body["seconds"] = json!(seconds);
    }
    let answer = server
        .ok(
            key,
            Method::POST,
            &format!("/subscriptions/jobs/{verb}"),
            Some(body),
        )
        .await;
    assert_eq!(answer["expired"], json!([]));
}

async fn a_stream_delivers_within_its_in_flight_bound(backend: TestBackend) {
    let server = Server::start(backend).await;
    let key = server.publisher("stream").await;
    server
        .ok(&key, Method::POST, "/topics", Some(json!({"name": "work"})))
        .await;
    server
        .ok(
            &key,
            Method::POST,
            "/subscriptions",
            Some(json!({"name": "jobs", "topic": "work", "start": "earliest"})),
        )
        .await;
    let messages: Vec<Value> = (0..4).map(|i| json!({ "value": i })).collect();
    server
        .ok(
            &key,
            Method::POST,
            "/topics/work/messages",
            Some(json!({ "messages": messages })),
        )
        .await;

    let mut events = Events::open(&server, &key, "?max_in_flight=2").await;
    let short = Duration::from_millis(700);
    let long = Duration::from_secs(10);
    let first = events.next(long).await.unwrap();
    let second = events.next(long).await.unwrap();
    assert_eq!(
        (&first["message"]["value"], &second["message"]["value"]),
        (&json!(0), &json!(1))
    );
    assert!(events.next(short).await.is_none(), "more than 2 in flight");

    // An ack makes room for the next; a nack brings its message back.
    lease_call(&server, &key, "ack", &first, None).await;
    let third = events.next(long).await.unwrap();
    assert_eq!(third["message"]["value"], 2);
    lease_call(&server, &key, "nack", &second, Some(0)).await;
    let again = events.next(long).await.unwrap();
    assert_eq!(again["message"]["value"], 1);
    assert_eq!(again["attempt"], 2);
    assert!(events.next(short).await.is_none(), "more than 2 in flight");
    lease_call(&server, &key, "ack", &again, None).await;
    lease_call(&server, &key, "ack", &third, None).await;
    let fourth = events.next(long).await.unwrap();
    assert_eq!(fourth["message"]["value"], 3);
    lease_call(&server, &key, "ack", &fourth, None).await;

    // A message published while the stream waits arrives on it.
    server
        .ok(
            &key,
            Method::POST,
            "/topics/work/messages",
            Some(json!({"messages": [{"value": "late"}]})),
        )
        .await;
    let late = events.next(long).await.unwrap();
    assert_eq!(late["message"]["value"], "late");
    assert_eq!(late["attempt"], 1);

    // Bad bounds, other projects and push subscriptions are refused.
    let path = "/subscriptions/jobs/stream";
    let refused = server
        .refused(&key, Method::GET, &format!("{path}?max_in_flight=0"), None)
        .await;
    assert_eq!(refused.1, "invalid_parameter");
    let other = server.publisher("other").await;
    let refused = server.refused(&other, Method::GET, path, None).await;
    assert_eq!(
        refused,
        (StatusCode::NOT_FOUND, "subscription_not_found".into())
    );
    server
        .ok(
            &key,
            Method::POST,
            "/subscriptions",
            Some(json!({
                "name": "pushed", "topic": "work",
                "push": {"endpoint": "http://127.0.0.1:9/hook"},
            })),
        )
        .await;
    let refused = server
        .refused(&key, Method::GET, "/subscriptions/pushed/stream", None)
        .await;
    assert_eq!(
        refused,
        (StatusCode::CONFLICT, "subscription_is_push".into())
    );

    // An open stream does not hold up a shutdown.
    let grace = server.backend.config.shutdown_grace;
    let started = std::time::Instant::now();
    let server = server.restart().await;
    assert!(
        started.elapsed() < grace / 2,
        "the shutdown waited {:?} for the stream",
        started.elapsed()
    );
    drop((events, server));
}

plinth_shared::log_backend_tests!(a_stream_delivers_within_its_in_flight_bound);
