//! Identities beyond service-account keys, and who may act as whom:
//!
//! - the service account the metadata server's "instance" runs as;
//! - users with refresh tokens (`authorized_user` files, gcloud user accounts);
//! - token-creator grants (who may impersonate which service account, for IAM
//!   Credentials `generateIdToken` / `generateAccessToken`);
//! - workload identity federation: subject tokens STS accepts, and the federated
//!   principals they become.
//!
//! Plain data: the endpoints using it are `metadata.rs`, `iam.rs`, `sts.rs` and the
//! token endpoint's refresh grant in `oauth.rs`.

use std::collections::HashMap;
use std::sync::{Mutex, RwLock};

use crate::accounts::random_client_id;
use crate::keys::random_hex;
use crate::locks::{lock, read, write};
use crate::members::caller_matches;

/// The project number in the emulated workload identity pool's resource names.
const PROJECT_NUMBER: &str = "123456789012";
const POOL: &str = "emulated-pool";
const PROVIDER: &str = "emulated-provider";

/// The audience of the emulated workload identity provider.
pub(crate) fn workload_identity_audience() -> String {
    format!(
        "//iam.googleapis.com/projects/{PROJECT_NUMBER}/locations/global/workloadIdentityPools/{POOL}/providers/{PROVIDER}"
    )
}

/// Every principal of the emulated pool, as an IAM member.
pub(crate) fn workload_identity_pool_members() -> String {
    format!(
        "principalSet://iam.googleapis.com/projects/{PROJECT_NUMBER}/locations/global/workloadIdentityPools/{POOL}/*"
    )
}

/// What the builder says about identities.
#[derive(Debug, Clone, Default)]
pub(crate) struct IdentityConfig {
    pub(crate) metadata_account: Option<String>,
    /// (caller member, target service account)
    pub(crate) token_creators: Vec<(String, String)>,
    /// (subject token or `prefix*`, principal as given)
    pub(crate) subjects: Vec<(String, String)>,
}

/// A refresh token issued for a user.
struct UserGrant {
    email: String,
    client_id: String,
}

/// The emulator's identities (a field of `State`).
#[derive(Default)]
pub(crate) struct Identities {
    metadata_account: RwLock<String>,
    /// (caller member, target service account)
    token_creators: RwLock<Vec<(String, String)>>,
    /// (subject token or `prefix*`, federated principal)
    subjects: RwLock<Vec<(String, String)>>,
    refresh_tokens: Mutex<HashMap<String, UserGrant>>,
    /// Stable numeric ids (`sub`) of principals without a key.
    ids: Mutex<HashMap<String, String>>,
}

impl Identities {
    /// Applies the builder's configuration; `project` names the default metadata account.
    pub(crate) fn configure(&self, config: IdentityConfig, project: &str) {
        *write(&self.metadata_account) = config
            .metadata_account
            .unwrap_or_else(|| format!("compute@{project}.iam.gserviceaccount.com"));
        for (caller, target) in config.token_creators {
            self.add_token_creator(caller, target);
        }
        for (subject, principal) in config.subjects {
            self.add_subject(subject, &principal);
        }
    }

    pub(crate) fn metadata_account(&self) -> String {
        read(&self.metadata_account).clone()
    }

    /// Lets `caller` (an IAM member) mint tokens as service account `target`.
    pub(crate) fn add_token_creator(&self, caller: String, target: String) {
        write(&self.token_creators).push((caller, target));
    }

    /// Makes `subject_token` (or every token starting with the text before a final
    /// `*`) stand for `principal`: a `principal://...` name, an email, or a bare
    /// subject of the emulated pool.
    pub(crate) fn add_subject(&self, subject_token: String, principal: &str) {
        write(&self.subjects).push((subject_token, principal_name(principal)));
    }

    /// Whether `caller` (an email or a federated `principal://`) may mint tokens as
    /// `target`.
    pub(crate) fn may_impersonate(&self, caller: &str, target: &str) -> bool {
        read(&self.token_creators).iter().any(|(member, granted)| {
            granted.eq_ignore_ascii_case(target) && caller_matches(member, caller)
        })
    }

    /// The federated principal a subject token stands for, if it is registered.
    pub(crate) fn subject_principal(&self, subject_token: &str) -> Option<String> {
        read(&self.subjects)
            .iter()
            .find(|(pattern, _)| match pattern.strip_suffix('*') {
                Some(prefix) => subject_token.starts_with(prefix),
                None => pattern == subject_token,
            })
            .map(|(_, principal)| principal.clone())
    }

    /// Issues a refresh token for user `email` of OAuth client `client_id`.
    pub(crate) fn add_user(&self, email: &str, client_id: &str) -> String {
        let random = random_hex(24).unwrap_or_else(|_| "0".repeat(48));
        let refresh_token = format!("1//emulated-{random}");
        lock(&self.refresh_tokens).insert(
            refresh_token.clone(),
            UserGrant {
                email: email.to_owned(),
                client_id: client_id.to_owned(),
            },
        );
        refresh_token
    }

    /// The user and OAuth client a refresh token was issued to.
    pub(crate) fn user(&self, refresh_token: &str) -> Option<(String, String)> {
        lock(&self.refresh_tokens)
            .get(refresh_token)
            .map(|grant| (grant.email.clone(), grant.client_id.clone()))
    }

    /// A stable numeric id for a principal that has no service-account key.
    pub(crate) fn numeric_id(&self, principal: &str) -> String {
        lock(&self.ids)
            .entry(principal.to_ascii_lowercase())
            .or_insert_with(|| random_client_id().unwrap_or_else(|_| format!("1{:020}", 0)))
            .clone()
    }
}

/// `principal://...` for a bare subject, or the principal as given.
fn principal_name(principal: &str) -> String {
    if principal.starts_with("principal://") || principal.contains('@') {
        principal.to_owned()
    } else {
        format!(
            "principal://iam.googleapis.com/projects/{PROJECT_NUMBER}/locations/global/workloadIdentityPools/{POOL}/subject/{principal}"
        )
    }
}
