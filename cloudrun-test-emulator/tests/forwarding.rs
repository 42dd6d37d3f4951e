//! The front forwards as Cloud Run does, over real HTTP on loopback: the app sees
//! the token without its signature, Cloud Run's headers and no hop-by-hop ones;
//! answers stream (SSE, large bodies) without being held; WebSockets and h2c gRPC
//! pass through; the service's request timeout answers 504.

mod support;

use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, Version, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use cloudrun_test_emulator::{Emulator, ServiceConfig, Upstream};
use futures_util::{SinkExt as _, StreamExt as _, stream};
use http_body_util::BodyExt as _;
use serde_json::Value;
use support::*;
use tokio_tungstenite::tungstenite::{self, Message};

const SIGNATURE_REMOVED: &str = "SIGNATURE_REMOVED_BY_GOOGLE";
/// The size of the streamed body, and of each chunk the upstream writes.
const BIG: usize = 10 * 1024 * 1024;
const CHUNK: usize = 64 * 1024;

/// What the upstream saw and did.
#[derive(Default)]
struct Seen {
    /// The headers of every request, in order.
    headers: Mutex<Vec<HeaderMap>>,
    /// Bytes of `/big` the upstream has handed to its connection so far.
    big_written: AtomicUsize,
    /// Lets `/big` write past its first chunk.
    release_big: tokio::sync::Notify,
}

impl Seen {
    fn last(&self) -> HeaderMap {
        self.headers
            .lock()
            .unwrap()
            .last()
            .cloned()
            .expect("a request reached the upstream")
    }

    /// Whether `token` appears in anything the upstream received.
    fn ever_saw(&self, token: &str) -> bool {
        self.headers.lock().unwrap().iter().any(|headers| {
            headers
                .values()
                .any(|value| String::from_utf8_lossy(value.as_bytes()).contains(token))
        })
    }
}

/// The test's own service: records headers, and on special paths answers slowly,
/// in a stream, or as gRPC would.
async fn app(State(seen): State<Arc<Seen>>, request: Request) -> Response {
    seen.headers.lock().unwrap().push(request.headers().clone());
    match request.uri().path() {
        // One event at once, the next 2 s later: the stream is open when the first arrives.
        "/sse" => {
            let events = stream::unfold(0, |n| async move {
                match n {
                    0 => {}
                    1 => tokio::time::sleep(Duration::from_secs(2)).await,
                    _ => return None,
                }
                let event = Bytes::from(format!("data: {n}\n\n"));
                Some((Ok::<_, Infallible>(event), n + 1))
            });
            (
                [(header::CONTENT_TYPE, "text/event-stream")],
                Body::from_stream(events),
            )
                .into_response()
        }
        // 10 MB in chunks through a one-slot channel, counted; after the first chunk
        // the upstream waits until the test says it holds that chunk.
        "/big" => {
            let (sender, receiver) = tokio::sync::mpsc::channel::<Result<Bytes, Infallible>>(1);
            tokio::spawn(async move {
                for index in 0..BIG / CHUNK {
                    if index == 1 {
                        seen.release_big.notified().await;
                    }
                    if sender
                        .send(Ok(Bytes::from(vec![b'x'; CHUNK])))
                        .await
                        .is_err()
                    {
                        return;
                    }
                    seen.big_written.fetch_add(CHUNK, Ordering::SeqCst);
                }
            });
            let chunks = stream::unfold(receiver, |mut receiver| async move {
                receiver.recv().await.map(|chunk| (chunk, receiver))
            });
            Body::from_stream(chunks).into_response()
        }
        "/slow-head" => {
            tokio::time::sleep(Duration::from_secs(5)).await;
            "too late".into_response()
        }
        "/slow-body" => {
            let chunks = stream::unfold(0, |n| async move {
                if n == 1 {
                    tokio::time::sleep(Duration::from_secs(5)).await;
                }
                (n < 2).then(|| (Ok::<_, Infallible>(Bytes::from("part ")), n + 1))
            });
            Body::from_stream(chunks).into_response()
        }
        // gRPC-shaped: HTTP/2 only, the request message echoed in one frame, then
        // trailers with grpc-status.
        "/test.Echo/Say" => {
            if request.version() != Version::HTTP_2 {
                return (StatusCode::HTTP_VERSION_NOT_SUPPORTED, "h2c only").into_response();
            }
            let message = request.into_body().collect().await.unwrap().to_bytes();
            let mut trailers = HeaderMap::new();
            trailers.insert("grpc-status", "0".parse().unwrap());
            trailers.insert("grpc-message", "ok".parse().unwrap());
            let frames = stream::iter([
                Ok::<_, Infallible>(http_body::Frame::data(message)),
                Ok(http_body::Frame::trailers(trailers)),
            ]);
            let mut response = Response::new(Body::new(http_body_util::StreamBody::new(frames)));
            response
                .headers_mut()
                .insert(header::CONTENT_TYPE, "application/grpc".parse().unwrap());
            response
        }
        _ => "ok".into_response(),
    }
}

/// Starts the app (HTTP/1 and h2c) on the test's runtime.
async fn start_upstream() -> (reqwest::Url, Arc<Seen>) {
    let seen = Arc::new(Seen::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let router = Router::new().fallback(app).with_state(Arc::clone(&seen));
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    (format!("http://{address}/").parse().unwrap(), seen)
}

fn emulator_for(
    upstream: &reqwest::Url,
    configure: fn(ServiceConfig) -> ServiceConfig,
) -> Emulator {
    Emulator::builder()
        .service(configure(
            ServiceConfig::new("app")
                .upstream(Upstream::Url(upstream.clone()))
                .invoker(TESTER),
        ))
        .start()
        .unwrap()
}

/// The payload's claims and the third segment of a forwarded `Bearer H.P.S`.
fn forwarded_token(value: &str) -> (Value, String) {
    let token = value.strip_prefix("Bearer ").expect("a bearer token");
    let [header, payload, signature]: [&str; 3] = token
        .split('.')
        .collect::<Vec<_>>()
        .try_into()
        .expect("three segments");
    let header: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(header).unwrap()).unwrap();
    assert_eq!(header["alg"], "RS256");
    let claims = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap();
    (claims, signature.to_owned())
}

#[tokio::test]
async fn the_app_sees_the_token_without_its_signature_and_cloud_runs_headers() {
    let (upstream, seen) = start_upstream().await;
    let emulator = emulator_for(&upstream, |service| service);
    let url = emulator.service_url("app").unwrap();
    let token = id_token(&emulator, TESTER, &audience(&url)).await;

    for name in ["authorization", "x-serverless-authorization"] {
        let response = http()
            .get(url.join("/who").unwrap())
            .header(name, format!("Bearer {token}"))
            .header("x-forwarded-for", "203.0.113.9")
            .header("x-google-spoofed", "1")
            .header("connection", "x-private")
            .header("x-private", "dropped")
            .header("keep-alive", "timeout=5")
            .header("proxy-authorization", "Basic eDp5")
            .header("te", "trailers")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{name}");
        let headers = seen.last();
        let (claims, signature) = forwarded_token(headers[name].to_str().unwrap());
        assert_eq!(signature, SIGNATURE_REMOVED, "{name}");
        assert_eq!(
            claims,
            claims_of(&token),
            "{name}: the claims arrive intact"
        );
        assert_eq!(claims["email"], TESTER);

        assert_eq!(headers["x-forwarded-for"], "203.0.113.9, 127.0.0.1");
        assert_eq!(headers["x-forwarded-proto"], "http");
        let trace = headers["x-cloud-trace-context"].to_str().unwrap();
        let (trace_id, span) = trace.split_once('/').unwrap();
        assert_eq!(trace_id.len(), 32, "{trace}");
        assert!(span.ends_with(";o=1"), "{trace}");
        let traceparent = headers["traceparent"].to_str().unwrap();
        assert!(
            traceparent.starts_with(&format!("00-{trace_id}-")),
            "{traceparent}"
        );
        for gone in [
            "x-google-spoofed",
            "x-private",
            "connection",
            "keep-alive",
            "proxy-authorization",
            "te",
            "trailer",
            "transfer-encoding",
            "upgrade",
        ] {
            assert!(
                !headers.contains_key(gone),
                "{name}: {gone} reached the app: {headers:?}"
            );
        }
    }
    assert!(
        !seen.ever_saw(&token),
        "the live token reached the upstream"
    );
}

#[tokio::test]
async fn a_public_service_still_gets_no_signature() {
    let (upstream, seen) = start_upstream().await;
    let emulator = emulator_for(&upstream, |service| service.invoker("allUsers"));
    let url = emulator.service_url("app").unwrap();
    let token = id_token(&emulator, TESTER, &audience(&url)).await;
    let response = http().get(url).bearer_auth(&token).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let (_, signature) = forwarded_token(seen.last()["authorization"].to_str().unwrap());
    assert_eq!(signature, SIGNATURE_REMOVED);
    assert!(!seen.ever_saw(&token));
}

/// Time from sending the request to holding the first event's bytes; checks the
/// stream is still open then.
async fn first_event(request: reqwest::RequestBuilder) -> Duration {
    let started = Instant::now();
    let mut response = request.send().await.unwrap();
    assert_eq!(response.status(), 200);
    let first = response.chunk().await.unwrap().expect("a first event");
    let elapsed = started.elapsed();
    assert_eq!(&first[..], b"data: 0\n\n");
    // The second event is 2 s away: the first came while the stream was open.
    assert!(
        elapsed < Duration::from_secs(1),
        "first event after {elapsed:?}"
    );
    elapsed
}

#[tokio::test]
async fn server_sent_events_arrive_as_soon_as_directly() {
    let (upstream, _) = start_upstream().await;
    let emulator = emulator_for(&upstream, |service| service);
    let url = emulator.service_url("app").unwrap();
    let token = id_token(&emulator, TESTER, &audience(&url)).await;
    let client = http();
    // Warm both paths' connections, so the measure is of forwarding only.
    client.get(upstream.clone()).send().await.unwrap();
    client
        .get(url.clone())
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();

    // The best of three each, interleaved: the machine's load is noise, not forwarding.
    let (mut direct, mut through) = (Duration::MAX, Duration::MAX);
    for _ in 0..3 {
        direct = direct.min(first_event(client.get(upstream.join("/sse").unwrap())).await);
        let via_front = client.get(url.join("/sse").unwrap()).bearer_auth(&token);
        through = through.min(first_event(via_front).await);
    }
    eprintln!("time to first event: direct {direct:?}, through the emulator {through:?}");
    assert!(
        through < direct + Duration::from_millis(50),
        "through the emulator {through:?}, directly {direct:?}"
    );
}

#[tokio::test]
async fn a_large_body_streams_without_being_held() {
    let (upstream, seen) = start_upstream().await;
    let emulator = emulator_for(&upstream, |service| service);
    let url = emulator.service_url("app").unwrap();
    let token = id_token(&emulator, TESTER, &audience(&url)).await;

    let mut response = http()
        .get(url.join("/big").unwrap())
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    // A proxy that held the answer would wait for the rest, which the upstream
    // writes only once the first chunk has reached us.
    let first = tokio::time::timeout(Duration::from_secs(5), response.chunk())
        .await
        .expect("the first chunk must arrive before the upstream writes the rest")
        .unwrap()
        .unwrap();
    assert_eq!(seen.big_written.load(Ordering::SeqCst), CHUNK);
    seen.release_big.notify_one();
    let mut received = first.len();
    while let Some(chunk) = response.chunk().await.unwrap() {
        received += chunk.len();
    }
    assert_eq!(received, BIG);
}

#[tokio::test]
async fn the_http1_request_size_limit_is_cloud_runs() {
    let (upstream, seen) = start_upstream().await;
    let emulator = emulator_for(&upstream, |service| service);
    let url = emulator.service_url("app").unwrap();
    let token = id_token(&emulator, TESTER, &audience(&url)).await;
    // Declared, not sent: the front answers from the head, as the client still writes.
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut connection = tokio::net::TcpStream::connect(url.socket_addrs(|| None).unwrap()[0])
        .await
        .unwrap();
    let head = format!(
        "POST / HTTP/1.1\r\nhost: {}\r\nauthorization: Bearer {token}\r\n\
         content-length: {}\r\n\r\n",
        url.authority(),
        32 * 1024 * 1024 + 1
    );
    connection.write_all(head.as_bytes()).await.unwrap();
    let mut answer = vec![0; 64];
    let read = connection.read(&mut answer).await.unwrap();
    let answer = String::from_utf8_lossy(&answer[..read]);
    assert!(answer.starts_with("HTTP/1.1 413 "), "{answer}");
    assert!(seen.headers.lock().unwrap().is_empty());
}

/// A WebSocket echo server that records the upgrade request's headers.
async fn start_websocket_upstream() -> (reqwest::Url, Arc<Seen>) {
    let seen = Arc::new(Seen::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let recorder = Arc::clone(&seen);
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let recorder = Arc::clone(&recorder);
            tokio::spawn(async move {
                // The handshake's own callback type, not ours to shrink.
                #[allow(clippy::result_large_err)]
                let record = |request: &tungstenite::handshake::server::Request, response| {
                    recorder
                        .headers
                        .lock()
                        .unwrap()
                        .push(request.headers().clone());
                    Ok(response)
                };
                let mut socket = tokio_tungstenite::accept_hdr_async(stream, record)
                    .await
                    .unwrap();
                while let Some(Ok(message)) = socket.next().await {
                    if message.is_text() || message.is_binary() {
                        socket.send(message).await.unwrap();
                    }
                }
            });
        }
    });
    (format!("http://{address}/").parse().unwrap(), seen)
}

fn websocket_request(
    url: &reqwest::Url,
    path: &str,
    token: Option<&str>,
) -> tungstenite::handshake::client::Request {
    use tungstenite::client::IntoClientRequest as _;
    let mut ws = url.join(path).unwrap();
    ws.set_scheme("ws").unwrap();
    let mut request = ws.as_str().into_client_request().unwrap();
    if let Some(token) = token {
        request
            .headers_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
    }
    request
}

async fn echo_round_trip(request: tungstenite::handshake::client::Request) {
    let (mut socket, response) = tokio_tungstenite::connect_async(request).await.unwrap();
    assert_eq!(response.status(), 101);
    for text in ["hello", "again"] {
        socket.send(Message::text(text)).await.unwrap();
        let echoed = socket.next().await.unwrap().unwrap();
        assert_eq!(echoed, Message::text(text));
    }
    socket.close(None).await.unwrap();
}

#[tokio::test]
async fn websockets_pass_through_to_the_upstream() {
    let (upstream, seen) = start_websocket_upstream().await;
    let emulator = emulator_for(&upstream, |service| service);
    let url = emulator.service_url("app").unwrap();
    let token = id_token(&emulator, TESTER, &audience(&url)).await;
    echo_round_trip(websocket_request(&url, "/chat", Some(&token))).await;
    let (_, signature) = forwarded_token(seen.last()["authorization"].to_str().unwrap());
    assert_eq!(signature, SIGNATURE_REMOVED);
    assert!(
        !seen.ever_saw(&token),
        "the live token reached the upstream"
    );
}

#[tokio::test]
async fn the_echo_app_echoes_websockets() {
    let emulator = Emulator::builder()
        .service(ServiceConfig::new("hello").invoker(TESTER))
        .start()
        .unwrap();
    let url = emulator.service_url("hello").unwrap();
    let token = id_token(&emulator, TESTER, &audience(&url)).await;
    echo_round_trip(websocket_request(&url, "/ws", Some(&token))).await;
}

#[tokio::test]
async fn a_websocket_without_a_token_is_refused_as_cloud_run_refuses_it() {
    let (upstream, seen) = start_websocket_upstream().await;
    let emulator = emulator_for(&upstream, |service| service);
    let url = emulator.service_url("app").unwrap();
    let refused = tokio_tungstenite::connect_async(websocket_request(&url, "/chat", None)).await;
    let Err(tungstenite::Error::Http(response)) = refused else {
        panic!("expected a refusal, got {refused:?}");
    };
    assert_eq!(response.status(), 403);
    assert!(
        seen.headers.lock().unwrap().is_empty(),
        "the upstream was reached"
    );
}

/// A gRPC-shaped call: one length-prefixed message, HTTP/2 prior knowledge.
async fn grpc_call(url: &reqwest::Url, token: Option<&str>) -> axum::http::Response<reqwest::Body> {
    let client = reqwest::Client::builder()
        .http2_prior_knowledge()
        .no_proxy()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let mut request = client
        .post(url.join("/test.Echo/Say").unwrap())
        .header(header::CONTENT_TYPE, "application/grpc")
        .header(header::TE, "trailers")
        .body(b"\0\0\0\0\x05hello".to_vec());
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.unwrap();
    assert_eq!(response.version(), Version::HTTP_2);
    response.into()
}

#[tokio::test]
async fn grpc_over_h2c_passes_through_with_trailers() {
    let (upstream, seen) = start_upstream().await;
    let emulator = emulator_for(&upstream, |service| service.use_http2(true));
    let url = emulator.service_url("app").unwrap();
    let token = id_token(&emulator, TESTER, &audience(&url)).await;

    let response = grpc_call(&url, Some(&token)).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()[header::CONTENT_TYPE], "application/grpc");
    let body = response.into_body().collect().await.unwrap();
    let trailers = body.trailers().cloned().expect("trailers");
    assert_eq!(body.to_bytes(), &b"\0\0\0\0\x05hello"[..]);
    assert_eq!(trailers["grpc-status"], "0");
    let headers = seen.last();
    assert_eq!(headers["te"], "trailers", "gRPC servers may require it");
    let (_, signature) = forwarded_token(headers["authorization"].to_str().unwrap());
    assert_eq!(signature, SIGNATURE_REMOVED);
    assert!(!seen.ever_saw(&token));

    // Refused calls get Cloud Run's HTML pages, not a grpc-status.
    let response = grpc_call(&url, None).await;
    assert_eq!(response.status(), 403);
    assert!(!response.headers().contains_key("grpc-status"));
    let page = response.into_body().collect().await.unwrap().to_bytes();
    assert!(String::from_utf8_lossy(&page).contains("403 Forbidden"));
    let response = grpc_call(&url, Some("not.a.token")).await;
    assert_eq!(response.status(), 401);
}

#[tokio::test]
async fn the_services_request_timeout_answers_504() {
    let (upstream, _) = start_upstream().await;
    let emulator = emulator_for(&upstream, |service| service.timeout(Duration::from_secs(1)));
    let url = emulator.service_url("app").unwrap();
    let token = id_token(&emulator, TESTER, &audience(&url)).await;

    let started = Instant::now();
    let response = http()
        .get(url.join("/slow-head").unwrap())
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 504);
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );

    // Once the answer has begun, the connection is cut at the timeout.
    let started = Instant::now();
    let response = http()
        .get(url.join("/slow-body").unwrap())
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(
        response.bytes().await.is_err(),
        "the body must not complete"
    );
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn request_timeouts_are_cloud_runs() {
    for timeout in [Duration::ZERO, Duration::from_secs(3601)] {
        let Err(error) = Emulator::builder()
            .service(ServiceConfig::new("app").timeout(timeout))
            .start()
        else {
            panic!("a timeout of {timeout:?} was accepted");
        };
        assert!(error.to_string().contains("from 1s to 3600s"), "{error}");
    }
}

#[tokio::test]
async fn the_echo_app_streams_events_and_bytes_within_the_timeout() {
    let emulator = Emulator::builder()
        .service(
            ServiceConfig::new("hello")
                .invoker(TESTER)
                .timeout(Duration::from_secs(1)),
        )
        .start()
        .unwrap();
    let url = emulator.service_url("hello").unwrap();
    let token = id_token(&emulator, TESTER, &audience(&url)).await;
    let get = |path: &str| http().get(url.join(path).unwrap()).bearer_auth(&token);

    let response = get("/sse?count=3&interval_ms=20").send().await.unwrap();
    assert_eq!(
        response.headers()[header::CONTENT_TYPE],
        "text/event-stream"
    );
    let events = response.text().await.unwrap();
    assert_eq!(events.matches("event: tick\n").count(), 3, "{events}");
    assert!(
        events.ends_with("id: 3\nevent: tick\ndata: 3\n\n"),
        "{events}"
    );

    let body = get("/stream?bytes=1000000").send().await.unwrap();
    assert_eq!(body.bytes().await.unwrap().len(), 1_000_000);

    // Events past the service's timeout are cut, as Cloud Run cuts the connection.
    let response = get("/sse?count=100&interval_ms=300").send().await.unwrap();
    assert!(
        response.text().await.is_err(),
        "the stream outlived the timeout"
    );
}

#[tokio::test]
async fn a_websocket_session_ends_at_the_request_timeout() {
    let (upstream, _) = start_websocket_upstream().await;
    let emulator = emulator_for(&upstream, |service| service.timeout(Duration::from_secs(1)));
    let url = emulator.service_url("app").unwrap();
    let token = id_token(&emulator, TESTER, &audience(&url)).await;
    let request = websocket_request(&url, "/chat", Some(&token));
    let (mut socket, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    socket.send(Message::text("before")).await.unwrap();
    assert_eq!(
        socket.next().await.unwrap().unwrap(),
        Message::text("before")
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let _ = socket.send(Message::text("after")).await;
    let next = tokio::time::timeout(Duration::from_secs(5), socket.next())
        .await
        .expect("the front closes the session");
    assert!(
        !matches!(next, Some(Ok(Message::Text(_)))),
        "an echo after the timeout: {next:?}"
    );
}
