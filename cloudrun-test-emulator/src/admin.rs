//! The Cloud Run Admin API v2 (`services.get`, `services.list`) and the
//! emulator's own `/_emulator/stats`.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State as AxumState};
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::protocol::{api_error, bearer_token};
use crate::services::Service;
use crate::state::State;

/// Scopes that grant `run.services.get`.
const RUN_SCOPES: [&str; 3] = [
    "https://www.googleapis.com/auth/cloud-platform",
    "https://www.googleapis.com/auth/cloud-platform.read-only",
    "https://www.googleapis.com/auth/run",
];

/// Why an Admin API call is refused before it is looked at.
enum Refusal {
    Unauthenticated,
    InsufficientScope,
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        match self {
            Refusal::Unauthenticated => api_error(
                StatusCode::UNAUTHORIZED,
                "UNAUTHENTICATED",
                "Request had invalid authentication credentials. Expected OAuth 2 access token, \
                 login cookie or other valid authentication credential.",
            ),
            Refusal::InsufficientScope => api_error(
                StatusCode::FORBIDDEN,
                "PERMISSION_DENIED",
                "Request had insufficient authentication scopes.",
            ),
        }
    }
}

/// Checks `Authorization: Bearer <access token issued here>`; returns its email.
fn authenticate(state: &State, headers: &HeaderMap) -> Result<String, Refusal> {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(bearer_token)
        .ok_or(Refusal::Unauthenticated)?;
    let (email, scopes) = state.access_grant(token).ok_or(Refusal::Unauthenticated)?;
    if !scopes
        .iter()
        .any(|scope| RUN_SCOPES.contains(&scope.as_str()))
    {
        return Err(Refusal::InsufficientScope);
    }
    Ok(email)
}

/// Answers an injected error as Google APIs do, if one is due; `None` lets the
/// request through.
fn injected_fault(state: &State) -> Option<Response> {
    let status = state.faults.take_admin_error()?;
    state.count_fault();
    tracing::info!(%status, "Admin API request failed (injected fault: admin-error)");
    let kind = if status.is_server_error() {
        "UNAVAILABLE"
    } else {
        "FAILED_PRECONDITION"
    };
    let message = format!("injected fault: HTTP {status} (cloudrun-test emulator)");
    Some(api_error(status, kind, message))
}

fn not_found(project: &str, region: &str, service: &str) -> Response {
    api_error(
        StatusCode::NOT_FOUND,
        "NOT_FOUND",
        format!(
            "Resource 'projects/{project}/locations/{region}/services/{service}' was not found"
        ),
    )
}

/// `GET /v2/projects/{project}/locations/{region}/services/{service}`.
pub(crate) async fn get_service(
    AxumState(state): AxumState<Arc<State>>,
    Path((project, region, name)): Path<(String, String, String)>,
    headers: HeaderMap,
) -> Response {
    state.count(|stats| stats.admin_lookups += 1);
    if let Some(fault) = injected_fault(&state) {
        return fault;
    }
    let email = match authenticate(&state, &headers) {
        Ok(email) => email,
        Err(refusal) => return refusal.into_response(),
    };
    tracing::debug!(%email, project, region, service = name, "Admin API services.get");
    match state.service(&name) {
        Some(service) if project == state.project && region == state.region => {
            Json(service_json(&state, service)).into_response()
        }
        _ => not_found(&project, &region, &name),
    }
}

/// `GET /v2/projects/{project}/locations/{region}/services`.
pub(crate) async fn list_services(
    AxumState(state): AxumState<Arc<State>>,
    Path((project, region)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    if let Some(fault) = injected_fault(&state) {
        return fault;
    }
    if let Err(refusal) = authenticate(&state, &headers) {
        return refusal.into_response();
    }
    if project != state.project || region != state.region {
        // Google lists nothing rather than failing for an empty region.
        return Json(json!({})).into_response();
    }
    let services: Vec<Value> = state
        .services
        .iter()
        .map(|service| service_json(&state, service))
        .collect();
    Json(json!({"services": services})).into_response()
}

/// A service as the v2 API returns it (the fields clients use, and a few more).
fn service_json(state: &State, service: &Service) -> Value {
    let parent = format!("projects/{}/locations/{}", state.project, state.region);
    let uri = service.origins[0].uri();
    let revision = service.revision();
    let mut traffic =
        vec![json!({"type": "TRAFFIC_TARGET_ALLOCATION_TYPE_LATEST", "percent": 100})];
    let mut statuses = traffic.clone();
    for (tag, origin) in service.tags() {
        let target = json!({"type": "TRAFFIC_TARGET_ALLOCATION_TYPE_REVISION", "revision": revision, "tag": tag});
        let mut status = target.clone();
        status["uri"] = json!(origin.uri());
        traffic.push(target);
        statuses.push(status);
    }
    let mut body = json!({
        "name": format!("{parent}/services/{}", service.name),
        "uid": service.uid,
        "generation": "1",
        "launchStage": "GA",
        "ingress": "INGRESS_TRAFFIC_ALL",
        "template": {"containers": [{"image": format!("emulated/{}", service.name)}]},
        "traffic": traffic,
        "observedGeneration": "1",
        "terminalCondition": {"type": "Ready", "state": "CONDITION_SUCCEEDED"},
        "latestReadyRevision": format!("{parent}/services/{}/revisions/{revision}", service.name),
        "latestCreatedRevision": format!("{parent}/services/{}/revisions/{revision}", service.name),
        "trafficStatuses": statuses,
        "uri": uri,
        "urls": [uri],
        "reconciling": false,
    });
    // Proto3 JSON omits empty lists, and so does the real API.
    if !service.custom_audiences.is_empty() {
        body["customAudiences"] = json!(service.custom_audiences);
    }
    body
}

/// `GET /_emulator/stats`.
pub(crate) async fn stats(AxumState(state): AxumState<Arc<State>>) -> Response {
    Json(state.stats()).into_response()
}

/// `DELETE /_emulator/stats`: resets the counters.
pub(crate) async fn reset_stats(AxumState(state): AxumState<Arc<State>>) -> Response {
    state.reset_stats();
    StatusCode::NO_CONTENT.into_response()
}

/// Anything else on the Google endpoints: a Google-shaped 404 naming what the
/// emulator does serve, so a client calling an endpoint we lack says so clearly.
pub(crate) async fn fallback(method: Method, uri: Uri) -> Response {
    tracing::warn!(%method, path = uri.path(), "request for an endpoint the emulator does not serve");
    api_error(
        StatusCode::NOT_FOUND,
        "NOT_FOUND",
        format!(
            "The cloudrun-test emulator does not serve {method} {}. It serves POST /token, \
             GET /oauth2/v3/certs, GET /v2/projects/P/locations/R/services[/S], \
             GET /computeMetadata/v1/instance/service-accounts/default/{{identity,token,email}}, \
             POST /v1/projects/-/serviceAccounts/EMAIL:{{generateIdToken,generateAccessToken}}, \
             POST /v1/token (STS) and GET /_emulator/stats.",
            uri.path()
        ),
    )
}
