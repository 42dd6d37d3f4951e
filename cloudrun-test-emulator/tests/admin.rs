//! The Cloud Run Admin API v2 and the Google endpoints' fallback.

mod support;

use cloudrun_test_emulator::{Emulator, ServiceConfig};
use serde_json::{Value, json};
use support::*;

fn emulator() -> Emulator {
    Emulator::builder()
        .project("my-project")
        .region("us-central1")
        .service(
            ServiceConfig::new("hello")
                .tag("canary")
                .tag("blue")
                .custom_audience("https://hello.example.com"),
        )
        .service(ServiceConfig::new("plain"))
        .start()
        .unwrap()
}

async fn get(emulator: &Emulator, path: &str, token: Option<&str>) -> (u16, Value) {
    let mut request = http().get(emulator.run_endpoint().join(path).unwrap());
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.unwrap();
    (response.status().as_u16(), response.json().await.unwrap())
}

#[tokio::test]
async fn gets_a_service_with_its_tags_and_audiences() {
    let emulator = emulator();
    assert_eq!(emulator.run_endpoint(), *emulator.base_url());
    let token = access_token(&emulator, TESTER).await;
    let (status, body) = get(
        &emulator,
        "/v2/projects/my-project/locations/us-central1/services/hello",
        Some(&token),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let uri = audience(&emulator.service_url("hello").unwrap());
    let canary = audience(&emulator.tag_url("hello", "canary").unwrap());
    let blue = audience(&emulator.tag_url("hello", "blue").unwrap());
    assert_eq!(
        body["name"],
        "projects/my-project/locations/us-central1/services/hello"
    );
    assert_eq!(body["uri"], uri.as_str());
    assert_eq!(body["urls"], json!([uri]));
    assert_eq!(
        body["customAudiences"],
        json!(["https://hello.example.com"])
    );
    assert_eq!(body["ingress"], "INGRESS_TRAFFIC_ALL");
    assert!(body["uid"].as_str().unwrap().len() == 36);
    let revision = "hello-00001-emu";
    assert_eq!(
        body["latestReadyRevision"],
        format!("projects/my-project/locations/us-central1/services/hello/revisions/{revision}")
    );
    assert_eq!(
        body["traffic"],
        json!([
            {"type": "TRAFFIC_TARGET_ALLOCATION_TYPE_LATEST", "percent": 100},
            {"type": "TRAFFIC_TARGET_ALLOCATION_TYPE_REVISION", "revision": revision, "tag": "canary"},
            {"type": "TRAFFIC_TARGET_ALLOCATION_TYPE_REVISION", "revision": revision, "tag": "blue"},
        ])
    );
    assert_eq!(
        body["trafficStatuses"],
        json!([
            {"type": "TRAFFIC_TARGET_ALLOCATION_TYPE_LATEST", "percent": 100},
            {"type": "TRAFFIC_TARGET_ALLOCATION_TYPE_REVISION", "revision": revision, "tag": "canary", "uri": canary},
            {"type": "TRAFFIC_TARGET_ALLOCATION_TYPE_REVISION", "revision": revision, "tag": "blue", "uri": blue},
        ])
    );

    // Without tags or custom audiences: no such fields' entries, as proto3 JSON omits them.
    let (status, body) = get(
        &emulator,
        "/v2/projects/my-project/locations/us-central1/services/plain",
        Some(&token),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(body["customAudiences"], Value::Null);
    assert_eq!(body["trafficStatuses"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn lists_services() {
    let emulator = emulator();
    let token = access_token(&emulator, TESTER).await;
    let (status, body) = get(
        &emulator,
        "/v2/projects/my-project/locations/us-central1/services",
        Some(&token),
    )
    .await;
    assert_eq!(status, 200);
    let names: Vec<&str> = body["services"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "projects/my-project/locations/us-central1/services/hello",
            "projects/my-project/locations/us-central1/services/plain"
        ]
    );
    let (_, body) = get(
        &emulator,
        "/v2/projects/my-project/locations/europe-west1/services",
        Some(&token),
    )
    .await;
    assert_eq!(body, json!({}));
}

#[tokio::test]
async fn unknown_service_project_or_region_is_404() {
    let emulator = emulator();
    let token = access_token(&emulator, TESTER).await;
    for (project, region, service) in [
        ("my-project", "us-central1", "nope"),
        ("other-project", "us-central1", "hello"),
        ("my-project", "europe-west1", "hello"),
    ] {
        let path = format!("/v2/projects/{project}/locations/{region}/services/{service}");
        let (status, body) = get(&emulator, &path, Some(&token)).await;
        assert_eq!(status, 404);
        assert_eq!(
            body,
            json!({"error": {
                "code": 404,
                "message": format!("Resource 'projects/{project}/locations/{region}/services/{service}' was not found"),
                "status": "NOT_FOUND",
            }})
        );
    }
}

#[tokio::test]
async fn needs_an_access_token_issued_here() {
    let emulator = emulator();
    let path = "/v2/projects/my-project/locations/us-central1/services/hello";
    let id_token = id_token(&emulator, TESTER, "https://hello.example.com").await;
    let other = Emulator::builder().start().unwrap();
    let foreign = access_token(&other, TESTER).await;
    for token in [
        None,
        Some("ya29.made-up"),
        Some(id_token.as_str()),
        Some(foreign.as_str()),
    ] {
        let (status, body) = get(&emulator, path, token).await;
        assert_eq!(status, 401);
        assert_eq!(
            body,
            json!({"error": {
                "code": 401,
                "message": "Request had invalid authentication credentials. Expected OAuth 2 access token, \
                            login cookie or other valid authentication credential.",
                "status": "UNAUTHENTICATED",
            }})
        );
    }
    // A token for other scopes is refused as Google does.
    let account = ServiceAccount::of(&emulator, TESTER);
    let assertion = account
        .sign(&account.claims(json!({"scope": "https://www.googleapis.com/auth/userinfo.email"})));
    let (_, minted) = exchange(&emulator, &assertion).await;
    let (status, body) = get(&emulator, path, minted["access_token"].as_str()).await;
    assert_eq!(
        (status, body["error"]["status"].as_str()),
        (403, Some("PERMISSION_DENIED"))
    );
}

#[tokio::test]
async fn unknown_endpoints_say_what_is_served() {
    let emulator = emulator();
    let (status, body) = get(&emulator, "/v1/projects/x:generateIdToken", None).await;
    assert_eq!(status, 404);
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("/v1/projects/x:generateIdToken") && message.contains("POST /token"),
        "{message}"
    );
}
