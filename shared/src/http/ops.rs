//! Operational endpoints: liveness, readiness, Prometheus metrics and the OpenAPI document.

use std::collections::{BTreeMap, HashMap};
use std::sync::{LazyLock, OnceLock, PoisonError, RwLock};
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use metrics::{Counter, Histogram};
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
    let route = request.extensions().get::<MatchedPath>().cloned();
    let method = method_label(request.method());
    let started = Instant::now();
    let response = next.run(request).await;
    let route = route.as_ref().map_or("unmatched", MatchedPath::as_str);
    let (requests, duration) = request_metrics(route, method, response.status().as_u16());
    requests.increment(1);
    duration.record(started.elapsed().as_secs_f64());
    response
}

/// The method as a label: the standard ones by name, any other as `other`, so that a client
/// inventing methods cannot grow the metrics without bound.
fn method_label(method: &Method) -> &'static str {
    match method.as_str() {
        "GET" => "GET",
        "HEAD" => "HEAD",
        "POST" => "POST",
        "PUT" => "PUT",
        "PATCH" => "PATCH",
        "DELETE" => "DELETE",
        "OPTIONS" => "OPTIONS",
        _ => "other",
    }
}

/// Handles of one route, method and status's counter and its route and method's histogram.
type Handles = (Counter, Histogram);

/// One route's handles, by method and status.
type RouteHandles = Vec<(&'static str, u16, Handles)>;

/// The handles of every route, method and status seen so far. Routes are the router's
/// patterns (or `unmatched`), methods and statuses few, so the map stays small; looking a
/// handle up here costs a read lock and no allocation, where building the label set and
/// searching the recorder's registry allocated on every request.
fn request_metrics(route: &str, method: &'static str, status: u16) -> Handles {
    static HANDLES: LazyLock<RwLock<HashMap<String, RouteHandles>>> =
        LazyLock::new(RwLock::default);
    let find = |entries: &RouteHandles| {
        entries
            .iter()
            .find(|(m, s, _)| *m == method && *s == status)
            .map(|(_, _, handles)| handles.clone())
    };
    if let Some(handles) = HANDLES
        .read()
        .unwrap_or_else(PoisonError::into_inner)
        .get(route)
        .and_then(&find)
    {
        return handles;
    }
    let mut all = HANDLES.write().unwrap_or_else(PoisonError::into_inner);
    let entries = all.entry(route.to_owned()).or_default();
    if let Some(handles) = find(entries) {
        return handles;
    }
    let handles = (
        metrics::counter!(
            "plinth_http_requests_total",
            "route" => route.to_owned(),
            "method" => method,
            "status" => status.to_string()
        ),
        metrics::histogram!(
            "plinth_http_request_duration_seconds",
            "route" => route.to_owned(),
            "method" => method
        ),
    );
    entries.push((method, status, handles.clone()));
    handles
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invented_methods_share_one_label() {
        assert_eq!(method_label(&Method::GET), "GET");
        assert_eq!(method_label(&Method::DELETE), "DELETE");
        let invented = Method::from_bytes(b"BREW").expect("a valid extension method");
        assert_eq!(method_label(&invented), "other");
        assert_eq!(method_label(&Method::TRACE), "other");
    }
}
