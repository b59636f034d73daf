//! The SDK on the wire, against a fake server on a loopback port that answers each connection
//! with the next canned response: retries, error bodies, and what the requests look like.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use plinth_sdk::types::ErrorCode;
use plinth_sdk::types::console::PageQuery;
use plinth_sdk::{Client, Error};

const UNAVAILABLE: &str = r#"{"code":"unavailable","message":"backend down","request_id":"r-1"}"#;

/// A server that answers the n-th connection with the n-th response, then with 500s, and keeps
/// every request it read.
struct FakeServer {
    url: String,
    requests: Arc<Mutex<Vec<String>>>,
}

impl FakeServer {
    async fn start(responses: Vec<String>) -> FakeServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let requests = Arc::new(Mutex::new(Vec::new()));

        let seen = Arc::clone(&requests);
        tokio::spawn(async move {
            let mut responses = responses.into_iter();
            while let Ok((stream, _)) = listener.accept().await {
                let response = responses.next().unwrap_or_else(|| reply(500, "", "{}"));
                answer(stream, &response, &seen).await;
            }
        });

        FakeServer { url, requests }
    }

    /// A client of this server; retries are quick because the canned 503s say `Retry-After: 0`.
    fn client(&self) -> Client {
        Client::builder()
            .base_url(&self.url)
            .token("test-token")
            .build()
            .unwrap()
    }

    /// The requests received so far, lowercased.
    fn requests(&self) -> Vec<String> {
        self.requests.lock().unwrap().clone()
    }
}

/// Reads one request (head and `content-length` body), records it, and writes `response`.
async fn answer(mut stream: TcpStream, response: &str, seen: &Mutex<Vec<String>>) {
    let mut request = Vec::new();
    let mut chunk = [0; 4096];

    let mut expected = None;
    while expected.is_none_or(|len| request.len() < len) {
        let read = stream.read(&mut chunk).await.unwrap();
        if read == 0 {
            return;
        }
        request.extend_from_slice(&chunk[..read]);

        if expected.is_none() {
            expected = request_len(&request);
        }
    }

    seen.lock()
        .unwrap()
        .push(String::from_utf8_lossy(&request).to_lowercase());
    stream.write_all(response.as_bytes()).await.unwrap();
    stream.shutdown().await.unwrap();
}

/// Returns the full length of a request once its head has arrived.
fn request_len(received: &[u8]) -> Option<usize> {
    let head_len = received
        .windows(4)
        .position(|window| window == b"\r\n\r\n")?
        + 4;
    let head = String::from_utf8_lossy(&received[..head_len]).to_lowercase();
    let body_len = head
        .lines()
        .find_map(|line| line.strip_prefix("content-length:"))
        .map_or(0, |len| len.trim().parse().unwrap());
    Some(head_len + body_len)
}

/// A response with `status`, extra header lines (each ending in CRLF) and a JSON body.
fn reply(status: u16, headers: &str, body: &str) -> String {
    format!(
        "HTTP/1.1 {status} Canned\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\
         connection: close\r\n{headers}\r\n{body}",
        body.len()
    )
}

fn unavailable() -> String {
    reply(503, "retry-after: 0\r\n", UNAVAILABLE)
}

#[tokio::test]
async fn get_succeeds_after_one_retry_on_503() {
    let server = FakeServer::start(vec![unavailable(), reply(200, "", "[]")]).await;

    let keys = server.client().signing_keys().await.unwrap();

    assert!(keys.is_empty());
    let requests = server.requests();
    assert_eq!(requests.len(), 2);
    for request in &requests {
        assert!(
            request.starts_with("get /console/v1/signing-keys http/1.1\r\n"),
            "{request}"
        );
        assert!(
            request.contains("\r\nauthorization: bearer test-token\r\n"),
            "{request}"
        );
    }
}

#[tokio::test]
async fn post_gets_the_503_without_a_retry() {
    let server = FakeServer::start(vec![unavailable(), reply(200, "", "{}")]).await;

    let err = server.client().rotate_signing_key().await.unwrap_err();

    assert_eq!(err.code(), Some(ErrorCode::Unavailable));
    assert_eq!((err.status(), err.request_id()), (Some(503), Some("r-1")));
    assert_eq!(server.requests().len(), 1);
}

#[tokio::test]
async fn retries_stop_after_max_retries() {
    let server = FakeServer::start(vec![unavailable(); 4]).await;
    let client = Client::builder()
        .base_url(&server.url)
        .max_retries(2)
        .build()
        .unwrap();

    let err = client.get_quotas("prj_1").await.unwrap_err();

    assert_eq!(err.status(), Some(503));
    assert_eq!(server.requests().len(), 3);
}

#[tokio::test]
async fn rate_limited_get_waits_for_retry_after() {
    let limited = r#"{"code":"rate_limited","message":"slow down","request_id":null}"#;
    let responses = vec![
        reply(429, "retry-after: 1\r\n", limited),
        reply(200, "", "[]"),
    ];
    let server = FakeServer::start(responses).await;
    let started = Instant::now();

    server.client().signing_keys().await.unwrap();

    assert!(
        started.elapsed() >= Duration::from_millis(950),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(server.requests().len(), 2);
}

#[tokio::test]
async fn proxy_error_page_is_an_unknown_api_error_after_backoff() {
    let page = "<html>502 Bad Gateway</html>";
    let server = FakeServer::start(vec![reply(502, "", page), reply(502, "", page)]).await;
    let client = Client::builder()
        .base_url(&server.url)
        .max_retries(1)
        .build()
        .unwrap();

    let err = client.health().await.unwrap_err();

    let Error::Api {
        status,
        code,
        message,
        ..
    } = &err
    else {
        panic!("expected an api error, got {err:?}");
    };
    assert_eq!(
        (*status, code.as_str(), message.as_str()),
        (502, "unknown", page)
    );
    assert_eq!(server.requests().len(), 2);
}

#[tokio::test]
async fn client_errors_are_not_retried_and_ids_are_encoded() {
    let missing = r#"{"code":"project_not_found","message":"no such project","request_id":"r-2"}"#;
    let server = FakeServer::start(vec![reply(404, "", missing)]).await;

    let err = server.client().get_project("prj 1/../x").await.unwrap_err();

    assert_eq!(err.code(), Some(ErrorCode::ProjectNotFound));
    let requests = server.requests();
    assert_eq!(requests.len(), 1);
    assert!(
        requests[0].starts_with("get /console/v1/projects/prj%201%2f..%2fx "),
        "{requests:?}"
    );
}

#[tokio::test]
async fn page_query_sends_only_present_fields() {
    let server =
        FakeServer::start(vec![reply(200, "", r#"{"items":[],"next_cursor":null}"#)]).await;

    let page = PageQuery {
        limit: Some(2),
        cursor: None,
    };
    let listed = server.client().list_projects(&page).await.unwrap();

    assert!(listed.items.is_empty() && listed.next_cursor.is_none());
    let requests = server.requests();
    assert!(
        requests[0].starts_with("get /console/v1/projects?limit=2 "),
        "{requests:?}"
    );
}

#[tokio::test]
async fn delete_with_no_content_succeeds() {
    let server = FakeServer::start(vec![reply(204, "", "")]).await;

    server.client().delete_project("prj_1").await.unwrap();

    assert!(server.requests()[0].starts_with("delete /console/v1/projects/prj_1 "));
}

#[tokio::test]
async fn success_body_of_the_wrong_shape_is_a_decode_error() {
    let server = FakeServer::start(vec![reply(200, "", r#"{"unexpected":true}"#)]).await;

    let err = server.client().get_project("prj_1").await.unwrap_err();

    assert!(matches!(err, Error::Decode(_)), "{err:?}");
}

#[tokio::test]
async fn unreachable_server_is_a_transport_error() {
    // Binding and dropping a listener finds a port that nothing listens on.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    let client = Client::builder()
        .base_url(url)
        .max_retries(0)
        .build()
        .unwrap();

    let err = client.health().await.unwrap_err();

    assert!(matches!(err, Error::Transport(_)), "{err:?}");
}
