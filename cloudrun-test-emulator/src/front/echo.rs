//! The built-in application behind the front: says who called what and which
//! forwarded headers it received, and serves the shapes tests of streaming and
//! WebSocket clients need: `/ws` (echo), `/sse` (a ticker), `/stream?bytes=N`.

use std::time::Duration;

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::Request;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures_util::{SinkExt as _, StreamExt as _, stream};
use serde_json::{Map, json};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::Role;

use super::forward::SIGNATURE_REMOVED;
use crate::services::Service;

/// `/stream` writes this much per chunk.
const CHUNK: usize = 64 * 1024;
/// The headers the JSON answer reports, as the app received them.
const REPORTED: [&str; 6] = [
    "authorization",
    "x-serverless-authorization",
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-cloud-trace-context",
    "traceparent",
];

/// Answers `request` (whose headers the front already rewrote).
pub(crate) async fn answer(
    service: &Service,
    tag: Option<&str>,
    request: Request,
    caller: Option<String>,
) -> Response {
    let query = |name: &str| -> Option<u64> {
        let query = request.uri().query()?;
        url::form_urlencoded::parse(query.as_bytes())
            .find(|(key, _)| key == name)
            .and_then(|(_, value)| value.parse().ok())
    };
    match request.uri().path() {
        "/ws" if is_websocket(request.headers()) => websocket(request, service.timeout),
        "/sse" => sse(
            query("count").unwrap_or(3),
            Duration::from_millis(query("interval_ms").unwrap_or(100)),
            service.timeout,
        ),
        "/stream" => stream_bytes(query("bytes").unwrap_or(CHUNK as u64)),
        _ => who(service, tag, &request, caller),
    }
}

/// `200 {"service","tag","method","path","caller","headers"}`. Of the auth
/// headers, only a token whose signature the front removed is shown: the echo never
/// returns a usable credential.
fn who(
    service: &Service,
    tag: Option<&str>,
    request: &Request,
    caller: Option<String>,
) -> Response {
    let path = request.uri().path_and_query().map_or_else(
        || request.uri().path().to_owned(),
        |path| path.as_str().to_owned(),
    );
    let mut headers = Map::new();
    for name in REPORTED {
        let Some(value) = request.headers().get(name) else {
            continue;
        };
        let value = value.to_str().unwrap_or("(not text)");
        let shown = match name.ends_with("authorization") && !value.ends_with(SIGNATURE_REMOVED) {
            true => "(not shown: not a token the front verified)",
            false => value,
        };
        headers.insert(name.to_owned(), json!(shown));
    }
    Json(json!({
        "service": service.name,
        "tag": tag,
        "method": request.method().as_str(),
        "path": path,
        "caller": caller,
        "headers": headers,
    }))
    .into_response()
}

pub(crate) fn is_websocket(headers: &HeaderMap) -> bool {
    headers
        .get(header::UPGRADE)
        .is_some_and(|value| value.as_bytes().eq_ignore_ascii_case(b"websocket"))
}

/// `count` server-sent events `tick` (ids and data 1..=count), the first at once,
/// then one per `interval`; cut at the service's request timeout, as on Cloud Run.
fn sse(count: u64, interval: Duration, timeout: Duration) -> Response {
    let deadline = tokio::time::Instant::now() + timeout;
    let events = stream::unfold(1, move |n| async move {
        if n > count {
            return None;
        }
        if n > 1
            && tokio::time::timeout_at(deadline, tokio::time::sleep(interval))
                .await
                .is_err()
        {
            let cut = std::io::Error::new(std::io::ErrorKind::TimedOut, "request timeout");
            return Some((Err(cut), count + 1));
        }
        let event = format!("id: {n}\nevent: tick\ndata: {n}\n\n");
        Some((Ok(Bytes::from(event)), n + 1))
    });
    (
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        Body::from_stream(events),
    )
        .into_response()
}

/// `bytes` bytes of `x`, written a chunk at a time as the reader takes them.
fn stream_bytes(bytes: u64) -> Response {
    let chunks = stream::unfold(bytes, |left| async move {
        if left == 0 {
            return None;
        }
        let size = left.min(CHUNK as u64);
        let chunk = Bytes::from(vec![b'x'; size as usize]);
        Some((Ok::<_, std::convert::Infallible>(chunk), left - size))
    });
    (
        [(header::CONTENT_TYPE, "application/octet-stream")],
        Body::from_stream(chunks),
    )
        .into_response()
}

/// Accepts the upgrade and echoes every text and binary message until the client
/// closes or the service's request timeout passes.
fn websocket(mut request: Request, timeout: Duration) -> Response {
    let key = request.headers().get("sec-websocket-key").cloned();
    let upgrade = request
        .extensions_mut()
        .remove::<hyper::upgrade::OnUpgrade>();
    let (Some(key), Some(upgrade)) = (key, upgrade) else {
        return (
            StatusCode::BAD_REQUEST,
            "cloudrun-test emulator: /ws needs an HTTP/1.1 WebSocket upgrade\n",
        )
            .into_response();
    };
    let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
    tokio::spawn(async move {
        let Ok(upgraded) = upgrade.await else {
            return;
        };
        let io = hyper_util::rt::TokioIo::new(upgraded);
        let mut socket = WebSocketStream::from_raw_socket(io, Role::Server, None).await;
        let echo = async {
            while let Some(Ok(message)) = socket.next().await {
                if (message.is_text() || message.is_binary()) && socket.send(message).await.is_err()
                {
                    break;
                }
            }
        };
        let _ = tokio::time::timeout(timeout, echo).await;
    });
    let mut response = Response::new(Body::empty());
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = response.headers_mut();
    headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    if let Ok(accept) = HeaderValue::from_str(&accept) {
        headers.insert("sec-websocket-accept", accept);
    }
    response
}
