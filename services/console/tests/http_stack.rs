//! The HTTP stack every service shares, seen from outside through the console: error bodies
//! and request ids, the operational endpoints, and CORS, on every metadata backend.

mod common;

use plinth_shared::backend_tests;
use plinth_shared::testkit::TestBackend;
use plinth_types::ErrorBody;
use plinth_types::console::PageQuery;

use common::Server;

async fn errors_are_json_with_a_request_id(backend: TestBackend) {
    let server = Server::start(backend).await;
    let http = server.http();

    let missing = http
        .get(format!("{}/console/v1/projects", server.url))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 401);
    let echoed = missing.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    let body: ErrorBody = missing.json().await.unwrap();
    assert_eq!(body.code, "missing_credentials");
    assert_eq!(body.request_id.as_deref(), Some(echoed.as_str()));

    let nowhere = http
        .get(format!("{}/no/such/route", server.url))
        .header("x-request-id", "req-123")
        .send()
        .await
        .unwrap();
    assert_eq!(nowhere.status(), 404);
    assert_eq!(nowhere.headers()["x-request-id"], "req-123");
    let body: ErrorBody = nowhere.json().await.unwrap();
    assert_eq!(
        (body.code.as_str(), body.request_id.as_deref()),
        ("route_not_found", Some("req-123"))
    );

    let wrong_method = http
        .put(format!("{}/console/v1/audit", server.url))
        .send()
        .await
        .unwrap();
    assert_eq!(wrong_method.status(), 405);
    assert_eq!(
        wrong_method.json::<ErrorBody>().await.unwrap().code,
        "method_not_allowed"
    );

    // A client that accepts gzip gets the same JSON errors, compressed.
    let gzip = reqwest::Client::builder().gzip(true).build().unwrap();
    for url in [
        format!("{}/no/such/route", server.url),
        format!("{}/console/v1/projects", server.url),
    ] {
        let response = gzip.get(&url).send().await.unwrap();
        assert!(response.status().is_client_error());
        let body: ErrorBody = response
            .json()
            .await
            .unwrap_or_else(|e| panic!("{url}: {e}"));
        assert!(body.request_id.is_some());
    }

    let basic = http
        .get(format!("{}/console/v1/projects", server.url))
        .header("authorization", "Basic dXNlcjpwYXNz")
        .send()
        .await
        .unwrap();
    assert_eq!(
        basic.json::<ErrorBody>().await.unwrap().code,
        "missing_credentials"
    );
}

async fn operational_endpoints_answer(backend: TestBackend) {
    let server = Server::start(backend).await;
    let http = server.http();
    server.admin.health().await.unwrap();

    let ready = http
        .get(format!("{}/readyz", server.url))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 200);
    let ready: serde_json::Value = ready.json().await.unwrap();
    assert_eq!(ready["status"], "ready");

    // Each request is counted, also once the series' handles are cached. Other tests in this
    // binary may list projects at the same time, so the count only has to grow.
    let listed = || async {
        server
            .admin
            .list_projects(&PageQuery::default())
            .await
            .unwrap();
        let metrics = http
            .get(format!("{}/metrics", server.url))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let series = concat!(
            "plinth_http_requests_total",
            r#"{route="/console/v1/projects",method="GET",status="200"}"#
        );
        metrics
            .lines()
            .find_map(|line| line.strip_prefix(series))
            .unwrap_or_else(|| panic!("no {series} in {metrics}"))
            .trim()
            .parse::<u64>()
            .unwrap()
    };
    let first = listed().await;
    let second = listed().await;
    assert!(second > first, "{first} then {second}");

    let api: serde_json::Value = http
        .get(format!("{}/openapi.json", server.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    for path in [
        "/console/v1/projects",
        "/console/v1/projects/{project}/keys",
        "/console/v1/tokens",
        "/.well-known/jwks.json",
    ] {
        assert!(
            api["paths"][path].is_object(),
            "{path} missing from the OpenAPI document"
        );
    }
    assert!(api["components"]["schemas"]["Project"].is_object());
}

async fn cors_allows_only_configured_origins(mut backend: TestBackend) {
    backend.config.cors_origins = vec!["https://app.example".into()];
    let server = Server::start(backend).await;
    let http = server.http();
    let url = format!("{}/console/v1/projects", server.url);

    let preflight = http
        .request(reqwest::Method::OPTIONS, &url)
        .header("origin", "https://app.example")
        .header("access-control-request-method", "POST")
        .header(
            "access-control-request-headers",
            "authorization,content-type",
        )
        .send()
        .await
        .unwrap();
    assert!(preflight.status().is_success());
    assert_eq!(
        preflight.headers()["access-control-allow-origin"],
        "https://app.example"
    );

    let foreign = http
        .get(&url)
        .header("origin", "https://evil.example")
        .send()
        .await
        .unwrap();
    assert!(
        foreign
            .headers()
            .get("access-control-allow-origin")
            .is_none()
    );
}

async fn no_cors_headers_without_configured_origins(backend: TestBackend) {
    assert!(backend.config.cors_origins.is_empty());
    let server = Server::start(backend).await;
    let http = server.http();
    let url = format!("{}/healthz", server.url);

    let plain = http
        .get(&url)
        .header("origin", "https://app.example")
        .send()
        .await
        .unwrap();
    assert!(plain.status().is_success());
    let cors_headers: Vec<_> = plain
        .headers()
        .iter()
        .filter(|(name, value)| {
            name.as_str().starts_with("access-control-")
                || (*name == "vary" && value.to_str().unwrap_or("").contains("origin"))
        })
        .collect();
    assert!(cors_headers.is_empty(), "{cors_headers:?}");

    let preflight = http
        .request(reqwest::Method::OPTIONS, &url)
        .header("origin", "https://app.example")
        .header("access-control-request-method", "GET")
        .send()
        .await
        .unwrap();
    assert!(!preflight.status().is_success(), "{}", preflight.status());
    assert!(
        preflight
            .headers()
            .get("access-control-allow-origin")
            .is_none()
    );
}

backend_tests!(
    errors_are_json_with_a_request_id,
    operational_endpoints_answer,
    cors_allows_only_configured_origins,
    no_cors_headers_without_configured_origins,
);
