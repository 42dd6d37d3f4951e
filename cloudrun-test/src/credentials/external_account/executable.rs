//! `credential_source.executable`: a program, run only when
//! `GOOGLE_EXTERNAL_ACCOUNT_ALLOW_EXECUTABLES=1`, that prints the subject token in
//! Google's executable-sourced credential format (optionally cached in an output file).

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use super::ExternalAccount;
use crate::credentials::process::{RunError, run, stderr_tail};
use crate::credentials::wire::{redact, unix_now};
use crate::error::Error;
use crate::settings::env;

const ALLOW_EXECUTABLES: &str = "GOOGLE_EXTERNAL_ACCOUNT_ALLOW_EXECUTABLES";

impl ExternalAccount {
    pub(super) async fn run_executable(
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
        let failed =
            |problem: String, fix: &str| Error::token_endpoint(&what, program, problem, fix);
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
                crate::credentials::process::too_much_output("it", stream),
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
