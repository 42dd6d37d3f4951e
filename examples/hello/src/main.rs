//! A small Cloud Run service: it listens on $PORT, as Cloud Run requires.

use axum::Json;
use axum::Router;
use axum::extract::Path;
use axum::http::HeaderMap;
use axum::routing::{get, post};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};

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
        .route("/whoami", get(whoami));
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
