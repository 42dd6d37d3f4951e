//! `cloudrun-test doctor --verbose` (its report and the whole diagnostic log) never
//! shows a canary token, nor the tokens it mints.

mod support;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use cloudrun_test_emulator::{Emulator, ServiceConfig};
use support::*;

const SIGNATURE: &str = "CANARYsecretSIGNATUREdoNotLeak0123456789";

fn canary_token(audience: &str) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let claims = serde_json::json!({
        "iss": "https://accounts.google.com",
        "aud": audience,
        "email": "canary@emulated-project.iam.gserviceaccount.com",
        "exp": now + 3600,
    });
    format!(
        "{}.{}.{SIGNATURE}",
        URL_SAFE_NO_PAD.encode(r#"{"alg":"RS256","typ":"JWT"}"#),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    )
}

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
