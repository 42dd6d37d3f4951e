//! The arguments of `cloudrun-test curl`, and its help, on every platform (on Windows
//! the command refuses to run: see `main.rs`).

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
///              With -L you see the final response only, and -D is refused (use -i);
///              -m bounds all the requests together, redirects and retries included.
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
// On Windows the fields are parsed (for `--help` and errors) but never read.
#[cfg_attr(not(unix), allow(dead_code))]
pub struct CurlArgs {
    /// Send the token in `X-Serverless-Authorization` (Cloud Run checks it first),
    /// leaving `Authorization` to the application.
    #[arg(long)]
    pub(super) x_serverless: bool,
    /// The token's audience (default: URL's origin), e.g. a custom audience.
    #[arg(long, value_name = "AUD")]
    pub(super) audience: Option<String>,
    /// URL, the service URL to request (https, or http on loopback), then curl
    /// options from the list above.
    // One list, so that everything after URL is checked here, even `-v` or `--help`.
    #[arg(
        value_name = "URL [CURL_OPTIONS]",
        required = true,
        trailing_var_arg = true,
        allow_hyphen_values = true
    )]
    pub(super) rest: Vec<String>,
}

#[cfg(all(test, unix))]
mod tests {
    use clap::Args;

    /// The help spells out the redirect limit's default: it must be the one in force.
    #[test]
    fn the_help_states_the_redirect_default_in_force() {
        let help = super::CurlArgs::augment_args(clap::Command::new("curl"))
            .render_long_help()
            .to_string();
        let default = super::super::options::DEFAULT_MAX_REDIRS;
        assert!(
            help.contains(&format!("--max-redirs N (default {default})")),
            "{help}"
        );
    }
}
