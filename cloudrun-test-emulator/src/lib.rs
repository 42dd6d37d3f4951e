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

mod admin;
mod faults;
mod front;
mod iam;
mod identity;
mod jwt;
mod keys;
mod metadata;
mod oauth;
mod server;
mod state;
mod sts;

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

pub use reqwest::Url;
use serde::{Deserialize, Serialize};

pub use crate::faults::Fault;
use crate::state::State;

/// A running emulator. Dropping it stops it: its listeners close and its thread ends.
///
/// It runs on a thread of its own with its own tokio runtime, so it may be started
/// from sync code or from inside any runtime, and outlives the runtimes of the
/// tests that use it (it can live in a `static`).
pub struct Emulator {
    state: Arc<State>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
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
}

/// What answers requests the IAM front lets through.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Upstream {
    /// A built-in app answering `200 {"service","tag","method","path","caller"}`.
    Echo,
    /// A real HTTP server (e.g. the user's service on localhost) the front proxies to.
    /// Requests for `/a?b` go to this URL's path joined with `/a?b`.
    Url(Url),
}

/// Counters of what the emulator did since start (or [`Emulator::reset_stats`]).
/// Also served as JSON at `GET {base_url}_emulator/stats`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stats {
    pub id_tokens_minted: u64,
    pub access_tokens_minted: u64,
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

/// Why the emulator could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error("invalid emulator configuration: {0}")]
    Config(String),
    #[error("could not listen on 127.0.0.1 for {what}: {source}")]
    Bind {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("could not start the emulator's thread or runtime: {0}")]
    Runtime(#[source] std::io::Error),
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
        self.state
            .base_url
            .join("oauth2/v3/certs")
            .unwrap_or_else(|_| self.state.base_url.clone())
    }

    pub fn project(&self) -> &str {
        &self.state.project
    }

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
            .account_or_create(email)
            .and_then(|account| self.state.key_file(&account));
        match key_file {
            Ok(key_file) => key_file,
            Err(error) => panic!("creating a key for {email} failed: {error}"),
        }
    }

    /// Writes [`Emulator::service_account_key`] to a file in `dir` (readable by its
    /// owner only, mode 0600 on Unix) and returns the file's path.
    pub fn write_service_account_key(&self, email: &str, dir: &Path) -> std::io::Result<PathBuf> {
        let key_file = self.service_account_key(email);
        let id: String = serde_json::from_str::<serde_json::Value>(&key_file)
            .ok()
            .and_then(|json| {
                json["private_key_id"]
                    .as_str()
                    .map(|id| id.chars().take(12).collect())
            })
            .unwrap_or_default();
        let local: String = email
            .split('@')
            .next()
            .unwrap_or_default()
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        let path = dir.join(format!("{local}-{id}.json"));
        write_private_file(&path, key_file.as_bytes())?;
        Ok(path)
    }

    /// Grants `member` (`serviceAccount:EMAIL`, `user:EMAIL`, `group:EMAIL`,
    /// `domain:DOMAIN`, bare `EMAIL`, `allUsers` or `allAuthenticatedUsers`) the right
    /// to invoke `service`, effective for the next request. Unknown services and
    /// members are ignored with a warning.
    pub fn add_invoker(&self, service: &str, member: &str) {
        let Some(service) = self.state.service(service) else {
            tracing::warn!(service, "add_invoker: no such service");
            return;
        };
        if !state::member_is_valid(member) {
            tracing::warn!(member, "add_invoker: not an IAM member");
            return;
        }
        let mut invokers = service
            .invokers
            .write()
            .unwrap_or_else(|poison| poison.into_inner());
        if !invokers.iter().any(|existing| existing == member) {
            invokers.push(member.to_owned());
        }
    }

    /// Revokes what [`Emulator::add_invoker`] (or [`ServiceConfig::invoker`]) granted.
    pub fn remove_invoker(&self, service: &str, member: &str) {
        if let Some(service) = self.state.service(service) {
            let mut invokers = service
                .invokers
                .write()
                .unwrap_or_else(|poison| poison.into_inner());
            invokers.retain(|existing| existing != member);
        }
    }

    /// The environment that points `cloudrun-test` at this emulator, authenticating
    /// with the key file at `key_file` (see [`Emulator::write_service_account_key`]):
    /// credentials, project, region, the Admin API and IAM Credentials. Service URLs are
    /// left to the Admin API lookup, as in production. It only adds: the caller's own
    /// settings (a `cloudrun-test.toml`, `CLOUDRUN_TEST_URL_*`...) still apply, which
    /// tests of those settings want. `cloudrun-test emulate` gives its command
    /// [`Emulator::hermetic_environment`] instead, through [`Emulator::make_hermetic`].
    pub fn environment(&self, key_file: &Path) -> Vec<(String, String)> {
        let base = self.base_url().as_str().trim_end_matches('/').to_owned();
        vec![
            (
                "GOOGLE_APPLICATION_CREDENTIALS".into(),
                key_file.display().to_string(),
            ),
            ("CLOUDRUN_TEST_PROJECT".into(), self.project().into()),
            ("CLOUDRUN_TEST_REGION".into(), self.region().into()),
            ("CLOUDRUN_TEST_RUN_ENDPOINT".into(), base.clone()),
            // Impersonation (`impersonate = "..."`) mints through the emulated IAM.
            ("CLOUDRUN_TEST_IAM_ENDPOINT".into(), base),
        ]
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
        let base = self.base_url().as_str().trim_end_matches('/').to_owned();
        let mut environment = self.environment(key_file);
        // The names are read by `cloudrun_test`'s settings (`Emulated`).
        environment.push(("CLOUDRUN_TEST_EMULATOR".into(), base));
        let names: Vec<&str> = self
            .state
            .services
            .iter()
            .map(|service| service.name.as_str())
            .collect();
        environment.push(("CLOUDRUN_TEST_EMULATED_SERVICES".into(), names.join(",")));
        for service in &self.state.services {
            let suffix = service.name.to_ascii_uppercase().replace('-', "_");
            environment.push((
                format!("CLOUDRUN_TEST_URL_{suffix}"),
                service.url().as_str().trim_end_matches('/').to_owned(),
            ));
        }
        for (name, path) in [
            ("CLOUDRUN_TEST_CACHE_DIR", scratch.join("token-cache")),
            ("CLOUDSDK_CONFIG", scratch.join("gcloud")),
        ] {
            environment.push((name.into(), path.display().to_string()));
        }
        environment.push(("GOOGLE_CLOUD_PROJECT".into(), self.project().into()));
        environment.push(("NO_GCE_CHECK".into(), "true".into()));
        environment
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
        for (name, _) in std::env::vars_os() {
            if let Some(name) = name.to_str()
                && is_outside_setting(name)
            {
                command.env_remove(name);
            }
        }
        command.envs(self.hermetic_environment(key_file, scratch));
    }

    /// The counters so far.
    pub fn stats(&self) -> Stats {
        self.state.stats()
    }

    /// Sets every counter back to zero.
    pub fn reset_stats(&self) {
        self.state.reset_stats();
    }
}

impl fmt::Debug for Emulator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let services: Vec<&str> = self
            .state
            .services
            .iter()
            .map(|service| service.name.as_str())
            .collect();
        f.debug_struct("Emulator")
            .field("base_url", &self.state.base_url.as_str())
            .field("project", &self.state.project)
            .field("region", &self.state.region)
            .field("services", &services)
            .finish_non_exhaustive()
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        self.state.keys.stop();
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
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

    /// Binds every listener, starts serving on the emulator's own thread and
    /// returns once requests are answered.
    pub fn start(self) -> Result<Emulator, Error> {
        self.validate()?;
        server::start(self)
    }

    fn validate(&self) -> Result<(), Error> {
        let config = |message: String| Err(Error::Config(message));
        for (what, value) in [("project", &self.project), ("region", &self.region)] {
            if value.is_empty() || !value.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
                return config(format!(
                    "{what} {value:?} must be non-empty letters, digits and '-'"
                ));
            }
        }
        for (index, service) in self.services.iter().enumerate() {
            let name = &service.name;
            if !is_resource_name(name) {
                return config(format!(
                    "service name {name:?} must start with a lower-case letter and hold only \
                     lower-case letters, digits and '-' (as on Cloud Run)"
                ));
            }
            if self.services[..index]
                .iter()
                .any(|other| &other.name == name)
            {
                return config(format!("service {name:?} is configured twice"));
            }
            for (tag_index, tag) in service.tags.iter().enumerate() {
                if !is_resource_name(tag) {
                    return config(format!(
                        "tag {tag:?} of service {name:?} must start with a lower-case letter and hold \
                         only lower-case letters, digits and '-'"
                    ));
                }
                if service.tags[..tag_index].contains(tag) {
                    return config(format!(
                        "tag {tag:?} of service {name:?} is configured twice"
                    ));
                }
            }
            if let Some(member) = service
                .invokers
                .iter()
                .find(|member| !state::member_is_valid(member))
            {
                return config(format!(
                    "invoker {member:?} of service {name:?} is not an IAM member; use \
                     serviceAccount:EMAIL, user:EMAIL, group:EMAIL, domain:DOMAIN, EMAIL or allUsers"
                ));
            }
            if let Upstream::Url(url) = &service.upstream
                && !matches!(url.scheme(), "http" | "https")
            {
                return config(format!(
                    "upstream {url} of service {name:?} is not an http(s) URL"
                ));
            }
        }
        Ok(())
    }
}

/// `CLOUDRUN_TEST_*` variables that choose neither credentials nor where requests go,
/// so a hermetic command keeps them: time limits, the token header, the disk cache
/// switch, and the curl program.
const KEPT_SETTINGS: [&str; 6] = [
    "CLOUDRUN_TEST_TIMEOUT",
    "CLOUDRUN_TEST_TOKEN_TIMEOUT",
    "CLOUDRUN_TEST_GCLOUD_TIMEOUT",
    "CLOUDRUN_TEST_TOKEN_HEADER",
    "CLOUDRUN_TEST_DISK_CACHE",
    "CLOUDRUN_TEST_CURL",
];

/// Whether environment variable `name`, inherited from outside the emulator, could
/// choose credentials, a Google endpoint, a project or a service URL for
/// `cloudrun-test` or Google's tools: every `CLOUDRUN_TEST_*` but a few
/// behaviour switches, and every `GOOGLE_*`, `CLOUDSDK_*`, `GCLOUD_*`, `GCE_METADATA*`
/// and `NO_GCE_CHECK`. Whole families rather than the names known today, so a new
/// setting cannot slip through. [`Emulator::make_hermetic`] removes them.
pub fn is_outside_setting(name: &str) -> bool {
    if name.starts_with("CLOUDRUN_TEST_") {
        return !KEPT_SETTINGS.contains(&name);
    }
    ["GOOGLE_", "CLOUDSDK_", "GCLOUD_", "GCE_METADATA"]
        .iter()
        .any(|prefix| name.starts_with(prefix))
        || name == "NO_GCE_CHECK"
}

fn is_resource_name(name: &str) -> bool {
    name.starts_with(|c: char| c.is_ascii_lowercase())
        && name.len() <= 63
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
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
        }
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

/// Writes a file only its owner can read.
fn write_private_file(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
        options.mode(0o600);
        let mut file = options.open(path)?;
        // `mode` applies to new files only.
        file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
        file.write_all(contents)
    }
    #[cfg(not(unix))]
    {
        options.open(path)?.write_all(contents)
    }
}
