//! The two test tiers, and tests that need a program the machine may not have.
//!
//! `cargo test --workspace` is the quick tier. `cargo test-slow` (an alias in
//! `.cargo/config.toml`) is the slow tier: the test targets marked `test = false` in
//! their manifests, which the quick tier neither builds nor runs, and the few slow tests
//! inside quick targets, which start with `if !tier::slow() { return; }`.
//!
//! A test that needs a program that is not installed (gcloud, cargo-nextest, python3...)
//! says it was skipped and returns, except under `CI=true`, where it fails: CI must run
//! every test. libtest still counts a skipped test as passed, so the message goes
//! straight to stderr, past libtest's capture of passing tests' output.
//!
//! The emulator's tests include this file by path (`#[path]`): keep it to `std`.

use std::io::Write as _;
use std::path::{Path, PathBuf};

/// Set to `slow` by `cargo test-slow`, for the slow tests inside quick targets.
pub const TIER_VARIABLE: &str = "CLOUDRUN_TEST_TIER";

/// Whether the slow tier is running; if not, says the test was skipped.
pub fn slow() -> bool {
    if std::env::var(TIER_VARIABLE).is_ok_and(|tier| tier == "slow") {
        return true;
    }
    skipped("slow tier only (`cargo test-slow` runs it)");
    false
}

/// Whether `program` (a name looked up on `PATH`, or a path) is installed; if not, says
/// the test was skipped, or fails it under `CI=true`.
pub fn tool(program: &str) -> bool {
    tool_in_ci(program, std::env::var("CI").is_ok_and(|ci| ci == "true"))
}

/// [`tool`], with whether CI runs the test given.
pub fn tool_in_ci(program: &str, ci: bool) -> bool {
    if find(program).is_some() {
        return true;
    }
    if ci {
        panic!("{program} not found, and CI=true: CI runs every test (.ci/run installs it)");
    }
    skipped(&format!("{program} not found"));
    false
}

/// [`tool`] for the gcloud the tests run: `CLOUDRUN_TEST_GCLOUD`, else `gcloud`.
pub fn gcloud() -> bool {
    tool(&std::env::var("CLOUDRUN_TEST_GCLOUD").unwrap_or_else(|_| "gcloud".to_owned()))
}

fn skipped(why: &str) {
    // libtest names each test's thread after the test.
    let thread = std::thread::current();
    let test = thread.name().unwrap_or("this test");
    let _ = writeln!(std::io::stderr(), "skipped: {why} ({test})");
}

fn find(program: &str) -> Option<PathBuf> {
    if program.contains(std::path::MAIN_SEPARATOR) || program.contains('/') {
        return Some(PathBuf::from(program)).filter(|path| runnable(path));
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|folder| folder.join(program))
        .find(|candidate| runnable(candidate))
}

fn runnable(path: &Path) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        path.metadata()
            .is_ok_and(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
    }
    #[cfg(not(unix))]
    {
        path.is_file() || path.with_extension("exe").is_file()
    }
}
