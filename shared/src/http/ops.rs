//! Operational endpoints: liveness, readiness, Prometheus metrics and the OpenAPI document.

use std::collections::BTreeMap;
use std::sync::OnceLock;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use plinth_types::console::Readiness;

use crate::shared::Shared;

/// Returns the process's Prometheus recorder, installing it on first use.
pub fn metrics_handle() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let recorder = PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        // Another recorder may already be installed (a test harness); the handle still
        // renders this one's metrics, which is then empty but harmless.
        let _ = metrics::set_global_recorder(recorder);
        handle
    })
}

pub(super) fn router(shared: Shared, api: utoipa::openapi::OpenApi) -> Router {
    metrics_handle();
    let api = std::sync::Arc::new(api);
    Router::new()
        .route(
            "/healthz",
            get(|| async { Json(serde_json::json!({ "status": "ok" })) }),
        )
        .route("/readyz", get(readyz))
        .route("/metrics", get(|| async { metrics_handle().render() }))
        .route(
            "/openapi.json",
            get(move || async move { Json(api.as_ref().clone()) }),
        )
        .with_state(shared)
}

async fn readyz(State(shared): State<Shared>) -> Response {
    let store_ok = shared.store().ping().await.is_ok();
    let checks = BTreeMap::from([(
        format!("metadata:{}", shared.store().backend().as_str()),
        store_ok,
    )]);
    let ready = checks.values().all(|ok| *ok);
    let body = Readiness {
        status: if ready { "ready" } else { "unavailable" }.into(),
        checks,
    };
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body)).into_response()
}

/// Counts requests and their latency per route, method and status.
pub(super) async fn record_metrics(request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |path| path.as_str().to_owned());
    let method = request.method().as_str().to_owned();
    let started = Instant::now();
    let response = next.run(request).await;
    let status = response.status().as_u16().to_string();
    metrics::counter!(
        "plinth_http_requests_total",
        "route" => route.clone(),
        "method" => method.clone(),
        "status" => status
    )
    .increment(1);
    metrics::histogram!("plinth_http_request_duration_seconds", "route" => route, "method" => method)
        .record(started.elapsed().as_secs_f64());
    response
}
