//! Identities beyond service-account keys, and who may act as whom:
//!
//! - the service account the metadata server's "instance" runs as;
//! - users with refresh tokens (`authorized_user` files, gcloud user accounts);
//! - token-creator grants (who may impersonate which service account, for IAM
//!   Credentials `generateIdToken` / `generateAccessToken`);
//! - workload identity federation: subject tokens STS accepts, and the federated
//!   principals they become.
//!
//! The routes using this are in `metadata.rs`, `iam.rs`, `sts.rs` and the token
//! endpoint's refresh grant ([`refresh_grant`]).

use std::collections::HashMap;
use std::sync::{Mutex, RwLock};

use serde_json::{Value, json};

use crate::keys::{KeyError, random_bytes};
use crate::state::{ACCESS_TOKEN_LIFETIME, GCLOUD_CLIENT_ID, State, lock, member_matches, now};
use crate::{Emulator, EmulatorBuilder, jwt};

/// The project number in the emulated workload identity pool's resource names.
pub(crate) const PROJECT_NUMBER: &str = "123456789012";
const POOL: &str = "emulated-pool";
const PROVIDER: &str = "emulated-provider";

/// What the builder says about identities.
#[derive(Debug, Clone, Default)]
pub(crate) struct IdentityConfig {
    metadata_account: Option<String>,
    token_creators: Vec<(String, String)>,
    subjects: Vec<(String, String)>,
}

/// A refresh token issued for a user.
struct UserGrant {
    email: String,
    client_id: String,
}

/// The emulator's identity state (a field of [`State`]).
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

fn read<T: Clone>(lock: &RwLock<T>) -> T {
    lock.read()
        .unwrap_or_else(|poison| poison.into_inner())
        .clone()
}

fn write<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(|poison| poison.into_inner())
}

impl Identities {
    /// Applies the builder's configuration; `project` names the default metadata account.
    pub(crate) fn configure(&self, config: IdentityConfig, project: &str) {
        *write(&self.metadata_account) = config
            .metadata_account
            .unwrap_or_else(|| format!("compute@{project}.iam.gserviceaccount.com"));
        write(&self.token_creators).extend(config.token_creators);
        write(&self.subjects).extend(
            config
                .subjects
                .into_iter()
                .map(|(subject, principal)| (subject, principal_name(&principal))),
        );
    }

    pub(crate) fn metadata_account(&self) -> String {
        read(&self.metadata_account)
    }

    /// Whether `caller` (an email or a federated `principal://`) may mint tokens as
    /// `target`.
    pub(crate) fn may_impersonate(&self, caller: &str, target: &str) -> bool {
        let grants = self
            .token_creators
            .read()
            .unwrap_or_else(|poison| poison.into_inner());
        grants.iter().any(|(member, granted)| {
            granted.eq_ignore_ascii_case(target) && caller_matches(member, caller)
        })
    }

    /// The federated principal a subject token stands for, if it is registered.
    pub(crate) fn subject_principal(&self, subject_token: &str) -> Option<String> {
        let subjects = self
            .subjects
            .read()
            .unwrap_or_else(|poison| poison.into_inner());
        subjects
            .iter()
            .find(|(pattern, _)| match pattern.strip_suffix('*') {
                Some(prefix) => subject_token.starts_with(prefix),
                None => pattern == subject_token,
            })
            .map(|(_, principal)| principal.clone())
    }

    /// A stable numeric id for `principal`, as Google's `sub` claims carry.
    pub(crate) fn id_of(&self, state: &State, principal: &str) -> String {
        if let Some(account) = state.account(principal) {
            return account.client_id.clone();
        }
        lock(&self.ids)
            .entry(principal.to_ascii_lowercase())
            .or_insert_with(|| {
                let bytes = random_bytes(8).unwrap_or_else(|_| vec![7; 8]);
                let number = u64::from_le_bytes(bytes.try_into().unwrap_or([7; 8]));
                format!("1{:020}", number)
            })
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

/// An IAM member of a grant against a caller: `principal://` exactly,
/// `principalSet://.../POOL/*` for every principal of the pool, else as the IAM front
/// matches members (`serviceAccount:`, `user:`, bare email...).
fn caller_matches(member: &str, caller: &str) -> bool {
    if member.starts_with("principal://") {
        return member == caller;
    }
    if let Some(set) = member.strip_prefix("principalSet://") {
        let prefix = set.trim_end_matches('*');
        return caller
            .strip_prefix("principal://")
            .is_some_and(|rest| rest.starts_with(prefix));
    }
    member_matches(member, caller)
}

/// Signs an identity token for `email` with the emulator's key and counts it.
/// Blocks while the signing key is generated: call it from `block_in_place`.
pub(crate) fn sign_id_token(
    state: &State,
    email: &str,
    audience: &str,
    include_email: bool,
    authorized_party: &str,
) -> Result<String, KeyError> {
    let key = state.keys.signing()?;
    let iat = now();
    let lifetime = state.id_token_lifetime.as_secs().max(1) as i64;
    let sub = state.identities.id_of(state, email);
    let mut claims = json!({
        "iss": "https://accounts.google.com",
        "aud": audience,
        "azp": authorized_party,
        "sub": sub,
        "iat": iat,
        "exp": iat + lifetime,
    });
    if include_email {
        claims["email"] = json!(email);
        claims["email_verified"] = json!(true);
    }
    let token = jwt::encode(&claims, key)?;
    state.count(|stats| {
        stats.id_tokens_minted += 1;
        *stats
            .id_tokens_by_audience
            .entry(audience.to_owned())
            .or_default() += 1;
    });
    tracing::info!(email, audience, "issued an ID token");
    Ok(token)
}

/// Runs `work` where it may block on the signing key's generation.
pub(crate) fn with_signing_key<T>(state: &State, work: impl FnOnce() -> T) -> T {
    if state.keys.signing_if_ready().is_some() {
        work()
    } else {
        tokio::task::block_in_place(work)
    }
}

/// `grant_type=refresh_token` at `POST /token`: the user's access token and an ID
/// token whose audience is the OAuth client id (Google offers no other). Errors are
/// OAuth's `(error, description)`.
pub(crate) fn refresh_grant(
    state: &State,
    param: impl Fn(&str) -> Option<String>,
) -> Result<Value, (&'static str, String)> {
    let required = |name: &str| {
        param(name)
            .filter(|value| !value.is_empty())
            .ok_or_else(|| {
                (
                    "invalid_request",
                    format!("Missing required parameter: {name}"),
                )
            })
    };
    let refresh_token = required("refresh_token")?;
    let client_id = required("client_id")?;
    // Like Google's, the client secret must be sent; unlike Google's, any value passes.
    required("client_secret")?;
    let (email, granted_client) = {
        let tokens = lock(&state.identities.refresh_tokens);
        let grant = tokens.get(&refresh_token).ok_or_else(|| {
            (
                "invalid_grant",
                "Token has been expired or revoked. (the refresh token is unknown to this \
                 emulator; make one with Emulator::authorized_user_credentials)"
                    .to_owned(),
            )
        })?;
        (grant.email.clone(), grant.client_id.clone())
    };
    if granted_client != client_id {
        return Err((
            "unauthorized_client",
            format!("Unauthorized (the refresh token was issued to client {granted_client})"),
        ));
    }
    let scopes = vec![
        "openid".to_owned(),
        "https://www.googleapis.com/auth/userinfo.email".to_owned(),
        "https://www.googleapis.com/auth/cloud-platform".to_owned(),
    ];
    let access_token = state
        .issue_access_token(&email, scopes.clone())
        .map_err(|error| ("internal_failure", error.to_string()))?;
    let id_token = sign_id_token(state, &email, &client_id, true, &client_id)
        .map_err(|error| ("internal_failure", error.to_string()))?;
    tracing::info!(%email, "refreshed user credentials");
    Ok(json!({
        "access_token": access_token,
        "expires_in": ACCESS_TOKEN_LIFETIME,
        "scope": scopes.join(" "),
        "token_type": "Bearer",
        "id_token": id_token,
    }))
}

/// `1970-01-01T00:00:00Z` for seconds since the epoch (IAM Credentials' `expireTime`).
pub(crate) fn rfc3339(seconds: i64) -> String {
    let days = seconds.div_euclid(86_400);
    let rest = seconds.rem_euclid(86_400);
    // Civil date from days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z - era * 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let mp = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    )
}

impl EmulatorBuilder {
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
}

impl Emulator {
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

    /// The service account the metadata server hands out tokens for.
    pub fn metadata_service_account(&self) -> String {
        self.state.identities.metadata_account()
    }

    /// The IAM Credentials API base (the same as [`Emulator::base_url`]), for
    /// `CLOUDRUN_TEST_IAM_ENDPOINT`: it serves
    /// `POST /v1/projects/-/serviceAccounts/EMAIL:generateIdToken` and `:generateAccessToken`.
    pub fn iam_endpoint(&self) -> crate::Url {
        self.state.base_url.clone()
    }

    /// STS's token exchange, `{base_url}v1/token`: the `token_url` of `external_account` files.
    pub fn sts_token_url(&self) -> crate::Url {
        self.state
            .base_url
            .join("v1/token")
            .unwrap_or_else(|_| self.state.base_url.clone())
    }

    /// The audience of the emulated workload identity provider, for `external_account`
    /// files: `//iam.googleapis.com/projects/123456789012/locations/global/workloadIdentityPools/emulated-pool/providers/emulated-provider`.
    pub fn workload_identity_audience(&self) -> String {
        format!(
            "//iam.googleapis.com/projects/{PROJECT_NUMBER}/locations/global/workloadIdentityPools/{POOL}/providers/{PROVIDER}"
        )
    }

    /// Every principal of the emulated pool, as a member for [`EmulatorBuilder::token_creator`].
    pub fn workload_identity_pool_members(&self) -> String {
        format!(
            "principalSet://iam.googleapis.com/projects/{PROJECT_NUMBER}/locations/global/workloadIdentityPools/{POOL}/*"
        )
    }

    /// See [`EmulatorBuilder::token_creator`]; effective for the next request.
    pub fn add_token_creator(&self, caller: &str, target: &str) {
        write(&self.state.identities.token_creators).push((caller.to_owned(), target.to_owned()));
    }

    /// See [`EmulatorBuilder::workload_identity_subject`]; effective for the next request.
    pub fn add_workload_identity_subject(&self, subject_token: &str, principal: &str) {
        write(&self.state.identities.subjects)
            .push((subject_token.to_owned(), principal_name(principal)));
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
        let refresh_token = format!(
            "1//emulated-{}",
            crate::keys::random_hex(24).unwrap_or_else(|_| "0".repeat(48))
        );
        lock(&self.state.identities.refresh_tokens).insert(
            refresh_token.clone(),
            UserGrant {
                email: email.to_owned(),
                client_id: GCLOUD_CLIENT_ID.to_owned(),
            },
        );
        let mut text = serde_json::to_string_pretty(&json!({
            "account": "",
            "client_id": GCLOUD_CLIENT_ID,
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
}

/// A Google API error: `{"error": {"code", "message", "status"}}`.
pub(crate) fn api_error(
    code: axum::http::StatusCode,
    status: &str,
    message: impl Into<String>,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let body =
        json!({"error": {"code": code.as_u16(), "message": message.into(), "status": status}});
    (code, axum::Json(body)).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_rfc3339() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_620_433_341), "2021-05-08T00:22:21Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
    }

    #[test]
    fn grants_match_callers() {
        let pool = "principalSet://iam.googleapis.com/projects/1/locations/global/workloadIdentityPools/p/*";
        let principal = "principal://iam.googleapis.com/projects/1/locations/global/workloadIdentityPools/p/subject/repo:a/b";
        assert!(caller_matches(pool, principal));
        assert!(caller_matches(principal, principal));
        assert!(!caller_matches(
            "principalSet://iam.googleapis.com/projects/1/locations/global/workloadIdentityPools/q/*",
            principal
        ));
        assert!(caller_matches("user:a@example.com", "a@example.com"));
        assert!(caller_matches(
            "serviceAccount:sa@p.iam.gserviceaccount.com",
            "sa@p.iam.gserviceaccount.com"
        ));
        assert!(!caller_matches("user:b@example.com", "a@example.com"));
    }
}
