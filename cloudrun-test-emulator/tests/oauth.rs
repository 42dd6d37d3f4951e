//! The OAuth token endpoint and the JWKS, over loopback HTTP.

mod support;

use aws_lc_rs::signature::{RSA_PKCS1_2048_8192_SHA256, RsaPublicKeyComponents};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use cloudrun_test_emulator::Emulator;
use serde_json::{Value, json};
use support::*;

fn emulator() -> Emulator {
    Emulator::builder().start().unwrap()
}

#[tokio::test]
async fn key_file_looks_like_googles() {
    let emulator = emulator();
    let text = emulator.service_account_key(TESTER);
    let file: Value = serde_json::from_str(&text).unwrap();
    let fields: Vec<&str> = file
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    let mut expected = vec![
        "type",
        "project_id",
        "private_key_id",
        "private_key",
        "client_email",
        "client_id",
        "auth_uri",
        "token_uri",
        "auth_provider_x509_cert_url",
        "client_x509_cert_url",
        "universe_domain",
    ];
    expected.sort();
    assert_eq!(fields, expected);
    // Google's field order, as written in the file.
    let type_at = text.find("\"type\"").unwrap();
    let universe_at = text.find("\"universe_domain\"").unwrap();
    assert!(
        type_at < text.find("\"private_key_id\"").unwrap()
            && universe_at > text.find("\"token_uri\"").unwrap()
    );
    assert_eq!(file["type"], "service_account");
    assert_eq!(file["project_id"], "emulated-project");
    assert_eq!(file["client_email"], TESTER);
    assert_eq!(file["token_uri"], emulator.token_uri().as_str());
    assert_eq!(file["universe_domain"], "googleapis.com");
    assert!(
        file["private_key"]
            .as_str()
            .unwrap()
            .starts_with("-----BEGIN PRIVATE KEY-----\n")
    );
    assert_eq!(file["private_key_id"].as_str().unwrap().len(), 40);
    let client_id = file["client_id"].as_str().unwrap();
    assert!(client_id.len() == 21 && client_id.chars().all(|c| c.is_ascii_digit()));
    // The same account keeps its key.
    assert_eq!(emulator.service_account_key(TESTER), text);
    assert_ne!(emulator.service_account_key(OUTSIDER), text);
}

#[test]
fn key_file_is_written_private() {
    let emulator = emulator();
    let dir = tempfile::tempdir().unwrap();
    let path = emulator
        .write_service_account_key(TESTER, dir.path())
        .unwrap();
    assert_eq!(path.parent(), Some(dir.path()));
    assert_eq!(
        std::fs::read_to_string(&path).unwrap(),
        emulator.service_account_key(TESTER)
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }
}

#[tokio::test]
async fn mints_an_id_token_verifiable_with_the_jwks() {
    let emulator = emulator();
    let account = ServiceAccount::of(&emulator, TESTER);
    let audience = "https://hello.example.com";
    // Go's libraries put token_uri in aud; Python's and gcloud put Google's URL.
    for aud in [GOOGLE_TOKEN_URI, emulator.token_uri().as_str()] {
        let assertion =
            account.sign(&account.claims(json!({"aud": aud, "target_audience": audience})));
        let (status, body) = exchange(&emulator, &assertion).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body.as_object().unwrap().len(), 1, "{body}");
        let token = body["id_token"].as_str().unwrap();

        let claims = claims_of(token);
        let client_id = serde_json::from_str::<Value>(&emulator.service_account_key(TESTER))
            .unwrap()["client_id"]
            .clone();
        assert_eq!(claims["iss"], "https://accounts.google.com");
        assert_eq!(claims["aud"], audience);
        assert_eq!(claims["email"], TESTER);
        assert_eq!(claims["email_verified"], true);
        assert_eq!(claims["sub"], client_id);
        assert_eq!(claims["azp"], client_id);
        let (iat, exp) = (
            claims["iat"].as_i64().unwrap(),
            claims["exp"].as_i64().unwrap(),
        );
        assert!((iat - now()).abs() <= 5);
        assert_eq!(exp - iat, 3600);

        // Verify the signature with the published JWKS, as a relying party would.
        let jwks: Value = http()
            .get(emulator.jwks_uri())
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let kid = header_of(token)["kid"].clone();
        assert_eq!(header_of(token)["alg"], "RS256");
        let jwk = jwks["keys"]
            .as_array()
            .unwrap()
            .iter()
            .find(|key| key["kid"] == kid)
            .expect("kid in JWKS");
        assert_eq!(
            (
                jwk["kty"].as_str(),
                jwk["alg"].as_str(),
                jwk["use"].as_str()
            ),
            (Some("RSA"), Some("RS256"), Some("sig"))
        );
        let public = RsaPublicKeyComponents {
            n: URL_SAFE_NO_PAD.decode(jwk["n"].as_str().unwrap()).unwrap(),
            e: URL_SAFE_NO_PAD.decode(jwk["e"].as_str().unwrap()).unwrap(),
        };
        let (input, signature) = token.rsplit_once('.').unwrap();
        public
            .verify(
                &RSA_PKCS1_2048_8192_SHA256,
                input.as_bytes(),
                &URL_SAFE_NO_PAD.decode(signature).unwrap(),
            )
            .expect("the ID token verifies against the JWKS");
    }
}

#[tokio::test]
async fn id_token_lifetime_is_configurable() {
    let emulator = Emulator::builder()
        .id_token_lifetime(std::time::Duration::from_secs(90))
        .start()
        .unwrap();
    let claims = claims_of(&id_token(&emulator, TESTER, "aud").await);
    assert_eq!(
        claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(),
        90
    );
}

#[tokio::test]
async fn mints_an_access_token() {
    let emulator = emulator();
    let account = ServiceAccount::of(&emulator, TESTER);
    let assertion = account
        .sign(&account.claims(json!({"scope": "https://www.googleapis.com/auth/cloud-platform"})));
    let (status, body) = exchange(&emulator, &assertion).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["expires_in"], 3599);
    assert_eq!(body["token_type"], "Bearer");
    assert!(body["access_token"].as_str().unwrap().len() > 20);
    assert_eq!(emulator.stats().access_tokens_minted, 1);
    assert_eq!(emulator.stats().id_tokens_minted, 0);
}

async fn assert_invalid_grant(emulator: &Emulator, assertion: &str, description: &str) {
    let (status, body) = exchange(emulator, assertion).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"], "invalid_grant", "{body}");
    let actual = body["error_description"].as_str().unwrap();
    assert!(
        actual.contains(description),
        "{actual:?} should contain {description:?}"
    );
}

#[tokio::test]
async fn refuses_bad_assertions_with_invalid_grant() {
    let emulator = emulator();
    let account = ServiceAccount::of(&emulator, TESTER);
    let claims = account.claims(json!({"target_audience": "aud"}));

    // Signed with another emulator's key for the same email.
    let other = Emulator::builder().start().unwrap();
    let impostor = ServiceAccount::of(&other, TESTER);
    let mut header_without_kid = json!({"alg": "RS256", "typ": "JWT"});
    assert_invalid_grant(&emulator, &impostor.sign(&claims), "Invalid JWT Signature").await;
    let unsigned = format!("{}.", account.sign(&claims).rsplit_once('.').unwrap().0);
    assert_invalid_grant(&emulator, &unsigned, "Invalid JWT Signature").await;
    // Tampered claims under a valid signature.
    let token = account.sign(&claims);
    let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
    let mut tampered = claims.clone();
    tampered["target_audience"] = json!("https://elsewhere.example.com");
    parts[1] = URL_SAFE_NO_PAD.encode(tampered.to_string());
    assert_invalid_grant(&emulator, &parts.join("."), "Invalid JWT Signature").await;
    // alg none.
    header_without_kid["alg"] = json!("none");
    let none = format!(
        "{}.{}.",
        URL_SAFE_NO_PAD.encode(header_without_kid.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    assert_invalid_grant(&emulator, &none, "Invalid JWT Signature").await;

    // Unknown account.
    let stranger = ServiceAccount::of(&other, "stranger@emulated-project.iam.gserviceaccount.com");
    assert_invalid_grant(
        &emulator,
        &stranger.sign(&stranger.claims(json!({"target_audience": "aud"}))),
        "account not found",
    )
    .await;

    // Wrong audience.
    let wrong_aud = account.sign(
        &account.claims(json!({"target_audience": "aud", "aud": "https://example.com/token"})),
    );
    assert_invalid_grant(&emulator, &wrong_aud, "Failed audience check").await;

    // Expired, from the future, too long-lived, no times.
    let now = now();
    for times in [
        json!({"iat": now - 7200, "exp": now - 3600}),
        json!({"iat": now + 3600, "exp": now + 7200}),
        json!({"iat": now, "exp": now + 86400}),
        json!({"iat": null, "exp": null}),
        // Extremes: `exp - iat` overflows, which must neither panic nor wrap to "short".
        json!({"iat": i64::MIN, "exp": i64::MAX}),
        json!({"iat": now, "exp": i64::MAX}),
    ] {
        let mut extra = times.clone();
        extra["target_audience"] = json!("aud");
        let assertion = account.sign(&account.claims(extra));
        assert_invalid_grant(&emulator, &assertion, "short-lived token").await;
    }

    // Malformed assertions.
    for garbage in ["", "not a jwt", "a.b.c", "e30.e30.e30", "%%%.%%%.%%%"] {
        assert_invalid_grant(&emulator, garbage, "Invalid JWT").await;
    }
    assert_eq!(emulator.stats().id_tokens_minted, 0);
}

#[tokio::test]
async fn refuses_bad_requests_like_google() {
    let emulator = emulator();
    let (status, body) = post_token_form(&emulator, &[("grant_type", "client_credentials")]).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("unsupported_grant_type")),
        "{body}"
    );
    let (status, body) = post_token_form(&emulator, &[("assertion", "x")]).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_request")),
        "{body}"
    );
    let (status, body) = post_token_form(&emulator, &[("grant_type", JWT_BEARER)]).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_request")),
        "{body}"
    );

    // Neither scope nor target_audience.
    let account = ServiceAccount::of(&emulator, TESTER);
    let (status, body) = exchange(&emulator, &account.sign(&account.claims(json!({})))).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_scope")),
        "{body}"
    );

    // Bytes that are not a form at all.
    for body in [
        vec![0xff, 0xfe, b'&', b'='],
        b"{\"json\": true}".to_vec(),
        Vec::new(),
    ] {
        let response = http()
            .post(emulator.token_uri())
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 400);
        let json: Value = response.json().await.unwrap();
        assert!(json["error"].is_string());
    }
}

#[tokio::test]
async fn counts_mints_per_audience() {
    let emulator = emulator();
    for audience in ["a", "b", "a"] {
        id_token(&emulator, TESTER, audience).await;
    }
    access_token(&emulator, TESTER).await;
    let stats = emulator.stats();
    assert_eq!(stats.id_tokens_minted, 3);
    assert_eq!(stats.access_tokens_minted, 1);
    assert_eq!(stats.id_tokens_by_audience.get("a"), Some(&2));
    assert_eq!(stats.id_tokens_by_audience.get("b"), Some(&1));

    // The same numbers over HTTP, for other processes.
    let url = emulator.base_url().join("_emulator/stats").unwrap();
    let served: cloudrun_test_emulator::Stats = http()
        .get(url.clone())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(served, stats);

    emulator.reset_stats();
    assert_eq!(emulator.stats(), Default::default());
    id_token(&emulator, TESTER, "a").await;
    let response = http().delete(url).send().await.unwrap();
    assert_eq!(response.status(), 204);
    assert_eq!(emulator.stats(), Default::default());
}
