//! What the caller of `RequestBuilder::send` gets once redirects and retries are done:
//! the answer, with a refusal (401/403) or retries that ran out (429/503...) explained
//! by [`crate::diagnose`] on stderr and as the response's [`Diagnosis`]; or, when no
//! answer came, an error saying why.

use std::time::Duration;

use reqwest::header::HeaderMap;
use reqwest::{Method, Response, StatusCode, Url};

use crate::diagnose::{self, Diagnosis, Place, Refusal, Reminted, Sent, Verdict};
use crate::error::Error;
use crate::resolve::Target;
use crate::token::Token;

/// The emulator's explanation of a 401/403 (real Cloud Run sends no such header).
pub(crate) const EMULATOR_REASON: &str = "x-cloudrun-test-emulator-reason";

/// What the client knows of a request's last hop.
pub(crate) struct Last<'a> {
    pub target: &'a Target,
    /// The identity of the client's credentials, when known.
    pub identity: Option<String>,
    pub method: &'a Method,
    pub url: &'a Url,
    /// The token the hop carried.
    pub token: Option<&'a Token>,
    pub reminted: Reminted,
    pub retries: u32,
    /// When the answer is one the retries were for: how long they went on.
    pub retried_for: Option<Duration>,
}

/// The explanation (unredacted) of a 401/403 answered with `headers` to the request
/// `last` describes: for `finish` (which explains only requests that carried a token),
/// and for the gRPC channel and the WebSocket upgrade, which turn every refusal into an
/// error and so say why even when no token was sent.
pub(crate) fn explain_refused(last: &Last<'_>, status: StatusCode, headers: &HeaderMap) -> String {
    let reason = headers
        .get(EMULATOR_REASON)
        .and_then(|value| value.to_str().ok());
    let Some(token) = last.token else {
        let place = Place::of(last.target);
        let sent = Sent::by_client(
            last.target,
            &place,
            last.url,
            None,
            last.identity.as_deref(),
        );
        let verdict = Verdict::explain(status.as_u16(), &sent);
        let mut message = format!(
            "cloudrun-test: {} {} answered {status}: {}",
            last.method, last.url, verdict.evidence
        );
        if let Some(fix) = &verdict.fix {
            message.push_str(&format!("\n  fix: {fix}"));
        }
        if let Some(reason) = reason {
            message.push_str(&format!("\n  the emulator says: {reason}"));
        }
        return message;
    };
    diagnose::explain_refusal(&Refusal {
        target: last.target,
        identity: last.identity.clone(),
        token,
        reminted: last.reminted,
        method: last.method,
        url: last.url,
        status,
        reason,
    })
}

/// The answer, explained when it is a refusal or the retries ran out; or the error.
pub(crate) fn finish(
    outcome: Result<Response, reqwest::Error>,
    last: &Last<'_>,
) -> Result<Response, Error> {
    let Last {
        target,
        method,
        url,
        retries,
        ..
    } = *last;
    let mut response = match outcome {
        Ok(response) => response,
        Err(error) => {
            return Err(Error::request(
                method,
                url,
                diagnose::explain_no_answer(target, url, &error, retries),
            )
            .with_source(error));
        }
    };
    let status = response.status();
    let message = match last.token {
        Some(_) if matches!(status, StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN) => {
            Some(explain_refused(last, status, response.headers()))
        }
        _ => last.retried_for.map(|waited| {
            diagnose::explain_unavailable(target, method, url, status, retries, waited)
        }),
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
