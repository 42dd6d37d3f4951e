//! Generated `#[cloudrun_test]` crates run by the real `cargo test`, against the emulator.

use std::sync::OnceLock;

use cloudrun_test_e2e::{Fixture, GeneratedCrate, OUTSIDER, TESTER, output_text};
use cloudrun_test_emulator::{Emulator, ServiceConfig};

const PARALLEL_TESTS: usize = 40;

/// One crate for every scenario here: 40 tests of `hello`, and one of a missing service.
fn suite() -> &'static GeneratedCrate {
    static SUITE: OnceLock<GeneratedCrate> = OnceLock::new();
    SUITE.get_or_init(|| {
        let mut source = String::from("use cloudrun_test::{cloudrun_test, Client};\n");
        for index in 0..PARALLEL_TESTS {
            source.push_str(&format!(
                r#"
#[cloudrun_test(service = "hello")]
async fn hello_{index}(client: Client) {{
    let response = client.get("/{index}").send().await.unwrap();
    assert_eq!(response.status(), 200);
    let echo: serde_json::Value = response.json().await.unwrap();
    assert_eq!(echo["path"], "/{index}");
}}
"#
            ));
        }
        source.push_str(
            r#"
#[cloudrun_test(service = "no-such-service")]
async fn missing_service(client: Client) {
    client.get("/").send().await.unwrap();
}
"#,
        );
        GeneratedCrate::new("generated-suite", &source)
    })
}

fn fixture() -> Fixture {
    let fixture = Fixture::start(
        Emulator::builder()
            .project("emulated-project")
            .region("europe-west1")
            .service(ServiceConfig::new("hello").invoker(&format!("serviceAccount:{TESTER}"))),
    );
    fixture.emulator.service_account_key(OUTSIDER);
    fixture
}

/// Runs the 40 `hello_` tests with `args` and checks that they all passed, reached the
/// service, and caused a single identity-token mint.
fn forty_tests_mint_once(args: &[&str], summary: &str) {
    let fixture = fixture();
    let output = suite().cargo(args, &fixture.environment(TESTER));
    let text = output_text(&output);
    assert!(output.status.success(), "{text}");
    assert!(text.contains(summary), "{text}");
    let stats = fixture.emulator.stats();
    assert_eq!(stats.id_tokens_minted, 1, "{stats:?}");
    assert_eq!(stats.front_accepted, PARALLEL_TESTS as u64, "{stats:?}");
}

#[test]
fn forty_tests_starting_together_mint_one_token() {
    let threads = PARALLEL_TESTS.to_string();
    forty_tests_mint_once(
        &[
            "test",
            "--offline",
            "--test",
            "generated",
            "--",
            "hello_",
            "--test-threads",
            &threads,
        ],
        &format!("test result: ok. {PARALLEL_TESTS} passed"),
    );
}

#[test]
fn forty_tests_under_nextest_mint_one_token_across_forty_processes() {
    if !cloudrun_test_e2e::tier::tool("cargo-nextest") {
        return;
    }
    forty_tests_mint_once(
        &[
            "nextest",
            "run",
            "--offline",
            "--no-fail-fast",
            "--test",
            "generated",
            "-E",
            "test(/^hello_/)",
        ],
        &format!("{PARALLEL_TESTS} tests run: {PARALLEL_TESTS} passed"),
    );
}

/// Runs the one test `name` of the suite with `env`, expecting it to fail; returns
/// everything cargo and the test printed.
fn failing_run(name: &str, env: &[(String, String)]) -> String {
    let output = suite().cargo(
        &[
            "test",
            "--offline",
            "--test",
            "generated",
            "--",
            "--exact",
            name,
        ],
        env,
    );
    let text = output_text(&output);
    assert!(!output.status.success(), "{text}");
    text
}

#[test]
fn a_non_invoker_fails_naming_the_identity_and_the_grant() {
    let fixture = fixture();
    let text = failing_run("hello_0", &fixture.environment(OUTSIDER));
    assert!(
        text.contains(
            "answered 403 Forbidden for outsider@emulated-project.iam.gserviceaccount.com"
        ),
        "{text}"
    );
    assert!(
        text.contains(
            "gcloud run services add-iam-policy-binding hello --region europe-west1 --project emulated-project \
             --member=serviceAccount:outsider@emulated-project.iam.gserviceaccount.com --role=roles/run.invoker"
        ),
        "{text}"
    );
    // The token itself must not be in the output.
    assert!(!text.contains("eyJ"), "something JWT-like leaked: {text}");
}

#[test]
fn an_unknown_service_fails_with_the_admin_api_404_explained() {
    let fixture = fixture();
    let text = failing_run("missing_service", &fixture.environment(TESTER));
    assert!(
        text.contains("cloudrun_test setup failed for `generated::missing_service`"),
        "{text}"
    );
    assert!(
        text.contains("`no-such-service` was not found in project `emulated-project`"),
        "{text}"
    );
    assert!(text.contains("CLOUDRUN_TEST_URL_NO_SUCH_SERVICE"), "{text}");
}

#[test]
fn missing_project_and_region_name_the_settings_and_the_gcloud_fix() {
    let fixture = fixture();
    for (removed, expected) in [
        (
            "CLOUDRUN_TEST_PROJECT",
            "gcloud config set project PROJECT_ID",
        ),
        (
            "CLOUDRUN_TEST_REGION",
            "gcloud config set run/region REGION",
        ),
    ] {
        let environment: Vec<_> = fixture
            .environment(TESTER)
            .into_iter()
            .filter(|(name, _)| name != removed)
            .collect();
        let text = failing_run("hello_0", &environment);
        assert!(text.contains(removed), "{text}");
        assert!(text.contains(expected), "{text}");
        assert!(text.contains("CLOUDRUN_TEST_URL_HELLO"), "{text}");
    }
}

#[test]
fn a_malformed_key_file_fails_every_test_with_the_file_named() {
    let fixture = fixture();
    let bad_key = fixture.keys.path().join("truncated.json");
    std::fs::write(&bad_key, "{\"type\": \"service_account\", \"client_em").unwrap();
    let mut environment = fixture.environment(TESTER);
    environment.retain(|(name, _)| name != "GOOGLE_APPLICATION_CREDENTIALS");
    environment.push((
        "GOOGLE_APPLICATION_CREDENTIALS".into(),
        bad_key.display().to_string(),
    ));
    let text = failing_run("hello_0", &environment);
    assert!(
        text.contains(&format!(
            "credentials file {}: is not valid JSON",
            bad_key.display()
        )),
        "{text}"
    );
    assert!(
        !text.contains("panicked at") || text.contains("cloudrun_test setup failed"),
        "{text}"
    );
}

/// A crate with a `cloudrun-test.toml` and three tests that say which service answered.
fn config_suite(toml: &str) -> GeneratedCrate {
    let source = r#"
use cloudrun_test::{cloudrun_test, TestContext};

#[cloudrun_test(service = "hello")]
async fn which_service(context: TestContext) {
    let echo: serde_json::Value = context.client().get("/").send().await.unwrap().json().await.unwrap();
    println!("ANSWERED-BY={} TAG={} CALLER={}", echo["service"], echo["tag"], echo["caller"]);
}
"#;
    let krate = GeneratedCrate::new("config-suite", source);
    std::fs::write(krate.dir.path().join("cloudrun-test.toml"), toml).unwrap();
    krate
}

fn run_which_service(krate: &GeneratedCrate, env: &[(String, String)]) -> String {
    let output = krate.cargo(
        &[
            "test",
            "--offline",
            "--test",
            "generated",
            "--",
            "--exact",
            "which_service",
            "--nocapture",
        ],
        env,
    );
    let text = output_text(&output);
    assert!(output.status.success(), "{text}");
    text
}

/// The IDE case: no cloudrun-test variable at all; the file and gcloud's application
/// default credentials (a service-account key in the well-known place) are enough.
#[test]
fn the_config_file_is_found_with_no_environment_variables() {
    let fixture = Fixture::for_config_files();
    let toml = format!(
        "project = \"emulated-project\"\nregion = \"europe-west1\"\nrun_endpoint = \"{}\"\n",
        fixture
            .emulator
            .run_endpoint()
            .as_str()
            .trim_end_matches('/')
    );
    let krate = config_suite(&toml);
    let home = tempfile::tempdir().unwrap();
    let gcloud = home.path().join(".config/gcloud");
    std::fs::create_dir_all(&gcloud).unwrap();
    std::fs::write(
        gcloud.join("application_default_credentials.json"),
        fixture.emulator.service_account_key(TESTER),
    )
    .unwrap();
    let env = [("HOME".to_string(), home.path().display().to_string())];
    let text = run_which_service(&krate, &env);
    assert!(text.contains("ANSWERED-BY=\"hello\" TAG=null"), "{text}");
}

// Profiles and settings over the file, in process: tests/client.rs passes the settings
// to the client directly.

#[test]
fn a_malformed_config_file_names_file_line_and_column() {
    let fixture = Fixture::for_config_files();
    let krate = config_suite("project = \"p\"\n[services.hello]\nurll = \"x\"\n");
    let output = krate.cargo(
        &[
            "test",
            "--offline",
            "--test",
            "generated",
            "--",
            "--exact",
            "which_service",
        ],
        &fixture.environment(TESTER),
    );
    let text = output_text(&output);
    assert!(!output.status.success(), "{text}");
    assert!(text.contains("cloudrun-test.toml:3:1"), "{text}");
    assert!(text.contains("urll"), "{text}");
}

/// Local mode: a service on 127.0.0.1 needs no Google credentials at all.
#[test]
fn a_local_url_needs_no_credentials() {
    let server = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = server.local_addr().unwrap();
    std::thread::spawn(move || {
        use std::io::{Read, Write};
        for stream in server.incoming().take(1) {
            let mut stream = stream.unwrap();
            let mut request = [0u8; 4096];
            let read = stream.read(&mut request).unwrap();
            let request = String::from_utf8_lossy(&request[..read]).to_lowercase();
            let body = if request.contains("authorization") {
                "{\"service\":\"had-a-token\"}"
            } else {
                "{\"service\":\"local\"}"
            };
            write!(
                stream,
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            )
            .unwrap();
        }
    });
    let krate = config_suite("");
    let home = tempfile::tempdir().unwrap();
    let env = [
        ("HOME".to_string(), home.path().display().to_string()),
        (
            "CLOUDRUN_TEST_URL_HELLO".to_string(),
            format!("http://{address}"),
        ),
    ];
    let text = run_which_service(&krate, &env);
    assert!(text.contains("ANSWERED-BY=\"local\""), "{text}");
}

/// Parametrised tests as the docs show them: `#[cloudrun_test(...)]` above rstest's and
/// test-case's cases, two of each, every case asserting the service echoed its path.
fn parametrised_suite() -> GeneratedCrate {
    GeneratedCrate::with_dev_dependencies(
        "parametrised-suite",
        r#"
use cloudrun_test::{Client, cloudrun_test};
use rstest::rstest;
use test_case::test_case;

async fn echoes(client: &Client, path: &str) {
    let response = client.get(path).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let echo: serde_json::Value = response.json().await.unwrap();
    assert_eq!(echo["path"], path);
}

#[cloudrun_test(service = "hello")]
#[rstest]
#[case::first("/rstest/1")]
#[case::second("/rstest/2")]
async fn rstest_paths(#[case] path: &str, client: Client) {
    echoes(&client, path).await;
}

#[cloudrun_test(service = "hello")]
#[test_case("/test-case/1" ; "first")]
#[test_case("/test-case/2" ; "second")]
async fn test_case_paths(client: Client, path: &str) {
    echoes(&client, path).await;
}
"#,
        "rstest = { version = \"0.29\", default-features = false }\ntest-case = \"3.4\"\n",
    )
}

/// Each case's own test, as `cargo test -- --list` names it.
const CASES: [&str; 4] = [
    "rstest_paths::case_1_first",
    "rstest_paths::case_2_second",
    "test_case_paths::test_case_1_first",
    "test_case_paths::test_case_2_second",
];

#[test]
fn parametrised_cases_are_tests_of_their_own_under_cargo_test_and_nextest() {
    let krate = parametrised_suite();
    let fixture = fixture();
    let env = fixture.environment(TESTER);

    let listed = krate.cargo(
        &["test", "--offline", "--test", "generated", "--", "--list"],
        &env,
    );
    let text = output_text(&listed);
    assert!(listed.status.success(), "{text}");
    for case in CASES {
        assert!(
            text.contains(&format!("{case}: test")),
            "{case} not listed:\n{text}"
        );
    }
    assert!(text.contains("4 tests, 0 benchmarks"), "{text}");

    // Every case runs against the emulator and passes, under its own name.
    let run = krate.cargo(&["test", "--offline", "--test", "generated"], &env);
    let text = output_text(&run);
    assert!(run.status.success(), "{text}");
    for case in CASES {
        assert!(
            text.contains(&format!("test {case} ... ok")),
            "{case}:\n{text}"
        );
    }
    assert!(text.contains("test result: ok. 4 passed"), "{text}");
    assert_eq!(fixture.emulator.stats().front_accepted, 4);

    // `cargo test NAME` picks one case.
    let one = krate.cargo(
        &[
            "test",
            "--offline",
            "--test",
            "generated",
            "--",
            "--exact",
            CASES[3],
        ],
        &env,
    );
    let text = output_text(&one);
    assert!(one.status.success(), "{text}");
    assert!(text.contains("test result: ok. 1 passed"), "{text}");
    assert_eq!(fixture.emulator.stats().front_accepted, 5);

    if !cloudrun_test_e2e::tier::tool("cargo-nextest") {
        return;
    }
    let nextest = krate.cargo(
        &[
            "nextest",
            "run",
            "--offline",
            "--no-fail-fast",
            "--test",
            "generated",
        ],
        &env,
    );
    let text = output_text(&nextest);
    assert!(nextest.status.success(), "{text}");
    for case in CASES {
        assert!(
            text.lines()
                .any(|line| line.contains("PASS") && line.trim_end().ends_with(case)),
            "{case} did not pass under nextest:\n{text}"
        );
    }
    assert!(text.contains("4 tests run: 4 passed"), "{text}");
    assert_eq!(fixture.emulator.stats().front_accepted, 9);
}
