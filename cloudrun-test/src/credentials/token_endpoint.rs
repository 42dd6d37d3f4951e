//! Calling a Google token endpoint and reading its answer: one path for every
//! credential source that asks one over HTTP (OAuth's token endpoint, STS, IAM
//! Credentials, the metadata server, a `credential_source.url`).
//!
//! Every call is bounded (its limit, or `CLOUDRUN_TEST_TOKEN_TIMEOUT`), tried again
//! after a 5xx, a 429 or a failed connection ([`crate::retry::send_repeatable`]), and
//! read up to [`crate::bounded::BODY_LIMIT`]. Every failure is one
//! [`ErrorKind::TokenEndpoint`](crate::ErrorKind::TokenEndpoint) error naming the call
//! and the endpoint: a transport failure keeps its cause as the source, a refusal its
//! status and the endpoint's own reason ([`error_reason`]).

use std::time::Duration;

use reqwest::StatusCode;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use super::wire::{redact, truncate};
use crate::error::Error;

/// One call to a token endpoint, and what its errors say.
pub(crate) struct TokenEndpoint<'a> {
    /// What the call does, e.g. "minting an identity token for SA_EMAIL".
    pub(crate) what: String,
    /// The endpoint as messages show it (without a query that could carry a secret).
    pub(crate) url: &'a str,
    /// How long one try may take, unless `CLOUDRUN_TEST_TOKEN_TIMEOUT` says otherwise.
    pub(crate) timeout: Duration,
    /// What to do when the endpoint cannot be reached.
    pub(crate) unreachable_fix: String,
    /// What to do when it answers something else than the token asked for.
    pub(crate) wrong_answer_fix: String,
}

impl TokenEndpoint<'_> {
    /// An error of this call.
    pub(crate) fn error(&self, problem: impl AsRef<str>, fix: impl AsRef<str>) -> Error {
        Error::token_endpoint(&self.what, self.url, problem, fix)
    }

    /// The endpoint answered, but not with what a token endpoint answers.
    pub(crate) fn wrong_answer(&self, problem: impl AsRef<str>) -> Error {
        self.error(problem, &self.wrong_answer_fix)
    }

    /// The answer lacks `field` (e.g. `id_token`).
    pub(crate) fn missing(&self, field: &str) -> Error {
        self.wrong_answer(format!("the answer has no `{field}`"))
    }

    /// Sends `request` and decodes its JSON answer. A refusal (not a 2xx) is an error
    /// with its status, the endpoint's reason and the fix `refused` gives for it.
    pub(crate) async fn json<T: DeserializeOwned>(
        &self,
        request: reqwest::RequestBuilder,
        refused: impl FnOnce(StatusCode) -> String,
    ) -> Result<T, Error> {
        let body = self.text(request, refused).await?;
        serde_json::from_str(&body).map_err(|error| {
            self.wrong_answer(format!("the answer is not a token response ({error})"))
        })
    }

    /// Sends `request` and reads its answer as text, refusals as in [`Self::json`].
    pub(crate) async fn text(
        &self,
        request: reqwest::RequestBuilder,
        refused: impl FnOnce(StatusCode) -> String,
    ) -> Result<String, Error> {
        let timeout = crate::settings::token_timeout()?.unwrap_or(self.timeout);
        let unreachable = |error: reqwest::Error| {
            let (problem, fix) = if error.is_timeout() {
                (
                    format!("no answer within {timeout:?}"),
                    format!(
                        "check that {} is up and reachable from here (proxy, firewall); if it is \
                         just slow, raise the limit with CLOUDRUN_TEST_TOKEN_TIMEOUT=60s",
                        self.url
                    ),
                )
            } else {
                (
                    crate::error::describe_http_error(&error),
                    self.unreachable_fix.clone(),
                )
            };
            self.error(problem, fix).with_source(error)
        };
        let response = crate::retry::send_repeatable(request, timeout)
            .await
            .map_err(unreachable)?;
        let status = response.status();
        // Bounded: an endless or huge answer ends here, with the endpoint named.
        let body = crate::bounded::read_body(response, crate::bounded::BODY_LIMIT)
            .await
            .map_err(|error| match error {
                crate::bounded::BodyError::Http(error) => unreachable(error),
                crate::bounded::BodyError::TooLarge { limit } => self.error(
                    crate::bounded::BodyError::too_large(limit),
                    format!(
                        "check that {} is the endpoint it should be (Google's or the emulator)",
                        self.url
                    ),
                ),
            })?;
        if !status.is_success() {
            return Err(self
                .error(refusal(status, &body), refused(status))
                .with_status(status));
        }
        Ok(body)
    }
}

/// What a Google endpoint's refusal says: `HTTP {status}, {reason}` (see [`error_reason`]).
fn refusal(status: StatusCode, body: &str) -> String {
    format!("HTTP {status}, {}", error_reason(body))
}

/// The reason in an error answer of a Google endpoint: OAuth's
/// `{"error","error_description"}`, the APIs' `{"error":{"code","message","status"}}`,
/// or, for a body that is not JSON, only its size. Of a JSON answer only these fields are
/// quoted (an allowlist: whatever else it holds, tokens included, is left out), and
/// they are redacted too.
pub(crate) fn error_reason(body: &str) -> String {
    match serde_json::from_str::<Value>(body) {
        Ok(Value::Object(answer)) => json_error_reason(&answer),
        Ok(_) => "a JSON answer that is not an object".to_owned(),
        // Not quoted at all: a page, a log dump or a form can spell a secret in more
        // ways than any redaction knows. The status and the endpoint (in the error)
        // say what failed; the size says what kind of answer came.
        Err(_) if body.trim().is_empty() => "an empty answer".to_owned(),
        Err(_) => format!("a non-JSON answer of {} bytes", body.len()),
    }
}

/// `error: error_description`, `status: message`, or what of `code`, `status` and
/// `message` the answer has at its top level; each value redacted and cut short.
fn json_error_reason(answer: &Map<String, Value>) -> String {
    let safe = |object: &Map<String, Value>, field: &str| match object.get(field) {
        Some(Value::String(text)) if !text.trim().is_empty() => {
            Some(truncate(&redact(text.trim()), 300).to_owned())
        }
        Some(number @ Value::Number(_)) => Some(number.to_string()),
        _ => None,
    };
    let parts = match answer.get("error") {
        Some(Value::Object(error)) => vec![safe(error, "status"), safe(error, "message")],
        Some(Value::String(_)) => vec![safe(answer, "error"), safe(answer, "error_description")],
        _ => vec![
            safe(answer, "code"),
            safe(answer, "status"),
            safe(answer, "message"),
        ],
    };
    let parts: Vec<String> = parts.into_iter().flatten().collect();
    if parts.is_empty() {
        "a JSON answer without an error message".to_owned()
    } else {
        parts.join(": ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_google_error_answers() {
        assert_eq!(
            error_reason(r#"{"error":"invalid_grant","error_description":"Bad Request"}"#),
            "invalid_grant: Bad Request"
        );
        assert_eq!(
            error_reason(
                r#"{"error":{"code":403,"message":"Permission denied","status":"PERMISSION_DENIED"}}"#
            ),
            "PERMISSION_DENIED: Permission denied"
        );
        assert_eq!(
            error_reason(r#"{"error":"invalid_request"}"#),
            "invalid_request"
        );
        assert_eq!(error_reason(r#"{"code":401,"message":"no"}"#), "401: no");
        assert_eq!(error_reason(""), "an empty answer");
        assert_eq!(error_reason("[1]"), "a JSON answer that is not an object");
    }

    #[test]
    fn quotes_only_the_safe_fields_of_a_json_answer_and_redacts_them() {
        let answer = r#"{"error": "invalid_grant",
            "error_description": "refresh_token=SECRET1 is revoked",
            "access_token": "SECRET2", "debug": {"assertion": "SECRET3"}, "hint": "SECRET4"}"#;
        let reason = error_reason(answer);
        assert_eq!(reason, "invalid_grant: refresh_token=<redacted> is revoked");
        let answer = r#"{"token": "SECRET5", "detail": "SECRET6"}"#;
        assert_eq!(
            error_reason(answer),
            "a JSON answer without an error message"
        );
    }

    #[test]
    fn a_body_that_is_not_json_is_described_not_quoted() {
        for body in [
            "<html>oops Authorization: Bearer SECRET1</html>",
            "<input name=\"refresh_token\" value=\"SECRET2\">",
            "<id_token>SECRET3</id_token>",
            "refresh_token%3DSECRET4",
            "access_token\tSECRET5",
            "refresh_token => SECRET6",
            "X-Goog-Iam-Authorization-Token SECRET7",
        ] {
            let reason = error_reason(body);
            assert_eq!(reason, format!("a non-JSON answer of {} bytes", body.len()));
            assert!(!reason.contains("SECRET"), "{reason}");
        }
        assert_eq!(error_reason(" \n"), "an empty answer");
    }

    /// An HTTP/1.1 response with `status` and `body`.
    fn response(status: &str, body: &str) -> Option<String> {
        Some(format!(
            "HTTP/1.1 {status}\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        ))
    }

    /// A loopback endpoint that answers every request with `answer` (a whole HTTP
    /// response), or never answers when it is `None`.
    fn endpoint_answering(answer: Option<String>) -> String {
        use std::io::{Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/token", listener.local_addr().unwrap());
        std::thread::spawn(move || {
            let mut held = Vec::new();
            for mut stream in listener.incoming().flatten() {
                let mut request = [0; 4096];
                let _ = stream.read(&mut request);
                match &answer {
                    Some(answer) => {
                        let _ = stream.write_all(answer.as_bytes());
                    }
                    None => held.push(stream),
                }
            }
        });
        url
    }

    async fn call(url: &str, timeout: Duration) -> Error {
        let http = crate::transport::configure(reqwest::Client::builder())
            .unwrap()
            .build()
            .unwrap();
        let endpoint = TokenEndpoint {
            what: "minting a token".to_owned(),
            url,
            timeout,
            unreachable_fix: "check the network".to_owned(),
            wrong_answer_fix: "check the URL".to_owned(),
        };
        endpoint
            .json::<Value>(http.post(url), |status| {
                format!("refused with {}", status.as_u16())
            })
            .await
            .unwrap_err()
    }

    #[tokio::test]
    async fn a_refusal_keeps_its_status_and_says_why() {
        let url = endpoint_answering(response(
            "403 Forbidden",
            r#"{"error":{"status":"PERMISSION_DENIED","message":"no way"}}"#,
        ));
        let error = call(&url, Duration::from_secs(10)).await;
        assert_eq!(error.kind(), crate::ErrorKind::TokenEndpoint);
        assert_eq!(error.status(), Some(StatusCode::FORBIDDEN));
        assert!(!error.is_transient() && !error.is_timeout(), "{error}");
        assert_eq!(error.fix(), Some("refused with 403"));
        assert_eq!(
            error.to_string(),
            format!(
                "minting a token at {url} failed: HTTP 403 Forbidden, PERMISSION_DENIED: no \
                 way\nfix: refused with 403"
            )
        );
    }

    #[tokio::test]
    async fn a_5xx_after_the_retries_is_transient() {
        let url = endpoint_answering(response("503 Service Unavailable", ""));
        let error = call(&url, Duration::from_secs(10)).await;
        assert_eq!(error.status(), Some(StatusCode::SERVICE_UNAVAILABLE));
        assert!(error.is_transient() && !error.is_timeout(), "{error}");
        assert!(
            error
                .to_string()
                .contains("HTTP 503 Service Unavailable, an empty answer")
        );
    }

    #[tokio::test]
    async fn an_endpoint_that_never_answers_is_a_timeout() {
        let url = endpoint_answering(None);
        let error = call(&url, Duration::from_millis(300)).await;
        assert!(error.is_timeout() && error.is_transient(), "{error}");
        assert_eq!(error.status(), None);
        assert!(
            error.to_string().contains("no answer within 300ms"),
            "{error}"
        );
        let source = std::error::Error::source(&error).expect("reqwest's error");
        assert!(
            source
                .downcast_ref::<reqwest::Error>()
                .unwrap()
                .is_timeout()
        );
    }

    #[tokio::test]
    async fn an_answer_that_is_no_token_response_is_not_transient() {
        let url = endpoint_answering(response("200 OK", "<html>"));
        let error = call(&url, Duration::from_secs(10)).await;
        assert_eq!(error.status(), None);
        assert!(!error.is_transient(), "{error}");
        assert_eq!(error.fix(), Some("check the URL"));
        assert!(
            error
                .to_string()
                .contains("the answer is not a token response")
        );
    }
}
