//! The environment that points a command at the emulator, and the inherited
//! settings a hermetic command must not see.

use std::path::Path;

use crate::state::State;

/// `CLOUDRUN_TEST_*` variables that choose neither credentials nor where requests go,
/// so a hermetic command keeps them: time limits, the token header, the disk cache
/// switch, and the curl program.
const KEPT_SETTINGS: [&str; 6] = [
    "CLOUDRUN_TEST_TIMEOUT",
    "CLOUDRUN_TEST_TOKEN_TIMEOUT",
    "CLOUDRUN_TEST_GCLOUD_TIMEOUT",
    "CLOUDRUN_TEST_TOKEN_HEADER",
    "CLOUDRUN_TEST_DISK_CACHE",
    "CLOUDRUN_TEST_CURL",
];

/// See [`crate::is_outside_setting`]. Whole families rather than the names known
/// today, so a new setting cannot slip through.
pub(crate) fn is_outside_setting(name: &str) -> bool {
    if name.starts_with("CLOUDRUN_TEST_") {
        return !KEPT_SETTINGS.contains(&name);
    }
    ["GOOGLE_", "CLOUDSDK_", "GCLOUD_", "GCE_METADATA"]
        .iter()
        .any(|prefix| name.starts_with(prefix))
        || name == "NO_GCE_CHECK"
}

/// See [`crate::Emulator::environment`].
pub(crate) fn environment(state: &State, key_file: &Path) -> Vec<(String, String)> {
    let base = base(state);
    vec![
        (
            "GOOGLE_APPLICATION_CREDENTIALS".into(),
            key_file.display().to_string(),
        ),
        ("CLOUDRUN_TEST_PROJECT".into(), state.project.clone()),
        ("CLOUDRUN_TEST_REGION".into(), state.region.clone()),
        ("CLOUDRUN_TEST_RUN_ENDPOINT".into(), base.clone()),
        // Impersonation (`impersonate = "..."`) mints through the emulated IAM.
        ("CLOUDRUN_TEST_IAM_ENDPOINT".into(), base),
    ]
}

/// See [`crate::Emulator::hermetic_environment`].
pub(crate) fn hermetic_environment(
    state: &State,
    key_file: &Path,
    scratch: &Path,
) -> Vec<(String, String)> {
    let mut environment = environment(state, key_file);
    // The names are read by `cloudrun_test`'s settings (`Emulated`).
    environment.push(("CLOUDRUN_TEST_EMULATOR".into(), base(state)));
    environment.push((
        "CLOUDRUN_TEST_EMULATED_SERVICES".into(),
        state.service_names().join(","),
    ));
    for service in &state.services {
        let suffix = service.name.to_ascii_uppercase().replace('-', "_");
        environment.push((
            format!("CLOUDRUN_TEST_URL_{suffix}"),
            service.url().as_str().trim_end_matches('/').to_owned(),
        ));
    }
    for (name, path) in [
        ("CLOUDRUN_TEST_CACHE_DIR", scratch.join("token-cache")),
        ("CLOUDSDK_CONFIG", scratch.join("gcloud")),
    ] {
        environment.push((name.into(), path.display().to_string()));
    }
    environment.push(("GOOGLE_CLOUD_PROJECT".into(), state.project.clone()));
    environment.push(("NO_GCE_CHECK".into(), "true".into()));
    environment
}

/// See [`crate::Emulator::make_hermetic`].
pub(crate) fn make_hermetic(
    state: &State,
    command: &mut std::process::Command,
    key_file: &Path,
    scratch: &Path,
) {
    for (name, _) in std::env::vars_os() {
        if let Some(name) = name.to_str()
            && is_outside_setting(name)
        {
            command.env_remove(name);
        }
    }
    command.envs(hermetic_environment(state, key_file, scratch));
}

/// The base URL without its trailing slash, as settings hold URLs.
fn base(state: &State) -> String {
    state.base_url.as_str().trim_end_matches('/').to_owned()
}
