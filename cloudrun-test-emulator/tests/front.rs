//! Cloud Run's IAM front: who gets 200, 401 and 403, and what reaches the app.

mod support;

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use cloudrun_test_emulator::{Emulator, ServiceConfig};
use reqwest::StatusCode;
use serde_json::{Value, json};
use support::*;

fn emulator() -> Emulator {
    Emulator::builder()
        .service(
            ServiceConfig::new("hello")
                .invoker(&format!("serviceAccount:{TESTER}"))
                .tag("canary")
                .custom_audience("https://hello.example.com"),
        )
        .service(ServiceConfig::new("public").invoker("allUsers"))
        .start()
        .unwrap()
}

async fn get(url: reqwest::Url, token: Option<&str>) -> reqwest::Response {
    let mut request = http().get(url);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    request.send().await.unwrap()
}

async fn assert_refused(response: reqwest::Response, status: StatusCode, path: &str) {
    assert_eq!(response.status(), status);
    assert_eq!(
        response.headers()["content-type"],
        "text/html; charset=UTF-8"
    );
    let body = response.text().await.unwrap();
    if status == StatusCode::FORBIDDEN {
        assert!(body.contains("<title>403 Forbidden</title>"), "{body}");
        assert!(body.contains("<h1>Error: Forbidden</h1>"), "{body}");
        let detail = format!(
            "Your client does not have permission to get URL <code>{path}</code> from this server."
        );
        assert!(body.contains(&detail), "{body}");
    } else {
        assert!(body.contains("<title>401 Unauthorized</title>"), "{body}");
        assert!(body.contains("<h1>Error: Unauthorized</h1>"), "{body}");
    }
}

#[tokio::test]
async fn accepts_an_invokers_id_token() {
    let emulator = emulator();
    let url = emulator.service_url("hello").unwrap();
    let token = id_token(&emulator, TESTER, &audience(&url)).await;
    let response = get(url.join("/some/path?q=1&r=2").unwrap(), Some(&token)).await;
    assert_eq!(response.status(), 200);
    let mut body: Value = response.json().await.unwrap();
    // What the app received: the token without its signature, Cloud Run's headers.
    let headers = body.as_object_mut().unwrap().remove("headers").unwrap();
    let (signed, _) = token.rsplit_once('.').unwrap();
    assert_eq!(
        headers["authorization"],
        format!("Bearer {signed}.SIGNATURE_REMOVED_BY_GOOGLE")
    );
    assert_eq!(headers["x-forwarded-proto"], "http");
    assert_eq!(
        body,
        json!({"service": "hello", "tag": null, "method": "GET", "path": "/some/path?q=1&r=2", "caller": TESTER})
    );
    // A trailing slash on the audience is tolerated.
    let token = id_token(&emulator, TESTER, url.as_str()).await;
    assert_eq!(get(url.clone(), Some(&token)).await.status(), 200);
    // Other methods pass too; the echo never repeats credentials.
    let response = http()
        .post(url.join("/submit").unwrap())
        .bearer_auth(&token)
        .body("x")
        .send()
        .await
        .unwrap();
    let text = response.text().await.unwrap();
    assert!(
        text.contains("\"method\":\"POST\"") && !text.contains(&token),
        "{text}"
    );
    assert_eq!(emulator.stats().front_accepted, 3);
}

#[tokio::test]
async fn no_token_is_403_with_cloud_runs_page() {
    let emulator = emulator();
    let url = emulator.service_url("hello").unwrap();
    assert_refused(
        get(url.join("/a/b?c=d").unwrap(), None).await,
        StatusCode::FORBIDDEN,
        "/a/b",
    )
    .await;
    // An empty header counts as none.
    let response = http()
        .get(url.clone())
        .header("authorization", "")
        .send()
        .await
        .unwrap();
    assert_refused(response, StatusCode::FORBIDDEN, "/").await;
    // The path is escaped in the page.
    let response = get(url.join("/%3Cscript%3E").unwrap(), None).await;
    let body = response.text().await.unwrap();
    assert!(body.contains("<code>/%3Cscript%3E</code>"), "{body}");
    assert_eq!(emulator.stats().front_forbidden, 3);
}

#[tokio::test]
async fn wrong_audience_is_401() {
    let emulator = emulator();
    let url = emulator.service_url("hello").unwrap();
    let other = emulator.service_url("public").unwrap();
    let token = id_token(&emulator, TESTER, &audience(&other)).await;
    let response = get(url.clone(), Some(&token)).await;
    assert!(
        response.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .contains("invalid_token")
    );
    let reason = response.headers()["x-cloudrun-test-emulator-reason"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(reason.contains("wrong audience"), "{reason}");
    assert!(!reason.contains(&token));
    assert_refused(response, StatusCode::UNAUTHORIZED, "/").await;
    let token = id_token(&emulator, TESTER, &format!("{}/path", audience(&url))).await;
    assert_refused(get(url, Some(&token)).await, StatusCode::UNAUTHORIZED, "/").await;
    assert_eq!(emulator.stats().front_unauthorized, 2);
}

#[tokio::test]
async fn expired_token_is_401() {
    let emulator = Emulator::builder()
        .id_token_lifetime(Duration::from_secs(1))
        .service(ServiceConfig::new("hello").invoker(TESTER))
        .start()
        .unwrap();
    let url = emulator.service_url("hello").unwrap();
    let token = id_token(&emulator, TESTER, &audience(&url)).await;
    let exp = claims_of(&token)["exp"].as_i64().unwrap();
    // Usually still valid now; certainly expired after `exp`.
    while now() < exp + 1 {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let response = get(url, Some(&token)).await;
    let reason = response.headers()["x-cloudrun-test-emulator-reason"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(reason.contains("expired"), "{reason}");
    assert_refused(response, StatusCode::UNAUTHORIZED, "/").await;
}

#[tokio::test]
async fn tampered_or_foreign_tokens_are_401() {
    let emulator = emulator();
    let url = emulator.service_url("hello").unwrap();
    let token = id_token(&emulator, TESTER, &audience(&url)).await;

    // Claims changed under the signature: another email.
    let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
    let mut claims = claims_of(&token);
    claims["exp"] = json!(claims["exp"].as_i64().unwrap() + 3600);
    parts[1] = URL_SAFE_NO_PAD.encode(claims.to_string());
    let tampered = parts.join(".");
    assert_refused(
        get(url.clone(), Some(&tampered)).await,
        StatusCode::UNAUTHORIZED,
        "/",
    )
    .await;
    // A flipped signature byte.
    let mut signature = URL_SAFE_NO_PAD
        .decode(token.rsplit_once('.').unwrap().1)
        .unwrap();
    signature[10] ^= 1;
    let flipped = format!(
        "{}.{}",
        token.rsplit_once('.').unwrap().0,
        URL_SAFE_NO_PAD.encode(signature)
    );
    assert_refused(
        get(url.clone(), Some(&flipped)).await,
        StatusCode::UNAUTHORIZED,
        "/",
    )
    .await;

    // Signed by another emulator ("not Google"), for the right audience.
    let other = Emulator::builder().start().unwrap();
    let foreign = id_token(&other, TESTER, &audience(&url)).await;
    assert_refused(
        get(url.clone(), Some(&foreign)).await,
        StatusCode::UNAUTHORIZED,
        "/",
    )
    .await;

    // A service account's self-signed JWT, and an access token.
    let account = ServiceAccount::of(&emulator, TESTER);
    let self_signed = account
        .sign(&json!({"iss": TESTER, "aud": audience(&url), "email": TESTER, "exp": now() + 60}));
    assert_refused(
        get(url.clone(), Some(&self_signed)).await,
        StatusCode::UNAUTHORIZED,
        "/",
    )
    .await;
    let access = access_token(&emulator, TESTER).await;
    assert_refused(
        get(url.clone(), Some(&access)).await,
        StatusCode::UNAUTHORIZED,
        "/",
    )
    .await;

    // Garbage and other schemes.
    for value in [
        "Bearer garbage",
        "Bearer a.b.c",
        "Bearer ...",
        "Basic dXNlcjpwYXNz",
        "Bearer",
    ] {
        let response = http()
            .get(url.clone())
            .header("authorization", value)
            .send()
            .await
            .unwrap();
        assert_refused(response, StatusCode::UNAUTHORIZED, "/").await;
    }
    assert_eq!(emulator.stats().front_unauthorized, 10);
    assert_eq!(emulator.stats().front_accepted, 0);
}

#[tokio::test]
async fn non_invoker_is_403_until_granted() {
    let emulator = emulator();
    let url = emulator.service_url("hello").unwrap();
    let token = id_token(&emulator, OUTSIDER, &audience(&url)).await;
    let response = get(url.clone(), Some(&token)).await;
    let reason = response.headers()["x-cloudrun-test-emulator-reason"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        reason.contains(OUTSIDER) && reason.contains("roles/run.invoker"),
        "{reason}"
    );
    // The grant in the terms of whoever reads it: the command line's flag first.
    assert!(
        reason.contains(&format!(
            "`--invoker serviceAccount:{OUTSIDER}` on the `cloudrun-test emulate` command"
        )) && reason.contains("Emulator::add_invoker"),
        "{reason}"
    );
    assert_refused(response, StatusCode::FORBIDDEN, "/").await;

    emulator.add_invoker("hello", &format!("user:{}", OUTSIDER.to_uppercase()));
    assert_eq!(get(url.clone(), Some(&token)).await.status(), 200);
    emulator.remove_invoker("hello", &format!("user:{}", OUTSIDER.to_uppercase()));
    assert_eq!(get(url, Some(&token)).await.status(), 403);
}

#[tokio::test]
async fn all_users_makes_a_service_public() {
    let emulator = emulator();
    let url = emulator.service_url("public").unwrap();
    let response = get(url.join("/x").unwrap(), None).await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["caller"], Value::Null);
    // Cloud Run does not check tokens for public services; a valid one names the caller.
    assert_eq!(get(url.clone(), Some("garbage")).await.status(), 200);
    let token = id_token(&emulator, OUTSIDER, &audience(&url)).await;
    let body: Value = get(url, Some(&token)).await.json().await.unwrap();
    assert_eq!(body["caller"], OUTSIDER);
}

#[tokio::test]
async fn x_serverless_authorization_wins_over_authorization() {
    let emulator = emulator();
    let url = emulator.service_url("hello").unwrap();
    let good = id_token(&emulator, TESTER, &audience(&url)).await;
    let response = http()
        .get(url.clone())
        .header("x-serverless-authorization", format!("Bearer {good}"))
        .header("authorization", "Basic YXBwOnNlY3JldA==")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    // An empty one counts as absent.
    let response = http()
        .get(url.clone())
        .header("x-serverless-authorization", "")
        .bearer_auth(&good)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    // A bad X-Serverless-Authorization is not rescued by a good Authorization.
    let response = http()
        .get(url.clone())
        .header("x-serverless-authorization", "Bearer garbage")
        .bearer_auth(&good)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    let outsider = id_token(&emulator, OUTSIDER, &audience(&url)).await;
    let response = http()
        .get(url)
        .header("x-serverless-authorization", format!("Bearer {outsider}"))
        .bearer_auth(&good)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 403);
}

#[tokio::test]
async fn custom_audiences_and_gcloud_client_id_are_accepted() {
    let emulator = emulator();
    let url = emulator.service_url("hello").unwrap();
    for aud in [
        "https://hello.example.com",
        "32555940559.apps.googleusercontent.com",
    ] {
        let token = id_token(&emulator, TESTER, aud).await;
        assert_eq!(get(url.clone(), Some(&token)).await.status(), 200, "{aud}");
    }
    let token = id_token(&emulator, TESTER, "https://other.example.com").await;
    assert_eq!(get(url, Some(&token)).await.status(), 401);
}

#[tokio::test]
async fn tag_urls_are_their_own_origins() {
    let emulator = emulator();
    let url = emulator.service_url("hello").unwrap();
    let tag_url = emulator.tag_url("hello", "canary").unwrap();
    assert_ne!(url, tag_url);
    assert_eq!(emulator.tag_url("hello", "nope"), None);
    assert_eq!(emulator.tag_url("nope", "canary"), None);
    assert_eq!(emulator.service_url("nope"), None);

    let token = id_token(&emulator, TESTER, &audience(&tag_url)).await;
    let response = get(tag_url.join("/t").unwrap(), Some(&token)).await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(
        (body["service"].as_str(), body["tag"].as_str()),
        (Some("hello"), Some("canary"))
    );
    // Cloud Run accepts any of the service's URLs as audience, on any of them.
    assert_eq!(get(url.clone(), Some(&token)).await.status(), 200);
    let token = id_token(&emulator, TESTER, &audience(&url)).await;
    assert_eq!(get(tag_url.clone(), Some(&token)).await.status(), 200);
    assert_refused(get(tag_url, None).await, StatusCode::FORBIDDEN, "/").await;
}
