//! Starting and stopping: from sync code, from inside runtimes, shared across
//! tests' runtimes; configuration errors.

mod support;

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use cloudrun_test_emulator::{Emulator, Error, ServiceConfig, Upstream};
use support::*;

fn builder() -> cloudrun_test_emulator::EmulatorBuilder {
    Emulator::builder().service(ServiceConfig::new("hello").invoker(TESTER).tag("canary"))
}

/// A blocking round trip through the front, without any async runtime.
fn blocking_get(url: &reqwest::Url, token: Option<&str>) -> u16 {
    use std::io::{Read as _, Write as _};
    let mut stream =
        std::net::TcpStream::connect((url.host_str().unwrap(), url.port().unwrap())).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let auth = token
        .map(|token| format!("Authorization: Bearer {token}\r\n"))
        .unwrap_or_default();
    write!(
        stream,
        "GET / HTTP/1.1\r\nHost: x\r\n{auth}Connection: close\r\n\r\n"
    )
    .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    answer[9..12].parse().unwrap()
}

#[test]
fn starts_quickly_from_sync_code_and_stops_on_drop() {
    // Warm up (first use of the loader, TLS, ...), then measure.
    drop(builder().start().unwrap());
    let started = Instant::now();
    let emulator = builder().start().unwrap();
    let elapsed = started.elapsed();
    eprintln!("Emulator::start took {elapsed:?}");
    assert!(elapsed < Duration::from_secs(1), "start took {elapsed:?}");

    let url = emulator.service_url("hello").unwrap();
    assert_eq!(blocking_get(&url, None), 403);
    let port = emulator.base_url().port().unwrap();

    let stopping = Instant::now();
    drop(emulator);
    eprintln!("dropping the Emulator took {:?}", stopping.elapsed());
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
        "the listener is closed"
    );
    assert!(std::net::TcpStream::connect(("127.0.0.1", url.port().unwrap())).is_err());
}

#[tokio::test]
async fn starts_and_stops_inside_a_current_thread_runtime() {
    let emulator = builder().start().unwrap();
    let url = emulator.service_url("hello").unwrap();
    let token = id_token(&emulator, TESTER, &audience(&url)).await;
    let response = http().get(url).bearer_auth(token).send().await.unwrap();
    assert_eq!(response.status(), 200);
    drop(emulator);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn starts_and_stops_inside_a_multi_thread_runtime() {
    let emulator = builder().start().unwrap();
    let url = emulator.tag_url("hello", "canary").unwrap();
    let token = id_token(&emulator, TESTER, &audience(&url)).await;
    let response = http().get(url).bearer_auth(token).send().await.unwrap();
    assert_eq!(response.status(), 200);
    drop(emulator);
}

/// One emulator for several tests, each with its own runtime that ends with it.
fn shared() -> &'static Emulator {
    static SHARED: OnceLock<Emulator> = OnceLock::new();
    SHARED.get_or_init(|| builder().start().unwrap())
}

async fn use_shared() {
    let emulator = shared();
    let url = emulator.service_url("hello").unwrap();
    let token = id_token(emulator, TESTER, &audience(&url)).await;
    assert_eq!(
        http()
            .get(url)
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
}

#[test]
fn outlives_the_runtimes_of_the_tests_using_it() {
    for _ in 0..3 {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(use_shared());
        drop(runtime);
    }
    let url = shared().service_url("hello").unwrap();
    assert_eq!(blocking_get(&url, None), 403);
}

#[tokio::test]
async fn shared_from_a_tokio_test() {
    use_shared().await;
}

#[test]
fn reports_its_endpoints() {
    let emulator = Emulator::builder()
        .project("p-1")
        .region("asia-east1")
        .start()
        .unwrap();
    let base = emulator.base_url().as_str().to_owned();
    assert!(
        base.starts_with("http://127.0.0.1:") && base.ends_with('/'),
        "{base}"
    );
    assert_eq!(emulator.token_uri().as_str(), format!("{base}token"));
    assert_eq!(
        emulator.jwks_uri().as_str(),
        format!("{base}oauth2/v3/certs")
    );
    assert_eq!(emulator.run_endpoint().as_str(), base);
    assert_eq!(
        (emulator.project(), emulator.region()),
        ("p-1", "asia-east1")
    );
    let debug = format!("{emulator:?}");
    assert!(debug.contains(&base), "{debug}");
    emulator.service_account_key(TESTER);
    assert!(!format!("{emulator:?}").contains("PRIVATE KEY"));
}

#[test]
fn configuration_errors_say_what_to_fix() {
    let cases = [
        (
            Emulator::builder().service(ServiceConfig::new("Hello")),
            "service name \"Hello\"",
        ),
        (
            Emulator::builder().service(ServiceConfig::new("")),
            "service name \"\"",
        ),
        (
            Emulator::builder()
                .service(ServiceConfig::new("a"))
                .service(ServiceConfig::new("a")),
            "service \"a\" is configured twice",
        ),
        (
            Emulator::builder().service(ServiceConfig::new("a").tag("x").tag("x")),
            "tag \"x\" of service \"a\" is configured twice",
        ),
        (
            Emulator::builder().service(ServiceConfig::new("a").tag("X_1")),
            "tag \"X_1\"",
        ),
        (
            Emulator::builder().service(ServiceConfig::new("a").invoker("nobody")),
            "invoker \"nobody\"",
        ),
        (
            Emulator::builder().service(
                ServiceConfig::new("a").upstream(Upstream::Url("ftp://x/".parse().unwrap())),
            ),
            "not an http(s) URL",
        ),
        (Emulator::builder().project(""), "project \"\""),
        (
            Emulator::builder().region("europe west1"),
            "region \"europe west1\"",
        ),
    ];
    for (builder, expected) in cases {
        match builder.start() {
            Err(error @ Error::Config(_)) => {
                let message = error.to_string();
                assert!(
                    message.contains(expected),
                    "{message:?} should contain {expected:?}"
                );
            }
            other => {
                panic!("expected a configuration error containing {expected:?}, got {other:?}")
            }
        }
    }
}
