//! Wire shapes several endpoints share: the `Bearer` scheme, Google APIs' JSON
//! errors and OAuth's.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// The token of an `Authorization: Bearer TOKEN` value; the scheme is case-insensitive.
pub(crate) fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// A Google API error: `{"error": {"code", "message", "status"}}`.
pub(crate) fn api_error(code: StatusCode, status: &str, message: impl Into<String>) -> Response {
    let body =
        json!({"error": {"code": code.as_u16(), "message": message.into(), "status": status}});
    (code, Json(body)).into_response()
}

/// An OAuth 2.0 error: `{"error", "error_description"}` (RFC 6749 §5.2).
pub(crate) fn oauth_error(status: StatusCode, error: &str, description: &str) -> Response {
    let body = json!({"error": error, "error_description": description});
    (status, Json(body)).into_response()
}
