//! IAM Credentials: `POST /v1/projects/-/serviceAccounts/EMAIL:generateIdToken` and
//! `:generateAccessToken`, for callers holding an access token issued here (a service
//! account's, a user's, a metadata server's or a federated one) and a token-creator
//! grant on the target (through every delegate, if any).

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State as AxumState};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::clock::{now, rfc3339};
use crate::mint::{sign_id_token, with_signing_key};
use crate::protocol::{api_error, bearer_token};
use crate::state::{ACCESS_TOKEN_LIFETIME, State};

/// Scopes that allow calling IAM Credentials.
const IAM_SCOPES: [&str; 2] = [
    "https://www.googleapis.com/auth/cloud-platform",
    "https://www.googleapis.com/auth/iam",
];

/// `POST /v1/projects/{project}/serviceAccounts/{email}:{method}`.
pub(crate) async fn service_account(
    AxumState(state): AxumState<Arc<State>>,
    Path((_project, resource)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some((target, method)) = resource.rsplit_once(':') else {
        return api_error(
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
            format!("Method not found: {resource}"),
        );
    };
    let target = target.replace("%40", "@");
    let permission = match method {
        "generateIdToken" => "iam.serviceAccounts.getOpenIdToken",
        "generateAccessToken" => "iam.serviceAccounts.getAccessToken",
        _ => {
            return api_error(
                StatusCode::NOT_FOUND,
                "NOT_FOUND",
                format!(
                    "Method not found: {method} (the emulator serves generateIdToken and generateAccessToken)"
                ),
            );
        }
    };
    let caller = match headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(bearer_token)
        .and_then(|token| state.access_grant(token))
    {
        Some((caller, scopes))
            if scopes
                .iter()
                .any(|scope| IAM_SCOPES.contains(&scope.as_str())) =>
        {
            caller
        }
        Some(_) => {
            return api_error(
                StatusCode::FORBIDDEN,
                "PERMISSION_DENIED",
                "Request had insufficient authentication scopes.",
            );
        }
        None => {
            return api_error(
                StatusCode::UNAUTHORIZED,
                "UNAUTHENTICATED",
                "Request had invalid authentication credentials. Expected OAuth 2 access token, \
                 login cookie or other valid authentication credential.",
            );
        }
    };
    let request: Value = match serde_json::from_slice(&body) {
        Ok(request @ Value::Object(_)) => request,
        _ => {
            return api_error(
                StatusCode::BAD_REQUEST,
                "INVALID_ARGUMENT",
                "Invalid JSON payload received.",
            );
        }
    };
    let delegates: Vec<String> = match request.get("delegates") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) => {
            let mut delegates = Vec::new();
            for item in items {
                let Some(name) = item.as_str() else {
                    return api_error(
                        StatusCode::BAD_REQUEST,
                        "INVALID_ARGUMENT",
                        "Invalid value at 'delegates': not a string.",
                    );
                };
                delegates.push(
                    name.rsplit_once("/serviceAccounts/")
                        .map_or(name, |(_, email)| email)
                        .to_owned(),
                );
            }
            delegates
        }
        Some(_) => {
            return api_error(
                StatusCode::BAD_REQUEST,
                "INVALID_ARGUMENT",
                "Invalid value at 'delegates': not a list.",
            );
        }
    };
    // caller -> delegate 1 -> ... -> target: every hop needs a grant.
    let mut hop_caller = caller.clone();
    for hop in delegates.iter().chain(std::iter::once(&target)) {
        if !state.identities.may_impersonate(&hop_caller, hop) {
            tracing::info!(caller = %hop_caller, target = %hop, permission, "impersonation denied");
            return api_error(
                StatusCode::FORBIDDEN,
                "PERMISSION_DENIED",
                format!(
                    "Permission '{permission}' denied on resource (or it may not exist). \
                     ({hop_caller} may not impersonate {hop}; grant it with \
                     EmulatorBuilder::token_creator)"
                ),
            );
        }
        hop_caller = hop.clone();
    }

    if method == "generateIdToken" {
        let Some(audience) = request
            .get("audience")
            .and_then(Value::as_str)
            .filter(|aud| !aud.is_empty())
        else {
            return api_error(
                StatusCode::BAD_REQUEST,
                "INVALID_ARGUMENT",
                "Request contains an invalid argument. (audience is required)",
            );
        };
        let include_email = request
            .get("includeEmail")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        let signed = with_signing_key(&state, || {
            let azp = state.id_of(&target);
            sign_id_token(&state, &target, audience, include_email, &azp)
        });
        return match signed {
            Ok(token) => Json(json!({ "token": token })).into_response(),
            Err(error) => api_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "INTERNAL",
                error.to_string(),
            ),
        };
    }
    let scopes: Vec<String> = request
        .get("scope")
        .and_then(Value::as_array)
        .map(|scopes| {
            scopes
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default();
    if scopes.is_empty() {
        return api_error(
            StatusCode::BAD_REQUEST,
            "INVALID_ARGUMENT",
            "Request contains an invalid argument. (scope is required)",
        );
    }
    match state.issue_access_token(&target, scopes) {
        Ok(token) => Json(json!({
            "accessToken": token,
            "expireTime": rfc3339(now() + ACCESS_TOKEN_LIFETIME),
        }))
        .into_response(),
        Err(error) => api_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "INTERNAL",
            error.to_string(),
        ),
    }
}
