//! The gcloud CLI's active account: `gcloud auth print-identity-token`.
//!
//! The account is read from gcloud's configuration files (`$CLOUDSDK_CONFIG` or
//! `~/.config/gcloud`: `active_config`, then `configurations/config_NAME`'s
//! `[core] account`) without starting gcloud, so choosing this source costs nothing;
//! gcloud runs (about a second a call) only when a token is needed, and at most once
//! per audience per process thanks to the caches.
//!
//! What gcloud does, checked with the real CLI:
//! - `--audiences` works only for service accounts. A user account's identity token has
//!   gcloud's OAuth client id (`32555940559.apps.googleusercontent.com`) as audience,
//!   which Cloud Run accepts for development.
//! - `print-identity-token` ignores the `auth/impersonate_service_account` property; only
//!   the `--impersonate-service-account` flag impersonates, and without `--include-email`
//!   the token has no `email` claim (Cloud Run then refuses it). So when the property or
//!   `CLOUDRUN_TEST_IMPERSONATE_SERVICE_ACCOUNT` is set, both flags are passed.
//! - When minting fails gcloud may still exit 0 and print a cached token for another
//!   audience, so `aud`, `email` and `exp` of what it prints are checked.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use super::authorized_user::{GCLOUD_CLIENT_ID, is_client_id};
use super::impersonated::IAM_ENDPOINT_VARIABLE;
use super::process::{RunError, find_on_path, run, stderr_tail, too_much_output};
use super::wire::unix_now;
use super::{BoxFuture, CredentialSource};
use crate::error::Error;
use crate::settings::{env, gcloud_config_dir, gcloud_property};
use crate::token::Token;

const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a printed access token is trusted: gcloud does not say, but it refreshes
/// tokens that have less than about four minutes left before printing them.
const ACCESS_TOKEN_TRUST: Duration = Duration::from_secs(300);

const TIMEOUT_VARIABLE: &str = "CLOUDRUN_TEST_GCLOUD_TIMEOUT";
/// The longest `CLOUDRUN_TEST_GCLOUD_TIMEOUT` may ask for: gcloud takes about a second.
const MAX_TIMEOUT: Duration = Duration::from_secs(3600);

/// `CLOUDRUN_TEST_GCLOUD_TIMEOUT`: seconds (`45` or `45s`, as before) or any limit
/// `500ms`, `2m`..., from a millisecond to [`MAX_TIMEOUT`]; anything else is refused,
/// naming the variable, rather than silently replaced by the default.
fn timeout_setting(text: &str) -> Result<Duration, Error> {
    crate::settings::parse_limit(TIMEOUT_VARIABLE, text)
        .ok()
        .filter(|limit| *limit <= MAX_TIMEOUT)
        .ok_or_else(|| {
            Error::setting(
                format!(
                    "{TIMEOUT_VARIABLE} is {text:?}, which is no time limit between 1ms and {}",
                    humantime::format_duration(MAX_TIMEOUT)
                ),
                format!(
                    "write e.g. `30s` or `2m` (a bare number means seconds), or unset \
                 {TIMEOUT_VARIABLE} for the default of {}",
                    humantime::format_duration(DEFAULT_TIMEOUT)
                ),
            )
        })
}

pub(crate) struct GcloudCli {
    program: PathBuf,
    config_dir: Option<PathBuf>,
    account: String,
    /// The service account to impersonate, and who asked for it.
    impersonate: Option<(String, &'static str)>,
    timeout: Duration,
}

/// The gcloud source if gcloud is installed and has an active account; otherwise why
/// not (`Err`). The inner error: it is there but misconfigured.
pub(crate) fn detect(impersonate_env: Option<&str>) -> Result<Result<GcloudCli, Error>, String> {
    let program = match env("CLOUDRUN_TEST_GCLOUD") {
        Some(program) => PathBuf::from(program),
        None => find_on_path("gcloud").ok_or_else(|| {
            "gcloud is not on PATH (install the Google Cloud SDK, or set CLOUDRUN_TEST_GCLOUD)"
                .to_owned()
        })?,
    };
    let config_dir = gcloud_config_dir();
    let account = gcloud_property("core", "account").ok_or_else(|| {
        format!(
            "gcloud ({}) has no active account in {}",
            program.display(),
            config_dir.as_ref().map_or_else(
                || "its configuration".to_owned(),
                |dir| dir.display().to_string()
            )
        )
    })?;
    let impersonate = match impersonate_env {
        Some(email) => Some((
            email.to_owned(),
            "CLOUDRUN_TEST_IMPERSONATE_SERVICE_ACCOUNT",
        )),
        None => gcloud_property("auth", "impersonate_service_account")
            .map(|email| (email, "gcloud's auth/impersonate_service_account property")),
    };
    let timeout = match env(TIMEOUT_VARIABLE).map(|text| timeout_setting(&text)) {
        Some(Ok(timeout)) => timeout,
        Some(Err(error)) => return Ok(Err(error)),
        None => DEFAULT_TIMEOUT,
    };
    Ok(Ok(GcloudCli {
        program,
        config_dir,
        account,
        impersonate,
        timeout,
    }))
}

impl GcloudCli {
    fn is_service_account(&self) -> bool {
        self.account.ends_with(".gserviceaccount.com")
    }

    /// Whether the identity tokens carry the requested audience (service accounts and
    /// impersonation) or gcloud's client id (user accounts).
    pub(crate) fn chooses_audience(&self) -> bool {
        self.impersonate.is_some() || self.is_service_account()
    }

    fn command(&self, args: &[String]) -> Command {
        let mut command = Command::new(&self.program);
        command
            .args(args)
            .arg("--verbosity=error")
            .env("CLOUDSDK_CORE_DISABLE_PROMPTS", "1");
        if let Some(endpoint) = env(IAM_ENDPOINT_VARIABLE) {
            command.env(
                "CLOUDSDK_API_ENDPOINT_OVERRIDES_IAMCREDENTIALS",
                format!("{}/", endpoint.trim_end_matches('/')),
            );
        }
        command
    }

    fn impersonation_args(&self) -> Vec<String> {
        match &self.impersonate {
            Some((email, _)) => vec![format!("--impersonate-service-account={email}")],
            None => Vec::new(),
        }
    }

    /// Runs gcloud; returns its stdout, trimmed.
    async fn print(&self, args: Vec<String>, what: &str) -> Result<String, Error> {
        let shown = format!("gcloud {}", args.join(" "));
        let what = format!("{what} with `{shown}` (account {})", self.account);
        let url = self.program.display().to_string();
        let failed = |problem: String, fix: String| {
            Error::token_endpoint(what.clone(), url.clone(), problem, fix)
        };
        let finished = run(self.command(&args), self.timeout).await.map_err(|error| match error {
            RunError::Spawn(error) => failed(
                format!("gcloud could not be started ({error})"),
                "check the Google Cloud SDK installation, or set CLOUDRUN_TEST_GCLOUD to gcloud's path"
                    .into(),
            )
            .with_source(error),
            RunError::TimedOut => failed(
                format!("gcloud did not finish within {:?} and was stopped", self.timeout),
                "check the network (gcloud calls Google's token endpoint), or allow more time with \
                 CLOUDRUN_TEST_GCLOUD_TIMEOUT=SECONDS"
                    .into(),
            )
            .timed_out(),
            RunError::Wait(error) => failed(format!("waiting for gcloud failed ({error})"), "retry".into()),
            RunError::TooMuchOutput { stream } => failed(
                too_much_output("gcloud", stream),
                format!("run `{shown}` and check what it prints; CLOUDRUN_TEST_GCLOUD may name another program"),
            ),
        })?;
        if !finished.status.success() {
            let fix = if self.is_service_account() {
                format!(
                    "run `{shown}` to see gcloud's full error; reactivate the key with \
                     `gcloud auth activate-service-account {} --key-file=KEY.json`",
                    self.account
                )
            } else {
                format!(
                    "run `{shown}` to see gcloud's full error; log in again with \
                     `gcloud auth login {}`",
                    self.account
                )
            };
            return Err(failed(
                format!(
                    "gcloud exited with {}: {}",
                    finished.status,
                    stderr_tail(&finished.stderr)
                ),
                fix,
            ));
        }
        let stdout = String::from_utf8(finished.stdout).unwrap_or_default();
        let token = stdout.trim();
        if token.is_empty() || token.contains(char::is_whitespace) {
            return Err(failed(
                "gcloud printed something else than one token".into(),
                format!("run `{shown}` and check what it prints"),
            ));
        }
        Ok(token.to_owned())
    }

    /// Refuses a token gcloud printed that is not for `audience` or `identity`, or
    /// is (nearly) expired: gcloud prints a stale cached token when minting fails.
    fn check(&self, token: &Token, audience: &str) -> Result<(), String> {
        let claims = token.claims();
        let aud = claims.aud.as_deref().unwrap_or("(none)");
        let audience_ok = if self.chooses_audience() {
            aud == audience
        } else {
            is_client_id(aud)
        };
        if !audience_ok {
            return Err(format!(
                "gcloud printed a token for audience {aud}, not {}",
                if self.chooses_audience() {
                    audience
                } else {
                    "an OAuth client id"
                }
            ));
        }
        let identity = self.identity_email();
        if let Some(email) = &claims.email
            && !email.eq_ignore_ascii_case(identity)
        {
            return Err(format!(
                "gcloud printed a token for {email}, not for {identity}"
            ));
        }
        match claims.exp {
            Some(exp) if exp > unix_now().saturating_add(60) => Ok(()),
            Some(exp) => Err(format!(
                "gcloud printed a token that expired {} s ago or is about to",
                unix_now().saturating_sub(exp)
            )),
            None => Err("gcloud printed something that is not an identity token".into()),
        }
    }

    fn identity_email(&self) -> &str {
        self.impersonate
            .as_ref()
            .map_or(self.account.as_str(), |(email, _)| email.as_str())
    }
}

impl CredentialSource for GcloudCli {
    fn describe(&self) -> String {
        let config = self
            .config_dir
            .as_ref()
            .map(|dir| format!(", configuration {}", dir.display()))
            .unwrap_or_default();
        let kind = if self.is_service_account() {
            "service account"
        } else {
            "user account"
        };
        let impersonation = match &self.impersonate {
            Some((email, origin)) => format!(", impersonating {email} ({origin})"),
            None if !self.is_service_account() => format!(
                "; its identity tokens' audience is gcloud's client id {GCLOUD_CLIENT_ID}, \
                 which Cloud Run accepts for development"
            ),
            None => String::new(),
        };
        format!(
            "the gcloud CLI ({}), {kind} {}{config}{impersonation}",
            self.program.display(),
            self.account
        )
    }

    fn identity(&self) -> Option<String> {
        Some(self.identity_email().to_owned())
    }

    fn fingerprint(&self) -> String {
        format!(
            "gcloud:{}:{}:{}",
            self.config_dir
                .as_ref()
                .map_or_else(String::new, |dir| dir.display().to_string()),
            self.account,
            self.impersonate
                .as_ref()
                .map_or("-", |(email, _)| email.as_str())
        )
    }

    fn mint_id_token<'a>(
        &'a self,
        _http: &'a reqwest::Client,
        audience: &'a str,
    ) -> BoxFuture<'a, Result<Token, Error>> {
        Box::pin(async move {
            let mut args = vec!["auth".to_owned(), "print-identity-token".to_owned()];
            args.extend(self.impersonation_args());
            if self.impersonate.is_some() {
                args.push("--include-email".into());
            }
            if self.chooses_audience() {
                args.push(format!("--audiences={audience}"));
            }
            let token = Token::from_jwt(self.print(args, "minting an identity token").await?);
            self.check(&token, audience).map_err(|problem| {
                let again = if self.chooses_audience() {
                    format!(" --audiences={audience}")
                } else {
                    String::new()
                };
                Error::token_endpoint(
                    format!(
                        "minting an identity token with gcloud (account {})",
                        self.account
                    ),
                    self.program.display().to_string(),
                    format!("{problem}; the token was refused"),
                    format!(
                        "gcloud prints a cached token when it cannot mint a new one: run \
                         `gcloud auth print-identity-token{again}` to see why"
                    ),
                )
            })?;
            tracing::debug!(
                identity = self.identity_email(),
                audience,
                "minted an identity token with gcloud"
            );
            Ok(token)
        })
    }

    fn mint_access_token<'a>(
        &'a self,
        _http: &'a reqwest::Client,
    ) -> BoxFuture<'a, Result<Token, Error>> {
        Box::pin(async move {
            let mut args = vec!["auth".to_owned(), "print-access-token".to_owned()];
            args.extend(self.impersonation_args());
            let token = self.print(args, "minting an access token").await?;
            Ok(Token::from_access_token(token, ACCESS_TOKEN_TRUST))
        })
    }
}
