//! Settings that are not in the attribute: environment variables, `cloudrun-test.toml`
//! and gcloud's configuration files.
//!
//! Precedence, highest first: attribute arguments, environment variables,
//! `cloudrun-test.toml` (its `CLOUDRUN_TEST_PROFILE` profile over its top level), then
//! gcloud's `core/project` and `run/region` properties. Under `cloudrun-test emulate`
//! ([`Emulated`]) only the emulator's settings count.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use serde::Deserialize;

use crate::error::Error;

pub(crate) const CONFIG_FILE_NAME: &str = "cloudrun-test.toml";

/// A non-empty environment variable.
pub(crate) fn env(name: &str) -> Option<String> {
    std::env::var(name)
        .ok()
        .map(|value| value.trim().to_owned())
        .filter(|value| !value.is_empty())
}

/// `250ms`, `2s`, `1m`, `1h`; a bare number is seconds.
fn parse_duration(text: &str) -> Option<Duration> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 = number.parse().ok()?;
    match unit.trim() {
        "ms" => Some(Duration::from_millis(number)),
        "" | "s" => Some(Duration::from_secs(number)),
        "m" => Some(Duration::from_secs(number.checked_mul(60)?)),
        "h" => Some(Duration::from_secs(number.checked_mul(3600)?)),
        _ => None,
    }
}

/// A time limit written in environment variable `name`: `500ms`, `90s`, `10m`, `1h`, or
/// a bare number of seconds. Anything else, zero included, is an error that names the
/// variable and what to write.
pub(crate) fn parse_limit(name: &str, text: &str) -> Result<Duration, Error> {
    parse_duration(text)
        .filter(|limit| !limit.is_zero())
        .ok_or_else(|| Error::Setting {
            problem: format!("{name} is {text:?}, which is no time limit"),
            fix: format!(
                "write a whole number with a unit, such as `500ms`, `90s`, `10m` or `1h` (a bare \
                 number means seconds), or unset {name} for the default"
            ),
        })
}

/// One level of `cloudrun-test.toml`: the top level or a profile.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Section {
    pub project: Option<String>,
    pub region: Option<String>,
    pub run_endpoint: Option<String>,
    #[serde(default)]
    pub services: BTreeMap<String, ServiceSection>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ServiceSection {
    pub url: Option<String>,
    pub audience: Option<String>,
    pub tag: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileContents {
    project: Option<String>,
    region: Option<String>,
    run_endpoint: Option<String>,
    #[serde(default)]
    services: BTreeMap<String, ServiceSection>,
    #[serde(default)]
    profiles: BTreeMap<String, Section>,
}

/// `cloudrun-test.toml` with the active profile applied.
#[derive(Debug, Clone, Default)]
pub(crate) struct ConfigFile {
    pub path: Option<PathBuf>,
    /// The active profile's values, then the top level's, field by field.
    layers: Vec<Section>,
}

impl ConfigFile {
    /// The file found by walking up from `start`, parsed once per process and folder.
    pub(crate) fn find(start: &Path) -> Result<Arc<ConfigFile>, Error> {
        type Found = HashMap<PathBuf, Result<Arc<ConfigFile>, Error>>;
        static FOUND: OnceLock<Mutex<Found>> = OnceLock::new();
        let mut found = FOUND
            .get_or_init(Default::default)
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        found
            .entry(start.to_owned())
            .or_insert_with(|| {
                let profile = env("CLOUDRUN_TEST_PROFILE");
                match start.ancestors().map(|dir| dir.join(CONFIG_FILE_NAME)).find(|path| path.is_file()) {
                    Some(path) => ConfigFile::load(&path, profile.as_deref()).map(Arc::new),
                    None => match profile {
                        Some(profile) => Err(Error::Setting {
                            problem: format!(
                                "CLOUDRUN_TEST_PROFILE is `{profile}`, but there is no {CONFIG_FILE_NAME} in {} or a folder above it",
                                start.display()
                            ),
                            fix: format!("create {CONFIG_FILE_NAME} with a [profiles.{profile}] section, or unset CLOUDRUN_TEST_PROFILE"),
                        }),
                        None => Ok(Arc::new(ConfigFile::default())),
                    },
                }
            })
            .clone()
    }

    pub(crate) fn load(path: &Path, profile: Option<&str>) -> Result<ConfigFile, Error> {
        let text =
            crate::bounded::read_file(path, crate::bounded::FILE_LIMIT).map_err(|error| {
                Error::Setting {
                    problem: format!("{} cannot be read ({error})", path.display()),
                    fix: "make the file readable, or remove it".into(),
                }
            })?;
        ConfigFile::parse(path, &text, profile)
    }

    pub(crate) fn parse(
        path: &Path,
        text: &str,
        profile: Option<&str>,
    ) -> Result<ConfigFile, Error> {
        let contents: FileContents = toml::from_str(text).map_err(|error| {
            let location = error
                .span()
                .map(|span| {
                    let (line, column) = line_and_column(text, span.start);
                    format!(":{line}:{column}")
                })
                .unwrap_or_default();
            Error::Setting {
                problem: format!("{}{location}: {}", path.display(), error.message()),
                fix: format!(
                    "fix the file; its keys are project, region, run_endpoint, [services.NAME] with url, audience and tag, \
                     and [profiles.NAME] with the same keys (see the {CONFIG_FILE_NAME} section of the README)"
                ),
            }
        })?;
        let mut layers = Vec::new();
        if let Some(profile) = profile {
            let Some(section) = contents.profiles.get(profile) else {
                let known: Vec<&str> = contents.profiles.keys().map(String::as_str).collect();
                return Err(Error::Setting {
                    problem: format!(
                        "CLOUDRUN_TEST_PROFILE is `{profile}`, but {} has no [profiles.{profile}]; its profiles: {}",
                        path.display(),
                        if known.is_empty() {
                            "none".into()
                        } else {
                            known.join(", ")
                        }
                    ),
                    fix: format!(
                        "add [profiles.{profile}] to the file, or pick one of its profiles"
                    ),
                });
            };
            layers.push(section.clone());
        }
        layers.push(Section {
            project: contents.project,
            region: contents.region,
            run_endpoint: contents.run_endpoint,
            services: contents.services,
        });
        Ok(ConfigFile {
            path: Some(path.to_owned()),
            layers,
        })
    }

    /// The first layer's value of a top-level field.
    pub(crate) fn value(&self, field: impl Fn(&Section) -> Option<&String>) -> Option<String> {
        self.layers.iter().find_map(field).cloned()
    }

    /// The first layer's value of a field of `[services.NAME]`.
    pub(crate) fn service_value(
        &self,
        service: &str,
        field: impl Fn(&ServiceSection) -> Option<&String>,
    ) -> Option<String> {
        self.layers
            .iter()
            .filter_map(|layer| layer.services.get(service))
            .find_map(field)
            .cloned()
    }
}

fn line_and_column(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before
        .rsplit('\n')
        .next()
        .map_or(0, |line| line.chars().count())
        + 1;
    (line, column)
}

/// A property of gcloud's active configuration, read from its files without starting
/// gcloud: `$CLOUDSDK_CONFIG/configurations/config_NAME`, an INI file.
pub(crate) fn gcloud_property(section: &str, name: &str) -> Option<String> {
    // gcloud's own environment overrides win, as in gcloud.
    let variable = format!(
        "CLOUDSDK_{}_{}",
        section.to_ascii_uppercase(),
        name.to_ascii_uppercase()
    );
    if let Some(value) = env(&variable) {
        return Some(value);
    }
    let dir = gcloud_config_dir()?;
    let active = env("CLOUDSDK_ACTIVE_CONFIG_NAME")
        .or_else(|| {
            crate::bounded::read_file(&dir.join("active_config"), crate::bounded::FILE_LIMIT)
                .ok()
                .map(|name| name.trim().to_owned())
        })
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "default".into());
    let text = crate::bounded::read_file(
        &dir.join("configurations").join(format!("config_{active}")),
        crate::bounded::FILE_LIMIT,
    )
    .ok()?;
    ini_value(&text, section, name)
}

/// gcloud's configuration folder, as gcloud finds it.
pub(crate) fn gcloud_config_dir() -> Option<PathBuf> {
    if let Some(dir) = env("CLOUDSDK_CONFIG") {
        return Some(PathBuf::from(dir));
    }
    env("HOME").map(|home| Path::new(&home).join(".config/gcloud"))
}

/// Set by `cloudrun-test emulate` (and `Emulator::hermetic_environment`): the emulator's
/// base URL. While it is set the process lives in the emulator's world only.
pub(crate) const EMULATOR_VARIABLE: &str = "CLOUDRUN_TEST_EMULATOR";
/// The emulated services' names, comma-separated, beside [`EMULATOR_VARIABLE`].
pub(crate) const EMULATED_SERVICES_VARIABLE: &str = "CLOUDRUN_TEST_EMULATED_SERVICES";

/// The hermetic promise of `cloudrun-test emulate`: services resolve only to the
/// emulator (its Admin API, or a loopback `CLOUDRUN_TEST_URL_<SERVICE>`), never through
/// `cloudrun-test.toml` or gcloud's settings, and a service it does not emulate is an
/// error rather than a request to somewhere else.
#[derive(Debug)]
pub(crate) struct Emulated {
    /// The emulator's Google endpoints; its Admin API answers the lookups.
    pub endpoint: String,
    pub services: Vec<String>,
}

impl Emulated {
    /// The promise, read once per process; `None` outside `cloudrun-test emulate`.
    pub(crate) fn get() -> Result<Option<&'static Emulated>, Error> {
        static EMULATED: OnceLock<Result<Option<Emulated>, Error>> = OnceLock::new();
        match EMULATED.get_or_init(Emulated::from_env) {
            Ok(emulated) => Ok(emulated.as_ref()),
            Err(error) => Err(error.clone()),
        }
    }

    fn from_env() -> Result<Option<Emulated>, Error> {
        let Some(endpoint) = env(EMULATOR_VARIABLE) else {
            return Ok(None);
        };
        // Only an emulator on this machine can make the promise.
        let loopback = reqwest::Url::parse(&endpoint).is_ok_and(|url| {
            matches!(url.scheme(), "http" | "https") && crate::transport::is_loopback(&url)
        });
        if !loopback {
            return Err(Error::Setting {
                problem: format!(
                    "{EMULATOR_VARIABLE} is {endpoint:?}, which is not an emulator on this machine \
                     (an http URL of a loopback address)"
                ),
                fix: format!(
                    "{EMULATOR_VARIABLE} is set by `cloudrun-test emulate` for its COMMAND; unset it \
                     to test real services"
                ),
            });
        }
        let services = env(EMULATED_SERVICES_VARIABLE)
            .unwrap_or_default()
            .split(',')
            .map(str::trim)
            .filter(|name| !name.is_empty())
            .map(str::to_owned)
            .collect();
        Ok(Some(Emulated {
            endpoint: endpoint.trim_end_matches('/').to_owned(),
            services,
        }))
    }

    /// The emulated services, for messages: `hello, greeter` or `none`.
    pub(crate) fn list(&self) -> String {
        if self.services.is_empty() {
            "none".into()
        } else {
            self.services.join(", ")
        }
    }
}

fn ini_value(text: &str, section: &str, name: &str) -> Option<String> {
    let mut current = String::new();
    for line in text.lines().map(str::trim) {
        if let Some(header) = line
            .strip_prefix('[')
            .and_then(|rest| rest.strip_suffix(']'))
        {
            current = header.trim().to_owned();
        } else if current == section
            && let Some((key, value)) = line.split_once('=')
            && key.trim() == name
        {
            let value = value.trim();
            return (!value.is_empty()).then(|| value.to_owned());
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(parse_duration(" 2s "), Some(Duration::from_secs(2)));
        assert_eq!(parse_duration("3"), Some(Duration::from_secs(3)));
        assert_eq!(parse_duration("1m"), Some(Duration::from_secs(60)));
        assert_eq!(parse_duration("soon"), None);
        assert_eq!(parse_duration("5 days"), None);
    }

    const FILE: &str = r#"
project = "top-project"
region = "europe-west1"

[services.hello]
url = "https://hello-123.europe-west1.run.app"
tag = "canary"

[profiles.staging]
project = "staging-project"

[profiles.staging.services.hello]
url = "https://hello-456.europe-west1.run.app"
"#;

    #[test]
    fn a_profile_overrides_the_top_level_field_by_field() {
        let path = Path::new("/x/cloudrun-test.toml");
        let file = ConfigFile::parse(path, FILE, Some("staging")).unwrap();
        assert_eq!(
            file.value(|s| s.project.as_ref()).as_deref(),
            Some("staging-project")
        );
        assert_eq!(
            file.value(|s| s.region.as_ref()).as_deref(),
            Some("europe-west1")
        );
        assert_eq!(
            file.service_value("hello", |s| s.url.as_ref()).as_deref(),
            Some("https://hello-456.europe-west1.run.app")
        );
        assert_eq!(
            file.service_value("hello", |s| s.tag.as_ref()).as_deref(),
            Some("canary")
        );

        let file = ConfigFile::parse(path, FILE, None).unwrap();
        assert_eq!(
            file.value(|s| s.project.as_ref()).as_deref(),
            Some("top-project")
        );
    }

    #[test]
    fn an_unknown_profile_lists_the_known_ones() {
        let message = ConfigFile::parse(Path::new("/x/c.toml"), FILE, Some("prod"))
            .unwrap_err()
            .to_string();
        assert!(
            message.contains("no [profiles.prod]; its profiles: staging"),
            "{message}"
        );
    }

    #[test]
    fn unknown_keys_and_bad_syntax_name_file_line_and_column() {
        let message = ConfigFile::parse(
            Path::new("/x/c.toml"),
            "project = \"p\"\nregoin = \"r\"\n",
            None,
        )
        .unwrap_err()
        .to_string();
        assert!(message.contains("/x/c.toml:2:1"), "{message}");
        assert!(message.contains("regoin"), "{message}");

        let message =
            ConfigFile::parse(Path::new("/x/c.toml"), "[services.hello]\nurl = 3\n", None)
                .unwrap_err()
                .to_string();
        assert!(message.contains("/x/c.toml:2:7"), "{message}");

        let message = ConfigFile::parse(Path::new("/x/c.toml"), "project = \"unterminated\n", None)
            .unwrap_err()
            .to_string();
        assert!(message.contains("/x/c.toml:1:"), "{message}");
    }

    #[test]
    fn gcloud_ini_values_are_read_per_section() {
        let text = "[core]\naccount = a@b.c\nproject = my-proj\n\n[run]\nregion = us-central1\n";
        assert_eq!(
            ini_value(text, "core", "project").as_deref(),
            Some("my-proj")
        );
        assert_eq!(
            ini_value(text, "run", "region").as_deref(),
            Some("us-central1")
        );
        assert_eq!(ini_value(text, "run", "project"), None);
    }
}

/// Fuzzing the `cloudrun-test.toml` parser: arbitrary and near-valid files never panic,
/// and every error names the file. Run longer by hand with `PROPTEST_CASES=100000`.
#[cfg(test)]
mod fuzz {
    use proptest::prelude::*;
    use proptest::test_runner::{Config, TestRunner};

    use super::*;

    fn check(text: &str) -> u64 {
        for profile in [None, Some("staging")] {
            if let Err(error) =
                ConfigFile::parse(Path::new("/fuzz/cloudrun-test.toml"), text, profile)
            {
                let message = error.to_string();
                assert!(message.contains("/fuzz/cloudrun-test.toml"), "{message}");
                assert!(message.contains("fix:"), "{message}");
            }
        }
        1
    }

    fn fuzz<S: Strategy>(name: &str, strategy: S, property: impl Fn(S::Value) -> u64) {
        let clean = std::sync::atomic::AtomicU64::new(0);
        TestRunner::new(Config::default())
            .run(&strategy, |input| {
                clean.fetch_add(property(input), std::sync::atomic::Ordering::Relaxed);
                Ok(())
            })
            .unwrap();
        eprintln!(
            "config fuzzing, {name}: {} inputs ran clean",
            clean.into_inner()
        );
    }

    #[test]
    fn arbitrary_text_never_panics() {
        fuzz("arbitrary text", ".{0,300}", |text: String| check(&text));
    }

    /// Lines drawn from the file's own grammar, with wrong types and stray tokens mixed in.
    #[test]
    fn near_valid_files_never_panic() {
        let line = prop::sample::select(vec![
            "project = \"p\"",
            "region = \"r\"",
            "run_endpoint = \"http://127.0.0.1:1\"",
            "[services.hello]",
            "[services.\"a b\"]",
            "url = \"https://x.run.app\"",
            "audience = \"aud\"",
            "tag = \"canary\"",
            "[profiles.staging]",
            "[profiles.staging.services.hello]",
            "[profiles.staging.profiles.x]",
            "project = 3",
            "url = [1, 2]",
            "services = \"x\"",
            "[[services]]",
            "tag = { a = 1 }",
            "unknown = true",
            "project = \"unterminated",
            "=",
            "[",
            "\u{feff}",
            "# comment",
        ]);
        fuzz(
            "near-valid files",
            prop::collection::vec(line, 0..12),
            |lines: Vec<&str>| check(&lines.join("\n")),
        );
    }
}
