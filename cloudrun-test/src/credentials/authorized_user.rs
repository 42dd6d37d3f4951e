//! User credentials (`"type": "authorized_user"`), as `gcloud auth application-default
//! login` writes them: a refresh token traded at the token endpoint.
//!
//! The refresh answer carries an `id_token` beside the access token, but its audience
//! is always the OAuth client id of the file, never the service URL: Google offers no
//! way to choose it. Cloud Run accepts gcloud's own client id
//! (`32555940559.apps.googleusercontent.com`) for development; for a token whose
//! audience is the service, impersonate a service account.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use aws_lc_rs::digest;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Deserialize;

use super::token_endpoint::TokenEndpoint;
use super::wire::{Fields, credential_request};
use super::{BoxFuture, CredentialSource};
use crate::error::Error;
use crate::token::Token;

const DEFAULT_TOKEN_URI: &str = "https://oauth2.googleapis.com/token";
/// gcloud's OAuth client: identity tokens of gcloud user accounts carry it as `aud`,
/// and Cloud Run accepts it for development.
pub(crate) const GCLOUD_CLIENT_ID: &str = "32555940559.apps.googleusercontent.com";
const FIX: &str = "write the file again with `gcloud auth application-default login`";
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

pub(crate) struct AuthorizedUser {
    path: PathBuf,
    client_id: String,
    client_secret: String,
    refresh_token: String,
    token_uri: String,
    account: Option<String>,
}

impl fmt::Debug for AuthorizedUser {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthorizedUser")
            .field("path", &self.path)
            .field("client_id", &self.client_id)
            .field("token_uri", &self.token_uri)
            .finish_non_exhaustive()
    }
}

#[derive(Deserialize)]
struct RefreshAnswer {
    access_token: Option<String>,
    id_token: Option<String>,
    /// Range-checked: see [`crate::token::expires_in`].
    #[serde(default, deserialize_with = "crate::token::expires_in")]
    expires_in: Option<Duration>,
}

impl AuthorizedUser {
    pub(crate) fn parse(fields: &Fields<'_>) -> Result<AuthorizedUser, Error> {
        let fields = &fields.with_fix(FIX);
        let token_uri = fields
            .optional_url("token_uri")?
            .map_or_else(|| DEFAULT_TOKEN_URI.to_owned(), String::from);
        Ok(AuthorizedUser {
            path: fields.path().to_owned(),
            client_id: fields.required_str("client_id")?,
            client_secret: fields.required_str("client_secret")?,
            refresh_token: fields.required_str("refresh_token")?,
            token_uri,
            account: fields.optional_str("account")?,
        })
    }

    /// The call to `token_uri` that refreshes these credentials for `what`.
    fn endpoint(&self, what: &str) -> TokenEndpoint<'_> {
        TokenEndpoint {
            what: format!(
                "refreshing the user credentials of {} ({what})",
                self.path.display()
            ),
            url: &self.token_uri,
            timeout: REQUEST_TIMEOUT,
            unreachable_fix: format!(
                "check that {} is reachable from here (proxy, firewall, DNS)",
                self.token_uri
            ),
            wrong_answer_fix: format!(
                "check that `token_uri` in {} is Google's token endpoint",
                self.path.display()
            ),
        }
    }

    async fn refresh(
        &self,
        http: &reqwest::Client,
        endpoint: &TokenEndpoint<'_>,
    ) -> Result<RefreshAnswer, Error> {
        let request = credential_request(
            http,
            reqwest::Method::POST,
            &self.token_uri,
            &format!("the token endpoint `token_uri` of {}", self.path.display()),
        )?
        .form(&[
            ("grant_type", "refresh_token"),
            ("client_id", self.client_id.as_str()),
            ("client_secret", self.client_secret.as_str()),
            ("refresh_token", self.refresh_token.as_str()),
        ]);
        endpoint
            .json(request, |_| {
                format!(
                    "the refresh token may have been revoked or expired (re-authentication \
                     policies end sessions after hours): {FIX}"
                )
            })
            .await
    }
}

impl CredentialSource for AuthorizedUser {
    fn describe(&self) -> String {
        let who = self
            .account
            .as_deref()
            .map(|account| format!(" for {account}"))
            .unwrap_or_default();
        format!(
            "user credentials (authorized_user) file {}{who}; their identity tokens' audience is \
             the OAuth client id {}",
            self.path.display(),
            self.client_id
        )
    }

    fn identity(&self) -> Option<String> {
        self.account.clone()
    }

    fn fingerprint(&self) -> String {
        // A digest of the refresh token tells credentials apart without revealing it.
        let digest = digest::digest(&digest::SHA256, self.refresh_token.as_bytes());
        format!(
            "authorized_user:{}:{}:{}",
            self.client_id,
            &URL_SAFE_NO_PAD.encode(digest.as_ref())[..16],
            self.token_uri
        )
    }

    fn mint_id_token<'a>(
        &'a self,
        http: &'a reqwest::Client,
        audience: &'a str,
    ) -> BoxFuture<'a, Result<Token, Error>> {
        Box::pin(async move {
            let endpoint = self.endpoint("an identity token");
            let answer = self.refresh(http, &endpoint).await?;
            let id_token = answer.id_token.ok_or_else(|| {
                endpoint.error(
                    "the answer has no `id_token` (the login did not grant the `openid` scope)",
                    format!(
                        "{FIX}, or impersonate a service account \
                         (CLOUDRUN_TEST_IMPERSONATE_SERVICE_ACCOUNT) for a token whose audience \
                         is the service"
                    ),
                )
            })?;
            let token = Token::from_jwt(id_token);
            if token.claims().aud.as_deref() != Some(audience) {
                tracing::debug!(
                    audience,
                    client_id = %self.client_id,
                    "user credentials cannot choose the audience: the token's is the OAuth client id"
                );
            }
            Ok(token)
        })
    }

    fn mint_access_token<'a>(
        &'a self,
        http: &'a reqwest::Client,
    ) -> BoxFuture<'a, Result<Token, Error>> {
        Box::pin(async move {
            let endpoint = self.endpoint("an access token");
            let answer = self.refresh(http, &endpoint).await?;
            let access_token = answer
                .access_token
                .ok_or_else(|| endpoint.missing("access_token"))?;
            Ok(Token::from_access_token(
                access_token,
                answer.expires_in.unwrap_or(Duration::from_secs(3600)),
            ))
        })
    }
}

/// Whether an identity token's audience is an OAuth client id rather than a URL.
pub(crate) fn is_client_id(audience: &str) -> bool {
    audience.ends_with(".apps.googleusercontent.com")
}

/// For messages: what a token with a client-id audience means for Cloud Run.
pub(crate) fn client_id_audience_note(client_id: &str) -> String {
    if client_id == GCLOUD_CLIENT_ID {
        format!(
            "user credentials give identity tokens whose audience is gcloud's OAuth client id \
             {GCLOUD_CLIENT_ID}, not the service URL; Cloud Run accepts that for development"
        )
    } else {
        format!(
            "user credentials give identity tokens whose audience is their OAuth client id \
             {client_id}, not the service URL, and Cloud Run accepts such tokens only for gcloud's \
             client id ({GCLOUD_CLIENT_ID}) or when it is one of the service's custom audiences"
        )
    }
}

/// The advice that goes with [`client_id_audience_note`].
pub(crate) const IMPERSONATION_ADVICE: &str = "for a token whose audience is the service URL, \
    impersonate a service account: CLOUDRUN_TEST_IMPERSONATE_SERVICE_ACCOUNT=SA_EMAIL (you need \
    roles/iam.serviceAccountOpenIdTokenCreator on it)";
