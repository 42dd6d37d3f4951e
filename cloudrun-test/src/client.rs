//! The authenticated client a test receives.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use reqwest::header::{AUTHORIZATION, HeaderMap, HeaderName, HeaderValue};
use reqwest::{Method, StatusCode, Url};
use serde::Serialize;

use crate::credentials::Credentials;
use crate::error::{Error, describe_http_error};
use crate::resolve::{self, ServiceQuery, Target};
use crate::token::{IdToken, Token};

/// An HTTP client for one Cloud Run service. Paths are relative to the service URL,
/// and the identity token is attached only to requests for the service's own origin.
///
/// Cheap to clone. Build one per tokio runtime: like `reqwest::Client`, its
/// connections belong to the runtime that opened them. (Tokens are shared across
/// runtimes through the process-wide cache, so that costs no extra mint.)
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

struct Inner {
    http: reqwest::Client,
    target: Target,
    /// `None` when the service needs no token (a local URL and no credentials).
    credentials: Option<Credentials>,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("url", &self.inner.target.url.as_str())
            .field("audience", &self.inner.target.audience)
            .field("credentials", &self.inner.credentials)
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
            .credentials
            .as_ref()
            .and_then(Credentials::identity)
    }

    /// The current identity token for the service, from the process-wide cache.
    pub async fn id_token(&self) -> Result<IdToken, Error> {
        match &self.inner.credentials {
            Some(credentials) => credentials.id_token(self.audience()).await,
            None => Err(Error::Setting {
                problem: format!(
                    "the client for {} has no credentials (a local URL needs none)",
                    self.url()
                ),
                fix: "set GOOGLE_APPLICATION_CREDENTIALS or CLOUDRUN_TEST_ID_TOKEN to send tokens to local services too"
                    .into(),
            }),
        }
    }

    /// The same service, without a token: to assert that it really is private.
    pub fn without_auth(&self) -> Client {
        Client {
            inner: Arc::new(Inner {
                http: self.inner.http.clone(),
                target: self.inner.target.clone(),
                credentials: None,
            }),
        }
    }

    pub fn get(&self, path: &str) -> RequestBuilder {
        self.request(Method::GET, path)
    }

    pub fn post(&self, path: &str) -> RequestBuilder {
        self.request(Method::POST, path)
    }

    pub fn put(&self, path: &str) -> RequestBuilder {
        self.request(Method::PUT, path)
    }

    pub fn patch(&self, path: &str) -> RequestBuilder {
        self.request(Method::PATCH, path)
    }

    pub fn delete(&self, path: &str) -> RequestBuilder {
        self.request(Method::DELETE, path)
    }

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
        let base = &self.inner.target.url;
        let joined = match Url::parse(path) {
            Ok(absolute) => Ok(absolute),
            Err(url::ParseError::RelativeUrlWithoutBase) => base.join(path),
            Err(error) => Err(error),
        };
        joined.map_err(|error| Error::Request {
            method: "-".into(),
            url: path.into(),
            problem: format!("{path:?} is neither a path nor a URL ({error})"),
        })
    }

    /// Whether `url` is the service's origin, the only one that may see its token.
    fn sends_token_to(&self, url: &Url) -> bool {
        // `Url::origin` without its allocations: same scheme, host and port.
        let base = &self.inner.target.url;
        self.inner.credentials.is_some()
            && matches!(url.scheme(), "http" | "https")
            && url.scheme() == base.scheme()
            && url.host() == base.host()
            && url.port_or_known_default() == base.port_or_known_default()
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

    pub fn header<K, V>(self, key: K, value: V) -> Self
    where
        HeaderName: TryFrom<K>,
        <HeaderName as TryFrom<K>>::Error: Into<http::Error>,
        HeaderValue: TryFrom<V>,
        <HeaderValue as TryFrom<V>>::Error: Into<http::Error>,
    {
        self.map(|builder| builder.header(key, value))
    }

    pub fn headers(self, headers: HeaderMap) -> Self {
        self.map(|builder| builder.headers(headers))
    }

    pub fn query<T: Serialize + ?Sized>(self, query: &T) -> Self {
        self.map(|builder| builder.query(query))
    }

    pub fn json<T: Serialize + ?Sized>(self, json: &T) -> Self {
        self.map(|builder| builder.json(json))
    }

    pub fn form<T: Serialize + ?Sized>(self, form: &T) -> Self {
        self.map(|builder| builder.form(form))
    }

    pub fn body(self, body: impl Into<reqwest::Body>) -> Self {
        self.map(|builder| builder.body(body))
    }

    pub fn timeout(self, timeout: Duration) -> Self {
        self.map(|builder| builder.timeout(timeout))
    }

    pub async fn send(self) -> Result<reqwest::Response, Error> {
        let RequestBuilder {
            client,
            method,
            url,
            builder,
        } = self;
        let url = url?;
        let builder = builder?;
        let request_error = |error: reqwest::Error| Error::Request {
            method: method.to_string(),
            url: url.to_string(),
            problem: describe_http_error(&error),
        };
        let Some(credentials) = client
            .inner
            .credentials
            .as_ref()
            .filter(|_| client.sends_token_to(&url))
        else {
            return builder.send().await.map_err(request_error);
        };

        let audience = client.audience();
        let token = credentials.id_token(audience).await?.0;
        let retry = builder.try_clone();
        let mut response = with_token(builder, &token)
            .send()
            .await
            .map_err(request_error)?;
        let mut sent = token;
        if response.status() == StatusCode::UNAUTHORIZED
            && let Some(retry) = retry
        {
            // The token may have been revoked or the signing keys rotated: mint once more.
            credentials.forget_id_token(audience, &sent);
            let fresh = credentials.id_token(audience).await?.0;
            if !fresh.same_secret(&sent) {
                tracing::debug!(%url, "401 from the service; retrying once with a new token");
                response = with_token(retry, &fresh)
                    .send()
                    .await
                    .map_err(request_error)?;
                sent = fresh;
            }
        }
        if matches!(
            response.status(),
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN
        ) {
            // Captured by the test harness and shown when the test fails.
            eprintln!(
                "{}",
                explain_rejection(
                    &client,
                    credentials,
                    &sent,
                    &method,
                    &url,
                    response.status()
                )
            );
        }
        Ok(response)
    }
}

fn with_token(builder: reqwest::RequestBuilder, token: &Token) -> reqwest::RequestBuilder {
    builder.header(AUTHORIZATION, token.authorization())
}

/// What a 401 or 403 from Cloud Run most likely means, and the command that fixes it.
/// Reads the token's claims, never prints the token.
fn explain_rejection(
    client: &Client,
    credentials: &Credentials,
    token: &Token,
    method: &Method,
    url: &Url,
    status: StatusCode,
) -> String {
    let claims = token.claims();
    let identity = claims
        .email
        .clone()
        .or_else(|| credentials.identity())
        .unwrap_or_else(|| "the caller".into());
    let target = &client.inner.target;
    let service = target.service.clone().unwrap_or_else(|| "SERVICE".into());
    let mut message = format!("cloudrun-test: {method} {url} answered {status} for {identity}");
    if status == StatusCode::FORBIDDEN {
        let member = if identity.ends_with(".gserviceaccount.com") {
            format!("serviceAccount:{identity}")
        } else {
            format!("user:{identity}")
        };
        let region = target.region.as_deref().unwrap_or("REGION");
        let project = target
            .project
            .as_deref()
            .map(|project| format!(" --project {project}"))
            .unwrap_or_default();
        message.push_str(&format!(
            ".\n  If Cloud Run sent it (not your app), {identity} lacks roles/run.invoker on the service.\n  \
             fix: gcloud run services add-iam-policy-binding {service} --region {region}{project} \
             --member={member} --role=roles/run.invoker"
        ));
    } else {
        let audience = claims.aud.as_deref().unwrap_or("(none)");
        let expired = claims
            .exp
            .map(|exp| SystemTime::UNIX_EPOCH + Duration::from_secs(exp) <= SystemTime::now())
            .unwrap_or(false);
        let reason = if expired {
            "the token had expired".to_string()
        } else if audience != target.audience {
            format!(
                "the token's audience is {audience}, but requests go to {}",
                resolve::origin(url)
            )
        } else {
            format!(
                "the token (audience {audience}) was refused: is it an identity token signed by Google, \
                 and is {} an audience the service accepts?",
                target.audience
            )
        };
        message.push_str(&format!(
            ".\n  Cloud Run rejects bad, expired or wrong-audience tokens with 401: {reason}.\n  \
             fix: set `audience = \"...\"` to the service URL or one of its custom audiences"
        ));
    }
    message
}

/// Builds a [`Client`] from the same settings the attribute takes.
#[derive(Debug, Default)]
pub struct ClientBuilder {
    query: ServiceQuery,
    credentials: Option<Credentials>,
    timeout: Option<Duration>,
    impersonate: Option<String>,
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

    pub fn project(mut self, project: impl Into<String>) -> Self {
        self.query.project = Some(project.into());
        self
    }

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

    /// Credentials to use instead of those from the environment.
    pub fn credentials(mut self, credentials: Credentials) -> Self {
        self.credentials = Some(credentials);
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

    /// The limit for each request to the service (default 5 minutes).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Resolves the service and fetches a first token, so that setup problems surface
    /// here with their fix rather than at the first request.
    pub async fn build(self) -> Result<Client, Error> {
        let credentials = match self.credentials {
            Some(credentials) => Ok(credentials),
            None => Credentials::from_env(),
        };
        let target = resolve::resolve(&self.query, &credentials).await?;
        let credentials = match credentials {
            Ok(credentials) => Some(credentials),
            // A service on this machine (e.g. run by hand) may need no token at all.
            Err(Error::NoCredentials { .. }) if is_local(&target.url) => None,
            Err(error) => return Err(error),
        };
        let credentials = match (&self.impersonate, credentials) {
            (Some(email), Some(credentials)) => Some(credentials.impersonate(email)),
            (Some(email), None) => {
                return Err(Error::Setting {
                    problem: format!(
                        "impersonating {email} needs credentials to impersonate it with, and none were found"
                    ),
                    fix: "set GOOGLE_APPLICATION_CREDENTIALS (or see `cloudrun-test doctor`)"
                        .into(),
                });
            }
            (None, credentials) => credentials,
        };
        if let Some(credentials) = &credentials {
            credentials.id_token(&target.audience).await?;
        }
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .timeout(self.timeout.unwrap_or(Duration::from_secs(300)))
            .build()
            .map_err(|error| {
                Error::Internal(format!("building the HTTP client failed: {error}"))
            })?;
        Ok(Client {
            inner: Arc::new(Inner {
                http,
                target,
                credentials,
            }),
        })
    }
}

fn is_local(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(domain)) => domain == "localhost",
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}
