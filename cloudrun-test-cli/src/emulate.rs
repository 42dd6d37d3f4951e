//! `cloudrun-test emulate`: the emulator around a command, as `cargo test` would see
//! Google and Cloud Run.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, ExitCode};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use cloudrun_test_emulator::{Emulator, Fault, ServiceConfig, Upstream, is_outside_setting};

/// Start the emulator, run COMMAND with the environment pointing at it, stop it.
///
/// Each service gets its own origin with Cloud Run's IAM check in front of either a
/// built-in echo app, an upstream URL, or a command started with PORT set (as Cloud
/// Run starts containers). A service-account key for --as is written to a temporary
/// folder and exported as GOOGLE_APPLICATION_CREDENTIALS.
///
/// COMMAND sees only the emulator's world: the shell's Google and cloudrun-test
/// settings (CLOUDRUN_TEST_URL_*, CLOUDRUN_TEST_PROFILE, CLOUDRUN_TEST_ID_TOKEN,
/// GOOGLE_*, CLOUDSDK_*, GCE_METADATA_HOST...) are removed, every emulated service
/// resolves to the emulator whatever cloudrun-test.toml says, a service that is not
/// emulated is an error, and the token cache lives in the temporary folder.
///
/// Examples:
///
///   cloudrun-test emulate --service hello -- cargo test
///   cloudrun-test emulate --service hello=http://127.0.0.1:8080 -- cargo test
///   cloudrun-test emulate --serve 'hello=cargo run -q -p hello' -- cargo test -p hello
///   cloudrun-test emulate --service hello --invoker someone-else@example.com -- cargo test
///   cloudrun-test emulate --service hello --invoker deployer@emulated-project.iam.gserviceaccount.com \
///       --token-creator tester@emulated-project.iam.gserviceaccount.com=deployer@emulated-project.iam.gserviceaccount.com \
///       -- cargo test                                # tests with impersonate = "deployer@..."
///   cloudrun-test emulate --serve 'hello=cargo run -q' --tag hello=candidate -- \
///       env CLOUDRUN_TEST_TAG=candidate cargo test
///   cloudrun-test emulate --service hello --fault service-error=hello:503x2 \
///       --fault token-delay=2s -- cargo test          # does the suite cope?
///   cloudrun-test emulate --serve 'greeter=cargo run -q -p greeter' --use-http2 greeter \
///       --timeout greeter=30m -- cargo test -p greeter   # gRPC over h2c, long streams
///   cloudrun-test emulate --service hello        # no command: runs until Ctrl-C
#[derive(clap::Args)]
#[command(verbatim_doc_comment)]
pub struct EmulateArgs {
    /// A service: NAME (echo app) or NAME=UPSTREAM_URL. Repeatable.
    #[arg(long = "service", value_name = "NAME[=UPSTREAM]")]
    services: Vec<String>,
    /// A service whose upstream is COMMAND, started with PORT set. It keeps your
    /// environment, as when you run it yourself (its settings, and the credentials it
    /// uses for real backends), minus CLOUDRUN_TEST_ID_TOKEN. Repeatable.
    #[arg(long = "serve", value_name = "NAME=COMMAND")]
    serves: Vec<String>,
    /// A traffic tag with its own URL in front of the same upstream, as
    /// `gcloud run deploy --no-traffic --tag TAG` creates. Repeatable.
    #[arg(long = "tag", value_name = "SERVICE=TAG")]
    tags: Vec<String>,
    /// Declare SERVICE end-to-end HTTP/2, as `gcloud run deploy --use-http2` does: the
    /// front speaks h2c (HTTP/2 cleartext) to its upstream, as gRPC streaming needs
    /// (WebSockets then do not pass). Repeatable.
    #[arg(long = "use-http2", value_name = "SERVICE")]
    use_http2: Vec<String>,
    /// SERVICE's request timeout, as `gcloud run deploy --timeout` sets it (default
    /// 300s, at most 1h): it bounds the whole answer, streams and WebSocket sessions
    /// included; past it the front answers 504, or cuts an answer already begun.
    /// Repeatable.
    #[arg(long = "timeout", value_name = "SERVICE=DURATION", value_parser = parse_timeout)]
    timeouts: Vec<(String, Duration)>,
    /// How long to wait for a --serve command to listen on its PORT.
    #[arg(long, default_value = "300s", value_parser = parse_duration)]
    serve_timeout: Duration,
    /// A member allowed to invoke every service (user:EMAIL, serviceAccount:EMAIL,
    /// EMAIL or allUsers). Default: the --as service account. Repeatable.
    #[arg(long = "invoker", value_name = "MEMBER")]
    invokers: Vec<String>,
    /// The service account whose key is exported as GOOGLE_APPLICATION_CREDENTIALS.
    #[arg(long = "as", value_name = "EMAIL")]
    identity: Option<String>,
    /// Let CALLER (an IAM member, e.g. serviceAccount:EMAIL; a bare email is a
    /// service account) mint tokens as service account TARGET, for tests that
    /// impersonate it (`impersonate = "TARGET"`). Repeatable.
    #[arg(long = "token-creator", value_name = "CALLER=TARGET")]
    token_creators: Vec<String>,
    #[arg(long, default_value = "emulated-project")]
    project: String,
    #[arg(long, default_value = "europe-west1")]
    region: String,
    /// Lifetime of the identity tokens the emulator issues.
    #[arg(long, default_value = "3600s", value_parser = parse_duration)]
    token_lifetime: Duration,
    /// A fault to inject from the start. Repeatable. One of:
    /// token-error=STATUS[xN] (the token endpoint answers STATUS, N times),
    /// token-delay=DURATION, token-hang, admin-error=STATUS[xN] (the Admin API),
    /// service-error=SERVICE:STATUS[xN],
    /// connection-reset=SERVICE[:xN], cold-start=SERVICE:DURATION, rotate-key.
    #[arg(long = "fault", value_name = "FAULT", value_parser = parse_fault)]
    faults: Vec<Fault>,
    /// The command to run inside the emulated environment.
    #[arg(last = true, value_name = "COMMAND")]
    command: Vec<String>,
}

pub fn run(args: EmulateArgs) -> Result<ExitCode, String> {
    let identity = args
        .identity
        .clone()
        .unwrap_or_else(|| format!("tester@{}.iam.gserviceaccount.com", args.project));
    let invokers = if args.invokers.is_empty() {
        vec![format!("serviceAccount:{identity}")]
    } else {
        args.invokers.clone()
    };

    let names: Vec<&str> = args
        .services
        .iter()
        .chain(&args.serves)
        .map(|spec| spec.split('=').next().unwrap_or(spec))
        .collect();
    for spec in &args.tags {
        match spec.split_once('=') {
            Some((service, tag)) if names.contains(&service) && !tag.is_empty() => {}
            _ => {
                return Err(format!(
                    "--tag {spec:?}: expected SERVICE=TAG for a service given with --service or --serve"
                ));
            }
        }
    }
    let unknown = args
        .use_http2
        .iter()
        .chain(args.timeouts.iter().map(|(name, _)| name))
        .find(|name| !names.contains(&name.as_str()));
    if let Some(name) = unknown {
        return Err(format!(
            "--use-http2/--timeout {name:?}: not a service given with --service or --serve"
        ));
    }
    let mut builder = Emulator::builder()
        .project(&args.project)
        .region(&args.region)
        .id_token_lifetime(args.token_lifetime);
    for spec in &args.token_creators {
        match spec.split_once('=') {
            Some((caller, target)) if !caller.is_empty() && target.contains('@') => {
                builder = builder.token_creator(caller, target);
            }
            _ => {
                return Err(format!(
                    "--token-creator {spec:?}: expected CALLER=TARGET, e.g. \
                     serviceAccount:tester@{project}.iam.gserviceaccount.com=deployer@{project}.iam.gserviceaccount.com",
                    project = args.project
                ));
            }
        }
    }
    let mut upstreams = Vec::new();
    for spec in &args.services {
        let (name, upstream) = match spec.split_once('=') {
            None => (spec.as_str(), Upstream::Echo),
            Some((name, url)) => {
                let url = url
                    .parse()
                    .map_err(|error| format!("--service {spec}: {url:?} is not a URL ({error})"))?;
                (name, Upstream::Url(url))
            }
        };
        builder = builder.service(configure(
            name,
            ServiceConfig::new(name).upstream(upstream),
            &invokers,
            &args,
        ));
    }
    for spec in &args.serves {
        let (name, command) = spec
            .split_once('=')
            .ok_or_else(|| format!("--serve {spec:?}: expected NAME=COMMAND"))?;
        let upstream = ServedUpstream::start(name, command, args.serve_timeout)?;
        let url = format!("http://{}", upstream.address)
            .parse()
            .map_err(|error| format!("internal: bad upstream URL ({error})"))?;
        builder = builder.service(configure(
            name,
            ServiceConfig::new(name).upstream(Upstream::Url(url)),
            &invokers,
            &args,
        ));
        upstreams.push(upstream);
    }
    let emulator = builder
        .start()
        .map_err(|error| format!("starting the emulator failed: {error}"))?;
    for fault in &args.faults {
        emulator
            .inject(fault.clone())
            .map_err(|error| format!("--fault {fault}: {error}"))?;
        eprintln!("cloudrun-test emulate: fault injected: {fault}");
    }

    // The key file, COMMAND's token cache and gcloud folder: gone when we return.
    let scratch = tempfile::Builder::new()
        .prefix("cloudrun-test-emulate-")
        .tempdir()
        .map_err(|error| format!("creating a temporary folder for the key file failed: {error}"))?;
    let key_file = emulator
        .write_service_account_key(&identity, scratch.path())
        .map_err(|error| format!("writing the service-account key file failed: {error}"))?;

    let environment = emulator.hermetic_environment(&key_file, scratch.path());
    eprintln!(
        "cloudrun-test emulate: Google endpoints at {}",
        emulator.base_url()
    );
    for name in &names {
        if let Some(url) = emulator.service_url(name) {
            eprintln!("cloudrun-test emulate: service {name} at {url}");
        }
    }
    for (service, tag) in args.tags.iter().filter_map(|spec| spec.split_once('=')) {
        if let Some(url) = emulator.tag_url(service, tag) {
            eprintln!("cloudrun-test emulate: tag {tag} of {service} at {url}");
        }
    }
    eprintln!("cloudrun-test emulate: environment:");
    let mut removed: Vec<String> = std::env::vars_os()
        .filter_map(|(name, _)| name.into_string().ok())
        .filter(|name| is_outside_setting(name))
        .filter(|name| !environment.iter().any(|(set, _)| set == name))
        .collect();
    removed.sort();
    for name in removed {
        eprintln!("  unset {name}");
    }
    for (name, value) in &environment {
        eprintln!("  export {name}={value}");
    }

    // Ctrl-C reaches COMMAND too; we outlive it to stop the emulator and the --serve
    // commands (which run in their own process groups and do not see it).
    catch_interrupt();
    if args.command.is_empty() {
        eprintln!("cloudrun-test emulate: running until interrupted (Ctrl-C)");
        while !INTERRUPTED.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(100));
        }
        return Ok(ExitCode::SUCCESS);
    }
    let mut command = Command::new(&args.command[0]);
    command.args(&args.command[1..]);
    emulator.make_hermetic(&mut command, &key_file, scratch.path());
    let status = command
        .status()
        .map_err(|error| format!("starting {:?} failed: {error}", args.command[0]))?;
    drop(upstreams);
    drop(emulator);
    drop(scratch);
    Ok(match status.code() {
        Some(code) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
        None => ExitCode::FAILURE, // killed by a signal
    })
}

/// The invokers, tags, protocol and timeout that apply to the service `name`.
fn configure(
    name: &str,
    mut service: ServiceConfig,
    invokers: &[String],
    args: &EmulateArgs,
) -> ServiceConfig {
    let tags = &args.tags;
    service = service.use_http2(args.use_http2.iter().any(|named| named == name));
    for (_, timeout) in args.timeouts.iter().filter(|(named, _)| named == name) {
        service = service.timeout(*timeout);
    }
    for member in invokers {
        service = service.invoker(member);
    }
    for (_, tag) in tags
        .iter()
        .filter_map(|spec| spec.split_once('='))
        .filter(|(service, _)| *service == name)
    {
        service = service.tag(tag);
    }
    service
}

/// A `--serve` command: the user's own service, started like Cloud Run starts a
/// container (PORT set), stopped with its whole process group.
struct ServedUpstream {
    child: Child,
    address: SocketAddr,
}

impl ServedUpstream {
    fn start(name: &str, command: &str, timeout: Duration) -> Result<ServedUpstream, String> {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .map_err(|error| format!("finding a free port for {name} failed: {error}"))?
            .port();
        let address = SocketAddr::from(([127, 0, 0, 1], port));
        eprintln!("cloudrun-test emulate: starting {name}: PORT={port} {command}");
        let child = shell(command)
            .env("PORT", port.to_string())
            // The service runs with the developer's environment (its own settings), but a
            // ready identity token of theirs is not its business.
            .env_remove("CLOUDRUN_TEST_ID_TOKEN")
            .spawn()
            .map_err(|error| format!("--serve {name}: starting `{command}` failed: {error}"))?;
        let mut upstream = ServedUpstream { child, address };
        let started = Instant::now();
        loop {
            if TcpStream::connect_timeout(&address, Duration::from_millis(200)).is_ok() {
                return Ok(upstream);
            }
            if let Ok(Some(status)) = upstream.child.try_wait() {
                return Err(format!(
                    "--serve {name}: `{command}` exited ({status}) before listening on PORT={port}"
                ));
            }
            if started.elapsed() > timeout {
                return Err(format!(
                    "--serve {name}: `{command}` did not listen on PORT={port} within {timeout:?}; \
                     does it read the PORT environment variable? (raise the limit with --serve-timeout)"
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for ServedUpstream {
    fn drop(&mut self) {
        // The command runs under a shell and may have children (e.g. `cargo run`):
        // stop them all, politely first where there is a way.
        stop_all(&self.child, false);
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        stop_all(&self.child, true);
        let _ = self.child.wait();
    }
}

/// `command` run by the shell, leading a process group of its own (so that it and
/// its children can be signalled together) on Unix.
#[cfg(unix)]
fn shell(command: &str) -> Command {
    use std::os::unix::process::CommandExt;
    let mut shell = Command::new("sh");
    shell.args(["-c", command]).process_group(0);
    shell
}

/// `command` run by `cmd /C`, as written: cmd does not parse arguments the way Rust
/// quotes them.
#[cfg(windows)]
fn shell(command: &str) -> Command {
    use std::os::windows::process::CommandExt;
    let mut shell = Command::new("cmd");
    shell.arg("/C").raw_arg(command);
    shell
}

/// Stops `child`'s process group: SIGTERM, or SIGKILL when `force`.
#[cfg(unix)]
fn stop_all(child: &Child, force: bool) {
    let group = child.id() as libc::pid_t;
    let signal = if force { libc::SIGKILL } else { libc::SIGTERM };
    // SAFETY: plain syscall; the group is our child's, created with process_group(0).
    unsafe {
        libc::kill(-group, signal);
    }
}

/// Stops `child` and every process it started: Windows has no process groups to
/// signal, `taskkill /T` walks the tree, and a console program has no polite stop, so
/// it is `/F` at once.
#[cfg(windows)]
fn stop_all(child: &Child, _force: bool) {
    let _ = Command::new("taskkill")
        .args(["/T", "/F", "/PID", &child.id().to_string()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status();
}

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn note_interrupt(_signal: libc::c_int) {
    INTERRUPTED.store(true, Ordering::Relaxed);
}

/// A handler rather than `SIG_IGN`: handlers are reset by `exec`, so COMMAND still
/// gets the default Ctrl-C behaviour.
fn catch_interrupt() {
    let handler: extern "C" fn(libc::c_int) = note_interrupt;
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
    unsafe {
        libc::signal(libc::SIGINT, handler as libc::sighandler_t);
        libc::signal(libc::SIGTERM, handler as libc::sighandler_t);
    }
}

fn parse_fault(text: &str) -> Result<Fault, String> {
    text.parse()
        .map_err(|error: cloudrun_test_emulator::Error| error.to_string())
}

/// `--timeout SERVICE=DURATION`, within Cloud Run's bounds.
fn parse_timeout(text: &str) -> Result<(String, Duration), String> {
    let (name, duration) = text
        .split_once('=')
        .filter(|(name, _)| !name.is_empty())
        .ok_or_else(|| format!("{text:?}: expected SERVICE=DURATION, e.g. hello=30m"))?;
    let timeout = parse_duration(duration)?;
    if timeout > ServiceConfig::MAX_TIMEOUT {
        return Err(format!(
            "{duration:?} is longer than Cloud Run's longest request timeout (1h)"
        ));
    }
    Ok((name.to_owned(), timeout))
}

/// `--serve-timeout`, `--token-lifetime`, `--timeout`: the library's one duration
/// syntax (`500ms`, `30s`, `5m`, `1h`, `1m30s`, or a bare number of seconds).
fn parse_duration(text: &str) -> Result<Duration, String> {
    cloudrun_test::parse_duration(text).map_err(|why| {
        format!("{text:?} is no duration ({why}): write e.g. `30s`, `500ms`, `5m` or `1h30m`")
    })
}

#[cfg(test)]
mod duration_tests {
    use super::*;

    #[test]
    fn timeouts_are_per_service_within_cloud_runs_bounds() {
        assert_eq!(
            parse_timeout("greeter=30m"),
            Ok(("greeter".to_owned(), Duration::from_secs(1800)))
        );
        assert_eq!(
            parse_timeout("hello=1h"),
            Ok(("hello".to_owned(), Duration::from_secs(3600)))
        );
        let error = parse_timeout("hello=2h").unwrap_err();
        assert!(error.contains("longest request timeout"), "{error}");
        for bad in ["30m", "=30m", "hello=soon"] {
            assert!(parse_timeout(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn durations_at_their_extremes_are_errors_not_panics() {
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("300"), Ok(Duration::from_secs(300)));
        for huge in [
            "18446744073709551615m",
            "18446744073709551615h",
            "99999999999999999999s",
        ] {
            let error = parse_duration(huge).unwrap_err();
            assert!(error.contains("too large"), "{huge}: {error}");
        }
        for bad in ["0s", "soon", "-5s"] {
            let error = parse_duration(bad).unwrap_err();
            assert!(error.contains("is no duration"), "{bad}: {error}");
        }
    }
}
