//! Shared helpers for the end-to-end tests: an emulator with a key file, and generated
//! crates run with the real `cargo test` / `cargo nextest run`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};

use cloudrun_test_emulator::{Emulator, EmulatorBuilder, ServiceConfig};

pub mod recorder;
pub mod tier;

/// The service account the tests run as, invoker of the services they call.
pub const TESTER: &str = "tester@emulated-project.iam.gserviceaccount.com";
/// A service account that exists but may invoke nothing.
pub const OUTSIDER: &str = "outsider@emulated-project.iam.gserviceaccount.com";

pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ lives in the workspace")
        .to_owned()
}

/// A running emulator plus a folder holding key files for it.
pub struct Fixture {
    pub emulator: Emulator,
    pub keys: tempfile::TempDir,
}

impl Fixture {
    pub fn start(builder: EmulatorBuilder) -> Fixture {
        let emulator = builder.start().expect("the emulator starts");
        let keys = tempfile::tempdir().expect("a temporary folder");
        Fixture { emulator, keys }
    }

    /// The emulator the `cloudrun-test.toml` tests resolve against: `hello` (with a
    /// `canary` tag) and `hello-staging` in emulated-project / europe-west1, both
    /// invoked by [`TESTER`].
    pub fn for_config_files() -> Fixture {
        let invoker = format!("serviceAccount:{TESTER}");
        Fixture::start(
            Emulator::builder()
                .project("emulated-project")
                .region("europe-west1")
                .service(ServiceConfig::new("hello").invoker(&invoker).tag("canary"))
                .service(ServiceConfig::new("hello-staging").invoker(&invoker)),
        )
    }

    /// Writes `email`'s key file and returns its path.
    pub fn key_file(&self, email: &str) -> PathBuf {
        self.emulator
            .write_service_account_key(email, self.keys.path())
            .expect("the key file is written")
    }

    /// A client for `service`, found by name through the emulator's Admin API, with
    /// `email`'s key.
    pub fn client_for(&self, email: &str, service: &str) -> cloudrun_test::ClientBuilder {
        let credentials = cloudrun_test::Credentials::from_file(self.key_file(email))
            .expect("the key file parses");
        cloudrun_test::Client::builder()
            .service(service)
            .project(self.emulator.project())
            .region(self.emulator.region())
            .run_endpoint(self.emulator.run_endpoint().as_str())
            .credentials(credentials)
    }

    /// The environment `cloudrun-test emulate` exports, authenticating as `email`.
    pub fn environment(&self, email: &str) -> Vec<(String, String)> {
        let mut environment = self.emulator.environment(&self.key_file(email));
        // A disk cache of this fixture's own, so runs never share tokens.
        environment.push((
            "CLOUDRUN_TEST_CACHE_DIR".into(),
            self.keys.path().join("token-cache").display().to_string(),
        ));
        environment
    }
}

/// A test crate written to a temporary folder, depending on this workspace's
/// `cloudrun-test` by path, built in a target folder shared by all generated crates.
pub struct GeneratedCrate {
    pub dir: tempfile::TempDir,
}

impl GeneratedCrate {
    /// `tests` is the source of `tests/generated.rs`.
    pub fn new(name: &str, tests: &str) -> GeneratedCrate {
        GeneratedCrate::with_dev_dependencies(name, tests, "")
    }

    /// [`GeneratedCrate::new`] with more `[dev-dependencies]` lines; they must be in the
    /// workspace's lock file (nested builds are offline).
    pub fn with_dev_dependencies(name: &str, tests: &str, more: &str) -> GeneratedCrate {
        // Cargo names a path package's build outputs by name and version, not folder:
        // two crates of the same name built at once would overwrite each other's test
        // binary (with the other's CARGO_MANIFEST_DIR compiled in).
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let name = format!("{name}-{}", NEXT.fetch_add(1, Ordering::Relaxed));
        let dir = tempfile::Builder::new()
            .prefix(&format!("{name}-"))
            .tempdir()
            .expect("a temporary folder");
        let root = workspace_root();
        let manifest = format!(
            r#"[package]
name = "{name}"
version = "0.0.0"
edition = "2024"
publish = false

[dev-dependencies]
cloudrun-test = {{ path = "{}" }}
serde_json = "1"
{more}
[workspace]
"#,
            root.join("cloudrun-test").display()
        );
        std::fs::write(dir.path().join("Cargo.toml"), manifest).unwrap();
        // The workspace's lock file pins the same versions, so the shared target folder
        // reuses the compiled dependencies and nothing is downloaded.
        std::fs::copy(root.join("Cargo.lock"), dir.path().join("Cargo.lock")).unwrap();
        std::fs::create_dir_all(dir.path().join("src")).unwrap();
        std::fs::write(dir.path().join("src/lib.rs"), "").unwrap();
        std::fs::create_dir_all(dir.path().join("tests")).unwrap();
        std::fs::write(dir.path().join("tests/generated.rs"), tests).unwrap();
        GeneratedCrate { dir }
    }

    /// Runs `cargo SUBCOMMAND` in the crate with only `env` as cloudrun-test settings.
    pub fn cargo(&self, args: &[&str], env: &[(String, String)]) -> Output {
        let mut command = cargo_command(args);
        command
            .current_dir(self.dir.path())
            .envs(env.iter().cloned());
        let output = command.output().expect("cargo runs");
        eprintln!(
            "--- cargo {} ---\n{}\n{}",
            args.join(" "),
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        output
    }
}

/// `cargo ARGS`, isolated as [`isolate`] says.
pub fn cargo_command(args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO"));
    command.args(args);
    isolate(&mut command);
    command
}

/// Removes the calling environment's Google and cloudrun-test settings, so that a
/// developer's own setup cannot leak into a test, and points nested cargo runs at a
/// target folder of their own (the outer `cargo test` holds the main one's lock).
/// The metadata server is off (on a Google Cloud VM it would be a credential source);
/// tests that want it set `GCE_METADATA_HOST` after this. gcloud's configuration stays
/// `$HOME/.config/gcloud` (tests that care point `HOME` or `CLOUDSDK_CONFIG` elsewhere).
pub fn isolate(command: &mut Command) {
    command
        .env("CARGO_TARGET_DIR", workspace_root().join("target/nested"))
        .env_remove("RUSTFLAGS");
    for (name, _) in std::env::vars_os() {
        let name = name.to_string_lossy();
        if name.starts_with("CLOUDRUN_TEST_")
            || name.starts_with("GOOGLE_")
            || name.starts_with("CLOUDSDK_")
            || name == "GCE_METADATA_HOST"
            || name.starts_with("NEXTEST")
        {
            command.env_remove(name.as_ref());
        }
    }
    command.env("NO_GCE_CHECK", "true");
}

/// stdout and stderr of a finished command, as one string.
pub fn output_text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// The crates a user compiles with `cloudrun-test` (its normal and build
/// dependencies), by name, sorted and without repeats, as `cargo tree` lists them.
pub fn user_dependencies() -> Vec<String> {
    let output = cargo_command(&[
        "tree",
        "--offline",
        "-p",
        "cloudrun-test",
        "-e",
        "normal,build",
        "--prefix",
        "none",
        "--format",
        "{p}",
    ])
    .current_dir(workspace_root())
    .output()
    .expect("cargo tree runs");
    assert!(output.status.success(), "{}", output_text(&output));
    let mut names: Vec<String> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| line.split_whitespace().next())
        .map(str::to_owned)
        .collect();
    names.sort();
    names.dedup();
    names
}

/// The secret part of the canary token: if it shows anywhere, the token leaked.
pub const CANARY_SIGNATURE: &str = "CANARYsecretSIGNATUREdoNotLeak0123456789";

/// A JWT-shaped identity token for `audience`, valid for an hour, whose signature is
/// [`CANARY_SIGNATURE`].
pub fn canary_token(audience: &str) -> String {
    use base64::Engine as _;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("the clock is after 1970")
        .as_secs();
    let claims = serde_json::json!({
        "iss": "https://accounts.google.com",
        "aud": audience,
        "email": "canary@emulated-project.iam.gserviceaccount.com",
        "iat": now,
        "exp": now + 3600,
    });
    format!(
        "{}.{}.{CANARY_SIGNATURE}",
        URL_SAFE_NO_PAD.encode(r#"{"alg":"RS256","typ":"JWT"}"#),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    )
}

// The workspace README's Rust code blocks, compiled as doc tests of this crate
// (`cargo test -p cloudrun-test-e2e --doc`): the published crates cannot include a file
// outside themselves, and this one is not published. Blocks that cannot compile alone
// (the expansion shown from `cloudrun-test-macros/src/expansion.md`) are `rust ignore`.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
pub struct ReadmeDoctests;
