//! Sending one request to the service: what `RequestBuilder::send` does.
//!
//! - Every hop carries the token if it is for the service's origin ([`crate::auth`]);
//!   redirects are followed here, not by reqwest ([`crate::redirect`]).
//! - A 401 from the service makes one fresh mint and one retry (keys may have rotated).
//!   When the fresh token is refused too (a wrong audience, most often), no new token
//!   is forced again for these credentials and this audience for
//!   [`crate::remint::HOLD_OFF`]: the requests in between get their 401 at once, explained.
//! - 429/503 answers and failed or reset connections are retried as the client's
//!   [`RetryPolicy`] says (idempotent methods, bounded exponential backoff, jitter).
//! - A final 401/403, 429/503 or failed connection is explained with its fix
//!   ([`crate::outcome`]).

use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::{Method, Request, Response, StatusCode, Url};

use crate::auth::Auth;
use crate::credentials::Credentials;
use crate::diagnose::Reminted;
use crate::error::Error;
use crate::outcome::{self, Last};
use crate::redirect;
use crate::remint;
use crate::resolve::Target;
use crate::retry::{self, RetryPolicy};
use crate::token::Token;

/// What a client sends with, shared by its clones (a `Client` is an `Arc<Sender>`).
pub(crate) struct Sender {
    pub http: reqwest::Client,
    /// Where the service is, and the audience of its tokens.
    pub target: Target,
    pub auth: Auth,
    pub retry: RetryPolicy,
}

/// The last hop of a request: its outcome, its URL and the token it carried.
pub(crate) struct Hop {
    pub outcome: Result<Response, reqwest::Error>,
    pub url: Url,
    pub token: Option<Token>,
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
            method,
            &url,
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
    sender: Arc<Sender>,
    method: Method,
    request: Result<(Request, Url), Error>,
) -> impl Future<Output = Result<Response, Error>> + Send {
    let (mut attempts, mut first) = match request {
        Ok((request, url)) => {
            let attempts = Attempts::new(sender, method, copy_request(&request), true);
            let first = match start(&attempts.sender, request, url) {
                Ok(started) => First::Started(started),
                Err(unstarted) => First::Unstarted(unstarted),
            };
            (attempts, first)
        }
        Err(error) => (
            Attempts::new(sender, method, None, true),
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
                Box::pin(send_hop(&attempts.sender, request, url)).await?
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
    sender: &Sender,
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
    let token = if sender.auth.sends_token_to(&url) {
        match sender.auth.fresh_token() {
            Some(token) => Some(token),
            None => return Err(Box::new(Unstarted { request, url })),
        }
    } else {
        None
    };
    Ok(dispatch(sender, request, url, token))
}

/// Puts `token`, if any, on the request and hands it to reqwest.
fn dispatch(
    sender: &Sender,
    mut request: Request,
    url: Url,
    token: Option<Token>,
) -> Started<impl Future<Output = Result<Response, reqwest::Error>> + Send + Unpin + use<>> {
    if let Some(token) = &token {
        sender.auth.attach(request.headers_mut(), token);
    }
    Started {
        response: sender.http.execute(request),
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
pub(crate) async fn send_hop(sender: &Sender, request: Request, url: Url) -> Result<Hop, Error> {
    let token = sender.auth.token_for(&url).await?;
    Ok(dispatch(sender, request, url, token).finish().await)
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
    sender: Arc<Sender>,
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
    fn new(sender: Arc<Sender>, method: Method, first: Option<Request>, retry: bool) -> Attempts {
        Attempts {
            sender,
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
        let policy = &self.sender.retry;
        let retries_left = self.retries < policy.max_retries_for(&self.method);
        let unauthorized =
            matches!(&hop.outcome, Ok(response) if response.status() == StatusCode::UNAUTHORIZED);
        if let (Some(credentials), Some(sent)) = (self.sender.auth.credentials(), &hop.token) {
            let (fingerprint, audience) = (credentials.fingerprint(), self.sender.auth.audience());
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
        if self.redirects >= redirect::MAX_REDIRECTS {
            return None;
        }
        let location = redirect::location(response, &hop.url)?;
        let template = unsent_hop.or(self.first.as_deref())?;
        let mut next = copy_request(template)?;
        redirect::prepare(&mut next, response.status(), &hop.url, &location);
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
                    hop = send_hop(&self.sender, request, location).await?;
                    next = self.next_step(&hop, unsent.as_ref());
                    continue;
                }
                Next::Renew(request) => {
                    // The token may have been revoked or the signing keys rotated: mint
                    // once more, and try once more even if the text is the same (clock
                    // skew, a blip).
                    self.reminted = Reminted::Forced;
                    if let Some(sent) = &hop.token {
                        self.sender.auth.renew(sent).await?;
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
            hop = send_hop(&self.sender, request, url).await?;
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
        let retried_for = match &outcome {
            Ok(response)
                if self.retries > 0 && self.sender.retry.retries_status(response.status()) =>
            {
                Some(
                    self.retrying_since
                        .map_or(Duration::ZERO, |since| since.elapsed()),
                )
            }
            _ => None,
        };
        let last = Last {
            target: &self.sender.target,
            identity: self
                .sender
                .auth
                .credentials()
                .and_then(Credentials::identity),
            method: &self.method,
            url: &url,
            token: token.as_ref(),
            reminted: self.reminted,
            retries: self.retries,
            retried_for,
        };
        outcome::finish(outcome, &last)
    }
}

/// Sends `request` once, following redirects (with the token rules) but retrying
/// nothing and forcing no new token: the last hop.
pub(crate) async fn follow(sender: &Arc<Sender>, request: Request) -> Result<Hop, Error> {
    let mut attempts = Attempts::new(
        Arc::clone(sender),
        request.method().clone(),
        copy_request(&request),
        false,
    );
    let url = request.url().clone();
    let hop = send_hop(sender, request, url).await?;
    attempts.go_on(hop).await
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
