//! The HTTP stack every Plinth process serves: middleware, operational endpoints, and serving
//! with graceful shutdown.

mod errors;
mod ops;
mod request_id;
mod zero_copy;

use std::future::Future;
use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request};
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::middleware;
use tokio::net::TcpListener;
use tower_http::compression::CompressionLayer;
use tower_http::compression::predicate::{DefaultPredicate, Predicate};
use tower_http::cors::{AllowOrigin, Any, CorsLayer};
use tower_http::request_id::{PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;

pub use self::ops::metrics_handle;
use self::request_id::RequestIds;
pub use self::zero_copy::FileRegion;
use self::zero_copy::{ZeroCopy, ZeroCopyListener};
use crate::config::Config;
use crate::extract::JsonBodyLimit;
use crate::shared::Shared;

/// The header that carries the request id, generated when the client sends none.
pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// Wraps the services' routes (and their OpenAPI document) in the common stack: request id,
/// per-request span, error normalisation, metrics, CORS (when origins are configured),
/// compression, timeout and body limit, and zero-copy file bodies, plus `/healthz`, `/readyz`,
/// `/metrics` and `/openapi.json`.
pub fn app(routes: Router, api: utoipa::openapi::OpenApi, shared: &Shared) -> Router {
    let config = shared.config();
    let request_id = HeaderName::from_static(REQUEST_ID_HEADER);
    let mut routes = routes
        .merge(ops::router(shared.clone(), api))
        .fallback(errors::route_not_found)
        .layer(DefaultBodyLimit::max(config.body_limit_bytes))
        .layer(axum::Extension(JsonBodyLimit(config.body_limit_bytes)))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            config.request_timeout,
        ));
    if let Some(cors) = cors(config) {
        routes = routes.layer(cors);
    }
    routes
        .layer(middleware::from_fn(ops::record_metrics))
        .layer(middleware::from_fn(errors::normalize))
        // Outside `normalize`, so the error bodies it rewrites are compressed after it.
        .layer(CompressionLayer::new().compress_when(compressible()))
        .layer(TraceLayer::new_for_http().make_span_with(request_span))
        .layer(PropagateRequestIdLayer::new(request_id.clone()))
        .layer(SetRequestIdLayer::new(request_id, RequestIds::new()))
        // Outermost, so that what it hands to hyper is what hyper writes.
        .layer(middleware::from_fn(zero_copy::swap_body))
}

/// tower-http's default choice (not images, not tiny bodies, not streams of events), minus
/// stored objects: those are served byte for byte, with their length and ranges intact.
fn compressible() -> impl Predicate {
    DefaultPredicate::new().and(
        |_: StatusCode,
         _: axum::http::Version,
         headers: &axum::http::HeaderMap,
         _: &axum::http::Extensions| {
            !headers.contains_key(axum::http::header::ACCEPT_RANGES)
        },
    )
}

/// One span per request, named by the matched route, never the raw URI (which may carry
/// object keys and would explode cardinality).
fn request_span(request: &Request) -> tracing::Span {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(MatchedPath::as_str)
        .unwrap_or("unmatched");
    let request_id = request
        .headers()
        .get(REQUEST_ID_HEADER)
        .and_then(|value| value.to_str().ok())
        .unwrap_or("");
    tracing::debug_span!(
        "request",
        method = %request.method(),
        route,
        request_id,
        project_id = tracing::field::Empty,
    )
}

/// The CORS layer for the configured origins; none when no origin is configured. A browser
/// then gets no CORS headers at all, as it got no `Access-Control-Allow-Origin` from the layer
/// either, and every request is spared the layer's work (a header map built per request and a
/// `Vary` header on every response: a tenth of the stack's cost per request).
fn cors(config: &Config) -> Option<CorsLayer> {
    if config.cors_origins.is_empty() {
        return None;
    }
    let request_id = HeaderName::from_static(REQUEST_ID_HEADER);
    let layer = CorsLayer::new()
        .allow_methods(Any)
        .allow_headers(Any)
        .expose_headers([request_id, HeaderName::from_static("retry-after")])
        .max_age(Duration::from_secs(600));
    if config.cors_origins.iter().any(|origin| origin == "*") {
        return Some(layer.allow_origin(Any));
    }
    let origins: Vec<HeaderValue> = config
        .cors_origins
        .iter()
        .filter_map(|origin| HeaderValue::from_str(origin).ok())
        .collect();
    Some(layer.allow_origin(AllowOrigin::list(origins)))
}

/// Serves `app` on `listener` until `shutdown` resolves, then gives in-flight requests
/// `grace` to finish, and flushes the shared state.
///
/// # Errors
///
/// Returns the listener's I/O failure.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    shared: Shared,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let grace = shared.config().shutdown_grace;
    let (stopping_tx, mut stopping_rx) = tokio::sync::watch::channel(false);
    let stopping = shared.clone();
    let signal = async move {
        shutdown.await;
        tracing::info!("shutting down; draining in-flight requests");
        stopping.begin_shutdown();
        let _ = stopping_tx.send(true);
    };
    let server = axum::serve(
        ZeroCopyListener(listener),
        app.into_make_service_with_connect_info::<ZeroCopy>(),
    )
    .with_graceful_shutdown(signal);
    let deadline = async move {
        let _ = stopping_rx.wait_for(|stopping| *stopping).await;
        tokio::time::sleep(grace).await;
    };
    tokio::select! {
        result = server => result?,
        () = deadline => tracing::warn!(?grace, "requests still running after the grace period; stopping"),
    }
    shared.shutdown().await;
    Ok(())
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
}
