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

use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use cloudrun_test::transport;
use cloudrun_test::{Credentials, ErrorKind, IdToken, Url};

use cloudrun_test::diagnose;
use options::Checked;
use redirect::{Sent, Step, final_head};

pub use args::CurlArgs;

/// curl's exit status when its -m limit is reached.
const OPERATION_TIMED_OUT: u8 = 28;

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
    let token = token_for(&url, &audience)?;
    // The token's header, then the checked lines of any -H @FILE: one pipe for both.
    let mut header = match &token {
        Some((token, _)) => header_line(token.as_str(), x_serverless)?,
        None => String::new(),
    };
    header.push_str(&checked.file_headers);
    let header = (!header.is_empty()).then_some(header);

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
    // -m bounds all the requests together, as with curl's own -L: the first gets all of
    // it, each redirect what is left.
    let started = Instant::now();
    let mut limit = checked.max_time;
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
        let ran = process::run(process::Hop {
            program: &program,
            url: &current,
            options: checked.curl_args(as_get, limit),
            header: header.as_deref(),
            secret: token.as_ref().map(|(token, _)| token.as_str()),
            verbose: checked.verbose,
            dump: !checked.dump_header,
            proxy: proxy.as_ref(),
            gate,
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
                let Ok(left) = time_left(checked.max_time, started.elapsed()) else {
                    eprintln!(
                        "cloudrun-test curl: not following the redirect to {next}: the time \
                         given with -m is up"
                    );
                    break (ran, Some(OPERATION_TIMED_OUT));
                };
                limit = left;
                tracing::debug!(from = %current, to = %next, as_get = to_get, "following a redirect");
                current = next;
                sent = sent.after(to_get);
                as_get |= to_get;
                followed += 1;
            }
        }
    };
    explain_rejection(&ran.headers, &current, &audience, token.as_ref());
    Ok(match (exit, ran.status.code(), ran.status.signal()) {
        (Some(exit), _, _) => ExitCode::from(exit),
        (None, Some(code), _) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
        (None, None, Some(signal)) => ExitCode::from(u8::try_from(128 + signal).unwrap_or(1)),
        (None, None, None) => ExitCode::FAILURE,
    })
}

/// Less than a millisecond, the least curl counts, is left of the user's `-m`.
#[derive(Debug, PartialEq)]
struct TimeUp;

/// What is left of `max_time` (the user's `-m`, `None` for no limit) after `elapsed`,
/// for the next request.
fn time_left(max_time: Option<Duration>, elapsed: Duration) -> Result<Option<Duration>, TimeUp> {
    let Some(max_time) = max_time else {
        return Ok(None);
    };
    let left = max_time.saturating_sub(elapsed);
    if left < Duration::from_millis(1) {
        return Err(TimeUp);
    }
    Ok(Some(left))
}

/// curl's path: `CLOUDRUN_TEST_CURL` if it names a path (has a `/`), else the first
/// `curl` (or that name) we may execute in an absolute folder of PATH, or of
/// `/bin:/usr/bin` when PATH is unset, as `execvp` does. A relative folder, such as the
/// empty entry for the current one, is no place to take a program from. Found here
/// rather than by the spawn: a program looked up on a PATH that curl's environment also
/// sets is started with a slower fork instead of `posix_spawn`.
fn curl_program() -> Result<PathBuf, String> {
    let chosen = std::env::var_os("CLOUDRUN_TEST_CURL").filter(|program| !program.is_empty());
    let fix = match chosen {
        Some(_) => "check CLOUDRUN_TEST_CURL",
        None => "install curl (e.g. `apt-get install curl`), or set CLOUDRUN_TEST_CURL to its path",
    };
    let program = chosen.unwrap_or_else(|| "curl".into());
    let path = std::env::var_os("PATH");
    let (found, searched) = if program.as_encoded_bytes().contains(&b'/') {
        let given = PathBuf::from(&program);
        (given.exists().then_some(given), "")
    } else {
        let folders = path.clone().unwrap_or_else(|| "/bin:/usr/bin".into());
        let found = std::env::split_paths(&folders)
            .filter(|folder| folder.is_absolute())
            .map(|folder| folder.join(&program))
            .find(|candidate| candidate.is_file() && may_execute(candidate));
        let searched = match path {
            Some(_) => " in the absolute folders of PATH",
            None => " in /bin or /usr/bin (PATH is not set)",
        };
        (found, searched)
    };
    found.ok_or_else(|| {
        format!(
            "`{}` was not found{searched}\nfix: {fix}",
            program.to_string_lossy()
        )
    })
}

/// Whether this process may execute `file` (its owner, group and mode, as `execvp`
/// would find).
fn may_execute(file: &Path) -> bool {
    let Ok(file) = std::ffi::CString::new(file.as_os_str().as_encoded_bytes()) else {
        return false;
    };
    // SAFETY: a valid C string; access only reads it.
    unsafe { libc::access(file.as_ptr(), libc::X_OK) == 0 }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_request_gets_what_is_left_of_the_max_time_and_none_under_a_millisecond() {
        let ms = Duration::from_millis;
        assert_eq!(time_left(None, ms(10_000)), Ok(None), "no limit");
        assert_eq!(time_left(Some(ms(1000)), ms(300)), Ok(Some(ms(700))));
        assert_eq!(time_left(Some(ms(1000)), ms(999)), Ok(Some(ms(1))));
        let under_a_millisecond = ms(999) + Duration::from_micros(500);
        assert_eq!(time_left(Some(ms(1000)), under_a_millisecond), Err(TimeUp));
        assert_eq!(time_left(Some(ms(1000)), ms(5000)), Err(TimeUp));
    }
}
