//! Google's OAuth 2.0 token endpoint (the JWT-bearer grant for service-account keys,
//! the refresh grant for users) and the JWKS that verifies the ID tokens it issues.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State as AxumState;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::accounts::Account;
use crate::clock::now;
use crate::jwt::Jwt;
use crate::mint::{sign_id_token, with_signing_key};
use crate::protocol::oauth_error;
use crate::state::{ACCESS_TOKEN_LIFETIME, State};

const JWT_BEARER: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";
/// The audience Google's libraries and gcloud put in assertions, whatever `token_uri` says.
const GOOGLE_TOKEN_URI: &str = "https://oauth2.googleapis.com/token";
/// Tolerated clock difference between the client and us.
const CLOCK_SKEW: i64 = 300;
/// Google refuses assertions meant to live longer than an hour.
const MAX_ASSERTION_LIFETIME: i64 = 3600;

/// An OAuth error answer: `400 {"error": .., "error_description": ..}`.
struct OAuthError {
    error: &'static str,
    description: String,
}

impl OAuthError {
    fn new(error: &'static str, description: impl Into<String>) -> OAuthError {
        OAuthError {
            error,
            description: description.into(),
        }
    }

    fn invalid_grant(description: impl Into<String>) -> OAuthError {
        OAuthError::new("invalid_grant", description)
    }
}

impl IntoResponse for OAuthError {
    fn into_response(self) -> Response {
        tracing::info!(error = self.error, description = %self.description, "token request refused");
        oauth_error(StatusCode::BAD_REQUEST, self.error, &self.description)
    }
}

/// `POST /token`, form-encoded.
pub(crate) async fn token(AxumState(state): AxumState<Arc<State>>, body: Bytes) -> Response {
    if let Some(response) = injected_fault(&state).await {
        return response;
    }
    with_signing_key(&state, || match grant(&state, &body) {
        Ok(answer) => Json(answer).into_response(),
        Err(error) => error.into_response(),
    })
}

/// Hangs, waits or answers an error as the injected faults say; `None` lets the
/// request through.
async fn injected_fault(state: &State) -> Option<Response> {
    if let Some(hold) = state.faults.token_hold() {
        state.count_fault();
        tracing::info!("token request held (injected fault: token-hang)");
        hold.released().await;
    }
    let fault = state.faults.take_token_fault();
    if !fault.delay.is_zero() {
        state.count_fault();
        tokio::time::sleep(fault.delay).await;
    }
    let status = fault.error?;
    state.count_fault();
    tracing::info!(%status, "token request failed (injected fault: token-error)");
    let error = if status.is_server_error() {
        "internal_failure"
    } else {
        "invalid_request"
    };
    let description = format!("injected fault: HTTP {status} (cloudrun-test emulator)");
    Some(oauth_error(status, error, &description))
}

fn grant(state: &State, body: &[u8]) -> Result<Value, OAuthError> {
    let form: Vec<(String, String)> = url::form_urlencoded::parse(body).into_owned().collect();
    let param = |name: &str| {
        form.iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    };
    let grant_type = param("grant_type").ok_or_else(|| {
        OAuthError::new("invalid_request", "Missing required parameter: grant_type")
    })?;
    if grant_type == "refresh_token" {
        return refresh_grant(state, param);
    }
    if grant_type != JWT_BEARER {
        return Err(OAuthError::new(
            "unsupported_grant_type",
            format!(
                "Invalid grant_type: {grant_type} (the emulator supports {JWT_BEARER} and refresh_token)"
            ),
        ));
    }
    let assertion = param("assertion").ok_or_else(|| {
        OAuthError::new("invalid_request", "Missing required parameter: assertion")
    })?;
    let assertion = Jwt::decode(assertion)
        .map_err(|error| OAuthError::invalid_grant(format!("Invalid JWT: {error}")))?;
    let account = check_assertion(state, &assertion)?;

    if let Some(audience) = assertion.claim_str("target_audience") {
        let id_token = sign_id_token(state, &account.email, audience, true, &account.client_id)
            .map_err(|error| OAuthError::new("internal_failure", error.to_string()))?;
        return Ok(json!({"id_token": id_token}));
    }
    let scopes: Vec<String> = assertion
        .claim_str("scope")
        .map(|scope| scope.split_whitespace().map(str::to_owned).collect())
        .unwrap_or_default();
    if scopes.is_empty() {
        return Err(OAuthError::new(
            "invalid_scope",
            "Invalid OAuth scope or ID token audience provided.",
        ));
    }
    let access_token = state
        .issue_access_token(&account.email, scopes)
        .map_err(|error| OAuthError::new("internal_failure", error.to_string()))?;
    tracing::info!(email = %account.email, "issued an access token");
    Ok(json!({
        "access_token": access_token,
        "expires_in": ACCESS_TOKEN_LIFETIME,
        "token_type": "Bearer",
    }))
}

/// `grant_type=refresh_token`: the user's access token and an ID token whose
/// audience is the OAuth client id (Google offers no other).
fn refresh_grant<'a>(
    state: &State,
    param: impl Fn(&str) -> Option<&'a str>,
) -> Result<Value, OAuthError> {
    let required = |name: &str| {
        param(name)
            .filter(|value| !value.is_empty())
            .ok_or_else(|| {
                OAuthError::new(
                    "invalid_request",
                    format!("Missing required parameter: {name}"),
                )
            })
    };
    let refresh_token = required("refresh_token")?;
    let client_id = required("client_id")?;
    // Like Google's, the client secret must be sent; unlike Google's, any value passes.
    required("client_secret")?;
    let (email, granted_client) = state.identities.user(refresh_token).ok_or_else(|| {
        OAuthError::invalid_grant(
            "Token has been expired or revoked. (the refresh token is unknown to this \
             emulator; make one with Emulator::authorized_user_credentials)",
        )
    })?;
    if granted_client != client_id {
        return Err(OAuthError::new(
            "unauthorized_client",
            format!("Unauthorized (the refresh token was issued to client {granted_client})"),
        ));
    }
    let scopes = vec![
        "openid".to_owned(),
        "https://www.googleapis.com/auth/userinfo.email".to_owned(),
        "https://www.googleapis.com/auth/cloud-platform".to_owned(),
    ];
    let internal =
        |error: crate::keys::KeyError| OAuthError::new("internal_failure", error.to_string());
    let access_token = state
        .issue_access_token(&email, scopes.clone())
        .map_err(internal)?;
    let id_token = sign_id_token(state, &email, client_id, true, client_id).map_err(internal)?;
    tracing::info!(%email, "refreshed user credentials");
    Ok(json!({
        "access_token": access_token,
        "expires_in": ACCESS_TOKEN_LIFETIME,
        "scope": scopes.join(" "),
        "token_type": "Bearer",
        "id_token": id_token,
    }))
}

/// Checks a service account's assertion as Google does; returns the account.
fn check_assertion(state: &State, assertion: &Jwt) -> Result<Arc<Account>, OAuthError> {
    let issuer = assertion
        .claim_str("iss")
        .ok_or_else(|| OAuthError::invalid_grant("Invalid JWT: the assertion has no iss claim"))?;
    let account = state.accounts.get(issuer).ok_or_else(|| {
        OAuthError::invalid_grant(format!(
            "Invalid grant: account not found ({issuer} is unknown to this emulator; \
             create it with Emulator::service_account_key)"
        ))
    })?;
    if assertion.kid().is_some_and(|kid| kid != account.key.kid()) {
        return Err(OAuthError::invalid_grant(
            "Invalid JWT Signature. (the header's kid is not this account's private_key_id)",
        ));
    }
    if !assertion.verify(&account.key) {
        return Err(OAuthError::invalid_grant("Invalid JWT Signature."));
    }
    let token_uri = state.token_uri();
    let audiences = assertion.audiences();
    if !audiences.iter().any(|aud| {
        *aud == GOOGLE_TOKEN_URI
            || *aud == token_uri.as_str()
            || *aud == token_uri.as_str().trim_end_matches('/')
    }) {
        return Err(OAuthError::invalid_grant(format!(
            "Invalid JWT: Failed audience check. The right audience is {GOOGLE_TOKEN_URI} or {token_uri}"
        )));
    }
    let timing = OAuthError::invalid_grant(
        "Invalid JWT: Token must be a short-lived token (60 minutes) and in a reasonable timeframe. \
         Check your iat and exp values in the JWT claim.",
    );
    let (Some(iat), Some(exp)) = (assertion.claim_time("iat"), assertion.claim_time("exp")) else {
        return Err(timing);
    };
    let now = now();
    if exp <= now
        || iat > now.saturating_add(CLOCK_SKEW)
        || exp < iat
        || exp
            .checked_sub(iat)
            .is_none_or(|lifetime| lifetime > MAX_ASSERTION_LIFETIME + CLOCK_SKEW)
    {
        return Err(timing);
    }
    Ok(account)
}

/// `GET /oauth2/v3/certs`.
pub(crate) async fn certs(AxumState(state): AxumState<Arc<State>>) -> Response {
    tokio::task::block_in_place(|| match state.keys.signing() {
        Ok(key) => Json(json!({"keys": [key.jwk()]})).into_response(),
        Err(error) => (StatusCode::INTERNAL_SERVER_ERROR, error.to_string()).into_response(),
    })
}
