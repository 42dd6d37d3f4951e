//! gRPC to the service (feature `grpc`): a tonic transport that carries the client's
//! identity token on every call.
//!
//! tonic's interceptors are synchronous and so can only insert a token fixed in
//! advance, which expires under a long suite. [`GrpcChannel`] is a tower service
//! around tonic's `Channel` instead: each call asks the client for its token (its own
//! copy while fresh, else the process-wide cache, which mints only when the token
//! nears expiry), so 40 calls cost one mint and a call after expiry gets a new one.
//!
//! Cloud Run refuses a call with a plain HTTP 401/403 and an HTML page, no
//! `grpc-status`. tonic would read the page as a gRPC message and report `Internal:
//! invalid compression flag`; the channel answers `UNAUTHENTICATED` or
//! `PERMISSION_DENIED` instead, with the diagnosis the HTTP client gives.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use reqwest::{Method, StatusCode, Url};
use tonic::body::Body;
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};

use crate::client::Client;
use crate::credentials::Credentials;
use crate::diagnose::Reminted;
use crate::error::Error;
use crate::outcome::{self, Last};
use crate::token::Token;

/// The error of a [`GrpcChannel`] call: a transport failure, or a [`tonic::Status`]
/// (which tonic hands to the caller as it is).
type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// How long connecting may take, as for the HTTP client's requests.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A gRPC channel to a client's service whose calls carry the client's identity token,
/// in the client's token header, fetched anew for every call. Cheap to clone; give it
/// to any tonic client:
///
/// ```no_run
/// # mod greeter {
/// #     // What tonic generates from a .proto, cut down.
/// #     pub struct HelloRequest { pub name: String }
/// #     pub struct GreeterClient<T>(tonic::client::Grpc<T>);
/// #     impl<T: tonic::client::GrpcService<tonic::body::Body>> GreeterClient<T> {
/// #         pub fn new(channel: T) -> Self { GreeterClient(tonic::client::Grpc::new(channel)) }
/// #         pub async fn say_hello(&mut self, _: HelloRequest) -> Result<tonic::Response<String>, tonic::Status> { todo!() }
/// #     }
/// # }
/// # use cloudrun_test::tonic;
/// use greeter::{GreeterClient, HelloRequest};
///
/// # async fn f(client: cloudrun_test::Client) -> Result<(), Box<dyn std::error::Error>> {
/// let mut greeter = GreeterClient::new(client.grpc_channel()?);
/// let reply = greeter.say_hello(HelloRequest { name: "Ada".into() }).await?;
/// # Ok(()) }
/// ```
///
/// The channel connects to the service's origin only (HTTP/2 over TLS for `https`,
/// cleartext HTTP/2 for a loopback `http` URL such as the emulator's), so the token
/// never goes anywhere else. It does not go through `HTTPS_PROXY`. A refusal from
/// Cloud Run (401/403 without `grpc-status`) becomes `Code::Unauthenticated` or
/// `Code::PermissionDenied` with the client's diagnosis, also printed on stderr; a
/// token that cannot be had fails the call with `Code::Unauthenticated` (or
/// `Code::Unavailable` when the token endpoint may answer later), the
/// [`Error`](crate::Error) as its source.
///
/// The client's request time limit does not apply: set a deadline per call with
/// `tonic::Request::set_timeout`, or one for every call with
/// [`Client::grpc_channel_with`].
#[derive(Clone)]
pub struct GrpcChannel {
    channel: Channel,
    client: Client,
}

impl fmt::Debug for GrpcChannel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GrpcChannel")
            .field("url", &self.client.url().as_str())
            .finish_non_exhaustive()
    }
}

impl Client {
    /// A gRPC channel to the service carrying this client's tokens; see
    /// [`GrpcChannel`]. It connects on its first call.
    pub fn grpc_channel(&self) -> Result<GrpcChannel, Error> {
        self.grpc_channel_with(|endpoint| endpoint)
    }

    /// [`Client::grpc_channel`], with tonic's endpoint settings changed by `configure`
    /// (a deadline for every call, keep-alive, window sizes...):
    ///
    /// ```no_run
    /// # fn f(client: cloudrun_test::Client) -> Result<(), cloudrun_test::Error> {
    /// use std::time::Duration;
    ///
    /// let channel = client.grpc_channel_with(|endpoint| endpoint.timeout(Duration::from_secs(30)))?;
    /// # Ok(()) }
    /// ```
    pub fn grpc_channel_with(
        &self,
        configure: impl FnOnce(Endpoint) -> Endpoint,
    ) -> Result<GrpcChannel, Error> {
        let url = self.url();
        let origin = url.origin().ascii_serialization();
        let endpoint = Endpoint::from_shared(origin.clone()).map_err(|error| {
            Error::setting(
                format!("the service URL {url} is not a gRPC endpoint ({error})"),
                "give the service's URL, e.g. https://SERVICE-PROJECT_NUMBER.REGION.run.app",
            )
        })?;
        let endpoint = match url.scheme() {
            "https" => endpoint
                .tls_config(ClientTlsConfig::new().with_native_roots())
                .map_err(|error| {
                    Error::internal(format!("the TLS settings for {origin} failed: {error}"))
                })?,
            _ => endpoint,
        };
        let endpoint = configure(endpoint.connect_timeout(CONNECT_TIMEOUT));
        Ok(GrpcChannel {
            channel: endpoint.connect_lazy(),
            client: self.clone(),
        })
    }
}

impl tower_service::Service<http::Request<Body>> for GrpcChannel {
    type Response = http::Response<Body>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.channel.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        // tower's rule: the channel that was made ready serves this call, and a clone
        // (made ready by the next `poll_ready`) stays.
        let fresh = self.channel.clone();
        let channel = std::mem::replace(&mut self.channel, fresh);
        Box::pin(call(self.client.clone(), channel, request))
    }
}

/// One call: the token on the request, the answer, a refusal turned into its status.
async fn call(
    client: Client,
    mut channel: Channel,
    mut request: http::Request<Body>,
) -> Result<http::Response<Body>, BoxError> {
    let sender = client.sender();
    // Every call goes to the service's origin: it carries a token whenever the client
    // has credentials (and the URL is https or on this machine, as for HTTP).
    let token = sender
        .auth
        .authorize(client.url(), request.headers_mut())
        .await
        .map_err(no_token)?;
    let url = client
        .url()
        .join(request.uri().path())
        .unwrap_or_else(|_| client.url().clone());
    let response = tower_service::Service::call(&mut channel, request).await?;
    let code = match response.status() {
        StatusCode::UNAUTHORIZED => tonic::Code::Unauthenticated,
        StatusCode::FORBIDDEN => tonic::Code::PermissionDenied,
        _ => return Ok(response),
    };
    // A 401/403 that carries a gRPC status is the service's own answer.
    if response.headers().contains_key("grpc-status") {
        return Ok(response);
    }
    let message = diagnosis(&client, &url, token.as_ref(), &response);
    Ok(tonic::Status::new(code, message).into_http())
}

/// What the client says of a refused call (redacted; printed on stderr, where the test
/// harness shows it when the test fails, as the HTTP client does).
fn diagnosis(
    client: &Client,
    url: &Url,
    token: Option<&Token>,
    response: &http::Response<Body>,
) -> String {
    let sender = client.sender();
    let last = Last {
        target: &sender.target,
        identity: sender.auth.credentials().and_then(Credentials::identity),
        method: &Method::POST,
        url,
        token,
        reminted: Reminted::No,
        retries: 0,
        retried_for: None,
    };
    let message = crate::redact::redact(&outcome::explain_refused(
        &last,
        response.status(),
        response.headers(),
    ));
    eprintln!("{message}");
    message
}

/// The status of a call that could not get its token; the error is its source.
fn no_token(error: Error) -> BoxError {
    let code = if error.is_transient() {
        tonic::Code::Unavailable
    } else {
        tonic::Code::Unauthenticated
    };
    let mut status = tonic::Status::new(code, format!("no identity token for the call: {error}"));
    status.set_source(std::sync::Arc::new(error));
    Box::new(status)
}
