//! One error type whose messages say what was tried and how to fix it.
//!
//! Errors are `Clone` so that one failed token fetch can be reported to every test
//! that was waiting for it. They never show a token or key material: the fields that
//! may quote the outside world (an endpoint's answer, a program's stderr, a URL from a
//! file, in a problem or in its fix) are shown through [`crate::redact`], in `Display`
//! and in `Debug` alike (a derived `Debug` would print them raw, e.g. in an `unwrap()`
//! panic).

use std::fmt;
use std::path::PathBuf;

use crate::redact::redact;

/// Everything that can go wrong between a test and the service it calls.
#[derive(Clone, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// No credential source could be found.
    #[error(
        "no Google credentials found; tried, in order:\n{}\n\
         fix: set up any one of these (each line says how); the quickest is \
         GOOGLE_APPLICATION_CREDENTIALS=key.json with a service-account key \
         (`gcloud iam service-accounts keys create key.json --iam-account=SA_EMAIL`). \
         `cloudrun-test doctor` explains the choice",
        redact(.tried)
    )]
    NoCredentials { tried: String },

    /// A credentials file could not be read or understood.
    #[error("credentials file {path}: {}\nfix: {}", redact(.problem), redact(.fix))]
    CredentialsFile {
        path: PathBuf,
        problem: String,
        fix: String,
    },

    /// A token endpoint (OAuth, metadata server, IAM Credentials...) refused or failed.
    #[error(
        "{what} at {} failed: {}\nfix: {}",
        redact(.url),
        redact(.problem),
        redact(.fix)
    )]
    TokenEndpoint {
        what: String,
        url: String,
        problem: String,
        fix: String,
    },

    /// A setting needed to find the service is missing or invalid.
    #[error("{}\nfix: {}", redact(.problem), redact(.fix))]
    Setting { problem: String, fix: String },

    /// The Cloud Run Admin API has no such service.
    #[error(
        "Cloud Run service `{service}` was not found in project `{project}`, region `{region}` (asked {url})\n\
         fix: check the name with `gcloud run services list --project {project} --region {region}`, \
         or set CLOUDRUN_TEST_URL_{env_suffix} to the service's URL"
    )]
    ServiceNotFound {
        service: String,
        project: String,
        region: String,
        url: String,
        env_suffix: String,
    },

    /// The Cloud Run Admin API answered something else than the service.
    #[error(
        "looking up Cloud Run service `{service}` at {} failed: {}\nfix: {}",
        redact(.url),
        redact(.problem),
        redact(.fix)
    )]
    AdminApi {
        service: String,
        url: String,
        problem: String,
        fix: String,
    },

    /// A request to the service could not be sent.
    #[error("request {method} {} failed: {}", redact(.url), redact(.problem))]
    Request {
        method: String,
        url: String,
        problem: String,
    },

    /// The service did not become ready within the wait asked for
    /// (`ClientBuilder::wait_until_ready`).
    #[error(
        "the service at {} was not ready after {waited} (last answer: {})\n\
         fix: wait longer (the second argument of `wait_until_ready`); if it never comes up, \
         read its logs: `gcloud run services logs read SERVICE --region REGION`",
        redact(.url),
        redact(.last)
    )]
    NotReady {
        url: String,
        waited: String,
        last: String,
    },

    /// Something that should not happen; the message says what.
    #[error("internal error in cloudrun-test: {} (please report it)", redact(.0))]
    Internal(String),
}

impl Error {
    fn variant(&self) -> &'static str {
        match self {
            Error::NoCredentials { .. } => "NoCredentials",
            Error::CredentialsFile { .. } => "CredentialsFile",
            Error::TokenEndpoint { .. } => "TokenEndpoint",
            Error::Setting { .. } => "Setting",
            Error::ServiceNotFound { .. } => "ServiceNotFound",
            Error::AdminApi { .. } => "AdminApi",
            Error::Request { .. } => "Request",
            Error::NotReady { .. } => "NotReady",
            Error::Internal(_) => "Internal",
        }
    }
}

/// The variant and the (redacted) message: what `unwrap()` shows, readable and safe.
impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple(self.variant())
            .field(&format_args!("{self}"))
            .finish()
    }
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
    let mut source = std::error::Error::source(error);
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

    #[test]
    fn quoted_secrets_show_neither_in_display_nor_in_debug() {
        let error = Error::TokenEndpoint {
            what: "minting".into(),
            url: "https://oauth2.example/token?access_token=SECRET1".into(),
            problem: r#"HTTP 400, answer: {"id_token": "SECRET2"} Bearer SECRET3"#.into(),
            fix: "retry".into(),
        };
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
        let internal = Error::Internal("password=SECRET4".into());
        assert!(!format!("{internal:?}").contains("SECRET4"));
    }
}
