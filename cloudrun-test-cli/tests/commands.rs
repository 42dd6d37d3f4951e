//! `token` reuses the disk cache across processes, `--verbose` logs something useful
//! and no token, `emulate --fault` injects faults, and every command's help has
//! examples.

mod support;

use cloudrun_test_emulator::{Emulator, ServiceConfig};
use support::*;

fn fixture() -> Fixture {
    Fixture::start(
        Emulator::builder()
            .service(ServiceConfig::new("hello").invoker(&format!("serviceAccount:{TESTER}"))),
    )
}

#[test]
fn two_token_calls_mint_once() {
    let fixture = fixture();
    let home = tempfile::tempdir().unwrap();
    let env = fixture.environment(TESTER);
    let audience = fixture
        .emulator
        .service_url("hello")
        .unwrap()
        .origin()
        .ascii_serialization();
    fixture.emulator.reset_stats();
    let first = token(&audience, &env, home.path());
    let second = token(&audience, &env, home.path());
    assert_eq!(
        first, second,
        "the second process read the first one's token"
    );
    let stats = fixture.emulator.stats();
    assert_eq!(stats.id_tokens_minted, 1, "{stats:?}");

    // `curl` shares that cache: still one mint.
    let output = run(
        &["curl", &audience, "-sS", "-o", "/dev/null"],
        &env,
        home.path(),
    );
    assert!(output.status.success(), "{}", output_text(&output));
    assert_eq!(fixture.emulator.stats().id_tokens_minted, 1);
    assert_eq!(fixture.emulator.stats().front_accepted, 1);
}

#[test]
fn verbose_logs_the_source_and_the_cache_and_never_the_token() {
    let fixture = fixture();
    let home = tempfile::tempdir().unwrap();
    let env = fixture.environment(TESTER);
    let url = fixture.emulator.service_url("hello").unwrap();
    let audience = url.origin().ascii_serialization();

    let output = run(
        &["--verbose", "token", "--audience", &audience],
        &env,
        home.path(),
    );
    assert!(output.status.success(), "{}", output_text(&output));
    let token = String::from_utf8(output.stdout.clone())
        .unwrap()
        .trim_end()
        .to_owned();
    let log = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(log.contains("DEBUG"), "a tracing log: {log}");
    assert_no_token(&log, &token, "the --verbose log of `token`");

    let output = run(
        &["curl", "-v", url.as_str(), "-sS", "-o", "/dev/null"],
        &env,
        home.path(),
    );
    assert!(output.status.success(), "{}", output_text(&output));
    let log = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(
        log.contains("identity token served from the disk cache"),
        "{log}"
    );
    assert!(log.contains("service-account key file"), "{log}");
    assert!(log.contains(TESTER), "{log}");
    assert!(log.contains("running curl"), "{log}");
    assert_no_token(&log, &token, "the --verbose log of `curl`");
}

#[test]
fn emulate_injects_faults_from_the_command_line() {
    let home = tempfile::tempdir().unwrap();
    // The first request gets the injected 503, the second goes through.
    let script = format!(
        "{BIN} doctor --service hello >/dev/null; echo first=$?; \
         {BIN} doctor --service hello | grep -o 'GET .*'; echo second=$?"
    );
    let output = run(
        &[
            "emulate",
            "--service",
            "hello",
            "--fault",
            "service-error=hello:503x1",
            "--",
            "sh",
            "-c",
            &script,
        ],
        &[],
        home.path(),
    );
    let text = output_text(&output);
    assert!(output.status.success(), "{text}");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("first=1"), "{text}");
    assert!(
        stdout.contains("-> 200 OK") && stdout.contains("second=0"),
        "{text}"
    );
    assert!(
        text.contains("fault injected: service-error=hello:503x1"),
        "{text}"
    );

    let output = run(
        &[
            "emulate",
            "--service",
            "hello",
            "--fault",
            "service-error=nope:503",
            "--",
            "true",
        ],
        &[],
        home.path(),
    );
    assert_eq!(output.status.code(), Some(1), "{}", output_text(&output));
    let output = run(
        &["emulate", "--fault", "bogus", "--", "true"],
        &[],
        home.path(),
    );
    assert_eq!(output.status.code(), Some(2), "{}", output_text(&output));
}

#[test]
fn every_command_has_help_with_examples_and_exit_codes_are_documented() {
    let home = tempfile::tempdir().unwrap();
    let output = run(&["--help"], &[], home.path());
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(output.status.success());
    assert!(text.contains("Exit codes: 0 success"), "{text}");
    for command in ["token", "curl", "doctor", "emulate"] {
        assert!(text.contains(command), "{command} listed: {text}");
        let output = run(&[command, "--help"], &[], home.path());
        let help = String::from_utf8_lossy(&output.stdout).into_owned();
        assert!(output.status.success(), "{command} --help");
        assert!(help.contains("Examples:"), "{command} --help: {help}");
        assert!(
            help.contains(&format!("cloudrun-test {command} ")),
            "{command} --help shows an invocation: {help}"
        );
    }
}

/// `doctor | head -1`, `token | true`: a reader that goes away ends the command quietly
/// (SIGPIPE, as for other Unix tools), never with a panic.
#[test]
fn a_reader_that_goes_away_ends_the_command_without_a_panic() {
    use std::os::unix::process::ExitStatusExt;
    use std::process::Stdio;

    let fixture = fixture();
    let home = tempfile::tempdir().unwrap();
    let env = fixture.environment(TESTER);
    let url = fixture.emulator.service_url("hello").unwrap().to_string();
    for (args, closed) in [
        (vec!["doctor", "--url", url.as_str()], "stdout"),
        (vec!["token", "--audience", url.as_str()], "stderr"),
    ] {
        let mut command = support::command(&args, &env, home.path());
        let (out, err) = if closed == "stdout" {
            (Stdio::piped(), Stdio::piped())
        } else {
            (Stdio::null(), Stdio::piped())
        };
        let mut child = command.stdout(out).stderr(err).spawn().unwrap();
        // Close the reading end at once: every write the command makes there fails.
        let kept = if closed == "stdout" {
            drop(child.stdout.take());
            child.stderr.take()
        } else {
            drop(child.stderr.take());
            None
        };
        let status = child.wait().unwrap();
        let mut text = String::new();
        if let Some(mut stderr) = kept {
            std::io::Read::read_to_string(&mut stderr, &mut text).unwrap();
        }
        assert!(!text.contains("panicked"), "{args:?}: {text}");
        assert_ne!(status.code(), Some(101), "{args:?} panicked: {text}");
        assert!(
            status.success() || status.signal() == Some(libc_sigpipe()),
            "{args:?}: {status:?} {text}"
        );
    }
}

/// SIGPIPE's number on Linux and the BSDs.
fn libc_sigpipe() -> i32 {
    13
}
