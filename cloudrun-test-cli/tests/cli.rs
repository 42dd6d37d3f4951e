//! The `cloudrun-test` binary, run as a user runs it.

mod support;

use std::process::Command;

use cloudrun_test_e2e::{Fixture, TESTER, isolate, output_text, workspace_root};
use cloudrun_test_emulator::{Emulator, ServiceConfig};
use support::{accepted_as, run_isolated};

fn fixture() -> Fixture {
    Fixture::start(
        Emulator::builder()
            .service(ServiceConfig::new("hello").invoker(&format!("serviceAccount:{TESTER}"))),
    )
}

#[test]
fn token_prints_only_a_token_the_service_accepts() {
    let fixture = fixture();
    let url = fixture.emulator.service_url("hello").unwrap();
    let audience = url.origin().ascii_serialization();
    let output = run_isolated(
        &["token", "--audience", &audience],
        &fixture.environment(TESTER),
    );
    assert!(output.status.success(), "{}", output_text(&output));
    let stdout = String::from_utf8(output.stdout.clone()).unwrap();
    let token = stdout
        .strip_suffix('\n')
        .expect("a newline after the token");
    assert!(
        !token.contains('\n') && token.split('.').count() == 3,
        "one JWT alone: {stdout:?}"
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("service-account key file") && stderr.contains(TESTER),
        "{stderr}"
    );
    assert!(!stderr.contains(token), "the token leaked to stderr");

    accepted_as(&fixture, token, TESTER);
}

#[test]
fn token_with_url_uses_its_origin_as_audience() {
    let fixture = fixture();
    let url = fixture
        .emulator
        .service_url("hello")
        .unwrap()
        .join("/some/path?q=1")
        .unwrap();
    let output = run_isolated(
        &["token", "--url", url.as_str()],
        &fixture.environment(TESTER),
    );
    assert!(output.status.success(), "{}", output_text(&output));
    assert!(String::from_utf8_lossy(&output.stderr).contains(&url.origin().ascii_serialization()));
}

#[test]
fn token_without_credentials_fails_listing_what_was_tried() {
    let home = tempfile::tempdir().unwrap();
    let env = [("HOME".to_string(), home.path().display().to_string())];
    let output = run_isolated(&["token", "--audience", "https://example.com"], &env);
    assert_eq!(output.status.code(), Some(1), "{}", output_text(&output));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("no Google credentials found"), "{stderr}");
    assert!(
        stderr.contains("GOOGLE_APPLICATION_CREDENTIALS: not set"),
        "{stderr}"
    );
    assert!(stderr.contains("fix:"), "{stderr}");
    assert!(output.stdout.is_empty());
}

#[test]
fn bad_usage_exits_2() {
    let output = run_isolated(&["token"], &[]);
    assert_eq!(output.status.code(), Some(2), "{}", output_text(&output));
}

#[test]
fn emulate_exports_the_environment_and_returns_the_command_status() {
    let output = run_isolated(
        &[
            "emulate",
            "--service",
            "hello",
            "--project",
            "p1",
            "--",
            "sh",
            "-c",
            "test -s \"$GOOGLE_APPLICATION_CREDENTIALS\" && echo \"$CLOUDRUN_TEST_PROJECT $CLOUDRUN_TEST_REGION\" && \
             curl -sf \"$CLOUDRUN_TEST_RUN_ENDPOINT/_emulator/stats\" >/dev/null && exit 7",
        ],
        &[],
    );
    assert_eq!(output.status.code(), Some(7), "{}", output_text(&output));
    assert_eq!(String::from_utf8_lossy(&output.stdout), "p1 europe-west1\n");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("export GOOGLE_APPLICATION_CREDENTIALS="),
        "{stderr}"
    );
    assert!(
        stderr.contains("service hello at http://127.0.0.1:"),
        "{stderr}"
    );
    // Hermetic: the service's URL and the emulated set for scripts and the library.
    assert!(
        stderr.contains("export CLOUDRUN_TEST_URL_HELLO=http://127.0.0.1:"),
        "{stderr}"
    );
    assert!(
        stderr.contains("export CLOUDRUN_TEST_EMULATED_SERVICES=hello\n"),
        "{stderr}"
    );
}

/// Under `emulate`, a caller who may not invoke is told the command's flag that grants
/// it, not gcloud's binding nor the emulator's Rust API.
#[test]
fn emulate_names_its_invoker_flag_for_a_403() {
    let doctor = format!(
        "{} doctor --service hello",
        env!("CARGO_BIN_EXE_cloudrun-test")
    );
    let output = run_isolated(
        &[
            "emulate",
            "--service",
            "hello",
            "--invoker",
            "someone-else@example.com",
            "--",
            "sh",
            "-c",
            &doctor,
        ],
        &[],
    );
    let text = output_text(&output);
    assert!(!output.status.success(), "{text}");
    assert!(
        text.contains(
            "fix: add `--invoker serviceAccount:tester@emulated-project.iam.gserviceaccount.com` \
             to the `cloudrun-test emulate` command"
        ),
        "{text}"
    );
    assert!(
        !text.contains("add-iam-policy-binding hello --region"),
        "{text}"
    );
}

/// Impersonation under `emulate`: the token creator mints through the emulated IAM
/// (CLOUDRUN_TEST_IAM_ENDPOINT is exported), and only the impersonated account may invoke.
#[test]
fn emulate_lets_a_token_creator_impersonate_the_invoker() {
    let deployer = "deployer@emulated-project.iam.gserviceaccount.com";
    let doctor = format!(
        "{} doctor --service hello",
        env!("CARGO_BIN_EXE_cloudrun-test")
    );
    let script = format!(
        "CLOUDRUN_TEST_IMPERSONATE_SERVICE_ACCOUNT={deployer} {doctor} >/dev/null 2>&1 || exit 3; \
         {doctor} >/dev/null 2>&1 && exit 4; exit 7"
    );
    let output = run_isolated(
        &[
            "emulate",
            "--service",
            "hello",
            "--invoker",
            &format!("serviceAccount:{deployer}"),
            "--token-creator",
            &format!("serviceAccount:{TESTER}={deployer}"),
            "--",
            "sh",
            "-c",
            &script,
        ],
        &[],
    );
    // 3: impersonating failed; 4: the tester itself was let in.
    assert_eq!(output.status.code(), Some(7), "{}", output_text(&output));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("export CLOUDRUN_TEST_IAM_ENDPOINT=http://127.0.0.1:"),
        "{stderr}"
    );

    let output = run_isolated(
        &[
            "emulate",
            "--service",
            "hello",
            "--token-creator",
            deployer,
            "--",
            "true",
        ],
        &[],
    );
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("--token-creator \"deployer@emulated-project.iam.gserviceaccount.com\": expected CALLER=TARGET"),
        "{stderr}"
    );
}

/// The README's first command: the example suite, its service started by `--serve`.
#[test]
fn the_example_suite_passes_under_emulate() {
    if !cloudrun_test_e2e::tier::slow() {
        return;
    }
    let root = workspace_root();
    let manifest = root.join("examples/hello/Cargo.toml");
    let manifest = manifest.to_str().unwrap();
    // The same invocation as the `cargo example-suite` alias in .cargo/config.toml.
    let serve = format!("hello=cargo run -q --offline --manifest-path {manifest}");
    let mut command = Command::new(env!("CARGO_BIN_EXE_cloudrun-test"));
    isolate(&mut command);
    command
        .current_dir(&root)
        .args(["emulate", "--serve", &serve, "--"])
        .args([
            env!("CARGO"),
            "test",
            "--offline",
            "--manifest-path",
            manifest,
        ]);
    let output = command.output().unwrap();
    let text = output_text(&output);
    assert!(output.status.success(), "{text}");
    // tests/suite.rs, then tests/websocket.rs.
    for result in [
        "test result: ok. 6 passed; 0 failed",
        "test result: ok. 2 passed; 0 failed",
    ] {
        assert!(text.contains(result), "{result}: {text}");
    }
}
