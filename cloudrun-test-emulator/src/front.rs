//! Cloud Run's IAM front: one listener per service and per traffic tag. It checks
//! the caller's Google-signed ID token as Cloud Run does (same status codes, same
//! HTML bodies), then answers with the echo app or proxies to the upstream.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State as AxumState};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::Upstream;
use crate::admin::bearer_token;
use crate::jwt::Jwt;
use crate::state::{Service, State, now};

/// Cloud Run's request size limit for HTTP/1.
const MAX_REQUEST_BODY: usize = 32 * 1024 * 1024;
/// How long the upstream may take, per request.
pub(crate) const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(30);
/// Why a request was refused, for people reading responses in tests. Cloud Run
/// says nothing; the reason never contains the token.
const REASON_HEADER: &str = "x-cloudrun-test-emulator-reason";
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
    if let Some(response) = crate::faults::front_request(state, service, &path).await {
        return response;
    }
    let caller = match authorize(state, service, request.headers()) {
        Ok(caller) => caller,
        Err(Denial::Unauthorized(reason)) => {
            state.count(|stats| stats.front_unauthorized += 1);
            tracing::info!(service = service.name, path, reason, "401 Unauthorized");
            return error_page(StatusCode::UNAUTHORIZED, &path, &reason);
        }
        Err(Denial::Forbidden(reason)) => {
            state.count(|stats| stats.front_forbidden += 1);
            tracing::info!(service = service.name, path, reason, "403 Forbidden");
            return error_page(StatusCode::FORBIDDEN, &path, &reason);
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
        Upstream::Echo => echo(service, front.tag.as_deref(), &request, caller),
        Upstream::Url(upstream) => proxy(state, upstream, peer, request).await,
    }
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

/// Cloud Run's (Google front end's) error pages.
pub(crate) fn error_page(status: StatusCode, path: &str, reason: &str) -> Response {
    let path = html_escape(path);
    let (title, heading, detail) = if status == StatusCode::UNAUTHORIZED {
        (
            "401 Unauthorized",
            "Unauthorized",
            format!(
                "Your client does not have permission to the requested URL <code>{path}</code>."
            ),
        )
    } else {
        (
            "403 Forbidden",
            "Forbidden",
            format!(
                "Your client does not have permission to get URL <code>{path}</code> from this server."
            ),
        )
    };
    let body = format!(
        "\n<html><head>\n<meta http-equiv=\"content-type\" content=\"text/html;charset=utf-8\">\n\
         <title>{title}</title>\n</head>\n<body text=#000000 bgcolor=#ffffff>\n\
         <h1>Error: {heading}</h1>\n<h2>{detail}</h2>\n<h2></h2>\n</body></html>\n"
    );
    let mut response = (status, body).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=UTF-8"),
    );
    if status == StatusCode::UNAUTHORIZED {
        headers.insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static(
                "Bearer error=\"invalid_token\" error_description=\"The access token could not be verified\"",
            ),
        );
    }
    // Header values must be visible ASCII; reasons are, apart from exotic emails.
    let reason: String = reason
        .chars()
        .map(|c| {
            if c.is_ascii_graphic() || c == ' ' {
                c
            } else {
                '?'
            }
        })
        .collect();
    if let Ok(value) = HeaderValue::from_str(&reason) {
        headers.insert(REASON_HEADER, value);
    }
    response
}

fn html_escape(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '<' => escaped.push_str("&lt;"),
            '>' => escaped.push_str("&gt;"),
            '&' => escaped.push_str("&amp;"),
            '"' => escaped.push_str("&quot;"),
            '\'' => escaped.push_str("&#39;"),
            c => escaped.push(c),
        }
    }
    escaped
}

/// The built-in application: says who called what. Never echoes credentials.
fn echo(
    service: &Service,
    tag: Option<&str>,
    request: &Request,
    caller: Option<String>,
) -> Response {
    let path = request.uri().path_and_query().map_or_else(
        || request.uri().path().to_owned(),
        |path| path.as_str().to_owned(),
    );
    Json(json!({
        "service": service.name,
        "tag": tag,
        "method": request.method().as_str(),
        "path": path,
        "caller": caller,
    }))
    .into_response()
}

/// Headers that belong to one connection, not to the request (RFC 9110 §7.6.1).
const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
];

/// Removes hop-by-hop headers, including those the Connection header names.
fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
    headers.remove(header::UPGRADE);
}

/// Forwards the request to the upstream and its answer back, as Cloud Run's
/// front forwards to the container (Authorization included).
async fn proxy(
    state: &State,
    upstream: &reqwest::Url,
    peer: SocketAddr,
    request: Request,
) -> Response {
    let (parts, body) = request.into_parts();
    let mut url = upstream.clone();
    url.set_path(&format!(
        "{}{}",
        upstream.path().trim_end_matches('/'),
        parts.uri.path()
    ));
    url.set_query(parts.uri.query());
    let body = match axum::body::to_bytes(body, MAX_REQUEST_BODY).await {
        Ok(body) => body,
        Err(_) => {
            return (
                StatusCode::PAYLOAD_TOO_LARGE,
                "cloudrun-test emulator: request body too large (32 MiB limit)\n",
            )
                .into_response();
        }
    };
    let mut headers = parts.headers;
    strip_hop_by_hop(&mut headers);
    // reqwest sets these for the upstream connection.
    headers.remove(header::HOST);
    headers.remove(header::CONTENT_LENGTH);
    if let Ok(value) = HeaderValue::from_str(&peer.ip().to_string()) {
        headers.append("x-forwarded-for", value);
    }
    headers.insert("x-forwarded-proto", HeaderValue::from_static("http"));

    let http = match tokio::task::block_in_place(|| state.http()) {
        Ok(http) => http,
        Err(error) => {
            return (
                StatusCode::BAD_GATEWAY,
                format!("cloudrun-test emulator: {error}\n"),
            )
                .into_response();
        }
    };
    let answer = http
        .request(parts.method, url.clone())
        .headers(headers)
        .body(body)
        .timeout(UPSTREAM_TIMEOUT)
        .send()
        .await;
    let answer = match answer {
        Ok(answer) => answer,
        Err(error) => return upstream_failure(upstream, &error),
    };
    let status = answer.status();
    let mut headers = answer.headers().clone();
    strip_hop_by_hop(&mut headers);
    // The body is buffered, so hyper frames it again with its own length.
    headers.remove(header::CONTENT_LENGTH);
    let body = match answer.bytes().await {
        Ok(body) => body,
        Err(error) => return upstream_failure(upstream, &error),
    };
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = status;
    *response.headers_mut() = headers;
    response
}

fn upstream_failure(upstream: &reqwest::Url, error: &reqwest::Error) -> Response {
    tracing::warn!(%upstream, %error, "upstream request failed");
    let status = if error.is_timeout() {
        StatusCode::GATEWAY_TIMEOUT
    } else {
        StatusCode::BAD_GATEWAY
    };
    // reqwest's error names the URL; the source chain says why (refused, reset, ...).
    let mut message =
        format!("cloudrun-test emulator: the upstream {upstream} did not answer: {error}");
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        message.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    message.push('\n');
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        message,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_paths_in_error_pages() {
        assert_eq!(
            html_escape("/<script>&\"'"),
            "/&lt;script&gt;&amp;&quot;&#39;"
        );
    }

    #[test]
    fn strips_hop_by_hop_headers() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONNECTION,
            HeaderValue::from_static("close, x-private"),
        );
        headers.insert("x-private", HeaderValue::from_static("1"));
        headers.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        headers.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer x"));
        strip_hop_by_hop(&mut headers);
        assert_eq!(headers.len(), 1);
        assert!(headers.contains_key(header::AUTHORIZATION));
    }
}
