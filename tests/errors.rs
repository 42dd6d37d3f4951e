//! Bad input gives a clear error naming the file or setting and the fix; never a panic.

use cloudrun_test::Credentials;
use cloudrun_test_e2e::{Fixture, TESTER};
use cloudrun_test_emulator::Emulator;
use serde_json::{Value, json};

fn error_for(text: &str) -> String {
    match Credentials::from_json("/keys/key.json", text) {
        Ok(credentials) => panic!("{text:?} was accepted as {credentials:?}"),
        Err(error) => error.to_string(),
    }
}

fn good_key() -> Value {
    let fixture = Fixture::start(Emulator::builder());
    serde_json::from_str(&fixture.emulator.service_account_key(TESTER)).unwrap()
}

#[test]
fn a_missing_key_file_is_named_with_the_fix() {
    let message = Credentials::from_file("/nonexistent/key.json")
        .unwrap_err()
        .to_string();
    assert!(message.contains("/nonexistent/key.json"), "{message}");
    assert!(message.contains("cannot be read"), "{message}");
    assert!(
        message.contains("gcloud iam service-accounts keys create"),
        "{message}"
    );
}

#[test]
fn malformed_key_files_name_the_file_and_field() {
    let key = good_key();
    let without = |field: &str| {
        let mut key = key.clone();
        key.as_object_mut().unwrap().remove(field);
        key.to_string()
    };
    let with = |field: &str, value: Value| {
        let mut key = key.clone();
        key[field] = value;
        key.to_string()
    };
    let full = key.to_string();
    let cases: Vec<(String, &str)> = vec![
        (full[..full.len() / 2].to_string(), "is not valid JSON"),
        ("".into(), "is not valid JSON"),
        ("[1, 2]".into(), "has no string field `type`"),
        (without("type"), "has no string field `type`"),
        (with("type", json!("alien")), "\"alien\""),
        (without("client_email"), "has no `client_email`"),
        (without("private_key"), "has no `private_key`"),
        (
            with("client_email", json!(42)),
            "field `client_email` is not a string",
        ),
        (
            with("private_key", json!("not a pem")),
            "no `-----BEGIN PRIVATE KEY-----` line",
        ),
        (
            with(
                "private_key",
                json!("-----BEGIN PRIVATE KEY-----\n!!!!\n-----END PRIVATE KEY-----\n"),
            ),
            "not valid base64",
        ),
        (
            with(
                "private_key",
                json!("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"),
            ),
            "not a PKCS#8 RSA private key",
        ),
        (
            with("token_uri", json!("not a url")),
            "field `token_uri` is not a URL",
        ),
    ];
    for (text, expected) in cases {
        let message = error_for(&text);
        assert!(message.contains("/keys/key.json"), "{message}");
        assert!(
            message.contains(expected),
            "expected {expected:?} in: {message}"
        );
        assert!(message.contains("fix:"), "{message}");
        assert!(
            !message.contains("PRIVATE KEY-----\nMII"),
            "key material in: {message}"
        );
    }
}

#[tokio::test]
async fn a_refused_assertion_names_the_endpoint_and_identity() {
    // A key the emulator never issued: the token endpoint refuses its signature.
    let fixture = Fixture::start(Emulator::builder());
    let other = Fixture::start(Emulator::builder());
    fixture.emulator.service_account_key(TESTER); // known here, but with another key
    let mut key: Value = serde_json::from_str(&other.emulator.service_account_key(TESTER)).unwrap();
    key["token_uri"] = json!(fixture.emulator.token_uri().as_str());
    let credentials = Credentials::from_json("/keys/stolen.json", &key.to_string()).unwrap();
    let message = credentials
        .id_token("https://example.com")
        .await
        .unwrap_err()
        .to_string();
    assert!(
        message.contains(fixture.emulator.token_uri().as_str()),
        "{message}"
    );
    assert!(message.contains(TESTER), "{message}");
    assert!(message.contains("invalid_grant"), "{message}");
    assert!(message.contains("fix:"), "{message}");
}

#[tokio::test]
async fn an_unreachable_token_endpoint_fails_fast_with_its_url() {
    let fixture = Fixture::start(Emulator::builder());
    let mut key: Value =
        serde_json::from_str(&fixture.emulator.service_account_key(TESTER)).unwrap();
    // Port 9 (discard) on loopback: nothing listens there.
    key["token_uri"] = json!("http://127.0.0.1:9/token");
    let credentials = Credentials::from_json("/keys/key.json", &key.to_string()).unwrap();
    let started = std::time::Instant::now();
    let message = credentials
        .id_token("https://example.com")
        .await
        .unwrap_err()
        .to_string();
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
    assert!(message.contains("http://127.0.0.1:9/token"), "{message}");
    assert!(message.contains("could not connect"), "{message}");
}
