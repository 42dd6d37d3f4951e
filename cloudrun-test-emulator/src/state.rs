//! What the emulator knows: service accounts and their keys, access tokens it
//! issued, services and their invokers, and the counters behind [`Stats`].
//!
//! Locks here are std locks held for a few instructions and never across an
//! `.await`, so the sync [`crate::Emulator`] methods can use them directly.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use reqwest::Url;
use serde::Serialize;

use crate::faults::Faults;
use crate::front::UPSTREAM_TIMEOUT;
use crate::keys::{KeyError, Keys, RsaKey, random_bytes, random_hex};
use crate::{Stats, Upstream};

/// Access tokens live an hour, as Google's do (`expires_in` says 3599).
pub(crate) const ACCESS_TOKEN_LIFETIME: i64 = 3599;

/// Seconds since the Unix epoch.
pub(crate) fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs() as i64)
}

/// Locks a mutex, ignoring poisoning: the data stays consistent because no code
/// panics while holding these locks.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poison| poison.into_inner())
}

/// A service account: its email, numeric id and its one key.
#[derive(Debug)]
pub(crate) struct Account {
    pub(crate) email: String,
    pub(crate) client_id: String,
    pub(crate) key: RsaKey,
}

/// An access token the token endpoint issued.
pub(crate) struct AccessGrant {
    pub(crate) email: String,
    pub(crate) scopes: Vec<String>,
    pub(crate) expires_at: i64,
}

/// One origin of a service: the service's own URL or a traffic tag's.
#[derive(Debug)]
pub(crate) struct Origin {
    pub(crate) tag: Option<String>,
    pub(crate) url: Url,
}

impl Origin {
    /// The URL as Cloud Run prints it and uses as audience: no trailing slash.
    pub(crate) fn uri(&self) -> String {
        self.url.as_str().trim_end_matches('/').to_owned()
    }
}

#[derive(Debug)]
pub(crate) struct Service {
    pub(crate) name: String,
    pub(crate) uid: String,
    /// The service URL first, then one origin per tag.
    pub(crate) origins: Vec<Origin>,
    pub(crate) custom_audiences: Vec<String>,
    pub(crate) upstream: Upstream,
    pub(crate) invokers: RwLock<Vec<String>>,
}

impl Service {
    pub(crate) fn url(&self) -> &Url {
        &self.origins[0].url
    }

    pub(crate) fn tags(&self) -> impl Iterator<Item = (&str, &Origin)> {
        self.origins
            .iter()
            .filter_map(|origin| origin.tag.as_deref().map(|tag| (tag, origin)))
    }

    /// The revision name the Admin API reports for every tag (one revision here).
    pub(crate) fn revision(&self) -> String {
        format!("{}-00001-emu", self.name)
    }

    /// Whether `aud` is one Cloud Run accepts for this service: any of its
    /// origins (with or without a trailing slash), a custom audience, or gcloud's
    /// user-account client id.
    pub(crate) fn accepts_audience(&self, aud: &str) -> bool {
        let bare = aud.strip_suffix('/').unwrap_or(aud);
        self.origins.iter().any(|origin| origin.uri() == bare)
            || self.custom_audiences.iter().any(|custom| custom == aud)
            || aud == GCLOUD_CLIENT_ID
    }

    pub(crate) fn is_public(&self) -> bool {
        self.invokers().iter().any(|member| member == "allUsers")
    }

    pub(crate) fn may_invoke(&self, email: &str) -> bool {
        self.invokers()
            .iter()
            .any(|member| member_matches(member, email))
    }

    pub(crate) fn invokers(&self) -> Vec<String> {
        self.invokers
            .read()
            .unwrap_or_else(|poison| poison.into_inner())
            .clone()
    }
}

/// The client id of gcloud's user login: `aud` of `gcloud auth print-identity-token`
/// for user accounts, accepted by Cloud Run for development.
pub(crate) const GCLOUD_CLIENT_ID: &str = "32555940559.apps.googleusercontent.com";

/// Checks an IAM member (`serviceAccount:EMAIL`, `user:EMAIL`, `group:EMAIL`,
/// `domain:DOMAIN`, bare `EMAIL`, `allUsers`, `allAuthenticatedUsers`) against the
/// email of a verified token. Emails compare case-insensitively, as in IAM.
pub(crate) fn member_matches(member: &str, email: &str) -> bool {
    match member.split_once(':') {
        None => {
            member == "allUsers"
                || member == "allAuthenticatedUsers"
                || member.eq_ignore_ascii_case(email)
        }
        Some(("serviceAccount" | "user" | "group", address)) => address.eq_ignore_ascii_case(email),
        Some(("domain", domain)) => email
            .rsplit_once('@')
            .is_some_and(|(_, email_domain)| email_domain.eq_ignore_ascii_case(domain)),
        Some(_) => false,
    }
}

/// Whether [`member_matches`] understands `member`.
pub(crate) fn member_is_valid(member: &str) -> bool {
    match member.split_once(':') {
        None => member == "allUsers" || member == "allAuthenticatedUsers" || member.contains('@'),
        Some(("serviceAccount" | "user" | "group", address)) => address.contains('@'),
        Some(("domain", domain)) => !domain.is_empty(),
        Some(_) => false,
    }
}

pub(crate) struct State {
    pub(crate) project: String,
    pub(crate) region: String,
    pub(crate) base_url: Url,
    pub(crate) id_token_lifetime: Duration,
    pub(crate) keys: Keys,
    pub(crate) faults: Faults,
    pub(crate) services: Vec<Service>,
    /// Metadata server account, users, token-creator grants, federated subjects.
    pub(crate) identities: crate::identity::Identities,
    /// For `Upstream::Url`, built on first use: loading TLS roots takes 25–80 ms,
    /// too much for start-up.
    http: OnceLock<Result<reqwest::Client, String>>,
    accounts: RwLock<BTreeMap<String, Arc<Account>>>,
    access_tokens: Mutex<HashMap<String, AccessGrant>>,
    stats: Mutex<Stats>,
}

impl State {
    pub(crate) fn new(
        project: String,
        region: String,
        base_url: Url,
        id_token_lifetime: Duration,
        services: Vec<Service>,
    ) -> State {
        State {
            project,
            region,
            base_url,
            id_token_lifetime,
            keys: Keys::default(),
            faults: Faults::default(),
            services,
            identities: Default::default(),
            http: OnceLock::new(),
            accounts: RwLock::default(),
            access_tokens: Mutex::default(),
            stats: Mutex::default(),
        }
    }

    /// The client for upstreams. Redirects pass through to the caller, as a
    /// proxy's should; proxies from the environment are not used (upstreams are
    /// usually on localhost).
    pub(crate) fn http(&self) -> Result<&reqwest::Client, &str> {
        let client = self.http.get_or_init(|| {
            reqwest::Client::builder()
                .no_proxy()
                .redirect(reqwest::redirect::Policy::none())
                .connect_timeout(Duration::from_secs(5))
                .timeout(UPSTREAM_TIMEOUT)
                .build()
                .map_err(|error| format!("building the HTTP client for upstreams failed: {error}"))
        });
        client.as_ref().map_err(String::as_str)
    }

    pub(crate) fn token_uri(&self) -> Url {
        self.base_url
            .join("token")
            .unwrap_or_else(|_| self.base_url.clone())
    }

    pub(crate) fn service(&self, name: &str) -> Option<&Service> {
        self.services.iter().find(|service| service.name == name)
    }

    pub(crate) fn account(&self, email: &str) -> Option<Arc<Account>> {
        let accounts = self
            .accounts
            .read()
            .unwrap_or_else(|poison| poison.into_inner());
        accounts.get(&email.to_ascii_lowercase()).cloned()
    }

    /// The account for `email`, created with a new key if it does not exist.
    pub(crate) fn account_or_create(&self, email: &str) -> Result<Arc<Account>, KeyError> {
        if let Some(account) = self.account(email) {
            return Ok(account);
        }
        // Generate outside the lock: it is slow. A racing creator may win; its
        // account is then the one returned, and this key is dropped.
        let key = self.keys.take()?;
        let client_id = random_client_id()?;
        let mut accounts = self
            .accounts
            .write()
            .unwrap_or_else(|poison| poison.into_inner());
        let account = accounts
            .entry(email.to_ascii_lowercase())
            .or_insert_with(|| {
                tracing::info!(email, kid = key.kid(), "created service account");
                Arc::new(Account {
                    email: email.to_owned(),
                    client_id,
                    key,
                })
            })
            .clone();
        Ok(account)
    }

    /// The key file Google would hand out for `account`, pointed at this emulator.
    pub(crate) fn key_file(&self, account: &Account) -> Result<String, KeyError> {
        let project_id = account
            .email
            .split_once('@')
            .and_then(|(_, domain)| domain.strip_suffix(".iam.gserviceaccount.com"))
            .unwrap_or(&self.project);
        let file = KeyFile {
            r#type: "service_account",
            project_id,
            private_key_id: account.key.kid(),
            private_key: account.key.private_key_pem()?,
            client_email: &account.email,
            client_id: &account.client_id,
            auth_uri: "https://accounts.google.com/o/oauth2/auth",
            token_uri: self.token_uri().to_string(),
            auth_provider_x509_cert_url: "https://www.googleapis.com/oauth2/v1/certs",
            client_x509_cert_url: format!(
                "https://www.googleapis.com/robot/v1/metadata/x509/{}",
                account.email.replace('@', "%40")
            ),
            universe_domain: "googleapis.com",
        };
        let mut text = serde_json::to_string_pretty(&file).map_err(|_| KeyError)?;
        text.push('\n');
        Ok(text)
    }

    /// Issues an opaque access token for `email`.
    pub(crate) fn issue_access_token(
        &self,
        email: &str,
        scopes: Vec<String>,
    ) -> Result<String, KeyError> {
        use base64::Engine as _;
        let token = format!(
            "ya29.emulated-{}",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(random_bytes(32)?)
        );
        let now = now();
        let mut tokens = lock(&self.access_tokens);
        tokens.retain(|_, grant| grant.expires_at > now);
        tokens.insert(
            token.clone(),
            AccessGrant {
                email: email.to_owned(),
                scopes,
                expires_at: now + ACCESS_TOKEN_LIFETIME,
            },
        );
        lock(&self.stats).access_tokens_minted += 1;
        Ok(token)
    }

    /// The email and scopes of a live access token issued here.
    pub(crate) fn access_grant(&self, token: &str) -> Option<(String, Vec<String>)> {
        let tokens = lock(&self.access_tokens);
        let grant = tokens.get(token).filter(|grant| grant.expires_at > now())?;
        Some((grant.email.clone(), grant.scopes.clone()))
    }

    pub(crate) fn stats(&self) -> Stats {
        lock(&self.stats).clone()
    }

    pub(crate) fn reset_stats(&self) {
        *lock(&self.stats) = Stats::default();
    }

    pub(crate) fn count(&self, update: impl FnOnce(&mut Stats)) {
        update(&mut lock(&self.stats));
    }
}

/// Field order as in Google's key files.
#[derive(Serialize)]
struct KeyFile<'a> {
    r#type: &'a str,
    project_id: &'a str,
    private_key_id: &'a str,
    private_key: String,
    client_email: &'a str,
    client_id: &'a str,
    auth_uri: &'a str,
    token_uri: String,
    auth_provider_x509_cert_url: &'a str,
    client_x509_cert_url: String,
    universe_domain: &'a str,
}

/// A 21-digit numeric id, like Google's service-account client ids.
fn random_client_id() -> Result<String, KeyError> {
    let bytes = random_bytes(8)?;
    let number = u64::from_le_bytes(bytes.try_into().map_err(|_| KeyError)?);
    Ok(format!("1{:020}", number))
}

/// A UUID-shaped random id, as the Admin API's `uid`.
pub(crate) fn random_uid() -> String {
    let hex = random_hex(16).unwrap_or_else(|_| "0".repeat(32));
    format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members() {
        let email = "Tester@p.iam.gserviceaccount.com";
        assert!(member_matches(
            "serviceAccount:tester@p.iam.gserviceaccount.com",
            email
        ));
        assert!(member_matches(
            "user:tester@p.iam.gserviceaccount.com",
            email
        ));
        assert!(member_matches("tester@p.iam.gserviceaccount.com", email));
        assert!(member_matches("domain:p.iam.gserviceaccount.com", email));
        assert!(member_matches("allUsers", email));
        assert!(!member_matches(
            "serviceAccount:other@p.iam.gserviceaccount.com",
            email
        ));
        assert!(!member_matches("domain:iam.gserviceaccount.com", email));
        assert!(!member_matches(
            "role:tester@p.iam.gserviceaccount.com",
            email
        ));
        assert!(member_is_valid("user:a@b"));
        assert!(!member_is_valid("nobody"));
        assert!(!member_is_valid("role:a@b"));
    }
}
