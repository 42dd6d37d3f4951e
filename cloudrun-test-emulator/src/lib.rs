//! A local stand-in for Google's identity endpoints and Cloud Run's IAM front.
//!
//! The emulator listens on 127.0.0.1 (ports chosen by the OS) and speaks the real
//! wire protocols, so real clients, including the `gcloud` CLI, work against it:
//!
//! - `POST /token`: Google's OAuth 2.0 token endpoint. Service-account assertions
//!   (RS256, checked against the keys handed out by
//!   [`Emulator::service_account_key`]) are exchanged for ID tokens
//!   (`target_audience`) or access tokens (`scope`).
//!   The `refresh_token` grant serves user credentials from
//!   [`Emulator::authorized_user_credentials`] (ID tokens' audience: the client id).
//! - `GET /oauth2/v3/certs`: the JWKS verifying the ID tokens.
//! - `GET /computeMetadata/v1/instance/service-accounts/default/{identity,token,email}`:
//!   the metadata server (`GCE_METADATA_HOST` = [`Emulator::metadata_host`]), for
//!   [`EmulatorBuilder::metadata_service_account`]; needs `Metadata-Flavor: Google`.
//! - `POST /v1/projects/-/serviceAccounts/EMAIL:generateIdToken` / `:generateAccessToken`:
//!   IAM Credentials, for callers granted [`EmulatorBuilder::token_creator`].
//! - `POST /v1/token`: STS token exchange for workload identity federation, for subject
//!   tokens registered with [`EmulatorBuilder::workload_identity_subject`].
//! - `GET /v2/projects/P/locations/R/services[/S]`: the Cloud Run Admin API v2.
//! - `GET /_emulator/stats` (and `DELETE` to reset): the [`Stats`] counters.
//! - One origin per service and per traffic tag, guarded like Cloud Run's front:
//!   403 without a token, 401 for an invalid token, 403 for a caller who is not
//!   an invoker; accepted requests reach the built-in echo app or an upstream.
//!
//! The real `gcloud` works against it with a key file from
//! [`Emulator::write_service_account_key`] (its `token_uri` is the emulator):
//!
//! ```text
//! export CLOUDSDK_CONFIG=$(mktemp -d)        # keep your own gcloud setup out of it
//! gcloud auth activate-service-account --key-file KEY.json
//! gcloud auth print-identity-token --audiences=http://127.0.0.1:PORT
//! ```
//!
//! ```no_run
//! use cloudrun_test_emulator::{Emulator, ServiceConfig};
//!
//! let emulator = Emulator::builder()
//!     .service(ServiceConfig::new("hello").invoker("serviceAccount:tester@emulated-project.iam.gserviceaccount.com"))
//!     .start()?;
//! let key_file = emulator.service_account_key("tester@emulated-project.iam.gserviceaccount.com");
//! let url = emulator.service_url("hello").unwrap();
//! # Ok::<(), cloudrun_test_emulator::Error>(())
//! ```

#![warn(missing_docs)]

// Layout. This file is the whole public API: every public type, and every method of
// `Emulator` and `EmulatorBuilder`. The modules below implement it and depend on one
// another one way only (`.ci/module_cycles.py`); they may use this file's plain data
// types (`Stats`, `Fault`, `Upstream`, the builder's configuration), never `Emulator`.
// From the top down:
// - `server`: start-up, routing, listeners (connection resets), shutdown;
// - the endpoints: `oauth` (token endpoint, JWKS), `metadata`, `iam` (IAM
//   Credentials), `sts`, `admin` (Admin API, stats) and `front/` (the IAM check, its
//   pages, the echo app and the proxy); they share `mint` (signing ID tokens) and
//   `protocol` (wire shapes), and each answers its own injected faults;
// - `state`: what a running emulator knows, made of `services`, `accounts`,
//   `identity` and `faults/` (the faults in force and their text form);
// - at the bottom: `keys` and `jwt` (RSA, JWTs), `members` (IAM members), `clock`,
//   `locks`. Beside them, `config` checks a builder and `environment` is what a
//   command run against the emulator sees.
mod accounts;
mod admin;
mod clock;
mod config;
mod environment;
mod faults;
mod front;
mod iam;
mod identity;
mod jwt;
mod keys;
mod locks;
mod members;
mod metadata;
mod mint;
mod oauth;
mod protocol;
mod server;
mod services;
mod state;
mod sts;

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// URLs as the emulator hands them out (re-exported from `reqwest`).
pub use reqwest::Url;
use serde::{Deserialize, Serialize};

use crate::locks::write;
use crate::state::State;

/// A running emulator. Dropping it stops it: its listeners close and its thread ends.
///
/// It runs on a thread of its own with its own tokio runtime, so it may be started
/// from sync code or from inside any runtime, and outlives the runtimes of the
/// tests that use it (it can live in a `static`).
pub struct Emulator {
    state: Arc<State>,
    /// Dropped after `state`'s key thread is told to stop (see `Drop`).
    _serving: server::Serving,
}

/// Configures an [`Emulator`]; see [`Emulator::builder`].
#[derive(Debug, Clone)]
pub struct EmulatorBuilder {
    project: String,
    region: String,
    services: Vec<ServiceConfig>,
    id_token_lifetime: Duration,
    identity: identity::IdentityConfig,
}

/// A Cloud Run service to emulate: a name, what answers behind the IAM front,
/// who may invoke it, its traffic tags and custom audiences.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceConfig {
    name: String,
    upstream: Upstream,
    invokers: Vec<String>,
    tags: Vec<String>,
    custom_audiences: Vec<String>,
    timeout: Duration,
    use_http2: bool,
}

/// What answers requests the IAM front lets through.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Upstream {
    /// A built-in app answering `200 {"service","tag","method","path","caller","headers"}`
    /// (`headers`: the forwarded ones it received, a token only without its signature),
    /// plus `/ws` (a WebSocket echo), `/sse?count=N&interval_ms=M` (server-sent `tick`
    /// events) and `/stream?bytes=N` (a body streamed in 64 KiB chunks).
    Echo,
    /// A real HTTP server (e.g. the user's service on localhost) the front proxies to,
    /// as Cloud Run forwards to its container: the verified token arrives as
    /// `Bearer HEADER.PAYLOAD.SIGNATURE_REMOVED_BY_GOOGLE`, with `X-Forwarded-For`,
    /// `X-Forwarded-Proto`, `X-Cloud-Trace-Context` and `traceparent`; bodies stream
    /// both ways and WebSocket upgrades pass. Requests for `/a?b` go to this URL's
    /// path joined with `/a?b`.
    Url(Url),
}

/// Counters of what the emulator did since start (or [`Emulator::reset_stats`]).
/// Also served as JSON at `GET {base_url}_emulator/stats`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stats {
    /// ID tokens issued, by every endpoint that issues them.
    pub id_tokens_minted: u64,
    /// Access tokens issued, by every endpoint that issues them.
    pub access_tokens_minted: u64,
    /// ID tokens issued, by audience.
    pub id_tokens_by_audience: BTreeMap<String, u64>,
    /// Requests the IAM front let through.
    pub front_accepted: u64,
    /// 401 answers: invalid, expired or wrongly addressed tokens.
    pub front_unauthorized: u64,
    /// 403 answers: no token, or a caller who is not an invoker.
    pub front_forbidden: u64,
    /// Faults injected so far (see [`Fault`]): errors answered, requests held or
    /// delayed, connections reset, key rotations.
    #[serde(default)]
    pub faults_injected: u64,
    /// Admin API `services.get` requests received.
    #[serde(default)]
    pub admin_lookups: u64,
}

/// One fault to inject with [`Emulator::inject`]; it applies from the next request on.
/// Every injected fault counts in [`Stats::faults_injected`].
///
/// As text (`FromStr`, `Display`), for command-line flags; durations are written as
/// `humantime` writes them (`500ms`, `2s`, `1m30s`; a bare number is seconds):
///
/// | text | fault |
/// |---|---|
/// | `token-error=503x2` | the token endpoint answers 503 twice (`=503`: once) |
/// | `token-delay=2s` | every token answer comes 2 s late (`0s` ends it) |
/// | `token-hang` | token requests hang until [`Emulator::hang_token_requests`]`(false)` or [`Emulator::clear_faults`] |
/// | `admin-error=503x2` | the Admin API answers 503 twice (`=503`: once) |
/// | `service-error=hello:503x2` | service `hello` answers 503 twice |
/// | `connection-reset=hello:x2` | the next 2 connections to `hello` are reset (`hello`: once) |
/// | `cold-start=hello:3s` | `hello`'s next request waits 3 s |
/// | `rotate-key` | the ID token signing key is replaced |
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Fault {
    /// The token endpoint answers the next `times` requests with `status` and a
    /// JSON OAuth error.
    TokenErrors {
        /// The HTTP status, 100–599.
        status: u16,
        /// How many requests fail.
        times: u32,
    },
    /// Every token answer comes this late, until set back to zero.
    TokenDelay(Duration),
    /// Token requests get no answer until released.
    TokenHang,
    /// The Admin API answers the next `times` requests with `status` and a Google
    /// API error.
    AdminErrors {
        /// The HTTP status, 100–599.
        status: u16,
        /// How many requests fail.
        times: u32,
    },
    /// A service's front answers the next `times` requests with `status`, as Cloud
    /// Run's front end does, before looking at the token.
    ServiceErrors {
        /// The service's name.
        service: String,
        /// The HTTP status, 100–599 (401, 429, 503...).
        status: u16,
        /// How many requests fail.
        times: u32,
    },
    /// The next `times` connections to a service are reset before any answer.
    ConnectionResets {
        /// The service's name.
        service: String,
        /// How many connections are reset.
        times: u32,
    },
    /// A service's next request waits first, as after a cold start.
    ColdStart {
        /// The service's name.
        service: String,
        /// How long the request waits.
        delay: Duration,
    },
    /// The key that signs ID tokens is replaced: tokens issued before are answered
    /// with 401 by every front.
    RotateSigningKey,
}

/// Why the emulator could not start, or a fault could not be injected.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The builder's configuration, or a fault, is not one the emulator accepts;
    /// the message says what is wrong and what to write.
    #[error("invalid emulator configuration: {0}")]
    Config(String),
    /// A listener could not be bound.
    #[error("could not listen on 127.0.0.1 for {what}: {source}")]
    Bind {
        /// What the listener was for (the Google endpoints, a service, a tag).
        what: String,
        /// Why binding failed.
        #[source]
        source: std::io::Error,
    },
    /// The emulator's thread or tokio runtime could not be started.
    #[error("could not start the emulator's thread or runtime: {0}")]
    Runtime(#[source] std::io::Error),
}

/// Whether environment variable `name`, inherited from outside the emulator, could
/// choose credentials, a Google endpoint, a project or a service URL for
/// `cloudrun-test` or Google's tools: every `CLOUDRUN_TEST_*` but a few
/// behaviour switches (time limits, the token header, the disk cache switch, the curl
/// program), and every `GOOGLE_*`, `CLOUDSDK_*`, `GCLOUD_*`, `GCE_METADATA*` and
/// `NO_GCE_CHECK`. [`Emulator::make_hermetic`] removes them.
pub fn is_outside_setting(name: &str) -> bool {
    environment::is_outside_setting(name)
}

impl Emulator {
    /// Starts configuring an emulator: project `emulated-project`, region
    /// `europe-west1`, no services, ID tokens valid for an hour.
    pub fn builder() -> EmulatorBuilder {
        EmulatorBuilder {
            project: "emulated-project".to_owned(),
            region: "europe-west1".to_owned(),
            services: Vec::new(),
            id_token_lifetime: Duration::from_secs(3600),
            identity: identity::IdentityConfig::default(),
        }
    }

    // ---- Where things are ----

    /// The Google endpoints' base, `http://127.0.0.1:PORT/`.
    pub fn base_url(&self) -> &Url {
        &self.state.base_url
    }

    /// The OAuth 2.0 token endpoint, `{base_url}token`; the `token_uri` of the key files.
    pub fn token_uri(&self) -> Url {
        self.state.token_uri()
    }

    /// The Cloud Run Admin API base (the same as [`Emulator::base_url`]); it serves
    /// `/v2/projects/...`.
    pub fn run_endpoint(&self) -> Url {
        self.state.base_url.clone()
    }

    /// The JWKS URL, `{base_url}oauth2/v3/certs`.
    pub fn jwks_uri(&self) -> Url {
        self.join("oauth2/v3/certs")
    }

    /// The IAM Credentials API base (the same as [`Emulator::base_url`]), for
    /// `CLOUDRUN_TEST_IAM_ENDPOINT`: it serves
    /// `POST /v1/projects/-/serviceAccounts/EMAIL:generateIdToken` and `:generateAccessToken`.
    pub fn iam_endpoint(&self) -> Url {
        self.state.base_url.clone()
    }

    /// STS's token exchange, `{base_url}v1/token`: the `token_url` of `external_account` files.
    pub fn sts_token_url(&self) -> Url {
        self.join("v1/token")
    }

    /// `127.0.0.1:PORT`: the metadata server's host, for `GCE_METADATA_HOST`. It
    /// serves `/computeMetadata/v1/instance/service-accounts/default/{identity,token,email}`
    /// and `/computeMetadata/v1/project/project-id`, and wants `Metadata-Flavor: Google`.
    pub fn metadata_host(&self) -> String {
        let url = &self.state.base_url;
        format!(
            "{}:{}",
            url.host_str().unwrap_or("127.0.0.1"),
            url.port().unwrap_or(80)
        )
    }

    /// The project id services live in.
    pub fn project(&self) -> &str {
        &self.state.project
    }

    /// The region services live in.
    pub fn region(&self) -> &str {
        &self.state.region
    }

    /// The origin of service `name`'s front (`http://127.0.0.1:PORT/`), or `None` if
    /// there is no such service. As an ID token audience, drop the trailing slash.
    pub fn service_url(&self, name: &str) -> Option<Url> {
        self.state
            .service(name)
            .map(|service| service.url().clone())
    }

    /// The origin of traffic tag `tag` of `service`, if both exist.
    pub fn tag_url(&self, service: &str, tag: &str) -> Option<Url> {
        let service = self.state.service(service)?;
        let (_, origin) = service.tags().find(|(name, _)| *name == tag)?;
        Some(origin.url.clone())
    }

    // ---- Identities ----

    /// Creates service account `email` (or returns the existing one) and returns its
    /// key file JSON, as Google issues it, with `token_uri` pointing at this emulator.
    ///
    /// Generating a key takes up to a few hundred milliseconds in debug builds; a
    /// few keys are made in the background after start so the first calls are quick.
    ///
    /// # Panics
    /// If aws-lc cannot generate or serialize an RSA key (it does not fail in practice).
    pub fn service_account_key(&self, email: &str) -> String {
        let key_file = self
            .state
            .accounts
            .get_or_create(email, &self.state.keys)
            .and_then(|account| self.state.key_file(&account));
        match key_file {
            Ok(key_file) => key_file,
            Err(error) => panic!("creating a key for {email} failed: {error}"),
        }
    }

    /// Writes [`Emulator::service_account_key`] to a file in `dir` (readable by its
    /// owner only, mode 0600 on Unix) and returns the file's path.
    pub fn write_service_account_key(&self, email: &str, dir: &Path) -> std::io::Result<PathBuf> {
        accounts::write_key_file(dir, email, &self.service_account_key(email))
    }

    /// User credentials for `email`, as `gcloud auth application-default login` writes
    /// them (`"type": "authorized_user"`), with a fresh refresh token and `token_uri`
    /// pointing at this emulator. The client is gcloud's
    /// (`32555940559.apps.googleusercontent.com`), so the ID tokens carry the audience
    /// Cloud Run accepts for gcloud user accounts; the emulator does not check client
    /// secrets. The refresh token also works with `gcloud auth activate-refresh-token`
    /// when gcloud's `auth/token_host` is [`Emulator::token_uri`].
    ///
    /// Make the user an invoker with `ServiceConfig::invoker("user:EMAIL")`.
    pub fn authorized_user_credentials(&self, email: &str) -> String {
        let client_id = services::GCLOUD_CLIENT_ID;
        let refresh_token = self.state.identities.add_user(email, client_id);
        let mut text = serde_json::to_string_pretty(&serde_json::json!({
            "account": "",
            "client_id": client_id,
            "client_secret": "emulated-client-secret",
            "refresh_token": refresh_token,
            "token_uri": self.state.token_uri().as_str(),
            "type": "authorized_user",
            "universe_domain": "googleapis.com",
        }))
        .unwrap_or_default();
        text.push('\n');
        text
    }

    /// The service account the metadata server hands out tokens for.
    pub fn metadata_service_account(&self) -> String {
        self.state.identities.metadata_account()
    }

    /// The audience of the emulated workload identity provider, for `external_account`
    /// files: `//iam.googleapis.com/projects/123456789012/locations/global/workloadIdentityPools/emulated-pool/providers/emulated-provider`.
    pub fn workload_identity_audience(&self) -> String {
        identity::workload_identity_audience()
    }

    /// Every principal of the emulated pool, as a member for [`EmulatorBuilder::token_creator`].
    pub fn workload_identity_pool_members(&self) -> String {
        identity::workload_identity_pool_members()
    }

    /// See [`EmulatorBuilder::token_creator`]; effective for the next request.
    pub fn add_token_creator(&self, caller: &str, target: &str) {
        self.state
            .identities
            .add_token_creator(caller.to_owned(), target.to_owned());
    }

    /// See [`EmulatorBuilder::workload_identity_subject`]; effective for the next request.
    pub fn add_workload_identity_subject(&self, subject_token: &str, principal: &str) {
        self.state
            .identities
            .add_subject(subject_token.to_owned(), principal);
    }

    // ---- Who may invoke a service ----

    /// Grants `member` (`serviceAccount:EMAIL`, `user:EMAIL`, `group:EMAIL`,
    /// `domain:DOMAIN`, bare `EMAIL`, `allUsers` or `allAuthenticatedUsers`) the right
    /// to invoke `service`, effective for the next request. Unknown services and
    /// members are ignored with a warning.
    pub fn add_invoker(&self, service: &str, member: &str) {
        let Some(service) = self.state.service(service) else {
            tracing::warn!(service, "add_invoker: no such service");
            return;
        };
        if !members::member_is_valid(member) {
            tracing::warn!(member, "add_invoker: not an IAM member");
            return;
        }
        let mut invokers = write(&service.invokers);
        if !invokers.iter().any(|existing| existing == member) {
            invokers.push(member.to_owned());
        }
    }

    /// Revokes what [`Emulator::add_invoker`] (or [`ServiceConfig::invoker`]) granted.
    pub fn remove_invoker(&self, service: &str, member: &str) {
        if let Some(service) = self.state.service(service) {
            write(&service.invokers).retain(|existing| existing != member);
        }
    }

    // ---- The environment of a command using the emulator ----

    /// The environment that points `cloudrun-test` at this emulator, authenticating
    /// with the key file at `key_file` (see [`Emulator::write_service_account_key`]):
    /// credentials, project, region, the Admin API and IAM Credentials. Service URLs are
    /// left to the Admin API lookup, as in production. It only adds: the caller's own
    /// settings (a `cloudrun-test.toml`, `CLOUDRUN_TEST_URL_*`...) still apply, which
    /// tests of those settings want. `cloudrun-test emulate` gives its command
    /// [`Emulator::hermetic_environment`] instead, through [`Emulator::make_hermetic`].
    pub fn environment(&self, key_file: &Path) -> Vec<(String, String)> {
        environment::environment(&self.state, key_file)
    }

    /// [`Emulator::environment`] plus what keeps a command in the emulator's world,
    /// once the caller's own settings are gone ([`is_outside_setting`]):
    ///
    /// - `CLOUDRUN_TEST_EMULATOR` (this emulator's base URL) and
    ///   `CLOUDRUN_TEST_EMULATED_SERVICES` (its services, comma-separated): `cloudrun-test`
    ///   then resolves only these services, to this emulator, and ignores
    ///   `cloudrun-test.toml`; any other service, or a URL off this machine, is an error;
    /// - `CLOUDRUN_TEST_URL_<SERVICE>` for each service (scripts want it too);
    /// - `CLOUDRUN_TEST_CACHE_DIR`: the token cache, in `scratch/token-cache`;
    /// - `CLOUDSDK_CONFIG`: `scratch/gcloud`, so gcloud's own accounts and application
    ///   default credentials are not read (and a `gcloud` run by the command starts empty);
    /// - `GOOGLE_CLOUD_PROJECT`, and `NO_GCE_CHECK=true` (no metadata server is looked for).
    ///
    /// `scratch` is a folder that goes when the command ends (`emulate` uses its
    /// temporary folder).
    pub fn hermetic_environment(&self, key_file: &Path, scratch: &Path) -> Vec<(String, String)> {
        environment::hermetic_environment(&self.state, key_file, scratch)
    }

    /// Makes `command` hermetic: removes every inherited variable that
    /// [`is_outside_setting`] names, then sets [`Emulator::hermetic_environment`].
    /// Everything else (PATH, HOME, CARGO_HOME, proxies...) is inherited as usual.
    pub fn make_hermetic(
        &self,
        command: &mut std::process::Command,
        key_file: &Path,
        scratch: &Path,
    ) {
        environment::make_hermetic(&self.state, command, key_file, scratch);
    }

    // ---- Counters ----

    /// The counters so far.
    pub fn stats(&self) -> Stats {
        self.state.stats()
    }

    /// Sets every counter back to zero.
    pub fn reset_stats(&self) {
        self.state.reset_stats();
    }

    // ---- Faults ----

    /// Injects `fault`; see [`Fault`]. Fails for an unknown service, an HTTP status
    /// outside 100–599, or a 33rd key rotation.
    pub fn inject(&self, fault: Fault) -> Result<(), Error> {
        tracing::info!(%fault, "fault injected");
        if fault != Fault::RotateSigningKey {
            return self.state.faults.set(fault, &self.state.service_names());
        }
        match self.state.keys.rotate() {
            Ok(Some(key)) => tracing::info!(kid = key.kid(), "signing key rotated"),
            Ok(None) => {
                return Err(Error::Config(format!(
                    "the signing key was rotated {} times already; that is the limit",
                    keys::MAX_ROTATIONS
                )));
            }
            Err(error) => return Err(Error::Config(error.to_string())),
        }
        self.state.count_fault();
        Ok(())
    }

    /// The token endpoint answers the next `times` token requests with `status`
    /// (e.g. 503) and a JSON OAuth error.
    ///
    /// # Panics
    /// If `status` is not an HTTP status.
    pub fn fail_token_requests(&self, times: u32, status: u16) {
        self.inject_or_panic(Fault::TokenErrors { status, times });
    }

    /// The Admin API answers the next `times` requests with `status` (e.g. 503).
    ///
    /// # Panics
    /// If `status` is not an HTTP status.
    pub fn fail_admin_requests(&self, times: u32, status: u16) {
        self.inject_or_panic(Fault::AdminErrors { status, times });
    }

    /// Every token answer comes `delay` late, until set back to zero.
    pub fn delay_token_requests(&self, delay: Duration) {
        self.inject_or_panic(Fault::TokenDelay(delay));
    }

    /// While `true`, token requests get no answer; set `false` to let the held ones go on.
    pub fn hang_token_requests(&self, hang: bool) {
        if hang {
            self.inject_or_panic(Fault::TokenHang);
        } else {
            self.state.faults.release_token_requests();
        }
    }

    /// Service `service` answers its next `times` requests with `status` (401, 429,
    /// 503...), as Cloud Run's front end does, before checking the token.
    ///
    /// # Panics
    /// If there is no such service or `status` is not an HTTP status.
    pub fn fail_service_requests(&self, service: &str, times: u32, status: u16) {
        self.inject_or_panic(Fault::ServiceErrors {
            service: service.to_owned(),
            status,
            times,
        });
    }

    /// The next `times` connections to `service` are reset before any answer.
    ///
    /// # Panics
    /// If there is no such service.
    pub fn reset_service_connections(&self, service: &str, times: u32) {
        self.inject_or_panic(Fault::ConnectionResets {
            service: service.to_owned(),
            times,
        });
    }

    /// The next request to `service` waits `delay` first, as after a cold start.
    ///
    /// # Panics
    /// If there is no such service.
    pub fn cold_start(&self, service: &str, delay: Duration) {
        self.inject_or_panic(Fault::ColdStart {
            service: service.to_owned(),
            delay,
        });
    }

    /// Replaces the key that signs ID tokens: tokens issued so far are answered
    /// with 401 by every front, new ones are signed with the new key.
    ///
    /// # Panics
    /// After 32 rotations.
    pub fn rotate_signing_key(&self) {
        self.inject_or_panic(Fault::RotateSigningKey);
    }

    /// Ends every fault (a rotated key stays rotated) and releases held token requests.
    pub fn clear_faults(&self) {
        self.state.faults.clear();
    }

    fn inject_or_panic(&self, fault: Fault) {
        if let Err(error) = self.inject(fault) {
            panic!("{error}");
        }
    }

    /// `{base_url}path`.
    fn join(&self, path: &str) -> Url {
        let base = &self.state.base_url;
        base.join(path).unwrap_or_else(|_| base.clone())
    }
}

impl fmt::Debug for Emulator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Emulator")
            .field("base_url", &self.state.base_url.as_str())
            .field("project", &self.state.project)
            .field("region", &self.state.region)
            .field("services", &self.state.service_names())
            .finish_non_exhaustive()
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        // The background key thread stops early; the serving thread stops when
        // `_serving` is dropped, right after this.
        self.state.keys.stop();
    }
}

impl EmulatorBuilder {
    /// The project id (default `emulated-project`).
    pub fn project(mut self, id: &str) -> Self {
        id.clone_into(&mut self.project);
        self
    }

    /// The region (default `europe-west1`).
    pub fn region(mut self, region: &str) -> Self {
        region.clone_into(&mut self.region);
        self
    }

    /// Adds a service.
    pub fn service(mut self, service: ServiceConfig) -> Self {
        self.services.push(service);
        self
    }

    /// How long the ID tokens issued are valid (default one hour; at least a second).
    pub fn id_token_lifetime(mut self, lifetime: Duration) -> Self {
        self.id_token_lifetime = lifetime;
        self
    }

    /// The service account the metadata server's instance runs as (default
    /// `compute@PROJECT.iam.gserviceaccount.com`).
    pub fn metadata_service_account(mut self, email: &str) -> Self {
        self.identity.metadata_account = Some(email.to_owned());
        self
    }

    /// Lets `caller` mint tokens as service account `target` through IAM Credentials
    /// (`roles/iam.serviceAccountTokenCreator`). `caller` is an IAM member:
    /// `serviceAccount:EMAIL`, `user:EMAIL`, a bare email, a federated
    /// `principal://...`, or `principalSet://.../workloadIdentityPools/POOL/*`
    /// ([`Emulator::workload_identity_pool_members`]).
    pub fn token_creator(mut self, caller: &str, target: &str) -> Self {
        self.identity
            .token_creators
            .push((caller.to_owned(), target.to_owned()));
        self
    }

    /// Makes STS accept `subject_token` (exactly, or every token starting with the
    /// text before a final `*`) and turn it into federated principal `principal`
    /// (a `principal://...` name, or a bare subject that becomes
    /// `principal://iam.googleapis.com/projects/123456789012/locations/global/workloadIdentityPools/emulated-pool/subject/SUBJECT`).
    pub fn workload_identity_subject(mut self, subject_token: &str, principal: &str) -> Self {
        self.identity
            .subjects
            .push((subject_token.to_owned(), principal.to_owned()));
        self
    }

    /// Binds every listener, starts serving on the emulator's own thread and
    /// returns once requests are answered.
    pub fn start(self) -> Result<Emulator, Error> {
        config::validate(&self)?;
        let (state, serving) = server::start(self)?;
        Ok(Emulator {
            state,
            _serving: serving,
        })
    }
}

impl ServiceConfig {
    /// A service answered by the echo app, with no invokers (every token gets 403).
    pub fn new(name: &str) -> Self {
        ServiceConfig {
            name: name.to_owned(),
            upstream: Upstream::Echo,
            invokers: Vec::new(),
            tags: Vec::new(),
            custom_audiences: Vec::new(),
            timeout: ServiceConfig::DEFAULT_TIMEOUT,
            use_http2: false,
        }
    }

    /// Cloud Run's default request timeout.
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(300);
    /// The longest request timeout Cloud Run accepts.
    pub const MAX_TIMEOUT: Duration = Duration::from_secs(3600);

    /// How long a request may take, answer body and WebSocket session included
    /// (`gcloud run deploy --timeout`; default 300 s, at most 3600 s). Past it the
    /// front answers 504, or closes the connection if the answer had begun.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// End-to-end HTTP/2 (`gcloud run deploy --use-http2`): the front speaks HTTP/2
    /// cleartext (h2c, prior knowledge) to the upstream, as gRPC streaming needs.
    /// WebSockets need HTTP/1, so not on such a service.
    pub fn use_http2(mut self, use_http2: bool) -> Self {
        self.use_http2 = use_http2;
        self
    }

    /// What answers behind the front (default [`Upstream::Echo`]).
    pub fn upstream(mut self, upstream: Upstream) -> Self {
        self.upstream = upstream;
        self
    }

    /// Grants `roles/run.invoker` to `member`: `serviceAccount:EMAIL`, `user:EMAIL`,
    /// `group:EMAIL`, `domain:DOMAIN`, bare `EMAIL`, or `allUsers` (public service).
    pub fn invoker(mut self, member: &str) -> Self {
        self.invokers.push(member.to_owned());
        self
    }

    /// A traffic tag, served on its own origin (as `https://TAG---SERVICE-...run.app` is).
    pub fn tag(mut self, tag: &str) -> Self {
        self.tags.push(tag.to_owned());
        self
    }

    /// A custom audience the front accepts in ID tokens besides the service's URLs.
    pub fn custom_audience(mut self, audience: &str) -> Self {
        self.custom_audiences.push(audience.to_owned());
        self
    }
}
