//! Extractors that turn bad input into the project's error codes, and pagination helpers.
//!
//! axum's own extractors answer malformed input with plain-text bodies; these wrap them so a
//! client always gets `{ "code", "message", "request_id" }` with a code specific to the
//! failure (`malformed_json`, `unknown_field`, `invalid_field`, `payload_too_large`, ...).

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, FailedToBufferBody};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::header::CONTENT_TYPE;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use plinth_types::console::Page;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::ApiError;

/// The largest JSON body the server accepts, placed in each request's extensions by the HTTP
/// stack so that [`Json`] can refuse a declared-oversize body without reading it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct JsonBodyLimit(pub usize);

/// A JSON body, parsed strictly: the body must be `application/json`, within the body limit,
/// and match the type (unknown fields are refused where the type says so).
#[derive(Clone, Copy, Debug, Default)]
pub struct Json<T>(pub T);

impl<T, S> FromRequest<S> for Json<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let is_json = req
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.split(';').next())
            .is_some_and(|mime| {
                let mime = mime.trim();
                mime.eq_ignore_ascii_case("application/json") || mime.ends_with("+json")
            });
        if !is_json {
            return Err(ApiError::UnsupportedMediaType);
        }
        // A body declared larger than the limit is refused before any of it is read.
        let limit = req.extensions().get::<JsonBodyLimit>().map(|limit| limit.0);
        let declared = req
            .headers()
            .get(axum::http::header::CONTENT_LENGTH)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.parse::<usize>().ok());
        if let (Some(limit), Some(declared)) = (limit, declared)
            && declared > limit
        {
            return Err(ApiError::PayloadTooLarge);
        }
        let bytes = Bytes::from_request(req, state)
            .await
            .map_err(|rejection| match rejection {
                BytesRejection::FailedToBufferBody(FailedToBufferBody::LengthLimitError(_)) => {
                    ApiError::PayloadTooLarge
                }
                // The client went away or sent a broken body.
                BytesRejection::FailedToBufferBody(other) => ApiError::MalformedJson(format!(
                    "the body could not be read: {}",
                    other.body_text()
                )),
                other => ApiError::InvalidParameter(other.body_text()),
            })?;
        parse_json(&bytes).map(Json)
    }
}

/// Parses a JSON document into `T`, classifying the failure by serde's categories.
///
/// # Errors
///
/// Returns `malformed_json` for a syntax error, `unknown_field` for a field `T` refuses, and
/// `invalid_field` (with the field's path) for a wrong type or value.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut deserializer).map_err(|err| {
        let path = err.path().to_string();
        let inner = err.into_inner();
        classify(path, inner)
    })?;
    deserializer
        .end()
        .map_err(|err| ApiError::MalformedJson(err.to_string()))?;
    Ok(value)
}

fn classify(path: String, err: serde_json::Error) -> ApiError {
    use serde_json::error::Category;
    match err.classify() {
        Category::Syntax | Category::Eof | Category::Io => ApiError::MalformedJson(err.to_string()),
        Category::Data => {
            let message = err.to_string();
            if message.starts_with("unknown field") {
                ApiError::UnknownField(format!("at `{path}`: {message}"))
            } else {
                ApiError::InvalidField {
                    field: path,
                    reason: message,
                }
            }
        }
    }
}

impl<T: Serialize> IntoResponse for Json<T> {
    fn into_response(self) -> Response {
        axum::Json(self.0).into_response()
    }
}

/// A query string, parsed into `T`; a failure is `invalid_parameter`.
#[derive(Clone, Copy, Debug, Default)]
pub struct Query<T>(pub T);

impl<T, S> FromRequestParts<S> for Query<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Query(value)| Query(value))
            .map_err(|rejection| ApiError::InvalidParameter(rejection.body_text()))
    }
}

/// Path parameters, parsed into `T`; a failure is `invalid_parameter`.
#[derive(Clone, Copy, Debug, Default)]
pub struct Path<T>(pub T);

impl<T, S> FromRequestParts<S> for Path<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Path(value)| Path(value))
            .map_err(|rejection| ApiError::InvalidParameter(rejection.body_text()))
    }
}

/// The request id (`x-request-id`), generated by the HTTP stack when the client sent none.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestId(pub String);

impl<S: Send + Sync> FromRequestParts<S> for RequestId {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let id = parts
            .headers
            .get(crate::http::REQUEST_ID_HEADER)
            .and_then(|value| value.to_str().ok())
            .unwrap_or("unknown");
        Ok(RequestId(id.to_owned()))
    }
}

/// A validated page request: how many items, and the id to continue after.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PageRequest {
    /// Items per page.
    pub limit: usize,
    /// The last id of the previous page.
    pub after: Option<String>,
}

impl PageRequest {
    /// Validates `limit` (1 to 1000, default 100) and decodes `cursor`.
    ///
    /// # Errors
    ///
    /// Returns `invalid_parameter` for a bad limit and `invalid_cursor` for a cursor this
    /// server did not issue.
    pub fn parse(limit: Option<u32>, cursor: Option<&str>) -> Result<PageRequest, ApiError> {
        let limit = limit.unwrap_or(100);
        if !(1..=1000).contains(&limit) {
            return Err(ApiError::InvalidParameter(
                "`limit` must be 1 to 1000".into(),
            ));
        }
        let after = cursor.map(decode_cursor).transpose()?;
        Ok(PageRequest {
            limit: limit as usize,
            after,
        })
    }
}

fn decode_cursor(cursor: &str) -> Result<String, ApiError> {
    let bytes = URL_SAFE_NO_PAD
        .decode(cursor)
        .map_err(|_| ApiError::InvalidCursor)?;
    let id = String::from_utf8(bytes).map_err(|_| ApiError::InvalidCursor)?;
    let well_formed = id.split_once('_').is_some_and(|(prefix, rest)| {
        !prefix.is_empty() && rest.bytes().all(|b| b.is_ascii_hexdigit())
    });
    if well_formed {
        Ok(id)
    } else {
        Err(ApiError::InvalidCursor)
    }
}

/// Converts the rows of a listing fetched with `LIMIT limit + 1` into a page: the extra row,
/// if any, only says that another page exists.
///
/// # Errors
///
/// Returns the first row that cannot be converted.
pub fn page_from_rows<T>(
    rows: &[sqlx::any::AnyRow],
    limit: usize,
    convert: impl Fn(&sqlx::any::AnyRow) -> Result<T, ApiError>,
    id: impl Fn(&T) -> String,
) -> Result<Page<T>, ApiError> {
    let mut items = rows.iter().map(convert).collect::<Result<Vec<_>, _>>()?;
    Ok(paginate(&mut items, limit, id))
}

/// Cuts `items` (fetched with one extra row) to `limit` and sets the cursor when more exist.
pub fn paginate<T>(items: &mut Vec<T>, limit: usize, id: impl Fn(&T) -> String) -> Page<T> {
    let more = items.len() > limit;
    items.truncate(limit);
    let next_cursor = if more {
        items.last().map(|item| URL_SAFE_NO_PAD.encode(id(item)))
    } else {
        None
    };
    Page {
        items: std::mem::take(items),
        next_cursor,
    }
}

#[cfg(test)]
mod tests {
    use plinth_types::ErrorCode;
    use plinth_types::console::CreateProject;

    use super::*;

    #[test]
    fn json_failures_get_specific_codes() {
        let code = |body: &str| {
            parse_json::<CreateProject>(body.as_bytes())
                .unwrap_err()
                .code()
        };
        assert_eq!(code("{\"name\": "), ErrorCode::MalformedJson);
        assert_eq!(code("not json"), ErrorCode::MalformedJson);
        assert_eq!(code("{\"name\":\"a\",\"x\":1}"), ErrorCode::UnknownField);
        assert_eq!(code("{\"name\": 5}"), ErrorCode::InvalidField);
        assert_eq!(code("{}"), ErrorCode::InvalidField);
        assert_eq!(code("{\"name\":\"a\"} trailing"), ErrorCode::MalformedJson);
    }

    #[test]
    fn cursors_round_trip_and_forgeries_are_refused() {
        let mut items = vec!["prj_01", "prj_02", "prj_03"];
        let page = paginate(&mut items, 2, |s| s.to_string());
        assert_eq!(page.items, vec!["prj_01", "prj_02"]);
        let cursor = page.next_cursor.unwrap();
        let request = PageRequest::parse(None, Some(&cursor)).unwrap();
        assert_eq!(request.after.as_deref(), Some("prj_02"));
        assert!(PageRequest::parse(None, Some("!!")).is_err());
        let forged = URL_SAFE_NO_PAD.encode("x' OR 1=1");
        assert!(PageRequest::parse(None, Some(&forged)).is_err());
        assert!(PageRequest::parse(Some(0), None).is_err());
        assert!(PageRequest::parse(Some(1001), None).is_err());
    }
}
