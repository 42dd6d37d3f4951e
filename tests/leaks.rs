//! A canary token must never leave the service's origin, nor show in a `Debug` or
//! `Display`, an error, a diagnosis, a panic message or a log line (at any level,
//! reqwest's and hyper's included).

use std::io::Write as _;
use std::process::{Command, Output};
use std::sync::{Arc, Mutex, OnceLock};

use cloudrun_test::reqwest::StatusCode;
use cloudrun_test::{Client, Credentials, Diagnosis, TokenHeader, cloudrun_test};
use cloudrun_test_e2e::recorder::{Recorded, Recorder, response};
use cloudrun_test_e2e::{
    CANARY_SIGNATURE as SIGNATURE, Fixture, TESTER, canary_token, isolate, output_text,
};
use cloudrun_test_emulator::{Emulator, ServiceConfig, Upstream};

fn assert_clean(text: &str, token: &str, what: &str) {
    assert!(
        !text.contains(SIGNATURE) && !text.contains(token),
        "the canary token leaked in {what}:\n{text}"
    );
}

fn sent_token(request: &Recorded) -> bool {
    request.head.contains(SIGNATURE)
}

/// A client for `service` (a recorder) with the canary token.
async fn canary_client(service: &Recorder, header: TokenHeader) -> (Client, String) {
    let audience = service.url.origin().ascii_serialization();
    let token = canary_token(&audience);
    let client = Client::builder()
        .url(service.url.as_str())
        .credentials(Credentials::from_id_token(&token))
        .token_header(header)
        .build()
        .await
        .unwrap();
    (client, token)
}

fn ok() -> String {
    response(200, &[("content-type", "text/plain")], "ok")
}

#[tokio::test]
async fn absolute_urls_get_the_token_only_on_the_service_origin() {
    let service = Recorder::start(|_| ok());
    let other = Recorder::start(|_| ok());
    let (client, _) = canary_client(&service, TokenHeader::Authorization).await;

    client.get("/relative").send().await.unwrap();
    client
        .get(service.at("/absolute").as_str())
        .send()
        .await
        .unwrap();
    client
        .get(other.at("/elsewhere").as_str())
        .send()
        .await
        .unwrap();
    // Same port, another host name: another origin.
    let localhost = format!("http://localhost:{}/", service.url.port().unwrap());
    client.get(&localhost).send().await.unwrap();

    let at_service = service.requests();
    assert_eq!(at_service.len(), 3);
    assert!(sent_token(&at_service[0]) && sent_token(&at_service[1]));
    assert!(
        at_service[0]
            .header("authorization")
            .unwrap()
            .starts_with("Bearer ")
    );
    assert!(!sent_token(&at_service[2]), "{}", at_service[2].head);
    assert!(
        !sent_token(&other.requests()[0]),
        "{}",
        other.requests()[0].head
    );
}

/// The service redirects `/out` to `other`, `/in` to itself, `/post` (307) to
/// `other`; `other` redirects `/back` to the service.
fn redirecting(other: String) -> impl Fn(&Recorded) -> String + Send + Sync + 'static {
    move |request| match request.target.as_str() {
        "/out" => response(302, &[("location", &format!("{other}landing"))], ""),
        "/post" => response(307, &[("location", &format!("{other}posted"))], ""),
        "/in" => response(301, &[("location", "/landing")], ""),
        _ => ok(),
    }
}

#[tokio::test]
async fn redirects_to_another_origin_carry_no_credentials_in_either_header() {
    for header in [
        TokenHeader::Authorization,
        TokenHeader::XServerlessAuthorization,
    ] {
        let other = Recorder::start(|_| ok());
        let service = Recorder::start(redirecting(other.url.to_string()));
        let (client, token) = canary_client(&service, header).await;
        let token_header = match header {
            TokenHeader::XServerlessAuthorization => "x-serverless-authorization",
            _ => "authorization",
        };

        // The app's own credentials ride along on the service's origin only, too.
        let response = client
            .get("/out")
            .header("cookie", "session=app-secret")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let response = client.get("/in").send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let response = client.post("/post").body("payload").send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);

        let at_service = service.requests();
        let targets: Vec<&str> = at_service.iter().map(|r| r.target.as_str()).collect();
        assert_eq!(targets, ["/out", "/in", "/landing", "/post"], "{header:?}");
        for request in &at_service {
            assert!(
                request.header(token_header).unwrap().contains(&token),
                "{header:?}: {}",
                request.head
            );
        }
        assert!(at_service[0].header("cookie").is_some());

        let at_other = other.requests();
        assert_eq!(at_other.len(), 2, "{header:?}");
        for request in &at_other {
            assert!(!sent_token(request), "{header:?} leaked: {}", request.head);
            for name in ["authorization", "x-serverless-authorization", "cookie"] {
                assert!(
                    request.header(name).is_none(),
                    "{header:?}: {}",
                    request.head
                );
            }
        }
        // 307 keeps method and body.
        assert_eq!(at_other[1].method, "POST");
        assert_eq!(at_other[1].body, b"payload");
    }
}

#[tokio::test]
async fn x_serverless_authorization_leaves_authorization_to_the_app() {
    let service = Recorder::start(|_| ok());
    let (client, token) = canary_client(&service, TokenHeader::XServerlessAuthorization).await;
    client
        .get("/")
        .header("authorization", "Bearer app-user-token")
        .send()
        .await
        .unwrap();
    let request = &service.requests()[0];
    assert_eq!(
        request.header("x-serverless-authorization"),
        Some(format!("Bearer {token}"))
    );
    assert_eq!(
        request.header("authorization").as_deref(),
        Some("Bearer app-user-token")
    );
}

#[tokio::test]
async fn a_redirect_chain_back_to_the_service_gets_the_token_again_only_there() {
    let service = Recorder::start(|_| ok());
    let back = service.at("/home").to_string();
    let other = Recorder::start(move |_| response(302, &[("location", &back)], ""));
    let (client, _) = canary_client(&service, TokenHeader::Authorization).await;
    let response = client.get(other.at("/away").as_str()).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(!sent_token(&other.requests()[0]));
    assert_eq!(service.requests()[0].target, "/home");
    assert!(sent_token(&service.requests()[0]));
}

#[tokio::test]
async fn debug_display_errors_and_diagnoses_never_show_the_token() {
    let service = Recorder::start(|request| match request.target.as_str() {
        "/refused" => response(
            401,
            &[("content-type", "text/html")],
            "<h1>Error: Unauthorized</h1>",
        ),
        "/forbidden" => response(403, &[], ""),
        _ => ok(),
    });
    let (client, token) = canary_client(&service, TokenHeader::Authorization).await;
    let id_token = client.id_token().await.unwrap();
    assert_eq!(id_token.as_str(), token);
    let credentials = Credentials::from_id_token(&token);

    let mut shown = vec![
        format!("{client:?}"),
        format!("{:?}", client.without_auth()),
        format!("{:?}", client.get("/x").header("x-app", "1")),
        format!("{id_token:?}"),
        format!("{id_token}"),
        format!("{credentials:?}"),
        credentials.describe(),
    ];
    for path in ["/refused", "/forbidden"] {
        let response = client.get(path).send().await.unwrap();
        let diagnosis = response
            .extensions()
            .get::<Diagnosis>()
            .expect("a refusal is diagnosed")
            .clone();
        shown.push(format!("{response:?}"));
        shown.push(format!("{diagnosis}"));
        shown.push(format!("{diagnosis:?}"));
    }
    // An unreachable service: the error, as Display and Debug.
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let unreachable = Client::builder()
        .url(format!("http://127.0.0.1:{closed}"))
        .credentials(Credentials::from_id_token(&token))
        .build()
        .await
        .unwrap();
    let error = unreachable.get("/").send().await.unwrap_err();
    shown.push(error.to_string());
    shown.push(format!("{error:?}"));
    for (index, text) in shown.iter().enumerate() {
        assert_clean(text, &token, &format!("item {index}"));
    }
}

/// The test the child process runs: a 401 (the emulator does not trust the canary),
/// then everything printed, then a panic through `unwrap` on an error.
#[cloudrun_test(service = "canary", timeout = "60s")]
#[ignore = "run by `panics_and_test_output_never_show_the_token` in a child process"]
async fn child_prints_everything_then_panics(client: Client) {
    let response = client.get("/").send().await.unwrap();
    let token = client.id_token().await.unwrap();
    println!("client: {client:?}\ntoken: {token:?} / {token}\nresponse: {response:?}");
    eprintln!("status {}", response.status());
    client.get("http://127.0.0.1:9/").send().await.unwrap();
}

fn run_child(test: &str, env: &[(String, String)]) -> Output {
    let mut command = Command::new(std::env::current_exe().unwrap());
    command.args([test, "--exact", "--ignored", "--test-threads=1"]);
    isolate(&mut command);
    command.envs(env.iter().cloned());
    command.output().expect("the test binary runs")
}

/// Cloud Run hands the container the verified token with its signature removed; the
/// emulated front does too, so a local upstream never holds a token it could replay.
#[tokio::test]
async fn the_emulated_front_hands_the_upstream_no_replayable_token() {
    let upstream = Recorder::start(|_| ok());
    let fixture = Fixture::start(
        Emulator::builder().service(
            ServiceConfig::new("hello")
                .upstream(Upstream::Url(upstream.url.clone()))
                .invoker(&format!("serviceAccount:{TESTER}")),
        ),
    );
    for header in [
        TokenHeader::Authorization,
        TokenHeader::XServerlessAuthorization,
    ] {
        let client = fixture
            .client_for(TESTER, "hello")
            .token_header(header)
            .build()
            .await
            .unwrap();
        let response = client.get("/stream").send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let token = client.id_token().await.unwrap();
        let (signed, signature) = token.as_str().rsplit_once('.').unwrap();
        let seen = upstream.requests();
        let last = seen.last().expect("the request reached the upstream");
        assert!(
            last.head
                .contains(&format!("Bearer {signed}.SIGNATURE_REMOVED_BY_GOOGLE")),
            "{header:?}: the app gets the claims without the signature"
        );
        for request in &seen {
            assert!(
                !request.head.contains(signature),
                "{header:?}: the live token reached the upstream"
            );
        }
    }
}

fn emulator_with_hello() -> Fixture {
    Fixture::start(
        Emulator::builder()
            .service(ServiceConfig::new("hello").invoker(&format!("serviceAccount:{TESTER}"))),
    )
}

#[test]
fn panics_and_test_output_never_show_the_token() {
    let fixture = emulator_with_hello();
    let url = fixture.emulator.service_url("hello").unwrap();
    let token = canary_token(&url.origin().ascii_serialization());
    let output = run_child(
        "child_prints_everything_then_panics",
        &[
            ("CLOUDRUN_TEST_ID_TOKEN".into(), token.clone()),
            ("CLOUDRUN_TEST_URL_CANARY".into(), url.to_string()),
        ],
    );
    let text = output_text(&output);
    assert!(!output.status.success(), "{text}");
    // The libtest output of the failed test: the diagnosis, the prints, the panic.
    assert!(text.contains("answered 401 Unauthorized"), "{text}");
    assert!(text.contains("its signature"), "{text}");
    assert!(text.contains("client: Client {"), "{text}");
    assert!(
        text.contains("called `Result::unwrap()` on an `Err` value"),
        "{text}"
    );
    assert!(text.contains("127.0.0.1:9"), "{text}");
    assert_clean(&text, &token, "the failed test's output");
}

/// Everything written through `tracing` and `log` at every level, in this process.
fn captured_logs() -> &'static Arc<Mutex<Vec<u8>>> {
    static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOGS.get_or_init(|| {
        let buffer = Arc::new(Mutex::new(Vec::new()));
        struct Writer(Arc<Mutex<Vec<u8>>>);
        impl std::io::Write for Writer {
            fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(bytes);
                Ok(bytes.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let for_tracing = Arc::clone(&buffer);
        tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_ansi(false)
            .with_writer(move || Writer(Arc::clone(&for_tracing)))
            .init();
        // reqwest (and rustls) log through the `log` crate.
        struct Logger(Arc<Mutex<Vec<u8>>>);
        impl log::Log for Logger {
            fn enabled(&self, _: &log::Metadata<'_>) -> bool {
                true
            }
            fn log(&self, record: &log::Record<'_>) {
                let _ = writeln!(
                    self.0.lock().unwrap(),
                    "log {} {}: {}",
                    record.level(),
                    record.target(),
                    record.args()
                );
            }
            fn flush(&self) {}
        }
        log::set_boxed_logger(Box::new(Logger(Arc::clone(&buffer)))).unwrap();
        log::set_max_level(log::LevelFilter::Trace);
        buffer
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trace_logs_hold_no_token_and_no_key_material() {
    let logs = captured_logs();
    let fixture = Fixture::start(
        Emulator::builder()
            .service(ServiceConfig::new("hello").invoker(&format!("serviceAccount:{TESTER}")))
            .service(ServiceConfig::new("other").invoker(&format!("serviceAccount:{TESTER}"))),
    );
    let key_file = fixture.key_file(TESTER);
    let key: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&key_file).unwrap()).unwrap();

    // Minted tokens: the Admin API lookup (access token), the ID token, a request.
    let client = fixture.client_for(TESTER, "hello").build().await.unwrap();
    assert_eq!(client.get("/").send().await.unwrap().status(), 200);
    let minted = client.id_token().await.unwrap().as_str().to_owned();
    // Rotated keys: a 401, a re-mint, a retry.
    fixture.emulator.rotate_signing_key();
    assert_eq!(client.get("/again").send().await.unwrap().status(), 200);
    let reminted = client.id_token().await.unwrap().as_str().to_owned();
    assert_ne!(minted, reminted);

    // The canary: refused by the emulator (401 explained), and across a redirect.
    let hello = fixture.emulator.service_url("hello").unwrap();
    let canary = canary_token(&hello.origin().ascii_serialization());
    let refused = Client::builder()
        .url(hello.as_str())
        .credentials(Credentials::from_id_token(&canary))
        .build()
        .await
        .unwrap();
    assert_eq!(refused.get("/").send().await.unwrap().status(), 401);
    let other = Recorder::start(|_| ok());
    let service = Recorder::start(redirecting(other.url.to_string()));
    let (redirecting_client, recorder_canary) =
        canary_client(&service, TokenHeader::XServerlessAuthorization).await;
    redirecting_client.get("/out").send().await.unwrap();

    let text = String::from_utf8_lossy(&logs.lock().unwrap()).into_owned();
    // The capture works: the emulator's, the library's and reqwest's lines are there.
    assert!(text.contains("issued an ID token"), "{text}");
    assert!(text.contains("retrying once with a new token"), "{text}");
    assert!(text.contains("following a redirect"), "{text}");
    assert!(text.contains("log DEBUG reqwest"), "{text}");
    for (secret, what) in [
        (minted.as_str(), "a minted ID token"),
        (reminted.as_str(), "a re-minted ID token"),
        (canary.as_str(), "the canary"),
        (recorder_canary.as_str(), "the canary"),
        (SIGNATURE, "the canary's signature"),
    ] {
        assert!(!text.contains(secret), "{what} leaked in the logs:\n{text}");
        // Nor its signature alone.
        let signature = secret.rsplit('.').next().unwrap();
        assert!(
            !text.contains(signature),
            "{what}'s signature leaked in the logs"
        );
    }
    let pem = key["private_key"].as_str().unwrap();
    for line in pem.lines().filter(|line| !line.starts_with("-----")) {
        assert!(!text.contains(line), "key material leaked in the logs");
    }
    assert!(
        !text.contains("ya29."),
        "an access token leaked in the logs"
    );
}

/// One unary gRPC call through `channel` (prost's `()` both ways), to `origin` if given
/// (the `:authority` a generated client would take from `with_origin`).
async fn grpc_call(
    channel: cloudrun_test::GrpcChannel,
    origin: Option<&str>,
) -> Result<(), cloudrun_test::tonic::Status> {
    use cloudrun_test::tonic;
    let mut grpc = match origin {
        Some(origin) => tonic::client::Grpc::with_origin(channel, origin.parse().unwrap()),
        None => tonic::client::Grpc::new(channel),
    };
    grpc.ready()
        .await
        .map_err(|error| tonic::Status::unknown(error.to_string()))?;
    let path = http::uri::PathAndQuery::from_static("/leaks.Canary/Call");
    let codec = tonic_prost::ProstCodec::<(), ()>::default();
    grpc.unary(tonic::Request::new(()), path, codec).await?;
    Ok(())
}

/// A client of the emulated `service` carrying the canary (which the front refuses).
async fn canary_client_of(fixture: &Fixture, service: &str) -> (Client, String) {
    let url = fixture.emulator.service_url(service).unwrap();
    let canary = canary_token(&url.origin().ascii_serialization());
    let client = Client::builder()
        .url(url.as_str())
        .credentials(Credentials::from_id_token(&canary))
        .build()
        .await
        .unwrap();
    (client, canary)
}

/// `shown` and the captured logs (which must hold a line of `library`) hold none of
/// `tokens`, nor their signatures.
fn assert_nothing_shows(shown: &[String], tokens: &[(&str, &str)], library: &str) {
    for (index, text) in shown.iter().enumerate() {
        for (token, _) in tokens {
            assert_clean(text, token, &format!("item {index}"));
        }
    }
    let text = String::from_utf8_lossy(&captured_logs().lock().unwrap()).into_owned();
    assert!(text.contains(library), "no {library} line captured");
    for (secret, what) in tokens {
        let signature = secret.rsplit('.').next().unwrap();
        assert!(
            !text.contains(signature),
            "{what}'s signature leaked in the logs"
        );
    }
}

/// gRPC: the token goes to the service's connection only, and no status, `Debug` or
/// log line at TRACE (tonic, h2) shows it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_grpc_path_never_shows_or_misroutes_the_token() {
    captured_logs();
    let fixture = Fixture::start(
        Emulator::builder().service(
            ServiceConfig::new("greeter")
                .invoker(&format!("serviceAccount:{TESTER}"))
                .use_http2(true),
        ),
    );
    let mut shown = Vec::new();

    // A minted token, to the emulator's own app over h2c (no gRPC server there: a
    // failure that tonic reports).
    let greeter = fixture.client_for(TESTER, "greeter").build().await.unwrap();
    let minted = greeter.id_token().await.unwrap().as_str().to_owned();
    let channel = greeter.grpc_channel().unwrap();
    shown.push(format!("{channel:?}"));
    if let Err(status) = grpc_call(channel, None).await {
        shown.push(format!("{status:?}"));
        shown.push(status.to_string());
    }
    // The canary, refused by the front: UNAUTHENTICATED with the diagnosis.
    let (refused, canary) = canary_client_of(&fixture, "greeter").await;
    let status = grpc_call(refused.grpc_channel().unwrap(), None)
        .await
        .unwrap_err();
    assert_eq!(status.code(), cloudrun_test::tonic::Code::Unauthenticated);
    shown.push(format!("{status:?}"));
    shown.push(status.to_string());
    // Another origin named as the call's authority: the channel dials only the
    // service, so the other origin sees nothing.
    let other = Recorder::start(|_| ok());
    let other_origin = other.url.origin().ascii_serialization();
    let _ = grpc_call(refused.grpc_channel().unwrap(), Some(&other_origin)).await;
    assert!(other.requests().is_empty(), "{}", other.requests()[0].head);

    assert_nothing_shows(
        &shown,
        &[(&minted, "a minted ID token"), (&canary, "the canary")],
        "h2::",
    );
}

/// A WebSocket echo through the front with `client`, then the errors of a refused
/// upgrade (a token for another audience) and of an absolute URL on another origin
/// (which must get no token), as shown to the user.
async fn websocket_exchanges(fixture: &Fixture, client: &Client) -> Vec<String> {
    use cloudrun_test::tokio_tungstenite::tungstenite::Message;
    use futures_util::{SinkExt as _, StreamExt as _};

    let mut socket = client.websocket("/ws").await.unwrap();
    socket.send(Message::text("ping")).await.unwrap();
    assert_eq!(socket.next().await.unwrap().unwrap(), Message::text("ping"));
    socket.close(None).await.unwrap();

    let mut shown = Vec::new();
    let elsewhere = fixture
        .client_for(TESTER, "hello")
        .audience("https://elsewhere.example")
        .build()
        .await
        .unwrap();
    let error = elsewhere.websocket("/ws").await.unwrap_err();
    assert_eq!(error.status(), Some(StatusCode::UNAUTHORIZED), "{error}");
    shown.push(error.to_string());
    shown.push(format!("{error:?}"));
    let refused_token = elsewhere.id_token().await.unwrap().as_str().to_owned();
    for text in &shown {
        assert_clean(text, &refused_token, "a refused upgrade's error");
    }

    let other = Recorder::start(|_| ok());
    let ws_other = other.url.as_str().replace("http://", "ws://");
    let error = client
        .websocket(&format!("{ws_other}elsewhere"))
        .await
        .unwrap_err();
    shown.push(error.to_string());
    shown.push(format!("{error:?}"));
    let at_other = other.requests();
    assert_eq!(at_other.len(), 1, "the upgrade reached the other origin");
    for name in ["authorization", "x-serverless-authorization"] {
        assert!(at_other[0].header(name).is_none(), "{}", at_other[0].head);
    }
    shown
}

/// WebSockets: the upgrade carries the token to the service's origin only, and no
/// error or `Debug` shows it. (Its logs at TRACE: the test below.)
#[tokio::test]
async fn the_websocket_path_never_shows_or_misroutes_the_token() {
    let fixture = emulator_with_hello();
    let hello = fixture.client_for(TESTER, "hello").build().await.unwrap();
    let minted = hello.id_token().await.unwrap().as_str().to_owned();
    let shown = websocket_exchanges(&fixture, &hello).await;
    for (index, text) in shown.iter().enumerate() {
        assert_clean(text, &minted, &format!("item {index}"));
    }
}

/// WebSockets at TRACE: tungstenite's client handshake logs the whole upgrade request
/// (`trace!("Request: {:?}")` in tungstenite 0.30's handshake/client.rs), so
/// `Client::websocket` writes the upgrade itself and the token never reaches it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_trace_logs_hold_no_token() {
    captured_logs();
    let fixture = emulator_with_hello();
    let hello = fixture.client_for(TESTER, "hello").build().await.unwrap();
    let minted = hello.id_token().await.unwrap().as_str().to_owned();
    let shown = websocket_exchanges(&fixture, &hello).await;
    assert_nothing_shows(&shown, &[(&minted, "a minted ID token")], "tungstenite");
}
