//! The `#[cloudrun_test]` attribute at compile time: misuses fail with a clear
//! message on the user's tokens, valid uses compile.
//!
//! - `tests/ui/*.rs`: errors the macro reports itself (trybuild `compile_fail`).
//! - `tests/ui-pass/*.rs`: valid uses (trybuild `pass`: built, and `main` run).
//! - `tests/ui/typeck/*.rs`: errors rustc finds while type-checking the expansion.
//!
//! trybuild builds its cases as plain binaries, and outside `--test` rustc drops
//! every `#[test]` function before type-checking it, so trybuild alone never sees
//! the expansion's body. [`as_tests`] then also compiles every case as a test
//! target.
//!
//! Bless new expected output with `TRYBUILD=overwrite`, then read every `.stderr`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::{env, fs};

#[test]
fn ui() {
    let cases = trybuild::TestCases::new();
    cases.compile_fail("tests/ui/*.rs");
    cases.pass("tests/ui-pass/*.rs");
    // trybuild runs when dropped; `as_tests` reads the `.stderr` it may overwrite.
    drop(cases);
    as_tests();
}

/// Every case compiled as a test target of a generated package (`cargo check
/// --test`), where the `#[test]` function is type-checked:
/// - `ui/`: exactly the errors trybuild saw, so the function the macro still emits
///   on a misuse (for the IDE) adds no error of its own;
/// - `ui/typeck/`: the errors in its `.stderr`;
/// - `ui-pass/`: no diagnostic at all.
fn as_tests() {
    let crate_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let groups = [
        ("ui", rust_files(&crate_dir.join("tests/ui"))),
        ("typeck", rust_files(&crate_dir.join("tests/ui/typeck"))),
        ("pass", rust_files(&crate_dir.join("tests/ui-pass"))),
    ];

    let project = Path::new(env!("CARGO_TARGET_TMPDIR")).join("cloudrun-test-as-tests");
    fs::create_dir_all(&project).unwrap();
    let mut manifest = format!(
        "[package]\nname = \"cloudrun-test-as-tests\"\nversion = \"0.0.0\"\n\
         edition = \"2024\"\npublish = false\nautotests = false\n\n\
         [dependencies]\ncloudrun-test = {{ path = {:?} }}\n\
         rstest = {{ version = \"0.29\", default-features = false }}\n\
         test-case = \"3.4\"\n\n[workspace]\n",
        crate_dir.display().to_string()
    );
    for (group, cases) in &groups {
        for case in cases {
            manifest.push_str(&format!(
                "\n[[test]]\nname = \"{}\"\npath = {:?}\n",
                target_name(group, case),
                case.display().to_string()
            ));
        }
    }
    fs::write(project.join("Cargo.toml"), manifest).unwrap();
    // The workspace's lock file, so the dependencies resolve offline, as in the workspace.
    fs::copy(crate_dir.join("../Cargo.lock"), project.join("Cargo.lock")).unwrap();

    let overwrite = env::var_os("TRYBUILD").is_some_and(|v| v == "overwrite");
    let mut failures = Vec::new();
    for (group, cases) in &groups {
        for case in cases {
            let actual = check_as_test(&project, &target_name(group, case), case);
            let expected_path = case.with_extension("stderr");
            let expected = match *group {
                "pass" => String::new(),
                "typeck" if overwrite => {
                    fs::write(&expected_path, &actual).unwrap();
                    actual.clone()
                }
                _ => fs::read_to_string(&expected_path).unwrap_or_default(),
            };
            if actual != expected {
                failures.push(format!(
                    "{} compiled as a test: expected\n{expected}\ngot\n{actual}",
                    case.display()
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "rs"))
        .collect();
    files.sort();
    files
}

fn target_name(group: &str, case: &Path) -> String {
    format!("{group}-{}", case.file_stem().unwrap().to_str().unwrap())
}

/// The diagnostics of `cargo check --test TARGET` for the case itself, rendered
/// and normalised as trybuild does; panics if a dependency does not compile.
fn check_as_test(project: &Path, target: &str, case: &Path) -> String {
    // trybuild's target directory and flags: the dependencies it has already
    // checked are reused instead of checked a second time.
    let target_dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("../tests/trybuild");
    let output = Command::new(env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
        .current_dir(project)
        .env("CARGO_TARGET_DIR", target_dir)
        .env("CARGO_INCREMENTAL", "0")
        .env_remove("RUSTFLAGS")
        .args(["check", "--offline", "--quiet", "--message-format=json"])
        .args(["--test", target])
        .arg(r#"--config=build.rustflags=["--cfg", "trybuild", "--verbose", "-A", "dead_code"]"#)
        .output()
        .unwrap();

    let mut diagnostics = Vec::new();
    for line in String::from_utf8_lossy(&output.stdout).lines() {
        let message: serde_json::Value = serde_json::from_str(line).unwrap();
        if message["reason"] != "compiler-message" {
            continue;
        }
        let level = &message["message"]["level"];
        let text = message["message"]["message"].as_str().unwrap_or_default();
        let rendered = message["message"]["rendered"].as_str().unwrap_or_default();
        if message["target"]["name"] != target {
            assert!(
                level != "error",
                "a dependency of {} does not compile:\n{rendered}",
                case.display()
            );
        } else if level != "failure-note" && !text.starts_with("aborting due to") {
            diagnostics.push(rendered.trim_end().to_owned());
        }
    }
    assert!(
        output.status.success() || !diagnostics.is_empty(),
        "`cargo check` failed for {}:\n{}",
        case.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    if diagnostics.is_empty() {
        return String::new();
    }
    let crate_dir = env!("CARGO_MANIFEST_DIR");
    let text = format!("{}\n", diagnostics.join("\n\n"))
        .replace(&format!("{crate_dir}/tests/"), "tests/")
        .replace(
            &format!("{}/", crate_dir.trim_end_matches("/cloudrun-test")),
            "$WORKSPACE/",
        );
    hide_library_line_numbers(&text)
}

/// `$WORKSPACE/cloudrun-test/src/entry.rs:107:1` and the line numbers of the snippet
/// under it read `LL`, as in rustc's own UI tests: a line added to the library must
/// not change every expected message that quotes one of its impls.
fn hide_library_line_numbers(text: &str) -> String {
    let mut in_library = false;
    let mut lines = Vec::new();
    for line in text.lines() {
        let trimmed = line.trim_start();
        if let Some(location) = trimmed.strip_prefix("--> ") {
            in_library = location.starts_with("$WORKSPACE/");
            if in_library {
                let file = location.split(':').next().unwrap_or(location);
                let indent = &line[..line.len() - trimmed.len()];
                lines.push(format!("{indent}--> {file}:LL:CC"));
                continue;
            }
        } else if line.starts_with(|c: char| c.is_ascii_alphabetic()) {
            // `error`, `help:`, `note:`...: a new message, maybe about the user's file.
            in_library = false;
        }
        match line.split_once(" |") {
            Some((number, rest))
                if in_library
                    && !number.trim().is_empty()
                    && number.trim().bytes().all(|b| b.is_ascii_digit()) =>
            {
                lines.push(format!("{:>width$} |{rest}", "LL", width = number.len()));
            }
            _ => lines.push(line.to_owned()),
        }
    }
    lines.join("\n") + "\n"
}
