//! `cargo nextest run --partition count:K/N`, as a CI matrix runs one suite across N
//! machines: the partitions together run every test exactly once, and each passes
//! against the emulator.

use std::collections::BTreeSet;

use cloudrun_test_e2e::{Fixture, GeneratedCrate, TESTER, output_text};
use cloudrun_test_emulator::{Emulator, ServiceConfig};

const TESTS: usize = 10;

/// The tests nextest reports as passed, by name (`PASS [ 0.012s] (1/5) CRATE::generated NAME`).
fn passed(text: &str) -> Vec<String> {
    text.lines()
        .map(str::trim_start)
        .filter(|line| line.starts_with("PASS ["))
        .filter_map(|line| line.split_whitespace().last())
        .map(str::to_owned)
        .collect()
}

#[test]
fn two_partitions_run_every_test_once_and_pass() {
    if !cloudrun_test_e2e::tier::tool("cargo-nextest") {
        return;
    }
    let fixture = Fixture::start(
        Emulator::builder()
            .project("emulated-project")
            .region("europe-west1")
            .service(ServiceConfig::new("hello").invoker(&format!("serviceAccount:{TESTER}"))),
    );
    let mut source = String::from("use cloudrun_test::{cloudrun_test, Client};\n");
    for index in 0..TESTS {
        source.push_str(&format!(
            r#"
#[cloudrun_test(service = "hello")]
async fn partitioned_{index}(client: Client) {{
    let response = client.get("/{index}").send().await.unwrap();
    assert_eq!(response.status(), 200);
}}
"#
        ));
    }
    // One module level deeper, as real suites group tests.
    source.push_str(
        r#"
mod grouped {
    #[cloudrun_test::test(service = "hello")]
    async fn in_a_module(client: cloudrun_test::Client) {
        assert_eq!(client.get("/grouped").send().await.unwrap().status(), 200);
    }
}
"#,
    );
    let krate = GeneratedCrate::new("nextest-partition", &source);

    let mut all = Vec::new();
    for partition in ["count:1/2", "count:2/2"] {
        // Each machine of the matrix has its own token cache (as CI runners do).
        let mut environment = fixture.environment(TESTER);
        let cache = fixture.keys.path().join(partition.replace([':', '/'], "-"));
        environment.retain(|(name, _)| name != "CLOUDRUN_TEST_CACHE_DIR");
        environment.push((
            "CLOUDRUN_TEST_CACHE_DIR".into(),
            cache.display().to_string(),
        ));

        let output = krate.cargo(
            &[
                "nextest",
                "run",
                "--offline",
                "--no-fail-fast",
                "--test",
                "generated",
                "--partition",
                partition,
            ],
            &environment,
        );
        let text = output_text(&output);
        assert!(output.status.success(), "{partition}:\n{text}");
        let ran = passed(&text);
        assert!(!ran.is_empty(), "{partition} ran nothing:\n{text}");
        assert!(
            text.contains(&format!("{0} tests run: {0} passed", ran.len())),
            "{partition}:\n{text}"
        );
        // The other partition's tests are skipped here, not run.
        assert!(
            text.contains(&format!("{} skipped", TESTS + 1 - ran.len())),
            "{partition}:\n{text}"
        );
        all.extend(ran);
    }

    let mut expected: Vec<String> = (0..TESTS).map(|i| format!("partitioned_{i}")).collect();
    expected.push("grouped::in_a_module".into());
    expected.sort();
    all.sort();
    // Every test exactly once: no test in both partitions, none in neither.
    assert_eq!(all, expected);
    assert_eq!(all.iter().collect::<BTreeSet<_>>().len(), TESTS + 1);

    let stats = fixture.emulator.stats();
    assert_eq!(stats.front_accepted, TESTS as u64 + 1, "{stats:?}");
    // One token per machine: nextest runs each test in its own process, the disk
    // cache shares the token between them.
    assert_eq!(stats.id_tokens_minted, 2, "{stats:?}");
}
