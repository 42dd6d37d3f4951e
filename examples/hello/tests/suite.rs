//! The service's test suite against its deployment on Cloud Run (or the emulator):
//!
//!     cloudrun-test emulate --serve 'hello=cargo run -q' -- cargo test
//!
//! Each test gets a `Client` for the service that carries an identity token.

use cloudrun_test::reqwest::StatusCode;
use cloudrun_test::sse::EventStream;
use cloudrun_test::{Client, TestContext, cloudrun_test};
use serde_json::{Value, json};

#[cloudrun_test(service = "hello")]
async fn root_says_hello(client: Client) {
    let response = client.get("/").send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.text().await.unwrap(), "Hello from Cloud Run!\n");
}

#[cloudrun_test(service = "hello")]
async fn greets_by_name(client: Client) -> Result<(), cloudrun_test::reqwest::Error> {
    let greeting: Value = client
        .get("/hello/Ada")
        .send()
        .await
        .unwrap()
        .json()
        .await?;
    assert_eq!(greeting, json!({ "greeting": "Hello, Ada!" }));
    Ok(())
}

#[cloudrun_test(service = "hello")]
async fn echoes_json(client: Client) {
    let sent = json!({ "numbers": [1, 2, 3], "nested": { "ok": true } });
    let response = client.post("/echo").json(&sent).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.json::<Value>().await.unwrap(), sent);
}

/// The service sees the identity the suite runs as.
#[cloudrun_test(service = "hello")]
async fn sees_the_caller(context: TestContext) {
    let answer: Value = context
        .client()
        .get("/whoami")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let expected = context.identity().expect("a service-account identity");
    assert_eq!(answer["email"], json!(expected));
}

/// The service is private: without a token, Cloud Run answers 403.
#[cloudrun_test(service = "hello")]
async fn is_private(client: Client) {
    let response = client.without_auth().get("/").send().await.unwrap();
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
}

/// Server-sent events arrive one by one as the service sends them.
#[cloudrun_test(service = "hello")]
async fn streams_events(client: Client) {
    let response = client
        .get("/events/3")
        .header("accept", "text/event-stream")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let mut events = EventStream::new(response);
    let mut seen = Vec::new();
    while let Some(event) = events.next().await.unwrap() {
        assert_eq!(event.event, "tick");
        seen.push(event.data);
    }
    assert_eq!(seen, ["1", "2", "3"]);
    assert_eq!(events.last_event_id(), "3");
}
