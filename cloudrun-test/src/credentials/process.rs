//! Running a helper program (gcloud, an `executable` credential source) with a time
//! limit and a limit on what it prints ([`OUTPUT_LIMIT`] a stream), off the async
//! runtime's workers, capturing its output.
//!
//! Nothing secret goes on a command line: tokens come back on stdout.

use std::io::Read;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::bounded::{self, OUTPUT_LIMIT, ReadError};

pub(crate) struct Finished {
    pub(crate) status: ExitStatus,
    pub(crate) stdout: Vec<u8>,
    pub(crate) stderr: Vec<u8>,
}

pub(crate) enum RunError {
    /// The program could not be started.
    Spawn(std::io::Error),
    /// It ran past the limit and was killed.
    TimedOut,
    /// It printed more than [`OUTPUT_LIMIT`] on `stream` and was killed.
    TooMuchOutput { stream: &'static str },
    /// Waiting for it failed.
    Wait(String),
}

/// Runs `command` with stdin closed, killing it after `timeout`. A ready identity token
/// (`CLOUDRUN_TEST_ID_TOKEN`) is no business of a helper program: it is not passed on.
pub(crate) async fn run(mut command: Command, timeout: Duration) -> Result<Finished, RunError> {
    command
        .env_remove("CLOUDRUN_TEST_ID_TOKEN")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let waited = tokio::task::spawn_blocking(move || {
        let mut child = command.spawn().map_err(RunError::Spawn)?;
        // Read both pipes while the program runs, so a full pipe cannot block it; a
        // reader that passes the limit raises its flag, and the program is stopped.
        let (out_overflow, err_overflow) = (Arc::default(), Arc::default());
        let out = read_limited(child.stdout.take(), &out_overflow);
        let err = read_limited(child.stderr.take(), &err_overflow);
        // A limit too large for the clock is no limit.
        let deadline = Instant::now().checked_add(timeout);
        let mut pause = Duration::from_millis(2);
        let status = loop {
            for (overflow, stream) in [(&out_overflow, "stdout"), (&err_overflow, "stderr")] {
                if overflow.load(Ordering::SeqCst) {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(RunError::TooMuchOutput { stream });
                }
            }
            match child.try_wait() {
                Ok(Some(status)) => break status,
                Ok(None) if deadline.is_some_and(|deadline| Instant::now() >= deadline) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    // The reader threads end when the pipes close; a grandchild holding
                    // them open only delays those threads, not us.
                    return Err(RunError::TimedOut);
                }
                Ok(None) => {
                    std::thread::sleep(pause);
                    pause = (pause * 2).min(Duration::from_millis(25));
                }
                Err(error) => {
                    let _ = child.kill();
                    return Err(RunError::Wait(error.to_string()));
                }
            }
        };
        let (stdout, stderr) = (out.join(), err.join());
        match (stdout, stderr) {
            (Ok(Some(stdout)), Ok(Some(stderr))) => Ok(Finished {
                status,
                stdout,
                stderr,
            }),
            // It printed past the limit just before it ended.
            (Ok(None), _) => Err(RunError::TooMuchOutput { stream: "stdout" }),
            (_, Ok(None)) => Err(RunError::TooMuchOutput { stream: "stderr" }),
            _ => Err(RunError::Wait("reading its output failed".into())),
        }
    })
    .await;
    waited.unwrap_or_else(|error| Err(RunError::Wait(error.to_string())))
}

/// Reads `pipe` to its end on a thread of its own: its bytes, or `None` (and
/// `overflow` raised) past [`OUTPUT_LIMIT`], when it stops reading.
fn read_limited(
    pipe: Option<impl Read + Send + 'static>,
    overflow: &Arc<AtomicBool>,
) -> std::thread::JoinHandle<Option<Vec<u8>>> {
    // Dropping the pipe when the limit is passed makes the program's next write fail.
    let overflow = Arc::clone(overflow);
    std::thread::spawn(move || {
        let Some(pipe) = pipe else {
            return Some(Vec::new());
        };
        match bounded::read_to_end(pipe, OUTPUT_LIMIT) {
            Ok(bytes) => Some(bytes),
            Err(ReadError::TooLarge { .. }) => {
                overflow.store(true, Ordering::SeqCst);
                None
            }
            // A read error ends the output: what the program exits with tells the rest.
            Err(ReadError::Io(_)) => Some(Vec::new()),
        }
    })
}

/// The problem of a program that printed too much, for a message.
pub(crate) fn too_much_output(program: &str, stream: &str) -> String {
    format!(
        "{program} printed more than {} on {stream} and was stopped",
        bounded::size(OUTPUT_LIMIT)
    )
}

/// The last few lines of a program's stderr, for an error message, with anything
/// token-like removed.
pub(crate) fn stderr_tail(stderr: &[u8]) -> String {
    // Redacted whole before the tail is taken: a private key's `-----BEGIN` line may be
    // above the tail, and a cut may hide the name that marks a secret.
    // (`\r\n` read as line ends first: redaction shows a lone `\r` as an escape.)
    let text = super::wire::redact(&String::from_utf8_lossy(stderr).replace("\r\n", "\n"));
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .collect();
    let tail = &lines[lines.len().saturating_sub(4)..];
    if tail.is_empty() {
        "nothing on stderr".to_owned()
    } else {
        super::wire::truncate(&tail.join(" | "), 600).to_owned()
    }
}

/// `name` in one of `PATH`'s folders, as a shell would find it.
pub(crate) fn find_on_path(name: &str) -> Option<std::path::PathBuf> {
    find_in(&std::env::var_os("PATH")?, name)
}

/// `name` in one of the folders of `path` (a `PATH` value).
fn find_in(path: &std::ffi::OsStr, name: &str) -> Option<std::path::PathBuf> {
    std::env::split_paths(path)
        .flat_map(|dir| candidates(&dir, name))
        .find(|candidate| is_executable(candidate))
}

#[cfg(unix)]
fn candidates(dir: &std::path::Path, name: &str) -> Vec<std::path::PathBuf> {
    vec![dir.join(name)]
}

/// On Windows a command is found with one of `PATHEXT`'s extensions: gcloud is
/// `gcloud.cmd` there (std runs a `.cmd` through cmd.exe, its arguments escaped).
#[cfg(windows)]
fn candidates(dir: &std::path::Path, name: &str) -> Vec<std::path::PathBuf> {
    let extensions = std::env::var("PATHEXT").unwrap_or_else(|_| ".COM;.EXE;.BAT;.CMD".into());
    extensions
        .split(';')
        .filter(|extension| !extension.is_empty())
        .map(|extension| dir.join(format!("{name}{extension}")))
        .collect()
}

#[cfg(unix)]
fn is_executable(path: &std::path::Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .map(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// Windows has no execute bit: a file with a `PATHEXT` extension runs.
#[cfg(windows)]
fn is_executable(path: &std::path::Path) -> bool {
    path.is_file()
}

#[cfg(all(test, windows))]
mod windows_tests {
    #[test]
    fn a_command_is_found_with_its_pathext_extension() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("tool.cmd"), "@echo off").unwrap();
        std::fs::write(dir.path().join("other"), "").unwrap();
        let path = std::env::join_paths([dir.path()]).unwrap();
        let found = super::find_in(&path, "tool").unwrap();
        assert!(
            found.to_string_lossy().to_lowercase().ends_with("tool.cmd"),
            "{}",
            found.display()
        );
        assert_eq!(super::find_in(&path, "other"), None);
    }
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;

    #[test]
    fn only_executable_files_are_found_on_the_path() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        for (name, mode) in [("tool", 0o755), ("plain", 0o644)] {
            std::fs::write(dir.path().join(name), "").unwrap();
            std::fs::set_permissions(dir.path().join(name), std::fs::Permissions::from_mode(mode))
                .unwrap();
        }
        let path = std::env::join_paths([dir.path()]).unwrap();
        assert_eq!(find_in(&path, "tool"), Some(dir.path().join("tool")));
        assert_eq!(find_in(&path, "plain"), None);
        assert_eq!(find_in(&path, "missing"), None);
    }

    fn shell(script: &str) -> Command {
        let mut command = Command::new("/bin/sh");
        command.args(["-c", script]);
        command
    }

    #[tokio::test]
    async fn a_program_printing_without_end_is_stopped_at_the_limit() {
        for (script, expected) in [("exec yes", "stdout"), ("exec yes >&2", "stderr")] {
            let started = Instant::now();
            match run(shell(script), Duration::from_secs(30)).await {
                Err(RunError::TooMuchOutput { stream }) => assert_eq!(stream, expected),
                Err(_) => panic!("{script}: another error"),
                Ok(_) => panic!("{script}: finished"),
            }
            assert!(started.elapsed() < Duration::from_secs(20), "{script}");
        }
        // Just under the limit is fine.
        let finished = run(shell("head -c 1048576 /dev/zero"), Duration::from_secs(30)).await;
        assert!(finished.is_ok_and(|finished| finished.stdout.len() == 1 << 20));
    }

    #[tokio::test]
    async fn a_ready_token_is_not_passed_to_the_program() {
        let mut command = shell("printf '%s' \"${CLOUDRUN_TEST_ID_TOKEN-unset}:$KEPT\"");
        command
            .env("CLOUDRUN_TEST_ID_TOKEN", "eyJ.canary.token")
            .env("KEPT", "kept");
        let finished = run(command, Duration::from_secs(30)).await;
        assert!(finished.is_ok_and(|finished| finished.stdout == b"unset:kept"));
    }

    #[tokio::test]
    async fn a_time_limit_too_large_for_the_clock_is_no_limit() {
        let finished = run(shell("echo done"), Duration::MAX).await;
        assert!(finished.is_ok_and(|finished| finished.stdout == b"done\n"));
    }
}
