//! The client against the emulator's injected faults: flaky token endpoints and Admin
//! API, rotated keys, cold starts (429/503, reset connections), a hanging token endpoint.

use std::process::{Command, Output};
use std::time::{Duration, Instant};

use cloudrun_test::reqwest::StatusCode;
use cloudrun_test::{
    Client, ClientBuilder, Credentials, Diagnosis, ErrorKind, RetryPolicy, Settings, cloudrun_test,
};
use cloudrun_test_e2e::{Fixture, TESTER, isolate, output_text};
use cloudrun_test_emulator::{Emulator, ServiceConfig};

fn fixture() -> Fixture {
    Fixture::start(
        Emulator::builder()
            .service(ServiceConfig::new("hello").invoker(&format!("serviceAccount:{TESTER}"))),
    )
}

/// A client for `hello` by URL (no Admin API lookup: the ID token is the only mint),
/// retrying quickly so the tests stay fast.
fn builder(fixture: &Fixture) -> ClientBuilder {
    Client::builder()
        .url(fixture.emulator.service_url("hello").unwrap().as_str())
        .credentials(Credentials::from_file(fixture.key_file(TESTER)).unwrap())
        .retry(
            RetryPolicy::default().backoff(Duration::from_millis(20), Duration::from_millis(200)),
        )
}

#[tokio::test]
async fn a_token_endpoint_failing_twice_with_503_is_retried_and_the_test_passes() {
    let fixture = fixture();
    fixture.emulator.fail_token_requests(2, 503);
    let client = builder(&fixture).build().await.unwrap();
    assert_eq!(
        client.get("/").send().await.unwrap().status(),
        StatusCode::OK
    );
    let stats = fixture.emulator.stats();
    assert_eq!(stats.faults_injected, 2, "{stats:?}");
    assert_eq!(stats.id_tokens_minted, 1, "{stats:?}");
}

#[tokio::test]
async fn a_token_endpoint_failing_on_and_on_is_an_error_naming_it_with_the_fix() {
    let fixture = fixture();
    fixture.emulator.fail_token_requests(100, 500);
    let message = builder(&fixture).build().await.unwrap_err().to_string();
    assert!(
        message.contains(fixture.emulator.token_uri().as_str()),
        "{message}"
    );
    assert!(message.contains("HTTP 500"), "{message}");
    assert!(message.contains(TESTER), "{message}");
    // Three tries: the first and two retries; the message counts the tries made.
    let tries = fixture.emulator.stats().faults_injected;
    assert_eq!(tries, 3);
    assert!(
        message.contains(&format!(
            "fix: the token endpoint failed {tries} times in a row"
        )),
        "{message}"
    );
}

#[tokio::test]
async fn an_admin_api_failing_twice_with_503_is_retried_and_the_service_found() {
    let fixture = fixture();
    fixture.emulator.fail_admin_requests(2, 503);
    let client = fixture.client_for(TESTER, "hello").build().await.unwrap();
    assert_eq!(
        client.url().origin(),
        fixture.emulator.service_url("hello").unwrap().origin()
    );
    assert_eq!(
        client.get("/").send().await.unwrap().status(),
        StatusCode::OK
    );
    assert_eq!(fixture.emulator.stats().faults_injected, 2);
}

#[tokio::test]
async fn an_admin_api_failing_on_and_on_is_an_error_naming_it_with_the_fix() {
    let fixture = fixture();
    fixture.emulator.fail_admin_requests(100, 503);
    let message = fixture
        .client_for(TESTER, "hello")
        .build()
        .await
        .unwrap_err()
        .to_string();
    assert!(
        message.contains(
            fixture
                .emulator
                .run_endpoint()
                .as_str()
                .trim_end_matches('/')
        ),
        "{message}"
    );
    assert!(message.contains("HTTP 503"), "{message}");
    assert!(message.contains("fix: retry later"), "{message}");
    // Three tries: the first and two retries; a 404 or 403 is not retried. The message
    // counts the tries made.
    let tries = fixture.emulator.stats().faults_injected;
    assert_eq!(tries, 3);
    assert!(
        message.contains(&format!("{tries} times in a row")),
        "{message}"
    );
}

#[tokio::test]
async fn after_a_key_rotation_one_fresh_token_is_minted_and_the_request_passes() {
    let fixture = fixture();
    let client = builder(&fixture).build().await.unwrap();
    assert_eq!(
        client.get("/").send().await.unwrap().status(),
        StatusCode::OK
    );
    let before = client.id_token().await.unwrap();

    fixture.emulator.rotate_signing_key();
    let response = client.get("/after-rotation").send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(response.extensions().get::<Diagnosis>().is_none());
    let stats = fixture.emulator.stats();
    assert_eq!(stats.id_tokens_minted, 2, "{stats:?}");
    assert_eq!(stats.front_unauthorized, 1, "{stats:?}");
    let after = client.id_token().await.unwrap();
    assert_ne!(before.as_str(), after.as_str());

    // Later requests use the new token: no more 401s.
    assert_eq!(
        client.get("/").send().await.unwrap().status(),
        StatusCode::OK
    );
    assert_eq!(fixture.emulator.stats().front_unauthorized, 1);
}

#[tokio::test]
async fn a_401_answered_once_costs_one_re_mint_and_a_second_is_explained() {
    let fixture = fixture();
    let client = builder(&fixture).build().await.unwrap();
    fixture.emulator.fail_service_requests("hello", 1, 401);
    assert_eq!(
        client.get("/").send().await.unwrap().status(),
        StatusCode::OK
    );
    assert_eq!(fixture.emulator.stats().id_tokens_minted, 2);

    // Twice in a row: one retry only, then the 401 is explained.
    fixture.emulator.fail_service_requests("hello", 2, 401);
    let response = client.get("/").send().await.unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(fixture.emulator.stats().id_tokens_minted, 3);
    let diagnosis = response
        .extensions()
        .get::<Diagnosis>()
        .unwrap()
        .message()
        .to_owned();
    assert!(
        diagnosis.contains("its signature did not verify"),
        "{diagnosis}"
    );
    assert!(
        diagnosis.contains("a freshly minted token was refused too"),
        "{diagnosis}"
    );
    assert!(diagnosis.contains("fix: "), "{diagnosis}");
}

#[tokio::test]
async fn a_cold_start_answering_503_twice_is_waited_out() {
    let fixture = fixture();
    let client = builder(&fixture).build().await.unwrap();
    fixture.emulator.fail_service_requests("hello", 2, 503);
    let response = client.get("/").send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let stats = fixture.emulator.stats();
    assert_eq!(
        (stats.faults_injected, stats.front_accepted),
        (2, 1),
        "{stats:?}"
    );
}

#[tokio::test]
async fn non_idempotent_requests_are_not_retried_unless_asked() {
    let fixture = fixture();
    let client = builder(&fixture).build().await.unwrap();
    fixture.emulator.fail_service_requests("hello", 1, 503);
    let response = client.post("/").body("once").send().await.unwrap();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);

    let client = builder(&fixture)
        .retry(
            RetryPolicy::default()
                .backoff(Duration::from_millis(20), Duration::from_millis(200))
                .retry_non_idempotent(true),
        )
        .build()
        .await
        .unwrap();
    fixture.emulator.fail_service_requests("hello", 1, 503);
    let response = client.post("/").body("twice").send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
}

#[tokio::test]
async fn reset_connections_are_retried() {
    let fixture = fixture();
    let client = builder(&fixture).build().await.unwrap();
    fixture.emulator.reset_service_connections("hello", 2);
    assert_eq!(
        client.get("/").send().await.unwrap().status(),
        StatusCode::OK
    );
    assert_eq!(fixture.emulator.stats().faults_injected, 2);
}

#[tokio::test]
async fn when_retries_run_out_the_answer_is_explained_with_the_fix() {
    let fixture = fixture();
    let client = builder(&fixture)
        .retry(
            RetryPolicy::default()
                .max_retries(2)
                .backoff(Duration::from_millis(10), Duration::from_millis(50)),
        )
        .build()
        .await
        .unwrap();
    fixture.emulator.fail_service_requests("hello", 100, 429);
    let response = client.get("/").send().await.unwrap();
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    let diagnosis = response
        .extensions()
        .get::<Diagnosis>()
        .unwrap()
        .message()
        .to_owned();
    assert!(diagnosis.contains("after 2 retries"), "{diagnosis}");
    assert!(diagnosis.contains("wait_until_ready"), "{diagnosis}");
    assert!(diagnosis.contains("--min-instances 1"), "{diagnosis}");
    assert_eq!(fixture.emulator.stats().faults_injected, 3);

    let never = builder(&fixture)
        .retry(RetryPolicy::never())
        .build()
        .await
        .unwrap();
    let response = never.get("/").send().await.unwrap();
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(fixture.emulator.stats().faults_injected, 4);
}

#[tokio::test]
async fn wait_until_ready_waits_out_a_slow_cold_start() {
    let fixture = fixture();
    fixture
        .emulator
        .cold_start("hello", Duration::from_millis(300));
    fixture.emulator.fail_service_requests("hello", 3, 503);
    let started = Instant::now();
    let client = builder(&fixture)
        .retry(RetryPolicy::never())
        .wait_until_ready("/healthz", Duration::from_secs(20))
        .build()
        .await
        .unwrap();
    assert!(started.elapsed() >= Duration::from_millis(300));
    let stats = fixture.emulator.stats();
    assert_eq!(
        (stats.faults_injected, stats.front_accepted),
        (4, 1),
        "{stats:?}"
    );
    // The first test request needs no retry.
    assert_eq!(
        client.get("/").send().await.unwrap().status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn a_service_that_never_gets_ready_is_an_error_with_the_last_answer() {
    let fixture = fixture();
    fixture.emulator.fail_service_requests("hello", 1000, 503);
    let started = Instant::now();
    let error = builder(&fixture)
        .wait_until_ready("/", Duration::from_millis(800))
        .build()
        .await
        .unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(5));
    let message = error.to_string();
    assert!(message.contains("was not ready after"), "{message}");
    assert!(
        message.contains("last answer: HTTP 503 Service Unavailable"),
        "{message}"
    );
    assert!(message.contains("fix: wait longer"), "{message}");
}

/// Run in a child process by the test below, with the emulator's token endpoint hanging
/// and CLOUDRUN_TEST_TOKEN_TIMEOUT set: a process-wide setting (token calls are shared by
/// every client of the process), so it takes a process of its own.
#[cloudrun_test(service = "hanging", timeout = "30s")]
#[ignore = "run in a child process by the token-timeout test below"]
async fn child_behind_a_hanging_token_endpoint(client: Client) {
    client.get("/").send().await.unwrap();
}

fn run_child(test: &str, fixture: &Fixture, extra: &[(&str, &str)]) -> (Output, Duration) {
    let mut command = Command::new(std::env::current_exe().unwrap());
    command.args([test, "--exact", "--ignored", "--test-threads=1"]);
    isolate(&mut command);
    command.envs(fixture.environment(TESTER));
    command.env(
        "CLOUDRUN_TEST_URL_HANGING",
        fixture.emulator.service_url("hello").unwrap().as_str(),
    );
    command.envs(extra.iter().copied());
    let started = Instant::now();
    let output = command.output().expect("the test binary runs");
    (output, started.elapsed())
}

#[test]
fn a_hanging_token_endpoint_fails_the_test_within_the_token_timeout() {
    let fixture = fixture();
    fixture.emulator.hang_token_requests(true);
    let (output, took) = run_child(
        "child_behind_a_hanging_token_endpoint",
        &fixture,
        &[("CLOUDRUN_TEST_TOKEN_TIMEOUT", "1s")],
    );
    let text = output_text(&output);
    assert!(!output.status.success(), "{text}");
    assert!(took < Duration::from_secs(20), "took {took:?}: {text}");
    assert!(text.contains("cloudrun_test setup failed"), "{text}");
    assert!(
        text.contains(fixture.emulator.token_uri().as_str()),
        "{text}"
    );
    assert!(text.contains("no answer within 1s"), "{text}");
    assert!(text.contains("CLOUDRUN_TEST_TOKEN_TIMEOUT"), "{text}");
}

/// Checked with the other settings, in this process: before anything is asked of a
/// token endpoint (the attribute then fails the test with this error and its fix: the
/// unit tests of `entry.rs`).
#[test]
fn a_token_timeout_setting_that_is_no_limit_is_refused_with_the_fix() {
    let error = Settings::from_vars([("CLOUDRUN_TEST_TOKEN_TIMEOUT", "a while")]).unwrap_err();
    let text = error.to_string();
    for expected in [
        "CLOUDRUN_TEST_TOKEN_TIMEOUT is \"a while\", which is no time limit",
        "fix: write a duration such as",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in:\n{text}");
    }
    assert_eq!(error.kind(), ErrorKind::Setting);
}

// A test timeout shorter than a hanging token endpoint's: the unit test of `entry.rs`
// of the same name runs the attribute's runtime in process, credentials given directly.
