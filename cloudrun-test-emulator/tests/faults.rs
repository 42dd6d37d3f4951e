//! Fault injection: token endpoint errors, delays and hangs; service errors, resets
//! and cold starts; signing-key rotation.

mod support;

use std::time::{Duration, Instant};

use cloudrun_test_emulator::{Emulator, Fault, ServiceConfig};
use reqwest::StatusCode;
use serde_json::json;
use support::*;

fn emulator() -> Emulator {
    Emulator::builder()
        .service(ServiceConfig::new("hello").invoker(&format!("serviceAccount:{TESTER}")))
        .start()
        .unwrap()
}

async fn get(url: reqwest::Url, token: &str) -> reqwest::Response {
    http().get(url).bearer_auth(token).send().await.unwrap()
}

fn id_token_assertion(emulator: &Emulator, audience: &str) -> String {
    let account = ServiceAccount::of(emulator, TESTER);
    account.sign(&account.claims(json!({"target_audience": audience})))
}

#[tokio::test]
async fn the_token_endpoint_fails_n_times_then_answers() {
    let emulator = emulator();
    let assertion = id_token_assertion(&emulator, "https://example.com");
    emulator.fail_token_requests(2, 503);
    for _ in 0..2 {
        let (status, body) = exchange(&emulator, &assertion).await;
        assert_eq!(status, 503);
        assert_eq!(body["error"], "internal_failure");
        assert!(
            body["error_description"]
                .as_str()
                .unwrap()
                .contains("injected fault")
        );
    }
    let (status, body) = exchange(&emulator, &assertion).await;
    assert_eq!(status, 200, "{body}");
    assert!(body["id_token"].is_string());
    let stats = emulator.stats();
    assert_eq!(stats.faults_injected, 2, "{stats:?}");
    assert_eq!(stats.id_tokens_minted, 1, "{stats:?}");
}

#[tokio::test]
async fn token_answers_can_be_delayed() {
    let emulator = emulator();
    let assertion = id_token_assertion(&emulator, "https://example.com");
    exchange(&emulator, &assertion).await; // the signing key exists from here on
    emulator.delay_token_requests(Duration::from_millis(400));
    let started = Instant::now();
    let (status, _) = exchange(&emulator, &assertion).await;
    assert_eq!(status, 200);
    assert!(started.elapsed() >= Duration::from_millis(400));
    emulator.delay_token_requests(Duration::ZERO);
    let started = Instant::now();
    exchange(&emulator, &assertion).await;
    assert!(started.elapsed() < Duration::from_millis(400));
}

#[tokio::test]
async fn a_hanging_token_endpoint_holds_requests_until_released() {
    let emulator = emulator();
    let assertion = id_token_assertion(&emulator, "https://example.com");
    emulator.hang_token_requests(true);
    let held = http()
        .post(emulator.token_uri())
        .form(&[("grant_type", JWT_BEARER), ("assertion", &assertion)])
        .timeout(Duration::from_millis(300))
        .send()
        .await;
    assert!(held.unwrap_err().is_timeout());

    // A request held now goes on once released.
    let request = http()
        .post(emulator.token_uri())
        .form(&[("grant_type", JWT_BEARER), ("assertion", &assertion)])
        .send();
    let release = async {
        tokio::time::sleep(Duration::from_millis(200)).await;
        emulator.hang_token_requests(false);
    };
    let (response, ()) = tokio::join!(request, release);
    assert_eq!(response.unwrap().status(), StatusCode::OK);
}

#[tokio::test]
async fn a_service_answers_injected_statuses_n_times_before_checking_tokens() {
    let emulator = emulator();
    let url = emulator.service_url("hello").unwrap();
    let token = id_token(&emulator, TESTER, &audience(&url)).await;
    emulator.fail_service_requests("hello", 1, 429);
    emulator.fail_service_requests("hello", 2, 503);
    for _ in 0..2 {
        let response = get(url.clone(), &token).await;
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            response.headers()["content-type"],
            "text/html; charset=UTF-8"
        );
        let body = response.text().await.unwrap();
        assert!(
            body.contains("<title>503 Service Unavailable</title>"),
            "{body}"
        );
    }
    assert_eq!(get(url.clone(), &token).await.status(), StatusCode::OK);

    emulator.fail_service_requests("hello", 1, 401);
    let response = get(url.clone(), &token).await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert!(response.headers().contains_key("www-authenticate"));
    assert_eq!(get(url, &token).await.status(), StatusCode::OK);
    assert_eq!(emulator.stats().faults_injected, 3);
}

#[tokio::test]
async fn connections_are_reset_then_served() {
    let emulator = emulator();
    let url = emulator.service_url("hello").unwrap();
    let token = id_token(&emulator, TESTER, &audience(&url)).await;
    emulator.reset_service_connections("hello", 2);
    for _ in 0..2 {
        // A new client each time: a new connection.
        let error = http()
            .get(url.clone())
            .bearer_auth(&token)
            .send()
            .await
            .unwrap_err();
        assert!(!error.is_timeout(), "{error:?}");
    }
    assert_eq!(get(url, &token).await.status(), StatusCode::OK);
    assert_eq!(emulator.stats().faults_injected, 2);
}

#[tokio::test]
async fn a_cold_start_delays_only_the_next_request() {
    let emulator = emulator();
    let url = emulator.service_url("hello").unwrap();
    let token = id_token(&emulator, TESTER, &audience(&url)).await;
    emulator.cold_start("hello", Duration::from_millis(500));
    let started = Instant::now();
    assert_eq!(get(url.clone(), &token).await.status(), StatusCode::OK);
    assert!(started.elapsed() >= Duration::from_millis(500));
    let started = Instant::now();
    assert_eq!(get(url, &token).await.status(), StatusCode::OK);
    assert!(started.elapsed() < Duration::from_millis(500));
}

#[tokio::test]
async fn after_a_key_rotation_old_tokens_get_401_and_new_ones_pass() {
    let emulator = emulator();
    let url = emulator.service_url("hello").unwrap();
    let old = id_token(&emulator, TESTER, &audience(&url)).await;
    assert_eq!(get(url.clone(), &old).await.status(), StatusCode::OK);
    let old_kid = header_of(&old)["kid"].clone();

    emulator.rotate_signing_key();
    let response = get(url.clone(), &old).await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    let reason = response.headers()["x-cloudrun-test-emulator-reason"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(reason.contains("unknown kid"), "{reason}");

    let new = id_token(&emulator, TESTER, &audience(&url)).await;
    assert_ne!(header_of(&new)["kid"], old_kid);
    assert_eq!(get(url, &new).await.status(), StatusCode::OK);
    // The JWKS publishes the new key only.
    let jwks: serde_json::Value = http()
        .get(emulator.jwks_uri())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(jwks["keys"].as_array().unwrap().len(), 1);
    assert_eq!(jwks["keys"][0]["kid"], header_of(&new)["kid"]);
}

#[tokio::test]
async fn clear_faults_ends_them_all() {
    let emulator = emulator();
    let url = emulator.service_url("hello").unwrap();
    let token = id_token(&emulator, TESTER, &audience(&url)).await;
    emulator.fail_service_requests("hello", 5, 503);
    emulator.fail_token_requests(5, 500);
    emulator.clear_faults();
    assert_eq!(get(url.clone(), &token).await.status(), StatusCode::OK);
    id_token(&emulator, TESTER, &audience(&url)).await;
}

#[test]
fn inject_refuses_unknown_services_and_statuses() {
    let emulator = emulator();
    let message = emulator
        .inject("service-error=nope:503".parse().unwrap())
        .unwrap_err()
        .to_string();
    assert!(message.contains("\"nope\""), "{message}");
    assert!(message.contains("services: hello"), "{message}");
    let message = emulator
        .inject(Fault::TokenErrors {
            status: 42,
            times: 1,
        })
        .unwrap_err()
        .to_string();
    assert!(message.contains("42 is not an HTTP status"), "{message}");
}
