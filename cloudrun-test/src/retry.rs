//! Retrying what is worth retrying, with bounded exponential backoff and jitter.
//!
//! Two users: requests to the service ([`RetryPolicy`], chosen on the
//! [`crate::ClientBuilder`]): a Cloud Run service that is starting answers 429 or 503,
//! or resets the connection, for a few seconds; and Google's own endpoints, token
//! endpoints and the Admin API ([`send_repeatable`]), which fail now and then with a
//! 5xx. A request that timed out is never retried: its time is spent.

use std::time::Duration;

use reqwest::{Method, StatusCode};

/// When the client retries a request to the service: after a 429 or 503 answer, or a
/// connection that failed or was reset (as during a cold start). By default it retries
/// idempotent methods (`GET`, `HEAD`, `OPTIONS`, `TRACE`, `PUT`, `DELETE`) up to 3
/// times, waiting 250 ms, 500 ms, 1 s (each ±25% at random, at most 4 s, or what a
/// `Retry-After` header asks for up to that bound).
///
/// ```
/// use std::time::Duration;
/// use cloudrun_test::{Client, RetryPolicy};
///
/// let builder = Client::builder()
///     .url("https://hello-123456789.europe-west1.run.app")
///     .retry(RetryPolicy::default().max_retries(5).backoff(Duration::from_millis(100), Duration::from_secs(2)));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    max_retries: u32,
    initial_backoff: Duration,
    max_backoff: Duration,
    all_methods: bool,
    statuses: Vec<StatusCode>,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_retries: 3,
            initial_backoff: Duration::from_millis(250),
            max_backoff: Duration::from_secs(4),
            all_methods: false,
            statuses: vec![
                StatusCode::TOO_MANY_REQUESTS,
                StatusCode::SERVICE_UNAVAILABLE,
            ],
        }
    }
}

impl RetryPolicy {
    /// No retries at all (a 401 still gets its one retry with a fresh token).
    pub fn never() -> Self {
        RetryPolicy {
            max_retries: 0,
            ..RetryPolicy::default()
        }
    }

    /// How many times a request may be sent again (default 3).
    pub fn max_retries(mut self, retries: u32) -> Self {
        self.max_retries = retries;
        self
    }

    /// The first wait, doubled after each retry up to `max` (default 250 ms and 4 s).
    pub fn backoff(mut self, initial: Duration, max: Duration) -> Self {
        self.initial_backoff = initial;
        self.max_backoff = max.max(initial);
        self
    }

    /// Also retry `POST` and `PATCH`, which may not be safe to send twice (default off).
    pub fn retry_non_idempotent(mut self, retry: bool) -> Self {
        self.all_methods = retry;
        self
    }

    /// Also retry after `status` (e.g. 502 or 504), besides 429 and 503.
    pub fn retry_on_status(mut self, status: StatusCode) -> Self {
        if !self.statuses.contains(&status) {
            self.statuses.push(status);
        }
        self
    }

    pub(crate) fn max_retries_for(&self, method: &Method) -> u32 {
        if self.all_methods || is_idempotent(method) {
            self.max_retries
        } else {
            0
        }
    }

    pub(crate) fn retries_status(&self, status: StatusCode) -> bool {
        self.statuses.contains(&status)
    }

    /// The wait before retry number `retry` (1 for the first).
    pub(crate) fn delay(&self, retry: u32, retry_after: Option<Duration>) -> Duration {
        backoff(self.initial_backoff, self.max_backoff, retry, retry_after)
    }
}

/// `initial * 2^(retry-1)`, at most `max`, ±25% at random; or `retry_after` if the
/// server asked for it, also at most `max`.
fn backoff(
    initial: Duration,
    max: Duration,
    retry: u32,
    retry_after: Option<Duration>,
) -> Duration {
    if let Some(asked) = retry_after {
        return asked.min(max);
    }
    let exponential = initial.saturating_mul(1 << retry.saturating_sub(1).min(16));
    let base = exponential.min(max);
    // Jitter: spread retries of tests that failed together, so they do not return together.
    let quarter = base / 4;
    let spread = quarter.as_nanos() as u64 * 2;
    let offset = if spread == 0 {
        0
    } else {
        random_u64() % spread
    };
    (base - quarter + Duration::from_nanos(offset)).min(max)
}

fn random_u64() -> u64 {
    let mut bytes = [0u8; 8];
    if aws_lc_rs::rand::fill(&mut bytes).is_err() {
        // No randomness: no jitter, still a correct backoff.
        return 0;
    }
    u64::from_le_bytes(bytes)
}

/// Methods that RFC 9110 §9.2.2 calls idempotent: sending them twice is safe.
pub(crate) fn is_idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE
    )
}

/// Whether a failed request is worth sending again: its connection was refused, reset
/// or closed early, as when an instance is starting or going away
/// ([`crate::error::is_connection_failure`], which [`crate::Error::is_transient`] also
/// asks). Timeouts are not: their time is spent.
pub(crate) fn is_transient(error: &reqwest::Error) -> bool {
    !error.is_timeout()
        && std::iter::successors(
            Some(error as &(dyn std::error::Error + 'static)),
            |&cause| cause.source(),
        )
        .any(crate::error::is_connection_failure)
}

/// Whether `error` is a failure to resolve the host name.
pub(crate) fn is_dns_failure(error: &reqwest::Error) -> bool {
    crate::dns::is_unresolved(error)
}

/// The `Retry-After` header in seconds (the HTTP-date form is not worth parsing here).
pub(crate) fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    headers
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
        .map(Duration::from_secs)
}

/// Google's endpoints get this many retries after a 5xx, a 429 or a failed connection.
const REPEAT_RETRIES: u32 = 2;
/// How many times in all [`send_repeatable`] sends a request that keeps failing: the
/// first try and its retries. Messages quote it rather than spell a number out.
pub(crate) const REPEAT_TRIES: u32 = REPEAT_RETRIES + 1;
const REPEAT_BACKOFF: Duration = Duration::from_millis(100);
const REPEAT_MAX_BACKOFF: Duration = Duration::from_secs(1);

/// Whether [`send_repeatable`] tries again after an answer with `status`: a transient
/// one ([`crate::error::is_transient_status`], a 5xx or a 429); a final answer with it
/// came after the retries ran out.
pub(crate) fn is_worth_repeating(status: StatusCode) -> bool {
    crate::error::is_transient_status(status)
}

/// Sends a request that is safe to repeat to one of Google's endpoints (a token
/// request, an Admin API read), each try bounded by `timeout`, and tries again (at most
/// [`REPEAT_RETRIES`] times, after [`REPEAT_BACKOFF`], doubling up to
/// [`REPEAT_MAX_BACKOFF`]) when the endpoint answers a 5xx or 429 or the connection
/// fails. The last answer or failure is returned as is.
pub(crate) async fn send_repeatable(
    request: reqwest::RequestBuilder,
    timeout: Duration,
) -> Result<reqwest::Response, reqwest::Error> {
    let mut request = request;
    let mut retry = 0;
    loop {
        let spare = if retry < REPEAT_RETRIES {
            request.try_clone()
        } else {
            None
        };
        let outcome = request.timeout(timeout).send().await;
        let Some(next) = spare else {
            return outcome;
        };
        let wait = match &outcome {
            Ok(response) if is_worth_repeating(response.status()) => {
                retry_after(response.headers())
            }
            Err(error) if is_transient(error) => None,
            _ => return outcome,
        };
        retry += 1;
        let delay = backoff(REPEAT_BACKOFF, REPEAT_MAX_BACKOFF, retry, wait);
        match &outcome {
            Ok(response) => tracing::debug!(
                status = %response.status(),
                ?delay,
                retry,
                "Google endpoint failed; trying again"
            ),
            Err(error) => tracing::debug!(
                error = %crate::error::describe_http_error(error),
                ?delay,
                retry,
                "Google endpoint unreachable; trying again"
            ),
        }
        tokio::time::sleep(delay).await;
        request = next;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_within_bounds_with_jitter() {
        let policy = RetryPolicy::default();
        for _ in 0..100 {
            let first = policy.delay(1, None);
            assert!(
                first >= Duration::from_millis(187) && first <= Duration::from_millis(313),
                "{first:?}"
            );
            let third = policy.delay(3, None);
            assert!(
                third >= Duration::from_millis(750) && third <= Duration::from_millis(1250),
                "{third:?}"
            );
            assert!(policy.delay(30, None) <= Duration::from_secs(4));
        }
        assert_eq!(
            policy.delay(1, Some(Duration::from_secs(2))),
            Duration::from_secs(2)
        );
        assert_eq!(
            policy.delay(1, Some(Duration::from_secs(60))),
            Duration::from_secs(4)
        );
    }

    #[test]
    fn only_idempotent_methods_are_retried_by_default() {
        let policy = RetryPolicy::default();
        assert_eq!(policy.max_retries_for(&Method::GET), 3);
        assert_eq!(policy.max_retries_for(&Method::PUT), 3);
        assert_eq!(policy.max_retries_for(&Method::POST), 0);
        assert_eq!(
            policy
                .clone()
                .retry_non_idempotent(true)
                .max_retries_for(&Method::POST),
            3
        );
        assert_eq!(RetryPolicy::never().max_retries_for(&Method::GET), 0);
        assert!(policy.retries_status(StatusCode::SERVICE_UNAVAILABLE));
        assert!(!policy.retries_status(StatusCode::BAD_GATEWAY));
        assert!(
            policy
                .retry_on_status(StatusCode::BAD_GATEWAY)
                .retries_status(StatusCode::BAD_GATEWAY)
        );
    }

    /// A server that closes the connection before answering (an instance going away):
    /// hyper's "incomplete message", told apart by type, worth another try; the same
    /// failure as an `Error`'s source makes it transient too.
    #[tokio::test]
    async fn a_connection_closed_before_the_answer_is_transient() {
        use std::io::Read;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/", listener.local_addr().unwrap());
        std::thread::spawn(move || {
            for mut stream in listener.incoming().flatten() {
                let mut request = [0; 4096];
                let _ = stream.read(&mut request);
                // Dropped: closed without a byte of answer.
            }
        });
        let error = reqwest::Client::new().get(&url).send().await.unwrap_err();
        let incomplete = std::iter::successors(
            Some(&error as &(dyn std::error::Error + 'static)),
            |&cause| cause.source(),
        )
        .any(|cause| {
            cause
                .downcast_ref::<hyper::Error>()
                .is_some_and(hyper::Error::is_incomplete_message)
        });
        assert!(incomplete, "{error:?}");
        assert!(is_transient(&error), "{error:?}");
        assert!(!is_dns_failure(&error));
        let error = crate::error::Error::request("GET", &url, "closed").with_source(error);
        assert!(error.is_transient() && !error.is_timeout(), "{error:?}");
    }
}
