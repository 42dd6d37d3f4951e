//! A small Cloud Run service: it listens on $PORT, as Cloud Run requires.

use std::convert::Infallible;
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Request};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use futures_util::{SinkExt as _, Stream, StreamExt as _, stream};
use serde_json::{Value, json};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;

#[tokio::main]
async fn main() {
    let port = std::env::var("PORT").unwrap_or_else(|_| "8080".into());
    let app = Router::new()
        .route("/", get(|| async { "Hello from Cloud Run!\n" }))
        .route("/hello/{name}", get(greet))
        .route(
            "/echo",
            post(|Json(body): Json<Value>| async move { Json(body) }),
        )
        .route("/whoami", get(whoami))
        .route("/events/{count}", get(events))
        .route("/ws", any(websocket));
    let listener =
        match tokio::net::TcpListener::bind(("0.0.0.0", port.parse().unwrap_or(8080))).await {
            Ok(listener) => listener,
            Err(error) => {
                eprintln!("hello: cannot listen on port {port}: {error}");
                std::process::exit(1);
            }
        };
    eprintln!("hello: listening on port {port}");
    if let Err(error) = axum::serve(listener, app).await {
        eprintln!("hello: server failed: {error}");
        std::process::exit(1);
    }
}

async fn greet(Path(name): Path<String>) -> Json<Value> {
    Json(json!({ "greeting": format!("Hello, {name}!") }))
}

/// Cloud Run has already verified the caller's token before the request got here,
/// so the service only reads who it was from the token's payload.
async fn whoami(headers: HeaderMap) -> Json<Value> {
    let email = headers
        .get("authorization")
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
        .and_then(|token| token.split('.').nth(1))
        .and_then(|payload| URL_SAFE_NO_PAD.decode(payload).ok())
        .and_then(|bytes| serde_json::from_slice::<Value>(&bytes).ok())
        .and_then(|claims| claims.get("email").cloned())
        .unwrap_or(Value::Null);
    Json(json!({ "email": email }))
}

/// Server-sent events: `tick` events with ids and data 1..=count, one every 100 ms,
/// each sent as soon as it is made (Cloud Run streams them through).
async fn events(Path(count): Path<u32>) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let ticks = stream::unfold(1, move |n| async move {
        if n > count {
            return None;
        }
        if n > 1 {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let event = Event::default()
            .event("tick")
            .id(n.to_string())
            .data(n.to_string());
        Some((Ok(event), n + 1))
    });
    Sse::new(ticks)
}

/// A WebSocket echo: accepts the upgrade (HTTP/1.1, as Cloud Run passes it through)
/// and sends every text and binary message back until the client closes.
async fn websocket(mut request: Request) -> Response {
    let key = request.headers().get("sec-websocket-key").cloned();
    let upgrade = request
        .extensions_mut()
        .remove::<hyper::upgrade::OnUpgrade>();
    let (Some(key), Some(upgrade)) = (key, upgrade) else {
        return (StatusCode::BAD_REQUEST, "/ws takes a WebSocket upgrade\n").into_response();
    };
    tokio::spawn(async move {
        let Ok(upgraded) = upgrade.await else {
            return;
        };
        let io = hyper_util::rt::TokioIo::new(upgraded);
        let mut socket = WebSocketStream::from_raw_socket(io, Role::Server, None).await;
        while let Some(Ok(message)) = socket.next().await {
            if (message.is_text() || message.is_binary()) && socket.send(message).await.is_err() {
                break;
            }
        }
    });
    let accept = HeaderValue::from_str(&derive_accept_key(key.as_bytes()))
        .expect("base64 is a valid header value");
    let mut response = Response::new(Body::empty());
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = response.headers_mut();
    headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    headers.insert(header::SEC_WEBSOCKET_ACCEPT, accept);
    response
}
