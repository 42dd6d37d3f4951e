//! Every error a user can meet says what went wrong and the fix: one test per kind,
//! for the client, the service lookup, token endpoints and the requests themselves.
//! (Credential files: errors.rs and the CLI's credential_sources.rs; refusals,
//! retries and timeouts: faults.rs and generated_suites.rs.)

use std::process::Command;
use std::time::Duration;

use cloudrun_test::{Client, ClientBuilder, Credentials, ErrorKind, cloudrun_test};
use cloudrun_test_e2e::recorder::{Recorder, response};
use cloudrun_test_e2e::{Fixture, TESTER, isolate, output_text};
use cloudrun_test_emulator::{Emulator, ServiceConfig};
use serde_json::{Value, json};

/// A builder that finds no `cloudrun-test.toml` and uses a ready token.
fn bare() -> (ClientBuilder, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let builder = Client::builder()
        .config_dir(dir.path())
        .credentials(Credentials::from_id_token("a.b.c"));
    (builder, dir)
}

fn assert_says(message: &str, expected: &[&str]) {
    for part in expected {
        assert!(message.contains(part), "expected {part:?} in:\n{message}");
    }
    assert!(message.contains("fix: "), "no fix in:\n{message}");
}

#[tokio::test]
async fn no_service_and_no_url() {
    let (builder, _dir) = bare();
    let message = builder.build().await.unwrap_err().to_string();
    assert_says(
        &message,
        &[
            "neither a service name nor a URL",
            "#[cloudrun_test(service = \"NAME\")]",
        ],
    );
}

#[tokio::test]
async fn a_service_url_that_is_not_one() {
    for (url, expected) in [
        ("hello.run.app", "is not a URL"),
        ("ftp://hello.run.app", "is not an http(s) URL"),
    ] {
        let (builder, _dir) = bare();
        let message = builder.url(url).build().await.unwrap_err().to_string();
        assert_says(
            &message,
            &[expected, "https://hello-123456789.europe-west1.run.app"],
        );
    }
}

#[tokio::test]
async fn a_token_asked_of_a_client_without_credentials() {
    let (builder, _dir) = bare();
    let client = builder.url("http://127.0.0.1:1").build().await.unwrap();
    let message = client
        .without_auth()
        .id_token()
        .await
        .unwrap_err()
        .to_string();
    assert_says(
        &message,
        &["has no credentials", "GOOGLE_APPLICATION_CREDENTIALS"],
    );
}

#[tokio::test]
async fn a_ready_identity_token_cannot_look_a_service_up() {
    let (builder, _dir) = bare();
    let message = builder
        .service("hello")
        .project("p")
        .region("r")
        .run_endpoint("http://127.0.0.1:1")
        .build()
        .await
        .unwrap_err()
        .to_string();
    assert_says(&message, &["identity token only", "url = \"https://...\""]);
}

/// Credentials the emulator mints for, with the Admin API at `endpoint`.
fn lookup(fixture: &Fixture, endpoint: &str) -> ClientBuilder {
    Client::builder()
        .config_dir(fixture.keys.path())
        .service("hello")
        .project("emulated-project")
        .region("europe-west1")
        .run_endpoint(endpoint)
        .credentials(Credentials::from_file(fixture.key_file(TESTER)).unwrap())
}

#[tokio::test]
async fn admin_api_failures_name_the_cause_and_the_fix() {
    let fixture = Fixture::start(Emulator::builder());
    let cases: [(u16, &str, &[&str]); 4] = [
        (
            403,
            r#"{"error":{"code":403,"status":"PERMISSION_DENIED"}}"#,
            &[
                "may not read the service",
                "roles/run.viewer",
                "CLOUDRUN_TEST_URL_HELLO",
            ],
        ),
        (
            503,
            "",
            &["HTTP 503", "retry later", "status.cloud.google.com"],
        ),
        (
            200,
            "<html>a proxy's page</html>",
            &["is not a Cloud Run service", "CLOUDRUN_TEST_RUN_ENDPOINT"],
        ),
        (
            200,
            "{}",
            &[
                "has no URL yet",
                "gcloud run deploy hello --region europe-west1",
            ],
        ),
    ];
    for (status, body, expected) in cases {
        let api = Recorder::start(move |_| {
            response(status, &[("content-type", "application/json")], body)
        });
        let message = lookup(&fixture, api.url.as_str())
            .build()
            .await
            .unwrap_err()
            .to_string();
        assert_says(&message, expected);
        assert!(
            message.contains(api.url.as_str().trim_end_matches('/')),
            "{message}"
        );
    }
    let message = lookup(&fixture, "http://127.0.0.1:9")
        .build()
        .await
        .unwrap_err()
        .to_string();
    assert_says(
        &message,
        &[
            "could not connect",
            "check the network",
            "CLOUDRUN_TEST_RUN_ENDPOINT",
        ],
    );
}

/// A misspelt service name: the closest one the caller may list (services.list) is
/// offered; when none is close, or listing fails, the message is as before.
#[tokio::test]
async fn an_unknown_service_offers_the_closest_name_the_caller_may_list() {
    let fixture = Fixture::start(
        Emulator::builder()
            .service(ServiceConfig::new("hello"))
            .service(ServiceConfig::new("billing")),
    );
    let message = fixture
        .client_for(TESTER, "helo")
        .build()
        .await
        .unwrap_err()
        .to_string();
    assert_says(
        &message,
        &[
            "Cloud Run service `helo` was not found",
            "fix: did you mean `hello`? Otherwise check the name with `gcloud run services list",
        ],
    );
    let message = fixture
        .client_for(TESTER, "orders")
        .build()
        .await
        .unwrap_err()
        .to_string();
    assert!(!message.contains("did you mean"), "{message}");
    assert!(message.contains("fix: check the name with"), "{message}");

    // The lookup says 404 and the list is refused: no guess, the message as before.
    let api = Recorder::start(|request| {
        let status = if request.target.ends_with("/services") {
            403
        } else {
            404
        };
        response(status, &[("content-type", "application/json")], "{}")
    });
    let message = lookup(&fixture, api.url.as_str())
        .service("helo")
        .build()
        .await
        .unwrap_err()
        .to_string();
    assert!(message.contains("`helo` was not found"), "{message}");
    assert!(message.contains("fix: check the name with"), "{message}");
    assert!(
        api.requests()
            .iter()
            .any(|request| request.target.ends_with("/services")),
        "services.list was not asked"
    );
}

/// The emulator's key for TESTER, with `token_uri` pointing elsewhere.
fn key_with_token_uri(fixture: &Fixture, token_uri: &str) -> Credentials {
    let mut key: Value =
        serde_json::from_str(&fixture.emulator.service_account_key(TESTER)).unwrap();
    key["token_uri"] = json!(token_uri);
    Credentials::from_json("/keys/key.json", &key.to_string()).unwrap()
}

#[tokio::test]
async fn token_endpoint_answers_that_are_no_tokens() {
    let fixture = Fixture::start(Emulator::builder());
    for (body, expected) in [
        ("{}", "the answer has no `id_token`"),
        (
            "<html>a captive portal</html>",
            "the answer is not a token response",
        ),
    ] {
        let endpoint = Recorder::start(move |_| response(200, &[], body));
        let message = key_with_token_uri(&fixture, endpoint.url.as_str())
            .id_token("https://hello.example.com")
            .await
            .unwrap_err()
            .to_string();
        assert_says(
            &message,
            &[expected, endpoint.url.as_str(), TESTER, "token_uri"],
        );
    }
}

#[tokio::test]
async fn an_unreachable_token_endpoint_says_to_check_it() {
    let fixture = Fixture::start(Emulator::builder());
    let message = key_with_token_uri(&fixture, "http://127.0.0.1:9/token")
        .id_token("https://hello.example.com")
        .await
        .unwrap_err()
        .to_string();
    assert_says(
        &message,
        &[
            "http://127.0.0.1:9/token",
            "could not connect",
            "fix: check that http://127.0.0.1:9/token is reachable",
            "/keys/key.json",
        ],
    );
}

#[tokio::test]
async fn a_token_endpoint_echoing_the_assertion_does_not_put_it_in_the_error() {
    let fixture = Fixture::start(Emulator::builder());
    // A (broken) endpoint that quotes the signed assertion back in its error.
    let endpoint = Recorder::start(|request| {
        let form = String::from_utf8_lossy(&request.body).into_owned();
        let assertion = form
            .split('&')
            .find_map(|pair| pair.strip_prefix("assertion="))
            .unwrap_or_default()
            .to_owned();
        let body = json!({"error": "invalid_grant", "error_description": format!("bad assertion {assertion}")});
        response(
            400,
            &[("content-type", "application/json")],
            &body.to_string(),
        )
    });
    let message = key_with_token_uri(&fixture, endpoint.url.as_str())
        .id_token("https://hello.example.com")
        .await
        .unwrap_err()
        .to_string();
    let form = String::from_utf8_lossy(&endpoint.requests()[0].body).into_owned();
    let assertion = form
        .split('&')
        .find_map(|pair| pair.strip_prefix("assertion="))
        .unwrap();
    let signature = assertion.rsplit('.').next().unwrap();
    assert!(
        !message.contains(signature),
        "the assertion leaked: {message}"
    );
    assert_says(&message, &["invalid_grant", "bad assertion <redacted>"]);
}

/// A client with a ready token for `url`: nothing is fetched until a request.
async fn client_for(url: &str) -> Client {
    let (builder, _dir) = bare();
    builder.url(url).build().await.unwrap()
}

fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

#[tokio::test]
async fn a_host_name_that_does_not_resolve_points_at_the_service_url() {
    let client = client_for("https://hello-123456789.europe-west1.invalid").await;
    let message = client.get("/").send().await.unwrap_err().to_string();
    assert_says(
        &message,
        &[
            "does not resolve",
            "the service URL is likely wrong",
            "gcloud run services describe",
        ],
    );
}

#[tokio::test]
async fn a_refused_connection_asks_whether_it_runs_or_whether_ingress_blocks_it() {
    let port = closed_port();
    let local = client_for(&format!("http://127.0.0.1:{port}")).await;
    let message = local.get("/").send().await.unwrap_err().to_string();
    assert_says(
        &message,
        &[
            "could not connect",
            &format!("is the service running on 127.0.0.1:{port}?"),
        ],
    );
    assert!(message.contains("after 3 retries"), "{message}");

    // Not a loopback name (0.0.0.0 reaches this machine on Linux): a remote service,
    // which gets a token over https only.
    let remote = client_for(&format!("https://0.0.0.0:{port}")).await;
    let message = remote.get("/").send().await.unwrap_err().to_string();
    assert_says(&message, &["--ingress all", "ingress setting"]);
}

#[tokio::test]
async fn a_request_that_times_out_says_how_to_raise_the_limit() {
    let slow = Recorder::start(|_| {
        std::thread::sleep(Duration::from_secs(2));
        response(200, &[], "late")
    });
    let client = client_for(slow.url.as_str()).await;
    let message = client
        .get("/")
        .timeout(Duration::from_millis(200))
        .send()
        .await
        .unwrap_err()
        .to_string();
    assert_says(
        &message,
        &[
            "timed out",
            "no answer in time",
            "`RequestBuilder::timeout`",
        ],
    );
}

#[tokio::test]
async fn a_path_that_is_no_path() {
    let client = client_for("http://127.0.0.1:1").await;
    let message = client
        .get("http://[::1")
        .send()
        .await
        .unwrap_err()
        .to_string();
    assert!(message.contains("is neither a path nor a URL"), "{message}");
}

#[tokio::test]
async fn a_service_that_never_gets_ready_says_how_long_and_its_last_answer() {
    let service = Recorder::start(|_| response(503, &[], "starting"));
    let (builder, _dir) = bare();
    let client = builder.url(service.url.as_str()).build().await.unwrap();
    let error = client
        .wait_until_ready("/", Duration::from_millis(300))
        .await
        .unwrap_err();
    assert_eq!(error.kind(), ErrorKind::NotReady);
    assert_eq!(
        error.status(),
        Some(reqwest::StatusCode::SERVICE_UNAVAILABLE)
    );
    assert_says(
        &error.to_string(),
        &["was not ready after 0.", "last answer: HTTP 503"],
    );
}

/// The line of `child_without_credentials`'s attribute: where its setup failure must
/// be reported, not in the library.
const CHILD_LINE: u32 = line!() + 3;

/// Run in a child process with no credentials anywhere.
#[cloudrun_test(url = "https://hello-123456789.europe-west1.run.app")]
#[ignore = "run by `no_credentials_at_all_lists_what_was_tried` in a child process"]
async fn child_without_credentials(client: Client) {
    client.get("/").send().await.unwrap();
}

/// What `child_without_credentials` prints, run with no credentials anywhere and the
/// variables `env` set.
fn child_without_credentials_says(env: &[(&str, &str)]) -> String {
    let home = tempfile::tempdir().unwrap();
    let mut command = Command::new(std::env::current_exe().unwrap());
    command.args(["child_without_credentials", "--exact", "--ignored"]);
    isolate(&mut command);
    command
        .env("HOME", home.path())
        .env("CLOUDSDK_CONFIG", home.path().join("gcloud"))
        .env("CLOUDRUN_TEST_GCLOUD", home.path().join("no-gcloud-here"))
        .envs(env.iter().copied());
    let output = command.output().unwrap();
    let text = output_text(&output);
    assert!(!output.status.success(), "{text}");
    text
}

const EMULATE_LINE: &str = "no Google account? run the suite against the local emulator: \
                            cloudrun-test emulate --serve 'NAME=cargo run' -- cargo test";

#[test]
fn no_credentials_at_all_lists_what_was_tried() {
    let text = child_without_credentials_says(&[]);
    assert_says(
        &text,
        &[
            "cloudrun_test setup failed",
            "no Google credentials found",
            "GOOGLE_APPLICATION_CREDENTIALS",
            // No project either: perhaps no Google account at all.
            EMULATE_LINE,
        ],
    );
    // The panic is the user's test's, where the IDE's click-through should land.
    let location = format!("panicked at {}:{CHILD_LINE}:", file!());
    assert!(
        text.contains(&location),
        "expected {location:?} in:\n{text}"
    );
    assert!(
        !text
            .lines()
            .any(|line| line.contains("panicked at") && line.contains("entry.rs")),
        "{text}"
    );
}

/// With a project set, the user has a Google account: the emulator is not offered.
#[test]
fn no_credentials_with_a_project_does_not_offer_the_emulator() {
    for variable in ["CLOUDRUN_TEST_PROJECT", "GOOGLE_CLOUD_PROJECT"] {
        let text = child_without_credentials_says(&[(variable, "my-project")]);
        assert_says(&text, &["no Google credentials found"]);
        assert!(
            !text.contains("cloudrun-test emulate"),
            "{variable}: {text}"
        );
    }
}
