//! Service-account impersonation through IAM Credentials: a caller (any other source)
//! asks `generateIdToken` / `generateAccessToken` for tokens of a service account it
//! holds `roles/iam.serviceAccountOpenIdTokenCreator` / `roles/iam.serviceAccountTokenCreator`
//! on, possibly through a chain of delegates.
//!
//! Three ways in: an `impersonated_service_account` credentials file,
//! `CLOUDRUN_TEST_IMPERSONATE_SERVICE_ACCOUNT` (wrapping whatever the chain chose), and
//! the per-test `impersonate = "..."` ([`crate::ClientBuilder::impersonate`]).

use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use serde_json::json;

use super::token_endpoint::TokenEndpoint;
use super::wire::{
    Fields, credential_destination, credential_request, lifetime_until, parse_rfc3339_utc,
};
use super::{BoxFuture, CLOUD_PLATFORM_SCOPE, CredentialSource};
use crate::error::Error;
use crate::settings::env;
use crate::token::Token;

pub(crate) const DEFAULT_IAM_ENDPOINT: &str = "https://iamcredentials.googleapis.com";
pub(crate) const IAM_ENDPOINT_VARIABLE: &str = "CLOUDRUN_TEST_IAM_ENDPOINT";
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
const FILE_FIX: &str = "write the file again, e.g. with `gcloud auth application-default login \
    --impersonate-service-account=SA_EMAIL`";

/// The IAM Credentials base URL: `CLOUDRUN_TEST_IAM_ENDPOINT`, else `fallback`.
pub(crate) fn iam_endpoint(fallback: Option<String>) -> String {
    env(IAM_ENDPOINT_VARIABLE)
        .or(fallback)
        .unwrap_or_else(|| DEFAULT_IAM_ENDPOINT.to_owned())
        .trim_end_matches('/')
        .to_owned()
}

/// A service account to get tokens for, and where and through whom to ask.
#[derive(Debug, Clone)]
pub(crate) struct IamTarget {
    /// Base URL, without a trailing slash.
    pub(crate) endpoint: String,
    pub(crate) email: String,
    /// Emails of the delegation chain, caller side first.
    pub(crate) delegates: Vec<String>,
}

#[derive(Deserialize)]
struct IdTokenAnswer {
    token: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct AccessTokenAnswer {
    access_token: Option<String>,
    expire_time: Option<String>,
}

/// IAM Credentials, as errors name it.
const IAM_WHAT: &str =
    "IAM Credentials (CLOUDRUN_TEST_IAM_ENDPOINT or `service_account_impersonation_url`)";

impl IamTarget {
    /// Refuses an endpoint that may not get the caller's token (plain http off
    /// loopback) before that token is minted.
    pub(crate) fn check_endpoint(&self) -> Result<(), Error> {
        credential_destination(&self.url("generateIdToken"), IAM_WHAT).map(|_| ())
    }

    fn url(&self, method: &str) -> String {
        format!(
            "{}/v1/projects/-/serviceAccounts/{}:{method}",
            self.endpoint, self.email
        )
    }

    fn delegate_names(&self) -> Vec<String> {
        self.delegates
            .iter()
            .map(|email| format!("projects/-/serviceAccounts/{email}"))
            .collect()
    }

    /// `generateIdToken` with `includeEmail` (Cloud Run reads the `email` claim).
    pub(crate) async fn generate_id_token(
        &self,
        http: &reqwest::Client,
        caller: &Token,
        caller_name: Option<&str>,
        audience: &str,
    ) -> Result<Token, Error> {
        let url = self.url("generateIdToken");
        let body = json!({
            "audience": audience,
            "includeEmail": true,
            "delegates": self.delegate_names(),
        });
        let endpoint = self.endpoint(&url, "an identity token", caller_name);
        let answer: IdTokenAnswer = self
            .call(
                http,
                &endpoint,
                caller,
                caller_name,
                &body,
                "roles/iam.serviceAccountOpenIdTokenCreator",
            )
            .await?;
        let token = answer.token.ok_or_else(|| endpoint.missing("token"))?;
        tracing::debug!(identity = %self.email, audience, "minted an identity token by impersonation");
        Ok(Token::from_jwt(token))
    }

    /// `generateAccessToken` for the cloud-platform scope, for an hour.
    pub(crate) async fn generate_access_token(
        &self,
        http: &reqwest::Client,
        caller: &Token,
        caller_name: Option<&str>,
    ) -> Result<Token, Error> {
        let url = self.url("generateAccessToken");
        let body = json!({
            "scope": [CLOUD_PLATFORM_SCOPE],
            "delegates": self.delegate_names(),
            "lifetime": "3600s",
        });
        let endpoint = self.endpoint(&url, "an access token", caller_name);
        let answer: AccessTokenAnswer = self
            .call(
                http,
                &endpoint,
                caller,
                caller_name,
                &body,
                "roles/iam.serviceAccountTokenCreator",
            )
            .await?;
        let token = answer
            .access_token
            .ok_or_else(|| endpoint.missing("accessToken"))?;
        let lifetime = answer
            .expire_time
            .as_deref()
            .and_then(parse_rfc3339_utc)
            .map_or(Duration::from_secs(3600), lifetime_until);
        Ok(Token::from_access_token(token, lifetime))
    }

    fn what(&self, kind: &str, caller_name: Option<&str>) -> String {
        let by = caller_name
            .map(|name| format!(" by {name}"))
            .unwrap_or_default();
        let via = if self.delegates.is_empty() {
            String::new()
        } else {
            format!(" through delegates {}", self.delegates.join(", "))
        };
        format!("minting {kind} for {} (impersonated{by}{via})", self.email)
    }

    /// The call to `url` (`generateIdToken` or `generateAccessToken`) that mints `kind`.
    fn endpoint<'a>(
        &self,
        url: &'a str,
        kind: &str,
        caller_name: Option<&str>,
    ) -> TokenEndpoint<'a> {
        TokenEndpoint {
            what: self.what(kind, caller_name),
            url,
            timeout: REQUEST_TIMEOUT,
            unreachable_fix: format!(
                "check that {} is reachable from here, or set {IAM_ENDPOINT_VARIABLE}",
                self.endpoint
            ),
            wrong_answer_fix: format!(
                "check that {IAM_ENDPOINT_VARIABLE} (or the impersonation URL) names the IAM \
                 Credentials API"
            ),
        }
    }

    /// Calls IAM Credentials with `caller`'s token; a refusal's fix names the grants
    /// (`role` on each hop) that let the caller through.
    async fn call<T: serde::de::DeserializeOwned>(
        &self,
        http: &reqwest::Client,
        endpoint: &TokenEndpoint<'_>,
        caller: &Token,
        caller_name: Option<&str>,
        body: &serde_json::Value,
        role: &str,
    ) -> Result<T, Error> {
        let request = credential_request(http, reqwest::Method::POST, endpoint.url, IAM_WHAT)?
            .bearer_auth(caller.secret())
            .json(body);
        endpoint
            .json(request, |status| {
                self.refused_fix(status, caller_name, role)
            })
            .await
    }

    /// What to do when IAM Credentials refuses `caller_name` with `status`.
    fn refused_fix(
        &self,
        status: reqwest::StatusCode,
        caller_name: Option<&str>,
        role: &str,
    ) -> String {
        let member = caller_name.map_or_else(|| "MEMBER".to_owned(), member_of);
        let mut hops: Vec<&str> = self.delegates.iter().map(String::as_str).collect();
        hops.push(&self.email);
        let grants: Vec<String> = hops
            .iter()
            .scan(member.clone(), |granted, hop| {
                let command = format!(
                    "gcloud iam service-accounts add-iam-policy-binding {hop} --member={granted} --role={role}"
                );
                *granted = format!("serviceAccount:{hop}");
                Some(command)
            })
            .collect();
        match status.as_u16() {
            401 => format!(
                "the caller's access token was refused: check the credentials that do the \
                 impersonation ({})",
                caller_name.unwrap_or("the chosen source")
            ),
            403 => format!(
                "let {} impersonate {}: {}",
                caller_name.unwrap_or("the caller"),
                self.email,
                grants.join(" && ")
            ),
            404 => format!(
                "check that service account {} exists (`gcloud iam service-accounts describe {}`) \
                 and that the IAM Credentials API is enabled",
                self.email, self.email
            ),
            _ => "retry later; if it persists, check https://status.cloud.google.com".to_owned(),
        }
    }
}

/// The IAM member for a principal: `serviceAccount:`, `user:`, or a federated
/// `principal://` as is.
pub(crate) fn member_of(principal: &str) -> String {
    if principal.starts_with("principal://") || principal.starts_with("principalSet://") {
        principal.to_owned()
    } else if principal.ends_with(".gserviceaccount.com") {
        format!("serviceAccount:{principal}")
    } else {
        format!("user:{principal}")
    }
}

/// Reads `https://HOST/v1/projects/-/serviceAccounts/EMAIL:generateAccessToken` into
/// the endpoint base and the email.
pub(crate) fn parse_impersonation_url(url: &reqwest::Url) -> Option<(String, String)> {
    let text = url.as_str();
    let (base, rest) = text.split_once("/v1/projects/")?;
    let (_project, rest) = rest.split_once("/serviceAccounts/")?;
    let (email, _method) = rest.rsplit_once(':')?;
    let email = email.replace("%40", "@");
    if !email.contains('@') || email.contains('/') {
        return None;
    }
    Some((base.trim_end_matches('/').to_owned(), email))
}

/// Delegates as files write them: emails or `projects/-/serviceAccounts/EMAIL`.
pub(crate) fn delegate_email(delegate: &str) -> String {
    delegate
        .rsplit_once("/serviceAccounts/")
        .map_or(delegate, |(_, email)| email)
        .to_owned()
}

/// Another source's credentials used to mint tokens as a service account.
pub(crate) struct Impersonated {
    source: Arc<dyn CredentialSource>,
    target: IamTarget,
    /// Where the impersonation was asked for, for messages.
    origin: String,
}

impl Impersonated {
    /// Impersonates `email` with `source`'s credentials, at `CLOUDRUN_TEST_IAM_ENDPOINT`
    /// or Google's IAM Credentials.
    pub(crate) fn wrap(
        source: Arc<dyn CredentialSource>,
        email: &str,
        origin: &str,
    ) -> Impersonated {
        Impersonated {
            source,
            target: IamTarget {
                endpoint: iam_endpoint(None),
                email: email.trim().to_owned(),
                delegates: Vec::new(),
            },
            origin: origin.to_owned(),
        }
    }

    /// An `impersonated_service_account` file; `parse_source` reads its `source_credentials`.
    pub(crate) fn parse(
        fields: &Fields<'_>,
        parse_source: impl FnOnce(&serde_json::Value) -> Result<Arc<dyn CredentialSource>, Error>,
    ) -> Result<Impersonated, Error> {
        let fields = &fields.with_fix(FILE_FIX);
        let url = fields.required_url("service_account_impersonation_url")?;
        let (endpoint, email) = parse_impersonation_url(&url).ok_or_else(|| {
            fields.error_with_fix(
                format!(
                    "field `{}` is not an IAM Credentials URL such as \
                     https://iamcredentials.googleapis.com/v1/projects/-/serviceAccounts/SA_EMAIL:generateAccessToken",
                    fields.name("service_account_impersonation_url")
                ),
                FILE_FIX,
            )
        })?;
        let delegates = fields
            .optional_str_list("delegates")?
            .iter()
            .map(|delegate| delegate_email(delegate))
            .collect();
        fields.required_object("source_credentials")?;
        let source = match fields.raw("source_credentials") {
            Some(value) => parse_source(value)?,
            None => return Err(fields.error("has no `source_credentials`")),
        };
        Ok(Impersonated {
            source,
            target: IamTarget {
                endpoint: iam_endpoint(Some(endpoint)),
                email,
                delegates,
            },
            origin: format!("file {}", fields.path().display()),
        })
    }
}

impl CredentialSource for Impersonated {
    fn describe(&self) -> String {
        let via = if self.target.delegates.is_empty() {
            String::new()
        } else {
            format!(" through {}", self.target.delegates.join(", "))
        };
        format!(
            "{} impersonated{via} (asked by {}) at {}, with {}",
            self.target.email,
            self.origin,
            self.target.endpoint,
            self.source.describe()
        )
    }

    fn identity(&self) -> Option<String> {
        Some(self.target.email.clone())
    }

    fn fingerprint(&self) -> String {
        format!(
            "impersonated:{}:{}:{}<{}",
            self.target.email,
            self.target.delegates.join(","),
            self.target.endpoint,
            self.source.fingerprint()
        )
    }

    fn mint_id_token<'a>(
        &'a self,
        http: &'a reqwest::Client,
        audience: &'a str,
    ) -> BoxFuture<'a, Result<Token, Error>> {
        Box::pin(async move {
            self.target.check_endpoint()?;
            let caller = self.source.mint_access_token(http).await?;
            let caller_name = self.source.identity();
            self.target
                .generate_id_token(http, &caller, caller_name.as_deref(), audience)
                .await
        })
    }

    fn mint_access_token<'a>(
        &'a self,
        http: &'a reqwest::Client,
    ) -> BoxFuture<'a, Result<Token, Error>> {
        Box::pin(async move {
            self.target.check_endpoint()?;
            let caller = self.source.mint_access_token(http).await?;
            let caller_name = self.source.identity();
            self.target
                .generate_access_token(http, &caller, caller_name.as_deref())
                .await
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_impersonation_urls() {
        let url = reqwest::Url::parse(
            "https://iamcredentials.googleapis.com/v1/projects/-/serviceAccounts/sa@p.iam.gserviceaccount.com:generateAccessToken",
        )
        .unwrap();
        assert_eq!(
            parse_impersonation_url(&url),
            Some((
                "https://iamcredentials.googleapis.com".to_owned(),
                "sa@p.iam.gserviceaccount.com".to_owned()
            ))
        );
        let url = reqwest::Url::parse(
            "http://127.0.0.1:9/v1/projects/-/serviceAccounts/sa%40p.iam.gserviceaccount.com:generateAccessToken",
        )
        .unwrap();
        assert_eq!(
            parse_impersonation_url(&url).unwrap().1,
            "sa@p.iam.gserviceaccount.com"
        );
        let url = reqwest::Url::parse("https://example.com/token").unwrap();
        assert_eq!(parse_impersonation_url(&url), None);
        assert_eq!(
            delegate_email("projects/-/serviceAccounts/d@p.iam.gserviceaccount.com"),
            "d@p.iam.gserviceaccount.com"
        );
        assert_eq!(member_of("a@example.com"), "user:a@example.com");
    }
}
