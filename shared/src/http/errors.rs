//! Error responses: the request id added to every error body, 5xx causes logged once, and
//! axum's and tower-http's bodiless errors rewritten into the project's format.

use axum::extract::Request;
use axum::http::header::{CONTENT_ENCODING, CONTENT_LENGTH, CONTENT_TYPE};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use plinth_types::ErrorCode;

use super::REQUEST_ID_HEADER;
use crate::error::{ApiError, ErrorReport, error_response};

/// The fallback for paths no service routes.
pub(super) async fn route_not_found() -> ApiError {
    ApiError::RouteNotFound
}

pub(super) async fn normalize(request: Request, next: Next) -> Response {
    let request_id = request
        .headers()
        .get(REQUEST_ID_HEADER)
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned);
    let response = next.run(request).await;
    let status = response.status();
    if !status.is_client_error() && !status.is_server_error() {
        return response;
    }

    let report = match response.extensions().get::<ErrorReport>() {
        Some(report) => report.clone(),
        None if is_json(&response) => return response,
        // A layer or the router answered without a body of ours (405, 408, 413, ...).
        None => {
            let code = code_for_status(status.as_u16());
            let message = match code {
                ErrorCode::MethodNotAllowed => ApiError::MethodNotAllowed.to_string(),
                ErrorCode::RequestTimeout => ApiError::RequestTimeout.to_string(),
                ErrorCode::PayloadTooLarge => ApiError::PayloadTooLarge.to_string(),
                ErrorCode::RouteNotFound => ApiError::RouteNotFound.to_string(),
                _ => status.canonical_reason().unwrap_or("error").to_lowercase(),
            };
            ErrorReport {
                code,
                message,
                details: None,
                cause: None,
            }
        }
    };
    if let Some(cause) = &report.cause {
        tracing::error!(
            code = %report.code,
            request_id = request_id.as_deref().unwrap_or(""),
            cause = %cause,
            "request failed"
        );
    }

    let mut rewritten = error_response(report, request_id);
    // Keep headers the original error set (Retry-After, RateLimit-*, Allow, ...), but none
    // that describe the old body.
    let body_headers = [CONTENT_TYPE, CONTENT_LENGTH, CONTENT_ENCODING];
    for (name, value) in response.headers() {
        if !body_headers.contains(name) {
            rewritten.headers_mut().insert(name.clone(), value.clone());
        }
    }
    *rewritten.status_mut() = status;
    rewritten.into_response()
}

fn is_json(response: &Response) -> bool {
    response
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.starts_with("application/json"))
}

fn code_for_status(status: u16) -> ErrorCode {
    match status {
        404 => ErrorCode::RouteNotFound,
        405 => ErrorCode::MethodNotAllowed,
        408 => ErrorCode::RequestTimeout,
        413 => ErrorCode::PayloadTooLarge,
        415 => ErrorCode::UnsupportedMediaType,
        429 => ErrorCode::RateLimited,
        503 => ErrorCode::Unavailable,
        400..=499 => ErrorCode::InvalidParameter,
        _ => ErrorCode::Internal,
    }
}
