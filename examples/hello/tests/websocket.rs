//! WebSockets through Cloud Run's front (cloudrun-test's `websocket` feature): the
//! upgrade carries the token, and without one it is refused as Cloud Run refuses it.
//! Apart from tests/suite.rs so that the suite there builds with default features (the
//! clean-build benchmark measures it that way).

use cloudrun_test::reqwest::StatusCode;
use cloudrun_test::tokio_tungstenite::tungstenite::Message;
use cloudrun_test::{Client, cloudrun_test};
use futures_util::{SinkExt as _, StreamExt as _};

/// A WebSocket opened with the token: the service echoes what it gets.
#[cloudrun_test(service = "hello")]
async fn echoes_over_a_websocket(client: Client) {
    let mut socket = client.websocket("/ws").await.unwrap();
    for text in ["hello", "again"] {
        socket.send(Message::text(text)).await.unwrap();
        let echoed = socket.next().await.unwrap().unwrap();
        assert_eq!(echoed, Message::text(text));
    }
    socket.close(None).await.unwrap();
}

/// Without a token, Cloud Run refuses the upgrade with 403.
#[cloudrun_test(service = "hello")]
async fn a_websocket_without_a_token_is_refused(client: Client) {
    let error = client.without_auth().websocket("/ws").await.unwrap_err();
    assert_eq!(error.status(), Some(StatusCode::FORBIDDEN), "{error}");
    assert!(error.to_string().contains("no token was sent"), "{error}");
}
