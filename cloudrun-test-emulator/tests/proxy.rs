//! The front proxying to a real HTTP server on loopback, as it fronts a user's
//! own service.

mod support;

use axum::Router;
use axum::body::Bytes;
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use cloudrun_test_emulator::{Emulator, ServiceConfig, Upstream};
use serde_json::{Value, json};
use support::*;

/// Answers with what it received, or with special answers on special paths.
async fn upstream_app(method: Method, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    match uri.path() {
        "/created" => (
            StatusCode::CREATED,
            [("x-upstream", "yes"), ("set-cookie", "a=1")],
            "made it",
        )
            .into_response(),
        "/redirect" => (StatusCode::FOUND, [(header::LOCATION, "/elsewhere")]).into_response(),
        _ => {
            let headers: serde_json::Map<String, Value> = headers
                .iter()
                .map(|(name, value)| (name.to_string(), json!(value.to_str().unwrap_or("?"))))
                .collect();
            axum::Json(json!({
                "method": method.as_str(),
                "uri": uri.to_string(),
                "headers": headers,
                "body_len": body.len(),
                "body_head": String::from_utf8_lossy(&body[..body.len().min(16)]),
            }))
            .into_response()
        }
    }
}

/// Starts the upstream on the test's runtime; returns its URL.
async fn start_upstream() -> reqwest::Url {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(listener, Router::new().fallback(upstream_app))
            .await
            .unwrap();
    });
    format!("http://{address}/").parse().unwrap()
}

fn emulator(upstream: &reqwest::Url) -> Emulator {
    Emulator::builder()
        .service(
            ServiceConfig::new("app")
                .upstream(Upstream::Url(upstream.clone()))
                .invoker(TESTER),
        )
        .service(
            ServiceConfig::new("prefixed")
                .upstream(Upstream::Url(upstream.join("/prefix/").unwrap()))
                .invoker(TESTER),
        )
        .start()
        .unwrap()
}

fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(std::time::Duration::from_secs(30))
        .no_proxy()
        .build()
        .unwrap()
}

#[tokio::test]
async fn forwards_requests_and_answers() {
    let upstream = start_upstream().await;
    let emulator = emulator(&upstream);
    let url = emulator.service_url("app").unwrap();
    let token = id_token(&emulator, TESTER, &audience(&url)).await;

    let body = vec![b'x'; 1024 * 1024];
    let response = no_redirects()
        .put(url.join("/items/7?full=1").unwrap())
        .bearer_auth(&token)
        .header("x-custom", "kept")
        .header("connection", "x-private")
        .header("x-private", "dropped")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let seen: Value = response.json().await.unwrap();
    assert_eq!(seen["method"], "PUT");
    assert_eq!(seen["uri"], "/items/7?full=1");
    assert_eq!(seen["body_len"], 1024 * 1024);
    let headers = &seen["headers"];
    // Cloud Run passes Authorization on to the container, its signature removed.
    let (signed, _) = token.rsplit_once('.').unwrap();
    assert_eq!(
        headers["authorization"],
        format!("Bearer {signed}.SIGNATURE_REMOVED_BY_GOOGLE")
    );
    assert_eq!(headers["x-custom"], "kept");
    assert_eq!(
        headers["x-private"],
        Value::Null,
        "hop-by-hop headers are dropped: {headers}"
    );
    assert_eq!(headers["host"], upstream.authority());
    assert_eq!(headers["x-forwarded-for"], "127.0.0.1");
    assert_eq!(headers["x-forwarded-proto"], "http");

    // Status, headers and body come back as the upstream sent them.
    let response = no_redirects()
        .post(url.join("/created").unwrap())
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    assert_eq!(response.headers()["x-upstream"], "yes");
    assert_eq!(response.headers()["set-cookie"], "a=1");
    assert_eq!(response.text().await.unwrap(), "made it");
    // Redirects are the client's business.
    let response = no_redirects()
        .get(url.join("/redirect").unwrap())
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 302);
    assert_eq!(response.headers()["location"], "/elsewhere");
    // HEAD works through the proxy.
    let response = no_redirects()
        .head(url.clone())
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
}

#[tokio::test]
async fn refused_requests_never_reach_the_upstream() {
    let upstream = start_upstream().await;
    let emulator = emulator(&upstream);
    let url = emulator.service_url("app").unwrap();
    let response = no_redirects()
        .get(url.join("/created").unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 403);
    assert!(response.text().await.unwrap().contains("403 Forbidden"));
}

#[tokio::test]
async fn upstream_path_prefix_is_kept() {
    let upstream = start_upstream().await;
    let emulator = emulator(&upstream);
    let url = emulator.service_url("prefixed").unwrap();
    let token = id_token(&emulator, TESTER, &audience(&url)).await;
    let response = no_redirects()
        .get(url.join("/a/b?c").unwrap())
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    let seen: Value = response.json().await.unwrap();
    assert_eq!(seen["uri"], "/prefix/a/b?c");
}

#[tokio::test]
async fn unreachable_upstream_is_502_naming_it() {
    // A port that was just free: nothing listens there.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let upstream: reqwest::Url = format!("http://127.0.0.1:{port}/").parse().unwrap();
    let emulator = emulator(&upstream);
    let url = emulator.service_url("app").unwrap();
    let token = id_token(&emulator, TESTER, &audience(&url)).await;
    let response = no_redirects()
        .get(url)
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 502);
    let text = response.text().await.unwrap();
    assert!(text.contains(upstream.as_str()), "{text}");
    assert!(!text.contains(&token));
}
