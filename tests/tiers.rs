//! The two test tiers leave no test out. `cargo test --workspace` runs the test targets
//! whose manifests leave `test` on; `cargo test-slow` (an alias in .cargo/config.toml)
//! runs the targets it names. So every `test = false` target must be named there, and
//! so must every quick target holding a slow test (one that calls `tier::slow`), which
//! the quick tier skips. Also how a test whose tool is missing behaves (`tier::tool`).

use std::collections::BTreeSet;
use std::path::Path;

use cloudrun_test_e2e::{cargo_command, output_text, workspace_root};
use serde_json::Value;

/// What a slow test in a quick target calls (in two parts, so this file is not one).
const SLOW_TEST: &str = concat!("tier::", "slow()");

/// The `--test` and `--bench` targets of `cargo test-slow`.
fn slow_tier() -> (BTreeSet<String>, BTreeSet<String>) {
    let path = workspace_root().join(".cargo/config.toml");
    let config: toml::Table = std::fs::read_to_string(&path).unwrap().parse().unwrap();
    let args: Vec<&str> = config["alias"]["test-slow"]
        .as_array()
        .expect("the test-slow alias is a list")
        .iter()
        .map(|arg| arg.as_str().unwrap())
        .collect();
    let named = |flag: &str| -> BTreeSet<String> {
        args.windows(2)
            .filter(|pair| pair[0] == flag)
            .map(|pair| pair[1].to_owned())
            .collect()
    };
    (named("--test"), named("--bench"))
}

struct Target {
    name: String,
    kind: String,
    tested: bool,
    source: String,
}

/// Every target of the workspace's packages, as `cargo metadata` reports them.
fn targets() -> Vec<Target> {
    let output = cargo_command(&[
        "metadata",
        "--no-deps",
        "--format-version",
        "1",
        "--offline",
    ])
    .current_dir(workspace_root())
    .output()
    .unwrap();
    assert!(output.status.success(), "{}", output_text(&output));
    let metadata: Value = serde_json::from_slice(&output.stdout).unwrap();
    let mut targets = Vec::new();
    for package in metadata["packages"].as_array().unwrap() {
        for target in package["targets"].as_array().unwrap() {
            let path = Path::new(target["src_path"].as_str().unwrap());
            // A test in a folder (`tests/hostile/main.rs`) is every file in it.
            let files: Vec<_> = if path.ends_with("main.rs") {
                std::fs::read_dir(path.parent().unwrap())
                    .unwrap()
                    .map(|entry| entry.unwrap().path())
                    .collect()
            } else {
                vec![path.to_owned()]
            };
            targets.push(Target {
                name: target["name"].as_str().unwrap().to_owned(),
                kind: target["kind"][0].as_str().unwrap().to_owned(),
                tested: target["test"].as_bool().unwrap(),
                source: files
                    .iter()
                    .filter_map(|file| std::fs::read_to_string(file).ok())
                    .collect(),
            });
        }
    }
    targets
}

#[test]
fn every_test_target_runs_in_one_tier_or_both() {
    let (slow_tests, slow_benches) = slow_tier();
    let targets = targets();
    for target in targets.iter().filter(|target| target.kind == "test") {
        if !target.tested {
            assert!(
                slow_tests.contains(&target.name),
                "test target `{}` has `test = false`, so `cargo test` skips it, and \
                 `cargo test-slow` does not name it (.cargo/config.toml): it runs in no tier",
                target.name
            );
        } else if target.source.contains(SLOW_TEST) {
            assert!(
                slow_tests.contains(&target.name),
                "test target `{}` has slow tests (calling `tier::slow`), which the quick tier \
                 skips, and `cargo test-slow` does not name it (.cargo/config.toml)",
                target.name
            );
        }
    }
    // `--test NAME` selects that name in every package: each must be one target.
    for (names, kind) in [(&slow_tests, "test"), (&slow_benches, "bench")] {
        for name in names {
            let found = targets
                .iter()
                .filter(|target| target.kind == kind && &target.name == name)
                .count();
            assert_eq!(
                found, 1,
                "`cargo test-slow --{kind} {name}`: {found} targets"
            );
        }
    }
}

#[test]
fn a_missing_tool_skips_the_test_locally() {
    assert!(!cloudrun_test_e2e::tier::tool_in_ci(
        "no-such-tool-7f3e",
        false
    ));
}

#[test]
#[should_panic(expected = "no-such-tool-7f3e not found, and CI=true")]
fn a_missing_tool_fails_the_test_in_ci() {
    cloudrun_test_e2e::tier::tool_in_ci("no-such-tool-7f3e", true);
}

#[test]
fn a_tool_is_found_on_path_or_by_its_path() {
    let this = std::env::current_exe().unwrap();
    assert!(cloudrun_test_e2e::tier::tool_in_ci(
        this.to_str().unwrap(),
        true
    ));
    // `sh` is on PATH wherever these tests run (they start it).
    assert!(cloudrun_test_e2e::tier::tool_in_ci("sh", true));
    let folder = tempfile::tempdir().unwrap();
    let not_executable = folder.path().join("tool");
    std::fs::write(&not_executable, "").unwrap();
    assert!(!cloudrun_test_e2e::tier::tool_in_ci(
        not_executable.to_str().unwrap(),
        false
    ));
}
