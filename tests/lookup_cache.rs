//! Admin API lookups shared across processes, as `cargo nextest run` runs tests: each
//! `token-probe --service=hello` process resolves `hello` by name through the emulated
//! Admin API, as a test does, with the fixture's disk cache folder. The emulator counts
//! the lookups (`Stats::admin_lookups`) and the mints.

use std::path::PathBuf;
use std::process::Output;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use cloudrun_test_e2e::{Fixture, OUTSIDER, TESTER, isolate, output_text};
use cloudrun_test_emulator::{Emulator, ServiceConfig};
use serde_json::Value;

const PROCESSES: usize = 10;

fn fixture() -> Fixture {
    Fixture::start(
        Emulator::builder().service(
            ServiceConfig::new("hello")
                .invoker(&format!("serviceAccount:{TESTER}"))
                .invoker(&format!("serviceAccount:{OUTSIDER}")),
        ),
    )
}

/// One process doing what one test of `hello` does, with `env` as its settings.
fn probe(env: &[(String, String)]) -> Output {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_token-probe"));
    isolate(&mut command);
    command.arg("--service=hello").envs(env.iter().cloned());
    command.output().expect("token-probe runs")
}

fn assert_passed(output: &Output) {
    assert!(output.status.success(), "{}", output_text(output));
}

/// `PROCESSES` probes started together, each waited for.
fn concurrently(env: &[(String, String)]) {
    let children: Vec<_> = (0..PROCESSES)
        .map(|_| {
            let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_token-probe"));
            isolate(&mut command);
            command
                .arg("--service=hello")
                .envs(env.iter().cloned())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped());
            command.spawn().expect("token-probe starts")
        })
        .collect();
    for child in children {
        assert_passed(&child.wait_with_output().unwrap());
    }
}

fn sequentially(env: &[(String, String)]) {
    for _ in 0..PROCESSES {
        assert_passed(&probe(env));
    }
}

fn cache_dir(env: &[(String, String)]) -> PathBuf {
    let (_, dir) = env
        .iter()
        .find(|(name, _)| name == "CLOUDRUN_TEST_CACHE_DIR")
        .unwrap();
    PathBuf::from(dir)
}

#[test]
fn processes_starting_together_or_one_by_one_look_a_service_up_once() {
    let fixture = fixture();
    let env = fixture.environment(TESTER);
    concurrently(&env);
    sequentially(&env);
    let stats = fixture.emulator.stats();
    assert_eq!(stats.admin_lookups, 1, "{stats:?}");
    assert_eq!(stats.id_tokens_minted, 1, "{stats:?}");
    // The access token is needed by the lookup only.
    assert_eq!(stats.access_tokens_minted, 1, "{stats:?}");
    assert_eq!(stats.front_accepted, 2 * PROCESSES as u64, "{stats:?}");
}

#[test]
fn another_identity_looks_up_for_itself() {
    let fixture = fixture();
    let tester = fixture.environment(TESTER);
    let mut outsider = fixture.environment(OUTSIDER);
    // The same cache folder for both.
    outsider.retain(|(name, _)| name != "CLOUDRUN_TEST_CACHE_DIR");
    outsider.push((
        "CLOUDRUN_TEST_CACHE_DIR".into(),
        cache_dir(&tester).display().to_string(),
    ));
    for env in [&tester, &outsider, &tester, &outsider] {
        assert_passed(&probe(env));
    }
    let stats = fixture.emulator.stats();
    assert_eq!(stats.admin_lookups, 2, "{stats:?}");
    assert_eq!(stats.id_tokens_minted, 2, "{stats:?}");
}

#[test]
fn with_the_disk_cache_off_every_process_looks_up() {
    let fixture = fixture();
    let mut env = fixture.environment(TESTER);
    env.push(("CLOUDRUN_TEST_DISK_CACHE".into(), "off".into()));
    sequentially(&env);
    let stats = fixture.emulator.stats();
    assert_eq!(stats.admin_lookups, PROCESSES as u64, "{stats:?}");
    assert_eq!(stats.id_tokens_minted, PROCESSES as u64, "{stats:?}");
}

#[test]
fn a_lookup_over_five_minutes_old_is_made_again() {
    let fixture = fixture();
    let env = fixture.environment(TESTER);
    assert_passed(&probe(&env));
    assert_passed(&probe(&env));
    assert_eq!(fixture.emulator.stats().admin_lookups, 1);

    // Age the stored lookup by hand: stored six minutes ago, expired a minute ago.
    let dir = cache_dir(&env);
    let lookups: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| {
            path.extension()
                .is_some_and(|extension| extension == "json")
                && std::fs::read(path)
                    .ok()
                    .and_then(|bytes| serde_json::from_slice::<Value>(&bytes).ok())
                    .is_some_and(|entry| entry["key"].as_str().unwrap().starts_with("lookup|"))
        })
        .collect();
    assert_eq!(lookups.len(), 1, "one stored lookup in {}", dir.display());
    let mut entry: Value = serde_json::from_slice(&std::fs::read(&lookups[0]).unwrap()).unwrap();
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    let six_minutes_ago = (now - Duration::from_secs(360)).as_secs();
    entry["issued_at"] = six_minutes_ago.into();
    entry["expires_at"] = (six_minutes_ago + 300).into();
    std::fs::write(&lookups[0], entry.to_string()).unwrap();

    assert_passed(&probe(&env));
    assert_eq!(fixture.emulator.stats().admin_lookups, 2);
    // Replaced by a fresh one, which the next process is served.
    assert_passed(&probe(&env));
    let stats = fixture.emulator.stats();
    assert_eq!(stats.admin_lookups, 2, "{stats:?}");
    assert_eq!(stats.id_tokens_minted, 1, "{stats:?}");
}
