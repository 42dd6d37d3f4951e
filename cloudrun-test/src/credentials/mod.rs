//! Where identity tokens come from: one module per credential type behind one trait,
//! and the chain that picks one from the environment.

mod id_token_env;
mod service_account;

use std::fmt;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, OnceLock};

use crate::cache;
use crate::error::Error;
use crate::token::{IdToken, Token};

pub(crate) type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The OAuth scope the Admin API lookup needs.
pub(crate) const CLOUD_PLATFORM_SCOPE: &str = "https://www.googleapis.com/auth/cloud-platform";

/// One kind of credential: it mints identity tokens for an audience and access tokens
/// for Google APIs. Minting always happens on the token fetcher's runtime
/// ([`crate::cache`]), never on a test's.
pub(crate) trait CredentialSource: Send + Sync + 'static {
    /// A short description for messages, e.g. "service-account key file /path/key.json".
    fn describe(&self) -> String;
    /// The principal the tokens are for, when known before minting.
    fn identity(&self) -> Option<String>;
    /// Identifies the credential in cache keys without containing any secret.
    fn fingerprint(&self) -> String;
    /// Whether minted tokens should go to the disk cache (not if they come ready-made).
    fn worth_caching_on_disk(&self) -> bool {
        true
    }
    fn mint_id_token<'a>(
        &'a self,
        http: &'a reqwest::Client,
        audience: &'a str,
    ) -> BoxFuture<'a, Result<Token, Error>>;
    fn mint_access_token<'a>(
        &'a self,
        http: &'a reqwest::Client,
    ) -> BoxFuture<'a, Result<Token, Error>>;
}

/// The credentials tests authenticate with. Cheap to clone; tokens minted with them
/// are cached process-wide per (credential, audience).
#[derive(Clone)]
pub struct Credentials {
    source: Arc<dyn CredentialSource>,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("source", &self.source.describe())
            .finish()
    }
}

impl Credentials {
    /// Picks credentials from the environment, in this order:
    /// 1. `CLOUDRUN_TEST_ID_TOKEN`: a ready identity token, used as is;
    /// 2. `GOOGLE_APPLICATION_CREDENTIALS`: a credentials file;
    /// 3. gcloud's application default credentials file
    ///    (`$CLOUDSDK_CONFIG` or `~/.config/gcloud`, `application_default_credentials.json`).
    ///
    /// The choice is made once per process and then reused.
    pub fn from_env() -> Result<Credentials, Error> {
        static FROM_ENV: OnceLock<Result<Credentials, Error>> = OnceLock::new();
        FROM_ENV.get_or_init(Self::choose_from_env).clone()
    }

    fn choose_from_env() -> Result<Credentials, Error> {
        let mut tried = Vec::new();
        match std::env::var("CLOUDRUN_TEST_ID_TOKEN") {
            Ok(token) if !token.trim().is_empty() => {
                return Ok(Credentials::from_id_token(token.trim()));
            }
            _ => tried.push("  - CLOUDRUN_TEST_ID_TOKEN: not set".to_string()),
        }
        match std::env::var_os("GOOGLE_APPLICATION_CREDENTIALS") {
            Some(path) if !path.is_empty() => return Credentials::from_file(PathBuf::from(path)),
            _ => tried.push("  - GOOGLE_APPLICATION_CREDENTIALS: not set".into()),
        }
        match crate::settings::gcloud_config_dir() {
            Some(dir) => {
                let well_known = dir.join("application_default_credentials.json");
                if well_known.is_file() {
                    return Credentials::from_file(well_known);
                }
                tried.push(format!(
                    "  - {}: no such file (`gcloud auth application-default login` writes it)",
                    well_known.display()
                ));
            }
            None => tried.push(
                "  - gcloud's application default credentials: neither CLOUDSDK_CONFIG nor HOME is set"
                    .into(),
            ),
        }
        Err(Error::NoCredentials {
            tried: tried.join("\n"),
        })
    }

    /// A ready identity token, used for every audience (the service decides if it fits).
    pub fn from_id_token(token: impl Into<String>) -> Credentials {
        Credentials {
            source: Arc::new(id_token_env::StaticIdToken::new(token.into())),
        }
    }

    /// A credentials file as `GOOGLE_APPLICATION_CREDENTIALS` names it.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Credentials, Error> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|error| Error::CredentialsFile {
            path: path.to_owned(),
            problem: format!("cannot be read ({error})"),
            fix: "point GOOGLE_APPLICATION_CREDENTIALS at an existing key file, e.g. one from \
                  `gcloud iam service-accounts keys create key.json --iam-account=SA_EMAIL`"
                .into(),
        })?;
        Self::from_json(path, &text)
    }

    /// Parses the text of a credentials file; `path` is only used in messages.
    pub fn from_json(path: impl AsRef<Path>, text: &str) -> Result<Credentials, Error> {
        let path = path.as_ref();
        let file_error = |problem: String, fix: &str| Error::CredentialsFile {
            path: path.to_owned(),
            problem,
            fix: fix.into(),
        };
        let value: serde_json::Value = serde_json::from_str(text).map_err(|error| {
            file_error(
                format!("is not valid JSON ({error})"),
                "download the key file again; it should be the JSON Google gave you, unchanged",
            )
        })?;
        let kind = value
            .get("type")
            .and_then(|kind| kind.as_str())
            .ok_or_else(|| {
                file_error(
                    "has no string field `type`".into(),
                    "use a credentials file written by Google (`type` is e.g. \"service_account\")",
                )
            })?;
        match kind {
            "service_account" => Ok(Credentials {
                source: Arc::new(service_account::ServiceAccountKey::parse(path, value)?),
            }),
            other => Err(file_error(
                format!("has `type` \"{other}\", which cloudrun-test does not support yet"),
                "use a service-account key file (`\"type\": \"service_account\"`), or set \
                 CLOUDRUN_TEST_ID_TOKEN to a ready identity token",
            )),
        }
    }

    /// What these credentials are, for messages: never contains a secret.
    pub fn describe(&self) -> String {
        self.source.describe()
    }

    /// The principal tokens are minted for, when known without minting.
    pub fn identity(&self) -> Option<String> {
        self.source.identity()
    }

    /// An identity token for `audience`, from the process-wide cache.
    pub async fn id_token(&self, audience: &str) -> Result<IdToken, Error> {
        cache::id_token(&self.source, audience).await.map(IdToken)
    }

    /// An access token for Google APIs (cloud-platform scope), from the same cache.
    pub(crate) async fn access_token(&self) -> Result<Token, Error> {
        cache::access_token(&self.source).await
    }

    /// Drops `token` from the cache if it is still the cached one, so the next request
    /// mints a new one (after the service answered 401).
    pub(crate) fn forget_id_token(&self, audience: &str, token: &Token) {
        cache::forget_id_token(&self.source, audience, token);
    }
}
