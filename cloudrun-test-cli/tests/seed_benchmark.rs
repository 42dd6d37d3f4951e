//! The seed's workflow against `cloudrun-test curl`, on the same emulated service:
//!
//! - seed: `curl -H "Authorization: Bearer $(gcloud auth print-identity-token --audiences=URL)" URL`,
//!   the real gcloud CLI minting at the emulator through its key file's `token_uri`;
//! - ours: `cloudrun-test curl URL`, the token from the on-disk cache after the first call.
//!
//! Both run through `sh -c`, one process tree per request as a user would type them,
//! and must get `200` every time. The bounded default (2 requests each) runs in the
//! slow tier (`cargo test-slow`) and only checks that ours is faster; the measurement
//! in BENCHMARKS.md:
//!
//! ```sh
//! CLOUDRUN_TEST_BENCH_REQUESTS=10 cargo test --release -p cloudrun-test-cli \
//!     --test seed_benchmark -- --nocapture
//! ```
//!
//! Needs the Google Cloud SDK (`gcloud` on PATH, or its path in `CLOUDRUN_TEST_GCLOUD`):
//! without it the test says it was skipped, and fails under `CI=true`.

mod support;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use cloudrun_test_emulator::{Emulator, ServiceConfig};
use support::*;

fn gcloud_program() -> String {
    std::env::var("CLOUDRUN_TEST_GCLOUD").unwrap_or_else(|_| "gcloud".to_owned())
}

/// `sh -c SCRIPT` with gcloud confined to `config` and the credentials in `env`.
fn shell(script: &str, config: &Path, env: &[(String, String)]) -> Command {
    let mut command = Command::new("sh");
    command.args(["-c", script]);
    isolate(&mut command);
    command
        .env("CLOUDSDK_CONFIG", config)
        .env("CLOUDSDK_CORE_DISABLE_PROMPTS", "1")
        .env("CLOUDSDK_CORE_DISABLE_USAGE_REPORTING", "true")
        .env("CLOUDSDK_COMPONENT_MANAGER_DISABLE_UPDATE_CHECK", "true")
        .env("CLOUDSDK_CORE_CHECK_GCE_METADATA", "false")
        .env("NO_PROXY", "127.0.0.1,localhost")
        .env("HOME", config.parent().unwrap())
        .envs(env.iter().cloned())
        .stdin(Stdio::null());
    command
}

/// Runs `script` `requests` times; each must print `200`. Returns each wall time.
fn time_requests(
    what: &str,
    script: &str,
    requests: usize,
    config: &Path,
    env: &[(String, String)],
) -> Vec<Duration> {
    (0..requests)
        .map(|_| {
            let started = Instant::now();
            let output = shell(script, config, env).output().unwrap();
            let elapsed = started.elapsed();
            assert!(
                output.status.success() && output.stdout == b"200",
                "{what}: expected 200, got: {}",
                // The seed's stderr could only hold gcloud's messages, never a token.
                output_text(&output)
            );
            elapsed
        })
        .collect()
}

fn summary(times: &[Duration]) -> (Duration, Duration) {
    let total: Duration = times.iter().sum();
    let mut sorted = times.to_vec();
    sorted.sort();
    (total, sorted[sorted.len() / 2])
}

#[test]
fn cloudrun_test_curl_is_much_faster_than_the_seed_one_liner() {
    if !cloudrun_test_e2e::tier::gcloud() || !cloudrun_test_e2e::tier::tool("curl") {
        return;
    }
    let requests: usize = std::env::var("CLOUDRUN_TEST_BENCH_REQUESTS")
        .ok()
        .and_then(|count| count.parse().ok())
        .filter(|count| *count > 0)
        .unwrap_or(2);
    let emulator = Emulator::builder()
        .service(ServiceConfig::new("hello").invoker(&format!("serviceAccount:{TESTER}")))
        .start()
        .unwrap();
    let url = emulator.service_url("hello").unwrap();
    let audience = url.origin().ascii_serialization();
    let folder = tempfile::tempdir().unwrap();
    let config = folder.path().join("gcloud");
    let key = emulator
        .write_service_account_key(TESTER, folder.path())
        .unwrap();

    // Setup, not timed: gcloud activates the key (its token_uri is the emulator).
    let gcloud = gcloud_program();
    let activation = shell(
        &format!(
            "\"{gcloud}\" auth activate-service-account --key-file \"$KEY\" --verbosity=error"
        ),
        &config,
        &[("KEY".into(), key.display().to_string())],
    )
    .output()
    .unwrap_or_else(|error| {
        panic!("this benchmark runs the real gcloud CLI, and starting `sh` failed: {error}")
    });
    assert!(
        activation.status.success(),
        "`{gcloud} auth activate-service-account` failed (is the Google Cloud SDK installed? \
         set CLOUDRUN_TEST_GCLOUD to its gcloud): {}",
        output_text(&activation)
    );

    emulator.reset_stats();
    let seed = format!(
        "curl -s -o /dev/null -w '%{{http_code}}' -H \"Authorization: Bearer $(\"{gcloud}\" auth \
         print-identity-token --audiences={audience})\" {url}"
    );
    let seed_times = time_requests("seed one-liner", &seed, requests, &config, &[]);
    let seed_mints = emulator.stats().id_tokens_minted;

    emulator.reset_stats();
    let ours = format!("\"{BIN}\" curl {url} -s -o /dev/null -w '%{{http_code}}'");
    let env = [
        (
            "GOOGLE_APPLICATION_CREDENTIALS".to_string(),
            key.display().to_string(),
        ),
        (
            // A cold cache of its own: the first request mints.
            "CLOUDRUN_TEST_CACHE_DIR".to_string(),
            folder.path().join("cache").display().to_string(),
        ),
    ];
    let our_times = time_requests("cloudrun-test curl", &ours, requests, &config, &env);
    let our_mints = emulator.stats().id_tokens_minted;

    let (seed_total, seed_median) = summary(&seed_times);
    let (our_total, our_median) = summary(&our_times);
    let ratio = seed_total.as_secs_f64() / our_total.as_secs_f64();
    eprintln!(
        "\n{requests} requests each to {url}\n\
         | workflow | total | median per request | tokens minted |\n\
         |---|---|---|---|\n\
         | seed: curl + $(gcloud auth print-identity-token) | {:.2} s | {:.0} ms | {seed_mints} |\n\
         | cloudrun-test curl | {:.2} s | {:.1} ms | {our_mints} |\n\
         wall-time ratio (seed / cloudrun-test curl): {ratio:.1}x\n\
         seed per request: {seed_times:.0?}\nours per request: {our_times:.1?}",
        seed_total.as_secs_f64(),
        seed_median.as_secs_f64() * 1e3,
        our_total.as_secs_f64(),
        our_median.as_secs_f64() * 1e3,
    );
    assert_eq!(
        our_mints, 1,
        "cloudrun-test curl mints once, then reads the disk cache"
    );
    // Loose on purpose: CI machines are noisy; BENCHMARKS.md has the measured ratio.
    assert!(
        ratio > 2.0,
        "cloudrun-test curl should be far faster than gcloud + curl; ratio {ratio:.1}"
    );
}
