//! `cloudrun-test curl`: the system `curl` with the identity token for the URL's
//! origin attached, never on a command line, and sent nowhere else.
//!
//! [`options`] lets through only curl options known to be safe, [`process`] runs curl
//! once with the token in a pipe and a clean environment, [`redirect`] follows `-L`
//! within the service's origin, [`redact`] keeps the token out of `-v` logs.

mod files;
mod options;
mod process;
mod redact;
mod redirect;

use std::os::unix::process::ExitStatusExt;
use std::process::ExitCode;

use cloudrun_test::transport;
use cloudrun_test::{Credentials, Error, ErrorKind, IdToken, Url};

use cloudrun_test::diagnose;
use options::Checked;
use redirect::{Sent, Step, final_head};

/// Run the system `curl` with an identity token for URL's origin attached.
///
/// The token goes to curl through a pipe (`-H @/dev/fd/N`), never on a command line
/// or in the environment, and only to URL's origin: https, or plain http on this
/// machine (e.g. a service behind `cloudrun-test emulate`). The token's audience is
/// URL's origin unless --audience says otherwise. A 401 or 403 answer is explained on
/// stderr with its fix. Exits with curl's status.
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
/// URL comes first; after it, only these curl options (exact names, short letters may
/// be grouped as in -sSv):
///
///   output     -s/--silent -S/--show-error -v/--verbose (token redacted) -i/--include
///              -f/--fail --fail-with-body -N/--no-buffer --no-progress-meter
///              -#/--progress-bar -o/--output FILE --create-dirs -D/--dump-header FILE
///              -w/--write-out FORMAT
///   request    -X/--request METHOD -I/--head -G/--get -H/--header LINE|@FILE
///              (cloudrun-test reads FILE, checks each line as a -H, and hands curl
///              the checked lines) -A/--user-agent -e/--referer --compressed --path-as-is
///              -d/--data --data-ascii --data-binary --data-raw --data-urlencode --json
///              -F/--form --form-string (a file named with @FILE goes to the service)
///   connection --http1.1 --http2 --http2-prior-knowledge -4/--ipv4 -6/--ipv6
///              --cacert FILE --capath DIR -m/--max-time S --connect-timeout S
///              --retry N --retry-delay S --retry-max-time S --retry-all-errors
///              --retry-connrefused
///   redirects  -L/--location, --max-redirs N (default 10): followed by cloudrun-test
///              within URL's origin only; a redirect elsewhere is shown, not followed.
///              With -L you see the final response only, and -D is refused (use -i).
///   always     -q first (curl reads no .curlrc), --globoff (URL is not a pattern);
///              the proxy is HTTPS_PROXY for https unless NO_PROXY names the host,
///              never for loopback; curl's own proxy variables and SSLKEYLOGFILE are
///              removed from its environment.
///
/// Refused before curl starts, each with the reason and what to use instead: other
/// URLs (with or without a scheme, --url, or anything after --), abbreviated options
/// (curl would take --trace-a for --trace-ascii), -K/--config, -:/--next, options that
/// write traffic to files (--trace, --trace-ascii, --libcurl, --stderr) or change
/// where the connection goes (-x/--proxy, --socks5..., --connect-to, --resolve,
/// --unix-socket, --interface, --doh-url...), -k/--insecure, --location-trusted,
/// -u/--user and --netrc (they set Authorization), -T/--upload-file, a header naming
/// Authorization (without --x-serverless), X-Serverless-Authorization,
/// Proxy-Authorization or Host, a line break or other control character in a
/// header, method, user agent or referer, a file (to read or write) that leads under
/// /dev or /proc however it is spelled (curl holds cloudrun-test's pipes there; only
/// /dev/null, /dev/stdin, /dev/stdout and /dev/stderr pass) or is a FIFO, socket or
/// device, and every option not listed above.
///
/// For anything else, call curl yourself with the token kept off every command line:
///
///   cloudrun-test token --audience https://hello-123456789.europe-west1.run.app \
///     | sed 's/^/Authorization: Bearer /' \
///     | curl -q -H @- https://hello-123456789.europe-west1.run.app/ [OPTIONS]
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
    /// URL, the service URL to request (https, or http on loopback), then curl
    /// options from the list above.
    // One list, so that everything after URL is checked here, even `-v` or `--help`.
    #[arg(
        value_name = "URL [CURL_OPTIONS]",
        required = true,
        trailing_var_arg = true,
        allow_hyphen_values = true
    )]
    rest: Vec<String>,
}

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
    let token = token_for(&url, &audience)?;
    // The token's header, then the checked lines of any -H @FILE: one pipe for both.
    let mut header = match &token {
        Some((token, _)) => header_line(token.as_str(), x_serverless)?,
        None => String::new(),
    };
    header.push_str(&checked.file_headers);
    let header = (!header.is_empty()).then_some(header);
    let program = curl_program();

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
            options: checked.curl_args(as_get),
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

fn curl_program() -> String {
    std::env::var("CLOUDRUN_TEST_CURL").unwrap_or_else(|_| "curl".into())
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
