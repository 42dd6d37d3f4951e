//! The identity endpoints beyond key files, over loopback: the metadata server, IAM
//! Credentials, STS and the refresh-token grant, with the refusals Google gives.

mod support;

use cloudrun_test_emulator::{Emulator, ServiceConfig};
use serde_json::{Value, json};
use support::*;

const RUNNER: &str = "runner@emulated-project.iam.gserviceaccount.com";
const TARGET: &str = "target@emulated-project.iam.gserviceaccount.com";
const ALICE: &str = "alice@example.com";

fn emulator() -> Emulator {
    Emulator::builder()
        .service(
            ServiceConfig::new("hello")
                .invoker(&format!("serviceAccount:{RUNNER}"))
                .invoker(&format!("serviceAccount:{TARGET}"))
                .invoker(&format!("user:{ALICE}")),
        )
        .metadata_service_account(RUNNER)
        .token_creator(&format!("serviceAccount:{RUNNER}"), TARGET)
        .workload_identity_subject("subject-1", "repo:org/app")
        .start()
        .unwrap()
}

async fn metadata(emulator: &Emulator, path: &str, flavor: bool) -> (u16, String) {
    let mut request = http().get(format!(
        "http://{}/computeMetadata/v1/{path}",
        emulator.metadata_host()
    ));
    if flavor {
        request = request.header("Metadata-Flavor", "Google");
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    if status == 200 {
        assert_eq!(response.headers()["metadata-flavor"], "Google");
    }
    (status, response.text().await.unwrap())
}

async fn front(emulator: &Emulator, token: &str) -> (u16, Value) {
    let response = http()
        .get(emulator.service_url("hello").unwrap())
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn iam(emulator: &Emulator, caller: &str, resource: &str, body: Value) -> (u16, Value) {
    let response = http()
        .post(
            emulator
                .iam_endpoint()
                .join(&format!("v1/projects/-/serviceAccounts/{resource}"))
                .unwrap(),
        )
        .bearer_auth(caller)
        .json(&body)
        .send()
        .await
        .unwrap();
    (
        response.status().as_u16(),
        response.json().await.unwrap_or(Value::Null),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metadata_server_needs_its_header_and_mints_for_its_account() {
    let emulator = emulator();
    let audience = audience(&emulator.service_url("hello").unwrap());
    let path =
        format!("instance/service-accounts/default/identity?audience={audience}&format=full");
    let (status, body) = metadata(&emulator, &path, false).await;
    assert_eq!(status, 403);
    assert!(body.contains("Metadata-Flavor"), "{body}");

    let (status, token) = metadata(&emulator, &path, true).await;
    assert_eq!(status, 200, "{token}");
    let claims = claims_of(&token);
    assert_eq!(claims["email"], RUNNER);
    assert_eq!(claims["aud"], audience.as_str());
    assert_eq!(front(&emulator, &token).await.0, 200);

    // format=standard has no email: Cloud Run cannot check the invoker.
    let standard = format!("instance/service-accounts/default/identity?audience={audience}");
    let (_, token) = metadata(&emulator, &standard, true).await;
    assert_eq!(claims_of(&token).get("email"), None);
    assert_eq!(front(&emulator, &token).await.0, 403);

    let (status, _) = metadata(
        &emulator,
        "instance/service-accounts/default/identity",
        true,
    )
    .await;
    assert_eq!(status, 400, "an audience is required");
    let (status, email) =
        metadata(&emulator, "instance/service-accounts/default/email", true).await;
    assert_eq!((status, email.as_str()), (200, RUNNER));
    let (status, project) = metadata(&emulator, "project/project-id", true).await;
    assert_eq!((status, project.as_str()), (200, "emulated-project"));
    let (status, body) = metadata(&emulator, "instance/service-accounts/default/token", true).await;
    assert_eq!(status, 200);
    let access: Value = serde_json::from_str(&body).unwrap();
    assert!(access["expires_in"].as_i64().unwrap() > 3000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn iam_credentials_mints_for_granted_callers_only() {
    let emulator = emulator();
    let audience = audience(&emulator.service_url("hello").unwrap());
    let (_, body) = metadata(&emulator, "instance/service-accounts/default/token", true).await;
    let runner_token = serde_json::from_str::<Value>(&body).unwrap()["access_token"]
        .as_str()
        .unwrap()
        .to_owned();

    let request = json!({"audience": audience, "includeEmail": true});
    let (status, answer) = iam(
        &emulator,
        &runner_token,
        &format!("{TARGET}:generateIdToken"),
        request.clone(),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    let token = answer["token"].as_str().unwrap();
    assert_eq!(claims_of(token)["email"], TARGET);
    assert_eq!(front(&emulator, token).await.0, 200);

    let (status, answer) = iam(
        &emulator,
        &runner_token,
        &format!("{TARGET}:generateAccessToken"),
        json!({"scope": ["https://www.googleapis.com/auth/cloud-platform"]}),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    assert!(answer["expireTime"].as_str().unwrap().ends_with('Z'));

    // No grant from RUNNER to RUNNER, nor through an ungranted delegate.
    let (status, answer) = iam(
        &emulator,
        &runner_token,
        &format!("{RUNNER}:generateIdToken"),
        request.clone(),
    )
    .await;
    assert_eq!(status, 403);
    let message = answer["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("Permission 'iam.serviceAccounts.getOpenIdToken' denied"),
        "{message}"
    );
    let (status, _) = iam(
        &emulator,
        &runner_token,
        &format!("{TARGET}:generateIdToken"),
        json!({"audience": audience, "delegates": [format!("projects/-/serviceAccounts/{RUNNER}")]}),
    )
    .await;
    assert_eq!(status, 403);
    let (status, _) = iam(
        &emulator,
        "ya29.bogus",
        &format!("{TARGET}:generateIdToken"),
        request,
    )
    .await;
    assert_eq!(status, 401);
}

async fn sts(emulator: &Emulator, subject: &str, audience: &str) -> (u16, Value) {
    let response = http()
        .post(emulator.sts_token_url())
        .form(&[
            (
                "grant_type",
                "urn:ietf:params:oauth:grant-type:token-exchange",
            ),
            ("audience", audience),
            ("scope", "https://www.googleapis.com/auth/cloud-platform"),
            (
                "requested_token_type",
                "urn:ietf:params:oauth:token-type:access_token",
            ),
            ("subject_token", subject),
            ("subject_token_type", "urn:ietf:params:oauth:token-type:jwt"),
        ])
        .send()
        .await
        .unwrap();
    (
        response.status().as_u16(),
        response.json().await.unwrap_or(Value::Null),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sts_exchanges_registered_subjects_for_federated_callers() {
    let emulator = emulator();
    let provider = emulator.workload_identity_audience();
    let (status, answer) = sts(&emulator, "subject-1", &provider).await;
    assert_eq!(status, 200, "{answer}");
    let federated = answer["access_token"].as_str().unwrap().to_owned();

    let (status, answer) = sts(&emulator, "someone-else", &provider).await;
    assert_eq!(status, 400);
    assert_eq!(answer["error"], "invalid_grant");
    let (status, _) = sts(&emulator, "subject-1", "https://not-a-provider").await;
    assert_eq!(status, 400);

    // The federated principal may impersonate once the pool is granted.
    let audience = audience(&emulator.service_url("hello").unwrap());
    let request = json!({"audience": audience, "includeEmail": true});
    let resource = format!("{TARGET}:generateIdToken");
    let (status, _) = iam(&emulator, &federated, &resource, request.clone()).await;
    assert_eq!(status, 403);
    emulator.add_token_creator(&emulator.workload_identity_pool_members(), TARGET);
    let (status, answer) = iam(&emulator, &federated, &resource, request).await;
    assert_eq!(status, 200, "{answer}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refresh_grant_gives_a_client_id_token_for_the_user() {
    let emulator = emulator();
    let file: Value = serde_json::from_str(&emulator.authorized_user_credentials(ALICE)).unwrap();
    assert_eq!(file["type"], "authorized_user");
    assert_eq!(file["token_uri"], emulator.token_uri().as_str());
    let client_id = file["client_id"].as_str().unwrap();
    let refresh_token = file["refresh_token"].as_str().unwrap();
    let (status, answer) = post_token_form(
        &emulator,
        &[
            ("grant_type", "refresh_token"),
            ("client_id", client_id),
            ("client_secret", "anything"),
            ("refresh_token", refresh_token),
        ],
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    let id_token = answer["id_token"].as_str().unwrap();
    let claims = claims_of(id_token);
    assert_eq!(claims["aud"], client_id);
    assert_eq!(claims["email"], ALICE);
    assert_eq!(front(&emulator, id_token).await.1["caller"], ALICE);

    for (form, error) in [
        (
            vec![
                ("client_id", client_id),
                ("client_secret", "x"),
                ("refresh_token", "1//nope"),
            ],
            "invalid_grant",
        ),
        (
            vec![
                ("client_id", "other.apps.googleusercontent.com"),
                ("client_secret", "x"),
                ("refresh_token", refresh_token),
            ],
            "unauthorized_client",
        ),
        (
            vec![("client_id", client_id), ("refresh_token", refresh_token)],
            "invalid_request",
        ),
    ] {
        let mut form = form;
        form.push(("grant_type", "refresh_token"));
        let (status, answer) = post_token_form(&emulator, &form).await;
        assert_eq!(
            (status, answer["error"].as_str()),
            (400, Some(error)),
            "{answer}"
        );
    }
}
