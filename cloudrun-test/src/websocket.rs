//! WebSockets to the service (feature `websocket`): [`Client::websocket`] opens the
//! upgrade with the client's token and hands back tokio-tungstenite's stream.
//!
//! The same rules as for HTTP requests: the token goes to the service's origin only
//! (https, or a URL on this machine), in the client's token header; a refusal (401/403)
//! is explained with its fix. `wss` uses the TLS stack and certificate verifier reqwest
//! uses (rustls, the platform's verifier). The upgrade itself is ours (`upgrade`), so
//! the token never reaches tungstenite's handshake, which logs its request at TRACE.

mod upgrade;

use std::sync::{Arc, LazyLock};
use std::time::Duration;

use reqwest::{Method, StatusCode, Url};
use rustls_platform_verifier::ConfigVerifierExt;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::handshake::client::Request;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::client::Client;
use crate::credentials::Credentials;
use crate::diagnose::Reminted;
use crate::error::Error;
use crate::outcome::{self, Last};

/// An open WebSocket to the service: send and receive
/// [`Message`](tokio_tungstenite::tungstenite::Message)s with `futures`' `SinkExt` and
/// `StreamExt` (or `tokio-tungstenite`'s own methods).
pub type WebSocket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// How long connecting and the upgrade may take together.
const UPGRADE_TIMEOUT: Duration = Duration::from_secs(30);

/// reqwest's TLS client settings (rustls, the platform's verifier), made once.
static TLS: LazyLock<Result<Arc<rustls::ClientConfig>, String>> = LazyLock::new(|| {
    rustls::ClientConfig::with_platform_verifier()
        .map(Arc::new)
        .map_err(|error| error.to_string())
});

impl Client {
    /// Opens a WebSocket to `path` (relative to the service URL, or an absolute `http`,
    /// `https`, `ws` or `wss` URL): `ws` for an `http` service, `wss` for `https`. The
    /// upgrade request carries the token if it is for the service's origin.
    ///
    /// ```no_run
    /// # async fn f(client: cloudrun_test::Client) -> Result<(), Box<dyn std::error::Error>> {
    /// use cloudrun_test::tokio_tungstenite::tungstenite::Message;
    /// use futures_util::{SinkExt, StreamExt};
    ///
    /// let mut socket = client.websocket("/echo").await?;
    /// socket.send(Message::text("hello")).await?;
    /// let echoed = socket.next().await.unwrap()?;
    /// # Ok(()) }
    /// ```
    ///
    /// An error if the service refuses the upgrade (a 401/403 is explained with its
    /// fix, and its [`status`](Error::status) is set), or no upgrade came within 30
    /// seconds. Cloud Run closes a WebSocket at the service's request timeout (300 s
    /// unless deployed with `--timeout`, at most 3600 s); it does not go through
    /// `HTTPS_PROXY`.
    pub async fn websocket(&self, path: &str) -> Result<WebSocket, Error> {
        self.websocket_with(path, |_| {}).await
    }

    /// [`Client::websocket`], with the upgrade request changed by `configure` first:
    /// a subprotocol (`Sec-WebSocket-Protocol`), a header of the app's.
    pub async fn websocket_with(
        &self,
        path: &str,
        configure: impl FnOnce(&mut Request),
    ) -> Result<WebSocket, Error> {
        let (http_url, ws_url) = self.websocket_urls(path)?;
        let failed = |problem: String| Error::request(Method::GET, ws_url.as_str(), problem);
        let mut request = ws_url
            .as_str()
            .into_client_request()
            .map_err(|error| failed(format!("the upgrade request could not be built: {error}")))?;
        configure(&mut request);
        let sender = self.sender();
        let token = sender
            .auth
            .authorize(&http_url, request.headers_mut())
            .await?;
        let tls = match ws_url.scheme() {
            "wss" => Some(TLS.clone().map_err(|error| {
                Error::internal(format!("the TLS settings could not be made: {error}"))
            })?),
            _ => None,
        };
        let upgrade = async {
            let stream = upgrade::connect(&ws_url, tls).await?;
            upgrade::upgrade(stream, &request).await
        };
        let outcome = match tokio::time::timeout(UPGRADE_TIMEOUT, upgrade).await {
            Ok(outcome) => outcome,
            Err(_) => {
                return Err(
                    failed(format!("no upgrade within {}s", UPGRADE_TIMEOUT.as_secs())).timed_out(),
                );
            }
        };
        match outcome {
            Ok(socket) => Ok(socket),
            Err(upgrade::Failure::Answered { status, headers }) => {
                let problem = if matches!(status, StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN)
                {
                    let last = Last {
                        target: &sender.target,
                        identity: sender.auth.credentials().and_then(Credentials::identity),
                        method: &Method::GET,
                        url: &http_url,
                        token: token.as_ref(),
                        reminted: Reminted::No,
                        retries: 0,
                        retried_for: None,
                    };
                    format!(
                        "the upgrade was refused.\n{}",
                        outcome::explain_refused(&last, status, &headers)
                    )
                } else {
                    format!("the service answered {status} instead of switching protocols (101)")
                };
                Err(failed(problem).with_status(status))
            }
            Err(upgrade::Failure::Io(error)) => {
                Err(failed(format!("the connection failed: {error}")).with_source(error))
            }
            Err(upgrade::Failure::Protocol(problem)) => {
                Err(failed(format!("the upgrade failed: {problem}")))
            }
        }
    }

    /// The URL `path` names, as `http(s)` (to compare origins and explain refusals) and
    /// as `ws(s)` (to connect).
    fn websocket_urls(&self, path: &str) -> Result<(Url, Url), Error> {
        let bad = |why: String| Error::request(Method::GET, path, why);
        let mut http_url = self
            .url()
            .join(path)
            .map_err(|error| bad(format!("{path:?} is neither a path nor a URL ({error})")))?;
        let (http, ws) = match http_url.scheme() {
            "http" | "ws" => ("http", "ws"),
            "https" | "wss" => ("https", "wss"),
            other => return Err(bad(format!("a WebSocket URL is ws or wss, not {other}"))),
        };
        let mut ws_url = http_url.clone();
        // Both are special schemes of the same kind: the change cannot fail.
        let _ = http_url.set_scheme(http);
        let _ = ws_url.set_scheme(ws);
        Ok((http_url, ws_url))
    }
}
