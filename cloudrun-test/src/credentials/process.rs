//! Running a helper program (gcloud, an `executable` credential source) with a time
//! limit, off the async runtime's workers, capturing its output.
//!
//! Nothing secret goes on a command line: tokens come back on stdout.

use std::io::Read;
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

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
    /// Waiting for it failed.
    Wait(String),
}

/// Runs `command` with stdin closed, killing it after `timeout`.
pub(crate) async fn run(mut command: Command, timeout: Duration) -> Result<Finished, RunError> {
    command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let waited = tokio::task::spawn_blocking(move || {
        let mut child = command.spawn().map_err(RunError::Spawn)?;
        let mut stdout = child.stdout.take();
        let mut stderr = child.stderr.take();
        // Read both pipes while the program runs, so a full pipe cannot block it.
        let out = std::thread::spawn(move || {
            let mut text = Vec::new();
            if let Some(pipe) = stdout.as_mut() {
                let _ = pipe.read_to_end(&mut text);
            }
            text
        });
        let err = std::thread::spawn(move || {
            let mut text = Vec::new();
            if let Some(pipe) = stderr.as_mut() {
                let _ = pipe.read_to_end(&mut text);
            }
            text
        });
        let deadline = Instant::now() + timeout;
        let mut pause = Duration::from_millis(2);
        let status = loop {
            match child.try_wait() {
                Ok(Some(status)) => break status,
                Ok(None) if Instant::now() >= deadline => {
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
        Ok(Finished {
            status,
            stdout: out.join().unwrap_or_default(),
            stderr: err.join().unwrap_or_default(),
        })
    })
    .await;
    waited.unwrap_or_else(|error| Err(RunError::Wait(error.to_string())))
}

/// The last few lines of a program's stderr, for an error message, with anything
/// token-like removed.
pub(crate) fn stderr_tail(stderr: &[u8]) -> String {
    let text = String::from_utf8_lossy(stderr);
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .collect();
    let tail = &lines[lines.len().saturating_sub(4)..];
    if tail.is_empty() {
        "nothing on stderr".to_owned()
    } else {
        super::wire::redact(super::wire::truncate(&tail.join(" | "), 600))
    }
}

/// `name` in one of `PATH`'s folders, as a shell would find it.
pub(crate) fn find_on_path(name: &str) -> Option<std::path::PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| is_executable(candidate))
}

fn is_executable(path: &std::path::Path) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(path)
            .map(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
            .unwrap_or(false)
    }
    #[cfg(not(unix))]
    {
        path.is_file()
    }
}
