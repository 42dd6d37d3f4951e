//! A service-account key file (`"type": "service_account"`): a self-signed RS256
//! assertion traded at the key's `token_uri` for an identity token (`target_audience`)
//! or an access token (`scope`).

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
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
    /// The key's PKCS#8 DER, checked for shape when read and parsed into a key pair on
    /// the first signature: aws-lc's full check of an RSA key takes about half a
    /// millisecond, which a process served from the token cache never needs to spend.
    private_key: Vec<u8>,
    key_pair: OnceLock<Option<RsaKeyPair>>,
    /// Where the key sits in the file, for the message if it does not parse.
    key_field: String,
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
        let private_key = private_key_der(&private_key).map_err(|problem| {
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
            private_key,
            key_pair: OnceLock::new(),
            key_field: format!("{prefix}private_key"),
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
        let key_pair = self.key_pair()?;
        let mut signature = vec![0; key_pair.public_modulus_len()];
        key_pair
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

    /// The key pair, parsed on first use (see `private_key`).
    fn key_pair(&self) -> Result<&RsaKeyPair, Error> {
        self.key_pair
            .get_or_init(|| RsaKeyPair::from_pkcs8(&self.private_key).ok())
            .as_ref()
            .ok_or_else(|| {
                Error::credentials_file(
                    &self.path,
                    format!("field `{}` is not usable: {NOT_PKCS8_RSA}", self.key_field),
                    KEY_FILE_FIX,
                )
            })
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

const NOT_PKCS8_RSA: &str = "the PEM body is not a PKCS#8 RSA private key";

/// The DER of the PKCS#8 RSA key in the PEM text Google puts in key files, checked for
/// shape only: a SEQUENCE whose algorithm, near its start, is rsaEncryption. Whether
/// the key itself is sound is known when it is parsed, at the first signature.
fn private_key_der(pem: &str) -> Result<Vec<u8>, String> {
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
    // AlgorithmIdentifier { rsaEncryption (1.2.840.113549.1.1.1), NULL }, after the
    // outer SEQUENCE's header and the version INTEGER.
    const RSA_ALGORITHM: &[u8] = &[
        0x30, 0x0d, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01, 0x05, 0x00,
    ];
    let head = &der[..der.len().min(32)];
    let shaped = der.first() == Some(&0x30)
        && head
            .windows(RSA_ALGORITHM.len())
            .any(|window| window == RSA_ALGORITHM);
    if shaped {
        Ok(der)
    } else {
        Err(NOT_PKCS8_RSA.into())
    }
}
