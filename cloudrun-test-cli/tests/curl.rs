//! `cloudrun-test curl`: the token reaches curl through a pipe, never through a
//! command line or the environment, and curl's status is ours.

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::process::Stdio;
use std::time::{Duration, Instant};

use cloudrun_test_emulator::{Emulator, ServiceConfig};
use serde_json::Value;
use support::*;

fn fixture() -> Fixture {
    Fixture::start(
        Emulator::builder()
            .service(ServiceConfig::new("hello").invoker(&format!("serviceAccount:{TESTER}"))),
    )
}

#[test]
fn the_token_reaches_curl_through_a_pipe_never_its_arguments_or_environment() {
    let fixture = fixture();
    let home = tempfile::tempdir().unwrap();
    let url = fixture.emulator.service_url("hello").unwrap();
    let origin = url.origin().ascii_serialization();
    let env = fixture.environment(TESTER);
    // The disk cache hands `curl` the same token as this call.
    let token = token(&origin, &env, home.path());

    let fake = FakeCurl::new(0);
    let mut env_with_fake = env.clone();
    env_with_fake.push(fake.path_env());
    let target = url.join("/a?b=c").unwrap();
    let output = run(
        &["curl", target.as_str(), "-sS", "-X", "POST", "-d", "x=1"],
        &env_with_fake,
        home.path(),
    );
    assert!(output.status.success(), "{}", output_text(&output));
    assert!(fake.ran(), "the fake curl ran");

    let argv = fake.record("argv");
    let cmdline = fake.record("cmdline");
    let environ = fake.record("environ");
    assert_no_token(&argv, &token, "curl's arguments");
    assert_no_token(&cmdline, &token, "/proc/PID/cmdline of curl");
    assert_no_token(&environ, &token, "curl's environment");
    assert_no_token(&output_text(&output), &token, "cloudrun-test's output");
    // curl reads no .curlrc (-q must be first), takes the URL literally, uses no proxy
    // (none is set), then gets the URL and the checked options, one by one.
    let args: Vec<&str> = argv.lines().collect();
    assert_eq!(args[..4], ["-q", "--globoff", "--noproxy", "*"], "{argv}");
    let at = args.iter().position(|arg| *arg == target.as_str()).unwrap();
    assert_eq!(
        args[at + 1..],
        ["-s", "-S", "-X", "POST", "-d", "x=1"],
        "{argv}"
    );
    // The header comes from a pipe named as a /dev/fd path, not a file on disk.
    let header_arg = args
        .iter()
        .position(|arg| *arg == "-H")
        .map(|index| args[index + 1])
        .unwrap();
    assert!(header_arg.starts_with("@/dev/fd/"), "{argv}");
    assert_eq!(
        fake.record("files"),
        format!("Authorization: Bearer {token}\n")
    );
}

#[test]
fn real_curl_shows_no_token_in_any_process_arguments_while_it_waits() {
    let fixture = fixture();
    let home = tempfile::tempdir().unwrap();
    // A server that holds the request while we look at every process on the machine.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let url = format!("http://{}/slow", listener.local_addr().unwrap());
    let mut child = command(
        &["curl", &url, "-sS"],
        &fixture.environment(TESTER),
        home.path(),
    )
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();

    let deadline = Instant::now() + Duration::from_secs(60);
    let stream = loop {
        match listener.accept() {
            Ok((stream, _)) => break stream,
            Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => {
                if let Some(status) = child.try_wait().unwrap() {
                    panic!("cloudrun-test curl exited ({status}) before connecting");
                }
                assert!(Instant::now() < deadline, "curl never connected");
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(error) => panic!("accept failed: {error}"),
        }
    };
    stream.set_nonblocking(false).unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut token = None;
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        if line.trim().is_empty() {
            break;
        }
        if let Some(value) = line.strip_prefix("Authorization: Bearer ") {
            token = Some(value.trim().to_owned());
        }
    }
    let token = token.expect("the request carried Authorization: Bearer");

    // curl is running now, a child of cloudrun-test; no process shows the token.
    let mut curl_pid = None;
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(|pid| pid.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        assert!(
            !cmdline.contains(&token),
            "process {pid} shows the token in its arguments: {cmdline}"
        );
        let stat = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
        let parent = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|ppid| ppid.parse::<u32>().ok());
        if parent == Some(child.id()) && cmdline.starts_with("curl ") {
            let environ = std::fs::read(entry.path().join("environ")).unwrap_or_default();
            assert!(
                !String::from_utf8_lossy(&environ).contains(&token),
                "curl's environment holds the token"
            );
            curl_pid = Some(pid);
        }
    }
    assert!(curl_pid.is_some(), "the real curl was found, waiting");

    let mut stream = stream;
    stream
        .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\nslow!")
        .unwrap();
    drop(stream);
    let mut stdout = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut stdout)
        .unwrap();
    let status = child.wait().unwrap();
    assert!(status.success());
    assert_eq!(stdout, "slow!");
}

#[test]
fn curl_calls_the_emulated_service_and_exits_with_curls_status() {
    let fixture = fixture();
    let home = tempfile::tempdir().unwrap();
    let url = fixture.emulator.service_url("hello").unwrap();
    let target = url.join("/hi").unwrap();

    let output = run(
        &["curl", target.as_str(), "-sS"],
        &fixture.environment(TESTER),
        home.path(),
    );
    assert!(output.status.success(), "{}", output_text(&output));
    let echo: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(echo["caller"], TESTER);
    assert_eq!(echo["path"], "/hi");
    assert!(output.stderr.is_empty(), "{}", output_text(&output));

    // A caller who may not invoke: curl -f exits 22, and the 403 is explained.
    let output = run(
        &["curl", target.as_str(), "-sS", "-f", "-o", "/dev/null"],
        &fixture.environment(OUTSIDER),
        home.path(),
    );
    assert_eq!(output.status.code(), Some(22), "{}", output_text(&output));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("403"), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "--member=serviceAccount:{OUTSIDER} --role=roles/run.invoker"
        )),
        "{stderr}"
    );

    // A token for another audience: 401, explained.
    let output = run(
        &[
            "curl",
            "--audience",
            "https://elsewhere.example",
            target.as_str(),
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
        ],
        &fixture.environment(TESTER),
        home.path(),
    );
    assert!(output.status.success(), "{}", output_text(&output));
    assert_eq!(String::from_utf8_lossy(&output.stdout), "401");
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("wrong audience"),
        "{}",
        output_text(&output)
    );

    // Nothing listening: curl's own exit status (7, could not connect).
    let output = run(
        &["curl", "http://127.0.0.1:1/", "-s"],
        &fixture.environment(TESTER),
        home.path(),
    );
    assert_eq!(output.status.code(), Some(7), "{}", output_text(&output));
}

#[test]
fn verbose_curl_shows_the_header_with_the_token_redacted() {
    let fixture = fixture();
    let home = tempfile::tempdir().unwrap();
    let env = fixture.environment(TESTER);
    let url = fixture.emulator.service_url("hello").unwrap();
    let token = token(&url.origin().ascii_serialization(), &env, home.path());
    let output = run(
        &["curl", url.as_str(), "-sS", "-v", "-o", "/dev/null"],
        &env,
        home.path(),
    );
    assert!(output.status.success(), "{}", output_text(&output));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("> Authorization: Bearer <redacted>"),
        "{stderr}"
    );
    assert!(stderr.contains("< HTTP/1.1 200 OK"), "{stderr}");
    assert_no_token(&stderr, &token, "curl -v's log");
}

#[test]
fn x_serverless_leaves_authorization_to_the_application() {
    let fixture = fixture();
    let home = tempfile::tempdir().unwrap();
    let url = fixture.emulator.service_url("hello").unwrap();
    let output = run(
        &[
            "curl",
            "--x-serverless",
            url.as_str(),
            "-sS",
            "-H",
            "Authorization: Basic dXNlcjpwYXNz",
        ],
        &fixture.environment(TESTER),
        home.path(),
    );
    assert!(output.status.success(), "{}", output_text(&output));
    let echo: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(echo["caller"], TESTER, "{}", output_text(&output));
}

#[test]
fn options_that_would_send_the_token_elsewhere_are_refused_before_curl_runs() {
    let fixture = fixture();
    let home = tempfile::tempdir().unwrap();
    let url = fixture.emulator.service_url("hello").unwrap();
    let refused: &[&[&str]] = &[
        &[url.as_str(), "https://elsewhere.example/"],
        &[url.as_str(), "--trace-ascii", "-"],
        &[url.as_str(), "--location-trusted"],
        &[url.as_str(), "-K", "/dev/null"],
        &[url.as_str(), "--trace-a", "-"],
        &[url.as_str(), "-k"],
        &[url.as_str(), "-sS", "evil.example"],
        &[url.as_str(), "-H", "Authorization: Basic x"],
        &["-sS", url.as_str()],
        &["http://hello.example.com/"],
        &["not a url"],
    ];
    for args in refused {
        let fake = FakeCurl::new(0);
        let mut env = fixture.environment(TESTER);
        env.push(fake.path_env());
        let mut all = vec!["curl"];
        all.extend_from_slice(args);
        let output = run(&all, &env, home.path());
        assert_eq!(
            output.status.code(),
            Some(1),
            "{args:?}: {}",
            output_text(&output)
        );
        assert!(!fake.ran(), "{args:?}: curl ran");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            stderr.starts_with("error: ") && stderr.contains("\nfix: "),
            "{args:?}: {}",
            output_text(&output)
        );
    }
}

#[test]
fn x_serverless_with_location_is_allowed_now_that_redirects_stay_in_the_origin() {
    let fixture = fixture();
    let home = tempfile::tempdir().unwrap();
    let url = fixture.emulator.service_url("hello").unwrap();
    let output = run(
        &["curl", "--x-serverless", url.as_str(), "-sSL"],
        &fixture.environment(TESTER),
        home.path(),
    );
    assert!(output.status.success(), "{}", output_text(&output));
    let echo: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(echo["caller"], TESTER, "{}", output_text(&output));
}

#[test]
fn the_raw_curl_recipe_in_the_help_calls_the_service_with_the_token_off_every_command_line() {
    let fixture = fixture();
    let home = tempfile::tempdir().unwrap();
    let url = fixture.emulator.service_url("hello").unwrap();
    let help = run(&["curl", "--help"], &[], home.path());
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(
        help.contains("| sed 's/^/Authorization: Bearer /'") && help.contains("| curl -q -H @- "),
        "{help}"
    );
    // The recipe as documented, with this binary and the emulated service.
    let recipe = "\"$BIN\" token --audience \"$ORIGIN\" | sed 's/^/Authorization: Bearer /' \
                  | curl -q -H @- -sS \"$URL\"";
    let mut command = std::process::Command::new("sh");
    command.args(["-c", recipe]);
    isolate(&mut command);
    let output = command
        .env("HOME", home.path())
        .env("BIN", BIN)
        .env("ORIGIN", url.origin().ascii_serialization())
        .env("URL", url.as_str())
        .envs(fixture.environment(TESTER))
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", output_text(&output));
    let echo: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(echo["caller"], TESTER, "{}", output_text(&output));
}

#[test]
fn an_https_service_is_proxied_by_https_proxy_in_curls_environment_never_its_arguments() {
    let fixture = fixture();
    let home = tempfile::tempdir().unwrap();
    let proxy = "http://user:secret@proxy.example:3128/";
    for no_proxy in [None, Some("hello.example")] {
        let fake = FakeCurl::new(0);
        let mut env = fixture.environment(TESTER);
        env.push(fake.path_env());
        env.push(("HTTPS_PROXY".into(), proxy.into()));
        env.push(("ALL_PROXY".into(), "http://all.example:1/".into()));
        if let Some(no_proxy) = no_proxy {
            env.push(("NO_PROXY".into(), no_proxy.into()));
        }
        let output = run(
            &["curl", "https://hello.example/x", "-s"],
            &env,
            home.path(),
        );
        assert!(output.status.success(), "{}", output_text(&output));
        let (argv, environ) = (fake.record("argv"), fake.record("environ"));
        assert!(!argv.contains("proxy.example"), "{argv}");
        assert!(
            !environ.contains("ALL_PROXY=") && !environ.contains("NO_PROXY="),
            "{environ}"
        );
        if no_proxy.is_none() {
            assert!(
                environ
                    .lines()
                    .any(|line| line == format!("HTTPS_PROXY={proxy}")),
                "{environ}"
            );
            assert!(argv.contains("--suppress-connect-headers") && !argv.contains("--noproxy"));
        } else {
            assert!(!environ.contains("HTTPS_PROXY="), "{environ}");
            assert!(argv.contains("--noproxy\n*\n"), "{argv}");
        }
    }
}

/// Reads a request's head (up to its blank line) from `stream`.
fn read_head(stream: &std::net::TcpStream) {
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    while reader.read_line(&mut line).unwrap() > 0 && line != "\r\n" {
        line.clear();
    }
}

#[test]
fn with_location_the_redirect_body_is_dropped_and_a_stream_arrives_as_it_is_sent() {
    let fixture = fixture();
    let home = tempfile::tempdir().unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/start", listener.local_addr().unwrap());
    let (seen, seen_rx) = std::sync::mpsc::channel::<()>();
    let server = std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        read_head(&stream);
        stream
            .write_all(
                b"HTTP/1.1 302 Found\r\nLocation: /stream\r\nContent-Length: 9\r\n\
                  Connection: close\r\n\r\nredirect!",
            )
            .unwrap();
        drop(stream);
        let (mut stream, _) = listener.accept().unwrap();
        read_head(&stream);
        stream
            .write_all(
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n\
                  6\r\nfirst\n\r\n",
            )
            .unwrap();
        // The rest only once the client has shown the first chunk.
        seen_rx.recv_timeout(Duration::from_secs(20)).unwrap();
        stream.write_all(b"5\r\nlast\n\r\n0\r\n\r\n").unwrap();
    });
    let mut child = command(
        &["curl", &url, "-sSNL"],
        &fixture.environment(TESTER),
        home.path(),
    )
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut first = String::new();
    stdout.read_line(&mut first).unwrap();
    assert_eq!(first, "first\n", "the redirect's body is not shown");
    seen.send(()).unwrap();
    let mut rest = String::new();
    stdout.read_to_string(&mut rest).unwrap();
    assert_eq!(rest, "last\n");
    assert!(child.wait().unwrap().success());
    server.join().unwrap();
}
