//! Cloud Run's IAM front: one listener per service and per traffic tag. It checks
//! the caller's Google-signed ID token as Cloud Run does (same status codes, same
//! HTML bodies, in `pages.rs`), then answers with the echo app or proxies to the
//! upstream (`upstream.rs`).

mod pages;
mod upstream;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, Request, State as AxumState};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::Response;

use crate::Upstream;
use crate::clock::now;
use crate::jwt::Jwt;
use crate::protocol::bearer_token;
use crate::services::Service;
use crate::state::State;

pub(crate) use upstream::client as upstream_client;

const X_SERVERLESS_AUTHORIZATION: &str = "x-serverless-authorization";

/// The state of one front listener: which service, and which tag's URL it is.
#[derive(Clone)]
pub(crate) struct Front {
    pub(crate) state: Arc<State>,
    pub(crate) service: usize,
    pub(crate) tag: Option<String>,
}

enum Denial {
    /// 401: a token that is not a valid ID token for this service.
    Unauthorized(String),
    /// 403: no token, or a caller who is not an invoker.
    Forbidden(String),
}

/// Every request to a service's or tag's origin.
pub(crate) async fn handle(
    AxumState(front): AxumState<Front>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    request: Request,
) -> Response {
    let state = &front.state;
    let service = &state.services[front.service];
    let path = request.uri().path().to_owned();
    if let Some(response) = injected_fault(state, service, &path).await {
        return response;
    }
    let caller = match authorize(state, service, request.headers()) {
        Ok(caller) => caller,
        Err(Denial::Unauthorized(reason)) => {
            state.count(|stats| stats.front_unauthorized += 1);
            tracing::info!(service = service.name, path, reason, "401 Unauthorized");
            return pages::error_page(StatusCode::UNAUTHORIZED, &path, &reason);
        }
        Err(Denial::Forbidden(reason)) => {
            state.count(|stats| stats.front_forbidden += 1);
            tracing::info!(service = service.name, path, reason, "403 Forbidden");
            return pages::error_page(StatusCode::FORBIDDEN, &path, &reason);
        }
    };
    state.count(|stats| stats.front_accepted += 1);
    tracing::debug!(
        service = service.name,
        tag = front.tag,
        path,
        caller,
        "request accepted"
    );
    match &service.upstream {
        Upstream::Echo => upstream::echo(service, front.tag.as_deref(), &request, caller),
        Upstream::Url(upstream) => upstream::proxy(state, upstream, peer, request).await,
    }
}

/// Waits out an injected cold start, then answers an injected status if one is
/// due, before looking at the request as Cloud Run's front does; `None` lets the
/// request through.
async fn injected_fault(state: &State, service: &Service, path: &str) -> Option<Response> {
    let fault = state.faults.take_front_fault(&service.name);
    if let Some(delay) = fault.cold_start {
        state.count_fault();
        tracing::info!(
            service = service.name,
            ?delay,
            "cold start (injected fault)"
        );
        tokio::time::sleep(delay).await;
    }
    let status = fault.status?;
    state.count_fault();
    tracing::info!(service = service.name, path, %status, "injected fault: service-error");
    Some(pages::fault_page(status, path))
}

/// The caller's email if the request may pass, as Cloud Run decides it.
fn authorize(
    state: &State,
    service: &Service,
    headers: &HeaderMap,
) -> Result<Option<String>, Denial> {
    // X-Serverless-Authorization wins, leaving Authorization to the application.
    let present = |name| {
        headers
            .get(name)
            .filter(|value| !value.as_bytes().iter().all(u8::is_ascii_whitespace))
    };
    let value =
        present(X_SERVERLESS_AUTHORIZATION).or_else(|| present(header::AUTHORIZATION.as_str()));
    let token = value.map(|value| {
        value
            .to_str()
            .ok()
            .and_then(bearer_token)
            .ok_or_else(|| "the authorization header is not `Bearer <ID token>`".to_owned())
    });
    if service.is_public() {
        // allUsers: Cloud Run lets everything through; report the caller if we can.
        let caller = token
            .and_then(Result::ok)
            .and_then(|token| verify_id_token(state, service, token).ok().flatten());
        return Ok(caller);
    }
    let Some(token) = token else {
        return Err(Denial::Forbidden(
            "no identity token: send `Authorization: Bearer <ID token>`".to_owned(),
        ));
    };
    let token = token.map_err(Denial::Unauthorized)?;
    let email = verify_id_token(state, service, token)
        .map_err(Denial::Unauthorized)?
        .ok_or_else(|| Denial::Forbidden("the ID token has no email claim".to_owned()))?;
    if !service.may_invoke(&email) {
        return Err(Denial::Forbidden(format!(
            "{email} lacks roles/run.invoker on service {}; grant it with \
             Emulator::add_invoker or ServiceConfig::invoker (on Cloud Run: gcloud run services \
             add-iam-policy-binding {} --member=serviceAccount:{email} --role=roles/run.invoker)",
            service.name, service.name
        )));
    }
    Ok(Some(email))
}

/// Checks an ID token for this service; returns its `email` claim.
fn verify_id_token(
    state: &State,
    service: &Service,
    token: &str,
) -> Result<Option<String>, String> {
    let jwt = Jwt::decode(token).map_err(|error| format!("malformed ID token: {error}"))?;
    // No signing key yet means nothing was signed by us yet.
    let key = state
        .keys
        .signing_if_ready()
        .ok_or("the token was not issued by this emulator")?;
    if jwt.kid().is_some_and(|kid| kid != key.kid()) {
        return Err(
            "the token was signed with a key this emulator does not have (unknown kid)".to_owned(),
        );
    }
    if !jwt.verify(key) {
        return Err(
            "invalid signature: the token was not issued by this emulator, or was altered"
                .to_owned(),
        );
    }
    match jwt.claim_str("iss") {
        Some("https://accounts.google.com" | "accounts.google.com") => {}
        _ => return Err("the token's issuer is not https://accounts.google.com".to_owned()),
    }
    let now = now();
    match jwt.claim_time("exp") {
        Some(exp) if exp > now => {}
        Some(exp) => return Err(format!("the token expired {}s ago", now - exp)),
        None => return Err("the token has no exp claim".to_owned()),
    }
    let audiences = jwt.audiences();
    if !audiences.iter().any(|aud| service.accepts_audience(aud)) {
        let mut accepted: Vec<String> = service.origins.iter().map(|origin| origin.uri()).collect();
        accepted.extend(service.custom_audiences.iter().cloned());
        return Err(format!(
            "wrong audience {audiences:?}; service {} accepts {accepted:?}",
            service.name
        ));
    }
    Ok(jwt.claim_str("email").map(str::to_owned))
}
