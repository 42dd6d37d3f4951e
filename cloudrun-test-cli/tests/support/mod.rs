//! Helpers for the CLI's tests: run the binary as a user would, isolated from the
//! developer's own Google setup.

#![allow(dead_code, unused_imports)] // each test file uses its own part

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub use cloudrun_test_e2e::{Fixture, OUTSIDER, TESTER, isolate, output_text};

pub const BIN: &str = env!("CARGO_BIN_EXE_cloudrun-test");

/// `cloudrun-test ARGS` with only `env` as Google settings; HOME is `home`, so no
/// gcloud configuration or cache of the developer's is seen.
pub fn command(args: &[&str], env: &[(String, String)], home: &Path) -> Command {
    let mut command = isolated(args);
    command
        .env("HOME", home)
        .env("CLOUDSDK_CONFIG", home.join("gcloud"))
        .env_remove("RUST_LOG")
        .envs(env.iter().cloned());
    command
}

/// `cloudrun-test ARGS` with `env` added, in the caller's HOME.
pub fn run_isolated(args: &[&str], env: &[(String, String)]) -> Output {
    isolated(args)
        .envs(env.iter().cloned())
        .output()
        .expect("the binary runs")
}

fn isolated(args: &[&str]) -> Command {
    let mut command = Command::new(BIN);
    command.args(args);
    isolate(&mut command);
    command
}

pub fn run(args: &[&str], env: &[(String, String)], home: &Path) -> Output {
    command(args, env, home).output().expect("the binary runs")
}

/// An identity token for `audience` as `cloudrun-test token` prints it, with `env`.
pub fn token(audience: &str, env: &[(String, String)], home: &Path) -> String {
    let output = run(&["token", "--audience", audience], env, home);
    assert!(output.status.success(), "{}", output_text(&output));
    String::from_utf8(output.stdout)
        .unwrap()
        .trim_end()
        .to_owned()
}

/// Asserts that `text` holds neither `token` nor anything shaped like a JWT.
pub fn assert_no_token(text: &str, token: &str, what: &str) {
    assert!(!token.is_empty());
    assert!(
        !text.contains(token),
        "the token appears in {what}:\n{text}"
    );
    assert!(
        !text.contains("eyJ"),
        "something JWT-shaped appears in {what}:\n{text}"
    );
}

/// A folder put first on PATH holding a fake `curl`: a shell script that records its
/// argv, its /proc cmdline and environment, and the contents of every `@FILE`
/// argument (as curl reads `-H @FILE`), in `record/`, then exits with `exit_code`.
pub struct FakeCurl {
    pub dir: tempfile::TempDir,
}

impl FakeCurl {
    pub fn new(exit_code: u8) -> FakeCurl {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let record = dir.path().join("record");
        std::fs::create_dir(&record).unwrap();
        let script = format!(
            r#"#!/bin/sh
record='{record}'
for arg in "$@"; do printf '%s\n' "$arg"; done > "$record/argv"
tr '\0' '\n' < /proc/$$/cmdline > "$record/cmdline"
tr '\0' '\n' < /proc/$$/environ > "$record/environ"
: > "$record/files"
for arg in "$@"; do
    case "$arg" in
        @*) cat "${{arg#@}}" >> "$record/files" ;;
    esac
done
exit {exit_code}
"#,
            record = record.display()
        );
        let path = dir.path().join("curl");
        std::fs::write(&path, script).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        FakeCurl { dir }
    }

    /// PATH with the fake curl first.
    pub fn path_env(&self) -> (String, String) {
        let path = std::env::var("PATH").unwrap_or_default();
        (
            "PATH".into(),
            format!("{}:{path}", self.dir.path().display()),
        )
    }

    pub fn record(&self, name: &str) -> String {
        std::fs::read_to_string(self.record_path(name)).unwrap_or_default()
    }

    pub fn ran(&self) -> bool {
        self.record_path("argv").exists()
    }

    fn record_path(&self, name: &str) -> PathBuf {
        self.dir.path().join("record").join(name)
    }
}

/// Calls `hello` with `token`; returns the status and the caller the echo app saw.
fn call(fixture: &Fixture, token: &str) -> (u16, serde_json::Value) {
    let url = fixture.emulator.service_url("hello").unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let response = reqwest::Client::new()
            .get(url)
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        let body: serde_json::Value = response.json().await.unwrap_or(serde_json::Value::Null);
        (status, body["caller"].clone())
    })
}

/// Asserts that `hello` accepts `token` and sees `identity` calling.
pub fn accepted_as(fixture: &Fixture, token: &str, identity: &str) {
    let (status, caller) = call(fixture, token);
    assert_eq!(status, 200, "the front refused the token");
    assert_eq!(caller, identity);
}
