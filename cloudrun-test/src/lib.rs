//! Test private Google Cloud Run services from Rust.
//!
//! `#[cloudrun_test]` turns an `async fn` into a plain `#[test]` that resolves the
//! service's URL, fetches an identity token whose audience is that URL (minted once
//! per process and shared by all tests), and hands the test a [`Client`] that attaches
//! it to every request for the service:
//!
//! ```no_run,test_harness
//! use cloudrun_test::{cloudrun_test, Client};
//!
//! #[cloudrun_test(service = "hello")]
//! async fn root_answers(client: Client) {
//!     let res = client.get("/").send().await.unwrap();
//!     assert_eq!(res.status(), 200);
//! }
//! ```
//!
//! Credentials come from the first source present of `CLOUDRUN_TEST_ID_TOKEN`,
//! `GOOGLE_APPLICATION_CREDENTIALS` (any credentials file type), gcloud's application
//! default credentials, the gcloud CLI and the metadata server; see
//! [`Credentials::from_env`]. The service URL comes from `url = "..."`,
//! `CLOUDRUN_TEST_URL_<SERVICE>`, or the Cloud Run Admin API (with
//! `CLOUDRUN_TEST_PROJECT` and `CLOUDRUN_TEST_REGION`).
//!
//! Beyond plain HTTP: response bodies stream, and [`sse::EventStream`] reads
//! server-sent events off them as they arrive. Cargo feature `grpc` adds
//! `Client::grpc_channel`, a tonic channel whose every call carries the token;
//! feature `websocket` adds `Client::websocket`. Both are off by default.
//!
//! # Writing a suite
//!
//! Add the crate to the service's `[dev-dependencies]` (`cloudrun-test = "0.1"`; see the
//! README for depending on the repository until it is on crates.io) and write tests in
//! `tests/`. A test is an `async fn` that takes what it needs, chosen by type: a
//! [`Client`], a [`TestContext`] (the client with the URL, audience and identity it was
//! built for), a `GrpcChannel` (feature `grpc`), or nothing. It returns `()` or
//! `Result<T, E: Debug>`, so `?` works. Response types come from the re-exported
//! [`reqwest`], which needs no dependency of its own and is always the version this
//! crate uses:
//!
//! ```no_run,test_harness
//! use cloudrun_test::reqwest::StatusCode;
//! use cloudrun_test::{Client, TestContext, cloudrun_test};
//!
//! /// The service is private: no token, no entry.
//! #[cloudrun_test(service = "hello")]
//! async fn refuses_callers_without_a_token(client: Client) -> Result<(), cloudrun_test::Error> {
//!     let res = client.without_auth().get("/").send().await?;
//!     assert_eq!(res.status(), StatusCode::FORBIDDEN);
//!     Ok(())
//! }
//!
//! #[cloudrun_test(service = "hello", timeout = "30s")]
//! async fn creates_an_item(context: TestContext) -> Result<(), cloudrun_test::Error> {
//!     let res = context
//!         .client()
//!         .post("/items")
//!         .json(&serde_json::json!({ "name": "pen" }))
//!         .send()
//!         .await?;
//!     assert_eq!(res.status(), StatusCode::CREATED, "as {:?}", context.identity());
//!     Ok(())
//! }
//! ```
//!
//! Every test becomes a plain `#[test]` of the same name; the tests of a process share
//! one token per audience (and processes share it through an owner-only disk cache), so
//! a suite of a hundred tests mints once. The attribute's arguments, and how to
//! combine it with `rstest` or `test-case` for a test per case, are on
//! [`cloudrun_test`](macro@cloudrun_test). Outside the attribute, e.g. in a
//! `#[tokio::test]` or a tool, [`Client::builder`] builds the same client:
//!
//! ```no_run
//! # async fn f() -> Result<(), Box<dyn std::error::Error>> {
//! use std::time::Duration;
//!
//! let client = cloudrun_test::Client::builder()
//!     .service("hello")
//!     .wait_until_ready("/healthz", Duration::from_secs(60))
//!     .build()
//!     .await?;
//! let body = client.get("/").send().await?.text().await?;
//! # Ok(()) }
//! ```
//!
//! A failure says what went wrong and the fix: a setup failure (no credentials, a
//! service that cannot be found) fails the test before its body runs, a 401 or 403
//! is explained on stderr with the command that grants access, and an [`Error`] tells
//! code its [`ErrorKind`], HTTP status and whether it is worth retrying.
//!
//! # Running it
//!
//! - **Plain `cargo test`**, against the real service: say who the tests run as
//!   (`GOOGLE_APPLICATION_CREDENTIALS`, or your `gcloud auth login`) and where the
//!   service is (`CLOUDRUN_TEST_PROJECT` and `CLOUDRUN_TEST_REGION` for a lookup by
//!   name, or `CLOUDRUN_TEST_URL_HELLO=https://...`). `cloudrun-test doctor` shows what
//!   was chosen and what is missing.
//! - **Under `cloudrun-test emulate`**, with no Google account: the `cloudrun-test`
//!   command (crate `cloudrun-test-cli`) runs your service behind a local emulator of
//!   Google's token endpoints, the Cloud Run Admin API and Cloud Run's IAM front, and
//!   runs the suite against it with a test account allowed to invoke it:
//!   `cloudrun-test emulate --serve 'hello=cargo run -q' -- cargo test`. The suite sees
//!   only the emulator's settings, so the same tests run unchanged.
//! - **In CI**: the same `cargo test`, with credentials from the CI's identity (workload
//!   identity federation files are `GOOGLE_APPLICATION_CREDENTIALS` too; on Google Cloud
//!   the metadata server is found by itself), or `cloudrun-test emulate` for a pull
//!   request's checks. `cargo nextest run --partition count:1/2` splits a suite across
//!   machines; each mints once.
//! - **From the IDE's "Run Test" button** (rust-analyzer): the test keeps
//!   its name and module, so the button is there, even while the attribute has an error.
//!   An IDE does not pass your shell's environment: put the project, region or URLs in
//!   `cloudrun-test.toml` (below), and credentials come from gcloud's files as usual.
//!
//! # Configuring it
//!
//! Highest first, key by key: the attribute's (or [`ClientBuilder`]'s) arguments, the
//! environment's `CLOUDRUN_TEST_*` variables, `cloudrun-test.toml` (the profile named by
//! `CLOUDRUN_TEST_PROFILE`, then its top level), then gcloud's `core/project` and
//! `run/region`. `cloudrun-test.toml` is found by walking up from the test crate's
//! folder:
//!
//! ```toml
//! project = "my-project"
//! region = "europe-west1"
//!
//! [services.hello]
//! url = "https://hello-123456789.europe-west1.run.app"   # skips the lookup
//!
//! [profiles.staging]                                      # CLOUDRUN_TEST_PROFILE=staging
//! project = "my-project-staging"
//! ```
//!
//! The variables are read and checked once per process into [`Settings`]; an invalid
//! one fails every test with the variable and its fix. A test or tool can build its own
//! instead of changing the process's environment, and hand it to
//! [`ClientBuilder::settings`]. Durations are written as in `humantime` (`500ms`,
//! `30s`, `1m30s`) or as a number of seconds; see [`parse_duration`]:
//!
//! ```
//! use std::time::Duration;
//! use cloudrun_test::Settings;
//!
//! let settings = Settings::from_vars([
//!     ("CLOUDRUN_TEST_PROJECT", "my-project"),
//!     ("CLOUDRUN_TEST_TIMEOUT", "2m"),
//! ])?
//! .region("europe-west1")
//! .service_url("hello", "https://hello-123456789.europe-west1.run.app");
//!
//! // A value that is not a duration is refused, naming the variable.
//! let error = Settings::from_vars([("CLOUDRUN_TEST_TIMEOUT", "soon")]).unwrap_err();
//! assert!(error.to_string().contains("CLOUDRUN_TEST_TIMEOUT"));
//! assert_eq!(cloudrun_test::parse_duration("1m30s"), Ok(Duration::from_secs(90)));
//! # let _ = settings;
//! # Ok::<(), cloudrun_test::Error>(())
//! ```
//!
//! Credentials are chosen by [`Credentials::from_env`]; the project's README lists
//! every variable, the token cache and the threat model.

#![warn(missing_docs)]

mod auth;
mod bounded;
mod cache;
mod client;
mod context;
mod credentials;
pub mod diagnose;
mod disk_cache;
mod dns;
mod duration;
mod entry;
mod error;
#[cfg(feature = "grpc")]
mod grpc;
mod host;
mod outcome;
mod owner_only;
mod parametrised;
mod probe;
mod ready;
mod redact;
mod redirect;
mod remint;
mod resolve;
mod retry;
mod send;
mod settings;
pub mod sse;
mod token;
pub mod transport;
#[cfg(feature = "websocket")]
mod websocket;

pub use client::{Client, ClientBuilder, RequestBuilder};
pub use context::TestContext;
pub use credentials::{ChainStep, Credentials, StepOutcome};
pub use diagnose::Diagnosis;
pub use duration::parse_duration;
pub use error::{Error, ErrorKind};
pub use probe::Probe;
pub use retry::RetryPolicy;
pub use settings::{Settings, TokenHeader};
pub use token::{Claims, IdToken};

/// Removes secrets (tokens, keys, passwords in their `key=value`, `key: value` and JSON
/// forms, JWT-shaped words, PEM private keys) from text quoted in a message. Every
/// error and diagnosis of this crate, and the `cloudrun-test` command, go through it.
#[doc(hidden)]
pub use redact::redact;

/// The HTTP client underneath, for its types (`Response`, `StatusCode`, `Method`...).
pub use reqwest;
pub use reqwest::Url;

/// Without feature `grpc`: a stand-in that makes a test taking a `GrpcChannel` fail to
/// compile with the fix.
#[cfg(not(feature = "grpc"))]
#[doc(hidden)]
pub use entry::grpc_disabled::GrpcChannel;
/// A gRPC channel carrying the token (feature `grpc`): [`Client::grpc_channel`].
#[cfg(feature = "grpc")]
pub use grpc::GrpcChannel;
/// The WebSocket library underneath (feature `websocket`), for its `Message` and
/// stream types in the version this crate uses.
#[cfg(feature = "websocket")]
pub use tokio_tungstenite;
/// The gRPC library the channel is for (feature `grpc`), so that a test's generated
/// clients and this crate agree on one version.
#[cfg(feature = "grpc")]
pub use tonic;
/// An open WebSocket (feature `websocket`): [`Client::websocket`].
#[cfg(feature = "websocket")]
pub use websocket::WebSocket;

/// `#[cloudrun_test(service = "...")]`: see the crate documentation.
pub use cloudrun_test_macros::cloudrun_test;
/// The same attribute, for `#[cloudrun_test::test(service = "...")]`.
pub use cloudrun_test_macros::cloudrun_test as test;

// The crate's own README, packaged with it (`readme`): its code blocks compile as doc
// tests. The workspace README's blocks are compiled by the e2e crate's library
// (tests/support/mod.rs), not here: a published crate reads no file outside itself.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;

/// What the attribute's expansion calls. Not a public API: it may change in any release.
#[doc(hidden)]
pub mod __private {
    pub use crate::entry::{
        Flavor, Inject, TestFn, TestFuture, TestOutcome, TestSpec, cloudrun_test,
        cloudrun_test_without_parameter, injected, run_test,
    };
}
