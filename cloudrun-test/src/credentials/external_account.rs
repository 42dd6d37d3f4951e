//! Workload identity federation (`"type": "external_account"`), e.g. GitHub Actions
//! through `google-github-actions/auth`: a subject token from the
//! `credential_source` (a `file`, a `url` or an `executable`) is exchanged at the
//! STS `token_url` for a federated access token, which then impersonates the service
//! account of `service_account_impersonation_url` to get identity tokens.
//!
//! A federated token alone cannot give an identity token: without the impersonation
//! URL, minting one fails with the service account and roles it takes.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;

use super::impersonated::{IamTarget, iam_endpoint, parse_impersonation_url};
use super::process::{RunError, run, stderr_tail};
use super::wire::{Fields, credential_request, redact, refusal, send, unix_now};
use super::{BoxFuture, CLOUD_PLATFORM_SCOPE, CredentialSource};
use crate::error::Error;
use crate::settings::env;
use crate::token::Token;

const DEFAULT_TOKEN_URL: &str = "https://sts.googleapis.com/v1/token";
const TOKEN_EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
const ACCESS_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:access_token";
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
const ALLOW_EXECUTABLES: &str = "GOOGLE_EXTERNAL_ACCOUNT_ALLOW_EXECUTABLES";
const FIX: &str = "write the file again with `gcloud iam workload-identity-pools create-cred-config \
    PROVIDER --service-account=SA_EMAIL --output-file=FILE ...` (or let google-github-actions/auth write it)";

/// Where the subject token is read, and in which form. No `Debug`: headers may hold
/// a secret (a CI's request token).
enum SubjectSource {
    File {
        path: PathBuf,
        format: Format,
    },
    Url {
        url: String,
        headers: Vec<(String, String)>,
        format: Format,
    },
    Executable {
        command: String,
        timeout: Duration,
        output_file: Option<PathBuf>,
    },
}

enum Format {
    Text,
    /// A JSON object; the token is this field.
    Json(String),
}

pub(crate) struct ExternalAccount {
    path: PathBuf,
    audience: String,
    subject_token_type: String,
    token_url: String,
    source: SubjectSource,
    impersonation: Option<IamTarget>,
    workforce_user_project: Option<String>,
}

#[derive(Deserialize)]
struct StsAnswer {
    access_token: Option<String>,
    /// Range-checked: see [`crate::token::expires_in`].
    #[serde(default, deserialize_with = "crate::token::expires_in")]
    expires_in: Option<Duration>,
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
        Error::credentials_file(self.path.clone(), problem, fix.to_owned())
    }

    /// The subject token from the credential source.
    async fn subject_token(&self, http: &reqwest::Client) -> Result<String, Error> {
        match &self.source {
            SubjectSource::File { path, format } => {
                let text = crate::bounded::read_file(path, crate::bounded::FILE_LIMIT).map_err(|error| {
                    self.source_error(
                        format!(
                            "the subject token file {} (`credential_source.file`) cannot be read ({error})",
                            path.display()
                        ),
                        "check that the step that writes the token (e.g. your CI's OIDC token \
                         request) ran before the tests",
                    )
                })?;
                self.extract(&text, format, &format!("the file {}", path.display()))
            }
            SubjectSource::Url {
                url,
                headers,
                format,
            } => {
                let what = format!(
                    "fetching the subject token for {} (`credential_source.url`)",
                    self.path.display()
                );
                // The file's headers may hold a secret (a CI's request token): https or
                // loopback only, except for a cloud's own metadata service on this
                // machine's link (e.g. Azure's, at http://169.254.169.254), which, like
                // Google's metadata server, is asked for a token and given none.
                let mut request = match reqwest::Url::parse(url) {
                    Ok(parsed)
                        if crate::transport::is_link_local(&parsed)
                            && crate::settings::Emulated::get()?.is_none() =>
                    {
                        http.get(parsed)
                    }
                    _ => credential_request(
                        http,
                        reqwest::Method::GET,
                        url,
                        &format!("`credential_source.url` of {}", self.path.display()),
                    )?,
                };
                for (name, value) in headers {
                    request = request.header(name, value);
                }
                let shown = without_query(url);
                let network_fix = format!("check that {shown} is reachable from here");
                let (status, body) =
                    send(request, REQUEST_TIMEOUT, &what, &shown, &network_fix).await?;
                if !status.is_success() {
                    return Err(Error::token_endpoint(
                        what,
                        shown,
                        refusal(status, &body),
                        "check `credential_source.headers` (e.g. the CI's request token) and \
                              that the URL still serves tokens",
                    ));
                }
                self.extract(&body, format, "the answer of `credential_source.url`")
            }
            SubjectSource::Executable {
                command,
                timeout,
                output_file,
            } => {
                self.run_executable(command, *timeout, output_file.as_ref())
                    .await
            }
        }
    }

    /// The token in a file's or URL's text, per `credential_source.format`.
    fn extract(&self, text: &str, format: &Format, from: &str) -> Result<String, Error> {
        let token = match format {
            Format::Text => text.trim().to_owned(),
            Format::Json(field) => {
                let value: Value = serde_json::from_str(text).map_err(|_| {
                    self.source_error(
                        format!(
                            "{from} is not JSON, but `credential_source.format.type` is \"json\""
                        ),
                        "set `credential_source.format` to what the source gives",
                    )
                })?;
                value
                    .get(field)
                    .and_then(Value::as_str)
                    .map(str::to_owned)
                    .ok_or_else(|| {
                        self.source_error(
                            format!(
                                "{from} has no string field `{field}` \
                                 (`credential_source.format.subject_token_field_name`)"
                            ),
                            "set `subject_token_field_name` to the field holding the token",
                        )
                    })?
            }
        };
        if token.is_empty() {
            return Err(self.source_error(
                format!("{from} holds an empty subject token"),
                "check the step that provides the token",
            ));
        }
        Ok(token)
    }

    async fn run_executable(
        &self,
        command_line: &str,
        timeout: Duration,
        output_file: Option<&PathBuf>,
    ) -> Result<String, Error> {
        if env(ALLOW_EXECUTABLES).as_deref() != Some("1") {
            return Err(self.source_error(
                format!(
                    "`credential_source.executable` runs `{command_line}`, and executables run only \
                     when {ALLOW_EXECUTABLES}=1 (as in Google's libraries)"
                ),
                &format!("if you trust the file, set {ALLOW_EXECUTABLES}=1"),
            ));
        }
        // A response cached by an earlier run, if still good.
        if let Some(file) = output_file
            && let Ok(text) = crate::bounded::read_file(file, crate::bounded::FILE_LIMIT)
            && let Ok((token, _)) = parse_executable_output(&text, true)
        {
            return Ok(token);
        }
        let mut parts = command_line.split_whitespace();
        let program = parts.next().unwrap_or_default();
        let mut command = Command::new(program);
        command
            .args(parts)
            .env("GOOGLE_EXTERNAL_ACCOUNT_AUDIENCE", &self.audience)
            .env(
                "GOOGLE_EXTERNAL_ACCOUNT_TOKEN_TYPE",
                &self.subject_token_type,
            )
            .env("GOOGLE_EXTERNAL_ACCOUNT_INTERACTIVE", "0");
        if let Some(target) = &self.impersonation {
            command.env("GOOGLE_EXTERNAL_ACCOUNT_IMPERSONATED_EMAIL", &target.email);
        }
        if let Some(file) = output_file {
            command.env("GOOGLE_EXTERNAL_ACCOUNT_OUTPUT_FILE", file);
        }
        let what = format!(
            "running `{command_line}` (`credential_source.executable` of {})",
            self.path.display()
        );
        let failed = |problem: String, fix: &str| {
            Error::token_endpoint(what.clone(), program.to_owned(), problem, fix.to_owned())
        };
        let finished = run(command, timeout).await.map_err(|error| match error {
            RunError::Spawn(error) => failed(
                format!("it could not be started ({error})"),
                "check `credential_source.executable.command`: an absolute path to an executable, then its arguments",
            )
            .with_source(error),
            RunError::TimedOut => failed(
                format!("it did not finish within {timeout:?} and was stopped"),
                "make it faster, or raise `credential_source.executable.timeout_millis` (at most 120000)",
            )
            .timed_out(),
            RunError::Wait(error) => failed(format!("waiting for it failed ({error})"), "retry"),
            RunError::TooMuchOutput { stream } => failed(
                super::process::too_much_output("it", stream),
                "make it print only Google's executable-sourced credential response",
            ),
        })?;
        if !finished.status.success() {
            return Err(failed(
                format!(
                    "it exited with {}: {}",
                    finished.status,
                    stderr_tail(&finished.stderr)
                ),
                "run the command by hand to see why",
            ));
        }
        let stdout = String::from_utf8_lossy(&finished.stdout);
        parse_executable_output(&stdout, output_file.is_some())
            .map(|(token, _)| token)
            .map_err(|problem| {
                failed(
                    format!("its output {problem}"),
                    "it must print Google's executable-sourced credential response: \
                     {\"version\": 1, \"success\": true, \"token_type\": \
                     \"urn:ietf:params:oauth:token-type:id_token\", \"id_token\": \"...\", \
                     \"expiration_time\": UNIX_SECONDS}",
                )
            })
    }

    /// The STS exchange: subject token in, federated access token out.
    async fn federated_token(&self, http: &reqwest::Client) -> Result<Token, Error> {
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
        let network_fix = format!("check that {} is reachable from here", self.token_url);
        let request = request.form(&form);
        let (status, body) = send(
            request,
            REQUEST_TIMEOUT,
            &what,
            &self.token_url,
            &network_fix,
        )
        .await?;
        let failed = |problem: String, fix: String| {
            Error::token_endpoint(what.clone(), self.token_url.clone(), problem, fix)
        };
        if !status.is_success() {
            return Err(failed(
                refusal(status, &body),
                format!(
                    "check that the workload identity provider {} accepts this token (its issuer, \
                     audience and attribute condition) and that `subject_token_type` is right",
                    self.audience
                ),
            ));
        }
        let answer: StsAnswer = serde_json::from_str(&body).map_err(|error| {
            failed(
                format!("the answer is not a token response ({error})"),
                "check `token_url`: it should be https://sts.googleapis.com/v1/token".into(),
            )
        })?;
        let token = answer.access_token.ok_or_else(|| {
            failed(
                "the answer has no `access_token`".into(),
                "check `token_url`: it should be https://sts.googleapis.com/v1/token".into(),
            )
        })?;
        Ok(Token::from_access_token(
            token,
            answer.expires_in.unwrap_or(Duration::from_secs(3600)),
        ))
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

/// A URL for messages: its query may carry secrets, so it is left out.
fn without_query(url: &str) -> String {
    match url.split_once('?') {
        Some((base, _)) => format!("{base}?..."),
        None => url.to_owned(),
    }
}

fn parse_source(fields: &Fields<'_>) -> Result<SubjectSource, Error> {
    if let Some(environment) = fields.optional_str("environment_id")? {
        return Err(fields.error_with_fix(
            format!(
                "has `{}` \"{environment}\": AWS credential sources are not supported by cloudrun-test",
                fields.name("environment_id")
            ),
            "use a `file`, `url` or `executable` credential source, or mint the token elsewhere \
             and set CLOUDRUN_TEST_ID_TOKEN",
        ));
    }
    let kinds: Vec<&str> = ["file", "url", "executable"]
        .into_iter()
        .filter(|kind| fields.has(kind))
        .collect();
    let format = || -> Result<Format, Error> {
        let Some(format) = fields.optional_object("format")? else {
            return Ok(Format::Text);
        };
        match format.optional_str("type")?.as_deref() {
            None | Some("text") => Ok(Format::Text),
            Some("json") => Ok(Format::Json(
                format.required_str("subject_token_field_name")?,
            )),
            Some(other) => Err(format.error(format!(
                "field `{}` is \"{other}\"; it must be \"text\" or \"json\"",
                format.name("type")
            ))),
        }
    };
    match kinds.as_slice() {
        ["file"] => Ok(SubjectSource::File {
            path: PathBuf::from(fields.required_str("file")?),
            format: format()?,
        }),
        ["url"] => Ok(SubjectSource::Url {
            url: fields.required_url("url")?.to_string(),
            headers: fields.optional_str_map("headers")?,
            format: format()?,
        }),
        ["executable"] => {
            let executable = fields.required_object("executable")?;
            let command = executable.required_str("command")?;
            let timeout = match executable.optional_u64("timeout_millis")? {
                None => Duration::from_secs(30),
                Some(millis @ 5_000..=120_000) => Duration::from_millis(millis),
                Some(millis) => {
                    return Err(executable.error(format!(
                        "field `{}` is {millis}; it must be between 5000 and 120000",
                        executable.name("timeout_millis")
                    )));
                }
            };
            Ok(SubjectSource::Executable {
                command,
                timeout,
                output_file: executable.optional_str("output_file")?.map(PathBuf::from),
            })
        }
        [] => Err(fields.error(format!(
            "`{}` has none of `file`, `url`, `executable`",
            fields.name("").trim_end_matches('.')
        ))),
        _ => Err(fields.error(format!(
            "`{}` has more than one of `file`, `url`, `executable`: {}",
            fields.name("").trim_end_matches('.'),
            kinds.join(", ")
        ))),
    }
}

/// Reads an executable's response (Google's executable-sourced credential format);
/// returns the token and its expiry. The problem never quotes the output.
fn parse_executable_output(
    text: &str,
    expiration_required: bool,
) -> Result<(String, Option<u64>), String> {
    let value: Value = serde_json::from_str(text.trim()).map_err(|_| "is not JSON".to_owned())?;
    let object = value.as_object().ok_or("is not a JSON object")?;
    match object.get("version").and_then(Value::as_u64) {
        Some(1) => {}
        Some(version) => {
            return Err(format!(
                "has `version` {version}; cloudrun-test understands version 1"
            ));
        }
        None => return Err("has no numeric `version`".into()),
    }
    match object.get("success").and_then(Value::as_bool) {
        Some(true) => {}
        Some(false) => {
            let code = object.get("code").and_then(Value::as_str).unwrap_or("?");
            let message = object
                .get("message")
                .and_then(Value::as_str)
                .unwrap_or("(no message)");
            return Err(format!(
                "reports a failure: code {}, {}",
                redact(code),
                redact(message)
            ));
        }
        None => return Err("has no boolean `success`".into()),
    }
    let token_type = object
        .get("token_type")
        .and_then(Value::as_str)
        .ok_or("has no `token_type`")?;
    let field = match token_type {
        "urn:ietf:params:oauth:token-type:jwt" | "urn:ietf:params:oauth:token-type:id_token" => {
            "id_token"
        }
        "urn:ietf:params:oauth:token-type:saml2" => "saml_response",
        other => {
            return Err(format!(
                "has `token_type` \"{}\", which is not a JWT, ID token or SAML type",
                redact(other)
            ));
        }
    };
    let token = object
        .get(field)
        .and_then(Value::as_str)
        .filter(|token| !token.is_empty())
        .ok_or_else(|| format!("has no `{field}`"))?;
    let expiration = match object.get("expiration_time") {
        None | Some(Value::Null) if expiration_required => {
            return Err("has no `expiration_time` (required with an `output_file`)".into());
        }
        None | Some(Value::Null) => None,
        Some(value) => Some(
            value
                .as_u64()
                .ok_or("has a non-numeric `expiration_time`")?,
        ),
    };
    if let Some(expiration) = expiration
        && expiration <= unix_now()
    {
        return Err("holds a token that has expired (`expiration_time` has passed)".into());
    }
    Ok((token.to_owned(), expiration))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_executable_responses() {
        let future = unix_now() + 600;
        let ok = format!(
            r#"{{"version":1,"success":true,"token_type":"urn:ietf:params:oauth:token-type:id_token","id_token":"abc","expiration_time":{future}}}"#
        );
        assert_eq!(
            parse_executable_output(&ok, true).unwrap(),
            ("abc".to_owned(), Some(future))
        );
        let no_expiry = r#"{"version":1,"success":true,"token_type":"urn:ietf:params:oauth:token-type:jwt","id_token":"abc"}"#;
        assert!(parse_executable_output(no_expiry, false).is_ok());
        assert!(
            parse_executable_output(no_expiry, true)
                .unwrap_err()
                .contains("expiration_time")
        );
        let failed = r#"{"version":1,"success":false,"code":"401","message":"no session"}"#;
        assert_eq!(
            parse_executable_output(failed, false).unwrap_err(),
            "reports a failure: code 401, no session"
        );
        let expired = r#"{"version":1,"success":true,"token_type":"urn:ietf:params:oauth:token-type:jwt","id_token":"abc","expiration_time":5}"#;
        assert!(
            parse_executable_output(expired, false)
                .unwrap_err()
                .contains("expired")
        );
        assert!(
            parse_executable_output(r#"{"version":2}"#, false)
                .unwrap_err()
                .contains("version 1")
        );
        assert_eq!(
            parse_executable_output("eyJsecret", false).unwrap_err(),
            "is not JSON"
        );
    }
}
