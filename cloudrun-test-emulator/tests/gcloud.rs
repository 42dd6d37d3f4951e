//! The real `gcloud` CLI as a client: it activates a key file whose `token_uri` is
//! the emulator, mints tokens there, and the emulator accepts what it prints.
//!
//! This test needs the Google Cloud SDK (`gcloud` on PATH, or its path in
//! `CLOUDRUN_TEST_GCLOUD`). Without it the test says it was skipped, and fails under
//! `CI=true`: the point is to prove the wire protocol against the real client.

mod support;
#[allow(dead_code)] // the tiers' helper, shared with the e2e tests; this file needs `gcloud`
#[path = "../../tests/support/tier.rs"]
mod tier;

use std::io::Read as _;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use cloudrun_test_emulator::{Emulator, ServiceConfig};
use serde_json::Value;
use support::*;

const GCLOUD_TIMEOUT: Duration = Duration::from_secs(120);

/// Runs gcloud in the throwaway configuration folder `config`, isolated from the
/// developer's own setup, offline-friendly, with a time limit.
fn gcloud(config: &Path, args: &[&str]) -> Output {
    let program = std::env::var("CLOUDRUN_TEST_GCLOUD").unwrap_or_else(|_| "gcloud".to_owned());
    let mut command = Command::new(&program);
    command
        .args(args)
        .args(["--verbosity=warning", "--log-http"]);
    for (name, _) in std::env::vars_os() {
        let name = name.to_string_lossy();
        if name.starts_with("CLOUDSDK_")
            || name.starts_with("GOOGLE_")
            || name == "GCE_METADATA_HOST"
        {
            command.env_remove(name.as_ref());
        }
    }
    command
        .env("CLOUDSDK_CONFIG", config)
        .env("CLOUDSDK_CORE_DISABLE_PROMPTS", "1")
        .env("CLOUDSDK_CORE_DISABLE_USAGE_REPORTING", "true")
        .env("CLOUDSDK_COMPONENT_MANAGER_DISABLE_UPDATE_CHECK", "true")
        .env("CLOUDSDK_CORE_CHECK_GCE_METADATA", "false")
        .env("NO_PROXY", "127.0.0.1,localhost")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = match command.spawn() {
        Ok(child) => child,
        Err(error) => panic!(
            "this test runs the real gcloud CLI, and starting `{program}` failed: {error}. \
             Install the Google Cloud SDK (https://cloud.google.com/sdk/docs/install) or set \
             CLOUDRUN_TEST_GCLOUD to the gcloud executable."
        ),
    };
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let out = std::thread::spawn(move || {
        let mut text = Vec::new();
        let _ = stdout.read_to_end(&mut text);
        text
    });
    let err = std::thread::spawn(move || {
        let mut text = Vec::new();
        let _ = stderr.read_to_end(&mut text);
        text
    });
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > GCLOUD_TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            panic!("gcloud {args:?} did not finish within {GCLOUD_TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let output = Output {
        status,
        stdout: out.join().unwrap(),
        stderr: err.join().unwrap(),
    };
    // gcloud's HTTP log, for diagnosis, without the (throwaway) credentials in it.
    let log: Vec<&str> = std::str::from_utf8(&output.stderr)
        .unwrap_or("")
        .lines()
        .map(|line| {
            if line.contains("eyJ") || line.contains("ya29.") {
                "  [credential redacted]"
            } else {
                line
            }
        })
        .collect();
    eprintln!(
        "--- gcloud {} ({:?}, {}) ---\n{}",
        args.join(" "),
        started.elapsed(),
        output.status,
        log.join("\n")
    );
    assert!(
        output.status.success(),
        "gcloud {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

#[test]
fn gcloud_mints_tokens_the_emulator_accepts() {
    if !tier::gcloud() {
        return;
    }
    let emulator = Emulator::builder()
        .service(ServiceConfig::new("hello").invoker(&format!("serviceAccount:{TESTER}")))
        .start()
        .unwrap();
    let url = emulator.service_url("hello").unwrap();
    let service_audience = audience(&url);
    let folder = tempfile::tempdir().unwrap();
    let config = folder.path().join("gcloud");
    let key = emulator
        .write_service_account_key(TESTER, folder.path())
        .unwrap();

    let activation = gcloud(
        &config,
        &[
            "auth",
            "activate-service-account",
            "--key-file",
            key.to_str().unwrap(),
        ],
    );
    let log = String::from_utf8_lossy(&activation.stderr);
    assert!(
        log.contains(emulator.token_uri().as_str()),
        "gcloud called the emulator's token_uri:\n{log}"
    );

    emulator.reset_stats();
    let printed = gcloud(
        &config,
        &[
            "auth",
            "print-identity-token",
            &format!("--audiences={service_audience}"),
        ],
    );
    let token = String::from_utf8(printed.stdout).unwrap().trim().to_owned();
    // gcloud may print a stale token for another audience when minting fails: check.
    let claims = claims_of(&token);
    assert_eq!(claims["aud"], service_audience.as_str());
    assert_eq!(claims["email"], TESTER);
    assert!(claims["exp"].as_i64().unwrap() > now());
    assert_eq!(
        emulator
            .stats()
            .id_tokens_by_audience
            .get(&service_audience),
        Some(&1)
    );

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let response = http()
            .get(url.join("/from-gcloud").unwrap())
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["caller"], TESTER);
        assert_eq!(body["path"], "/from-gcloud");
    });

    // The access token gcloud prints opens the Admin API.
    let printed = gcloud(&config, &["auth", "print-access-token"]);
    let access_token = String::from_utf8(printed.stdout).unwrap().trim().to_owned();
    runtime.block_on(async {
        let path = format!(
            "v2/projects/{}/locations/{}/services/hello",
            emulator.project(),
            emulator.region()
        );
        let response = http()
            .get(emulator.run_endpoint().join(&path).unwrap())
            .bearer_auth(&access_token)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["uri"], service_audience.as_str());
    });
}
