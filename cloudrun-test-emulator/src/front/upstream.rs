//! What answers behind the front: the built-in echo app, or a real upstream the
//! front proxies to as Cloud Run forwards to its container.

use std::net::SocketAddr;
use std::time::Duration;

use axum::Json;
use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::services::Service;
use crate::state::State;

/// Cloud Run's request size limit for HTTP/1.
const MAX_REQUEST_BODY: usize = 32 * 1024 * 1024;
/// How long the upstream may take, per request.
const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(30);

/// The client for upstreams, built on first use. Redirects pass through to the
/// caller, as a proxy's should; proxies from the environment are not used
/// (upstreams are usually on localhost).
pub(crate) fn client(state: &State) -> Result<&reqwest::Client, &str> {
    let client = state.upstream_client.get_or_init(|| {
        reqwest::Client::builder()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(Duration::from_secs(5))
            .timeout(UPSTREAM_TIMEOUT)
            .build()
            .map_err(|error| format!("building the HTTP client for upstreams failed: {error}"))
    });
    client.as_ref().map_err(String::as_str)
}

/// The built-in application: says who called what. Never echoes credentials.
pub(crate) fn echo(
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
pub(crate) async fn proxy(
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
                format!(
                    "cloudrun-test emulator: request body too large ({} MiB limit)\n",
                    MAX_REQUEST_BODY >> 20
                ),
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

    let http = match tokio::task::block_in_place(|| client(state)) {
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
