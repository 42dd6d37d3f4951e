//! The metadata server of Compute Engine / Cloud Run / Cloud Build, on the base
//! listener (point `GCE_METADATA_HOST` at [`crate::Emulator::metadata_host`]):
//!
//! - `GET /computeMetadata/v1/instance/service-accounts/{default|EMAIL}/identity?audience=AUD[&format=full]`:
//!   an ID token as text (`format=full` adds the `email` claim, as on Google Cloud);
//! - `.../token`: `{"access_token","expires_in","token_type"}`;
//! - `.../email`: the service account's email;
//! - `GET /computeMetadata/v1/project/project-id`.
//!
//! Requests need `Metadata-Flavor: Google` (else 403, as on Google Cloud); answers
//! carry it too.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, Query, State as AxumState};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::mint::{sign_id_token, with_signing_key};
use crate::state::{ACCESS_TOKEN_LIFETIME, State};

const FLAVOR: &str = "metadata-flavor";

fn flavored(mut response: Response) -> Response {
    response
        .headers_mut()
        .insert(FLAVOR, HeaderValue::from_static("Google"));
    response
}

fn text(status: StatusCode, body: impl Into<String>) -> Response {
    flavored((status, [("content-type", "application/text")], body.into()).into_response())
}

/// The 403 Google's metadata server gives requests without the header, if due.
fn check_flavor(headers: &HeaderMap) -> Option<Response> {
    match headers.get(FLAVOR).and_then(|value| value.to_str().ok()) {
        Some(value) if value.eq_ignore_ascii_case("Google") => None,
        _ => Some(text(
            StatusCode::FORBIDDEN,
            "Missing required header \"Metadata-Flavor\": \"Google\"\n",
        )),
    }
}

/// `GET /computeMetadata/v1/instance/service-accounts/{account}/{item}`.
pub(crate) async fn service_account(
    AxumState(state): AxumState<Arc<State>>,
    Path((account, item)): Path<(String, String)>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    if let Some(refusal) = check_flavor(&headers) {
        return refusal;
    }
    let email = state.identities.metadata_account();
    if account != "default" && !account.eq_ignore_ascii_case(&email) {
        return text(StatusCode::NOT_FOUND, "Not Found\n");
    }
    match item.as_str() {
        "email" => text(StatusCode::OK, email),
        "identity" => {
            let Some(audience) = query.get("audience").filter(|aud| !aud.is_empty()) else {
                return text(
                    StatusCode::BAD_REQUEST,
                    "non-empty audience parameter required\n",
                );
            };
            let full = query.get("format").is_some_and(|format| format == "full");
            let signed = with_signing_key(&state, || {
                let azp = state.id_of(&email);
                sign_id_token(&state, &email, audience, full, &azp)
            });
            match signed {
                Ok(token) => text(StatusCode::OK, token),
                Err(error) => text(StatusCode::INTERNAL_SERVER_ERROR, error.to_string()),
            }
        }
        "token" => {
            let scopes = vec!["https://www.googleapis.com/auth/cloud-platform".to_owned()];
            match state.issue_access_token(&email, scopes) {
                Ok(token) => flavored(
                    Json(json!({
                        "access_token": token,
                        "expires_in": ACCESS_TOKEN_LIFETIME,
                        "token_type": "Bearer",
                    }))
                    .into_response(),
                ),
                Err(error) => text(StatusCode::INTERNAL_SERVER_ERROR, error.to_string()),
            }
        }
        "scopes" => text(
            StatusCode::OK,
            "https://www.googleapis.com/auth/cloud-platform\n",
        ),
        _ => text(StatusCode::NOT_FOUND, "Not Found\n"),
    }
}

/// `GET /computeMetadata/v1/project/project-id`.
pub(crate) async fn project_id(
    AxumState(state): AxumState<Arc<State>>,
    headers: HeaderMap,
) -> Response {
    if let Some(refusal) = check_flavor(&headers) {
        return refusal;
    }
    text(StatusCode::OK, state.project.clone())
}
