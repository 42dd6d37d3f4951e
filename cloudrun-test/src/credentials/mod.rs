//! Where identity tokens come from: one module per credential type behind one trait,
//! and the chain that picks one from the environment.

mod authorized_user;
mod chain;
mod external_account;
mod gcloud;
mod id_token_env;
mod impersonated;
mod metadata;
mod process;
mod service_account;
mod token_endpoint;
mod wire;

pub use chain::{ChainStep, StepOutcome};

use std::fmt;
use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};

use crate::bounded;
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
    /// `source.fingerprint()`, computed once: it is part of every cache lookup.
    fingerprint: Arc<str>,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("source", &self.source.describe())
            .finish()
    }
}

impl Credentials {
    pub(crate) fn new(source: Arc<dyn CredentialSource>) -> Credentials {
        let fingerprint = source.fingerprint().into();
        Credentials {
            source,
            fingerprint,
        }
    }

    /// Picks credentials from the environment. The first source present wins:
    ///
    /// 1. `CLOUDRUN_TEST_ID_TOKEN`: a ready identity token, used as is;
    /// 2. `GOOGLE_APPLICATION_CREDENTIALS`: a credentials file of any type Google writes
    ///    (`service_account`, `authorized_user`, `impersonated_service_account`,
    ///    `external_account` for workload identity federation);
    /// 3. gcloud's application default credentials file
    ///    (`$CLOUDSDK_CONFIG` or `~/.config/gcloud`, `application_default_credentials.json`);
    /// 4. the gcloud CLI's active account (read from gcloud's configuration files;
    ///    `gcloud auth print-identity-token` runs only when a token is needed);
    /// 5. the metadata server, if `GCE_METADATA_HOST` is set or this is a Google Cloud
    ///    machine (`/sys/class/dmi/id/product_name`, or `K_SERVICE` on Cloud Run); there
    ///    is no network probe, so off Google Cloud the chain ends at once.
    ///
    /// A source that is present but broken (e.g. an unreadable file) is an error, not a
    /// reason to try the next. `CLOUDRUN_TEST_CREDENTIALS=NAME` (`id-token`,
    /// `google-application-credentials`, `adc`, `gcloud` or `metadata`) tries only that
    /// source. `CLOUDRUN_TEST_IMPERSONATE_SERVICE_ACCOUNT=SA_EMAIL` then mints as that
    /// service account through IAM Credentials `generateIdToken`, with the chosen
    /// credentials as the caller (`CLOUDRUN_TEST_IAM_ENDPOINT` moves that API).
    ///
    /// User credentials (an `authorized_user` file or a gcloud user account) cannot choose
    /// the audience: their tokens carry the OAuth client id. Cloud Run accepts gcloud's
    /// (`32555940559.apps.googleusercontent.com`) for development; impersonate a service
    /// account for a token whose audience is the service URL.
    ///
    /// The choice is made once per process and then reused;
    /// [`Credentials::from_env_explained`] says why it was made.
    pub fn from_env() -> Result<Credentials, Error> {
        static FROM_ENV: OnceLock<Result<Credentials, Error>> = OnceLock::new();
        FROM_ENV.get_or_init(|| chain::explain().0).clone()
    }

    /// Runs the chain of [`Credentials::from_env`] afresh and reports each step: which
    /// source was chosen, why each earlier one was skipped, and any impersonation.
    pub fn from_env_explained() -> (Result<Credentials, Error>, Vec<ChainStep>) {
        chain::explain()
    }

    /// Credentials that mint tokens as service account `email` through IAM Credentials
    /// `generateIdToken`, with these credentials as the caller (they need
    /// `roles/iam.serviceAccountOpenIdTokenCreator` on it). The API is at
    /// `CLOUDRUN_TEST_IAM_ENDPOINT` if set, else Google's.
    pub fn impersonate(&self, email: &str) -> Credentials {
        Credentials::new(Arc::new(impersonated::Impersonated::wrap(
            Arc::clone(&self.source),
            email,
            "the test's `impersonate`",
        )))
    }

    /// A ready identity token, used for every audience (the service decides if it fits).
    pub fn from_id_token(token: impl Into<String>) -> Credentials {
        Credentials::new(Arc::new(id_token_env::StaticIdToken::new(token.into())))
    }

    /// A credentials file as `GOOGLE_APPLICATION_CREDENTIALS` names it.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Credentials, Error> {
        let path = path.as_ref();
        let text = bounded::read_file(path, bounded::FILE_LIMIT).map_err(|error| {
            Error::credentials_file(
                path,
                format!("cannot be read ({error})"),
                "point GOOGLE_APPLICATION_CREDENTIALS at an existing key file, e.g. one \
                      from `gcloud iam service-accounts keys create key.json \
                      --iam-account=SA_EMAIL`",
            )
            .with_source(error)
        })?;
        Self::from_json(path, &text)
    }

    /// Parses the text of a credentials file; `path` is only used in messages.
    pub fn from_json(path: impl AsRef<Path>, text: &str) -> Result<Credentials, Error> {
        let path = path.as_ref();
        let value: serde_json::Value = serde_json::from_str(text).map_err(|error| {
            wire::file_error(
                path,
                format!("is not valid JSON ({error})"),
                "download or write the file again; it should be the JSON Google gave you, unchanged",
            )
        })?;
        Ok(Credentials::new(parse_value(path, &value, None)?))
    }

    /// When `token`'s audience is not `requested` (user credentials carry their OAuth
    /// client id instead): what that means for Cloud Run and what to do about it.
    /// `None` when the audience is the one requested.
    pub fn audience_note(token: &IdToken, requested: &str) -> Option<String> {
        let aud = token.claims().aud.as_deref()?;
        if aud == requested {
            return None;
        }
        if authorized_user::is_client_id(aud) {
            return Some(format!(
                "{}; {}",
                authorized_user::client_id_audience_note(aud),
                authorized_user::IMPERSONATION_ADVICE
            ));
        }
        Some(format!(
            "the token's audience is {aud}, not {requested} (a ready token from \
             CLOUDRUN_TEST_ID_TOKEN is used as is)"
        ))
    }

    /// What these credentials are, for messages: never contains a secret.
    pub fn describe(&self) -> String {
        self.source.describe()
    }

    /// The principal tokens are minted for, when known without minting.
    pub fn identity(&self) -> Option<String> {
        self.source.identity()
    }

    /// Identifies these credentials without any secret: the cache's key, and the
    /// re-mint limiter's ([`crate::remint`]).
    pub(crate) fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    /// An identity token for `audience`, from the process-wide cache.
    pub async fn id_token(&self, audience: &str) -> Result<IdToken, Error> {
        let key = cache::id_token_key(&self.fingerprint, audience);
        let on_disk = self.source.worth_caching_on_disk();
        cache::token(key, on_disk, || {
            let (source, audience) = (Arc::clone(&self.source), audience.to_owned());
            async move {
                source
                    .mint_id_token(cache::fetcher_http()?, &audience)
                    .await
            }
        })
        .await
        .map(IdToken)
    }

    /// An access token for Google APIs (cloud-platform scope), from the same cache.
    pub(crate) async fn access_token(&self) -> Result<Token, Error> {
        let key = cache::access_token_key(&self.fingerprint);
        let on_disk = self.source.worth_caching_on_disk();
        cache::token(key, on_disk, || {
            let source = Arc::clone(&self.source);
            async move { source.mint_access_token(cache::fetcher_http()?).await }
        })
        .await
    }

    /// Drops `token` from the cache if it is still the cached one, so the next request
    /// mints a new one (after the service answered 401).
    pub(crate) fn forget_id_token(&self, audience: &str, token: &Token) {
        let key = cache::id_token_key(&self.fingerprint, audience);
        cache::forget(&key, self.source.worth_caching_on_disk(), token);
    }
}

const FILE_FIX: &str = "use a credentials file written by Google or gcloud: a service-account key \
    (`gcloud iam service-accounts keys create key.json --iam-account=SA_EMAIL`), user credentials \
    (`gcloud auth application-default login`), an impersonated_service_account or an \
    external_account file";

/// One credentials object: a whole file, or its `source_credentials` (`nested_in`).
fn parse_value(
    path: &Path,
    value: &serde_json::Value,
    nested_in: Option<&str>,
) -> Result<Arc<dyn CredentialSource>, Error> {
    let prefix = nested_in.map_or_else(String::new, |field| format!("{field}."));
    let fields = wire::Fields::new(path, &prefix, value, FILE_FIX)?;
    let kind = fields.optional_str("type")?.ok_or_else(|| {
        fields.error(format!(
            "has no string field `{}` (e.g. \"service_account\")",
            fields.name("type")
        ))
    })?;
    let source: Arc<dyn CredentialSource> = match kind.as_str() {
        "service_account" => Arc::new(service_account::ServiceAccountKey::parse(
            path,
            value.clone(),
            &prefix,
        )?),
        "authorized_user" => Arc::new(authorized_user::AuthorizedUser::parse(&fields)?),
        "external_account" => Arc::new(external_account::ExternalAccount::parse(&fields)?),
        "impersonated_service_account" if nested_in.is_none() => {
            Arc::new(impersonated::Impersonated::parse(&fields, |source| {
                parse_value(path, source, Some("source_credentials"))
            })?)
        }
        other => {
            return Err(fields.error(format!(
                "has `{}` \"{other}\", which cloudrun-test does not support{}",
                fields.name("type"),
                if nested_in.is_some() { " here" } else { "" }
            )));
        }
    };
    Ok(source)
}
