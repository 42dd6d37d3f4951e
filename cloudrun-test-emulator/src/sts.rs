//! Security Token Service, `POST /v1/token`: the token-exchange grant of workload
//! identity federation. A subject token registered with
//! [`crate::EmulatorBuilder::workload_identity_subject`] becomes a federated access
//! token for its principal, which IAM Credentials then accepts as a caller.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State as AxumState;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::protocol::oauth_error;
use crate::state::{ACCESS_TOKEN_LIFETIME, State};

const TOKEN_EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
const ACCESS_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:access_token";
const SUBJECT_TOKEN_TYPES: [&str; 4] = [
    "urn:ietf:params:oauth:token-type:jwt",
    "urn:ietf:params:oauth:token-type:id_token",
    "urn:ietf:params:oauth:token-type:saml2",
    "urn:ietf:params:aws:token-type:aws4_request",
];

fn refuse(error: &str, description: impl Into<String>) -> Response {
    let description = description.into();
    tracing::info!(error, %description, "token exchange refused");
    oauth_error(StatusCode::BAD_REQUEST, error, &description)
}

/// `POST /v1/token`, form-encoded (as Google's libraries send it).
pub(crate) async fn token(AxumState(state): AxumState<Arc<State>>, body: Bytes) -> Response {
    let form: Vec<(String, String)> = url::form_urlencoded::parse(&body).into_owned().collect();
    let param = |name: &str| {
        form.iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
            .filter(|value| !value.is_empty())
    };
    let grant_type = param("grant_type").unwrap_or_default();
    if grant_type != TOKEN_EXCHANGE {
        return refuse(
            "unsupported_grant_type",
            format!("Invalid value for \"grant_type\": {grant_type:?} (expected {TOKEN_EXCHANGE})"),
        );
    }
    let Some(audience) = param("audience") else {
        return refuse("invalid_request", "Missing required field \"audience\".");
    };
    if !audience.starts_with("//iam.googleapis.com/")
        || !(audience.contains("/workloadIdentityPools/") || audience.contains("/workforcePools/"))
    {
        return refuse(
            "invalid_target",
            format!(
                "The target service indicated by the \"audience\" parameters is invalid. \
                 ({audience:?} is not a workload identity provider's resource name)"
            ),
        );
    }
    match param("requested_token_type") {
        Some(ACCESS_TOKEN_TYPE) => {}
        other => {
            return refuse(
                "invalid_request",
                format!("Invalid value for \"requested_token_type\": {other:?}"),
            );
        }
    }
    match param("subject_token_type") {
        Some(kind) if SUBJECT_TOKEN_TYPES.contains(&kind) => {}
        other => {
            return refuse(
                "invalid_request",
                format!("Invalid value for \"subject_token_type\": {other:?}"),
            );
        }
    }
    let Some(subject_token) = param("subject_token") else {
        return refuse(
            "invalid_request",
            "Missing required field \"subject_token\".",
        );
    };
    let Some(principal) = state.identities.subject_principal(subject_token) else {
        return refuse(
            "invalid_grant",
            "The subject token is not valid for this workload identity provider. (register it \
             with EmulatorBuilder::workload_identity_subject)",
        );
    };
    let scopes: Vec<String> = param("scope")
        .unwrap_or("https://www.googleapis.com/auth/cloud-platform")
        .split_whitespace()
        .map(str::to_owned)
        .collect();
    match state.issue_access_token(&principal, scopes) {
        Ok(token) => {
            tracing::info!(%principal, "issued a federated access token");
            Json(json!({
                "access_token": token,
                "issued_token_type": ACCESS_TOKEN_TYPE,
                "token_type": "Bearer",
                "expires_in": ACCESS_TOKEN_LIFETIME,
            }))
            .into_response()
        }
        Err(error) => refuse("internal_failure", error.to_string()),
    }
}
