//! The authenticated client a test receives.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use reqwest::{Method, Url};
use serde::Serialize;

use crate::auth::Auth;
use crate::credentials::Credentials;
use crate::error::{Error, ErrorKind};
use crate::probe::Probe;
use crate::resolve::{self, ServiceQuery};
use crate::retry::RetryPolicy;
use crate::send::Sender;
use crate::settings::{Settings, TokenHeader};
use crate::token::IdToken;

/// An HTTP client for one Cloud Run service. Paths are relative to the service URL,
/// and the identity token is attached only to requests for the service's own origin.
///
/// Cheap to clone. Build one per tokio runtime: like `reqwest::Client`, its
/// connections belong to the runtime that opened them. (Tokens are shared across
/// runtimes through the process-wide cache, so that costs no extra mint.)
#[derive(Clone)]
pub struct Client {
    inner: Arc<Sender>,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("url", &self.inner.target.url.as_str())
            .field("audience", &self.inner.target.audience)
            .field("credentials", &self.inner.auth.credentials())
            .finish()
    }
}

impl Client {
    /// Starts building a client without the attribute, e.g. in a plain `#[tokio::test]`.
    pub fn builder() -> ClientBuilder {
        ClientBuilder::default()
    }

    /// The service URL that relative paths are joined to.
    pub fn url(&self) -> &Url {
        &self.inner.target.url
    }

    /// The audience of the identity tokens sent to the service.
    pub fn audience(&self) -> &str {
        &self.inner.target.audience
    }

    /// The principal the client authenticates as, when known.
    pub fn identity(&self) -> Option<String> {
        self.inner
            .auth
            .credentials()
            .and_then(Credentials::identity)
    }

    /// The current identity token for the service, from the process-wide cache.
    pub async fn id_token(&self) -> Result<IdToken, Error> {
        self.inner.auth.token().await.map(IdToken)
    }

    /// What the client sends with: for the transports of the other protocols
    /// (`grpc`, `websocket`), which keep its token and origin rules.
    #[cfg(any(feature = "grpc", feature = "websocket"))]
    pub(crate) fn sender(&self) -> &Sender {
        &self.inner
    }

    /// The same service, without a token: to assert that it really is private.
    pub fn without_auth(&self) -> Client {
        Client {
            inner: Arc::new(Sender {
                http: self.inner.http.clone(),
                target: self.inner.target.clone(),
                auth: self.inner.auth.without_token(),
                retry: self.inner.retry.clone(),
            }),
        }
    }

    /// A `GET` request for `path`, relative to the service URL (`"/items?page=2"`) or
    /// an absolute URL; see [`request`](Self::request). Nothing is sent until
    /// [`RequestBuilder::send`]:
    ///
    /// ```no_run
    /// # async fn f(client: cloudrun_test::Client) -> Result<(), cloudrun_test::Error> {
    /// use cloudrun_test::reqwest::StatusCode;
    ///
    /// let res = client.get("/healthz").send().await?;
    /// assert_eq!(res.status(), StatusCode::OK);
    /// # Ok(()) }
    /// ```
    pub fn get(&self, path: &str) -> RequestBuilder {
        self.request(Method::GET, path)
    }

    /// A `POST` request for `path`; add a body with [`RequestBuilder::json`],
    /// [`form`](RequestBuilder::form) or [`body`](RequestBuilder::body). Not retried
    /// by the default [`RetryPolicy`] (it is not idempotent).
    ///
    /// ```no_run
    /// # async fn f(client: cloudrun_test::Client) -> Result<(), cloudrun_test::Error> {
    /// let res = client
    ///     .post("/items")
    ///     .json(&serde_json::json!({ "name": "pen" }))
    ///     .send()
    ///     .await?;
    /// assert!(res.status().is_success());
    /// # Ok(()) }
    /// ```
    pub fn post(&self, path: &str) -> RequestBuilder {
        self.request(Method::POST, path)
    }

    /// A `PUT` request for `path`; see [`get`](Self::get).
    pub fn put(&self, path: &str) -> RequestBuilder {
        self.request(Method::PUT, path)
    }

    /// A `PATCH` request for `path`; see [`get`](Self::get). Not retried by the
    /// default [`RetryPolicy`] (it is not idempotent).
    pub fn patch(&self, path: &str) -> RequestBuilder {
        self.request(Method::PATCH, path)
    }

    /// A `DELETE` request for `path`; see [`get`](Self::get).
    pub fn delete(&self, path: &str) -> RequestBuilder {
        self.request(Method::DELETE, path)
    }

    /// A `HEAD` request for `path`; see [`get`](Self::get).
    pub fn head(&self, path: &str) -> RequestBuilder {
        self.request(Method::HEAD, path)
    }

    /// A request for `path`: relative to the service URL, or an absolute URL (which
    /// gets the token only if it has the service's origin).
    pub fn request(&self, method: Method, path: &str) -> RequestBuilder {
        let url = self.join(path);
        let builder = match &url {
            Ok(url) => Ok(self.inner.http.request(method.clone(), url.clone())),
            Err(error) => Err(error.clone()),
        };
        RequestBuilder {
            client: self.clone(),
            method,
            url,
            builder,
        }
    }

    fn join(&self, path: &str) -> Result<Url, Error> {
        // An absolute URL stays as it is: `join` parses against the base.
        self.inner.target.url.join(path).map_err(|error| {
            Error::request(
                "-",
                path,
                format!("{path:?} is neither a path nor a URL ({error})"),
            )
        })
    }

    /// Waits until `path` answers something else than 429, 502, 503 or 504 or a failed
    /// connection (a service still starting), for at most `limit`; see
    /// [`ClientBuilder::wait_until_ready`].
    pub async fn wait_until_ready(&self, path: &str, limit: Duration) -> Result<(), Error> {
        crate::ready::wait_until_ready(&self.inner, path, limit).await
    }
}

/// A request to the service, built like `reqwest::RequestBuilder`; `send` attaches the
/// token, re-mints once if the service answers 401, and explains 401/403 on stderr.
pub struct RequestBuilder {
    client: Client,
    method: Method,
    url: Result<Url, Error>,
    builder: Result<reqwest::RequestBuilder, Error>,
}

impl fmt::Debug for RequestBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RequestBuilder")
            .field("method", &self.method)
            .field("url", &self.url.as_ref().map(Url::as_str))
            .finish_non_exhaustive()
    }
}

impl RequestBuilder {
    /// Applies any `reqwest::RequestBuilder` method not mirrored here.
    pub fn map(
        mut self,
        f: impl FnOnce(reqwest::RequestBuilder) -> reqwest::RequestBuilder,
    ) -> Self {
        self.builder = self.builder.map(f);
        self
    }

    /// Adds a header. The token's header is set by [`send`](Self::send) and replaces
    /// one of the same name set here; a name or value that is not valid HTTP makes
    /// `send` return an error of kind [`ErrorKind::Request`].
    ///
    /// ```no_run
    /// # async fn f(client: cloudrun_test::Client) -> Result<(), cloudrun_test::Error> {
    /// let res = client.get("/").header("accept-language", "fr").send().await?;
    /// # Ok(()) }
    /// ```
    pub fn header<K, V>(self, key: K, value: V) -> Self
    where
        HeaderName: TryFrom<K>,
        <HeaderName as TryFrom<K>>::Error: Into<http::Error>,
        HeaderValue: TryFrom<V>,
        <HeaderValue as TryFrom<V>>::Error: Into<http::Error>,
    {
        self.map(|builder| builder.header(key, value))
    }

    /// Adds every header of `headers`; see [`header`](Self::header).
    pub fn headers(self, headers: HeaderMap) -> Self {
        self.map(|builder| builder.headers(headers))
    }

    /// Appends `query` (anything serde serializes as key–value pairs:
    /// `&[("page", "2")]`, a struct, a map) to the URL's query string.
    pub fn query<T: Serialize + ?Sized>(self, query: &T) -> Self {
        self.map(|builder| builder.query(query))
    }

    /// Sends `json` serialized as the body, with `content-type: application/json`.
    /// A value that cannot be serialized makes `send` return an error.
    pub fn json<T: Serialize + ?Sized>(self, json: &T) -> Self {
        self.map(|builder| builder.json(json))
    }

    /// Sends `form` URL-encoded as the body, with
    /// `content-type: application/x-www-form-urlencoded`.
    pub fn form<T: Serialize + ?Sized>(self, form: &T) -> Self {
        self.map(|builder| builder.form(form))
    }

    /// Sets the body: a `String`, `Vec<u8>`, `&'static str`, `bytes::Bytes`... (any
    /// `Into<reqwest::Body>`). A streamed body cannot be sent again, so a request with
    /// one is neither retried nor re-sent after a 401.
    pub fn body(self, body: impl Into<reqwest::Body>) -> Self {
        self.map(|builder| builder.body(body))
    }

    /// The limit for this request, from sending it to the end of its body, instead
    /// of the client's ([`ClientBuilder::timeout`]); past it, `send` (or reading the
    /// body) fails with an error whose [`Error::is_timeout`] is true.
    pub fn timeout(self, timeout: Duration) -> Self {
        self.map(|builder| builder.timeout(timeout))
    }

    /// Sends the request: with the token if it goes to the service's origin, following
    /// redirects (the token never leaves that origin), retrying once with a fresh token
    /// after a 401 and with backoff after 429/503 or a failed connection (see
    /// [`RetryPolicy`]); a refusal is explained on stderr and in the response's
    /// [`crate::Diagnosis`].
    // Not an `async fn`: the future is `send::send`'s own, one level less to create and
    // copy for every request.
    pub fn send(self) -> impl Future<Output = Result<reqwest::Response, Error>> + Send {
        let RequestBuilder {
            client,
            method,
            url,
            builder,
        } = self;
        let request = crate::send::build(&method, url, builder);
        crate::send::send(client.inner, method, request)
    }

    /// Sends the request once, as it was built, and says what the answer means: no
    /// retry, no redirect followed, no new token forced after a 401, nothing printed.
    /// The token goes with it as with [`send`](Self::send), to the service's origin
    /// only. For checking a setup (what `cloudrun-test doctor` does), or asserting why
    /// the service refuses a request:
    ///
    /// ```no_run
    /// # async fn f(client: cloudrun_test::Client) {
    /// use cloudrun_test::{Probe, diagnose::Cause};
    ///
    /// match client.without_auth().get("/").probe().await.unwrap() {
    ///     Probe::Answered { verdict, .. } => assert_eq!(verdict.cause, Cause::NoToken),
    ///     Probe::Unanswered { cause, .. } => panic!("no answer: {cause:?}"),
    /// }
    /// # }
    /// ```
    ///
    /// An error means the request was not sent: it could not be built, or no token
    /// could be had.
    pub async fn probe(self) -> Result<Probe, Error> {
        let request = crate::send::build(&self.method, self.url, self.builder);
        crate::probe::probe(self.client.inner, request).await
    }
}

/// The limit for each request of a client built without [`ClientBuilder::timeout`]
/// or [`ClientBuilder::no_timeout`].
const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(300);

/// Builds a [`Client`] from the same settings the attribute takes.
#[derive(Debug, Default)]
pub struct ClientBuilder {
    query: ServiceQuery,
    credentials: Option<Credentials>,
    /// `None`: [`DEFAULT_REQUEST_TIMEOUT`]; `Some(None)`: no limit per request.
    timeout: Option<Option<Duration>>,
    impersonate: Option<String>,
    /// Whether the client sends no token ([`ClientBuilder::without_auth`]).
    without_auth: bool,
    retry: Option<RetryPolicy>,
    token_header: Option<TokenHeader>,
    ready: Option<(String, Duration)>,
    /// `None`: [`Settings::from_env`].
    settings: Option<Settings>,
}

impl ClientBuilder {
    /// The Cloud Run service to look up by name.
    pub fn service(mut self, name: impl Into<String>) -> Self {
        self.query.service = Some(name.into());
        self
    }

    /// The service URL, skipping any lookup.
    pub fn url(mut self, url: impl Into<String>) -> Self {
        self.query.url = Some(url.into());
        self
    }

    /// The token audience (default: the URL's origin).
    pub fn audience(mut self, audience: impl Into<String>) -> Self {
        self.query.audience = Some(audience.into());
        self
    }

    /// Test the revision behind this traffic tag.
    pub fn tag(mut self, tag: impl Into<String>) -> Self {
        self.query.tag = Some(tag.into());
        self
    }

    /// The Google Cloud project to look the service up in (default:
    /// `CLOUDRUN_TEST_PROJECT` or `GOOGLE_CLOUD_PROJECT`, `cloudrun-test.toml`, then
    /// gcloud's `core/project`).
    pub fn project(mut self, project: impl Into<String>) -> Self {
        self.query.project = Some(project.into());
        self
    }

    /// The Cloud Run region of the service, e.g. `europe-west1` (default:
    /// `CLOUDRUN_TEST_REGION`, `cloudrun-test.toml`, then gcloud's `run/region`).
    pub fn region(mut self, region: impl Into<String>) -> Self {
        self.query.region = Some(region.into());
        self
    }

    /// Base URL of the Cloud Run Admin API (default `https://run.googleapis.com`).
    pub fn run_endpoint(mut self, url: impl Into<String>) -> Self {
        self.query.run_endpoint = Some(url.into());
        self
    }

    /// Where to start looking for `cloudrun-test.toml` (default: `CARGO_MANIFEST_DIR`,
    /// else the current folder); the nearest one in it or a folder above is used.
    pub fn config_dir(mut self, dir: impl Into<std::path::PathBuf>) -> Self {
        self.query.config_dir = Some(dir.into());
        self
    }

    /// Settings to use instead of the environment's ([`Settings::from_env`]): the
    /// project, region, service URLs... that `CLOUDRUN_TEST_*` variables would give.
    /// The builder's own arguments still win over them.
    pub fn settings(mut self, settings: Settings) -> Self {
        self.settings = Some(settings);
        self
    }

    /// Credentials to use instead of those from the environment.
    pub fn credentials(mut self, credentials: Credentials) -> Self {
        self.credentials = Some(credentials);
        self
    }

    /// A client that sends no token and so needs no credentials (but for a lookup of
    /// the service by name), as [`Client::without_auth`] makes from a built one: to
    /// see what the service says to a caller without a token.
    pub fn without_auth(mut self) -> Self {
        self.without_auth = true;
        self
    }

    /// Call the service as service account `email`: tokens are minted through IAM
    /// Credentials `generateIdToken` with the credentials as the caller (they need
    /// `roles/iam.serviceAccountOpenIdTokenCreator` on `email`). The Admin API lookup
    /// still uses the credentials themselves. See [`Credentials::impersonate`].
    pub fn impersonate(mut self, email: impl Into<String>) -> Self {
        self.impersonate = Some(email.into());
        self
    }

    /// The limit for each request to the service, from sending it to the end of its
    /// body (default 5 minutes).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(Some(timeout));
        self
    }

    /// No limit of the client's own for each request, for a caller that bounds the
    /// whole exchange itself. `#[cloudrun_test]` builds its client so: the test's own
    /// limit covers every request, and a timer per request costs 1–2 % of a request
    /// on loopback (BENCHMARKS.md). A limit per request can still be set with
    /// [`RequestBuilder::timeout`].
    pub fn no_timeout(mut self) -> Self {
        self.timeout = Some(None);
        self
    }

    /// When to retry requests to the service (default [`RetryPolicy::default`]:
    /// idempotent methods, after 429/503 or a failed connection, up to 3 times).
    pub fn retry(mut self, policy: RetryPolicy) -> Self {
        self.retry = Some(policy);
        self
    }

    /// The header that carries the token (default `Authorization`; also set by
    /// `CLOUDRUN_TEST_TOKEN_HEADER=x-serverless-authorization`).
    pub fn token_header(mut self, header: TokenHeader) -> Self {
        self.token_header = Some(header);
        self
    }

    /// Before `build` returns, wait until `path` answers something else than 429, 502,
    /// 503 or 504 or a failed connection, for at most `limit`: a service that is
    /// deploying or scaling from zero is ready before the first test request.
    pub fn wait_until_ready(mut self, path: impl Into<String>, limit: Duration) -> Self {
        self.ready = Some((path.into(), limit));
        self
    }

    /// Resolves the service and fetches a first token, so that setup problems surface
    /// here with their fix rather than at the first request.
    ///
    /// The error's [`kind`](Error::kind) says which: [`ErrorKind::Setting`] (an invalid
    /// or missing setting, e.g. no project for a lookup by name),
    /// [`ErrorKind::NoCredentials`] or [`ErrorKind::CredentialsFile`],
    /// [`ErrorKind::ServiceNotFound`] or [`ErrorKind::AdminApi`] (the lookup),
    /// [`ErrorKind::TokenEndpoint`] (the first token), or [`ErrorKind::NotReady`] (after
    /// [`wait_until_ready`](Self::wait_until_ready)).
    pub async fn build(self) -> Result<Client, Error> {
        let settings = match self.settings {
            Some(settings) => settings,
            None => Settings::from_env()?,
        };
        let credentials = match self.credentials {
            Some(credentials) => Ok(credentials),
            None => Credentials::from_env(),
        };
        let target = resolve::resolve(&self.query, &settings, &credentials).await?;
        let credentials = match credentials {
            _ if self.without_auth => None,
            Ok(credentials) => Some(credentials),
            // A service on this machine (e.g. run by hand) may need no token at all.
            Err(error) if error.kind() == ErrorKind::NoCredentials && is_local(&target.url) => None,
            Err(error) => return Err(error),
        };
        if credentials.is_some() {
            // Before any token is minted: the service gets one over https or on this
            // machine only.
            crate::transport::check_destination(&target.url, "the service")?;
        }
        let credentials = match (&self.impersonate, credentials) {
            (Some(email), Some(credentials)) => Some(credentials.impersonate(email)),
            (Some(_), None) if self.without_auth => None,
            (Some(email), None) => {
                return Err(Error::setting(
                    format!(
                        "impersonating {email} needs credentials to impersonate it with, and none were found"
                    ),
                    "set GOOGLE_APPLICATION_CREDENTIALS (or see `cloudrun-test doctor`)",
                ));
            }
            (None, credentials) => credentials,
        };
        let first_token = match &credentials {
            Some(credentials) => Some(credentials.id_token(&target.audience).await?.0),
            None => None,
        };
        let token_header = self
            .token_header
            .or(settings.token_header)
            .unwrap_or_default();
        // Proxies by `transport`'s rules only (HTTPS_PROXY through CONNECT, never for
        // loopback), not reqwest's own, which would also send plain http through
        // HTTP_PROXY or ALL_PROXY, token and all.
        let mut http = crate::transport::http_client_builder()?
            .connect_timeout(Duration::from_secs(10))
            // Redirects are followed by `send`, which keeps the token on the service's origin.
            .redirect(reqwest::redirect::Policy::none());
        if let Some(limit) = self.timeout.unwrap_or(Some(DEFAULT_REQUEST_TIMEOUT)) {
            http = http.timeout(limit);
        }
        let http = http.build().map_err(|error| {
            Error::internal(format!("building the HTTP client failed: {error}"))
        })?;
        let auth = Auth::new(
            credentials,
            target.url.clone(),
            target.audience.clone(),
            token_header,
            first_token,
        );
        let client = Client {
            inner: Arc::new(Sender {
                http,
                target,
                auth,
                retry: self.retry.unwrap_or_default(),
            }),
        };
        if let Some((path, limit)) = &self.ready {
            client.wait_until_ready(path, *limit).await?;
        }
        Ok(client)
    }
}

/// Whether the service runs on this machine (and so may need no token).
fn is_local(url: &Url) -> bool {
    crate::transport::is_loopback(url)
}
