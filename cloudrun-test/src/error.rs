//! One error type whose messages say what was tried and how to fix it.
//!
//! Errors are `Clone` so that one failed token fetch can be reported to every test
//! that was waiting for it. They never contain a token or key material.

use std::path::PathBuf;

/// Everything that can go wrong between a test and the service it calls.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// No credential source could be found.
    #[error(
        "no Google credentials found; tried, in order:\n{tried}\n\
         fix: set up any one of these (each line says how); the quickest is \
         GOOGLE_APPLICATION_CREDENTIALS=key.json with a service-account key \
         (`gcloud iam service-accounts keys create key.json --iam-account=SA_EMAIL`). \
         `cloudrun-test doctor` explains the choice"
    )]
    NoCredentials { tried: String },

    /// A credentials file could not be read or understood.
    #[error("credentials file {path}: {problem}\nfix: {fix}")]
    CredentialsFile {
        path: PathBuf,
        problem: String,
        fix: String,
    },

    /// A token endpoint (OAuth, metadata server, IAM Credentials...) refused or failed.
    #[error("{what} at {url} failed: {problem}\nfix: {fix}")]
    TokenEndpoint {
        what: String,
        url: String,
        problem: String,
        fix: String,
    },

    /// A setting needed to find the service is missing or invalid.
    #[error("{problem}\nfix: {fix}")]
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
    #[error("looking up Cloud Run service `{service}` at {url} failed: {problem}\nfix: {fix}")]
    AdminApi {
        service: String,
        url: String,
        problem: String,
        fix: String,
    },

    /// A request to the service could not be sent.
    #[error("request {method} {url} failed: {problem}")]
    Request {
        method: String,
        url: String,
        problem: String,
    },

    /// The service did not become ready within the wait asked for
    /// (`ClientBuilder::wait_until_ready`).
    #[error(
        "the service at {url} was not ready after {waited} (last answer: {last})\n\
         fix: wait longer (the second argument of `wait_until_ready`); if it never comes up, \
         read its logs: `gcloud run services logs read SERVICE --region REGION`"
    )]
    NotReady {
        url: String,
        waited: String,
        last: String,
    },

    /// Something that should not happen; the message says what.
    #[error("internal error in cloudrun-test: {0} (please report it)")]
    Internal(String),
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
    message
}
