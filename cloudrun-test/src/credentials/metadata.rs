//! The metadata server of Google Cloud's compute environments (Compute Engine, GKE,
//! Cloud Run, Cloud Build): identity tokens for the attached service account.
//!
//! Detection never touches the network, so that off Google Cloud the chain moves on
//! in microseconds (other libraries probe `169.254.169.254` and wait 0.75 s to 30 s).
//! The metadata server is used when
//! 1. `GCE_METADATA_HOST` is set: that `host:port`, trusted without probing;
//! 2. `/sys/class/dmi/id/product_name` names Google (Compute Engine VMs, GKE nodes and
//!    the VMs Cloud Build runs its steps on);
//! 3. `K_SERVICE` or `CLOUD_RUN_JOB` is set (Cloud Run, Cloud Functions: gVisor
//!    sandboxes have no DMI data).
//!
//! `NO_GCE_CHECK=true` (as in Google's Python library) turns 2 and 3 off. Every
//! request is bounded ([`REQUEST_TIMEOUT`]).
//!
//! Requests go to the server directly, never through a proxy (as Google's Go metadata
//! client does): they are plain http, which `crate::transport` never proxies, and the
//! metadata host is on its never-proxied list too. They carry no credential, only
//! `Metadata-Flavor: Google`, so plain http off loopback is allowed here alone.

use std::sync::OnceLock;
use std::time::Duration;

use serde::Deserialize;

use super::token_endpoint::TokenEndpoint;
use super::{BoxFuture, CredentialSource};
use crate::error::Error;
use crate::settings::env;
use crate::token::Token;

pub(crate) const DMI_PRODUCT_NAME: &str = "/sys/class/dmi/id/product_name";
/// The link-local address: no DNS lookup needed (as Google's Go library does).
const DEFAULT_HOST: &str = "169.254.169.254";
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// Where the metadata server is, and why we think so; or why we think there is none.
pub(crate) fn detect() -> Result<(String, String), String> {
    if let Some(host) = env("GCE_METADATA_HOST") {
        return Ok((host, "GCE_METADATA_HOST is set".into()));
    }
    if env("NO_GCE_CHECK").is_some_and(|value| matches!(value.as_str(), "1" | "true" | "True")) {
        return Err("NO_GCE_CHECK is set and GCE_METADATA_HOST is not".into());
    }
    if let Ok(product) = crate::bounded::read_file(
        std::path::Path::new(DMI_PRODUCT_NAME),
        crate::bounded::FILE_LIMIT,
    ) && product.contains("Google")
    {
        return Ok((
            DEFAULT_HOST.into(),
            format!("{DMI_PRODUCT_NAME} says {:?}", product.trim()),
        ));
    }
    for variable in ["K_SERVICE", "CLOUD_RUN_JOB"] {
        if env(variable).is_some() {
            return Ok((
                DEFAULT_HOST.into(),
                format!("{variable} is set (Cloud Run)"),
            ));
        }
    }
    Err(format!(
        "not on Google Cloud: GCE_METADATA_HOST is not set, {DMI_PRODUCT_NAME} does not name Google, \
         and neither K_SERVICE nor CLOUD_RUN_JOB is set"
    ))
}

pub(crate) struct MetadataServer {
    /// `host[:port]`.
    host: String,
    /// Why this host, for messages.
    why: String,
    /// The service account's email, learnt from the first identity token.
    email: OnceLock<String>,
}

#[derive(Deserialize)]
struct AccessTokenAnswer {
    access_token: Option<String>,
    /// Range-checked: see [`crate::token::expires_in`].
    #[serde(default, deserialize_with = "crate::token::expires_in")]
    expires_in: Option<Duration>,
}

impl MetadataServer {
    pub(crate) fn new(host: &str, why: &str) -> MetadataServer {
        let host = host
            .trim()
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .to_owned();
        MetadataServer {
            host,
            why: why.to_owned(),
            email: OnceLock::new(),
        }
    }

    fn url(&self, item: &str) -> String {
        format!(
            "http://{}/computeMetadata/v1/instance/service-accounts/default/{item}",
            self.host
        )
    }

    /// The call to `url` that mints `what`.
    fn endpoint<'a>(&self, url: &'a str, what: &str) -> TokenEndpoint<'a> {
        TokenEndpoint {
            what: format!("minting {what} from the metadata server ({})", self.why),
            url,
            timeout: REQUEST_TIMEOUT,
            unreachable_fix: format!(
                "the metadata server at {} did not answer: outside Google Cloud, unset \
                 GCE_METADATA_HOST (or fix it); on Google Cloud, check the workload's network",
                self.host
            ),
            wrong_answer_fix: format!(
                "check that {} is a metadata server (GCE_METADATA_HOST)",
                self.host
            ),
        }
    }

    /// A metadata request (the server answers only with `Metadata-Flavor: Google`).
    fn request(
        &self,
        http: &reqwest::Client,
        url: &str,
        query: &[(&str, &str)],
    ) -> reqwest::RequestBuilder {
        http.get(url)
            .query(query)
            .header("Metadata-Flavor", "Google")
    }
}

/// What to do when the metadata server refuses with `status`.
fn refused_fix(status: reqwest::StatusCode) -> String {
    match status.as_u16() {
        404 => "the workload has no service account attached: give the VM, Cloud Run service or \
                build a service account (e.g. `gcloud run services update SERVICE \
                --service-account=SA_EMAIL`)"
            .to_owned(),
        403 => "the metadata server refused the request (a proxy may have added \
                X-Forwarded-For, or the VM's scopes are too narrow)"
            .to_owned(),
        _ => "retry; if it persists, check the workload's service account".to_owned(),
    }
}

impl CredentialSource for MetadataServer {
    fn describe(&self) -> String {
        let who = self
            .email
            .get()
            .map(|email| format!(", as {email}"))
            .unwrap_or_default();
        format!("the metadata server at {} ({}){who}", self.host, self.why)
    }

    fn identity(&self) -> Option<String> {
        self.email.get().cloned()
    }

    fn fingerprint(&self) -> String {
        format!("metadata:{}", self.host)
    }

    fn mint_id_token<'a>(
        &'a self,
        http: &'a reqwest::Client,
        audience: &'a str,
    ) -> BoxFuture<'a, Result<Token, Error>> {
        Box::pin(async move {
            let url = self.url("identity");
            let endpoint = self.endpoint(&url, "an identity token");
            let request = self.request(http, &url, &[("audience", audience), ("format", "full")]);
            let body = endpoint.text(request, refused_fix).await?;
            let token = Token::from_jwt(body.trim().to_owned());
            if token.claims().aud.is_none() {
                return Err(endpoint.wrong_answer("the answer is not an identity token (a JWT)"));
            }
            if let Some(email) = &token.claims().email {
                let _ = self.email.set(email.clone());
            }
            Ok(token)
        })
    }

    fn mint_access_token<'a>(
        &'a self,
        http: &'a reqwest::Client,
    ) -> BoxFuture<'a, Result<Token, Error>> {
        Box::pin(async move {
            let url = self.url("token");
            let endpoint = self.endpoint(&url, "an access token");
            let answer: AccessTokenAnswer = endpoint
                .json(self.request(http, &url, &[]), refused_fix)
                .await?;
            let token = answer.access_token.ok_or_else(|| {
                endpoint.error(
                    "the answer has no `access_token`",
                    "check the workload's service account and scopes",
                )
            })?;
            Ok(Token::from_access_token(
                token,
                answer.expires_in.unwrap_or(Duration::from_secs(3600)),
            ))
        })
    }
}
