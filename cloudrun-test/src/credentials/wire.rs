//! What the credential sources share: reading fields of credential files with errors
//! that name the file and the field, checking where a credential may be sent,
//! redacting anything that looks like a token, and time. (Calling a token endpoint
//! and reading its answers: [`super::token_endpoint`].)

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value};

use crate::error::Error;

/// Seconds since the Unix epoch.
pub(crate) fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
}

/// The fields of one JSON object in a credentials file (the top level or a nested
/// object such as `source_credentials`), read with errors naming file and field.
pub(crate) struct Fields<'a> {
    path: &'a Path,
    /// `""` at the top level, `"source_credentials."` inside it.
    prefix: String,
    object: &'a Map<String, Value>,
    fix: &'a str,
}

impl<'a> Fields<'a> {
    /// The top-level object of a file; fails if `value` is not an object.
    pub(crate) fn new(
        path: &'a Path,
        prefix: &str,
        value: &'a Value,
        fix: &'a str,
    ) -> Result<Fields<'a>, Error> {
        match value {
            Value::Object(object) => Ok(Fields {
                path,
                prefix: prefix.to_owned(),
                object,
                fix,
            }),
            _ => Err(file_error(
                path,
                match prefix.strip_suffix('.') {
                    Some(name) => format!("field `{name}` is not a JSON object"),
                    None => "has no string field `type` (it is not a JSON object)".to_owned(),
                },
                fix,
            )),
        }
    }

    /// The same object, with `fix` as the advice of its errors.
    pub(crate) fn with_fix(&self, fix: &'a str) -> Fields<'a> {
        Fields {
            path: self.path,
            prefix: self.prefix.clone(),
            object: self.object,
            fix,
        }
    }

    pub(crate) fn path(&self) -> &Path {
        self.path
    }

    /// The full name of a field, e.g. `credential_source.url`.
    pub(crate) fn name(&self, field: &str) -> String {
        format!("{}{field}", self.prefix)
    }

    /// An error about this file with this object's fix.
    pub(crate) fn error(&self, problem: impl Into<String>) -> Error {
        file_error(self.path, problem.into(), self.fix)
    }

    /// An error about `field` with its own fix.
    pub(crate) fn error_with_fix(&self, problem: impl Into<String>, fix: &str) -> Error {
        file_error(self.path, problem.into(), fix)
    }

    fn wrong_type(&self, field: &str, expected: &str) -> Error {
        self.error(format!("field `{}` is not {expected}", self.name(field)))
    }

    pub(crate) fn has(&self, field: &str) -> bool {
        !matches!(self.object.get(field), None | Some(Value::Null))
    }

    /// A string field that may be absent (or null); empty strings count as absent.
    pub(crate) fn optional_str(&self, field: &str) -> Result<Option<String>, Error> {
        match self.object.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(text)) if text.trim().is_empty() => Ok(None),
            Some(Value::String(text)) => Ok(Some(text.clone())),
            Some(_) => Err(self.wrong_type(field, "a string")),
        }
    }

    /// A string field that must be present and non-empty.
    pub(crate) fn required_str(&self, field: &str) -> Result<String, Error> {
        self.optional_str(field)?
            .ok_or_else(|| self.error(format!("has no `{}`", self.name(field))))
    }

    /// An http(s) URL field, if present.
    pub(crate) fn optional_url(&self, field: &str) -> Result<Option<reqwest::Url>, Error> {
        let Some(text) = self.optional_str(field)? else {
            return Ok(None);
        };
        match reqwest::Url::parse(&text) {
            Ok(url) if matches!(url.scheme(), "http" | "https") && url.host().is_some() => {
                Ok(Some(url))
            }
            _ => Err(self.error(format!(
                "field `{}` is not an http(s) URL: {:?}",
                self.name(field),
                truncate(&text, 100)
            ))),
        }
    }

    pub(crate) fn required_url(&self, field: &str) -> Result<reqwest::Url, Error> {
        self.optional_url(field)?
            .ok_or_else(|| self.error(format!("has no `{}`", self.name(field))))
    }

    /// A non-negative integer field, if present.
    pub(crate) fn optional_u64(&self, field: &str) -> Result<Option<u64>, Error> {
        match self.object.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(value) => value
                .as_u64()
                .map(Some)
                .ok_or_else(|| self.wrong_type(field, "a non-negative integer")),
        }
    }

    /// A list of strings, if present.
    pub(crate) fn optional_str_list(&self, field: &str) -> Result<Vec<String>, Error> {
        match self.object.get(field) {
            None | Some(Value::Null) => Ok(Vec::new()),
            Some(Value::Array(items)) => items
                .iter()
                .map(|item| match item {
                    Value::String(text) if !text.trim().is_empty() => Ok(text.clone()),
                    _ => Err(self.wrong_type(field, "a list of non-empty strings")),
                })
                .collect(),
            Some(_) => Err(self.wrong_type(field, "a list of strings")),
        }
    }

    /// A map of string to string, if present (e.g. `headers`).
    pub(crate) fn optional_str_map(&self, field: &str) -> Result<Vec<(String, String)>, Error> {
        match self.object.get(field) {
            None | Some(Value::Null) => Ok(Vec::new()),
            Some(Value::Object(map)) => map
                .iter()
                .map(|(key, value)| match value {
                    Value::String(text) => Ok((key.clone(), text.clone())),
                    _ => Err(self.error(format!(
                        "field `{}.{key}` is not a string",
                        self.name(field)
                    ))),
                })
                .collect(),
            Some(_) => Err(self.wrong_type(field, "a JSON object of strings")),
        }
    }

    /// A nested object, if present.
    pub(crate) fn optional_object(&self, field: &str) -> Result<Option<Fields<'a>>, Error> {
        match self.object.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(value @ Value::Object(_)) => Fields::new(
                self.path,
                &format!("{}{field}.", self.prefix),
                value,
                self.fix,
            )
            .map(Some),
            Some(_) => Err(self.wrong_type(field, "a JSON object")),
        }
    }

    pub(crate) fn required_object(&self, field: &str) -> Result<Fields<'a>, Error> {
        self.optional_object(field)?
            .ok_or_else(|| self.error(format!("has no `{}`", self.name(field))))
    }

    /// The raw value of a nested field, for parsers that take a whole object.
    pub(crate) fn raw(&self, field: &str) -> Option<&'a Value> {
        self.object.get(field)
    }
}

pub(crate) fn file_error(path: &Path, problem: String, fix: &str) -> Error {
    Error::credentials_file(path, problem, fix)
}

/// The crate's one redaction ([`crate::redact`]), for the credential sources.
pub(crate) use crate::redact::redact;

pub(crate) fn truncate(text: &str, max: usize) -> &str {
    match text.char_indices().nth(max) {
        Some((index, _)) => &text[..index],
        None => text,
    }
}

/// `2024-05-01T12:00:00Z` or `2024-05-01T12:00:00.123456Z` as seconds since the
/// epoch: the `expireTime` of IAM Credentials answers. Read by `humantime`, as every
/// RFC 3339 time in the workspace.
pub(crate) fn parse_rfc3339_utc(text: &str) -> Option<u64> {
    let time = humantime::parse_rfc3339(text).ok()?;
    Some(time.duration_since(UNIX_EPOCH).ok()?.as_secs())
}

/// How long until `exp` (seconds since the epoch), or zero if it has passed.
pub(crate) fn lifetime_until(exp: u64) -> Duration {
    Duration::from_secs(exp.saturating_sub(unix_now()))
}

/// Starts a `method` request to `url` that will carry a credential (a token, a signed
/// key assertion, a refresh token, a CI's request token): refused unless `url` may
/// receive one ([`crate::transport::check_destination`]; `what` names it there), so
/// nothing leaves for a plain-http host elsewhere.
pub(crate) fn credential_request(
    http: &reqwest::Client,
    method: reqwest::Method,
    url: &str,
    what: &str,
) -> Result<reqwest::RequestBuilder, Error> {
    Ok(http.request(method, credential_destination(url, what)?))
}

/// `url` parsed, if it may receive a credential (see [`credential_request`]): for
/// checking before a credential is even minted.
pub(crate) fn credential_destination(url: &str, what: &str) -> Result<reqwest::Url, Error> {
    let parsed = reqwest::Url::parse(url).map_err(|error| {
        Error::setting(
            format!("{what} is not a URL: {:?} ({error})", truncate(url, 100)),
            format!("give {what} as an https URL"),
        )
    })?;
    crate::transport::check_destination(&parsed, what)?;
    Ok(parsed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_expire_times() {
        assert_eq!(parse_rfc3339_utc("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(
            parse_rfc3339_utc("2021-05-08T00:22:21Z"),
            Some(1_620_433_341)
        );
        assert_eq!(
            parse_rfc3339_utc("2021-05-08T00:22:21.123456Z"),
            Some(1_620_433_341)
        );
        assert_eq!(parse_rfc3339_utc("2021-13-08T00:22:21Z"), None);
        assert_eq!(parse_rfc3339_utc("yesterday"), None);
    }
}
