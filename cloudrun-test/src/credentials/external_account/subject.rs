//! Where an external_account file's subject token comes from: its `credential_source`
//! (a file, a URL, or an executable: [`super::executable`]), as text or as a field of
//! a JSON object.

use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;

use super::ExternalAccount;
use crate::credentials::token_endpoint::TokenEndpoint;
use crate::credentials::wire::{Fields, credential_request};
use crate::error::Error;

const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Where the subject token is read, and in which form. No `Debug`: headers may hold
/// a secret (a CI's request token).
pub(super) enum SubjectSource {
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

pub(super) enum Format {
    Text,
    /// A JSON object; the token is this field.
    Json(String),
}

impl ExternalAccount {
    /// The subject token from the credential source.
    pub(super) async fn subject_token(&self, http: &reqwest::Client) -> Result<String, Error> {
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
                    .with_source(error)
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
                let endpoint = TokenEndpoint {
                    what,
                    url: &shown,
                    timeout: REQUEST_TIMEOUT,
                    unreachable_fix: format!("check that {shown} is reachable from here"),
                    wrong_answer_fix: String::new(),
                };
                let body = endpoint
                    .text(request, |_| {
                        "check `credential_source.headers` (e.g. the CI's request token) and that \
                         the URL still serves tokens"
                            .to_owned()
                    })
                    .await?;
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
}

/// A URL for messages: its query may carry secrets, so it is left out.
pub(super) fn without_query(url: &str) -> String {
    match url.split_once('?') {
        Some((base, _)) => format!("{base}?..."),
        None => url.to_owned(),
    }
}

pub(super) fn parse_source(fields: &Fields<'_>) -> Result<SubjectSource, Error> {
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
