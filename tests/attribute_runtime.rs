//! The attribute's runtime options and the attributes it passes through, checked by
//! what the real `cargo test` does with them: one generated crate, one run, against
//! the emulator.

use cloudrun_test_e2e::{Fixture, GeneratedCrate, TESTER, output_text};
use cloudrun_test_emulator::{Emulator, ServiceConfig};

const SUITE: &str = r#"
use std::time::Duration;

use cloudrun_test::{Client, cloudrun_test};
use tokio::runtime::{Handle, RuntimeFlavor};

#[cloudrun_test(service = "hello", flavor = "multi_thread", worker_threads = 3)]
async fn multi_thread_with_three_workers(client: Client) {
    let handle = Handle::current();
    assert_eq!(handle.runtime_flavor(), RuntimeFlavor::MultiThread);
    assert_eq!(handle.metrics().num_workers(), 3);
    // The client works from tasks spawned on the other workers.
    let requests: Vec<_> = (0..6)
        .map(|index| {
            let client = client.clone();
            tokio::spawn(async move { client.get(&format!("/{index}")).send().await.unwrap().status() })
        })
        .collect();
    for request in requests {
        assert_eq!(request.await.unwrap(), 200);
    }
}

#[cloudrun_test(service = "hello", flavor = "multi_thread")]
async fn multi_thread_with_default_workers() {
    let handle = Handle::current();
    assert_eq!(handle.runtime_flavor(), RuntimeFlavor::MultiThread);
    let cores = std::thread::available_parallelism().unwrap().get();
    assert_eq!(handle.metrics().num_workers(), cores);
}

#[cloudrun_test(service = "hello")]
async fn current_thread_by_default(client: Client) {
    assert_eq!(Handle::current().runtime_flavor(), RuntimeFlavor::CurrentThread);
    assert_eq!(client.get("/").send().await.unwrap().status(), 200);
}

#[cloudrun_test(service = "hello", timeout = "300ms")]
async fn too_slow(client: Client) {
    client.get("/").send().await.unwrap();
    tokio::time::sleep(Duration::from_secs(60)).await;
}

#[cloudrun_test(service = "hello", timeout = "1s500ms")]
async fn too_slow_compound(client: Client) {
    client.get("/").send().await.unwrap();
    tokio::time::sleep(Duration::from_secs(60)).await;
}

// No `timeout`: the run sets CLOUDRUN_TEST_TIMEOUT.
#[cloudrun_test(service = "hello")]
async fn too_slow_for_the_setting(client: Client) {
    client.get("/").send().await.unwrap();
    tokio::time::sleep(Duration::from_secs(60)).await;
}

#[cloudrun_test(service = "hello", timeout = "1m")]
async fn within_its_timeout(client: Client) {
    assert_eq!(client.get("/").send().await.unwrap().status(), 200);
}

#[cloudrun_test(service = "hello")]
#[ignore = "needs a deployed service"]
async fn ignored() {
    panic!("an ignored test must not run");
}

#[cloudrun_test(service = "hello")]
#[should_panic(expected = "the service answered 200 OK")]
async fn should_panic_with_the_expected_message(client: Client) {
    let status = client.get("/").send().await.unwrap().status();
    panic!("the service answered {status}");
}

#[cloudrun_test(service = "hello")]
#[should_panic(expected = "some other message")]
async fn should_panic_with_another_message() {
    panic!("not the expected one");
}

#[cloudrun_test(service = "hello")]
#[cfg(any())]
async fn compiled_out() {
    this_function_does_not_exist();
}

#[derive(Debug)]
#[allow(dead_code)] // read by `Debug` only
struct Unexpected {
    status: u16,
}

#[cloudrun_test(service = "hello")]
async fn returns_err(client: Client) -> Result<(), Unexpected> {
    let status = client.get("/").send().await.unwrap().status();
    Err(Unexpected { status: status.as_u16() })
}

/// Doc comments stay on the test (this crate is built with `-D unused_doc_comments`).
#[cloudrun_test(service = "hello")]
async fn returns_ok(client: Client) -> Result<(), Box<dyn std::error::Error>> {
    client.get("/").send().await?.error_for_status()?;
    Ok(())
}
"#;

/// libtest's verdict on each test: `ok`, `FAILED` or `ignored...`.
fn verdicts(text: &str) -> Vec<(String, String)> {
    text.lines()
        .filter_map(|line| line.strip_prefix("test "))
        .filter_map(|line| line.split_once(" ... "))
        .map(|(name, verdict)| (name.to_owned(), verdict.to_owned()))
        .collect()
}

#[test]
fn runtime_options_and_passed_through_attributes_behave_as_with_test() {
    let fixture = Fixture::start(
        Emulator::builder()
            .project("emulated-project")
            .region("europe-west1")
            .service(ServiceConfig::new("hello").invoker(&format!("serviceAccount:{TESTER}"))),
    );
    let krate = GeneratedCrate::new("attribute-runtime", SUITE);
    // The tests read the runtime through tokio itself (the features `cloudrun-test`
    // already enables, so nothing is rebuilt).
    let manifest = krate.dir.path().join("Cargo.toml");
    let mut toml = std::fs::read_to_string(&manifest).unwrap();
    toml.push_str("\n[dev-dependencies.tokio]\nversion = \"1\"\nfeatures = [\"rt\", \"time\"]\n");
    toml.push_str("\n[lints.rust]\nunused_doc_comments = \"deny\"\n");
    std::fs::write(&manifest, toml).unwrap();

    // The limit for the tests that set none: long enough for the others on a busy
    // machine, short enough for the run.
    let mut environment = fixture.environment(TESTER);
    environment.push(("CLOUDRUN_TEST_TIMEOUT".into(), "8s".into()));
    let output = krate.cargo(&["test", "--offline", "--test", "generated"], &environment);
    let text = output_text(&output);
    assert!(!text.contains("could not compile"), "{text}");
    assert!(
        !output.status.success(),
        "five tests fail on purpose:\n{text}"
    );

    let mut verdicts = verdicts(&text);
    verdicts.sort();
    let expected = [
        ("current_thread_by_default", "ok"),
        ("ignored", "ignored, needs a deployed service"),
        ("multi_thread_with_default_workers", "ok"),
        ("multi_thread_with_three_workers", "ok"),
        ("returns_err", "FAILED"),
        ("returns_ok", "ok"),
        ("should_panic_with_another_message - should panic", "FAILED"),
        (
            "should_panic_with_the_expected_message - should panic",
            "ok",
        ),
        ("too_slow", "FAILED"),
        ("too_slow_compound", "FAILED"),
        ("too_slow_for_the_setting", "FAILED"),
        ("within_its_timeout", "ok"),
    ];
    let expected: Vec<(String, String)> = expected
        .iter()
        .map(|(name, verdict)| (name.to_string(), verdict.to_string()))
        .collect();
    // `compiled_out` is absent: `#[cfg(any())]` removed it, unknown function and all.
    assert_eq!(verdicts, expected, "{text}");
    assert!(
        text.contains("test result: FAILED. 6 passed; 5 failed; 1 ignored"),
        "{text}"
    );

    // Each failure says why, in the words a reader needs.
    for message in [
        "`generated::too_slow` did not finish within its timeout of 300ms (set with `timeout = \"...\"`)",
        "`generated::too_slow_compound` did not finish within its timeout of 1.5s",
        "`generated::too_slow_for_the_setting` did not finish within its timeout of 8s \
         (set by CLOUDRUN_TEST_TIMEOUT; `timeout = \"...\"` on the test overrides it)",
        "the test returned Err(Unexpected { status: 200 })",
        "panic did not contain expected string",
    ] {
        assert!(text.contains(message), "missing {message:?} in:\n{text}");
    }
    // Every request went through Cloud Run's (emulated) IAM check: 6 + 8 tests' one.
    let stats = fixture.emulator.stats();
    assert_eq!(stats.front_accepted, 14, "{stats:?}");

    // A setting that is no limit fails the test, saying what to write: the unit tests of
    // `entry.rs` give the runtime such settings directly, without another cargo run.

    // The timeouts cut the 60 s sleeps short.
    let seconds: f64 = text
        .split("finished in ")
        .nth(1)
        .and_then(|rest| rest.split('s').next())
        .and_then(|number| number.parse().ok())
        .unwrap_or_else(|| panic!("no duration in:\n{text}"));
    assert!(seconds < 30.0, "the run took {seconds}s:\n{text}");
}
