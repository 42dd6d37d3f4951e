//! Hostile cases: transport. A credential goes over https or to a loopback address
//! only, refused before anything leaves otherwise; proxies are honoured only as
//! `HTTPS_PROXY` through CONNECT, never for loopback or the metadata server.
//!
//! The proxy is a [`Recorder`]: every request it gets is a leak (or, for https, a
//! CONNECT that must not carry the token). The library reads the proxy environment
//! once per process, so the cases that set it run the real binary, or a library
//! `Client` in a child process ([`library_client_child`]).
//!
//! "Another machine" is `0.0.0.0`: no loopback address by the rules, yet Linux connects
//! it to this machine, so a recorder on 127.0.0.1 receives whatever would have been
//! sent there ([`a_stand_in_for_another_machine_reaches_the_recorder`] proves it).

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use cloudrun_test::{Client, Credentials, TokenHeader};
use cloudrun_test_e2e::recorder::{Recorded, Recorder, response};
use cloudrun_test_e2e::{CANARY_SIGNATURE, canary_token};
use cloudrun_test_emulator::{Emulator, ServiceConfig};
use serde_json::{Value, json};

use crate::support::{self, Fixture, TESTER, output_text};

const PROXY_VARIABLES: [&str; 6] = [
    "HTTP_PROXY",
    "http_proxy",
    "HTTPS_PROXY",
    "https_proxy",
    "ALL_PROXY",
    "all_proxy",
];
const DEPLOYER: &str = "deployer@emulated-project.iam.gserviceaccount.com";

/// An emulator whose `hello` service admits [`TESTER`].
fn fixture() -> Fixture {
    Fixture::start(
        Emulator::builder()
            .service(ServiceConfig::new("hello").invoker(&format!("serviceAccount:{TESTER}"))),
    )
}

/// A recorder answering 502 to everything: a proxy that must stay unused (or, for a
/// CONNECT, refuses the tunnel after recording it).
fn proxy() -> Recorder {
    Recorder::start(|_| response(502, &[], "the recorder proxies nothing"))
}

/// Every proxy variable, upper and lower case, pointing at `proxy`.
fn every_proxy_variable(proxy: &Recorder) -> Vec<(String, String)> {
    PROXY_VARIABLES
        .iter()
        .map(|name| ((*name).to_owned(), proxy.url.to_string()))
        .collect()
}

/// `http://0.0.0.0:PORT/PATH` for `recorder`: another machine by the rules.
fn elsewhere(recorder: &Recorder, path: &str) -> String {
    format!(
        "http://0.0.0.0:{}/{path}",
        recorder.url.port().expect("the recorder has a port")
    )
}

fn with(mut env: Vec<(String, String)>, more: &[(&str, &str)]) -> Vec<(String, String)> {
    env.extend(
        more.iter()
            .map(|(name, value)| ((*name).to_owned(), (*value).to_owned())),
    );
    env
}

/// Isolates `command` (no Google or cloudrun-test settings, no proxy or NO_PROXY of the
/// caller's, no disk cache) and gives it `env`.
fn isolated(mut command: Command, env: &[(String, String)]) -> Command {
    support::isolate(&mut command);
    for name in PROXY_VARIABLES.iter().chain(&["NO_PROXY", "no_proxy"]) {
        command.env_remove(name);
    }
    command
        .env("CLOUDRUN_TEST_DISK_CACHE", "off")
        .env_remove("RUST_LOG")
        .envs(env.iter().cloned());
    command
}

/// `cloudrun-test ARGS` with only `env`, in a home of its own.
fn cli(args: &[&str], env: &[(String, String)]) -> Output {
    let home = tempfile::tempdir().unwrap();
    let mut command = Command::new(support::BIN);
    command
        .args(args)
        .env("HOME", home.path())
        .env("CLOUDSDK_CONFIG", home.path().join("gcloud"));
    isolated(command, env).output().expect("the binary runs")
}

/// The variable that makes [`library_client_child`] call this URL.
const CHILD_URL: &str = "HOSTILE_TRANSPORT_CHILD_URL";

/// A library `Client` for `url`, built and used in a child process with only `env`:
/// [`library_client_child`] run by this very test binary.
fn library_client(url: &str, env: &[(String, String)]) -> Output {
    let home = tempfile::tempdir().unwrap();
    // This very process's binary even if a concurrent build has replaced the file (Linux,
    // as is the 0.0.0.0 stand-in).
    let mut command = Command::new("/proc/self/exe");
    command
        .args([
            "transport::library_client_child",
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("HOME", home.path())
        .env("CLOUDSDK_CONFIG", home.path().join("gcloud"));
    let mut command = isolated(command, env);
    command.env(CHILD_URL, url);
    command.output().expect("the test binary runs")
}

/// Not a case: the child process of [`library_client`]. Builds a `Client` for the URL
/// in [`CHILD_URL`] from its environment, sends `GET /`, and prints `status=CODE` or
/// the error; the parent asserts on that. Does nothing without [`CHILD_URL`].
#[test]
#[ignore = "the child process of the transport cases, which run it with its environment"]
fn library_client_child() {
    let Ok(url) = std::env::var(CHILD_URL) else {
        return;
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let client = match Client::builder().url(url).build().await {
            Ok(client) => client,
            Err(error) => return println!("setup failed: {error}"),
        };
        match client.get("/").send().await {
            Ok(response) => println!("status={}", response.status().as_u16()),
            Err(error) => println!("request failed: {error}"),
        }
    });
}

fn service_url(fixture: &Fixture) -> String {
    fixture.emulator.service_url("hello").unwrap().to_string()
}

fn origin(fixture: &Fixture) -> String {
    fixture
        .emulator
        .service_url("hello")
        .unwrap()
        .origin()
        .ascii_serialization()
}

/// A request as a failure shows it: its request line and header names, never a value
/// (which could be a token).
fn shown(request: &Recorded) -> String {
    let mut lines = request.head.lines();
    let mut text = lines.next().unwrap_or_default().to_owned();
    for line in lines.filter(|line| !line.is_empty()) {
        text.push_str(&format!(
            " | {}",
            line.split(':').next().unwrap_or_default()
        ));
    }
    text
}

/// Asserts that `proxy` received nothing, showing what it got otherwise.
fn assert_untouched(proxy: &Recorder, what: &str) {
    let got: Vec<String> = proxy.requests().iter().map(shown).collect();
    assert!(got.is_empty(), "{what} reached the recorder:\n{got:#?}");
}

/// Asserts a refusal that names `names`, says how to fix it, and did not panic.
fn assert_refused(output: &Output, names: &[&str]) {
    let text = output_text(output);
    assert_eq!(output.status.code(), Some(1), "{text}");
    for name in names {
        assert!(text.contains(name), "{name:?} is not named in:\n{text}");
    }
    assert!(text.contains("fix:"), "no fix in:\n{text}");
    assert!(!text.contains("panicked"), "{text}");
}

/// A copy of `fixture`'s key file for `email` with `token_uri` replaced.
fn key_file_with_token_uri(fixture: &Fixture, dir: &Path, token_uri: &str) -> String {
    let mut key: Value =
        serde_json::from_str(&std::fs::read_to_string(fixture.key_file(TESTER)).unwrap()).unwrap();
    key["token_uri"] = json!(token_uri);
    let path = dir.join("key.json");
    std::fs::write(&path, key.to_string()).unwrap();
    path.display().to_string()
}

#[test]
fn a_stand_in_for_another_machine_reaches_the_recorder() {
    // The control of every "nothing was sent" below: sent, it would have arrived.
    let recorder = proxy();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let http = cloudrun_test::reqwest::Client::builder()
            .no_proxy()
            .build()
            .unwrap();
        http.get(elsewhere(&recorder, "probe"))
            .send()
            .await
            .unwrap();
    });
    let requests = recorder.requests();
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].target, "/probe");
}

#[test]
fn token_from_a_loopback_endpoint_ignores_every_proxy_variable() {
    let fixture = fixture();
    let proxy = proxy();
    let mut env = fixture.environment(TESTER);
    env.extend(every_proxy_variable(&proxy));
    let output = cli(&["token", "--audience", &origin(&fixture)], &env);
    assert!(output.status.success(), "{}", output_text(&output));
    let token = String::from_utf8(output.stdout).unwrap();
    assert_eq!(token.trim_end().split('.').count(), 3, "one JWT");
    assert_untouched(&proxy, "minting from a loopback token_uri");
}

#[test]
fn the_metadata_server_is_never_proxied_on_loopback_or_elsewhere() {
    let fixture = fixture();
    let proxy = proxy();
    let host = fixture.emulator.metadata_host();
    let port = host.rsplit_once(':').unwrap().1;
    // Loopback, and a host that is not (as 169.254.169.254 is not).
    for metadata_host in [host.clone(), format!("0.0.0.0:{port}")] {
        let env = with(
            every_proxy_variable(&proxy),
            &[
                ("GCE_METADATA_HOST", &metadata_host),
                ("CLOUDRUN_TEST_CREDENTIALS", "metadata"),
            ],
        );
        let output = cli(&["token", "--audience", &origin(&fixture)], &env);
        let text = output_text(&output);
        assert!(output.status.success(), "{metadata_host}: {text}");
        assert!(text.contains("metadata server"), "{text}");
    }
    assert_untouched(&proxy, "a metadata server request");
}

#[test]
fn doctor_calls_a_loopback_service_directly_under_every_proxy_variable() {
    let fixture = fixture();
    let proxy = proxy();
    let mut env = fixture.environment(TESTER);
    env.extend(every_proxy_variable(&proxy));
    for args in [
        ["doctor", "--url", &service_url(&fixture)],
        // With the Admin API lookup, which carries an access token.
        ["doctor", "--service", "hello"],
    ] {
        let output = cli(&args, &env);
        let text = output_text(&output);
        assert_eq!(output.status.code(), Some(0), "{args:?}: {text}");
        assert!(text.contains("Verdict: OK"), "{text}");
    }
    assert_untouched(&proxy, "doctor's requests");
}

#[test]
fn a_library_client_calls_a_loopback_service_directly_under_every_proxy_variable() {
    let fixture = fixture();
    let proxy = proxy();
    let mut env = fixture.environment(TESTER);
    env.extend(every_proxy_variable(&proxy));
    let output = library_client(&service_url(&fixture), &env);
    let text = output_text(&output);
    assert!(text.contains("status=200"), "{text}");
    assert_untouched(&proxy, "the library client's requests");
}

/// What a proxy saw of one https request: CONNECT to the host, never the token.
fn assert_tunnel_only(proxy: &Recorder, host: &str, token: &str) {
    let requests = proxy.requests();
    assert!(!requests.is_empty(), "HTTPS_PROXY was not used");
    for request in &requests {
        let head = &request.head;
        assert_eq!(request.method, "CONNECT", "{}", shown(request));
        assert_eq!(request.target, format!("{host}:443"), "{}", shown(request));
        assert!(
            !head.to_ascii_lowercase().contains("authorization")
                && !head.contains(CANARY_SIGNATURE)
                && !head.contains(token),
            "the proxy saw a credential: {}",
            shown(request)
        );
    }
}

#[test]
fn an_https_service_goes_through_https_proxy_by_connect_without_the_token() {
    let https_proxy = proxy();
    let other_proxy = proxy();
    let token = canary_token("https://hello.example");
    for (https_variable, other_variable) in
        [("HTTPS_PROXY", "HTTP_PROXY"), ("https_proxy", "all_proxy")]
    {
        let env = vec![
            ("CLOUDRUN_TEST_ID_TOKEN".to_owned(), token.clone()),
            (https_variable.to_owned(), https_proxy.url.to_string()),
            (other_variable.to_owned(), other_proxy.url.to_string()),
        ];
        let output = cli(&["doctor", "--url", "https://hello.example/"], &env);
        let text = output_text(&output);
        assert_eq!(output.status.code(), Some(1), "{text}");
        assert!(!text.contains(CANARY_SIGNATURE), "{text}");
        let output = library_client("https://hello.example/", &env);
        let text = output_text(&output);
        assert!(text.contains("request failed"), "{text}");
        assert!(!text.contains(CANARY_SIGNATURE), "{text}");
    }
    assert_tunnel_only(&https_proxy, "hello.example", &token);
    assert_untouched(&other_proxy, "an https request (HTTP_PROXY, ALL_PROXY)");
}

#[test]
fn no_proxy_sends_the_hosts_it_names_directly() {
    let https_proxy = proxy();
    let token = canary_token("https://hello.example");
    let env = vec![
        ("CLOUDRUN_TEST_ID_TOKEN".to_owned(), token.clone()),
        ("HTTPS_PROXY".to_owned(), https_proxy.url.to_string()),
        (
            "NO_PROXY".to_owned(),
            "example.org, .hello.example".to_owned(),
        ),
    ];
    // Named (a subdomain of `.hello.example`): direct, and the host does not resolve here.
    let output = cli(&["doctor", "--url", "https://api.hello.example/"], &env);
    assert!(
        output_text(&output).contains("UNREACHABLE"),
        "{}",
        output_text(&output)
    );
    assert_untouched(&https_proxy, "a host NO_PROXY names");
    // Not named: through the proxy, so it was in force.
    cli(&["doctor", "--url", "https://other.example/"], &env);
    assert_tunnel_only(&https_proxy, "other.example", &token);
}

#[test]
fn a_key_files_plain_http_token_uri_elsewhere_gets_no_assertion() {
    let fixture = fixture();
    let recorder = proxy();
    let dir = tempfile::tempdir().unwrap();
    for token_uri in [
        elsewhere(&recorder, "token"),
        "http://example.invalid/token".into(),
    ] {
        let key = key_file_with_token_uri(&fixture, dir.path(), &token_uri);
        let env = with(
            every_proxy_variable(&recorder),
            &[("GOOGLE_APPLICATION_CREDENTIALS", &key)],
        );
        let output = cli(&["token", "--audience", &origin(&fixture)], &env);
        let origin = token_uri.trim_end_matches("/token");
        assert_refused(
            &output,
            &[
                &format!(
                    "refusing to send a credential to the token endpoint `token_uri` of {key} at {origin}"
                ),
                "travels in clear",
            ],
        );
        assert!(output.stdout.is_empty());
    }
    assert_untouched(&recorder, "the signed assertion");
    assert_eq!(fixture.emulator.stats().id_tokens_minted, 0);
}

#[test]
fn an_authorized_users_refresh_token_never_goes_over_plain_http_elsewhere() {
    let fixture = fixture();
    let recorder = proxy();
    let dir = tempfile::tempdir().unwrap();
    let mut user: Value = serde_json::from_str(
        &fixture
            .emulator
            .authorized_user_credentials("alice@example.com"),
    )
    .unwrap();
    user["token_uri"] = json!(elsewhere(&recorder, "token"));
    let path = dir.path().join("user.json");
    std::fs::write(&path, user.to_string()).unwrap();
    let env = vec![(
        "GOOGLE_APPLICATION_CREDENTIALS".to_owned(),
        path.display().to_string(),
    )];
    let output = cli(&["token", "--audience", &origin(&fixture)], &env);
    assert_refused(
        &output,
        &[
            "refusing to send a credential",
            "`token_uri`",
            "http://0.0.0.0",
        ],
    );
    assert!(
        !output_text(&output).contains("1//"),
        "the refresh token shows"
    );
    assert_untouched(&recorder, "the refresh token");
}

#[test]
fn impersonation_never_sends_the_callers_token_over_plain_http_elsewhere() {
    let fixture = fixture();
    let recorder = proxy();
    let iam = elsewhere(&recorder, "");
    let env = with(
        fixture.environment(TESTER),
        &[
            ("CLOUDRUN_TEST_IMPERSONATE_SERVICE_ACCOUNT", DEPLOYER),
            ("CLOUDRUN_TEST_IAM_ENDPOINT", iam.trim_end_matches('/')),
        ],
    );
    let output = cli(&["token", "--audience", &origin(&fixture)], &env);
    assert_refused(
        &output,
        &["refusing to send a credential to IAM Credentials (CLOUDRUN_TEST_IAM_ENDPOINT"],
    );
    assert_untouched(&recorder, "the caller's access token");
    let minted = fixture.emulator.stats().access_tokens_minted;
    assert_eq!(minted, 0, "a caller's token minted for nothing");
}

#[test]
fn workload_identity_never_sends_a_subject_or_request_token_over_plain_http_elsewhere() {
    let fixture = fixture();
    let recorder = proxy();
    let dir = tempfile::tempdir().unwrap();
    let subject = dir.path().join("subject");
    std::fs::write(&subject, "subject-token").unwrap();
    let file = |token_url: String, source: Value| {
        let path = dir.path().join("wif.json");
        let text = json!({
            "type": "external_account",
            "audience": fixture.emulator.workload_identity_audience(),
            "subject_token_type": "urn:ietf:params:oauth:token-type:jwt",
            "token_url": token_url,
            "credential_source": source,
            // Without it no identity token is minted, and nothing would be sent anyway.
            "service_account_impersonation_url": format!(
                "{}v1/projects/-/serviceAccounts/{DEPLOYER}:generateAccessToken",
                fixture.emulator.iam_endpoint()
            ),
        });
        std::fs::write(&path, text.to_string()).unwrap();
        vec![(
            "GOOGLE_APPLICATION_CREDENTIALS".to_owned(),
            path.display().to_string(),
        )]
    };
    // The STS exchange would carry the subject token.
    let env = file(elsewhere(&recorder, "v1/token"), json!({ "file": subject }));
    let output = cli(&["token", "--audience", &origin(&fixture)], &env);
    assert_refused(
        &output,
        &["refusing to send a credential to the token exchange `token_url`"],
    );
    // The subject token URL would get the CI's request token.
    let env = file(
        fixture.emulator.sts_token_url().to_string(),
        json!({
            "url": elsewhere(&recorder, "subject"),
            "headers": { "Authorization": "Bearer ci-request-secret" },
        }),
    );
    let output = cli(&["token", "--audience", &origin(&fixture)], &env);
    assert_refused(
        &output,
        &["refusing to send a credential to `credential_source.url`"],
    );
    assert!(!output_text(&output).contains("ci-request-secret"));
    assert_untouched(&recorder, "a workload identity request");
}

#[test]
fn an_admin_api_over_plain_http_elsewhere_is_refused_before_connecting() {
    let fixture = fixture();
    let recorder = proxy();
    // 10.255.255.1 never answers: trying to connect would take the 10 s connect limit.
    for endpoint in ["http://10.255.255.1".to_owned(), elsewhere(&recorder, "")] {
        let env = with(
            fixture.environment(TESTER),
            &[("CLOUDRUN_TEST_RUN_ENDPOINT", endpoint.trim_end_matches('/'))],
        );
        let started = Instant::now();
        let output = cli(&["doctor", "--service", "hello"], &env);
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "it tried to connect"
        );
        assert_refused(
            &output,
            &[&format!(
                "refusing to send a credential to the Cloud Run Admin API \
                 (CLOUDRUN_TEST_RUN_ENDPOINT) at {}",
                endpoint.trim_end_matches('/')
            )],
        );
    }
    assert_untouched(&recorder, "the access token for the lookup");
    assert_eq!(
        fixture.emulator.stats().access_tokens_minted,
        0,
        "minted for nothing"
    );
}

#[test]
fn a_plain_http_service_url_elsewhere_is_refused_when_the_client_is_built() {
    let fixture = fixture();
    let recorder = proxy();
    for url in ["http://hello.example/".to_owned(), elsewhere(&recorder, "")] {
        let env = with(
            fixture.environment(TESTER),
            &[("CLOUDRUN_TEST_URL_HELLO", &url)],
        );
        let output = cli(&["doctor", "--service", "hello"], &env);
        let origin = url.trim_end_matches('/');
        assert_refused(
            &output,
            &[&format!(
                "refusing to send a credential to the service at {origin}"
            )],
        );
        let output = library_client(&url, &fixture.environment(TESTER));
        assert!(
            output_text(&output).contains("setup failed: refusing to send a credential"),
            "{}",
            output_text(&output)
        );
    }
    assert_untouched(&recorder, "the identity token");
    assert_eq!(
        fixture.emulator.stats().id_tokens_minted,
        0,
        "minted for nothing"
    );
}

#[test]
fn a_redirect_off_the_services_origin_never_carries_the_token() {
    let fixture = fixture();
    let elsewhere_recorder = Recorder::start(|_| response(200, &[], "landed"));
    let landing = elsewhere(&elsewhere_recorder, "landed");
    let service = Recorder::start(move |request| match request.target.as_str() {
        "/" => response(302, &[("location", "/same-origin")], ""),
        "/same-origin" => response(307, &[("location", &landing)], ""),
        _ => response(404, &[], ""),
    });
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    for header in [
        TokenHeader::Authorization,
        TokenHeader::XServerlessAuthorization,
    ] {
        let credentials = Credentials::from_file(fixture.key_file(TESTER)).unwrap();
        let client = runtime
            .block_on(
                Client::builder()
                    .url(service.url.as_str())
                    .credentials(credentials)
                    .token_header(header)
                    .build(),
            )
            .unwrap();
        let response = runtime.block_on(client.get("/").send()).unwrap();
        assert_eq!(response.status(), 200);
    }
    // The control: on the service's own origin the token went along, in both headers.
    let hops = service.requests();
    let all: Vec<String> = hops.iter().map(shown).collect();
    assert_eq!(hops.len(), 4, "{all:#?}");
    for (hop, name) in hops.iter().zip([
        "authorization",
        "authorization",
        "x-serverless-authorization",
        "x-serverless-authorization",
    ]) {
        assert!(
            hop.header(name)
                .is_some_and(|value| value.starts_with("Bearer ")),
            "{}",
            shown(hop)
        );
    }
    let landed = elsewhere_recorder.requests();
    let all: Vec<String> = landed.iter().map(shown).collect();
    assert_eq!(landed.len(), 2, "{all:#?}");
    for hop in &landed {
        let head = hop.head.to_ascii_lowercase();
        assert!(
            !head.contains("authorization") && !head.contains("bearer"),
            "a credential left the service's origin: {}",
            shown(hop)
        );
    }
}

#[test]
fn a_bad_https_proxy_is_a_clear_error_naming_it() {
    let fixture = fixture();
    let env = with(
        fixture.environment(TESTER),
        &[("HTTPS_PROXY", "socks5://127.0.0.1:1080")],
    );
    let output = cli(&["token", "--audience", &origin(&fixture)], &env);
    assert_refused(
        &output,
        &["HTTPS_PROXY is not an http:// or https:// proxy URL"],
    );
    let output = cli(&["doctor", "--url", &service_url(&fixture)], &env);
    assert_refused(
        &output,
        &["HTTPS_PROXY is not an http:// or https:// proxy URL"],
    );
    let output = library_client(&service_url(&fixture), &env);
    assert!(
        output_text(&output).contains("setup failed: HTTPS_PROXY is not"),
        "{}",
        output_text(&output)
    );
    assert_eq!(fixture.emulator.stats().id_tokens_minted, 0);
}

/// `*.localhost` and `localhost.` are names the system resolver may send to DNS (or a
/// hosts file may map anywhere): only exact `localhost`, which our clients pin to the
/// loopback addresses, and loopback IPs count as this machine.
#[test]
fn a_name_that_only_looks_local_gets_no_token_over_plain_http() {
    let fixture = fixture();
    let recorder = proxy();
    let port = recorder.url.port().unwrap();
    for url in [
        format!("http://evil.localhost:{port}/"),
        format!("http://localhost.:{port}/"),
    ] {
        let env = with(
            fixture.environment(TESTER),
            &[("CLOUDRUN_TEST_ID_TOKEN", &canary_token(&url))],
        );
        let output = cli(&["doctor", "--url", &url], &env);
        let origin = url.trim_end_matches('/');
        assert_refused(
            &output,
            &[&format!(
                "refusing to send a credential to the service at {origin}"
            )],
        );
        let output = library_client(&url, &env);
        assert!(
            output_text(&output).contains("setup failed: refusing to send a credential"),
            "{}",
            output_text(&output)
        );
    }
    assert_untouched(&recorder, "the identity token");

    // Exact `localhost` is this machine, and reaches the recorder on 127.0.0.1.
    let url = format!("http://localhost:{port}/");
    let env = with(
        fixture.environment(TESTER),
        &[("CLOUDRUN_TEST_ID_TOKEN", &canary_token(&url))],
    );
    let output = library_client(&url, &env);
    assert!(
        output_text(&output).contains("status=502"),
        "{}",
        output_text(&output)
    );
    let requests = recorder.requests();
    assert!(!requests.is_empty(), "nothing reached localhost");
    assert!(
        requests.iter().all(|request| request
            .header("authorization")
            .is_some_and(|value| value.contains(CANARY_SIGNATURE))),
        "the token for localhost went to localhost"
    );
}

/// A user or password in a URL would be a second credential on the wire, and shown
/// wherever the URL is printed: such a URL gets nothing, and its password is not echoed.
#[test]
fn a_url_carrying_a_user_and_password_gets_no_token_and_is_not_echoed() {
    let fixture = fixture();
    let recorder = proxy();
    let port = recorder.url.port().unwrap();
    let url = format!("http://user:UrlPassw0rd7@127.0.0.1:{port}/");
    let env = with(
        fixture.environment(TESTER),
        &[("CLOUDRUN_TEST_URL_HELLO", &url)],
    );
    let output = cli(&["doctor", "--service", "hello"], &env);
    assert_refused(&output, &["its URL holds a user name or password"]);
    assert!(
        !output_text(&output).contains("UrlPassw0rd7"),
        "{}",
        output_text(&output)
    );
    let output = library_client(&url, &fixture.environment(TESTER));
    assert!(
        output_text(&output).contains("setup failed: refusing to send a credential"),
        "{}",
        output_text(&output)
    );
    assert_untouched(&recorder, "a URL with a password");
}
