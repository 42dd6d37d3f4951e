//! The STS token exchange (RFC 8693): the subject token in, a federated access token
//! for the workload identity pool out.

use std::time::Duration;

use serde::Deserialize;

use super::ExternalAccount;
use crate::credentials::CLOUD_PLATFORM_SCOPE;
use crate::credentials::token_endpoint::TokenEndpoint;
use crate::credentials::wire::credential_request;
use crate::error::Error;
use crate::token::Token;

const TOKEN_EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
const ACCESS_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:access_token";
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Deserialize)]
struct StsAnswer {
    access_token: Option<String>,
    /// Range-checked: see [`crate::token::expires_in`].
    #[serde(default, deserialize_with = "crate::token::expires_in")]
    expires_in: Option<Duration>,
}

impl ExternalAccount {
    /// The STS exchange: subject token in, federated access token out.
    pub(super) async fn federated_token(&self, http: &reqwest::Client) -> Result<Token, Error> {
        // Checked before the subject token is fetched: it goes over https or to loopback only.
        let request = credential_request(
            http,
            reqwest::Method::POST,
            &self.token_url,
            &format!("the token exchange `token_url` of {}", self.path.display()),
        )?;
        let subject_token = self.subject_token(http).await?;
        let options = match (&self.workforce_user_project, &self.impersonation) {
            (Some(project), None) => {
                Some(serde_json::json!({ "userProject": project }).to_string())
            }
            _ => None,
        };
        let mut form = vec![
            ("grant_type", TOKEN_EXCHANGE),
            ("audience", self.audience.as_str()),
            ("scope", CLOUD_PLATFORM_SCOPE),
            ("requested_token_type", ACCESS_TOKEN_TYPE),
            ("subject_token", subject_token.as_str()),
            ("subject_token_type", self.subject_token_type.as_str()),
        ];
        if let Some(options) = &options {
            form.push(("options", options.as_str()));
        }
        let what = format!(
            "exchanging the subject token of {} for a federated token",
            self.path.display()
        );
        let endpoint = TokenEndpoint {
            what,
            url: &self.token_url,
            timeout: REQUEST_TIMEOUT,
            unreachable_fix: format!("check that {} is reachable from here", self.token_url),
            wrong_answer_fix: "check `token_url`: it should be https://sts.googleapis.com/v1/token"
                .to_owned(),
        };
        let answer: StsAnswer = endpoint
            .json(request.form(&form), |_| {
                format!(
                    "check that the workload identity provider {} accepts this token (its issuer, \
                     audience and attribute condition) and that `subject_token_type` is right",
                    self.audience
                )
            })
            .await?;
        let token = answer
            .access_token
            .ok_or_else(|| endpoint.missing("access_token"))?;
        Ok(Token::from_access_token(
            token,
            answer.expires_in.unwrap_or(Duration::from_secs(3600)),
        ))
    }
}
