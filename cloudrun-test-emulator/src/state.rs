//! What a running emulator knows, shared by every endpoint: its configuration,
//! keys, faults, services, identities and service accounts, the access tokens it
//! issued, and the counters behind [`Stats`].
//!
//! Locks here are std locks held for a few instructions and never across an
//! `.await`, so the sync [`crate::Emulator`] methods can use them directly.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use reqwest::Url;

use crate::Stats;
use crate::accounts::{Account, Accounts};
use crate::clock::now;
use crate::faults::Faults;
use crate::identity::Identities;
use crate::keys::{KeyError, Keys, random_bytes};
use crate::locks::lock;
use crate::services::Service;

/// Access tokens live an hour, as Google's do (`expires_in` says 3599).
pub(crate) const ACCESS_TOKEN_LIFETIME: i64 = 3599;

/// An access token the emulator issued.
struct AccessGrant {
    email: String,
    scopes: Vec<String>,
    expires_at: i64,
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
    pub(crate) identities: Identities,
    pub(crate) accounts: Accounts,
    /// The client for `Upstream::Url`, built on first use by the front's proxy:
    /// loading TLS roots takes 25–80 ms, too much for start-up.
    pub(crate) upstream_client: OnceLock<Result<reqwest::Client, String>>,
    /// The same for services declared HTTP/2 (h2c, prior knowledge).
    pub(crate) upstream_h2_client: OnceLock<Result<reqwest::Client, String>>,
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
            identities: Identities::default(),
            accounts: Accounts::default(),
            upstream_client: OnceLock::new(),
            upstream_h2_client: OnceLock::new(),
            access_tokens: Mutex::default(),
            stats: Mutex::default(),
        }
    }

    /// `{base_url}token`.
    pub(crate) fn token_uri(&self) -> Url {
        self.base_url
            .join("token")
            .unwrap_or_else(|_| self.base_url.clone())
    }

    pub(crate) fn service(&self, name: &str) -> Option<&Service> {
        self.services.iter().find(|service| service.name == name)
    }

    pub(crate) fn service_names(&self) -> Vec<&str> {
        self.services
            .iter()
            .map(|service| service.name.as_str())
            .collect()
    }

    /// The key file Google would hand out for `account`, pointed at this emulator.
    pub(crate) fn key_file(&self, account: &Account) -> Result<String, KeyError> {
        account.key_file(&self.project, &self.token_uri())
    }

    /// A stable numeric id for `principal`, as Google's `sub` claims carry: a
    /// service account's client id, else one made up once.
    pub(crate) fn id_of(&self, principal: &str) -> String {
        match self.accounts.get(principal) {
            Some(account) => account.client_id.clone(),
            None => self.identities.numeric_id(principal),
        }
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
        self.count(|stats| stats.access_tokens_minted += 1);
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

    /// Counts one injected fault.
    pub(crate) fn count_fault(&self) {
        self.count(|stats| stats.faults_injected += 1);
    }
}
