//! Push subscriptions: signed CloudEvents to a local endpoint, retries with backoff, the
//! delivery log, dead letters and redrive, the concurrency limit, and the address guard.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use plinth_sdk::push::PushEvent;

use crate::common::*;

/// A request the endpoint received.
struct Seen {
    at: Instant,
    headers: HeaderMap,
    body: Bytes,
}

/// What the endpoint answers to its `n`-th request (from 0): a status, after a pause.
type Plan = Arc<dyn Fn(usize) -> (u16, Duration) + Send + Sync>;

/// A local HTTP endpoint that records every request and answers by its plan.
#[derive(Clone)]
struct Hook {
    url: String,
    seen: Arc<Mutex<Vec<Seen>>>,
    in_flight: Arc<AtomicUsize>,
    most_in_flight: Arc<AtomicUsize>,
}

#[derive(Clone)]
struct HookState {
    hook: Hook,
    plan: Plan,
}

async fn receive(
    State(state): State<HookState>,
    headers: HeaderMap,
    body: Bytes,
) -> axum::http::StatusCode {
    let hook = &state.hook;
    let now = hook.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
    hook.most_in_flight.fetch_max(now, Ordering::SeqCst);
    let n = {
        let mut seen = hook.seen.lock().unwrap();
        seen.push(Seen {
            at: Instant::now(),
            headers,
            body,
        });
        seen.len() - 1
    };
    let (status, pause) = (state.plan)(n);
    tokio::time::sleep(pause).await;
    hook.in_flight.fetch_sub(1, Ordering::SeqCst);
    axum::http::StatusCode::from_u16(status).unwrap()
}

async fn hook(plan: impl Fn(usize) -> (u16, Duration) + Send + Sync + 'static) -> Hook {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hook = Hook {
        url: format!("http://{}/hook", listener.local_addr().unwrap()),
        seen: Arc::default(),
        in_flight: Arc::default(),
        most_in_flight: Arc::default(),
    };
    let state = HookState {
        hook: hook.clone(),
        plan: Arc::new(plan),
    };
    let app = axum::Router::new()
        .route("/hook", axum::routing::post(receive))
        .with_state(state);
    tokio::spawn(async move { axum::serve(listener, app).await });
    hook
}

impl Hook {
    fn count(&self) -> usize {
        self.seen.lock().unwrap().len()
    }

    /// Waits until the endpoint has had `n` requests.
    async fn wait_for(&self, n: usize) {
        let until = Instant::now() + Duration::from_secs(30);
        while self.count() < n {
            assert!(
                Instant::now() < until,
                "the endpoint got {} of {n} requests",
                self.count()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Every request so far, verified against the secret.
    fn events(&self, secret: &str) -> Vec<(Instant, PushEvent)> {
        let seen = self.seen.lock().unwrap();
        seen.iter()
            .map(|s| {
                let event = plinth_sdk::push::verify(secret, &s.headers, &s.body)
                    .unwrap_or_else(|err| panic!("a push does not verify: {err}"));
                (s.at, event)
            })
            .collect()
    }
}

/// A tenant with a topic and a push subscription `hook` on it to `endpoint`; returns the
/// key and the signing secret.
async fn pushed_to(
    server: &Server,
    tenant: &str,
    endpoint: &str,
    settings: Value,
) -> (String, String) {
    let key = server.publisher(tenant).await;
    server
        .ok(
            &key,
            Method::POST,
            "/topics",
            Some(json!({"name": "events"})),
        )
        .await;
    let mut body = json!({
        "name": "hook", "topic": "events", "start": "earliest",
        "push": {"endpoint": endpoint},
    });
    for (name, value) in settings.as_object().unwrap() {
        if name == "max_concurrency" {
            body["push"][name] = value.clone();
        } else {
            body[name] = value.clone();
        }
    }
    let created = server
        .ok(&key, Method::POST, "/subscriptions", Some(body))
        .await;
    let secret = created["push"]["secret"].as_str().unwrap().to_owned();
    assert!(secret.len() >= 32, "{created}");
    (key, secret)
}

async fn publish_one(server: &Server, key: &str, message: Value) {
    server
        .ok(
            key,
            Method::POST,
            "/topics/events/messages",
            Some(json!({ "messages": [message] })),
        )
        .await;
}

async fn attempts(server: &Server, key: &str) -> Vec<Value> {
    let log = server
        .ok(key, Method::GET, "/subscriptions/hook/push-attempts", None)
        .await;
    log["attempts"].as_array().unwrap().clone()
}

async fn a_push_is_retried_with_backoff_until_the_endpoint_takes_it(backend: TestBackend) {
    let server = Server::start(backend).await;
    let endpoint = hook(|n| (if n < 2 { 500 } else { 204 }, Duration::ZERO)).await;
    let settings = json!({"retry_backoff_min_seconds": 1, "retry_backoff_max_seconds": 2});
    let (key, secret) = pushed_to(&server, "retry", &endpoint.url, settings).await;
    let message = json!({
        "value": {"order": 17, "items": ["b", "a"]},
        "key": "customer-4",
        "headers": {"Trace-Id": "t-1", "note": "50% off"},
        "message_id": "m-1",
    });
    publish_one(&server, &key, message).await;
    endpoint.wait_for(3).await;

    let events = endpoint.events(&secret);
    let attempts_seen: Vec<u32> = events.iter().map(|(_, e)| e.attempt).collect();
    assert_eq!(attempts_seen, [1, 2, 3]);
    let (_, first) = &events[0];
    assert_eq!(first.id, "0-0");
    assert!(first.source.ends_with("/topics/events"), "{}", first.source);
    assert_eq!(first.event_type, "dev.plinth.message.published");
    assert_eq!(first.subscription, "hook");
    assert_eq!(first.key.as_deref(), Some("customer-4"));
    assert_eq!(first.message_id.as_deref(), Some("m-1"));
    assert_eq!(first.headers["Trace-Id"], "t-1");
    assert_eq!(first.headers["note"], "50% off");
    assert_eq!(first.content_type.as_deref(), Some("application/json"));
    assert_eq!(
        first.json::<Value>().unwrap(),
        json!({"order": 17, "items": ["b", "a"]})
    );
    assert!(
        events
            .iter()
            .all(|(_, e)| e.id == first.id && e.data == first.data)
    );
    // Backoff: 1 s after the first failure, 2 s (doubled) after the second.
    let gap = |a: usize, b: usize| events[b].0.duration_since(events[a].0);
    assert!(gap(0, 1) >= Duration::from_millis(900), "{:?}", gap(0, 1));
    assert!(gap(1, 2) >= Duration::from_millis(1900), "{:?}", gap(1, 2));

    // The delivery log, newest first.
    let until = Instant::now() + Duration::from_secs(10);
    let log = loop {
        let log = attempts(&server, &key).await;
        if log.len() == 3 || Instant::now() > until {
            break log;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let statuses: Vec<&Value> = log.iter().map(|a| &a["status"]).collect();
    assert_eq!(statuses, [&json!(204), &json!(500), &json!(500)], "{log:?}");
    assert_eq!(log[0]["attempt"], 3);
    assert!(log[0]["error"].is_null(), "{log:?}");
    assert!(log[1]["error"].as_str().unwrap().contains("500"), "{log:?}");
    assert!(log.iter().all(|a| a["offset"] == 0 && a["partition"] == 0));

    // Acknowledged: not sent again, and the subscription's committed offset moved.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(endpoint.count(), 3);
    let sub = server
        .ok(&key, Method::GET, "/subscriptions/hook", None)
        .await;
    assert_eq!(sub["push"]["endpoint"], endpoint.url);
    assert!(sub["push"].get("secret").is_none(), "{sub}");
}

async fn a_failing_push_is_dead_lettered_and_redriven(backend: TestBackend) {
    let server = Server::start(backend).await;
    let fixed = Arc::new(AtomicBool::new(false));
    let is_fixed = fixed.clone();
    let endpoint = hook(move |_| {
        let status = if is_fixed.load(Ordering::SeqCst) {
            200
        } else {
            503
        };
        (status, Duration::ZERO)
    })
    .await;
    let settings = json!({
        "max_delivery_attempts": 2,
        "retry_backoff_min_seconds": 0,
        "retry_backoff_max_seconds": 0,
    });
    let (key, secret) = pushed_to(&server, "dead", &endpoint.url, settings).await;
    publish_one(&server, &key, json!({"value_base64": "AAEC"})).await;
    endpoint.wait_for(2).await;

    let until = Instant::now() + Duration::from_secs(10);
    let dead = loop {
        let page = server
            .ok(&key, Method::GET, "/subscriptions/hook/dead-letters", None)
            .await;
        let dead = page["dead_letters"].as_array().unwrap().clone();
        if !dead.is_empty() || Instant::now() > until {
            break dead;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0]["attempts"], 2);
    assert_eq!(dead[0]["message"]["value_base64"], "AAEC");
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(endpoint.count(), 2, "a dead message is not pushed again");
    let events = endpoint.events(&secret);
    assert_eq!(events[1].1.data.as_ref(), [0, 1, 2]);
    assert_eq!(
        events[1].1.content_type.as_deref(),
        Some("application/octet-stream")
    );

    fixed.store(true, Ordering::SeqCst);
    let redriven = server
        .ok(
            &key,
            Method::POST,
            "/subscriptions/hook/redrive",
            Some(json!({})),
        )
        .await;
    assert_eq!(redriven["redriven"], 1);
    endpoint.wait_for(3).await;
    let events = endpoint.events(&secret);
    assert_eq!(
        events[2].1.attempt, 1,
        "a redriven message starts its attempts anew"
    );
    assert_eq!(events[2].1.data.as_ref(), [0, 1, 2]);
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        let page = server
            .ok(&key, Method::GET, "/subscriptions/hook/dead-letters", None)
            .await;
        if page["dead_letters"].as_array().unwrap().is_empty() {
            break;
        }
        assert!(
            Instant::now() < until,
            "still dead after the redrive: {page}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let redriven = server
        .ok(
            &key,
            Method::POST,
            "/subscriptions/hook/redrive",
            Some(json!({})),
        )
        .await;
    assert_eq!(redriven["redriven"], 0);
}

async fn pushes_in_flight_stay_within_the_concurrency_limit(backend: TestBackend) {
    let server = Server::start(backend).await;
    let endpoint = hook(|_| (200, Duration::from_millis(300))).await;
    let settings = json!({"max_concurrency": 2});
    let (key, _) = pushed_to(&server, "limit", &endpoint.url, settings).await;
    let messages: Vec<Value> = (0..6).map(|i| json!({ "value": i })).collect();
    server
        .ok(
            &key,
            Method::POST,
            "/topics/events/messages",
            Some(json!({ "messages": messages })),
        )
        .await;
    endpoint.wait_for(6).await;
    assert_eq!(endpoint.most_in_flight.load(Ordering::SeqCst), 2);
}

async fn push_endpoints_on_the_operators_network_are_refused(backend: TestBackend) {
    let server = Server::start(backend).await;
    let key = server.publisher("guard").await;
    server
        .ok(
            &key,
            Method::POST,
            "/topics",
            Some(json!({"name": "events"})),
        )
        .await;
    let create = |endpoint: &str, concurrency: Value| {
        json!({
            "name": "hook", "topic": "events",
            "push": {"endpoint": endpoint, "max_concurrency": concurrency},
        })
    };
    for (endpoint, code) in [
        ("http://10.0.0.1/hook", "push_endpoint_forbidden"),
        ("http://[::1]:9000/hook", "push_endpoint_forbidden"),
        ("http://169.254.169.254/latest", "push_endpoint_forbidden"),
        ("http://127.0.0.2/hook", "push_endpoint_forbidden"),
        ("ftp://127.0.0.1/hook", "invalid_push_endpoint"),
        ("hook", "invalid_push_endpoint"),
    ] {
        let refused = server
            .refused(
                &key,
                Method::POST,
                "/subscriptions",
                Some(create(endpoint, json!(4))),
            )
            .await;
        assert_eq!(
            refused,
            (StatusCode::BAD_REQUEST, code.into()),
            "{endpoint}"
        );
    }
    let refused = server
        .refused(
            &key,
            Method::POST,
            "/subscriptions",
            Some(create("http://127.0.0.1:9/hook", json!(0))),
        )
        .await;
    assert_eq!(refused.1, "invalid_field");
    let listed = server.ok(&key, Method::GET, "/subscriptions", None).await;
    assert_eq!(listed, json!([]), "nothing refused was stored");

    // The operator allows 127.0.0.1 in the tests; a push subscription is never pulled.
    server
        .ok(
            &key,
            Method::POST,
            "/subscriptions",
            Some(create("http://127.0.0.1:9/hook", json!(1))),
        )
        .await;
    let refused = server
        .refused(
            &key,
            Method::POST,
            "/subscriptions/hook/pull",
            Some(json!({})),
        )
        .await;
    assert_eq!(
        refused,
        (StatusCode::CONFLICT, "subscription_is_push".into())
    );
}

plinth_shared::log_backend_tests!(
    a_push_is_retried_with_backoff_until_the_endpoint_takes_it,
    a_failing_push_is_dead_lettered_and_redriven,
    pushes_in_flight_stay_within_the_concurrency_limit,
    push_endpoints_on_the_operators_network_are_refused,
);
