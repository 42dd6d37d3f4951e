//! Cloud Run's IAM front: one listener per service and per traffic tag, speaking
//! HTTP/1 and h2c. It checks the caller's Google-signed ID token as Cloud Run does
//! (same status codes, same HTML bodies, in `pages.rs`, gRPC calls included),
//! rewrites the request as Cloud Run forwards it (`forward.rs`), then answers with
//! the echo app (`echo.rs`) or proxies to the upstream (`upstream.rs`, WebSocket
//! upgrades in `websocket.rs`).

mod echo;
mod forward;
mod pages;
mod upstream;
mod websocket;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, Request, State as AxumState};
use axum::http::{HeaderMap, HeaderName, StatusCode, header};
use axum::response::Response;

use crate::Upstream;
use crate::clock::now;
use crate::jwt::Jwt;
use crate::protocol::bearer_token;
use crate::services::Service;
use crate::state::State;

pub(crate) use upstream::client as upstream_client;

const X_SERVERLESS_AUTHORIZATION: HeaderName =
    HeaderName::from_static("x-serverless-authorization");

/// The state of one front listener: which service, and which tag's URL it is.
#[derive(Clone)]
pub(crate) struct Front {
    pub(crate) state: Arc<State>,
    pub(crate) service: usize,
    pub(crate) tag: Option<String>,
}

/// A request the front lets through.
struct Pass {
    /// The caller's email, if the token said.
    caller: Option<String>,
    /// The header whose Google-signed token the front read: its signature goes.
    verified: Option<HeaderName>,
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
    mut request: Request,
) -> Response {
    let state = &front.state;
    let service = &state.services[front.service];
    let path = request.uri().path().to_owned();
    if let Some(response) = injected_fault(state, service, &path).await {
        return response;
    }
    let Pass { caller, verified } = match authorize(state, service, request.headers()) {
        Ok(pass) => pass,
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
    let websocket = echo::is_websocket(request.headers())
        && !(service.use_http2 && matches!(service.upstream, Upstream::Url(_)));
    let hop = forward::Hop {
        websocket,
        http2: service.use_http2,
    };
    forward::request_headers(request.headers_mut(), verified.as_ref(), peer.ip(), hop);
    match &service.upstream {
        Upstream::Echo => echo::answer(service, front.tag.as_deref(), request, caller).await,
        Upstream::Url(upstream) if websocket => {
            websocket::pass_through(state, service, upstream, request).await
        }
        Upstream::Url(upstream) => upstream::proxy(state, service, upstream, request).await,
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

/// Whether the request may pass, as Cloud Run decides it.
fn authorize(state: &State, service: &Service, headers: &HeaderMap) -> Result<Pass, Denial> {
    // X-Serverless-Authorization wins, leaving Authorization to the application.
    let present = |name: HeaderName| {
        headers
            .get(&name)
            .filter(|value| !value.as_bytes().iter().all(u8::is_ascii_whitespace))
            .map(|value| (name, value))
    };
    let (checked, value) = present(X_SERVERLESS_AUTHORIZATION)
        .or_else(|| present(header::AUTHORIZATION))
        .unzip();
    let token = value.map(|value| {
        value
            .to_str()
            .ok()
            .and_then(bearer_token)
            .ok_or_else(|| "the authorization header is not `Bearer <ID token>`".to_owned())
    });
    if service.is_public() {
        // allUsers: Cloud Run lets everything through; report the caller if we can,
        // and never hand a Google-signed token on with its signature.
        let token = token.and_then(Result::ok);
        let caller = token.and_then(|token| verify_id_token(state, service, token).ok().flatten());
        let verified = checked.filter(|_| token.is_some_and(|token| signed_here(state, token)));
        return Ok(Pass { caller, verified });
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
             `--invoker serviceAccount:{email}` on the `cloudrun-test emulate` command \
             (in Rust: Emulator::add_invoker or ServiceConfig::invoker; on Cloud Run: gcloud run \
             services add-iam-policy-binding {} --member=serviceAccount:{email} \
             --role=roles/run.invoker)",
            service.name, service.name
        )));
    }
    Ok(Pass {
        caller: Some(email),
        verified: checked,
    })
}

/// Whether `token` is a JWT this emulator (standing in for Google) signed.
fn signed_here(state: &State, token: &str) -> bool {
    let key = state.keys.signing_if_ready();
    Jwt::decode(token).is_ok_and(|jwt| key.is_some_and(|key| jwt.verify(key)))
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
