//! `Client::websocket` against a real WebSocket echo on loopback behind a front that
//! checks tokens as Cloud Run's does, with tokens minted by the emulator.

mod protocols;

use std::sync::{Arc, Mutex};

use cloudrun_test::reqwest::StatusCode;
use cloudrun_test::tokio_tungstenite::{self, tungstenite};
use futures_util::{SinkExt, StreamExt};
use protocols::{Identity, OUTSIDER, REFUSAL_PAGE, TESTER};
use tungstenite::Message;
use tungstenite::handshake::server::{ErrorResponse, Request, Response};

/// An echo service whose upgrades pass a token check; it keeps the token header each
/// upgrade request carried (`None`: none).
struct Echo {
    url: String,
    seen: Arc<Mutex<Vec<Option<String>>>>,
}

impl Echo {
    /// The echo with its own front checking tokens from `identity`.
    async fn start(identity: &Arc<Identity>) -> Echo {
        Echo::serve(Some(identity)).await
    }

    /// The echo alone, to put behind the emulator's front.
    async fn start_open() -> Echo {
        Echo::serve(None).await
    }

    async fn serve(identity: Option<&Arc<Identity>>) -> Echo {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let seen = Arc::new(Mutex::new(Vec::new()));
        let front = identity.map(|identity| (Arc::clone(identity), url.clone()));
        let log = Arc::clone(&seen);
        tokio::spawn(async move {
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                let (front, log) = (front.clone(), Arc::clone(&log));
                tokio::spawn(async move {
                    // The callback's type is tungstenite's, large error and all.
                    #[allow(clippy::result_large_err)]
                    let check = |request: &Request, response: Response| {
                        let token = request
                            .headers()
                            .get("authorization")
                            .and_then(|value| value.to_str().ok())
                            .map(str::to_owned);
                        let verdict = match &front {
                            Some((identity, audience)) => {
                                identity.check(token.as_deref(), audience)
                            }
                            None => Ok(String::new()),
                        };
                        log.lock().unwrap().push(token);
                        match verdict {
                            Ok(_) => Ok(response),
                            Err(status) => {
                                let mut refusal = ErrorResponse::new(Some(REFUSAL_PAGE.to_owned()));
                                *refusal.status_mut() = StatusCode::from_u16(status).unwrap();
                                Err(refusal)
                            }
                        }
                    };
                    let Ok(mut socket) = tokio_tungstenite::accept_hdr_async(stream, check).await
                    else {
                        return;
                    };
                    while let Some(Ok(message)) = socket.next().await {
                        if message.is_text() || message.is_binary() {
                            socket.send(message).await.unwrap();
                        }
                    }
                });
            }
        });
        Echo { url, seen }
    }

    fn seen(&self) -> Vec<Option<String>> {
        self.seen.lock().unwrap().clone()
    }
}

#[tokio::test]
async fn an_echo_round_trip_with_a_valid_token_on_the_upgrade() {
    let identity = Arc::new(Identity::start());
    let echo = Echo::start(&identity).await;
    let client = identity
        .client_for(TESTER, &echo.url)
        .build()
        .await
        .unwrap();

    let mut socket = client.websocket("/echo").await.unwrap();
    socket.send(Message::text("hello")).await.unwrap();
    let echoed = socket.next().await.unwrap().unwrap();
    assert_eq!(echoed, Message::text("hello"));
    socket.close(None).await.unwrap();

    let seen = echo.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(
        identity.check(seen[0].as_deref(), &echo.url),
        Ok(TESTER.to_owned())
    );
}

#[tokio::test]
async fn a_refused_upgrade_is_an_error_with_the_diagnosis() {
    let identity = Arc::new(Identity::start());
    let echo = Echo::start(&identity).await;
    let client = identity
        .client_for(OUTSIDER, &echo.url)
        .build()
        .await
        .unwrap();

    let error = client.websocket("/echo").await.unwrap_err();
    assert_eq!(error.status(), Some(StatusCode::FORBIDDEN), "{error}");
    let message = error.to_string();
    assert!(message.contains("the upgrade was refused"), "{message}");
    assert!(message.contains("may not invoke the service"), "{message}");
    assert!(message.contains("--role=roles/run.invoker"), "{message}");
    assert!(message.contains(OUTSIDER), "{message}");

    let error = client.without_auth().websocket("/echo").await.unwrap_err();
    assert_eq!(error.status(), Some(StatusCode::FORBIDDEN), "{error}");
    assert!(error.to_string().contains("no token was sent"), "{error}");
    assert_eq!(echo.seen().last(), Some(&None), "no token went out");
}

#[tokio::test]
async fn the_token_goes_to_the_services_origin_only() {
    let identity = Arc::new(Identity::start());
    let echo = Echo::start(&identity).await;
    let other = Echo::start(&identity).await;
    let client = identity
        .client_for(TESTER, &echo.url)
        .build()
        .await
        .unwrap();

    // An absolute URL, in either spelling, for the service's origin gets the token...
    let ws_url = echo.url.replace("http://", "ws://");
    client.websocket(&format!("{ws_url}/echo")).await.unwrap();
    assert!(echo.seen()[0].is_some());

    // ...another origin does not.
    let error = client
        .websocket(&format!("{}/echo", other.url))
        .await
        .unwrap_err();
    assert_eq!(error.status(), Some(StatusCode::FORBIDDEN), "{error}");
    assert_eq!(other.seen(), [None]);
}

/// Through the emulator's front, as through Cloud Run's: the upgrade passes through,
/// and without a token the front answers 403.
#[tokio::test]
async fn an_echo_round_trip_through_the_emulator_and_its_403_without_a_token() {
    use cloudrun_test_emulator::{Emulator, ServiceConfig, Upstream};

    let echo = Echo::start_open().await;
    let identity = Identity::with(
        Emulator::builder().service(
            ServiceConfig::new("echo")
                .upstream(Upstream::Url(echo.url.parse().unwrap()))
                .invoker(&format!("serviceAccount:{TESTER}")),
        ),
    );
    let front = identity.emulator.service_url("echo").unwrap().to_string();
    let client = identity.client_for(TESTER, &front).build().await.unwrap();

    let mut socket = client.websocket("/echo").await.unwrap();
    socket.send(Message::text("through")).await.unwrap();
    assert_eq!(
        socket.next().await.unwrap().unwrap(),
        Message::text("through")
    );
    let forwarded = echo.seen()[0]
        .clone()
        .expect("the front forwards the token");
    assert!(forwarded.ends_with(".SIGNATURE_REMOVED_BY_GOOGLE"));

    let error = client.without_auth().websocket("/echo").await.unwrap_err();
    assert_eq!(error.status(), Some(StatusCode::FORBIDDEN), "{error}");
    assert!(error.to_string().contains("no token was sent"), "{error}");
    assert_eq!(
        echo.seen().len(),
        1,
        "the refused upgrade did not reach the echo"
    );
}
