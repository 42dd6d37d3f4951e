//! Identity tokens as Google signs them, for every endpoint that issues one (the
//! token endpoint, the metadata server, IAM Credentials).

use serde_json::json;

use crate::clock::now;
use crate::jwt;
use crate::keys::KeyError;
use crate::state::State;

/// Signs an identity token for `email` with the emulator's key and counts it.
/// Blocks while the signing key is generated: call it inside [`with_signing_key`].
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
    let mut claims = json!({
        "iss": "https://accounts.google.com",
        "aud": audience,
        "azp": authorized_party,
        "sub": state.id_of(email),
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

/// Runs `work` where it may block on the signing key's generation: the key is
/// still being made in the background right after start-up, and waiting for it
/// must not hold up the other requests on this worker.
pub(crate) fn with_signing_key<T>(state: &State, work: impl FnOnce() -> T) -> T {
    if state.keys.signing_if_ready().is_some() {
        work()
    } else {
        tokio::task::block_in_place(work)
    }
}
