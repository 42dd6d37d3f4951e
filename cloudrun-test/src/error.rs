//! One error type whose messages say what was tried and how to fix it.
//!
//! [`Error`] is opaque and cheap to clone (one failed token fetch is reported to every
//! test that was waiting for it): what code needs to decide on is typed ([`kind`],
//! [`status`], [`is_timeout`], [`is_transient`], the [`source`] chain); what people
//! read is its `Display`, with a `fix:` line. Neither `Display` nor `Debug` shows a
//! token or key material: the parts that may quote the outside world (an endpoint's
//! answer, a program's stderr, a URL from a file) are redacted ([`mod@crate::redact`])
//! when the error is built.
//!
//! [`kind`]: Error::kind
//! [`status`]: Error::status
//! [`is_timeout`]: Error::is_timeout
//! [`is_transient`]: Error::is_transient
//! [`source`]: std::error::Error::source

use std::error::Error as StdError;
use std::fmt;
use std::path::Path;
use std::sync::Arc;

use reqwest::StatusCode;

use crate::redact::redact;

/// Everything that can go wrong between a test and the service it calls.
///
/// Its `Display` says what was tried, what went wrong and (on a `fix:` line) what to
/// do; its methods say the same to code. A test usually just fails with it (`?` in a
/// test that returns `Result`, or `unwrap`); code that decides on it asks:
///
/// ```no_run
/// # async fn f(client: cloudrun_test::Client) {
/// use cloudrun_test::ErrorKind;
///
/// match client.get("/report").send().await {
///     Ok(res) => println!("{}", res.status()),
///     Err(error) if error.is_timeout() => panic!("the service took too long: {error}"),
///     Err(error) if error.kind() == ErrorKind::NoCredentials => {
///         eprintln!("skipped, no credentials here: {error}")
///     }
///     Err(error) => panic!("{error}"),
/// }
/// # }
/// ```
#[derive(Clone)]
pub struct Error {
    inner: Arc<Inner>,
}

#[derive(Clone)]
struct Inner {
    kind: ErrorKind,
    /// What went wrong, as shown (already redacted where it quotes the outside world).
    message: String,
    /// What to do about it, as shown.
    fix: Option<String>,
    status: Option<StatusCode>,
    timed_out: bool,
    source: Option<Arc<dyn StdError + Send + Sync + 'static>>,
}

/// What kind of failure an [`Error`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// No credential source could be found.
    NoCredentials,
    /// A credentials file could not be read or understood.
    CredentialsFile,
    /// A token endpoint (OAuth, metadata server, IAM Credentials, STS, gcloud, an
    /// executable source) refused or failed.
    TokenEndpoint,
    /// A setting (variable, `cloudrun-test.toml`, builder argument) is missing or invalid.
    Setting,
    /// The Cloud Run Admin API has no such service.
    ServiceNotFound,
    /// The Cloud Run Admin API answered something else than the service.
    AdminApi,
    /// A request to the service could not be sent or answered.
    Request,
    /// The service did not become ready within the wait asked for
    /// (`ClientBuilder::wait_until_ready`).
    NotReady,
    /// Something that should not happen (a bug in cloudrun-test).
    Internal,
}

impl ErrorKind {
    fn name(self) -> &'static str {
        match self {
            ErrorKind::NoCredentials => "NoCredentials",
            ErrorKind::CredentialsFile => "CredentialsFile",
            ErrorKind::TokenEndpoint => "TokenEndpoint",
            ErrorKind::Setting => "Setting",
            ErrorKind::ServiceNotFound => "ServiceNotFound",
            ErrorKind::AdminApi => "AdminApi",
            ErrorKind::Request => "Request",
            ErrorKind::NotReady => "NotReady",
            ErrorKind::Internal => "Internal",
        }
    }
}

impl Error {
    fn new(kind: ErrorKind, message: String, fix: Option<String>) -> Error {
        Error {
            inner: Arc::new(Inner {
                kind,
                message,
                fix,
                status: None,
                timed_out: false,
                source: None,
            }),
        }
    }

    /// No credential source was found; `tried` lists each source and why it was not used.
    pub(crate) fn no_credentials(tried: impl AsRef<str>) -> Error {
        Error::new(
            ErrorKind::NoCredentials,
            format!(
                "no Google credentials found; tried, in order:\n{}",
                redact(tried.as_ref())
            ),
            Some(
                "set up any one of these (each line says how); the quickest is \
                 GOOGLE_APPLICATION_CREDENTIALS=key.json with a service-account key \
                 (`gcloud iam service-accounts keys create key.json --iam-account=SA_EMAIL`). \
                 `cloudrun-test doctor` explains the choice"
                    .to_owned(),
            ),
        )
    }

    /// The credentials file at `path` could not be read or understood.
    pub(crate) fn credentials_file(
        path: impl AsRef<Path>,
        problem: impl AsRef<str>,
        fix: impl AsRef<str>,
    ) -> Error {
        Error::new(
            ErrorKind::CredentialsFile,
            format!(
                "credentials file {}: {}",
                path.as_ref().display(),
                redact(problem.as_ref())
            ),
            Some(redact(fix.as_ref())),
        )
    }

    /// `what` (e.g. "minting an identity token") at the token endpoint `url` failed.
    pub(crate) fn token_endpoint(
        what: impl AsRef<str>,
        url: impl AsRef<str>,
        problem: impl AsRef<str>,
        fix: impl AsRef<str>,
    ) -> Error {
        Error::new(
            ErrorKind::TokenEndpoint,
            format!(
                "{} at {} failed: {}",
                what.as_ref(),
                redact(url.as_ref()),
                redact(problem.as_ref())
            ),
            Some(redact(fix.as_ref())),
        )
    }

    /// A setting is missing or invalid.
    pub(crate) fn setting(problem: impl AsRef<str>, fix: impl AsRef<str>) -> Error {
        Error::new(
            ErrorKind::Setting,
            redact(problem.as_ref()),
            Some(redact(fix.as_ref())),
        )
    }

    /// The Admin API at `url` has no service `service` in `project`/`region`;
    /// `env_suffix` names its `CLOUDRUN_TEST_URL_` variable.
    pub(crate) fn service_not_found(
        service: impl fmt::Display,
        project: impl fmt::Display,
        region: impl fmt::Display,
        url: impl fmt::Display,
        env_suffix: impl fmt::Display,
    ) -> Error {
        Error::new(
            ErrorKind::ServiceNotFound,
            format!(
                "Cloud Run service `{service}` was not found in project `{project}`, \
                 region `{region}` (asked {url})"
            ),
            Some(format!(
                "check the name with `gcloud run services list --project {project} --region \
                 {region}`, or set CLOUDRUN_TEST_URL_{env_suffix} to the service's URL"
            )),
        )
        .with_status(StatusCode::NOT_FOUND)
    }

    /// Looking up `service` at the Admin API `url` failed.
    pub(crate) fn admin_api(
        service: impl fmt::Display,
        url: impl AsRef<str>,
        problem: impl AsRef<str>,
        fix: impl AsRef<str>,
    ) -> Error {
        Error::new(
            ErrorKind::AdminApi,
            format!(
                "looking up Cloud Run service `{service}` at {} failed: {}",
                redact(url.as_ref()),
                redact(problem.as_ref())
            ),
            Some(redact(fix.as_ref())),
        )
    }

    /// The request `method url` to the service failed (no fix line: `problem` says it).
    pub(crate) fn request(
        method: impl fmt::Display,
        url: impl AsRef<str>,
        problem: impl AsRef<str>,
    ) -> Error {
        Error::new(
            ErrorKind::Request,
            format!(
                "request {method} {} failed: {}",
                redact(url.as_ref()),
                redact(problem.as_ref())
            ),
            None,
        )
    }

    /// The service at `url` was not ready after `waited`; `last` is its last answer.
    pub(crate) fn not_ready(
        url: impl AsRef<str>,
        waited: impl fmt::Display,
        last: impl AsRef<str>,
    ) -> Error {
        Error::new(
            ErrorKind::NotReady,
            format!(
                "the service at {} was not ready after {waited} (last answer: {})",
                redact(url.as_ref()),
                redact(last.as_ref())
            ),
            Some(
                "wait longer (the second argument of `wait_until_ready`); if it never comes \
                 up, read its logs: `gcloud run services logs read SERVICE --region REGION`"
                    .to_owned(),
            ),
        )
    }

    /// Something that should not happen; `what` says what.
    pub(crate) fn internal(what: impl AsRef<str>) -> Error {
        Error::new(
            ErrorKind::Internal,
            format!(
                "internal error in cloudrun-test: {} (please report it)",
                redact(what.as_ref())
            ),
            None,
        )
    }

    fn inner_mut(&mut self) -> &mut Inner {
        Arc::make_mut(&mut self.inner)
    }

    /// The HTTP status the endpoint or the service answered.
    pub(crate) fn with_status(mut self, status: StatusCode) -> Error {
        self.inner_mut().status = Some(status);
        self
    }

    /// The underlying failure, for [`std::error::Error::source`]. A `reqwest::Error`
    /// is kept without its URL, whose query could carry a secret.
    pub(crate) fn with_source(mut self, source: impl Into<Source>) -> Error {
        let source = source.into().0;
        self.inner_mut().source = Some(source);
        self
    }

    /// The same failure with another fix (shown redacted).
    pub(crate) fn with_fix(mut self, fix: impl AsRef<str>) -> Error {
        self.inner_mut().fix = Some(redact(fix.as_ref()));
        self
    }

    /// Marks a failure that is a time limit running out without a typed source saying
    /// so (e.g. a program killed after its limit).
    pub(crate) fn timed_out(mut self) -> Error {
        self.inner_mut().timed_out = true;
        self
    }

    /// What kind of failure this is.
    pub fn kind(&self) -> ErrorKind {
        self.inner.kind
    }

    /// The HTTP status that a token endpoint, the Admin API or the service answered,
    /// when the failure was such an answer.
    pub fn status(&self) -> Option<StatusCode> {
        self.inner.status
    }

    /// Whether a time limit ran out (no answer in time).
    pub fn is_timeout(&self) -> bool {
        self.inner.timed_out || self.chain().any(is_timeout_cause)
    }

    /// Whether trying again later may succeed: a time limit ran out, the connection
    /// was refused, reset or closed early, or the answer was a 429 or a 5xx. The
    /// retries of [`crate::RetryPolicy`] and of Google's endpoints repeat the transient
    /// failures that are not timeouts (a timeout's time is already spent).
    pub fn is_transient(&self) -> bool {
        self.is_timeout()
            || self.status().is_some_and(is_transient_status)
            || self.chain().any(is_connection_failure)
    }

    /// What to do about it: the text of the `fix:` line, if the error has one.
    pub fn fix(&self) -> Option<&str> {
        self.inner.fix.as_deref()
    }

    /// The causes of this error, its source first.
    fn chain(&self) -> impl Iterator<Item = &(dyn StdError + 'static)> {
        std::iter::successors(StdError::source(self), |&cause| cause.source())
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.inner.message)?;
        match &self.inner.fix {
            Some(fix) => write!(f, "\nfix: {fix}"),
            None => Ok(()),
        }
    }
}

/// The kind and the (redacted) message: what `unwrap()` shows, readable and safe.
impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple(self.inner.kind.name())
            .field(&format_args!("{self}"))
            .finish()
    }
}

impl StdError for Error {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.inner
            .source
            .as_deref()
            .map(|source| source as &(dyn StdError + 'static))
    }
}

/// An underlying failure kept as an [`Error`]'s source.
pub(crate) struct Source(Arc<dyn StdError + Send + Sync + 'static>);

impl From<reqwest::Error> for Source {
    fn from(error: reqwest::Error) -> Source {
        Source(Arc::new(error.without_url()))
    }
}

impl From<std::io::Error> for Source {
    fn from(error: std::io::Error) -> Source {
        Source(Arc::new(error))
    }
}

/// A failed read keeps the `io::Error` itself, so that its kind can be asked.
impl From<crate::bounded::ReadError> for Source {
    fn from(error: crate::bounded::ReadError) -> Source {
        match error {
            crate::bounded::ReadError::Io(error) => Source(Arc::new(error)),
            other => Source(Arc::new(other)),
        }
    }
}

impl From<Error> for Source {
    fn from(error: Error) -> Source {
        Source(Arc::new(error))
    }
}

/// A 429 or a 5xx: the endpoint or the service may answer differently later.
pub(crate) fn is_transient_status(status: StatusCode) -> bool {
    status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS
}

fn is_timeout_cause(cause: &(dyn StdError + 'static)) -> bool {
    if let Some(error) = cause.downcast_ref::<reqwest::Error>() {
        return error.is_timeout();
    }
    cause
        .downcast_ref::<std::io::Error>()
        .is_some_and(|io| io.kind() == std::io::ErrorKind::TimedOut)
}

/// Whether `cause` says the connection was refused, reset or closed before an answer
/// came, as when a service's instance is starting or going away. A failure to resolve
/// the host name is not one: it will fail again.
pub(crate) fn is_connection_failure(cause: &(dyn StdError + 'static)) -> bool {
    if let Some(io) = cause.downcast_ref::<std::io::Error>() {
        use std::io::ErrorKind::*;
        return matches!(
            io.kind(),
            ConnectionReset
                | ConnectionAborted
                | ConnectionRefused
                | BrokenPipe
                | UnexpectedEof
                | NotConnected
        );
    }
    // The server closed the connection before answering.
    cause
        .downcast_ref::<hyper::Error>()
        .is_some_and(hyper::Error::is_incomplete_message)
}

/// Describes a `reqwest` failure without its URL query (which could carry secrets) and
/// with the reason a timeout or refused connection happened.
pub(crate) fn describe_http_error(error: &reqwest::Error) -> String {
    let kind = if error.is_timeout() {
        "timed out"
    } else if error.is_connect() {
        "could not connect"
    } else if error.is_decode() {
        "could not decode the answer"
    } else {
        "failed"
    };
    let mut message = kind.to_string();
    let mut source = StdError::source(error);
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    // The causes are other crates' words, which may quote what the peer sent.
    redact(&message)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every kind reads exactly as it did when `Error` was an enum of strings: users'
    /// logs, the README and many tests quote these texts.
    #[test]
    fn display_and_debug_read_as_before() {
        let cases = [
            (
                Error::no_credentials("a: not set\nb: not found"),
                ErrorKind::NoCredentials,
                "no Google credentials found; tried, in order:\na: not set\nb: not found\nfix: \
                 set up any one of these (each line says how); the quickest is \
                 GOOGLE_APPLICATION_CREDENTIALS=key.json with a service-account key (`gcloud iam \
                 service-accounts keys create key.json --iam-account=SA_EMAIL`). `cloudrun-test \
                 doctor` explains the choice",
            ),
            (
                Error::credentials_file(Path::new("/k.json"), "has no `x`", "write it again"),
                ErrorKind::CredentialsFile,
                "credentials file /k.json: has no `x`\nfix: write it again",
            ),
            (
                Error::token_endpoint("minting", "https://o.example/token", "HTTP 400", "retry"),
                ErrorKind::TokenEndpoint,
                "minting at https://o.example/token failed: HTTP 400\nfix: retry",
            ),
            (
                Error::setting("X is wrong", "set X"),
                ErrorKind::Setting,
                "X is wrong\nfix: set X",
            ),
            (
                Error::service_not_found("hello", "p", "r", "https://run.example/x", "HELLO"),
                ErrorKind::ServiceNotFound,
                "Cloud Run service `hello` was not found in project `p`, region `r` (asked \
                 https://run.example/x)\nfix: check the name with `gcloud run services list \
                 --project p --region r`, or set CLOUDRUN_TEST_URL_HELLO to the service's URL",
            ),
            (
                Error::admin_api("hello", "https://run.example/x", "HTTP 500", "retry"),
                ErrorKind::AdminApi,
                "looking up Cloud Run service `hello` at https://run.example/x failed: HTTP \
                 500\nfix: retry",
            ),
            (
                Error::request("GET", "https://s.example/", "it broke"),
                ErrorKind::Request,
                "request GET https://s.example/ failed: it broke",
            ),
            (
                Error::not_ready("https://s.example/", "30.0s", "HTTP 503"),
                ErrorKind::NotReady,
                "the service at https://s.example/ was not ready after 30.0s (last answer: HTTP \
                 503)\nfix: wait longer (the second argument of `wait_until_ready`); if it never \
                 comes up, read its logs: `gcloud run services logs read SERVICE --region REGION`",
            ),
            (
                Error::internal("oops"),
                ErrorKind::Internal,
                "internal error in cloudrun-test: oops (please report it)",
            ),
        ];
        for (error, kind, text) in cases {
            assert_eq!(error.kind(), kind);
            assert_eq!(error.to_string(), text);
            assert_eq!(format!("{error:?}"), format!("{kind:?}({text})"));
            // The fix is the text of the `fix:` line.
            let fix = text.split_once("\nfix: ").map(|(_, fix)| fix);
            assert_eq!(error.fix(), fix);
            assert!(error.status().is_none() || kind == ErrorKind::ServiceNotFound);
            assert!(StdError::source(&error).is_none());
            assert!(!error.is_timeout() && !error.is_transient());
        }
    }

    #[test]
    fn quoted_secrets_show_neither_in_display_nor_in_debug() {
        let error = Error::token_endpoint(
            "minting",
            "https://oauth2.example/token?access_token=SECRET1",
            r#"HTTP 400, answer: {"id_token": "SECRET2"} Bearer SECRET3"#,
            "retry",
        );
        for shown in [
            error.to_string(),
            format!("{error:?}"),
            format!("{error:#?}"),
        ] {
            for secret in ["SECRET1", "SECRET2", "SECRET3"] {
                assert!(!shown.contains(secret), "{shown}");
            }
            assert!(shown.contains("HTTP 400"), "{shown}");
            assert!(shown.contains("fix: retry"), "{shown}");
        }
        assert!(format!("{error:?}").starts_with("TokenEndpoint("));
        let internal = Error::internal("password=SECRET4");
        assert!(!format!("{internal:?}").contains("SECRET4"));
        let fix = Error::setting("x", "use refresh_token=SECRET5").with_fix("or token=SECRET6");
        assert!(!fix.fix().unwrap().contains("SECRET6"), "{fix}");
        assert!(!fix.to_string().contains("SECRET"), "{fix}");
    }

    #[test]
    fn status_decides_transience_and_clones_share_everything() {
        for (status, transient) in [
            (StatusCode::FORBIDDEN, false),
            (StatusCode::NOT_FOUND, false),
            (StatusCode::TOO_MANY_REQUESTS, true),
            (StatusCode::INTERNAL_SERVER_ERROR, true),
            (StatusCode::SERVICE_UNAVAILABLE, true),
        ] {
            let error = Error::admin_api("s", "https://u", "HTTP", "fix").with_status(status);
            assert_eq!(error.status(), Some(status));
            assert_eq!(error.is_transient(), transient, "{status}");
            assert!(!error.is_timeout());
            let copy = error.clone();
            assert_eq!(copy.status(), Some(status));
            assert_eq!(copy.to_string(), error.to_string());
        }
        let stopped =
            Error::token_endpoint("running gcloud", "gcloud", "too slow", "wait").timed_out();
        assert!(stopped.is_timeout() && stopped.is_transient());
    }

    #[test]
    fn a_credentials_file_that_cannot_be_read_keeps_the_io_error() {
        let error = crate::Credentials::from_file("/nonexistent/key.json").unwrap_err();
        assert_eq!(error.kind(), ErrorKind::CredentialsFile);
        let io = StdError::source(&error)
            .and_then(|source| source.downcast_ref::<std::io::Error>())
            .expect("the io::Error as source");
        assert_eq!(io.kind(), std::io::ErrorKind::NotFound);
        assert!(!error.is_transient());
    }

    /// A request to a port nobody listens on: a `Request` error whose source chain
    /// holds reqwest's error (without its URL) and the refused connection under it.
    #[tokio::test]
    async fn a_refused_connection_is_transient_with_its_cause_as_source() {
        let port = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            listener.local_addr().unwrap().port()
        };
        let client = crate::Client::builder()
            .url(format!("http://127.0.0.1:{port}"))
            .without_auth()
            .retry(crate::RetryPolicy::never())
            .build()
            .await
            .unwrap();
        let error = client.get("/path?token=SECRET").send().await.unwrap_err();
        assert_eq!(error.kind(), ErrorKind::Request);
        assert_eq!(error.status(), None);
        assert!(error.is_transient(), "{error}");
        assert!(!error.is_timeout(), "{error}");
        let source = StdError::source(&error).expect("a source");
        let http = source.downcast_ref::<reqwest::Error>().expect("reqwest's");
        assert!(http.is_connect() && http.url().is_none(), "{http:?}");
        let refused = error.chain().any(|cause| {
            cause
                .downcast_ref::<std::io::Error>()
                .is_some_and(|io| io.kind() == std::io::ErrorKind::ConnectionRefused)
        });
        assert!(refused, "{error:?}");
    }
}
