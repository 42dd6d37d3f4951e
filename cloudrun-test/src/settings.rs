//! Settings that are not in the attribute: environment variables ([`Settings`], read
//! once per process), `cloudrun-test.toml` ([`ConfigFile`]) and gcloud's configuration
//! files ([`gcloud_property`]).
//!
//! Precedence, highest first: attribute arguments, environment variables,
//! `cloudrun-test.toml` (its `CLOUDRUN_TEST_PROFILE` profile over its top level), then
//! gcloud's `core/project` and `run/region` properties. Under `cloudrun-test emulate`
//! ([`Emulated`]) only the emulator's settings count.

mod config_file;
mod emulated;
mod gcloud_config;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::LazyLock;
use std::time::Duration;

use crate::error::Error;

pub(crate) use config_file::{CONFIG_FILE_NAME, ConfigFile, ServiceSection};
pub(crate) use emulated::{EMULATOR_VARIABLE, Emulated};
pub(crate) use gcloud_config::{gcloud_config_dir, gcloud_property};

/// A non-empty environment variable.
pub(crate) fn env(name: &str) -> Option<String> {
    std::env::var(name)
        .ok()
        .map(|value| value.trim().to_owned())
        .filter(|value| !value.is_empty())
}

/// A time limit written in environment variable `name`: a duration in the one syntax
/// of cloudrun-test ([`crate::parse_duration`]: `500ms`, `90s`, `10m`, `1h`, `1m30s`, or
/// a bare number of seconds). Anything else, zero included, is an error that names the
/// variable, its value and what to write.
pub(crate) fn parse_limit(name: &str, text: &str) -> Result<Duration, Error> {
    crate::duration::parse_duration(text).map_err(|why| {
        Error::setting(
            format!("{name} is {text:?}, which is no time limit ({why})"),
            format!(
                "write a duration such as `500ms`, `90s`, `10m`, `1h` or `1m30s` (a bare number \
                 means seconds), or unset {name} for the default"
            ),
        )
    })
}

/// The variable that gives `service`'s URL directly: `CLOUDRUN_TEST_URL_<SERVICE>`.
pub(crate) fn url_variable(service: &str) -> String {
    format!("CLOUDRUN_TEST_URL_{}", env_suffix(service))
}

/// `hello-world` -> `HELLO_WORLD`, as service names appear in variable names.
pub(crate) fn env_suffix(service: &str) -> String {
    service.to_ascii_uppercase().replace('-', "_")
}

/// What a test or a client takes from its surroundings rather than from its code: the
/// `CLOUDRUN_TEST_*` variables of the README's settings table, read and checked once.
///
/// [`Settings::from_env`] reads them (once per process); [`Settings::default`] is a
/// value with none set, which the setters fill, so a test can pass its settings to
/// [`ClientBuilder::settings`](crate::ClientBuilder::settings) instead of changing the
/// environment. Builder arguments and the attribute's arguments win over these, which
/// win over `cloudrun-test.toml`, which wins over gcloud's properties.
///
/// Not here, because they belong to the whole process rather than to one client: the
/// credential chain's variables ([`Credentials::from_env`](crate::Credentials::from_env)),
/// proxies, the token cache's folder and `cloudrun-test emulate`'s hermetic promise.
#[derive(Debug, Clone, Default)]
pub struct Settings {
    /// `CLOUDRUN_TEST_PROJECT`.
    pub(crate) project: Option<String>,
    /// `GOOGLE_CLOUD_PROJECT`: below `project`; not used under `cloudrun-test emulate`.
    pub(crate) google_cloud_project: Option<String>,
    /// `CLOUDRUN_TEST_REGION`.
    pub(crate) region: Option<String>,
    /// `CLOUDRUN_TEST_TAG`.
    pub(crate) tag: Option<String>,
    /// `CLOUDRUN_TEST_RUN_ENDPOINT`.
    pub(crate) run_endpoint: Option<String>,
    /// `CLOUDRUN_TEST_URL_<SERVICE>`, by variable name.
    pub(crate) service_urls: BTreeMap<String, String>,
    /// `CLOUDRUN_TEST_PROFILE`: the `[profiles.NAME]` of `cloudrun-test.toml` to apply.
    pub(crate) profile: Option<String>,
    /// `CLOUDRUN_TEST_TIMEOUT`: the limit of a test without `timeout = "..."`.
    pub(crate) test_timeout: Option<Duration>,
    /// `CLOUDRUN_TEST_TOKEN_HEADER`.
    pub(crate) token_header: Option<TokenHeader>,
    /// `CARGO_MANIFEST_DIR`: where `cloudrun-test.toml` is looked for by default.
    pub(crate) manifest_dir: Option<PathBuf>,
    /// `CLOUDRUN_TEST_TOKEN_TIMEOUT`: the limit of each call to a token endpoint. Those
    /// calls serve every client of the process through its token cache, so only the
    /// environment's value counts ([`token_timeout`]); it is checked with the rest.
    token_timeout: Option<Duration>,
}

impl Settings {
    /// The settings of this process's environment, read and checked on the first call;
    /// later calls return the same value (changes to the environment after that are
    /// not seen). A value that is invalid (say `CLOUDRUN_TEST_TIMEOUT=soon`) is an
    /// error naming the variable, its value and the fix, on every call.
    pub fn from_env() -> Result<Settings, Error> {
        FROM_ENV.clone()
    }

    /// The settings these variables give, as if they were the whole environment: for
    /// tests, and for tools that read settings from elsewhere. Empty values count as
    /// unset; invalid values are errors as in [`Settings::from_env`].
    pub fn from_vars<I, K, V>(vars: I) -> Result<Settings, Error>
    where
        I: IntoIterator<Item = (K, V)>,
        K: AsRef<str>,
        V: AsRef<str>,
    {
        let vars: BTreeMap<String, String> = vars
            .into_iter()
            .map(|(name, value)| (name.as_ref().to_owned(), value.as_ref().trim().to_owned()))
            .filter(|(_, value)| !value.is_empty())
            .collect();
        let get = |name: &str| vars.get(name).cloned();
        let test_timeout = get(TEST_TIMEOUT_VARIABLE)
            .map(|text| parse_limit(TEST_TIMEOUT_VARIABLE, &text))
            .transpose()?;
        let token_timeout = get(TOKEN_TIMEOUT_VARIABLE)
            .map(|text| parse_limit(TOKEN_TIMEOUT_VARIABLE, &text))
            .transpose()?;
        let token_header = get(TOKEN_HEADER_VARIABLE)
            .map(|text| TokenHeader::parse_setting(&text))
            .transpose()?;
        Ok(Settings {
            project: get("CLOUDRUN_TEST_PROJECT"),
            google_cloud_project: get("GOOGLE_CLOUD_PROJECT"),
            region: get("CLOUDRUN_TEST_REGION"),
            tag: get("CLOUDRUN_TEST_TAG"),
            run_endpoint: get(RUN_ENDPOINT_VARIABLE),
            service_urls: vars
                .iter()
                .filter(|(name, _)| name.starts_with(URL_VARIABLE_PREFIX))
                .map(|(name, value)| (name.clone(), value.clone()))
                .collect(),
            profile: get(PROFILE_VARIABLE),
            test_timeout,
            token_header,
            manifest_dir: get("CARGO_MANIFEST_DIR").map(PathBuf::from),
            token_timeout,
        })
    }

    /// Where services are looked up (`CLOUDRUN_TEST_PROJECT`).
    pub fn project(mut self, project: impl Into<String>) -> Self {
        self.project = Some(project.into());
        self
    }

    /// Where services are looked up (`CLOUDRUN_TEST_REGION`).
    pub fn region(mut self, region: impl Into<String>) -> Self {
        self.region = Some(region.into());
        self
    }

    /// Test the revision behind this traffic tag (`CLOUDRUN_TEST_TAG`).
    pub fn tag(mut self, tag: impl Into<String>) -> Self {
        self.tag = Some(tag.into());
        self
    }

    /// Base URL of the Cloud Run Admin API (`CLOUDRUN_TEST_RUN_ENDPOINT`).
    pub fn run_endpoint(mut self, url: impl Into<String>) -> Self {
        self.run_endpoint = Some(url.into());
        self
    }

    /// The URL of service `service`, which skips its Admin API lookup
    /// (`CLOUDRUN_TEST_URL_<SERVICE>`).
    pub fn service_url(mut self, service: &str, url: impl Into<String>) -> Self {
        self.service_urls.insert(url_variable(service), url.into());
        self
    }

    /// The `[profiles.NAME]` section of `cloudrun-test.toml` to apply
    /// (`CLOUDRUN_TEST_PROFILE`).
    pub fn profile(mut self, name: impl Into<String>) -> Self {
        self.profile = Some(name.into());
        self
    }

    /// The limit of a `#[cloudrun_test]` test that sets no `timeout = "..."`
    /// (`CLOUDRUN_TEST_TIMEOUT`; default 10 minutes). A client built by hand has its own
    /// limit per request instead ([`ClientBuilder::timeout`](crate::ClientBuilder::timeout)).
    pub fn test_timeout(mut self, limit: Duration) -> Self {
        self.test_timeout = Some(limit);
        self
    }

    /// The header that carries the token (`CLOUDRUN_TEST_TOKEN_HEADER`).
    pub fn token_header(mut self, header: TokenHeader) -> Self {
        self.token_header = Some(header);
        self
    }

    /// The project: `CLOUDRUN_TEST_PROJECT`, else (outside `cloudrun-test emulate`)
    /// `GOOGLE_CLOUD_PROJECT`.
    pub(crate) fn any_project(&self) -> Option<String> {
        self.project
            .clone()
            .or_else(|| self.google_cloud_project.clone())
    }

    /// `CLOUDRUN_TEST_URL_<SERVICE>` for `service`, with the variable's name.
    pub(crate) fn service_url_of(&self, service: &str) -> Option<(String, String)> {
        let variable = url_variable(service);
        let url = self.service_urls.get(&variable)?.clone();
        Some((variable, url))
    }
}

const URL_VARIABLE_PREFIX: &str = "CLOUDRUN_TEST_URL_";
pub(crate) const RUN_ENDPOINT_VARIABLE: &str = "CLOUDRUN_TEST_RUN_ENDPOINT";
const PROFILE_VARIABLE: &str = "CLOUDRUN_TEST_PROFILE";
const TEST_TIMEOUT_VARIABLE: &str = "CLOUDRUN_TEST_TIMEOUT";
const TOKEN_HEADER_VARIABLE: &str = "CLOUDRUN_TEST_TOKEN_HEADER";
const TOKEN_TIMEOUT_VARIABLE: &str = "CLOUDRUN_TEST_TOKEN_TIMEOUT";

/// Which header carries the identity token to the service.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum TokenHeader {
    /// `Authorization: Bearer <token>` (the default).
    #[default]
    Authorization,
    /// `X-Serverless-Authorization: Bearer <token>`: Cloud Run checks it first and
    /// leaves `Authorization` to the application (e.g. for its own user tokens).
    XServerlessAuthorization,
}

impl TokenHeader {
    /// `CLOUDRUN_TEST_TOKEN_HEADER`'s value: `authorization` or `x-serverless-authorization`.
    pub(crate) fn parse_setting(value: &str) -> Result<TokenHeader, Error> {
        match value.trim().to_ascii_lowercase().as_str() {
            "authorization" => Ok(TokenHeader::Authorization),
            "x-serverless-authorization" => Ok(TokenHeader::XServerlessAuthorization),
            other => Err(Error::setting(
                format!("{TOKEN_HEADER_VARIABLE} is {other:?}, which is no token header"),
                "set it to `authorization` (the default) or `x-serverless-authorization`",
            )),
        }
    }
}

/// The environment's settings, read on first use.
static FROM_ENV: LazyLock<Result<Settings, Error>> =
    LazyLock::new(|| {
        // Names or values that are not UTF-8 count as unset, as `std::env::var` has it.
        Settings::from_vars(std::env::vars_os().filter_map(|(name, value)| {
            Some((name.into_string().ok()?, value.into_string().ok()?))
        }))
    });

/// `CLOUDRUN_TEST_TOKEN_TIMEOUT` of the environment's settings ([`Settings::from_env`]).
pub(crate) fn token_timeout() -> Result<Option<Duration>, Error> {
    FROM_ENV
        .as_ref()
        .map(|settings| settings.token_timeout)
        .map_err(Clone::clone)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_variables_are_read_into_one_value() {
        let settings = Settings::from_vars([
            ("CLOUDRUN_TEST_PROJECT", " my-project "),
            ("GOOGLE_CLOUD_PROJECT", "other"),
            ("CLOUDRUN_TEST_REGION", "europe-west1"),
            ("CLOUDRUN_TEST_TAG", ""),
            ("CLOUDRUN_TEST_URL_HELLO_WORLD", "http://127.0.0.1:8080"),
            ("CLOUDRUN_TEST_PROFILE", "staging"),
            ("CLOUDRUN_TEST_TIMEOUT", "1m30s"),
            ("CLOUDRUN_TEST_TOKEN_HEADER", "X-Serverless-Authorization"),
            ("CLOUDRUN_TEST_TOKEN_TIMEOUT", "2.5s"),
            ("UNRELATED", "x"),
        ])
        .unwrap();
        assert_eq!(settings.any_project().as_deref(), Some("my-project"));
        assert_eq!(settings.region.as_deref(), Some("europe-west1"));
        assert_eq!(settings.tag, None, "an empty value is unset");
        assert_eq!(
            settings.service_url_of("hello-world"),
            Some((
                "CLOUDRUN_TEST_URL_HELLO_WORLD".to_owned(),
                "http://127.0.0.1:8080".to_owned()
            ))
        );
        assert_eq!(settings.service_url_of("hello"), None);
        assert_eq!(settings.profile.as_deref(), Some("staging"));
        assert_eq!(settings.test_timeout, Some(Duration::from_secs(90)));
        assert_eq!(
            settings.token_header,
            Some(TokenHeader::XServerlessAuthorization)
        );
        assert_eq!(settings.token_timeout, Some(Duration::from_millis(2500)));

        let fallback = Settings::from_vars([("GOOGLE_CLOUD_PROJECT", "other")]).unwrap();
        assert_eq!(fallback.any_project().as_deref(), Some("other"));
        assert_eq!(fallback.project, None);
    }

    #[test]
    fn the_setters_give_what_the_variables_would() {
        let set = Settings::default()
            .project("p")
            .region("r")
            .tag("canary")
            .run_endpoint("http://127.0.0.1:1")
            .service_url("hello-world", "http://127.0.0.1:2")
            .profile("staging")
            .test_timeout(Duration::from_secs(5))
            .token_header(TokenHeader::XServerlessAuthorization);
        let read = Settings::from_vars([
            ("CLOUDRUN_TEST_PROJECT", "p"),
            ("CLOUDRUN_TEST_REGION", "r"),
            ("CLOUDRUN_TEST_TAG", "canary"),
            ("CLOUDRUN_TEST_RUN_ENDPOINT", "http://127.0.0.1:1"),
            ("CLOUDRUN_TEST_URL_HELLO_WORLD", "http://127.0.0.1:2"),
            ("CLOUDRUN_TEST_PROFILE", "staging"),
            ("CLOUDRUN_TEST_TIMEOUT", "5s"),
            ("CLOUDRUN_TEST_TOKEN_HEADER", "x-serverless-authorization"),
        ])
        .unwrap();
        assert_eq!(format!("{set:?}"), format!("{read:?}"));
    }

    #[test]
    fn an_invalid_value_is_an_error_naming_variable_value_and_fix() {
        for (name, value, expected) in [
            ("CLOUDRUN_TEST_TIMEOUT", "soon", "which is no time limit"),
            ("CLOUDRUN_TEST_TIMEOUT", "0", "zero is no time limit"),
            (
                "CLOUDRUN_TEST_TIMEOUT",
                "99999999999999999999h",
                "too large",
            ),
            (
                "CLOUDRUN_TEST_TOKEN_HEADER",
                "bearer",
                "which is no token header",
            ),
            (
                "CLOUDRUN_TEST_TOKEN_TIMEOUT",
                "a while",
                "which is no time limit",
            ),
        ] {
            let message = Settings::from_vars([(name, value)])
                .unwrap_err()
                .to_string();
            assert!(
                message.starts_with(&format!("{name} is {value:?}")),
                "{message}"
            );
            assert!(message.contains(expected), "{message}");
            assert!(message.contains("fix: "), "{message}");
        }
    }
}
