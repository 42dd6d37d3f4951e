//! Test private Google Cloud Run services from Rust.
//!
//! `#[cloudrun_test]` turns an `async fn` into a plain `#[test]` that resolves the
//! service's URL, fetches an identity token whose audience is that URL (minted once
//! per process and shared by all tests), and hands the test a [`Client`] that attaches
//! it to every request for the service:
//!
//! ```no_run
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
mod host;
mod outcome;
mod owner_only;
mod parametrised;
mod probe;
mod ready;
mod redirect;
mod redact;
mod remint;
mod resolve;
mod retry;
mod send;
mod settings;
pub mod sse;
mod token;
#[cfg(feature = "grpc")]
mod grpc;
#[cfg(feature = "websocket")]
mod websocket;
pub mod transport;

pub use client::{Client, ClientBuilder, RequestBuilder};
pub use context::TestContext;
pub use credentials::{ChainStep, Credentials, StepOutcome};
pub use diagnose::Diagnosis;
pub use error::{Error, ErrorKind};
pub use probe::Probe;
pub use retry::RetryPolicy;
pub use duration::parse_duration;
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

/// A gRPC channel carrying the token (feature `grpc`): [`Client::grpc_channel`].
#[cfg(feature = "grpc")]
pub use grpc::GrpcChannel;
/// Without feature `grpc`: a stand-in that makes a test taking a `GrpcChannel` fail to
/// compile with the fix.
#[cfg(not(feature = "grpc"))]
#[doc(hidden)]
pub use entry::grpc_disabled::GrpcChannel;
/// The gRPC library the channel is for (feature `grpc`), so that a test's generated
/// clients and this crate agree on one version.
#[cfg(feature = "grpc")]
pub use tonic;
/// An open WebSocket (feature `websocket`): [`Client::websocket`].
#[cfg(feature = "websocket")]
pub use websocket::WebSocket;
/// The WebSocket library underneath (feature `websocket`), for its `Message` and
/// stream types in the version this crate uses.
#[cfg(feature = "websocket")]
pub use tokio_tungstenite;

/// `#[cloudrun_test(service = "...")]`: see the crate documentation.
pub use cloudrun_test_macros::cloudrun_test;
/// The same attribute, for `#[cloudrun_test::test(service = "...")]`.
pub use cloudrun_test_macros::cloudrun_test as test;

/// What the attribute's expansion calls. Not a public API: it may change in any release.
#[doc(hidden)]
pub mod __private {
    pub use crate::entry::{
        Flavor, Inject, TestFn, TestFuture, TestOutcome, TestSpec, injected, run_test,
    };
}
