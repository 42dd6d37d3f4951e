//! `cloudrun-test doctor --verbose` (its report and the whole diagnostic log) never
//! shows a canary token, nor the tokens it mints.

mod support;

use cloudrun_test_e2e::{CANARY_SIGNATURE as SIGNATURE, canary_token};
use cloudrun_test_emulator::{Emulator, ServiceConfig};
use support::*;

#[test]
fn doctor_never_shows_the_canary_or_a_minted_token() {
    let fixture = Fixture::start(
        Emulator::builder()
            .service(ServiceConfig::new("hello").invoker(&format!("serviceAccount:{TESTER}"))),
    );
    let home = tempfile::tempdir().unwrap();
    let origin = fixture
        .emulator
        .service_url("hello")
        .unwrap()
        .origin()
        .ascii_serialization();

    // The canary, refused by the service (the emulator did not sign it).
    let canary = canary_token(&origin);
    let env = [("CLOUDRUN_TEST_ID_TOKEN".to_owned(), canary.clone())];
    let output = run(
        &["--verbose", "doctor", "--url", &origin],
        &env,
        home.path(),
    );
    let text = output_text(&output);
    assert!(text.contains("401"), "{text}");
    assert!(!text.contains(SIGNATURE), "the canary leaked:\n{text}");
    assert_no_token(&text, &canary, "doctor's output with the canary");

    // A service-account key: tokens are minted, the request is accepted.
    let env = fixture.environment(TESTER);
    let output = run(
        &["--verbose", "doctor", "--service", "hello"],
        &env,
        home.path(),
    );
    let text = output_text(&output);
    assert_eq!(output.status.code(), Some(0), "{text}");
    assert_no_token(&text, &token(&origin, &env, home.path()), "doctor's output");
    assert!(!text.contains("ya29."), "an access token leaked:\n{text}");
}
