//! `cloudrun-test curl`: the system `curl` with the identity token for the URL's
//! origin attached, never on a command line, and sent nowhere else.
//!
//! [`options`] lets through only curl options known to be safe, [`process`] runs curl
//! once with the token in a pipe and a clean environment, [`redirect`] follows `-L`
//! within the service's origin, [`redact`] keeps the token out of `-v` logs.

mod args;
mod files;
mod options;
mod process;
mod redact;
mod redirect;

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use cloudrun_test::transport;
use cloudrun_test::{Credentials, ErrorKind, IdToken, Url};

use cloudrun_test::diagnose;
use options::Checked;
use redirect::{Sent, Step, final_head};

pub use args::CurlArgs;

/// Header text larger than this is not an identity token (they are ~1 KB).
const MAX_HEADER: usize = 16 * 1024;

pub fn run(args: CurlArgs) -> Result<ExitCode, String> {
    let (url, curl_args) = args
        .rest
        .split_first()
        .ok_or("the URL to request is missing")?;
    let url = parse_url(url)?;
    let checked = Checked::check(curl_args, &url, args.x_serverless)
        .map_err(|refusal| refusal.to_string())?;
    transport::check_destination(&url, "the service").map_err(|error| error.to_string())?;
    let proxy = transport::proxy_for(&url).map_err(|error| error.to_string())?;
    let x_serverless = checked.x_serverless;
    let audience = checked
        .audience
        .clone()
        .or(args.audience)
        .unwrap_or_else(|| url.origin().ascii_serialization());
    let program = curl_program()?;

    // One curl per request: more than one only with -L, for redirects within the origin.
    let mut current = url.clone();
    let mut sent = Sent {
        method: checked.method(),
        body: checked.has_body(),
        body_from_stdin: checked.body_from_stdin(),
        data_in_query: checked.data_in_query(),
    };
    let mut as_get = false;
    let mut followed = 0;
    let mut fetched: Option<Option<(IdToken, Credentials)>> = None;
    let (ran, exit) = loop {
        let gate = checked.location.then(|| {
            let (origin, at, sent) = (url.clone(), current.clone(), sent.clone());
            let max = checked.max_redirs;
            Box::new(move |head: &redirect::Head| {
                matches!(
                    redirect::step(&origin, &at, head, &sent, followed, max),
                    Step::Follow { .. }
                )
            }) as process::OutputGate
        });
        let hop = process::Hop {
            program: &program,
            url: &current,
            options: checked.curl_args(as_get),
            verbose: checked.verbose,
            dump: !checked.dump_header,
            proxy: proxy.as_ref(),
            gate,
        };
        // The token is fetched once, while the first curl starts.
        let ran = process::run(hop, || {
            let token = match &mut fetched {
                Some(token) => token,
                None => fetched.insert(token_for(&url, &audience)?),
            };
            let mut lines = match token {
                Some((token, _)) => header_line(token.as_str(), x_serverless)?,
                None => String::new(),
            };
            // The token's header, then the checked lines of any -H @FILE: one pipe for both.
            lines.push_str(&checked.file_headers);
            let secret = token.as_ref().map(|(token, _)| token.as_str().to_owned());
            Ok(process::Header { lines, secret })
        })?;
        let head = final_head(&ran.headers);
        let step = match &head {
            Some(head) if checked.location && ran.status.success() => {
                redirect::step(&url, &current, head, &sent, followed, checked.max_redirs)
            }
            _ => Step::Done,
        };
        match step {
            Step::Done => break (ran, None),
            Step::Stop { note, exit } => {
                eprintln!("cloudrun-test curl: {note}");
                break (ran, exit);
            }
            Step::Follow {
                url: next,
                as_get: to_get,
            } => {
                tracing::debug!(from = %current, to = %next, as_get = to_get, "following a redirect");
                current = next;
                sent = sent.after(to_get);
                as_get |= to_get;
                followed += 1;
            }
        }
    };
    let token = fetched.flatten();
    explain_rejection(&ran.headers, &current, &audience, token.as_ref());
    Ok(match (exit, ran.status.code(), ran.status.signal()) {
        (Some(exit), _, _) => ExitCode::from(exit),
        (None, Some(code), _) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
        (None, None, Some(signal)) => ExitCode::from(u8::try_from(128 + signal).unwrap_or(1)),
        (None, None, None) => ExitCode::FAILURE,
    })
}

/// curl's path: `CLOUDRUN_TEST_CURL`, or the first executable `curl` in an absolute
/// folder of PATH (a relative one, such as the empty entry for the current folder, is
/// no place to take a program from). Found here rather than by the spawn: a program
/// looked up on a PATH that curl's environment also sets is started with a slower
/// fork instead of `posix_spawn`.
fn curl_program() -> Result<PathBuf, String> {
    let program = std::env::var_os("CLOUDRUN_TEST_CURL").unwrap_or_else(|| "curl".into());
    if Path::new(&program).components().count() > 1 {
        return Ok(program.into());
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .filter(|folder| folder.is_absolute())
        .map(|folder| folder.join(&program))
        .find(|candidate| {
            candidate
                .metadata()
                .is_ok_and(|file| file.is_file() && file.permissions().mode() & 0o111 != 0)
        })
        .ok_or_else(|| {
            format!(
                "`{}` was not found on PATH\nfix: install curl (e.g. `apt-get install curl`), \
                 or set CLOUDRUN_TEST_CURL to its path",
                program.to_string_lossy()
            )
        })
}

fn parse_url(text: &str) -> Result<Url, String> {
    if text.starts_with('-') {
        return Err(format!(
            "`{}` is not a URL: the URL comes first\nfix: cloudrun-test curl URL [CURL_OPTIONS], \
             e.g. cloudrun-test curl https://hello-123456789.europe-west1.run.app/ -sS",
            text.escape_debug()
        ));
    }
    Url::parse(text).map_err(|error| {
        format!(
            "{text:?} is not a URL ({error})\nfix: give the full URL, e.g. \
             https://hello-123456789.europe-west1.run.app/"
        )
    })
}

/// The header line that carries the token, checked to be one plain header.
fn header_line(token: &str, x_serverless: bool) -> Result<String, String> {
    let name = if x_serverless {
        "X-Serverless-Authorization"
    } else {
        "Authorization"
    };
    if !token.bytes().all(|byte| byte.is_ascii_graphic()) {
        return Err("the identity token contains spaces or control characters; \
                    it cannot be sent in a header\nfix: check CLOUDRUN_TEST_ID_TOKEN"
            .into());
    }
    let header = format!("{name}: Bearer {token}\n");
    if header.len() > MAX_HEADER {
        return Err(format!(
            "the identity token is {} bytes, far more than an identity token\nfix: check \
             CLOUDRUN_TEST_ID_TOKEN",
            token.len()
        ));
    }
    Ok(header)
}

/// The token and the credentials it came from, or `None` for a local URL when no
/// credentials are configured (as the library's client does).
fn token_for(url: &Url, audience: &str) -> Result<Option<(IdToken, Credentials)>, String> {
    let credentials = match Credentials::from_env() {
        Ok(credentials) => credentials,
        Err(error) if error.kind() == ErrorKind::NoCredentials && transport::is_loopback(url) => {
            eprintln!(
                "cloudrun-test curl: no Google credentials configured; calling local {url} without a token"
            );
            return Ok(None);
        }
        Err(error) => return Err(error.to_string()),
    };
    let token = crate::token::id_token(&credentials, audience)?;
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
    let identity = token.and_then(|(_, credentials)| credentials.identity());
    let sent = diagnose::Sent {
        url,
        audience,
        accepted_audiences: &[],
        token: token.map(|(token, _)| token),
        identity: identity.as_deref(),
        service: None,
        region: None,
        project: None,
    };
    let verdict = diagnose::Verdict::explain(status, &sent);
    if verdict.ok() {
        return;
    }
    eprintln!("cloudrun-test curl: {status}: {}", verdict.evidence);
    if let Some(fix) = verdict.fix {
        eprintln!("  fix: {fix}");
    }
    eprintln!(
        "  more: cloudrun-test doctor --url {}",
        url.origin().ascii_serialization()
    );
}
