//! `cloudrun-test curl`: the system `curl` with the identity token for the URL's
//! origin attached, never on a command line.
//!
//! The header line travels through a pipe that curl reads as `-H @/dev/fd/N`: no
//! argument, environment variable or file holds the token, and nothing is left behind
//! if either process is killed. Standard input stays the user's (for `-d @-`).
//! curl's own response headers come back through a second pipe (`-D /dev/fd/M`, unless
//! the user asked for `-D` themselves) so that a 401 or 403 is explained afterwards.

use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Command, ExitCode, Stdio};
use std::thread::JoinHandle;

use cloudrun_test::{Credentials, Error, IdToken, Url};

use crate::diagnose;

/// Run the system `curl` with an identity token for URL's origin attached.
///
/// The token goes to curl through a pipe (`-H @/dev/fd/N`), never on a command line
/// or in the environment, so `ps` and shell history never see it. Everything after
/// URL is passed to curl unchanged (but for --x-serverless and --audience, which
/// curl does not have).
/// A 401 or 403 answer is explained on stderr with its fix. Exits with curl's status.
///
/// The token's audience is the URL's origin (https://SERVICE-....run.app), unless
/// --audience says otherwise. Plain http is allowed only to this machine (loopback),
/// e.g. a service behind `cloudrun-test emulate`.
///
/// Examples:
///
///   cloudrun-test curl https://hello-123456789.europe-west1.run.app/
///   cloudrun-test curl https://hello-123456789.europe-west1.run.app/api -sS -X POST \
///       -H 'Content-Type: application/json' -d '{"name":"x"}'
///   cloudrun-test curl --x-serverless https://hello-123456789.europe-west1.run.app/ \
///       -H 'Authorization: Basic ...'        # the app's own Authorization header
///   cloudrun-test curl --audience https://hello.example.com https://hello.example.com/
///   cloudrun-test curl https://hello-123456789.europe-west1.run.app/ -v   # token redacted
///
/// Refused, because the token would leave the service's origin or be written out:
/// other URLs of another origin, --location-trusted, -L with --x-serverless (curl
/// forwards custom headers across redirects), --trace, --trace-ascii, --libcurl,
/// and --stderr together with -v.
#[derive(clap::Args)]
#[command(
    verbatim_doc_comment,
    override_usage = "cloudrun-test curl [--x-serverless] [--audience AUD] URL [CURL_OPTIONS]..."
)]
pub struct CurlArgs {
    /// Send the token in `X-Serverless-Authorization` (Cloud Run checks it first),
    /// leaving `Authorization` to the application.
    #[arg(long)]
    x_serverless: bool,
    /// The token's audience (default: URL's origin), e.g. a custom audience.
    #[arg(long, value_name = "AUD")]
    audience: Option<String>,
    /// URL, the service URL to request (https, or http on loopback), then options
    /// and arguments for curl, passed on unchanged.
    // One list, so that everything after URL reaches curl, even `-v` or `--help`.
    #[arg(
        value_name = "URL [CURL_OPTIONS]",
        required = true,
        trailing_var_arg = true,
        allow_hyphen_values = true
    )]
    rest: Vec<String>,
}

/// Header text larger than this is not an identity token (they are ~1 KB); it also
/// keeps the header within one pipe buffer, written before curl starts.
const MAX_HEADER: usize = 16 * 1024;

pub fn run(args: CurlArgs) -> Result<ExitCode, String> {
    let (url, curl_args) = args
        .rest
        .split_first()
        .ok_or("the URL to request is missing")?;
    let url = parse_url(url)?;
    let origin = url.origin().ascii_serialization();
    // curl has no such options: accept ours after URL too.
    let (mut x_serverless, mut audience) = (args.x_serverless, args.audience.clone());
    let mut curl_args = curl_args.to_vec();
    if let Some(at) = curl_args.iter().position(|arg| arg == "--x-serverless") {
        curl_args.remove(at);
        x_serverless = true;
    }
    if let Some(at) = curl_args.iter().position(|arg| arg == "--audience") {
        curl_args.remove(at);
        if at >= curl_args.len() {
            return Err("--audience needs a value".into());
        }
        audience = Some(curl_args.remove(at));
    }
    let options = CurlOptions::check(&curl_args, &url, x_serverless)?;
    let audience = audience.unwrap_or_else(|| origin.clone());
    let token = token_for(&url, &audience)?;
    let header_name = if x_serverless {
        "X-Serverless-Authorization"
    } else {
        "Authorization"
    };

    let mut command = Command::new(curl_program());
    let mut inherited: [RawFd; 2] = [-1, -1];
    // Keep the pipe ends alive until curl has started: their fds are named in its arguments.
    let mut header_reader = None;
    if let Some((token, _)) = &token {
        let secret = token.as_str();
        if !secret.bytes().all(|byte| byte.is_ascii_graphic()) {
            return Err("the identity token contains spaces or control characters; \
                        it cannot be sent in a header (check CLOUDRUN_TEST_ID_TOKEN)"
                .into());
        }
        let header = format!("{header_name}: Bearer {secret}\n");
        if header.len() > MAX_HEADER {
            return Err(format!(
                "the identity token is {} bytes, far more than an identity token (check CLOUDRUN_TEST_ID_TOKEN)",
                secret.len()
            ));
        }
        let (reader, mut writer) =
            io::pipe().map_err(|error| format!("creating a pipe for curl failed: {error}"))?;
        writer
            .write_all(header.as_bytes())
            .map_err(|error| format!("writing the header for curl failed: {error}"))?;
        drop(writer); // curl reads up to end of file
        inherited[0] = reader.as_raw_fd();
        header_reader = Some(reader);
    }
    let mut dump = None;
    if !options.dumps_headers {
        let (reader, writer) =
            io::pipe().map_err(|error| format!("creating a pipe for curl failed: {error}"))?;
        inherited[1] = writer.as_raw_fd();
        dump = Some((reader, writer));
    }

    if options.disable_curlrc {
        command.arg("-q"); // only effective as curl's first argument
    }
    if inherited[0] >= 0 {
        command.args(["-H", &format!("@/dev/fd/{}", inherited[0])]);
    }
    if inherited[1] >= 0 {
        command.args(["-D", &format!("/dev/fd/{}", inherited[1])]);
    }
    command.arg(url.as_str());
    command.args(options.passed_on(&curl_args));
    // The pipes are close-on-exec in this process; curl gets exactly these two.
    // SAFETY: fcntl is async-signal-safe, and the closure allocates nothing.
    unsafe {
        command.pre_exec(move || {
            for fd in inherited.into_iter().filter(|fd| *fd >= 0) {
                if libc::fcntl(fd, libc::F_SETFD, 0) == -1 {
                    return Err(io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    let redact = options.verbose && token.is_some();
    if redact {
        command.stderr(Stdio::piped());
    }
    tracing::debug!(
        %url,
        audience,
        header = header_name,
        via = if token.is_some() { "a pipe (-H @/dev/fd/N)" } else { "nothing: no token" },
        "running curl"
    );
    let mut child = command.spawn().map_err(|error| {
        if error.kind() == io::ErrorKind::NotFound {
            format!(
                "`{}` was not found on PATH; install curl (e.g. `apt-get install curl`)",
                curl_program()
            )
        } else {
            format!("starting curl failed: {error}")
        }
    })?;
    drop(header_reader);
    // Ctrl-C reaches curl (same process group): let it decide, then report its status.
    let previous = ignore_interrupts();

    let headers: Option<JoinHandle<Vec<u8>>> = dump.map(|(mut reader, writer)| {
        drop(writer); // curl holds the only write end now: end of file when it exits
        std::thread::spawn(move || {
            let mut text = Vec::new();
            let _ = reader.read_to_end(&mut text);
            text
        })
    });
    let redactor = match (child.stderr.take(), &token) {
        (Some(stderr), Some((token, _))) if redact => {
            let secret = token.as_str().to_owned();
            Some(std::thread::spawn(move || {
                copy_redacted(stderr, &secret, io::stderr())
            }))
        }
        _ => None,
    };
    let status = child.wait();
    restore_interrupts(previous);
    let status = status.map_err(|error| format!("waiting for curl failed: {error}"))?;
    if let Some(redactor) = redactor {
        let _ = redactor.join();
    }
    if let Some(headers) = headers.and_then(|thread| thread.join().ok()) {
        explain_rejection(&headers, &url, &audience, token.as_ref());
    }
    Ok(match (status.code(), status.signal()) {
        (Some(code), _) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
        (None, Some(signal)) => ExitCode::from(u8::try_from(128 + signal).unwrap_or(1)),
        (None, None) => ExitCode::FAILURE,
    })
}

fn curl_program() -> String {
    std::env::var("CLOUDRUN_TEST_CURL").unwrap_or_else(|_| "curl".into())
}

fn parse_url(text: &str) -> Result<Url, String> {
    let url = Url::parse(text).map_err(|error| {
        format!("{text:?} is not a URL ({error}); give the full URL, e.g. https://hello-123456789.europe-west1.run.app/")
    })?;
    match url.scheme() {
        "https" => Ok(url),
        "http" if is_loopback(&url) => Ok(url),
        "http" => Err(format!(
            "{text}: refusing to send an identity token over plain http to another machine; \
             Cloud Run URLs are https (plain http is allowed on loopback only)"
        )),
        other => Err(format!(
            "{text}: `{other}` URLs are not Cloud Run URLs; use https"
        )),
    }
}

fn is_loopback(url: &Url) -> bool {
    let host = url.host_str().unwrap_or("");
    let ip = host.trim_start_matches('[').trim_end_matches(']');
    host == "localhost"
        || ip
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// The token and the credentials it came from, or `None` for a local URL when no
/// credentials are configured (as the library's client does).
fn token_for(url: &Url, audience: &str) -> Result<Option<(IdToken, Credentials)>, String> {
    let credentials = match Credentials::from_env() {
        Ok(credentials) => credentials,
        Err(Error::NoCredentials { .. }) if is_loopback(url) => {
            eprintln!(
                "cloudrun-test curl: no Google credentials configured; calling local {url} without a token"
            );
            return Ok(None);
        }
        Err(error) => return Err(error.to_string()),
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|error| format!("starting the async runtime failed: {error}"))?;
    let token = runtime
        .block_on(credentials.id_token(audience))
        .map_err(|error| error.to_string())?;
    tracing::debug!(
        audience,
        source = credentials.describe(),
        token = %token,
        "identity token ready"
    );
    Ok(Some((token, credentials)))
}

/// After a 401 or 403, what it means and the fix (curl itself shows only the status).
fn explain_rejection(
    headers: &[u8],
    url: &Url,
    audience: &str,
    token: Option<&(IdToken, Credentials)>,
) {
    let text = String::from_utf8_lossy(headers);
    let status = text
        .lines()
        .filter(|line| line.starts_with("HTTP/"))
        .filter_map(|line| line.split_whitespace().nth(1)?.parse::<u16>().ok())
        .find(|status| matches!(status, 401 | 403));
    let Some(status) = status else {
        return;
    };
    let sent = diagnose::Sent {
        url,
        expected_audience: audience,
        claims: token.map(|(token, _)| token.claims()),
        token_unreadable: token.is_some_and(|(token, _)| token.as_str().split('.').count() != 3),
        identity: token.and_then(|(_, credentials)| credentials.identity()),
        service: None,
        region: None,
        project: None,
    };
    let verdict = diagnose::explain(status, &sent);
    if verdict.ok {
        return;
    }
    eprintln!("cloudrun-test curl: {}", verdict.summary);
    if let Some(fix) = verdict.fix {
        eprintln!("  fix: {fix}");
    }
    eprintln!(
        "  more: cloudrun-test doctor --url {}",
        url.origin().ascii_serialization()
    );
}

/// What the user's curl options mean for the token.
#[derive(Debug, Default, PartialEq, Eq)]
struct CurlOptions {
    /// `-v`/`--verbose`: curl prints request headers; we redact its stderr.
    verbose: bool,
    /// `-D`/`--dump-header` given by the user: we do not add our own.
    dumps_headers: bool,
    /// `-q`/`--disable` first: it must stay curl's first argument.
    disable_curlrc: bool,
}

/// curl's short options that take a value (the rest of the cluster, or the next argument).
const SHORT_WITH_VALUE: &str = "AbcCdDeEFHKmoPQrTtuUwxXyYz";

/// curl's long options that take a value, as far as telling values from URLs goes.
const LONG_WITH_VALUE: &[&str] = &[
    "abstract-unix-socket",
    "alt-svc",
    "aws-sigv4",
    "cacert",
    "capath",
    "cert",
    "cert-type",
    "ciphers",
    "config",
    "connect-timeout",
    "connect-to",
    "continue-at",
    "cookie",
    "cookie-jar",
    "create-file-mode",
    "crlfile",
    "curves",
    "data",
    "data-ascii",
    "data-binary",
    "data-raw",
    "data-urlencode",
    "delegation",
    "dns-interface",
    "dns-ipv4-addr",
    "dns-ipv6-addr",
    "dns-servers",
    "doh-url",
    "dump-header",
    "egd-file",
    "engine",
    "etag-compare",
    "etag-save",
    "expect100-timeout",
    "form",
    "form-string",
    "ftp-account",
    "ftp-alternative-to-user",
    "ftp-method",
    "ftp-port",
    "ftp-ssl-ccc-mode",
    "happy-eyeballs-timeout-ms",
    "haproxy-clientip",
    "header",
    "hostpubmd5",
    "hostpubsha256",
    "hsts",
    "interface",
    "json",
    "keepalive-time",
    "key",
    "key-type",
    "krb",
    "libcurl",
    "limit-rate",
    "local-port",
    "login-options",
    "mail-auth",
    "mail-from",
    "mail-rcpt",
    "max-filesize",
    "max-redirs",
    "max-time",
    "netrc-file",
    "noproxy",
    "oauth2-bearer",
    "output",
    "output-dir",
    "parallel-max",
    "pass",
    "pinnedpubkey",
    "preproxy",
    "proto",
    "proto-default",
    "proto-redir",
    "proxy",
    "proxy-cacert",
    "proxy-capath",
    "proxy-cert",
    "proxy-cert-type",
    "proxy-ciphers",
    "proxy-crlfile",
    "proxy-header",
    "proxy-key",
    "proxy-key-type",
    "proxy-pass",
    "proxy-pinnedpubkey",
    "proxy-service-name",
    "proxy-tls13-ciphers",
    "proxy-tlsauthtype",
    "proxy-tlspassword",
    "proxy-tlsuser",
    "proxy-user",
    "proxy1.0",
    "pubkey",
    "quote",
    "random-file",
    "range",
    "rate",
    "referer",
    "request",
    "request-target",
    "resolve",
    "retry",
    "retry-delay",
    "retry-max-time",
    "sasl-authzid",
    "service-name",
    "socks4",
    "socks4a",
    "socks5",
    "socks5-gssapi-service",
    "socks5-hostname",
    "speed-limit",
    "speed-time",
    "stderr",
    "telnet-option",
    "tftp-blksize",
    "time-cond",
    "tls-max",
    "tls13-ciphers",
    "tlsauthtype",
    "tlspassword",
    "tlsuser",
    "trace",
    "trace-ascii",
    "trace-config",
    "unix-socket",
    "upload-file",
    "url",
    "url-query",
    "user",
    "user-agent",
    "variable",
    "write-out",
];

impl CurlOptions {
    /// Reads the user's curl arguments; refuses those that would send the token to
    /// another origin or write it out.
    fn check(args: &[String], url: &Url, x_serverless: bool) -> Result<CurlOptions, String> {
        let mut options = CurlOptions {
            disable_curlrc: matches!(args.first().map(String::as_str), Some("-q" | "--disable")),
            ..CurlOptions::default()
        };
        let mut uses_stderr = false;
        let refuse = |arg: &str, why: &str| Err(format!("curl option {arg}: {why}"));
        let mut index = 0;
        while index < args.len() {
            let arg = args[index].as_str();
            index += 1;
            let value = |index: usize| args.get(index).map(String::as_str);
            if let Some(name) = arg.strip_prefix("--") {
                if name.is_empty() {
                    continue;
                }
                match name {
                    "trace" | "trace-ascii" | "libcurl" => {
                        return refuse(
                            arg,
                            "it writes the request headers, token included, to a file; use -v \
                             (cloudrun-test redacts the token from it)",
                        );
                    }
                    "location-trusted" => {
                        return refuse(
                            arg,
                            "it would send the token to whatever host a redirect names; use -L",
                        );
                    }
                    "location" if x_serverless => {
                        return refuse(
                            arg,
                            "curl forwards custom headers such as X-Serverless-Authorization \
                             across redirects, to any host; drop -L or --x-serverless",
                        );
                    }
                    "verbose" => options.verbose = true,
                    "dump-header" => options.dumps_headers = true,
                    "stderr" => uses_stderr = true,
                    "url" => check_same_origin(value(index).unwrap_or(""), url)?,
                    _ => {}
                }
                if LONG_WITH_VALUE.contains(&name) {
                    index += 1;
                }
            } else if arg.len() > 1 && arg.starts_with('-') {
                for (position, letter) in arg.char_indices().skip(1) {
                    match letter {
                        'v' => options.verbose = true,
                        'L' if x_serverless => {
                            return refuse(
                                arg,
                                "curl forwards custom headers such as X-Serverless-Authorization \
                                 across redirects, to any host; drop -L or --x-serverless",
                            );
                        }
                        'D' => options.dumps_headers = true,
                        _ => {}
                    }
                    if SHORT_WITH_VALUE.contains(letter) {
                        // The value is the rest of the cluster, or the next argument.
                        if position + letter.len_utf8() == arg.len() {
                            index += 1;
                        }
                        break;
                    }
                }
            } else if arg.contains("://") {
                check_same_origin(arg, url)?;
            }
        }
        if uses_stderr && options.verbose {
            return refuse(
                "--stderr",
                "with -v it would write the request headers, token included, where \
                 cloudrun-test cannot redact them",
            );
        }
        Ok(options)
    }

    /// The user's arguments as curl gets them (a leading `-q` was moved first).
    fn passed_on<'a>(&self, args: &'a [String]) -> &'a [String] {
        if self.disable_curlrc {
            &args[1..]
        } else {
            args
        }
    }
}

fn check_same_origin(other: &str, url: &Url) -> Result<(), String> {
    let same = Url::parse(other).is_ok_and(|other| other.origin() == url.origin());
    if same {
        Ok(())
    } else {
        Err(format!(
            "curl would also request {other}, and send it the token for {}; run one \
             `cloudrun-test curl` per service",
            url.origin().ascii_serialization()
        ))
    }
}

/// Copies curl's stderr (its `-v` log) to ours, with the token replaced. Bytes are
/// held back only while they could be the start of the token, so the progress meter
/// keeps moving.
fn copy_redacted(mut from: impl Read, secret: &str, mut to: impl Write) {
    const REDACTED: &[u8] = b"<redacted>";
    let secret = secret.as_bytes();
    let mut pending: Vec<u8> = Vec::new();
    let mut buffer = [0u8; 8192];
    loop {
        let read = match from.read(&mut buffer) {
            Ok(0) | Err(_) => break,
            Ok(read) => read,
        };
        pending.extend_from_slice(&buffer[..read]);
        let mut out = Vec::with_capacity(pending.len());
        let mut start = 0;
        while let Some(found) = find(&pending[start..], secret) {
            out.extend_from_slice(&pending[start..start + found]);
            out.extend_from_slice(REDACTED);
            start += found + secret.len();
        }
        let rest = &pending[start..];
        let keep = (1..secret.len().min(rest.len() + 1))
            .rev()
            .find(|&length| rest.ends_with(&secret[..length]))
            .unwrap_or(0);
        out.extend_from_slice(&rest[..rest.len() - keep]);
        pending = rest[rest.len() - keep..].to_vec();
        let _ = to.write_all(&out);
        let _ = to.flush();
    }
    let _ = to.write_all(&pending);
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() || haystack.len() < needle.len() {
        return None;
    }
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
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

    fn check(args: &[&str], x_serverless: bool) -> Result<CurlOptions, String> {
        let args: Vec<String> = args.iter().map(|arg| arg.to_string()).collect();
        let url = Url::parse("https://hello-1.europe-west1.run.app/a").unwrap();
        CurlOptions::check(&args, &url, x_serverless)
    }

    #[test]
    fn option_values_are_not_taken_for_urls() {
        let options = check(
            &[
                "-sSv",
                "-e",
                "https://elsewhere.example/",
                "--referer",
                "https://elsewhere.example/",
                "-ohttps://x",
                "https://hello-1.europe-west1.run.app/b",
            ],
            false,
        )
        .unwrap();
        assert!(options.verbose && !options.dumps_headers);
        assert!(check(&["-H", "X-v: 1"], false).unwrap() == CurlOptions::default());
    }

    #[test]
    fn the_token_never_leaves_the_origin() {
        assert!(check(&["https://elsewhere.example/"], false).is_err());
        assert!(check(&["--url", "https://elsewhere.example/"], false).is_err());
        assert!(check(&["http://hello-1.europe-west1.run.app/"], false).is_err());
        assert!(check(&["--location-trusted"], false).is_err());
        assert!(check(&["-sL"], false).is_ok());
        assert!(check(&["-sL"], true).is_err());
        assert!(check(&["--location"], true).is_err());
        for written in ["--trace", "--trace-ascii", "--libcurl"] {
            assert!(check(&[written, "file"], false).is_err(), "{written}");
        }
        assert!(check(&["-v", "--stderr", "file"], false).is_err());
    }

    #[test]
    fn a_leading_disable_stays_first() {
        let args: Vec<String> = ["-q", "-s"].iter().map(|arg| arg.to_string()).collect();
        let options = check(&["-q", "-s"], false).unwrap();
        assert!(options.disable_curlrc);
        assert_eq!(options.passed_on(&args), ["-s".to_string()]);
    }

    #[test]
    fn redaction_survives_any_split() {
        let secret = "eyJhbGciOi.payload.signature";
        let text = format!("> Authorization: Bearer {secret}\r\n< HTTP/1.1 200 OK\r\n{secret}");
        for chunk in 1..text.len() {
            let reader = Chunked {
                data: text.as_bytes().to_vec(),
                chunk,
            };
            let mut out = Vec::new();
            copy_redacted(reader, secret, &mut out);
            let out = String::from_utf8(out).unwrap();
            assert!(!out.contains(secret), "chunk {chunk}: {out}");
            assert_eq!(out.matches("<redacted>").count(), 2, "chunk {chunk}: {out}");
            assert!(out.contains("HTTP/1.1 200 OK"));
        }
    }

    struct Chunked {
        data: Vec<u8>,
        chunk: usize,
    }

    impl Read for Chunked {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = self.chunk.min(buf.len()).min(self.data.len());
            buf[..n].copy_from_slice(&self.data[..n]);
            self.data.drain(..n);
            Ok(n)
        }
    }
}
