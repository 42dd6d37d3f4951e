//! `cloudrun-test.toml`: found by walking up from the test crate's folder, parsed once
//! per process and folder, with the active `CLOUDRUN_TEST_PROFILE` applied.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use serde::Deserialize;

use crate::error::Error;

pub(crate) const CONFIG_FILE_NAME: &str = "cloudrun-test.toml";

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
    /// The file found by walking up from `start`, with `profile` (`CLOUDRUN_TEST_PROFILE`)
    /// applied; parsed once per process, folder and profile.
    pub(crate) fn find(start: &Path, profile: Option<&str>) -> Result<Arc<ConfigFile>, Error> {
        type Found = HashMap<(PathBuf, Option<String>), Result<Arc<ConfigFile>, Error>>;
        static FOUND: OnceLock<Mutex<Found>> = OnceLock::new();
        let mut found = FOUND
            .get_or_init(Default::default)
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        found
            .entry((start.to_owned(), profile.map(str::to_owned)))
            .or_insert_with(|| {
                match start.ancestors().map(|dir| dir.join(CONFIG_FILE_NAME)).find(|path| path.is_file()) {
                    Some(path) => ConfigFile::load(&path, profile).map(Arc::new),
                    None => match profile {
                        Some(profile) => Err(Error::setting(format!(
                                "CLOUDRUN_TEST_PROFILE is `{profile}`, but there is no {CONFIG_FILE_NAME} in {} or a folder above it",
                                start.display()
                            ), format!("create {CONFIG_FILE_NAME} with a [profiles.{profile}] section, or unset CLOUDRUN_TEST_PROFILE"))),
                        None => Ok(Arc::new(ConfigFile::default())),
                    },
                }
            })
            .clone()
    }

    pub(crate) fn load(path: &Path, profile: Option<&str>) -> Result<ConfigFile, Error> {
        let text =
            crate::bounded::read_file(path, crate::bounded::FILE_LIMIT).map_err(|error| {
                Error::setting(
                    format!("{} cannot be read ({error})", path.display()),
                    "make the file readable, or remove it",
                )
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
            Error::setting(format!("{}{location}: {}", path.display(), error.message()), format!(
                    "fix the file; its keys are project, region, run_endpoint, [services.NAME] with url, audience and tag, \
                     and [profiles.NAME] with the same keys (see the {CONFIG_FILE_NAME} section of the README)"
                ))
        })?;
        let mut layers = Vec::new();
        if let Some(profile) = profile {
            let Some(section) = contents.profiles.get(profile) else {
                let known: Vec<&str> = contents.profiles.keys().map(String::as_str).collect();
                return Err(Error::setting(
                    format!(
                        "CLOUDRUN_TEST_PROFILE is `{profile}`, but {} has no [profiles.{profile}]; its profiles: {}",
                        path.display(),
                        if known.is_empty() {
                            "none".into()
                        } else {
                            known.join(", ")
                        }
                    ),
                    format!("add [profiles.{profile}] to the file, or pick one of its profiles"),
                ));
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

#[cfg(test)]
mod tests {
    use super::*;

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
}

/// Fuzzing the `cloudrun-test.toml` parser: arbitrary and near-valid files never panic,
/// and every error names the file. Run longer by hand with `PROPTEST_CASES=100000`.
#[cfg(test)]
mod fuzz {
    use proptest::prelude::*;
    use proptest::test_runner::{Config, TestRunner};

    use super::*;

    /// Parses `text` without and with a profile, checks each error (panicking, which
    /// fails the property, on a defect) and returns how many parses were accepted.
    fn check(text: &str) -> u64 {
        let mut accepted = 0;
        for profile in [None, Some("staging")] {
            match ConfigFile::parse(Path::new("/fuzz/cloudrun-test.toml"), text, profile) {
                Ok(_) => accepted += 1,
                Err(error) => {
                    let message = error.to_string();
                    assert!(message.contains("/fuzz/cloudrun-test.toml"), "{message}");
                    assert!(message.contains("fix:"), "{message}");
                }
            }
        }
        accepted
    }

    /// Runs `property` (the number of parses it saw accepted, of two per input) over
    /// `strategy`; returns how many parses were (accepted, refused).
    fn fuzz<S: Strategy>(
        name: &str,
        strategy: S,
        property: impl Fn(S::Value) -> u64,
    ) -> (u64, u64) {
        let (accepted, parses) = (std::cell::Cell::new(0), std::cell::Cell::new(0));
        TestRunner::new(Config::default())
            .run(&strategy, |input| {
                accepted.set(accepted.get() + property(input));
                parses.set(parses.get() + 2);
                Ok(())
            })
            .unwrap();
        let (accepted, refused) = (accepted.get(), parses.get() - accepted.get());
        eprintln!("config fuzzing, {name}: {accepted} parses accepted, {refused} refused");
        (accepted, refused)
    }

    #[test]
    fn arbitrary_text_never_panics() {
        let (_, refused) = fuzz("arbitrary text", ".{0,300}", |text: String| check(&text));
        // Some random text is valid TOML (empty, a comment): only refusals are certain.
        assert!(refused > 0, "no arbitrary text was refused");
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
        let (accepted, refused) = fuzz(
            "near-valid files",
            prop::collection::vec(line, 0..12),
            |lines: Vec<&str>| check(&lines.join("\n")),
        );
        assert!(
            accepted > 0 && refused > 0,
            "{accepted} accepted, {refused} refused: both should occur"
        );
    }
}
