//! A service-account key file (`"type": "service_account"`): a self-signed RS256
//! assertion traded at the key's `token_uri` for an identity token (`target_audience`)
//! or an access token (`scope`).

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{RSA_PKCS1_SHA256, RsaKeyPair};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use serde::Deserialize;

use super::token_endpoint::TokenEndpoint;
use super::{BoxFuture, CLOUD_PLATFORM_SCOPE, CredentialSource};
use crate::error::Error;
use crate::token::Token;

const DEFAULT_TOKEN_URI: &str = "https://oauth2.googleapis.com/token";
const KEY_FILE_FIX: &str = "create a fresh key with \
    `gcloud iam service-accounts keys create key.json --iam-account=SA_EMAIL` \
    and point GOOGLE_APPLICATION_CREDENTIALS at it";

pub(crate) struct ServiceAccountKey {
    path: PathBuf,
    client_email: String,
    private_key_id: Option<String>,
    token_uri: String,
    key_pair: RsaKeyPair,
}

impl fmt::Debug for ServiceAccountKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServiceAccountKey")
            .field("path", &self.path)
            .field("client_email", &self.client_email)
            .field("private_key", &"<redacted>")
            .finish_non_exhaustive()
    }
}

impl ServiceAccountKey {
    /// Reads a key object; `prefix` names where it sits in the file (`""` at the top
    /// level, `"source_credentials."` inside an impersonated_service_account file).
    pub(crate) fn parse(
        path: &Path,
        value: serde_json::Value,
        prefix: &str,
    ) -> Result<Self, Error> {
        let file_error = |problem: String| Error::credentials_file(path, problem, KEY_FILE_FIX);
        let field = |name: &str| -> Result<Option<String>, Error> {
            match value.get(name) {
                None | Some(serde_json::Value::Null) => Ok(None),
                Some(serde_json::Value::String(text)) => Ok(Some(text.clone())),
                Some(_) => Err(file_error(format!(
                    "field `{prefix}{name}` is not a string"
                ))),
            }
        };
        let required = |name: &str| -> Result<String, Error> {
            field(name)?
                .filter(|text| !text.is_empty())
                .ok_or_else(|| file_error(format!("has no `{prefix}{name}`")))
        };
        let client_email = required("client_email")?;
        let private_key = required("private_key")?;
        let key_pair = parse_private_key(&private_key).map_err(|problem| {
            file_error(format!(
                "field `{prefix}private_key` is not usable: {problem}"
            ))
        })?;
        let token_uri = field("token_uri")?.unwrap_or_else(|| DEFAULT_TOKEN_URI.into());
        if reqwest::Url::parse(&token_uri).is_err() {
            return Err(file_error(format!(
                "field `{prefix}token_uri` is not a URL: {token_uri:?}"
            )));
        }
        Ok(ServiceAccountKey {
            path: path.to_owned(),
            client_email,
            private_key_id: field("private_key_id")?,
            token_uri,
            key_pair,
        })
    }

    /// The JWT-bearer assertion: `target_audience` asks for an identity token, `scope`
    /// for an access token. `aud` is the key's token URI, as Google's Go library sends it.
    fn assertion(&self, extra_claim: (&str, &str)) -> Result<String, Error> {
        let now = super::wire::unix_now();
        let mut header = serde_json::json!({ "alg": "RS256", "typ": "JWT" });
        if let Some(kid) = &self.private_key_id {
            header["kid"] = kid.as_str().into();
        }
        let mut claims = serde_json::json!({
            "iss": self.client_email,
            "aud": self.token_uri,
            "iat": now,
            "exp": now + 3600,
        });
        claims[extra_claim.0] = extra_claim.1.into();
        let signing_input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let mut signature = vec![0; self.key_pair.public_modulus_len()];
        self.key_pair
            .sign(
                &RSA_PKCS1_SHA256,
                &SystemRandom::new(),
                signing_input.as_bytes(),
                &mut signature,
            )
            .map_err(|_| Error::internal("RS256 signing with the service-account key failed"))?;
        Ok(format!(
            "{signing_input}.{}",
            URL_SAFE_NO_PAD.encode(signature)
        ))
    }

    /// The call to `token_uri` that mints `what` (e.g. "an identity token").
    fn endpoint(&self, what: &str) -> TokenEndpoint<'_> {
        TokenEndpoint {
            what: format!("minting {what} for {}", self.client_email),
            url: &self.token_uri,
            timeout: Duration::from_secs(30),
            unreachable_fix: format!(
                "check that {} is reachable from here (proxy, firewall, DNS), or that `token_uri` in {} is right",
                self.token_uri,
                self.path.display()
            ),
            wrong_answer_fix: format!(
                "check that `token_uri` in {} is Google's OAuth token endpoint",
                self.path.display()
            ),
        }
    }

    /// Trades a signed assertion carrying `extra_claim` for a token.
    async fn exchange(
        &self,
        http: &reqwest::Client,
        extra_claim: (&str, &str),
        endpoint: &TokenEndpoint<'_>,
    ) -> Result<TokenAnswer, Error> {
        // Checked before anything is signed: an assertion goes over https or to loopback only.
        let request = super::wire::credential_request(
            http,
            reqwest::Method::POST,
            &self.token_uri,
            &format!("the token endpoint `token_uri` of {}", self.path.display()),
        )?;
        let assertion = self.assertion(extra_claim)?;
        let request = request.form(&[
            ("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer"),
            ("assertion", assertion.as_str()),
        ]);
        endpoint
            .json(request, |status| {
                if crate::error::is_transient_status(status) {
                    format!(
                        "the token endpoint failed {} times in a row; try again later, and check \
                         https://status.cloud.google.com (or that `token_uri` in {} is right)",
                        crate::retry::REPEAT_TRIES,
                        self.path.display()
                    )
                } else {
                    format!(
                        "the key in {} may have been deleted or disabled; {KEY_FILE_FIX}",
                        self.path.display()
                    )
                }
            })
            .await
    }
}

#[derive(Deserialize)]
struct TokenAnswer {
    id_token: Option<String>,
    access_token: Option<String>,
    /// Range-checked: see [`crate::token::expires_in`].
    #[serde(default, deserialize_with = "crate::token::expires_in")]
    expires_in: Option<Duration>,
}

impl CredentialSource for ServiceAccountKey {
    fn describe(&self) -> String {
        format!(
            "service-account key file {} ({})",
            self.path.display(),
            self.client_email
        )
    }

    fn identity(&self) -> Option<String> {
        Some(self.client_email.clone())
    }

    fn fingerprint(&self) -> String {
        format!(
            "service_account:{}:{}:{}",
            self.client_email,
            self.private_key_id.as_deref().unwrap_or("-"),
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
            let answer = self
                .exchange(http, ("target_audience", audience), &endpoint)
                .await?;
            let id_token = answer
                .id_token
                .ok_or_else(|| endpoint.missing("id_token"))?;
            tracing::debug!(identity = %self.client_email, audience, "minted an identity token");
            Ok(Token::from_jwt(id_token))
        })
    }

    fn mint_access_token<'a>(
        &'a self,
        http: &'a reqwest::Client,
    ) -> BoxFuture<'a, Result<Token, Error>> {
        Box::pin(async move {
            let endpoint = self.endpoint("an access token");
            let answer = self
                .exchange(http, ("scope", CLOUD_PLATFORM_SCOPE), &endpoint)
                .await?;
            let access_token = answer
                .access_token
                .ok_or_else(|| endpoint.missing("access_token"))?;
            let lifetime = answer.expires_in.unwrap_or(Duration::from_secs(3600));
            tracing::debug!(identity = %self.client_email, "minted an access token");
            Ok(Token::from_access_token(access_token, lifetime))
        })
    }
}

/// Reads a PKCS#8 RSA key from the PEM text Google puts in key files.
fn parse_private_key(pem: &str) -> Result<RsaKeyPair, String> {
    const BEGIN: &str = "-----BEGIN PRIVATE KEY-----";
    const END: &str = "-----END PRIVATE KEY-----";
    let start = pem
        .find(BEGIN)
        .ok_or("no `-----BEGIN PRIVATE KEY-----` line")?;
    let body = &pem[start + BEGIN.len()..];
    let end = body
        .find(END)
        .ok_or("no `-----END PRIVATE KEY-----` line")?;
    let base64_text: String = body[..end].split_whitespace().collect();
    let der = STANDARD
        .decode(base64_text)
        .map_err(|_| "the PEM body is not valid base64".to_string())?;
    RsaKeyPair::from_pkcs8(&der).map_err(|_| "the PEM body is not a PKCS#8 RSA private key".into())
}
