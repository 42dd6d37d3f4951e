//! The library against the emulator, in process: real HTTP on loopback, real RS256.

use cloudrun_test::Settings;
use cloudrun_test::reqwest::StatusCode;
use cloudrun_test_e2e::{Fixture, OUTSIDER, TESTER};
use cloudrun_test_emulator::{Emulator, ServiceConfig};
use serde_json::Value;

fn fixture() -> Fixture {
    Fixture::start(
        Emulator::builder()
            .project("emulated-project")
            .region("europe-west1")
            .service(ServiceConfig::new("hello").invoker(&format!("serviceAccount:{TESTER}")))
            .service(ServiceConfig::new("tagged").invoker(TESTER).tag("canary")),
    )
}

#[tokio::test]
async fn invoker_reaches_the_service_found_through_the_admin_api() {
    let fixture = fixture();
    let client = fixture.client_for(TESTER, "hello").build().await.unwrap();
    let expected = fixture.emulator.service_url("hello").unwrap();
    assert_eq!(client.url().origin(), expected.origin());
    assert_eq!(client.audience(), expected.origin().ascii_serialization());

    let response = client.get("/some/path?x=1").send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let echo: Value = response.json().await.unwrap();
    assert_eq!(echo["caller"], TESTER);
    assert_eq!(echo["path"], "/some/path?x=1");
    assert_eq!(echo["service"], "hello");
}

#[tokio::test]
async fn the_service_is_private_without_a_token() {
    let fixture = fixture();
    let client = fixture.client_for(TESTER, "hello").build().await.unwrap();
    let response = client.without_auth().get("/").send().await.unwrap();
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    let body = response.text().await.unwrap();
    assert!(body.contains("<h1>Error: Forbidden</h1>"), "{body}");
}

#[tokio::test]
async fn a_non_invoker_is_refused_with_403() {
    let fixture = fixture();
    fixture.key_file(OUTSIDER);
    let client = fixture.client_for(OUTSIDER, "hello").build().await.unwrap();
    let response = client.get("/").send().await.unwrap();
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    assert_eq!(client.identity().as_deref(), Some(OUTSIDER));
}

#[tokio::test]
async fn a_traffic_tag_resolves_to_its_own_url() {
    let fixture = fixture();
    let client = fixture
        .client_for(TESTER, "tagged")
        .tag("canary")
        .build()
        .await
        .unwrap();
    let tag_url = fixture.emulator.tag_url("tagged", "canary").unwrap();
    assert_eq!(client.url().origin(), tag_url.origin());
    let echo: Value = client.get("/").send().await.unwrap().json().await.unwrap();
    assert_eq!(echo["tag"], "canary");
}

#[tokio::test]
async fn an_unknown_tag_lists_the_existing_ones() {
    let fixture = fixture();
    let error = fixture
        .client_for(TESTER, "tagged")
        .tag("nope")
        .build()
        .await
        .unwrap_err();
    let message = error.to_string();
    assert!(message.contains("no traffic tag `nope`"), "{message}");
    assert!(message.contains("canary"), "{message}");
    assert!(message.contains("--no-traffic --tag nope"), "{message}");
}

#[tokio::test]
async fn an_unknown_service_names_project_region_and_the_fix() {
    let fixture = fixture();
    let error = fixture
        .client_for(TESTER, "nope")
        .build()
        .await
        .unwrap_err();
    let message = error.to_string();
    assert!(
        message
            .contains("`nope` was not found in project `emulated-project`, region `europe-west1`"),
        "{message}"
    );
    assert!(
        message
            .contains("gcloud run services list --project emulated-project --region europe-west1"),
        "{message}"
    );
    assert!(message.contains("CLOUDRUN_TEST_URL_NOPE"), "{message}");
}

#[tokio::test]
async fn the_token_goes_only_to_the_service_origin() {
    let fixture = fixture();
    let client = fixture.client_for(TESTER, "hello").build().await.unwrap();
    // Another emulated service is another origin: the request must arrive without a token.
    let other = fixture.emulator.service_url("tagged").unwrap();
    let response = client.get(other.as_str()).send().await.unwrap();
    assert_eq!(
        response.status(),
        StatusCode::FORBIDDEN,
        "no token was sent to the other origin"
    );
}

#[tokio::test]
async fn id_token_is_for_the_service_and_redacted_in_debug() {
    let fixture = fixture();
    let client = fixture.client_for(TESTER, "hello").build().await.unwrap();
    let token = client.id_token().await.unwrap();
    assert_eq!(token.claims().aud.as_deref(), Some(client.audience()));
    assert_eq!(token.claims().email.as_deref(), Some(TESTER));
    for shown in [
        format!("{token:?}"),
        format!("{token}"),
        format!("{client:?}"),
    ] {
        assert!(!shown.contains(token.as_str()), "token leaked in {shown}");
    }
}

#[tokio::test]
async fn a_custom_audience_is_minted_and_accepted() {
    let fixture = Fixture::start(
        Emulator::builder()
            .project("emulated-project")
            .region("europe-west1")
            .service(
                ServiceConfig::new("custom")
                    .invoker(TESTER)
                    .custom_audience("https://hello.example.com"),
            ),
    );
    let client = fixture
        .client_for(TESTER, "custom")
        .audience("https://hello.example.com")
        .build()
        .await
        .unwrap();
    assert_eq!(client.audience(), "https://hello.example.com");
    let token = client.id_token().await.unwrap();
    assert_eq!(
        token.claims().aud.as_deref(),
        Some("https://hello.example.com")
    );
    let response = client.get("/").send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);

    // The same audience from cloudrun-test.toml's [services.custom].
    let config = tempfile::tempdir().unwrap();
    std::fs::write(
        config.path().join("cloudrun-test.toml"),
        "[services.custom]\naudience = \"https://hello.example.com\"\n",
    )
    .unwrap();
    let from_file = fixture
        .client_for(TESTER, "custom")
        .config_dir(config.path())
        .build()
        .await
        .unwrap();
    assert_eq!(from_file.audience(), "https://hello.example.com");
    assert_eq!(
        from_file.get("/").send().await.unwrap().status(),
        StatusCode::OK
    );

    // An audience the service does not list is refused, as Cloud Run does.
    let stranger = fixture
        .client_for(TESTER, "custom")
        .audience("https://not-this-service.example.com")
        .build()
        .await
        .unwrap();
    let response = stranger.get("/").send().await.unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
}

/// `send()` starts the request at once when it can, which needs a runtime (reqwest's
/// timer): a future made outside any runtime must wait for its first poll instead of
/// panicking.
#[test]
fn a_request_made_outside_a_runtime_is_sent_when_polled() {
    let fixture = fixture();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let client = runtime
        .block_on(fixture.client_for(TESTER, "hello").build())
        .unwrap();
    let request = client.get("/outside").send();
    let response = runtime.block_on(request).unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let echo: Value = runtime.block_on(response.json()).unwrap();
    assert_eq!(echo["caller"], TESTER);
    assert_eq!(echo["path"], "/outside");
}

/// The echo of `GET /` on service `hello`, with `toml` as the `cloudrun-test.toml` and
/// `settings` passed directly: the environment is not read.
async fn hello_answer(fixture: &Fixture, toml: &str, settings: Settings) -> Value {
    let folder = tempfile::tempdir().unwrap();
    std::fs::write(folder.path().join("cloudrun-test.toml"), toml).unwrap();
    let client = fixture
        .client_for(TESTER, "hello")
        .config_dir(folder.path())
        .settings(settings)
        .build()
        .await
        .unwrap();
    client.get("/").send().await.unwrap().json().await.unwrap()
}

#[tokio::test]
async fn a_profile_switches_service_url_and_the_file_can_pick_a_tag() {
    let fixture = Fixture::for_config_files();
    let staging = fixture.emulator.service_url("hello-staging").unwrap();
    let toml = format!(
        "[services.hello]\ntag = \"canary\"\n\n[profiles.staging.services.hello]\nurl = \"{staging}\"\n"
    );

    let echo = hello_answer(&fixture, &toml, Settings::default()).await;
    assert_eq!(
        (&echo["service"], &echo["tag"]),
        (&"hello".into(), &"canary".into())
    );

    let echo = hello_answer(&fixture, &toml, Settings::default().profile("staging")).await;
    assert_eq!(echo["service"], "hello-staging", "{echo}");
}

#[tokio::test]
async fn settings_win_over_the_file() {
    let fixture = Fixture::for_config_files();
    let staging = fixture.emulator.service_url("hello-staging").unwrap();
    let toml = "[services.hello]\nurl = \"http://127.0.0.1:9\"\n";
    let settings = Settings::default().service_url("hello", staging.as_str());
    let echo = hello_answer(&fixture, toml, settings).await;
    assert_eq!(echo["service"], "hello-staging", "{echo}");
}

/// `RequestBuilder::probe` sends once: no retry after a 503, no new token after a 401,
/// and the answer comes with the engine's verdict.
#[tokio::test]
async fn a_probe_sends_once_and_says_what_the_answer_means() {
    use cloudrun_test::Probe;
    use cloudrun_test::diagnose::Cause;

    let fixture = fixture();
    let client = fixture.client_for(TESTER, "hello").build().await.unwrap();
    let verdict = |probe: Probe| match probe {
        Probe::Answered { verdict, .. } => verdict,
        Probe::Unanswered { cause, .. } => panic!("no answer: {cause:?}"),
    };

    let probe = client.get("/").probe().await.unwrap();
    assert!(probe.ok());
    assert_eq!(verdict(probe).cause, Cause::Accepted);

    fixture.emulator.fail_service_requests("hello", 1, 503);
    let before = fixture.emulator.stats();
    let probe = verdict(client.get("/").probe().await.unwrap());
    assert_eq!((probe.status, probe.cause), (503, Cause::ServiceFailed));
    let after = fixture.emulator.stats();
    assert_eq!(after.faults_injected - before.faults_injected, 1);
    assert_eq!(after.front_accepted, before.front_accepted, "retried");

    fixture.emulator.fail_service_requests("hello", 1, 401);
    let probe = verdict(client.get("/").probe().await.unwrap());
    assert_eq!((probe.status, probe.cause), (401, Cause::BadSignature));
    assert_eq!(
        fixture.emulator.stats().id_tokens_minted,
        after.id_tokens_minted,
        "a new token was forced"
    );

    let probe = verdict(client.without_auth().get("/").probe().await.unwrap());
    assert_eq!((probe.status, probe.cause), (403, Cause::NoToken));

    let outsider = fixture.client_for(OUTSIDER, "hello").build().await.unwrap();
    let probe = verdict(outsider.get("/").probe().await.unwrap());
    assert_eq!(probe.cause, Cause::NotInvoker);
    assert_eq!(
        probe.fix.unwrap(),
        format!(
            "gcloud run services add-iam-policy-binding hello --region europe-west1 \
             --project emulated-project --member=serviceAccount:{OUTSIDER} --role=roles/run.invoker"
        )
    );
}

/// `ClientBuilder::without_auth` needs no credentials, even for a remote URL; a probe
/// that gets no answer says why.
#[tokio::test]
async fn a_client_without_auth_needs_no_credentials_and_a_probe_without_answer_says_why() {
    use cloudrun_test::diagnose::NoAnswer;
    use cloudrun_test::{Client, Probe};

    let client = Client::builder()
        .url("https://hello-123456789.europe-west1.invalid")
        .without_auth()
        .build()
        .await
        .unwrap();
    assert!(client.id_token().await.is_err());
    match client.get("/").probe().await.unwrap() {
        Probe::Unanswered { cause, .. } => assert_eq!(cause, NoAnswer::Dns),
        Probe::Answered { response, .. } => panic!("answered {}", response.status()),
    }

    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let client = Client::builder()
        .url(format!("http://127.0.0.1:{port}"))
        .without_auth()
        .build()
        .await
        .unwrap();
    match client.get("/").probe().await.unwrap() {
        Probe::Unanswered { cause, .. } => assert_eq!(cause, NoAnswer::Connect),
        Probe::Answered { response, .. } => panic!("answered {}", response.status()),
    }
}
