//! One run of curl for one URL.
//!
//! The header line with the token travels through a pipe that curl reads as
//! `-H @/dev/fd/N` (with the checked lines of the user's `-H @FILE`): no argument,
//! environment variable or file holds the token, and nothing is left behind if
//! either process is killed. The token is in hand before curl starts: a curl started
//! earlier would send its request without the token if this process died while
//! fetching it (the pipe would end empty). Standard input stays the user's (for
//! `-d @-`). The response headers come back through a second pipe (`-D /dev/fd/M`,
//! unless the user asked for `-D`), to explain a 401 or 403 and to follow redirects.
//! curl gets `-q` first (no `.curlrc`), `--globoff` (the URL is one URL, not a
//! pattern), and an environment without proxy settings, a TLS key log or the token's
//! variable: the proxy, if any, is the one the library's rules pick.

use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

use cloudrun_test::Url;

use super::redact::copy_redacted;
use super::redirect::{Head, final_head};

/// The only variables curl gets from ours: where programs are, the locale and the
/// terminal, and which certificate authorities to trust (as `--cacert` may). curl also
/// reads a config folder, proxies (the library's rules choose the proxy, below) and a
/// TLS key log (`SSLKEYLOGFILE`: whoever holds it and a capture reads the token) from
/// its environment; an allowlist also keeps out whatever a later curl learns to read.
const KEPT_IN_ENVIRONMENT: &[&str] = &[
    "PATH",
    "HOME",
    "TMPDIR",
    "TZ",
    "TERM",
    "COLUMNS",
    "LANG",
    "LANGUAGE",
    "LC_ALL",
    "LC_CTYPE",
    "LC_MESSAGES",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
    "CURL_CA_BUNDLE",
];

/// What a pipe holds before its writer blocks, on any Linux or macOS (one page, even
/// when the user's pipe memory is used up).
const PIPE_BUFFER_AT_LEAST: usize = 4096;

/// Decides, from the final response's head, whether curl's standard output is
/// dropped (a redirect that will be followed, whose body curl's -L would not show).
pub type OutputGate = Box<dyn FnOnce(&Head) -> bool + Send>;

/// One request.
pub struct Hop<'a> {
    pub program: &'a Path,
    pub url: &'a Url,
    /// The user's checked options.
    pub options: Vec<String>,
    /// The header lines curl reads from our pipe: `Name: Bearer TOKEN\n` if there is a
    /// token, then those of the user's `-H @FILE`, checked.
    pub header: Option<&'a str>,
    /// The token, redacted from curl's stderr when `verbose`.
    pub secret: Option<&'a str>,
    pub verbose: bool,
    /// Add our own `-D` pipe (the user gave none).
    pub dump: bool,
    pub proxy: Option<&'a Url>,
    /// `Some`: curl's stdout goes through us, dropped when the gate says so.
    pub gate: Option<OutputGate>,
}

pub struct Ran {
    pub status: ExitStatus,
    /// What curl wrote to our `-D` pipe (empty without one).
    pub headers: Vec<u8>,
}

pub fn run(hop: Hop) -> Result<Ran, String> {
    let mut command = Command::new(hop.program);
    // As a shell would name it (`ps` shows `curl ...`); the path is found by our caller.
    if let Some(name) = hop.program.file_name() {
        command.arg0(name);
    }
    command.env_clear();
    for name in KEPT_IN_ENVIRONMENT {
        if let Some(value) = std::env::var_os(name) {
            command.env(name, value);
        }
    }
    // Only effective as curl's first argument.
    command.args(["-q", "--globoff"]);
    match hop.proxy {
        // In the environment, not the arguments: a proxy URL may hold a password.
        Some(proxy) => {
            command.env("HTTPS_PROXY", proxy.as_str());
            command.arg("--suppress-connect-headers");
        }
        None => {
            command.args(["--noproxy", "*"]);
        }
    }

    let pipe = || io::pipe().map_err(|error| format!("creating a pipe for curl failed: {error}"));
    // The ends curl gets, as inheritable copies: dropped as soon as curl has started.
    let mut for_curl = Vec::new();
    let mut header_pipe = None;
    if let Some(header) = hop.header {
        let (reader, mut writer) = pipe()?;
        let copy = inheritable(&reader)?;
        command.args(["-H", &format!("@/dev/fd/{}", copy.as_raw_fd())]);
        for_curl.push(copy);
        // Whole lines that fit in any pipe's buffer (the token's does) go in before curl
        // starts: a curl that finds the pipe empty and closed, because this process died,
        // would send its request without them. The rest, from a thread, as curl reads.
        let (now, later) = split_for_pipe(header);
        writer
            .write_all(now.as_bytes())
            .map_err(|error| format!("writing curl's header lines to its pipe failed: {error}"))?;
        header_pipe = Some((writer, later.to_owned()));
    }
    let mut dump = None;
    if hop.dump {
        let (reader, writer) = pipe()?;
        let copy = inheritable(&writer)?;
        command.args(["-D", &format!("/dev/fd/{}", copy.as_raw_fd())]);
        for_curl.push(copy);
        dump = Some(reader);
    }
    command.arg(hop.url.as_str());
    command.args(&hop.options);
    let redact = hop.verbose && hop.secret.is_some();
    if redact {
        command.stderr(Stdio::piped());
    }
    if hop.gate.is_some() {
        command.stdout(Stdio::piped());
    }
    tracing::debug!(
        url = %hop.url,
        via = if hop.secret.is_some() { "a pipe (-H @/dev/fd/N)" } else { "nothing: no token" },
        proxy = hop.proxy.map(|proxy| proxy.origin().ascii_serialization()),
        "running curl"
    );
    // The caller found the program, so "not found" here is about its `#!` interpreter.
    let mut child = command.spawn().map_err(|error| {
        let program = hop.program.display();
        match error.kind() {
            io::ErrorKind::NotFound if hop.program.exists() => format!(
                "starting curl (`{program}`) failed: {error}; the file is there, so the \
                 interpreter on its `#!` line may be missing"
            ),
            _ => format!("starting curl (`{program}`) failed: {error}"),
        }
    })?;
    // curl holds the only copies of its ends now: end of file when it exits.
    drop(for_curl);
    // curl reads up to end of file: the writer is dropped at the end. An error means
    // curl exited first, and its status tells why.
    let header_writer = header_pipe.and_then(|(mut writer, later)| {
        (!later.is_empty()).then(|| {
            std::thread::spawn(move || {
                let _ = writer.write_all(later.as_bytes());
            })
        })
    });
    // Ctrl-C reaches curl (same process group): let it decide, then report its status.
    let previous = ignore_interrupts();

    let (decision_tx, decision_rx) = mpsc::channel();
    // Without a gate, nothing else waits on curl's output: the header dump is read
    // here, to its end (curl's exit), without a thread.
    let mut headers_read_here = None;
    let headers: Option<JoinHandle<Vec<u8>>> = dump.and_then(|reader| match hop.gate {
        Some(gate) => Some(std::thread::spawn(move || {
            read_headers(reader, Some((gate, decision_tx)))
        })),
        None => {
            headers_read_here = Some(reader);
            None
        }
    });
    let output = child
        .stdout
        .take()
        .map(|stdout| std::thread::spawn(move || copy_gated(stdout, decision_rx)));
    let redactor = match (child.stderr.take(), hop.secret) {
        (Some(stderr), Some(secret)) if redact => {
            let secret = secret.to_owned();
            Some(std::thread::spawn(move || {
                copy_redacted(stderr, &secret, io::stderr())
            }))
        }
        _ => None,
    };
    let headers_here = headers_read_here.map(|reader| read_headers(reader, None));
    let status = child.wait();
    restore_interrupts(previous);
    let status = status.map_err(|error| format!("waiting for curl failed: {error}"))?;
    if let Some(writer) = header_writer {
        let _ = writer.join();
    }
    if let Some(redactor) = redactor {
        let _ = redactor.join();
    }
    let headers = headers_here
        .or_else(|| headers.and_then(|thread| thread.join().ok()))
        .unwrap_or_default();
    if let Some(output) = output {
        let _ = output.join();
    }
    Ok(Ran { status, headers })
}

/// `header` as what goes into curl's pipe before it starts (whole lines, at most what
/// any pipe holds) and the rest.
fn split_for_pipe(header: &str) -> (&str, &str) {
    if header.len() <= PIPE_BUFFER_AT_LEAST {
        return (header, "");
    }
    let end = header.as_bytes()[..PIPE_BUFFER_AT_LEAST]
        .iter()
        .rposition(|byte| *byte == b'\n')
        .map_or(0, |newline| newline + 1);
    header.split_at(end)
}

/// A copy of a pipe end without close-on-exec, for curl to inherit: curl is started
/// without running code in the child between fork and exec (so `posix_spawn`, the
/// quicker way), and this copy is closed here as soon as curl has started. No other
/// child may inherit it: the token is fetched (the only other place that starts
/// programs: gcloud, credential helpers) before any copy exists, and nothing starts a
/// program in the background.
fn inheritable(fd: &impl AsFd) -> Result<OwnedFd, String> {
    fd.as_fd()
        .try_clone_to_owned()
        .and_then(|copy| {
            // SAFETY: a plain fcntl on a descriptor this function owns.
            match unsafe { libc::fcntl(copy.as_raw_fd(), libc::F_SETFD, 0) } {
                -1 => Err(io::Error::last_os_error()),
                _ => Ok(copy),
            }
        })
        .map_err(|error| format!("preparing a pipe for curl failed: {error}"))
}

/// Reads curl's header dump to its end; once the final head is complete, tells the
/// output copier whether to drop curl's stdout.
fn read_headers(
    mut reader: impl Read,
    mut gate: Option<(OutputGate, mpsc::Sender<bool>)>,
) -> Vec<u8> {
    let mut text = Vec::new();
    let mut buffer = [0u8; 4096];
    loop {
        let read = match reader.read(&mut buffer) {
            Ok(0) | Err(_) => break,
            Ok(read) => read,
        };
        text.extend_from_slice(&buffer[..read]);
        if gate.is_some()
            && let Some(head) = final_head(&text)
            && let Some((decide, tell)) = gate.take()
        {
            let _ = tell.send(decide(&head));
        }
    }
    // No complete head (curl could not connect, say): keep the output.
    if let Some((_, tell)) = gate {
        let _ = tell.send(false);
    }
    text
}

/// Copies curl's stdout to ours, held back until the gate's decision, then either
/// passed on or dropped.
fn copy_gated(mut from: impl Read, decision: mpsc::Receiver<bool>) {
    let mut stdout = io::stdout();
    let mut held = Vec::new();
    let mut drop_output = None;
    let mut buffer = [0u8; 8192];
    loop {
        let read = match from.read(&mut buffer) {
            Ok(0) | Err(_) => break,
            Ok(read) => read,
        };
        if drop_output.is_none() {
            // curl writes the head to the dump before the body, so the decision is
            // normally on its way; waiting briefly keeps a stream's first chunk from
            // being held until the next, and never stalls curl (its stdout is read on).
            drop_output = decision.recv_timeout(Duration::from_millis(200)).ok();
        }
        match drop_output {
            None => held.extend_from_slice(&buffer[..read]),
            Some(true) => {}
            Some(false) => {
                let chunk = [std::mem::take(&mut held).as_slice(), &buffer[..read]].concat();
                // Our stdout closed (`| head`): stop reading, so curl stops too.
                if stdout
                    .write_all(&chunk)
                    .and_then(|()| stdout.flush())
                    .is_err()
                {
                    return;
                }
            }
        }
    }
    let drop_output = drop_output.unwrap_or_else(|| decision.recv().unwrap_or(false));
    if !drop_output && !held.is_empty() {
        let _ = stdout.write_all(&held).and_then(|()| stdout.flush());
    }
}

type Dispositions = [libc::sighandler_t; 2];

fn ignore_interrupts() -> Dispositions {
    // SAFETY: plain syscalls; SIG_IGN needs no handler.
    unsafe {
        [
            libc::signal(libc::SIGINT, libc::SIG_IGN),
            libc::signal(libc::SIGQUIT, libc::SIG_IGN),
        ]
    }
}

fn restore_interrupts(previous: Dispositions) {
    // SAFETY: restores what `ignore_interrupts` found.
    unsafe {
        libc::signal(libc::SIGINT, previous[0]);
        libc::signal(libc::SIGQUIT, previous[1]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_lines_that_fit_a_pipe_go_in_whole_before_curl_starts() {
        let token = format!("Authorization: Bearer {}\n", "t".repeat(900));
        assert_eq!(split_for_pipe(&token), (token.as_str(), ""));
        let long = format!("{token}{}", "X-A: 1\n".repeat(1000));
        let (now, later) = split_for_pipe(&long);
        assert!(
            now.starts_with(&token) && now.ends_with('\n'),
            "whole lines"
        );
        assert!(now.len() <= PIPE_BUFFER_AT_LEAST);
        assert_eq!(format!("{now}{later}"), long);
        // A single line longer than a pipe's buffer: all of it from the thread.
        let huge = "X".repeat(PIPE_BUFFER_AT_LEAST + 1);
        assert_eq!(split_for_pipe(&huge), ("", huge.as_str()));
    }

    #[test]
    fn the_header_reader_decides_once_the_final_head_is_complete() {
        let (tx, rx) = mpsc::channel();
        let gate: OutputGate = Box::new(|head: &Head| head.status == 302);
        let dump = b"HTTP/1.1 302 Found\r\nLocation: /b\r\n\r\n".to_vec();
        let text = read_headers(dump.as_slice(), Some((gate, tx)));
        assert_eq!(text, dump);
        assert_eq!(rx.recv(), Ok(true));

        let (tx, rx) = mpsc::channel();
        let gate: OutputGate = Box::new(|_: &Head| true);
        read_headers(&b""[..], Some((gate, tx)));
        assert_eq!(rx.recv(), Ok(false), "no head: the output is kept");
    }
}
