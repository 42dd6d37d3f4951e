//! The curl options `cloudrun-test curl` passes on: an allowlist.
//!
//! curl sends the token header to every URL it is given, reads more options from
//! files, accepts any unambiguous prefix of a long option, and can be told to write
//! its traffic to a file or to connect elsewhere. So every argument after the URL must
//! be an option in [`ALLOWED`], spelled exactly (its long name or its short letter),
//! with its value when it takes one; anything else is refused before curl starts, with
//! the reason and what to use instead. Values are consumed as curl consumes them (the
//! rest of a short cluster, or the next argument), so no value is taken for a URL and
//! no URL for a value.

use std::fmt;
use std::time::Duration;

use cloudrun_test::Url;

use super::files::{self, Access};

/// What an option's value must be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Value {
    /// Takes no value.
    None,
    /// Any text (data, a file name, a format...).
    Text,
    /// Text curl writes into the request head (a user agent, a referer).
    HeadText,
    /// An HTTP method token.
    Method,
    /// A header line, or `@FILE`.
    Header,
    /// Seconds, fractions allowed.
    Seconds,
    /// A whole number, 0 or more.
    Count,
}

/// What an option means to `cloudrun-test curl`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    /// Passed on to curl as is.
    Pass,
    /// Request body: dropped when a redirect turns the request into a GET.
    Body,
    /// `-X`: dropped with the body.
    Method,
    /// `-G`: the body went into the first URL's query; dropped on later hops.
    Get,
    /// `-I`: the method is HEAD.
    Head,
    /// `-v`: curl's stderr is redacted.
    Verbose,
    /// `-D`: the user's own header dump (then we add none).
    DumpHeader,
    /// `-L`, `--max-redirs`: redirects are followed by cloudrun-test, not curl.
    Location,
    MaxRedirs,
    /// `-m`: one limit for all the requests together, redirects included, as with
    /// curl's own `-L`: each hop gets what is left of it.
    MaxTime,
    /// `-q`, `-g`: cloudrun-test always passes them itself.
    Implied,
    /// cloudrun-test's own options, not curl's.
    XServerless,
    Audience,
}

#[derive(Debug, PartialEq, Eq)]
pub struct Spec {
    long: &'static str,
    short: Option<char>,
    value: Value,
    role: Role,
}

const fn spec(long: &'static str, short: Option<char>, value: Value, role: Role) -> Spec {
    Spec {
        long,
        short,
        value,
        role,
    }
}

/// The options known to be safe: they change what is asked of the service and how
/// the answer is shown, never where the request goes or who else sees it.
const ALLOWED: &[Spec] = &[
    // Output.
    spec("silent", Some('s'), Value::None, Role::Pass),
    spec("show-error", Some('S'), Value::None, Role::Pass),
    spec("verbose", Some('v'), Value::None, Role::Verbose),
    spec("include", Some('i'), Value::None, Role::Pass),
    spec("fail", Some('f'), Value::None, Role::Pass),
    spec("fail-with-body", None, Value::None, Role::Pass),
    spec("no-buffer", Some('N'), Value::None, Role::Pass),
    spec("no-progress-meter", None, Value::None, Role::Pass),
    spec("progress-bar", Some('#'), Value::None, Role::Pass),
    spec("output", Some('o'), Value::Text, Role::Pass),
    spec("create-dirs", None, Value::None, Role::Pass),
    spec("dump-header", Some('D'), Value::Text, Role::DumpHeader),
    // Response headers and timings only: curl's write-out has no request header.
    spec("write-out", Some('w'), Value::Text, Role::Pass),
    // The request.
    spec("request", Some('X'), Value::Method, Role::Method),
    spec("head", Some('I'), Value::None, Role::Head),
    spec("get", Some('G'), Value::None, Role::Get),
    spec("header", Some('H'), Value::Header, Role::Pass),
    spec("user-agent", Some('A'), Value::HeadText, Role::Pass),
    spec("referer", Some('e'), Value::HeadText, Role::Pass),
    spec("compressed", None, Value::None, Role::Pass),
    spec("path-as-is", None, Value::None, Role::Pass),
    spec("data", Some('d'), Value::Text, Role::Body),
    spec("data-ascii", None, Value::Text, Role::Body),
    spec("data-binary", None, Value::Text, Role::Body),
    spec("data-raw", None, Value::Text, Role::Body),
    spec("data-urlencode", None, Value::Text, Role::Body),
    spec("json", None, Value::Text, Role::Body),
    // A file uploaded with `-F name=@FILE` goes to the service, like `-d @FILE`.
    spec("form", Some('F'), Value::Text, Role::Body),
    spec("form-string", None, Value::Text, Role::Body),
    // The connection (to the URL's host, nowhere else).
    spec("http1.1", None, Value::None, Role::Pass),
    spec("http2", None, Value::None, Role::Pass),
    spec("http2-prior-knowledge", None, Value::None, Role::Pass),
    spec("ipv4", Some('4'), Value::None, Role::Pass),
    spec("ipv6", Some('6'), Value::None, Role::Pass),
    spec("cacert", None, Value::Text, Role::Pass),
    spec("capath", None, Value::Text, Role::Pass),
    spec("max-time", Some('m'), Value::Seconds, Role::MaxTime),
    spec("connect-timeout", None, Value::Seconds, Role::Pass),
    spec("retry", None, Value::Count, Role::Pass),
    spec("retry-delay", None, Value::Count, Role::Pass),
    spec("retry-max-time", None, Value::Count, Role::Pass),
    spec("retry-all-errors", None, Value::None, Role::Pass),
    spec("retry-connrefused", None, Value::None, Role::Pass),
    spec("location", Some('L'), Value::None, Role::Location),
    spec("max-redirs", None, Value::Count, Role::MaxRedirs),
    spec("disable", Some('q'), Value::None, Role::Implied),
    spec("globoff", Some('g'), Value::None, Role::Implied),
    // cloudrun-test's own (curl has no such options).
    spec("x-serverless", None, Value::None, Role::XServerless),
    spec("audience", None, Value::Text, Role::Audience),
];

/// Why a known option is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Why {
    Config,
    Next,
    Url,
    WritesTraffic,
    Route,
    Insecure,
    Trusted,
    Credentials,
    Protocols,
    Upload,
    Post30x,
    Variable,
}

/// Options refused with a reason of their own (every other one is refused as unknown).
const REFUSED: &[(&str, Option<char>, Why)] = &[
    ("config", Some('K'), Why::Config),
    ("next", Some(':'), Why::Next),
    ("url", None, Why::Url),
    ("url-query", None, Why::Url),
    ("trace", None, Why::WritesTraffic),
    ("trace-ascii", None, Why::WritesTraffic),
    ("trace-config", None, Why::WritesTraffic),
    ("libcurl", None, Why::WritesTraffic),
    ("stderr", None, Why::WritesTraffic),
    ("proxy", Some('x'), Why::Route),
    ("preproxy", None, Why::Route),
    ("proxy1.0", None, Why::Route),
    ("proxytunnel", Some('p'), Why::Route),
    ("proxy-header", None, Why::Route),
    ("proxy-user", Some('U'), Why::Route),
    ("noproxy", None, Why::Route),
    ("socks4", None, Why::Route),
    ("socks4a", None, Why::Route),
    ("socks5", None, Why::Route),
    ("socks5-hostname", None, Why::Route),
    ("connect-to", None, Why::Route),
    ("resolve", None, Why::Route),
    ("unix-socket", None, Why::Route),
    ("abstract-unix-socket", None, Why::Route),
    ("interface", None, Why::Route),
    ("doh-url", None, Why::Route),
    ("dns-servers", None, Why::Route),
    ("alt-svc", None, Why::Route),
    ("insecure", Some('k'), Why::Insecure),
    ("proxy-insecure", None, Why::Insecure),
    ("doh-insecure", None, Why::Insecure),
    ("location-trusted", None, Why::Trusted),
    ("user", Some('u'), Why::Credentials),
    ("netrc", Some('n'), Why::Credentials),
    ("netrc-file", None, Why::Credentials),
    ("netrc-optional", None, Why::Credentials),
    ("oauth2-bearer", None, Why::Credentials),
    ("basic", None, Why::Credentials),
    ("digest", None, Why::Credentials),
    ("ntlm", None, Why::Credentials),
    ("negotiate", None, Why::Credentials),
    ("anyauth", None, Why::Credentials),
    ("aws-sigv4", None, Why::Credentials),
    ("proto", None, Why::Protocols),
    ("proto-redir", None, Why::Protocols),
    ("proto-default", None, Why::Protocols),
    ("upload-file", Some('T'), Why::Upload),
    ("post301", None, Why::Post30x),
    ("post302", None, Why::Post30x),
    ("post303", None, Why::Post30x),
    ("variable", None, Why::Variable),
];

impl Why {
    /// The problem, and the fix.
    fn explain(self) -> (&'static str, &'static str) {
        match self {
            Why::Config => (
                "it makes curl read options and URLs from a file, which cloudrun-test cannot check",
                "put the options on the command line",
            ),
            Why::Next => (
                "it starts another request, which would carry the token too",
                "run `cloudrun-test curl` once per request",
            ),
            Why::Url => (
                "it names another URL, and curl would send the token there too",
                "give exactly one URL, first: `cloudrun-test curl URL [OPTIONS]`",
            ),
            Why::WritesTraffic => (
                "it writes the request headers, the token included, to a file",
                "use -v: cloudrun-test curl shows curl's log with the token redacted \
                 (and `2> FILE` keeps it)",
            ),
            Why::Route => (
                "it changes where the connection goes, and the token with it",
                "cloudrun-test curl connects to the URL's host itself, through HTTPS_PROXY \
                 unless NO_PROXY names the host (never for loopback), as Google's libraries \
                 do; set those variables instead",
            ),
            Why::Insecure => (
                "the token would travel over TLS that nobody verified: whoever sits between \
                 you and the service could read it",
                "trust a private certificate authority with --cacert FILE",
            ),
            Why::Trusted => (
                "it sends credentials to whatever host a redirect names",
                "use -L: cloudrun-test curl follows redirects within the service's origin",
            ),
            Why::Credentials => (
                "it sets the Authorization header, which carries the identity token",
                "to send the application's own credentials, add --x-serverless (the token \
                 then goes in X-Serverless-Authorization) and give them with -H",
            ),
            Why::Protocols => (
                "cloudrun-test curl speaks https, or http to this machine, to the URL it is given",
                "drop it; the URL's scheme decides",
            ),
            Why::Upload => (
                "it can name several files and changes the URL it uploads to",
                "upload one file with -X PUT --data-binary @FILE",
            ),
            Why::Post30x => (
                "cloudrun-test curl follows redirects itself, switching POST to GET after 301, \
                 302 and 303 as curl does",
                "drop it (307 and 308 redirects keep the method and the body)",
            ),
            Why::Variable => (
                "it reads environment variables and files into other options, which \
                 cloudrun-test cannot check",
                "expand them in your shell",
            ),
        }
    }
}

/// An argument refused before curl starts: which, why, and what to do instead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The argument as given (a header's value left out: it may hold a secret).
    pub argument: String,
    pub problem: String,
    pub fix: String,
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "cloudrun-test curl refuses `{}`: {}\nfix: {}",
            self.argument, self.problem, self.fix
        )
    }
}

fn refusal(argument: &str, problem: impl Into<String>, fix: impl Into<String>) -> Refusal {
    // Shown quoted, on one line, whatever it holds.
    let mut shown: String = argument
        .chars()
        .map(|c| {
            if c.is_control() {
                c.escape_debug().to_string()
            } else {
                c.to_string()
            }
        })
        .collect();
    if shown.chars().count() > 100 {
        shown = shown.chars().take(100).chain("...".chars()).collect();
    }
    Refusal {
        argument: shown,
        problem: problem.into(),
        fix: fix.into(),
    }
}

/// Where to find raw curl with the token kept off every command line, for `url`.
/// (The recipe itself holds `Bearer ` followed by text, which error redaction
/// would blank out; `--help` shows it whole.)
pub fn raw_curl_recipe(url: &Url) -> String {
    format!(
        "call curl yourself with the token kept off every command line, as the end of \
         `cloudrun-test curl --help` shows: `cloudrun-test token --audience {}` piped through \
         sed into `curl -q -H @- '{url}'`",
        url.origin().ascii_serialization()
    )
}

/// One option as given, with its value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Given {
    spec: &'static Spec,
    value: Option<String>,
}

impl Given {
    /// As curl gets it: the short letter if there is one, else the long name; then the value.
    fn push_args(&self, args: &mut Vec<String>) {
        args.push(match self.spec.short {
            Some(letter) => format!("-{letter}"),
            None => format!("--{}", self.spec.long),
        });
        args.extend(self.value.clone());
    }
}

/// The user's arguments after the URL, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checked {
    given: Vec<Given>,
    pub verbose: bool,
    pub dump_header: bool,
    pub location: bool,
    pub max_redirs: u32,
    /// The last `-m`, in whole milliseconds as curl counts it: the limit for all the
    /// requests together. `None` without one, for less than a millisecond (curl's "no
    /// limit"), or for more than 49 days (passed on as given).
    pub max_time: Option<Duration>,
    pub x_serverless: bool,
    pub audience: Option<String>,
    /// The lines of every `-H @FILE`, checked, one per line: curl reads them from our
    /// pipe, with the token's, so a file changed after the check changes nothing.
    pub file_headers: String,
}

/// Redirects followed with -L unless --max-redirs says otherwise.
pub const DEFAULT_MAX_REDIRS: u32 = 10;

impl Checked {
    /// Checks every argument after the URL `url`; the first refused one is the error.
    /// `x_serverless`: given before the URL.
    pub fn check(args: &[String], url: &Url, x_serverless: bool) -> Result<Checked, Refusal> {
        let mut given = Vec::new();
        let mut index = 0;
        while index < args.len() {
            let arg = &args[index];
            index += 1;
            let mut next_value = || {
                let value = args.get(index).cloned();
                index += 1;
                value.ok_or_else(|| missing_value(arg))
            };
            if arg == "--" {
                return Err(refusal(
                    arg,
                    "curl takes every argument after `--` for a URL, and would send each the token",
                    "drop it; give exactly one URL, first: `cloudrun-test curl URL [OPTIONS]`",
                ));
            } else if let Some(name) = arg.strip_prefix("--") {
                let spec = long_option(arg, name, url)?;
                let value = match spec.value {
                    Value::None => None,
                    _ => Some(next_value()?),
                };
                given.push(Given { spec, value });
            } else if let Some(letters) = arg.strip_prefix('-').filter(|rest| !rest.is_empty()) {
                // A cluster such as -sSv; a letter taking a value takes the rest of the
                // cluster, or the next argument.
                for (at, letter) in letters.char_indices() {
                    let spec = short_option(arg, letter, url)?;
                    if spec.value == Value::None {
                        given.push(Given { spec, value: None });
                        continue;
                    }
                    let rest = &letters[at + letter.len_utf8()..];
                    let value = if rest.is_empty() {
                        next_value()?
                    } else {
                        rest.to_owned()
                    };
                    given.push(Given {
                        spec,
                        value: Some(value),
                    });
                    break;
                }
            } else {
                let (problem, fix) = Why::Url.explain();
                return Err(refusal(
                    arg,
                    format!("curl would take it for another URL: {problem}"),
                    format!("{fix}; if it is an option's value, put it right after that option"),
                ));
            }
        }
        Checked::from_given(given, x_serverless)
    }

    fn from_given(given: Vec<Given>, x_serverless: bool) -> Result<Checked, Refusal> {
        let mut checked = Checked {
            given: Vec::new(),
            verbose: false,
            dump_header: false,
            location: false,
            max_redirs: DEFAULT_MAX_REDIRS,
            max_time: None,
            x_serverless,
            audience: None,
            file_headers: String::new(),
        };
        for option in &given {
            check_value(option)?;
            check_files(option)?;
            match option.spec.role {
                Role::Verbose => checked.verbose = true,
                Role::DumpHeader => checked.dump_header = true,
                Role::Location => checked.location = true,
                Role::MaxRedirs => {
                    checked.max_redirs = option.value.as_deref().unwrap_or("").parse().unwrap_or(0)
                }
                Role::MaxTime => {
                    checked.max_time = option
                        .value
                        .as_deref()
                        .and_then(|seconds| seconds.parse::<f64>().ok())
                        .and_then(whole_milliseconds)
                }
                Role::XServerless => checked.x_serverless = true,
                Role::Audience => checked.audience = option.value.clone(),
                _ => {}
            }
        }
        for option in &given {
            if option.spec.value != Value::Header {
                continue;
            }
            let header = option.value.as_deref().unwrap_or("");
            match header.strip_prefix('@') {
                Some(file) => checked
                    .file_headers
                    .push_str(&header_file(file, checked.x_serverless)?),
                None => check_header(
                    header,
                    &format!("-H {}", header_name(header)),
                    checked.x_serverless,
                )?,
            }
        }
        if checked.location && checked.dump_header {
            return Err(refusal(
                "-D",
                "with -L, cloudrun-test curl reads every response's headers itself, to follow \
                 redirects within the service's origin only",
                "use -i to see the final response's headers with its body, or drop -L",
            ));
        }
        checked.given = given
            .into_iter()
            .filter(|option| {
                // Its checked lines go through our pipe instead.
                let header_file = option.spec.value == Value::Header
                    && option
                        .value
                        .as_deref()
                        .is_some_and(|value| value.starts_with('@'));
                !header_file
                    && matches!(
                        option.spec.role,
                        Role::Pass
                            | Role::Body
                            | Role::Method
                            | Role::Get
                            | Role::Head
                            | Role::Verbose
                            | Role::DumpHeader
                            | Role::MaxTime
                    )
            })
            .collect();
        Ok(checked)
    }

    /// The options for curl, each spelled as curl's short letter or exact long name.
    /// `drop_body` leaves out the body, -X and -G (a redirect turned the request into
    /// a plain GET of the new URL); `time_left` replaces the user's `-m`, if any.
    pub fn curl_args(&self, drop_body: bool, time_left: Option<Duration>) -> Vec<String> {
        let mut args = Vec::new();
        let time_left = time_left.filter(|_| self.max_time.is_some());
        for option in &self.given {
            let dropped =
                drop_body && matches!(option.spec.role, Role::Body | Role::Method | Role::Get);
            let replaced = option.spec.role == Role::MaxTime && time_left.is_some();
            if !dropped && !replaced {
                option.push_args(&mut args);
            }
        }
        if let Some(left) = time_left {
            // At least a millisecond: curl reads 0 as no limit.
            let millis = left.as_millis().max(1);
            let seconds = format!("{}.{:03}", millis / 1000, millis % 1000);
            args.extend(["--max-time".into(), seconds]);
        }
        args
    }

    /// The request method, as curl picks it.
    pub fn method(&self) -> String {
        let role = |role: Role| {
            self.given
                .iter()
                .filter(move |option| option.spec.role == role)
        };
        if let Some(method) = role(Role::Method).next_back() {
            return method
                .value
                .clone()
                .unwrap_or_default()
                .to_ascii_uppercase();
        }
        if role(Role::Head).next().is_some() {
            "HEAD".into()
        } else if self.has_body() && !self.data_in_query() {
            "POST".into()
        } else {
            "GET".into()
        }
    }

    pub fn has_body(&self) -> bool {
        self.given
            .iter()
            .any(|option| option.spec.role == Role::Body)
    }

    /// `-G`: the data went into the URL's query.
    pub fn data_in_query(&self) -> bool {
        self.given
            .iter()
            .any(|option| option.spec.role == Role::Get)
    }

    /// Whether curl reads the body from standard input (`-d @-`, `-F name=@-`...),
    /// which cannot be sent a second time.
    pub fn body_from_stdin(&self) -> bool {
        self.given.iter().any(|option| {
            let value = option.value.as_deref().unwrap_or("");
            match option.spec.long {
                "data" | "data-ascii" | "data-binary" | "json" => {
                    value == "@-" || value == "@/dev/stdin"
                }
                "data-urlencode" => value
                    .split_once('@')
                    .is_some_and(|(name, file)| !name.contains('=') && file == "-"),
                "form" => value.contains("=@-") || value.contains("=<-"),
                _ => false,
            }
        })
    }
}

fn missing_value(arg: &str) -> Refusal {
    refusal(
        arg,
        "it needs a value, and there is none after it",
        format!("give its value right after it: `{arg} VALUE`"),
    )
}

fn long_option(arg: &str, name: &str, url: &Url) -> Result<&'static Spec, Refusal> {
    if let Some(spec) = ALLOWED.iter().find(|spec| spec.long == name) {
        return Ok(spec);
    }
    if let Some((_, _, why)) = REFUSED.iter().find(|(long, _, _)| *long == name) {
        let (problem, fix) = why.explain();
        return Err(refusal(arg, problem, fix));
    }
    // curl takes any unambiguous prefix of a long option: say which it would be.
    let known = ALLOWED
        .iter()
        .map(|spec| spec.long)
        .chain(REFUSED.iter().map(|(long, _, _)| *long));
    let mut meant: Vec<&str> = known
        .filter(|long| !name.is_empty() && long.starts_with(name))
        .collect();
    meant.sort_unstable();
    let problem = "cloudrun-test curl takes curl's options by their exact names only";
    match meant.as_slice() {
        [] => Err(unknown(arg, url)),
        [one] => {
            let fix = match REFUSED.iter().find(|(long, _, _)| long == one) {
                None => format!("spell it out: --{one}"),
                Some((_, _, why)) => {
                    let (problem, fix) = why.explain();
                    format!("--{one} is refused too: {problem}; {fix}")
                }
            };
            Err(refusal(
                arg,
                format!("it reads as an abbreviation of --{one}, and {problem}"),
                fix,
            ))
        }
        many => {
            let allowed: Vec<&str> = many
                .iter()
                .copied()
                .filter(|long| ALLOWED.iter().any(|spec| spec.long == *long))
                .collect();
            let fix = match allowed.as_slice() {
                [] => format!("--{} are all refused", many.join(", --")),
                [one] => format!("spell out --{one}"),
                several => format!("spell out one of --{}", several.join(", --")),
            };
            Err(refusal(arg, problem, fix))
        }
    }
}

fn short_option(arg: &str, letter: char, url: &Url) -> Result<&'static Spec, Refusal> {
    if let Some(spec) = ALLOWED.iter().find(|spec| spec.short == Some(letter)) {
        return Ok(spec);
    }
    let shown = if arg.len() > 2 {
        format!("-{letter} (in {arg})")
    } else {
        arg.to_owned()
    };
    match REFUSED.iter().find(|(_, short, _)| *short == Some(letter)) {
        Some((_, _, why)) => {
            let (problem, fix) = why.explain();
            Err(refusal(&shown, problem, fix))
        }
        None => Err(unknown(&shown, url)),
    }
}

fn unknown(arg: &str, url: &Url) -> Refusal {
    refusal(
        arg,
        "it is not an option cloudrun-test curl knows to be safe (see `cloudrun-test curl \
         --help` for those it passes on)",
        format!("drop it, or {}", raw_curl_recipe(url)),
    )
}

/// The files an option makes curl read or write, `-` aside (standard input or output
/// where curl takes it). For a form, every name that may be one.
fn files_named(option: &Given) -> Vec<(Access, &str)> {
    let Some(value) = option.value.as_deref() else {
        return Vec::new();
    };
    let mut files = Vec::new();
    match option.spec.long {
        "output" | "dump-header" => files.push((Access::Write, value)),
        // No `-` here: curl opens a file of that name.
        "cacert" => return vec![(Access::Read, value)],
        // One folder, or several separated by `:`.
        "capath" => {
            return std::iter::once(value)
                .chain(value.split(':'))
                .map(|folder| (Access::Read, folder))
                .collect();
        }
        "data" | "data-ascii" | "data-binary" | "json" | "header" | "write-out" => {
            files.extend(value.strip_prefix('@').map(|file| (Access::Read, file)));
        }
        "data-urlencode" => files.extend(
            value
                .split_once('@')
                .filter(|(name, _)| !name.contains('='))
                .map(|(_, file)| (Access::Read, file)),
        ),
        "form" => files.extend(
            form_files(value)
                .into_iter()
                .map(|file| (Access::Read, file)),
        ),
        _ => {}
    }
    files.retain(|(_, file)| *file != "-");
    files
}

/// The names in a form field (`-F`) that curl may open: `name=@FILE` (several, after
/// commas), `name=<FILE`, and `;headers=@FILE` or `<FILE`. A superset: a piece that
/// is no file name is checked for nothing.
fn form_files(value: &str) -> Vec<&str> {
    let Some((_, content)) = value.split_once('=') else {
        return Vec::new();
    };
    let upload = content.starts_with('@');
    let mut files = Vec::new();
    for (at, piece) in content.split([';', ',']).map(str::trim).enumerate() {
        let lower = piece.to_ascii_lowercase();
        let file = if lower.starts_with("headers=") {
            piece["headers=".len()..].strip_prefix(['@', '<'])
        } else if at == 0 {
            piece.strip_prefix(['@', '<'])
        } else if upload
            && !["type=", "filename=", "encoder="]
                .iter()
                .any(|param| lower.starts_with(param))
        {
            Some(piece.strip_prefix('@').unwrap_or(piece))
        } else {
            None
        };
        files.extend(file.map(str::trim).filter(|file| !file.is_empty()));
    }
    files
}

/// curl holds two pipes of ours: the token's header (already read to its end) and
/// the response headers (which curl itself writes, so reading it never ends). A file
/// name leading to one of them, however spelled, could only hang curl or feed it our
/// own data; see [`files`].
fn check_files(option: &Given) -> Result<(), Refusal> {
    let value = option.value.as_deref().unwrap_or("");
    let shown = format!("--{} {value}", option.spec.long);
    let fix = "name a regular file or folder (or /dev/null), or `-` for standard input or \
               output where curl takes it";
    // A quoted form file name is unquoted by curl's own rules: too subtle to follow.
    if option.spec.long == "form" && value.contains(['"', '\\']) && value.contains(['@', '<']) {
        return Err(refusal(
            &shown,
            "it quotes a file name, which cloudrun-test curl cannot check as curl reads it",
            "name the file without quotes (rename a file whose name holds `,`, `;` or `\"`), \
             or send text with --form-string",
        ));
    }
    for (access, file) in files_named(option) {
        let verb = match access {
            Access::Read => "read",
            Access::Write => "write",
        };
        files::check(file, access).map_err(|problem| {
            refusal(
                &shown,
                format!("curl would {verb} the file `{file}`, and {problem}"),
                fix,
            )
        })?;
    }
    Ok(())
}

fn check_value(option: &Given) -> Result<(), Refusal> {
    let value = option.value.as_deref().unwrap_or("");
    let name = format!("--{}", option.spec.long);
    if matches!(option.spec.value, Value::Method | Value::HeadText) {
        check_head_text(&format!("{name} {value}"), value)?;
    }
    let valid = match option.spec.value {
        Value::None | Value::Text | Value::HeadText | Value::Header => true,
        Value::Method => !value.is_empty() && value.bytes().all(is_token_byte),
        Value::Seconds => value
            .parse::<f64>()
            .is_ok_and(|s| s.is_finite() && s >= 0.0),
        Value::Count => value.parse::<u32>().is_ok(),
    };
    if valid {
        return Ok(());
    }
    let (what, example) = match option.spec.value {
        Value::Method => ("an HTTP method", "-X DELETE"),
        Value::Seconds => ("a number of seconds", "--max-time 2.5"),
        _ => ("a whole number, 0 or more", "--retry 3"),
    };
    Err(refusal(
        &format!("{name} {value}"),
        format!("its value is not {what}"),
        format!("e.g. {example}"),
    ))
}

/// The one check for text curl writes into the request head (a header, the user
/// agent, the referer, the method): a control character there, a line break above
/// all, would end the header or the request and start one of the sender's making,
/// e.g. a second request to another host, carrying the token. A tab is harmless.
fn check_head_text(shown: &str, text: &str) -> Result<(), Refusal> {
    let control = |byte: u8| (byte < 0x20 && byte != b'\t') || byte == 0x7f;
    if !text.bytes().any(control) {
        return Ok(());
    }
    Err(refusal(
        shown,
        "it holds a line break or another control character, which would end the header \
         (or the request) and start another that curl does not show",
        "remove the control characters; give one header per -H",
    ))
}

/// `-m`'s seconds as curl takes them, cut to whole milliseconds; `None` for what curl
/// reads as no limit (under a millisecond) and for more than `u32::MAX` milliseconds
/// (49 days), which is passed on as given.
fn whole_milliseconds(seconds: f64) -> Option<Duration> {
    // A float-to-integer `as` saturates: NaN is 0, huge values u64::MAX.
    let millis = (seconds * 1000.0) as u64;
    (1..=u64::from(u32::MAX))
        .contains(&millis)
        .then(|| Duration::from_millis(millis))
}

/// RFC 9110 token characters (method and header names).
fn is_token_byte(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&byte)
}

/// A header's name as curl takes it (up to `:`, or `;` for an empty header).
fn header_name(header: &str) -> &str {
    header.split([':', ';']).next().unwrap_or("").trim()
}

/// The lines of the header file `file` (`-H @FILE`), each checked as a `-H` would be,
/// then as curl splits them: at every line break, blank lines dropped.
fn header_file(file: &str, x_serverless: bool) -> Result<String, Refusal> {
    let shown = format!("-H @{file}");
    let text = files::read_header_file(file).map_err(|problem| {
        refusal(
            &shown,
            format!("cloudrun-test curl reads the header file itself, to check it, and {problem}"),
            "name a regular file of `Name: value` lines, or pass each header with -H",
        )
    })?;
    let text = String::from_utf8(text)
        .map_err(|_| refusal(&shown, "it is not text (UTF-8)", "pass each header with -H"))?;
    let mut lines = String::new();
    for (number, line) in text.split('\n').enumerate() {
        for line in line.split('\r').filter(|line| !line.is_empty()) {
            // Only the name is shown: the value may be a secret.
            let shown = format!("{shown} (line {}: {})", number + 1, header_name(line));
            check_header(line, &shown, x_serverless)?;
            lines.push_str(line);
            lines.push('\n');
        }
    }
    Ok(lines)
}

/// A header the user adds (`-H LINE` or a line of `-H @FILE`, shown as `shown`) must
/// be one header, and must not replace or duplicate the token's header nor name
/// another host.
fn check_header(header: &str, shown: &str, x_serverless: bool) -> Result<(), Refusal> {
    check_head_text(shown, header)?;
    let name = header_name(header);
    if name.is_empty() || !name.bytes().all(is_token_byte) {
        return Err(refusal(
            shown,
            "it is not a header (`Name: value`)",
            "e.g. -H 'Accept: application/json'",
        ));
    }
    let (problem, fix) = if name.eq_ignore_ascii_case("authorization") && !x_serverless {
        (
            "cloudrun-test curl sends the identity token in Authorization",
            "add --x-serverless: the token then goes in X-Serverless-Authorization (Cloud Run \
             checks it first) and Authorization is the application's",
        )
    } else if name.eq_ignore_ascii_case("x-serverless-authorization") {
        (
            "cloudrun-test curl sends the identity token itself (in X-Serverless-Authorization \
             with --x-serverless)",
            "drop it; to send a token of your own, call curl yourself",
        )
    } else if name.eq_ignore_ascii_case("proxy-authorization") {
        (
            "it is meant for a proxy, and cloudrun-test curl picks the proxy from HTTPS_PROXY",
            "put the proxy's credentials in HTTPS_PROXY (http://USER:PASSWORD@HOST:PORT)",
        )
    } else if name.eq_ignore_ascii_case("host") {
        (
            "it names another host: the token, meant for the URL's service, would reach \
             whichever service answers to that name behind the same address",
            "put the host you mean in the URL (with --audience if the token's audience \
             differs from the URL's origin)",
        )
    } else {
        return Ok(());
    };
    Err(refusal(shown, problem, fix))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url() -> Url {
        Url::parse("https://hello-1.europe-west1.run.app/a").unwrap()
    }

    fn check(args: &[&str]) -> Result<Checked, Refusal> {
        let args: Vec<String> = args.iter().map(|arg| arg.to_string()).collect();
        Checked::check(&args, &url(), false)
    }

    fn refused(args: &[&str]) -> Refusal {
        check(args).expect_err(&format!("{args:?} is refused"))
    }

    #[test]
    fn every_allowed_option_passes_with_its_value_in_curls_spelling() {
        let cases: &[(&[&str], &[&str])] = &[
            (&["-s"], &["-s"]),
            (&["--silent"], &["-s"]),
            (&["-S", "--show-error"], &["-S", "-S"]),
            (&["--verbose"], &["-v"]),
            (
                &["-i", "-I", "-f", "--fail-with-body"],
                &["-i", "-I", "-f", "--fail-with-body"],
            ),
            (
                &["-N", "--no-progress-meter", "-#"],
                &["-N", "--no-progress-meter", "-#"],
            ),
            (
                &["-o", "out.json", "--create-dirs"],
                &["-o", "out.json", "--create-dirs"],
            ),
            (&["--output", "-"], &["-o", "-"]),
            (&["-D", "headers.txt"], &["-D", "headers.txt"]),
            (&["-w", "%{http_code}"], &["-w", "%{http_code}"]),
            (&["--write-out", "%header{etag}"], &["-w", "%header{etag}"]),
            (&["-X", "POST"], &["-X", "POST"]),
            (&["--request", "PATCH"], &["-X", "PATCH"]),
            (&["-G", "-d", "q=1"], &["-G", "-d", "q=1"]),
            (
                &["-H", "Accept: application/json"],
                &["-H", "Accept: application/json"],
            ),
            (&["-H", "X-Empty;"], &["-H", "X-Empty;"]),
            (&["-H", "X-Tab:\ta"], &["-H", "X-Tab:\ta"]),
            (
                &["-A", "agent/1", "-e", "https://else.example/"],
                &["-A", "agent/1", "-e", "https://else.example/"],
            ),
            (
                &["--compressed", "--path-as-is"],
                &["--compressed", "--path-as-is"],
            ),
            (&["--data", "@body.json"], &["-d", "@body.json"]),
            (
                &[
                    "--data-ascii",
                    "a",
                    "--data-binary",
                    "@f",
                    "--data-raw",
                    "@x",
                ],
                &[
                    "--data-ascii",
                    "a",
                    "--data-binary",
                    "@f",
                    "--data-raw",
                    "@x",
                ],
            ),
            (
                &["--data-urlencode", "q=a b", "--json", "{}"],
                &["--data-urlencode", "q=a b", "--json", "{}"],
            ),
            (
                &["-F", "file=@photo.png", "--form-string", "a=@b"],
                &["-F", "file=@photo.png", "--form-string", "a=@b"],
            ),
            (
                &["--http1.1", "--http2", "--http2-prior-knowledge"],
                &["--http1.1", "--http2", "--http2-prior-knowledge"],
            ),
            (&["-4", "--ipv6"], &["-4", "-6"]),
            (
                &["--cacert", "ca.pem", "--capath", "certs"],
                &["--cacert", "ca.pem", "--capath", "certs"],
            ),
            (
                &["-m", "2.5", "--connect-timeout", "1"],
                &["-m", "2.5", "--connect-timeout", "1"],
            ),
            (
                &[
                    "--retry",
                    "3",
                    "--retry-delay",
                    "1",
                    "--retry-max-time",
                    "10",
                ],
                &[
                    "--retry",
                    "3",
                    "--retry-delay",
                    "1",
                    "--retry-max-time",
                    "10",
                ],
            ),
            (
                &["--retry-all-errors", "--retry-connrefused"],
                &["--retry-all-errors", "--retry-connrefused"],
            ),
        ];
        for (given, passed) in cases {
            let checked = check(given).unwrap_or_else(|error| panic!("{given:?}: {error}"));
            assert_eq!(checked.curl_args(false, None), *passed, "{given:?}");
        }
    }

    #[test]
    fn short_clusters_take_their_value_from_the_rest_or_the_next_argument() {
        let checked = check(&["-sSv", "-XPOST", "-sd", "x=1", "-ohttps://x"]).unwrap();
        assert_eq!(
            checked.curl_args(false, None),
            [
                "-s",
                "-S",
                "-v",
                "-X",
                "POST",
                "-s",
                "-d",
                "x=1",
                "-o",
                "https://x"
            ]
        );
        assert!(checked.verbose);
        // Values that look like URLs or options are values, as curl takes them.
        let checked = check(&["-e", "https://elsewhere.example/", "-d", "--url"]).unwrap();
        assert_eq!(
            checked.curl_args(false, None),
            ["-e", "https://elsewhere.example/", "-d", "--url"]
        );
    }

    #[test]
    fn our_own_options_and_the_implied_ones_are_not_passed_on() {
        let checked = check(&[
            "-q",
            "-g",
            "-sL",
            "--max-redirs",
            "3",
            "--x-serverless",
            "--audience",
            "https://a.example",
        ])
        .unwrap();
        assert_eq!(checked.curl_args(false, None), ["-s"]);
        assert!(checked.location && checked.x_serverless);
        assert_eq!(checked.max_redirs, 3);
        assert_eq!(checked.audience.as_deref(), Some("https://a.example"));
        assert_eq!(check(&[]).unwrap().max_redirs, DEFAULT_MAX_REDIRS);
    }

    #[test]
    fn the_max_time_is_one_limit_that_later_hops_get_what_is_left_of() {
        let checked = check(&["-s", "-m", "5", "--max-time", "2.5"]).unwrap();
        assert_eq!(checked.max_time, Some(Duration::from_millis(2500)));
        assert_eq!(
            checked.curl_args(false, Some(Duration::from_micros(1_200_900))),
            ["-s", "--max-time", "1.200"],
            "whole milliseconds, cut as curl cuts them"
        );
        let cluster = check(&["-sm5"]).unwrap();
        assert_eq!(cluster.max_time, Some(Duration::from_secs(5)));
        assert_eq!(
            check(&["-m", "1.9999"]).unwrap().max_time,
            Some(Duration::from_millis(1999))
        );
        assert_eq!(
            checked.curl_args(false, Some(Duration::ZERO)),
            ["-s", "--max-time", "0.001"],
            "never 0, which curl reads as no limit"
        );
        // -m 0, or under a millisecond, is curl's "no limit": passed on as given, on
        // every hop; so is a limit beyond 49 days. The last -m counts.
        for given in [
            &["-m", "0"][..],
            &["-m", "0.0005"],
            &["-m", "1e300"],
            &["-m", "5", "-m", "0"],
        ] {
            let unlimited = check(given).unwrap();
            assert_eq!(unlimited.max_time, None, "{given:?}");
            let passed = unlimited.curl_args(false, Some(Duration::from_secs(1)));
            assert_eq!(passed, given, "{given:?}");
        }
    }

    #[test]
    fn extra_urls_are_refused_with_or_without_a_scheme() {
        for args in [
            &["https://elsewhere.example/"][..],
            &["evil.example"],
            &["127.0.0.1:9/x"],
            &["-s", "https://hello-1.europe-west1.run.app/b"],
            &["--url", "https://elsewhere.example/"],
            &["--url-query", "a=b"],
            &["--", "https://elsewhere.example/"],
            &["-"],
        ] {
            let error = refused(args).to_string();
            assert!(
                error.contains("URL") && error.contains("fix: "),
                "{args:?}: {error}"
            );
        }
    }

    #[test]
    fn abbreviations_are_refused_naming_the_option_curl_would_take() {
        let error = refused(&["--verb"]).to_string();
        assert!(
            error.contains("`--verb`") && error.contains("--verbose"),
            "{error}"
        );
        assert!(error.contains("fix: spell it out: --verbose"), "{error}");
        // curl finds --locat ambiguous; it is not passed on either way.
        let error = refused(&["--locat"]).to_string();
        assert!(error.contains("fix: spell out --location"), "{error}");
        let error = refused(&["--trace-a", "file"]).to_string();
        assert!(error.contains("--trace-ascii is refused too"), "{error}");
        let error = refused(&["--data-"]).to_string();
        assert!(
            error.contains("--data-binary") && error.contains("--data-raw"),
            "{error}"
        );
        // A long option with `=` is not curl syntax; not an exact name either.
        assert!(check(&["--max-time=1"]).is_err());
    }

    #[test]
    fn each_class_of_dangerous_option_is_refused_with_its_reason() {
        let cases: &[(&[&str], &str)] = &[
            (&["-K", "file"], "read options and URLs from a file"),
            (&["--config", "file"], "read options and URLs from a file"),
            (&["--next"], "another request"),
            (&["-:"], "another request"),
            (&["--trace", "f"], "to a file"),
            (&["--trace-ascii", "-"], "to a file"),
            (&["--libcurl", "f"], "to a file"),
            (&["--stderr", "f"], "to a file"),
            (&["-x", "http://proxy:1"], "where the connection goes"),
            (&["--proxy", "http://proxy:1"], "where the connection goes"),
            (&["--preproxy", "p"], "where the connection goes"),
            (&["--socks5-hostname", "p"], "where the connection goes"),
            (&["--connect-to", "a:1:b:2"], "where the connection goes"),
            (&["--resolve", "a:1:1.2.3.4"], "where the connection goes"),
            (&["--unix-socket", "/s"], "where the connection goes"),
            (
                &["--abstract-unix-socket", "s"],
                "where the connection goes",
            ),
            (&["--interface", "eth0"], "where the connection goes"),
            (&["--doh-url", "https://d/"], "where the connection goes"),
            (&["--noproxy", "*"], "where the connection goes"),
            (&["-k"], "nobody verified"),
            (&["-sk"], "nobody verified"),
            (&["--insecure"], "nobody verified"),
            (&["--location-trusted"], "whatever host a redirect names"),
            (&["-u", "a:b"], "Authorization"),
            (&["--netrc"], "Authorization"),
            (&["--netrc-file", "f"], "Authorization"),
            (&["--oauth2-bearer", "t"], "Authorization"),
            (&["--proto", "=http"], "https, or http to this machine"),
            (&["-T", "file"], "several files"),
            (&["--post302"], "follows redirects itself"),
            (&["--variable", "a=b"], "environment variables"),
        ];
        for (args, why) in cases {
            let error = refused(args).to_string();
            assert!(
                error.contains(why) && error.contains("\nfix: "),
                "{args:?}: {error}"
            );
            let named = args[0].trim_start_matches('-').chars().last().unwrap();
            assert!(error.contains(named), "{args:?} is named: {error}");
        }
    }

    #[test]
    fn unknown_options_are_refused_with_the_raw_curl_recipe() {
        for args in [
            &["--http3"][..],
            &["-z", "date"],
            &["-O"],
            &["--cookie", "a=b"],
        ] {
            let error = refused(args).to_string();
            assert!(
                error.contains("not an option cloudrun-test curl knows"),
                "{error}"
            );
            assert!(
                error.contains(
                    "`cloudrun-test token --audience https://hello-1.europe-west1.run.app`"
                ),
                "{error}"
            );
        }
    }

    #[test]
    fn values_naming_open_file_descriptors_are_refused() {
        for args in [
            &["-w", "@/dev/fd/5"][..],
            &["-w", "@/dev//fd/5"],
            &["-d", "@/dev/fd/3"],
            &["-d", "@/dev/./fd/3"],
            &["--data-binary", "@/proc/self/fd/3"],
            &["--data-urlencode", "a@/dev/fd/3"],
            &["--json", "@/dev/fd/3"],
            &["-H", "@/dev/fd/3"],
            &["-F", "f=@/dev/fd/3"],
            &["-F", "f=@ok.txt,/dev/fd/3"],
            &["-F", "f=@ok.txt;type=text/plain,@/dev/fd/3"],
            &["-F", "f=<-;headers=@/proc/self/fd/3"],
            &["-F", "f=text;HEADERS=</dev/fd/3"],
            &["-o", "/dev/fd/5"],
            &["-o", "/dev//fd/5"],
            &["-D", "/proc/self/fd/5"],
            &["--cacert", "/dev/fd/3"],
            &["--capath", "certs:/dev/fd/3"],
        ] {
            let error = refused(args).to_string();
            assert!(
                error.contains("/proc/") && error.contains("\nfix: "),
                "{args:?}: {error}"
            );
        }
        for args in [
            &["-d", "path=/dev/fd/3"][..],
            &["--data-raw", "@/dev/fd/3"],
            &["--form-string", "f=@/dev/fd/3"],
            &["-F", "f=text/dev/fd/3"],
            &["-o", "/dev/stdout"],
            &["-o", "/dev/null"],
            &["-o", "-"],
            &["-w", "/dev/fd/3"],
            &["-d", "@/dev/stdin"],
            &["-d", "@-"],
        ] {
            assert!(check(args).is_ok(), "{args:?}");
        }
        assert!(check(&["-d", "@/dev/stdin"]).unwrap().body_from_stdin());
        // Quoted form file names follow curl's own unquoting: refused.
        let error = refused(&["-F", "f=@\"a,/dev/fd/3\""]).to_string();
        assert!(error.contains("quotes a file name"), "{error}");
        assert!(check(&["-F", "f=\"quoted text\""]).is_ok());
    }

    #[test]
    fn form_fields_name_every_file_curl_may_open() {
        let cases: &[(&str, &[&str])] = &[
            ("f=text", &[]),
            ("f=@a.png", &["a.png"]),
            ("f=@ a.png ;type=image/png;filename=x.png", &["a.png"]),
            ("f=@a,b;type=text/plain,c", &["a", "b", "c"]),
            ("f=<body.txt", &["body.txt"]),
            ("f=text;headers=@h.txt", &["h.txt"]),
            ("f=(;type=multipart/mixed;headers=<h.txt", &["h.txt"]),
            ("no-equals@x", &[]),
        ];
        for (value, files) in cases {
            assert_eq!(form_files(value), *files, "{value}");
        }
    }

    #[test]
    fn control_characters_in_the_request_head_are_refused_wherever_they_come_from() {
        for args in [
            &[
                "-A",
                "x\r\n\r\nGET /steal HTTP/1.1\r\nHost: other\r\nX-Pad: ",
            ][..],
            &["--user-agent", "x\ny"],
            &["-e", "https://a.example/\r\nHost: other"],
            &["--referer", "x\u{7f}"],
            &["-H", "X-A: 1\rHost: other"],
            &["-H", "X-A: 1\u{0}"],
            &["-X", "GET / HTTP/1.1\r\nHost: other\r\n\r\nGET"],
        ] {
            let error = refused(args).to_string();
            assert!(
                error.contains("control character") && error.contains("\nfix: "),
                "{args:?}: {error}"
            );
            assert_eq!(error.lines().count(), 2, "shown on one line: {error}");
        }
        assert!(check(&["-A", "agent\t1", "-e", "https://a.example/"]).is_ok());
    }

    #[test]
    fn a_host_header_is_refused_in_any_case() {
        for header in ["Host: other.example", "host:other", "HOST;", " Host : x"] {
            let error = refused(&["-H", header]).to_string();
            assert!(error.contains("another host"), "{header}: {error}");
        }
        assert!(check(&["-H", "X-Forwarded-Host: a"]).is_ok());
    }

    #[test]
    fn header_files_are_read_checked_line_by_line_and_handed_over_as_checked() {
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, text: &str| {
            let path = dir.path().join(name);
            std::fs::write(&path, text).unwrap();
            format!("@{}", path.display())
        };
        let good = write(
            "good",
            "Accept: text/plain\r\n\r\nX-Key: s3cret\rX-Empty;\n",
        );
        let checked = check(&["-s", "-H", &good, "-H", "A: b"]).unwrap();
        assert_eq!(
            checked.file_headers,
            "Accept: text/plain\nX-Key: s3cret\nX-Empty;\n"
        );
        assert_eq!(checked.curl_args(false, None), ["-s", "-H", "A: b"]);
        for (text, why) in [
            ("Accept: a\nHost: other.example\n", "another host"),
            ("X-A: 1\nAuthorization: Bearer mine\n", "Authorization"),
            ("Proxy-Authorization: Basic x", "proxy"),
            ("X-A: 1\u{0}", "control character"),
            ("not a header\n", "not a header"),
        ] {
            let file = write("bad", text);
            let error = refused(&["-H", &file]).to_string();
            assert!(
                error.contains(why) && error.contains("line "),
                "{text:?}: {error}"
            );
            assert!(!error.contains("mine"), "a value is not shown: {error}");
        }
        let file = write("auth", "Authorization: Basic x\n");
        assert!(check(&["--x-serverless", "-H", &file]).is_ok());
        let missing = format!("@{}", dir.path().join("missing").display());
        let error = refused(&["-H", &missing]).to_string();
        assert!(
            error.contains("cannot be read") && error.contains("fix: "),
            "{error}"
        );
    }

    #[test]
    fn values_are_checked() {
        assert!(
            refused(&["-X", "GET / HTTP/1.1"])
                .to_string()
                .contains("HTTP method")
        );
        assert!(refused(&["-X", ""]).to_string().contains("HTTP method"));
        assert!(refused(&["-m", "soon"]).to_string().contains("seconds"));
        assert!(
            refused(&["--max-time", "NaN"])
                .to_string()
                .contains("seconds")
        );
        assert!(
            refused(&["--retry", "-1"])
                .to_string()
                .contains("whole number")
        );
        assert!(
            refused(&["--max-redirs", "-1"])
                .to_string()
                .contains("whole number")
        );
        assert!(refused(&["-H"]).to_string().contains("needs a value"));
        assert!(refused(&["-sX"]).to_string().contains("needs a value"));
    }

    #[test]
    fn headers_that_would_clash_with_the_token_are_refused_without_showing_their_value() {
        let error = refused(&["-H", "Authorization: Basic c2VjcmV0"]).to_string();
        assert!(
            error.contains("--x-serverless") && !error.contains("c2VjcmV0"),
            "{error}"
        );
        assert!(check(&["-H", "authorization: Basic x", "--x-serverless"]).is_ok());
        let args = ["-H".to_string(), "Authorization: Basic x".to_string()];
        assert!(
            Checked::check(&args, &url(), true).is_ok(),
            "--x-serverless before the URL"
        );
        for header in [
            "X-Serverless-Authorization: Bearer x",
            "Proxy-Authorization: Basic x",
        ] {
            assert!(check(&["-H", header]).is_err(), "{header}");
            assert!(
                check(&["--x-serverless", "-H", header]).is_err(),
                "{header}"
            );
        }
        assert!(
            refused(&["-H", "X-A: 1\r\nHost: evil"])
                .to_string()
                .contains("line break")
        );
        assert!(
            refused(&["-H", "no header"])
                .to_string()
                .contains("not a header")
        );
    }

    #[test]
    fn the_users_dump_header_is_refused_with_location() {
        let error = refused(&["-L", "-D", "h.txt"]).to_string();
        assert!(error.contains("`-D`") && error.contains("-i"), "{error}");
    }

    #[test]
    fn a_redirect_to_get_drops_the_body_the_method_and_get() {
        let checked = check(&["-s", "-X", "PUT", "-d", "a", "--json", "{}", "-H", "A: b"]).unwrap();
        assert_eq!(checked.method(), "PUT");
        assert_eq!(checked.curl_args(true, None), ["-s", "-H", "A: b"]);
        assert_eq!(check(&["-d", "a"]).unwrap().method(), "POST");
        assert_eq!(check(&["-G", "-d", "a"]).unwrap().method(), "GET");
        assert_eq!(check(&["-I"]).unwrap().method(), "HEAD");
        assert_eq!(check(&["-F", "a=b"]).unwrap().method(), "POST");
        assert_eq!(check(&[]).unwrap().method(), "GET");
    }

    #[test]
    fn a_body_from_standard_input_is_recognised() {
        for args in [
            &["-d", "@-"][..],
            &["--data-binary", "@-"],
            &["--json", "@-"],
            &["--data-urlencode", "q@-"],
            &["--data-urlencode", "@-"],
            &["-F", "file=@-"],
            &["-F", "file=<-"],
        ] {
            assert!(check(args).unwrap().body_from_stdin(), "{args:?}");
        }
        for args in [
            &["-d", "@file"][..],
            &["--data-raw", "@-"],
            &["--data-urlencode", "q=a@-"],
        ] {
            assert!(!check(args).unwrap().body_from_stdin(), "{args:?}");
        }
    }
}
