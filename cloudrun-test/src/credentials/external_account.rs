//! Workload identity federation (`"type": "external_account"`), e.g. GitHub Actions
//! through `google-github-actions/auth`: a subject token from the
//! `credential_source` (a `file`, a `url` or an `executable`) is exchanged at the
//! STS `token_url` for a federated access token, which then impersonates the service
//! account of `service_account_impersonation_url` to get identity tokens.
//!
//! A federated token alone cannot give an identity token: without the impersonation
//! URL, minting one fails with the service account and roles it takes.
//!
//! This file reads the file and mints; the steps live beside it: `subject` reads the
//! `credential_source` (`executable` runs a program for it), `sts` does the exchange,
//! and [`super::impersonated`] the impersonation.

mod executable;
mod sts;
mod subject;

use std::path::PathBuf;

use super::impersonated::{IamTarget, iam_endpoint, parse_impersonation_url};
use super::wire::Fields;
use super::{BoxFuture, CredentialSource};
use crate::error::Error;
use crate::token::Token;
use subject::{SubjectSource, parse_source, without_query};

const DEFAULT_TOKEN_URL: &str = "https://sts.googleapis.com/v1/token";
const FIX: &str = "write the file again with `gcloud iam workload-identity-pools create-cred-config \
    PROVIDER --service-account=SA_EMAIL --output-file=FILE ...` (or let google-github-actions/auth write it)";

pub(crate) struct ExternalAccount {
    path: PathBuf,
    audience: String,
    subject_token_type: String,
    token_url: String,
    source: SubjectSource,
    impersonation: Option<IamTarget>,
    workforce_user_project: Option<String>,
}

impl ExternalAccount {
    pub(crate) fn parse(fields: &Fields<'_>) -> Result<ExternalAccount, Error> {
        let fields = &fields.with_fix(FIX);
        let audience = fields.required_str("audience")?;
        let subject_token_type = fields.required_str("subject_token_type")?;
        let token_url = fields
            .optional_url("token_url")?
            .map_or_else(|| DEFAULT_TOKEN_URL.to_owned(), String::from);
        let impersonation = match fields.optional_url("service_account_impersonation_url")? {
            None => None,
            Some(url) => {
                let (endpoint, email) = parse_impersonation_url(&url).ok_or_else(|| {
                    fields.error(format!(
                        "field `{}` is not an IAM Credentials URL such as \
                         https://iamcredentials.googleapis.com/v1/projects/-/serviceAccounts/SA_EMAIL:generateAccessToken",
                        fields.name("service_account_impersonation_url")
                    ))
                })?;
                Some(IamTarget {
                    endpoint: iam_endpoint(Some(endpoint)),
                    email,
                    delegates: Vec::new(),
                })
            }
        };
        let source = parse_source(&fields.required_object("credential_source")?)?;
        Ok(ExternalAccount {
            path: fields.path().to_owned(),
            audience,
            subject_token_type,
            token_url,
            source,
            impersonation,
            workforce_user_project: fields.optional_str("workforce_pool_user_project")?,
        })
    }

    fn source_error(&self, problem: String, fix: &str) -> Error {
        Error::credentials_file(&self.path, problem, fix)
    }

    /// `principalSet://.../workloadIdentityPools/POOL/*` for the file's provider.
    fn pool_members(&self) -> String {
        let pool = self
            .audience
            .trim_start_matches("//iam.googleapis.com/")
            .split("/providers/")
            .next()
            .unwrap_or_default();
        if pool.contains("workloadIdentityPools/") {
            format!("principalSet://iam.googleapis.com/{pool}/*")
        } else {
            "principalSet://iam.googleapis.com/projects/PROJECT_NUMBER/locations/global/workloadIdentityPools/POOL/*".into()
        }
    }
}

impl CredentialSource for ExternalAccount {
    fn describe(&self) -> String {
        let source = match &self.source {
            SubjectSource::File { path, .. } => {
                format!("subject token from file {}", path.display())
            }
            SubjectSource::Url { url, .. } => {
                format!("subject token from {}", without_query(url))
            }
            SubjectSource::Executable { command, .. } => {
                format!("subject token from executable `{command}`")
            }
        };
        let target = match &self.impersonation {
            Some(target) => format!(", impersonating {}", target.email),
            None => ", no service account to impersonate".to_owned(),
        };
        format!(
            "workload identity federation (external_account) file {} ({source}{target})",
            self.path.display()
        )
    }

    fn identity(&self) -> Option<String> {
        self.impersonation
            .as_ref()
            .map(|target| target.email.clone())
    }

    fn fingerprint(&self) -> String {
        format!(
            "external_account:{}:{}:{}",
            self.path.display(),
            self.audience,
            self.impersonation
                .as_ref()
                .map_or("-", |target| target.email.as_str())
        )
    }

    fn mint_id_token<'a>(
        &'a self,
        http: &'a reqwest::Client,
        audience: &'a str,
    ) -> BoxFuture<'a, Result<Token, Error>> {
        Box::pin(async move {
            let Some(target) = &self.impersonation else {
                return Err(self.source_error(
                    "has no `service_account_impersonation_url`: workload identity federation \
                     gives a federated access token, and only a service account can turn it into \
                     the identity token Cloud Run needs"
                        .into(),
                    &format!(
                        "pick a service account SA_EMAIL that has roles/run.invoker on the service, \
                         let the pool's identities use it (`gcloud iam service-accounts \
                         add-iam-policy-binding SA_EMAIL --role=roles/iam.workloadIdentityUser \
                         --member={}`), and name it in the file \
                         (`gcloud iam workload-identity-pools create-cred-config ... \
                         --service-account=SA_EMAIL`; with google-github-actions/auth, \
                         `service_account: SA_EMAIL`)",
                        self.pool_members()
                    ),
                ));
            };
            // Before the federated token is minted: IAM must be allowed to get it.
            target.check_endpoint()?;
            let federated = self.federated_token(http).await?;
            target
                .generate_id_token(http, &federated, Some(&self.audience), audience)
                .await
                .map_err(|error| match error.status() {
                    Some(reqwest::StatusCode::FORBIDDEN) => {
                        let fix = format!(
                            "let the pool's identities use {}: `gcloud iam service-accounts \
                             add-iam-policy-binding {} --role=roles/iam.workloadIdentityUser \
                             --member={}` ({})",
                            target.email,
                            target.email,
                            self.pool_members(),
                            error.fix().unwrap_or_default()
                        );
                        error.with_fix(fix)
                    }
                    _ => error,
                })
        })
    }

    fn mint_access_token<'a>(
        &'a self,
        http: &'a reqwest::Client,
    ) -> BoxFuture<'a, Result<Token, Error>> {
        Box::pin(async move {
            if let Some(target) = &self.impersonation {
                target.check_endpoint()?;
            }
            let federated = self.federated_token(http).await?;
            match &self.impersonation {
                Some(target) => {
                    target
                        .generate_access_token(http, &federated, Some(&self.audience))
                        .await
                }
                // Many Google APIs, the Cloud Run Admin API among them, take federated tokens.
                None => Ok(federated),
            }
        })
    }
}
