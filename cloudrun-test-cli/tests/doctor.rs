//! `cloudrun-test doctor` against the emulator: one test per verdict it gives.

mod support;

use std::process::Output;
use std::time::Duration;

use cloudrun_test_emulator::{Emulator, ServiceConfig};
use support::*;

fn fixture() -> Fixture {
    Fixture::start(
        Emulator::builder()
            .service(ServiceConfig::new("hello").invoker(&format!("serviceAccount:{TESTER}")))
            .service(ServiceConfig::new("other").invoker(&format!("serviceAccount:{TESTER}"))),
    )
}

fn doctor(args: &[&str], env: &[(String, String)], home: &std::path::Path) -> (Output, String) {
    let mut all = vec!["doctor"];
    all.extend_from_slice(args);
    let output = run(&all, env, home);
    let text = output_text(&output);
    (output, text)
}

fn origin(fixture: &Fixture, service: &str) -> String {
    fixture
        .emulator
        .service_url(service)
        .unwrap()
        .origin()
        .ascii_serialization()
}

#[test]
fn an_accepted_request_is_reported_with_url_audience_and_expiry() {
    let fixture = fixture();
    let home = tempfile::tempdir().unwrap();
    let env = fixture.environment(TESTER);
    let hello = origin(&fixture, "hello");
    let (output, text) = doctor(&["--url", &hello], &env, home.path());
    assert_eq!(output.status.code(), Some(0), "{text}");
    assert!(text.contains(&format!("Service URL: {hello}/")), "{text}");
    assert!(text.contains(&format!("aud:   {hello}")), "{text}");
    assert!(text.contains(&format!("email: {TESTER}")), "{text}");
    assert!(
        text.contains("expires: ") && text.contains("(in 59 min"),
        "{text}"
    );
    assert!(
        text.contains(&format!("Live request: GET {hello}/ -> 200 OK")),
        "{text}"
    );
    assert!(text.contains("Verdict: OK"), "{text}");
    assert_no_token(&text, &token(&hello, &env, home.path()), "doctor's output");

    // By name, resolved through the (emulated) Admin API as the attribute does.
    let (output, text) = doctor(&["--service", "hello"], &env, home.path());
    assert_eq!(output.status.code(), Some(0), "{text}");
    assert!(
        text.contains(&format!("Service:     hello at {hello}/")),
        "{text}"
    );
    assert!(text.contains("Verdict: OK"), "{text}");
}

#[test]
fn a_caller_without_the_invoker_role_gets_the_binding_command() {
    let fixture = fixture();
    let home = tempfile::tempdir().unwrap();
    let (output, text) = doctor(
        &["--service", "hello"],
        &fixture.environment(OUTSIDER),
        home.path(),
    );
    assert_eq!(output.status.code(), Some(1), "{text}");
    assert!(text.contains("-> 403 Forbidden"), "{text}");
    assert!(text.contains("Verdict: REFUSED"), "{text}");
    assert!(
        text.contains(&format!("{OUTSIDER} may not invoke the service")),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "fix: gcloud run services add-iam-policy-binding hello --region europe-west1 \
             --project emulated-project --member=serviceAccount:{OUTSIDER} --role=roles/run.invoker"
        )),
        "{text}"
    );
}

#[test]
fn a_token_for_another_audience_is_a_wrong_audience_401() {
    let fixture = fixture();
    let home = tempfile::tempdir().unwrap();
    let other = origin(&fixture, "other");
    let hello = origin(&fixture, "hello");
    let stray = token(&other, &fixture.environment(TESTER), home.path());
    let env = [("CLOUDRUN_TEST_ID_TOKEN".to_string(), stray.clone())];
    let (output, text) = doctor(&["--url", &hello], &env, home.path());
    assert_eq!(output.status.code(), Some(1), "{text}");
    assert!(text.contains("-> 401 Unauthorized"), "{text}");
    assert!(
        text.contains(&format!(
            "wrong audience: the token is for {other}, but the request went to {hello}"
        )),
        "{text}"
    );
    assert!(text.contains(&format!("--audience {hello}")), "{text}");
    assert_no_token(&text, &stray, "doctor's output");
}

#[test]
fn an_expired_token_is_an_expired_401() {
    let fixture = Fixture::start(
        Emulator::builder()
            .id_token_lifetime(Duration::from_secs(1))
            .service(ServiceConfig::new("hello").invoker(&format!("serviceAccount:{TESTER}"))),
    );
    let home = tempfile::tempdir().unwrap();
    let hello = origin(&fixture, "hello");
    let short = token(&hello, &fixture.environment(TESTER), home.path());
    std::thread::sleep(Duration::from_millis(2100));
    let env = [("CLOUDRUN_TEST_ID_TOKEN".to_string(), short)];
    let (output, text) = doctor(&["--url", &hello], &env, home.path());
    assert_eq!(output.status.code(), Some(1), "{text}");
    assert!(text.contains("-> 401 Unauthorized"), "{text}");
    assert!(text.contains("401: the token expired"), "{text}");
    assert!(text.contains("already expired"), "{text}");
}

#[test]
fn an_access_token_is_not_an_identity_token() {
    let fixture = fixture();
    let home = tempfile::tempdir().unwrap();
    let hello = origin(&fixture, "hello");
    let env = [(
        "CLOUDRUN_TEST_ID_TOKEN".to_string(),
        "ya29.not-an-identity-token".to_string(),
    )];
    let (output, text) = doctor(&["--url", &hello], &env, home.path());
    assert_eq!(output.status.code(), Some(1), "{text}");
    assert!(text.contains("-> 401 Unauthorized"), "{text}");
    assert!(text.contains("not an identity token"), "{text}");
    assert!(!text.contains("ya29.not-an"), "{text}");
}

#[test]
fn an_unreachable_url_points_at_the_url_and_ingress() {
    let fixture = fixture();
    let home = tempfile::tempdir().unwrap();
    let (output, text) = doctor(
        &["--url", "http://127.0.0.1:1/"],
        &fixture.environment(TESTER),
        home.path(),
    );
    assert_eq!(output.status.code(), Some(1), "{text}");
    assert!(text.contains("Verdict: UNREACHABLE"), "{text}");
    assert!(text.contains("could not connect to 127.0.0.1:1"), "{text}");
    assert!(text.contains("ingress"), "{text}");

    let (output, text) = doctor(
        &["--url", "https://hello-123456789.europe-west1.run.invalid/"],
        &fixture.environment(TESTER),
        home.path(),
    );
    assert_eq!(output.status.code(), Some(1), "{text}");
    assert!(text.contains("Verdict: UNREACHABLE"), "{text}");
    assert!(text.contains("does not resolve (DNS)"), "{text}");
}

#[test]
fn without_credentials_the_chain_is_explained_and_the_service_refuses() {
    let fixture = fixture();
    let home = tempfile::tempdir().unwrap();
    let hello = origin(&fixture, "hello");
    let (output, text) = doctor(&["--url", &hello], &[], home.path());
    assert_eq!(output.status.code(), Some(1), "{text}");
    assert!(text.contains("No usable credentials"), "{text}");
    assert!(
        text.contains("GOOGLE_APPLICATION_CREDENTIALS") && text.contains("skipped"),
        "{text}"
    );
    assert!(
        text.contains("(without a token) -> 403 Forbidden"),
        "{text}"
    );
    assert!(text.contains("no token was sent"), "{text}");
}
