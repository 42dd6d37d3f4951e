//! Sending one request to the service: what `RequestBuilder::send` does.
//!
//! - The token goes only to the service's origin (scheme, host and port), in
//!   `Authorization` or, if chosen, `X-Serverless-Authorization`. Redirects are
//!   followed here, not by reqwest: reqwest drops `Authorization` on a cross-host
//!   redirect but would carry a custom header such as `X-Serverless-Authorization`
//!   anywhere. Here every hop gets the token only if it is the service's origin, and
//!   a hop to another origin loses every credential header, the app's own included.
//! - A 401 from the service makes one fresh mint and one retry (keys may have rotated).
//!   When the fresh token is refused too (a wrong audience, most often), no new token
//!   is forced again for these credentials and this audience for a minute
//!   ([`crate::remint`]): the requests in between get their 401 at once, explained.
//! - 429/503 answers and failed or reset connections are retried as the client's
//!   [`RetryPolicy`] says (idempotent methods, bounded exponential backoff, jitter).
//! - A final 401/403, 429/503 or failed connection is explained with its fix.

use std::time::{Duration, Instant};

use reqwest::header::{
    AUTHORIZATION, CONTENT_ENCODING, CONTENT_LENGTH, CONTENT_TYPE, COOKIE, HeaderName, LOCATION,
    PROXY_AUTHORIZATION, TRANSFER_ENCODING, WWW_AUTHENTICATE,
};
use reqwest::{Method, Request, Response, StatusCode, Url};

use crate::client::Client;
use crate::diagnose::{self, Diagnosis, Refusal, Reminted};
use crate::error::Error;
use crate::remint;
use crate::retry::{self, RetryPolicy};
use crate::token::Token;

/// reqwest's default limit, kept.
const MAX_REDIRECTS: usize = 10;

const X_SERVERLESS_AUTHORIZATION: HeaderName =
    HeaderName::from_static("x-serverless-authorization");

/// Which header carries the identity token to the service.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum TokenHeader {
    /// `Authorization: Bearer <token>` (the default).
    #[default]
    Authorization,
    /// `X-Serverless-Authorization: Bearer <token>`: Cloud Run checks it first and
    /// leaves `Authorization` to the application (e.g. for its own user tokens).
    XServerlessAuthorization,
}

impl TokenHeader {
    fn name(self) -> HeaderName {
        match self {
            TokenHeader::Authorization => AUTHORIZATION,
            TokenHeader::XServerlessAuthorization => X_SERVERLESS_AUTHORIZATION,
        }
    }

    /// `CLOUDRUN_TEST_TOKEN_HEADER`: `authorization` or `x-serverless-authorization`.
    pub(crate) fn from_env() -> Result<Option<TokenHeader>, Error> {
        crate::settings::env("CLOUDRUN_TEST_TOKEN_HEADER")
            .map(|value| TokenHeader::parse_setting(&value))
            .transpose()
    }

    fn parse_setting(value: &str) -> Result<TokenHeader, Error> {
        match value.trim().to_ascii_lowercase().as_str() {
            "authorization" => Ok(TokenHeader::Authorization),
            "x-serverless-authorization" => Ok(TokenHeader::XServerlessAuthorization),
            other => Err(Error::setting(
                format!("CLOUDRUN_TEST_TOKEN_HEADER is {other:?}, which is no token header"),
                "set it to `authorization` (the default) or `x-serverless-authorization`",
            )),
        }
    }
}

/// Headers that carry credentials: they never follow a redirect to another origin.
const CREDENTIAL_HEADERS: [HeaderName; 5] = [
    AUTHORIZATION,
    X_SERVERLESS_AUTHORIZATION,
    COOKIE,
    PROXY_AUTHORIZATION,
    WWW_AUTHENTICATE,
];

/// Same scheme, host and port: `Url::origin` without its allocations.
pub(crate) fn same_origin(a: &Url, b: &Url) -> bool {
    a.scheme() == b.scheme()
        && a.host() == b.host()
        && a.port_or_known_default() == b.port_or_known_default()
}

/// The last hop of a request: its outcome, its URL and the token it carried.
struct Hop {
    outcome: Result<Response, reqwest::Error>,
    url: Url,
    token: Option<Token>,
}

/// The request a `RequestBuilder` describes, and its URL.
pub(crate) fn build(
    method: &Method,
    url: Result<Url, Error>,
    builder: Result<reqwest::RequestBuilder, Error>,
) -> Result<(Request, Url), Error> {
    let (url, builder) = (url?, builder?);
    let request = builder.build().map_err(|error| {
        Error::request(
            method.to_string(),
            url.to_string(),
            format!(
                "the request could not be built: {}",
                crate::error::describe_http_error(&error)
            ),
        )
    })?;
    Ok((request, url))
}

/// Sends the request a `RequestBuilder` built: the first hop inline, then whatever
/// redirects and retries it needs (see the module documentation).
///
/// The first hop starts here, before the future is first polled, when it needs no
/// token or the client holds a fresh one (the usual case): the future then keeps
/// reqwest's request under way (boxed by reqwest) rather than the request itself, and
/// is small to create and move, which happens for every request.
pub(crate) fn send(
    client: Client,
    method: Method,
    request: Result<(Request, Url), Error>,
) -> impl Future<Output = Result<Response, Error>> + Send {
    let (mut attempts, mut first) = match request {
        Ok((request, url)) => {
            let attempts = Attempts::new(client, method, copy_request(&request), true);
            let first = match start(&attempts.client, request, url) {
                Ok(started) => First::Started(started),
                Err(unstarted) => First::Unstarted(unstarted),
            };
            (attempts, first)
        }
        Err(error) => (
            Attempts::new(client, method, None, true),
            First::Failed(error),
        ),
    };
    async move {
        let hop = match first {
            // The usual way, kept small: polled in place, nothing else held.
            First::Started(ref mut started) => match (&mut started.response).await {
                Ok(response) if response.status().is_success() => return Ok(response),
                outcome => Hop {
                    outcome,
                    url: started.url.clone(),
                    token: started.token.clone(),
                },
            },
            First::Unstarted(unstarted) => {
                let Unstarted { request, url } = *unstarted;
                Box::pin(send_hop(&attempts.client, request, url)).await?
            }
            First::Failed(error) => return Err(error),
        };
        // Out of line (boxed): redirects, retries and explanations need far more state
        // than the usual single hop.
        Box::pin(attempts.after(hop)).await
    }
}

/// How the first hop of [`send`] stands when its future is created.
enum First<F> {
    Started(Started<F>),
    Unstarted(Box<Unstarted>),
    Failed(Error),
}

/// A hop whose request is under way, and what it carried.
struct Started<F> {
    response: F,
    url: Url,
    token: Option<Token>,
}

impl<F: Future<Output = Result<Response, reqwest::Error>> + Unpin> Started<F> {
    async fn finish(mut self) -> Hop {
        Hop {
            outcome: (&mut self.response).await,
            url: self.url,
            token: self.token,
        }
    }
}

/// A request that waits for a token to be minted before it can start.
struct Unstarted {
    request: Request,
    url: Url,
}

/// Starts a hop now if it needs no token or the client holds a fresh one; else hands
/// the request back for [`send_hop`], which mints first.
fn start(
    client: &Client,
    request: Request,
    url: Url,
) -> Result<
    Started<impl Future<Output = Result<Response, reqwest::Error>> + Send + Unpin + use<>>,
    Box<Unstarted>,
> {
    // reqwest needs a runtime to start a request (its timer); a future made outside one
    // starts when first polled, inside one.
    if tokio::runtime::Handle::try_current().is_err() {
        return Err(Box::new(Unstarted { request, url }));
    }
    let token = if client.sends_token_to(&url) {
        match client.fresh_token() {
            Some(token) => Some(token),
            None => return Err(Box::new(Unstarted { request, url })),
        }
    } else {
        None
    };
    Ok(dispatch(client, request, url, token))
}

/// Puts `token`, if any, on the request and hands it to reqwest.
fn dispatch(
    client: &Client,
    mut request: Request,
    url: Url,
    token: Option<Token>,
) -> Started<impl Future<Output = Result<Response, reqwest::Error>> + Send + Unpin + use<>> {
    if let Some(token) = &token {
        request
            .headers_mut()
            .insert(client.token_header().name(), token.authorization());
    }
    Started {
        response: client.http().execute(request),
        url,
        token,
    }
}

/// A copy of `request`, or `None` if its body is a stream (which cannot be sent twice).
///
/// `Request::try_clone` builds a map for the request's timeout even when it has none
/// (reqwest 0.13), which costs about as much as the rest of the copy: a request without
/// a body is copied here by hand. The timeout is the only extension a
/// `reqwest::RequestBuilder` sets (0.13); the unit test below checks what is copied.
fn copy_request(request: &Request) -> Option<Request> {
    if request.body().is_some() {
        return request.try_clone();
    }
    let mut copy = Request::new(request.method().clone(), request.url().clone());
    *copy.headers_mut() = request.headers().clone();
    *copy.version_mut() = request.version();
    if let Some(timeout) = request.timeout() {
        *copy.timeout_mut() = Some(*timeout);
    }
    Some(copy)
}

/// One hop: the token if `url` is the service's origin (minted if need be), and the
/// request.
async fn send_hop(client: &Client, request: Request, url: Url) -> Result<Hop, Error> {
    let token = match client.credentials() {
        Some(credentials) if client.sends_token_to(&url) => Some(client.token(credentials).await?),
        _ => None,
    };
    Ok(dispatch(client, request, url, token).finish().await)
}

/// What to do after a hop.
enum Next {
    Done,
    /// Follow a redirect with this request (to this URL).
    Follow(Request, Url),
    /// Start again with this copy of the first request, after minting a new token.
    Renew(Request),
    /// Start again with this copy of the first request, after a pause.
    Retry(Request, Duration),
}

/// One request's way through redirects and retries.
struct Attempts {
    client: Client,
    method: Method,
    /// A copy of the request as built, without a token: redirects are built from it,
    /// and a retry starts again from it. `None` for a streaming body, which cannot be
    /// sent twice: then there is neither.
    first: Option<Box<Request>>,
    redirects: usize,
    /// Whether 401s, 429/503 answers and failed connections are retried (else only
    /// redirects are followed).
    retry: bool,
    retries: u32,
    reminted: Reminted,
    /// When the first retry was decided: no clock is read for a request that needs none.
    retrying_since: Option<Instant>,
}

impl Attempts {
    /// `first` is the copy of the first request ([`copy_request`]).
    fn new(client: Client, method: Method, first: Option<Request>, retry: bool) -> Attempts {
        Attempts {
            client,
            method,
            first: first.map(Box::new),
            redirects: 0,
            retry,
            retries: 0,
            reminted: Reminted::No,
            retrying_since: None,
        }
    }

    /// Everything after a first hop that did not simply answer 2xx.
    async fn after(&mut self, hop: Hop) -> Result<Response, Error> {
        let hop = self.go_on(hop).await?;
        self.finish(hop)
    }

    /// After `hop`; `unsent_hop` is the copy of its request made before its token went
    /// in, if it followed a redirect (else the first request is the template).
    fn next_step(&mut self, hop: &Hop, unsent_hop: Option<&Request>) -> Next {
        if let Some((request, url)) = self.redirect(hop, unsent_hop) {
            return Next::Follow(request, url);
        }
        if !self.retry || self.first.is_none() {
            return Next::Done;
        }
        // Made only when needed: the usual request is sent once.
        let again = || self.first.as_deref().and_then(copy_request);
        let policy = self.client.retry_policy();
        let retries_left = self.retries < policy.max_retries_for(&self.method);
        let unauthorized =
            matches!(&hop.outcome, Ok(response) if response.status() == StatusCode::UNAUTHORIZED);
        if let (Some(credentials), Some(sent)) = (self.client.credentials(), &hop.token) {
            let (fingerprint, audience) = (credentials.fingerprint(), self.client.audience());
            match self.reminted {
                Reminted::No if unauthorized => {
                    match remint::held_off(fingerprint, audience, sent) {
                        Some(ago) => {
                            tracing::debug!(url = %hop.url, ?ago, "401 from the service; a fresh token was refused too lately, so none is forced");
                            self.reminted = Reminted::HeldOff(ago);
                        }
                        None => {
                            let Some(request) = again() else {
                                return Next::Done;
                            };
                            remint::forcing(fingerprint, audience, sent);
                            return Next::Renew(request);
                        }
                    }
                }
                Reminted::Forced if unauthorized => remint::did_not_help(fingerprint, audience),
                Reminted::Forced if hop.outcome.is_ok() => remint::helped(fingerprint, audience),
                _ => {}
            }
        }
        match &hop.outcome {
            Ok(response) if retries_left && policy.retries_status(response.status()) => {
                self.retries += 1;
                self.retrying_since.get_or_insert_with(Instant::now);
                let delay = policy.delay(self.retries, retry::retry_after(response.headers()));
                tracing::debug!(url = %hop.url, status = %response.status(), ?delay, retries = self.retries, "retrying");
                again().map_or(Next::Done, |request| Next::Retry(request, delay))
            }
            Err(error) if retries_left && retry::is_transient(error) => {
                self.retries += 1;
                self.retrying_since.get_or_insert_with(Instant::now);
                let delay = policy.delay(self.retries, None);
                tracing::debug!(
                    url = %hop.url,
                    error = %crate::error::describe_http_error(error),
                    ?delay,
                    retries = self.retries,
                    "connection failed; retrying"
                );
                again().map_or(Next::Done, |request| Next::Retry(request, delay))
            }
            _ => Next::Done,
        }
    }

    /// The next request if `hop` answered with a redirect to follow: the token only
    /// stays on the service's origin, and no credential header leaves it.
    fn redirect(&self, hop: &Hop, unsent_hop: Option<&Request>) -> Option<(Request, Url)> {
        let response = hop.outcome.as_ref().ok()?;
        if !response.status().is_redirection() || self.redirects >= MAX_REDIRECTS {
            return None;
        }
        let location = response.headers().get(LOCATION)?.to_str().ok()?;
        let location = hop.url.join(location).ok()?;
        let template = unsent_hop.or(self.first.as_deref())?;
        let mut next = copy_request(template)?;
        match response.status() {
            StatusCode::MOVED_PERMANENTLY | StatusCode::FOUND | StatusCode::SEE_OTHER => {
                // As browsers and reqwest do: the next request is a GET without a body.
                if next.method() != Method::HEAD {
                    *next.method_mut() = Method::GET;
                }
                *next.body_mut() = None;
                for name in [
                    CONTENT_TYPE,
                    CONTENT_LENGTH,
                    CONTENT_ENCODING,
                    TRANSFER_ENCODING,
                ] {
                    next.headers_mut().remove(name);
                }
            }
            StatusCode::TEMPORARY_REDIRECT | StatusCode::PERMANENT_REDIRECT => {}
            // 300, 304, 305...: not a redirect to follow.
            _ => return None,
        }
        if !same_origin(&hop.url, &location) {
            for name in &CREDENTIAL_HEADERS {
                next.headers_mut().remove(name);
            }
        }
        tracing::debug!(from = %hop.url, to = %location, status = %response.status(), "following a redirect");
        *next.url_mut() = location.clone();
        Some((next, location))
    }

    /// From the first hop on, takes the steps `next_step` says until it says done;
    /// returns the last hop.
    async fn go_on(&mut self, mut hop: Hop) -> Result<Hop, Error> {
        let mut next = self.next_step(&hop, None);
        loop {
            let request = match next {
                Next::Done => return Ok(hop),
                Next::Follow(request, location) => {
                    self.redirects += 1;
                    let unsent = copy_request(&request);
                    hop = send_hop(&self.client, request, location).await?;
                    next = self.next_step(&hop, unsent.as_ref());
                    continue;
                }
                Next::Renew(request) => {
                    // The token may have been revoked or the signing keys rotated: mint
                    // once more, and try once more even if the text is the same (clock
                    // skew, a blip).
                    self.reminted = Reminted::Forced;
                    if let (Some(credentials), Some(sent)) = (self.client.credentials(), &hop.token)
                    {
                        self.client.renew_token(credentials, sent).await?;
                    }
                    tracing::debug!(url = %hop.url, "401 from the service; retrying once with a new token");
                    self.redirects = 0;
                    request
                }
                Next::Retry(request, delay) => {
                    tokio::time::sleep(delay).await;
                    self.redirects = 0;
                    request
                }
            };
            // Again from the start: the first hop's URL, not where a redirect led.
            let url = request.url().clone();
            hop = send_hop(&self.client, request, url).await?;
            next = self.next_step(&hop, None);
        }
    }

    /// The answer, explained when it is a refusal or the retries ran out; or the error.
    fn finish(&self, hop: Hop) -> Result<Response, Error> {
        let Hop {
            outcome,
            url,
            token,
        } = hop;
        let (client, method, retries) = (&self.client, &self.method, self.retries);
        let target = client.target();
        let mut response = match outcome {
            Ok(response) => response,
            Err(error) => {
                return Err(Error::request(
                    method.to_string(),
                    url.to_string(),
                    diagnose::explain_no_answer(target, &url, &error, retries),
                ));
            }
        };
        let status = response.status();
        let message = match &token {
            Some(token) if matches!(status, StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN) => {
                let reason = response
                    .headers()
                    .get("x-cloudrun-test-emulator-reason")
                    .and_then(|value| value.to_str().ok());
                Some(diagnose::explain_refusal(&Refusal {
                    target,
                    identity: client.identity(),
                    token,
                    reminted: self.reminted,
                    method,
                    url: &url,
                    status,
                    reason,
                }))
            }
            _ if retries > 0 && client.retry_policy().retries_status(status) => {
                Some(diagnose::explain_unavailable(
                    target,
                    method,
                    &url,
                    status,
                    retries,
                    self.retrying_since
                        .map_or(Duration::ZERO, |since| since.elapsed()),
                ))
            }
            _ => None,
        };
        if let Some(message) = message {
            // The emulator's reason and the URL come from outside: nothing secret shows.
            let message = crate::redact::redact(&message);
            // Captured by the test harness and shown when the test fails.
            eprintln!("{message}");
            response.extensions_mut().insert(Diagnosis::new(message));
        }
        Ok(response)
    }
}

/// Waits until `path` answers something else than 429, 502, 503 or 504 (or a failed
/// connection), polling with backoff, for at most `limit`.
pub(crate) async fn wait_until_ready(
    client: &Client,
    path: &str,
    limit: Duration,
) -> Result<(), Error> {
    let started = Instant::now();
    let url = client.url().join(path).map_err(|error| {
        Error::setting(
            format!("the readiness path {path:?} is not a path ({error})"),
            "give a path such as \"/\" or \"/healthz\"",
        )
    })?;
    let not_ready = [
        StatusCode::TOO_MANY_REQUESTS,
        StatusCode::BAD_GATEWAY,
        StatusCode::SERVICE_UNAVAILABLE,
        StatusCode::GATEWAY_TIMEOUT,
    ];
    let backoff =
        RetryPolicy::default().backoff(Duration::from_millis(100), Duration::from_secs(2));
    let mut attempt = 0;
    loop {
        attempt += 1;
        let left = limit.saturating_sub(started.elapsed());
        let request = client
            .http()
            .get(url.clone())
            .timeout(left.max(Duration::from_millis(1)))
            .build()
            .map_err(|error| Error::internal(error.to_string()))?;
        // Redirects followed, no retries: the polling here is the retry.
        let mut attempts =
            Attempts::new(client.clone(), Method::GET, copy_request(&request), false);
        let hop = send_hop(client, request, url.clone()).await?;
        let hop = attempts.go_on(hop).await?;
        let last = match &hop.outcome {
            Ok(response) if !not_ready.contains(&response.status()) => {
                tracing::debug!(%url, status = %response.status(), attempt, "the service is ready");
                return Ok(());
            }
            Ok(response) => format!("HTTP {}", response.status()),
            Err(error) => crate::error::describe_http_error(error),
        };
        let delay = backoff.delay(attempt, None);
        if started.elapsed() + delay >= limit {
            return Err(Error::not_ready(
                url.to_string(),
                format!("{:.1}s", started.elapsed().as_secs_f64()),
                last,
            ));
        }
        tokio::time::sleep(delay).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_token_header_setting_is_checked() {
        assert_eq!(
            TokenHeader::parse_setting(" X-Serverless-Authorization ").unwrap(),
            TokenHeader::XServerlessAuthorization
        );
        assert_eq!(
            TokenHeader::parse_setting("authorization").unwrap(),
            TokenHeader::Authorization
        );
        let message = TokenHeader::parse_setting("bearer")
            .unwrap_err()
            .to_string();
        assert!(
            message.contains("CLOUDRUN_TEST_TOKEN_HEADER is \"bearer\""),
            "{message}"
        );
        assert!(
            message.contains("fix: set it to `authorization`"),
            "{message}"
        );
    }

    #[test]
    fn a_request_copy_keeps_everything_but_a_stream() {
        let client = reqwest::Client::new();
        let request = client
            .get("http://127.0.0.1:1/path?query=1")
            .header("x-app", "kept")
            .timeout(Duration::from_secs(7))
            .version(reqwest::Version::HTTP_11)
            .build()
            .unwrap();
        let copy = copy_request(&request).unwrap();
        assert_eq!(copy.method(), Method::GET);
        assert_eq!(copy.url(), request.url());
        assert_eq!(copy.headers(), request.headers());
        assert_eq!(copy.timeout(), Some(&Duration::from_secs(7)));
        assert_eq!(copy.version(), reqwest::Version::HTTP_11);
        assert!(copy.body().is_none());

        let untimed = client.get("http://127.0.0.1:1/").build().unwrap();
        assert_eq!(copy_request(&untimed).unwrap().timeout(), None);

        let posted = client
            .post("http://127.0.0.1:1/")
            .body("payload")
            .build()
            .unwrap();
        let copy = copy_request(&posted).unwrap();
        assert_eq!(copy.method(), Method::POST);
        assert_eq!(
            copy.body().and_then(reqwest::Body::as_bytes),
            Some(&b"payload"[..])
        );

        let streamed = client
            .post("http://127.0.0.1:1/")
            .body(reqwest::Body::wrap(String::from("a stream")))
            .build()
            .unwrap();
        assert!(copy_request(&streamed).is_none());
    }

    #[test]
    fn origins_compare_scheme_host_and_port() {
        let url = |text: &str| Url::parse(text).unwrap();
        assert!(same_origin(
            &url("https://a.run.app/x"),
            &url("https://a.run.app:443/y")
        ));
        assert!(!same_origin(
            &url("https://a.run.app/"),
            &url("http://a.run.app/")
        ));
        assert!(!same_origin(
            &url("https://a.run.app/"),
            &url("https://b.run.app/")
        ));
        assert!(!same_origin(
            &url("http://127.0.0.1:1/"),
            &url("http://127.0.0.1:2/")
        ));
    }
}
