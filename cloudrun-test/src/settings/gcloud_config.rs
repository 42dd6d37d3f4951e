//! gcloud's own settings (`core/project`, `run/region`, `core/account`...), read from
//! its configuration files without starting gcloud.

use std::path::{Path, PathBuf};

use super::env;

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

/// gcloud's configuration folder, as gcloud finds it: `CLOUDSDK_CONFIG`, else
/// [`DEFAULT_CONFIG`].
pub(crate) fn gcloud_config_dir() -> Option<PathBuf> {
    if let Some(dir) = env("CLOUDSDK_CONFIG") {
        return Some(PathBuf::from(dir));
    }
    let (variable, folder) = DEFAULT_CONFIG;
    env(variable).map(|base| Path::new(&base).join(folder))
}

/// Where gcloud keeps its configuration: a folder under the one a variable names.
#[cfg(unix)]
const DEFAULT_CONFIG: (&str, &str) = ("HOME", ".config/gcloud");
#[cfg(windows)]
const DEFAULT_CONFIG: (&str, &str) = ("APPDATA", "gcloud");

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
