//! Every credential source end to end: `cloudrun-test token --audience URL` (the real
//! binary, in an isolated environment) prints a token that the emulator's Cloud Run
//! front accepts for the right identity. The gcloud source runs the real gcloud CLI.

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use cloudrun_test_e2e::{Fixture, GeneratedCrate, TESTER, isolate, output_text};
use cloudrun_test_emulator::{Emulator, EmulatorBuilder, ServiceConfig};
use serde_json::{Value, json};
use support::{accepted_as, run_isolated};

const ALICE: &str = "alice@example.com";
const DEPLOYER: &str = "deployer@emulated-project.iam.gserviceaccount.com";
const DELEGATE: &str = "delegate@emulated-project.iam.gserviceaccount.com";
const RUNNER: &str = "runner@emulated-project.iam.gserviceaccount.com";
const GCLOUD_CLIENT_ID: &str = "32555940559.apps.googleusercontent.com";

/// An emulator whose `hello` service admits every identity these tests mint as.
fn fixture(configure: impl FnOnce(EmulatorBuilder) -> EmulatorBuilder) -> Fixture {
    let hello = ServiceConfig::new("hello")
        .invoker(&format!("serviceAccount:{TESTER}"))
        .invoker(&format!("serviceAccount:{DEPLOYER}"))
        .invoker(&format!("serviceAccount:{RUNNER}"))
        .invoker(&format!("user:{ALICE}"));
    Fixture::start(configure(Emulator::builder().service(hello)))
}

fn audience(fixture: &Fixture) -> String {
    fixture
        .emulator
        .service_url("hello")
        .unwrap()
        .origin()
        .ascii_serialization()
}

fn base(fixture: &Fixture) -> String {
    fixture
        .emulator
        .base_url()
        .as_str()
        .trim_end_matches('/')
        .to_owned()
}

/// A home and gcloud folder of the test's own, no metadata server, no disk cache:
/// only what `env` adds is configured.
fn isolated_env(home: &Path, env: &[(&str, String)]) -> Vec<(String, String)> {
    let mut all = vec![
        ("HOME".to_owned(), home.display().to_string()),
        (
            "CLOUDSDK_CONFIG".to_owned(),
            home.join("gcloud-empty").display().to_string(),
        ),
        ("NO_GCE_CHECK".to_owned(), "true".to_owned()),
        ("CLOUDRUN_TEST_DISK_CACHE".to_owned(), "off".to_owned()),
    ];
    all.extend(
        env.iter()
            .map(|(name, value)| ((*name).to_owned(), value.clone())),
    );
    all
}

/// `cloudrun-test token --audience AUD`: the token, after checking that stdout holds
/// only it and stderr never shows it.
fn mint(audience: &str, env: &[(String, String)]) -> (String, String) {
    let output = run_isolated(&["token", "--audience", audience], env);
    assert!(output.status.success(), "{}", output_text(&output));
    let stdout = String::from_utf8(output.stdout.clone()).unwrap();
    let token = stdout
        .strip_suffix('\n')
        .expect("a newline after the token")
        .to_owned();
    assert_eq!(token.split('.').count(), 3, "one JWT alone");
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(!stderr.contains(&token), "the token leaked to stderr");
    (token, stderr)
}

fn claims(token: &str) -> Value {
    use base64::Engine as _;
    let payload = token.split('.').nth(1).unwrap();
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

fn impersonation_url(fixture: &Fixture, email: &str) -> String {
    format!(
        "{}/v1/projects/-/serviceAccounts/{email}:generateAccessToken",
        base(fixture)
    )
}

#[test]
fn authorized_user_file_gives_a_client_id_token_the_front_accepts_for_the_user() {
    let fixture = fixture(|builder| builder);
    let home = tempfile::tempdir().unwrap();
    let file = write(
        home.path(),
        "user.json",
        &fixture.emulator.authorized_user_credentials(ALICE),
    );
    let env = isolated_env(
        home.path(),
        &[("GOOGLE_APPLICATION_CREDENTIALS", file.display().to_string())],
    );
    let (token, stderr) = mint(&audience(&fixture), &env);
    assert_eq!(claims(&token)["aud"], GCLOUD_CLIENT_ID);
    assert!(stderr.contains("authorized_user"), "{stderr}");
    assert!(
        stderr.contains("note:") && stderr.contains("accepts that for development"),
        "the client-id audience is explained: {stderr}"
    );
    accepted_as(&fixture, &token, ALICE);

    // The same token handed over in CLOUDRUN_TEST_ID_TOKEN is used as is, first in the chain.
    let mut env = env;
    env.push(("CLOUDRUN_TEST_ID_TOKEN".into(), token.clone()));
    let (again, stderr) = mint(&audience(&fixture), &env);
    assert_eq!(again, token);
    assert!(stderr.contains("CLOUDRUN_TEST_ID_TOKEN"), "{stderr}");
}

/// gcloud's well-known ADC file holding an impersonated_service_account whose source
/// is user credentials (`gcloud auth application-default login --impersonate-service-account`).
#[test]
fn adc_file_impersonating_from_user_credentials() {
    let fixture = fixture(|builder| builder.token_creator(&format!("user:{ALICE}"), DEPLOYER));
    let home = tempfile::tempdir().unwrap();
    let user: Value =
        serde_json::from_str(&fixture.emulator.authorized_user_credentials(ALICE)).unwrap();
    let config = home.path().join("gcloud");
    std::fs::create_dir_all(&config).unwrap();
    write(
        &config,
        "application_default_credentials.json",
        &json!({
            "type": "impersonated_service_account",
            "service_account_impersonation_url": impersonation_url(&fixture, DEPLOYER),
            "delegates": [],
            "source_credentials": user,
        })
        .to_string(),
    );
    let mut env = isolated_env(home.path(), &[]);
    env.push(("CLOUDSDK_CONFIG".into(), config.display().to_string()));
    let audience = audience(&fixture);
    let (token, stderr) = mint(&audience, &env);
    assert_eq!(claims(&token)["aud"], audience.as_str());
    assert!(
        stderr.contains("application_default_credentials.json"),
        "{stderr}"
    );
    accepted_as(&fixture, &token, DEPLOYER);
}

/// A service-account key impersonating through a delegate, as a file.
#[test]
fn impersonated_service_account_file_with_a_delegate() {
    let fixture = fixture(|builder| {
        builder
            .token_creator(&format!("serviceAccount:{TESTER}"), DELEGATE)
            .token_creator(&format!("serviceAccount:{DELEGATE}"), DEPLOYER)
    });
    let home = tempfile::tempdir().unwrap();
    let key: Value = serde_json::from_str(&fixture.emulator.service_account_key(TESTER)).unwrap();
    let file = write(
        home.path(),
        "impersonated.json",
        &json!({
            "type": "impersonated_service_account",
            "service_account_impersonation_url": impersonation_url(&fixture, DEPLOYER),
            "delegates": [format!("projects/-/serviceAccounts/{DELEGATE}")],
            "source_credentials": key,
        })
        .to_string(),
    );
    let env = isolated_env(
        home.path(),
        &[("GOOGLE_APPLICATION_CREDENTIALS", file.display().to_string())],
    );
    let (token, _) = mint(&audience(&fixture), &env);
    accepted_as(&fixture, &token, DEPLOYER);
}

#[test]
fn impersonation_variable_wraps_the_chosen_source_and_explains_a_denial() {
    let fixture =
        fixture(|builder| builder.token_creator(&format!("serviceAccount:{TESTER}"), DEPLOYER));
    let home = tempfile::tempdir().unwrap();
    let mut env = fixture.environment(TESTER);
    env.extend(isolated_env(
        home.path(),
        // The fixture's environment points IAM Credentials at the emulator.
        &[(
            "CLOUDRUN_TEST_IMPERSONATE_SERVICE_ACCOUNT",
            DEPLOYER.to_owned(),
        )],
    ));
    let (token, stderr) = mint(&audience(&fixture), &env);
    assert!(
        stderr.contains(&format!("{DEPLOYER} impersonated")),
        "{stderr}"
    );
    accepted_as(&fixture, &token, DEPLOYER);

    // No grant on RUNNER: the refusal names the permission and the command that fixes it.
    for (name, value) in &mut env {
        if name == "CLOUDRUN_TEST_IMPERSONATE_SERVICE_ACCOUNT" {
            *value = RUNNER.to_owned();
        }
    }
    let output = run_isolated(&["token", "--audience", &audience(&fixture)], &env);
    assert_eq!(output.status.code(), Some(1), "{}", output_text(&output));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("iam.serviceAccounts.getOpenIdToken"),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!(
            "gcloud iam service-accounts add-iam-policy-binding {RUNNER} \
             --member=serviceAccount:{TESTER} --role=roles/iam.serviceAccountOpenIdTokenCreator"
        )),
        "{stderr}"
    );
    assert!(output.stdout.is_empty());
}

#[test]
fn metadata_server_via_gce_metadata_host() {
    let fixture = fixture(|builder| builder.metadata_service_account(RUNNER));
    let home = tempfile::tempdir().unwrap();
    let mut env = isolated_env(
        home.path(),
        &[("GCE_METADATA_HOST", fixture.emulator.metadata_host())],
    );
    let (token, stderr) = mint(&audience(&fixture), &env);
    assert!(stderr.contains("metadata server"), "{stderr}");
    accepted_as(&fixture, &token, RUNNER);

    // Forcing a source: the metadata server wins over a key file when asked for.
    let key = fixture.key_file(TESTER);
    env.push((
        "GOOGLE_APPLICATION_CREDENTIALS".into(),
        key.display().to_string(),
    ));
    env.push(("CLOUDRUN_TEST_CREDENTIALS".into(), "metadata".into()));
    let (token, _) = mint(&audience(&fixture), &env);
    assert_eq!(claims(&token)["email"], RUNNER);
}

/// A tiny HTTP server answering every GET with `{"value": SUBJECT}` when the request
/// carries `Authorization: Bearer request-token`, else 401: a CI's OIDC token URL.
fn subject_token_server(subject: &'static str) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut authorized = false;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                authorized |= line.eq_ignore_ascii_case("authorization: Bearer request-token\r\n");
            }
            let (status, body) = if authorized {
                (
                    "200 OK",
                    json!({ "count": 1, "value": subject }).to_string(),
                )
            } else {
                ("401 Unauthorized", "{}".to_owned())
            };
            let _ = write!(
                stream,
                "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    format!("http://{address}/token?audience=sts")
}

fn external_account(fixture: &Fixture, source: Value, impersonate: Option<&str>) -> Value {
    let mut file = json!({
        "type": "external_account",
        "audience": fixture.emulator.workload_identity_audience(),
        "subject_token_type": "urn:ietf:params:oauth:token-type:jwt",
        "token_url": fixture.emulator.sts_token_url().as_str(),
        "credential_source": source,
    });
    if let Some(email) = impersonate {
        file["service_account_impersonation_url"] = json!(impersonation_url(fixture, email));
    }
    file
}

/// Workload identity federation with each kind of credential source: a file, a URL
/// with headers and a JSON answer (as google-github-actions/auth writes), an executable.
#[test]
fn external_account_from_file_url_and_executable() {
    let fixture = fixture(|builder| {
        builder
            .workload_identity_subject("file-subject-token", "repo:org/app:ref:refs/heads/main")
            .workload_identity_subject("url-subject-*", "repo:org/app:ref:refs/heads/url")
            .workload_identity_subject("exe-subject-token", "exe")
    });
    fixture
        .emulator
        .add_token_creator(&fixture.emulator.workload_identity_pool_members(), DEPLOYER);
    let home = tempfile::tempdir().unwrap();
    let audience = audience(&fixture);
    let subject_file = write(home.path(), "subject.jwt", "file-subject-token\n");
    let url = subject_token_server("url-subject-42");
    let script = write(
        home.path(),
        "token.sh",
        r#"test "$GOOGLE_EXTERNAL_ACCOUNT_INTERACTIVE" = 0 || exit 3
echo '{"version": 1, "success": true, "token_type": "urn:ietf:params:oauth:token-type:jwt", "id_token": "exe-subject-token"}'
"#,
    );
    let sources = [
        ("file", json!({ "file": subject_file })),
        (
            "url",
            json!({
                "url": url,
                "headers": { "Authorization": "Bearer request-token" },
                "format": { "type": "json", "subject_token_field_name": "value" },
            }),
        ),
        (
            "executable",
            json!({ "executable": { "command": format!("/bin/sh {}", script.display()), "timeout_millis": 10000 } }),
        ),
    ];
    for (kind, source) in sources {
        let file = write(
            home.path(),
            &format!("wif-{kind}.json"),
            &external_account(&fixture, source, Some(DEPLOYER)).to_string(),
        );
        let env = isolated_env(
            home.path(),
            &[
                ("GOOGLE_APPLICATION_CREDENTIALS", file.display().to_string()),
                ("GOOGLE_EXTERNAL_ACCOUNT_ALLOW_EXECUTABLES", "1".to_owned()),
            ],
        );
        let (token, stderr) = mint(&audience, &env);
        assert!(
            stderr.contains("workload identity federation"),
            "{kind}: {stderr}"
        );
        accepted_as(&fixture, &token, DEPLOYER);
    }
}

#[test]
fn external_account_refusals_say_what_is_missing() {
    let fixture = fixture(|builder| builder);
    let home = tempfile::tempdir().unwrap();
    let audience = audience(&fixture);
    let subject_file = write(home.path(), "subject.jwt", "some-token");

    // No service account to impersonate: no identity token, and the message says why.
    let file = write(
        home.path(),
        "direct.json",
        &external_account(&fixture, json!({ "file": subject_file }), None).to_string(),
    );
    let env = isolated_env(
        home.path(),
        &[("GOOGLE_APPLICATION_CREDENTIALS", file.display().to_string())],
    );
    let output = run_isolated(&["token", "--audience", &audience], &env);
    assert_eq!(output.status.code(), Some(1), "{}", output_text(&output));
    let stderr = String::from_utf8_lossy(&output.stderr);
    for expected in [
        "service_account_impersonation_url",
        "roles/iam.workloadIdentityUser",
        "roles/run.invoker",
        "principalSet://iam.googleapis.com/projects/123456789012/locations/global/workloadIdentityPools/emulated-pool/*",
    ] {
        assert!(stderr.contains(expected), "{expected} in: {stderr}");
    }

    // Executables run only when allowed, as in Google's libraries.
    let file = write(
        home.path(),
        "exe.json",
        &external_account(
            &fixture,
            json!({ "executable": { "command": "/bin/true" } }),
            Some(DEPLOYER),
        )
        .to_string(),
    );
    let env = isolated_env(
        home.path(),
        &[("GOOGLE_APPLICATION_CREDENTIALS", file.display().to_string())],
    );
    let output = run_isolated(&["token", "--audience", &audience], &env);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("GOOGLE_EXTERNAL_ACCOUNT_ALLOW_EXECUTABLES=1"),
        "{stderr}"
    );
}

/// Runs the real gcloud in configuration folder `config`, isolated, with `stdin`.
fn gcloud(config: &Path, args: &[&str], env: &[(String, String)], stdin: Option<&str>) {
    let program = std::env::var("CLOUDRUN_TEST_GCLOUD").unwrap_or_else(|_| "gcloud".to_owned());
    let mut command = Command::new(&program);
    command.args(args).arg("--verbosity=warning");
    isolate(&mut command);
    command
        .envs(env.iter().cloned())
        .env("CLOUDSDK_CONFIG", config)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command.spawn().unwrap_or_else(|error| {
        panic!(
            "this test runs the real gcloud CLI, and starting `{program}` failed: {error}. \
             Install the Google Cloud SDK or set CLOUDRUN_TEST_GCLOUD."
        )
    });
    let mut pipe = child.stdin.take().unwrap();
    if let Some(text) = stdin {
        pipe.write_all(text.as_bytes()).unwrap();
    }
    drop(pipe);
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > Duration::from_secs(120) {
            let _ = child.kill();
            panic!("gcloud {args:?} did not finish within 120 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert!(status.success(), "gcloud {args:?} failed: {stderr}");
}

/// What gcloud needs to run offline against the emulator.
fn gcloud_env(home: &Path, config: &Path) -> Vec<(String, String)> {
    let mut env = isolated_env(home, &[]);
    env.extend([
        ("CLOUDSDK_CONFIG".into(), config.display().to_string()),
        (
            "CLOUDSDK_CORE_DISABLE_USAGE_REPORTING".into(),
            "true".into(),
        ),
        (
            "CLOUDSDK_COMPONENT_MANAGER_DISABLE_UPDATE_CHECK".into(),
            "true".into(),
        ),
        ("CLOUDSDK_CORE_CHECK_GCE_METADATA".into(), "false".into()),
        ("NO_PROXY".into(), "127.0.0.1,localhost".into()),
    ]);
    env
}

/// The real gcloud with a service account (a key whose `token_uri` is the emulator):
/// `--audiences` is passed, the token is for the service; and with gcloud's
/// `auth/impersonate_service_account` property, gcloud impersonates (with
/// `--include-email`, without which Cloud Run would refuse the token).
#[test]
fn gcloud_service_account_and_its_impersonation_property() {
    if !cloudrun_test_e2e::tier::slow() || !cloudrun_test_e2e::tier::gcloud() {
        return;
    }
    let fixture =
        fixture(|builder| builder.token_creator(&format!("serviceAccount:{TESTER}"), DEPLOYER));
    let home = tempfile::tempdir().unwrap();
    let config = home.path().join("gcloud");
    let env = gcloud_env(home.path(), &config);
    let key = fixture.key_file(TESTER);
    gcloud(
        &config,
        &[
            "auth",
            "activate-service-account",
            "--key-file",
            key.to_str().unwrap(),
        ],
        &env,
        None,
    );
    let audience = audience(&fixture);
    let (token, stderr) = mint(&audience, &env);
    assert!(stderr.contains("the gcloud CLI"), "{stderr}");
    assert_eq!(claims(&token)["aud"], audience.as_str());
    accepted_as(&fixture, &token, TESTER);

    let mut env = env;
    env.push((
        "CLOUDSDK_AUTH_IMPERSONATE_SERVICE_ACCOUNT".into(),
        DEPLOYER.into(),
    ));
    env.push(("CLOUDRUN_TEST_IAM_ENDPOINT".into(), base(&fixture)));
    let (token, stderr) = mint(&audience, &env);
    assert!(
        stderr.contains(&format!("impersonating {DEPLOYER}")),
        "{stderr}"
    );
    accepted_as(&fixture, &token, DEPLOYER);
}

/// The real gcloud with a user account: its refresh token activated (from stdin, never
/// the command line) with gcloud's `auth/token_host` at the emulator. No `--audiences`
/// for users: the token's audience is gcloud's client id, which the front accepts.
#[test]
fn gcloud_user_account_through_token_host() {
    if !cloudrun_test_e2e::tier::slow() || !cloudrun_test_e2e::tier::gcloud() {
        return;
    }
    let fixture = fixture(|builder| builder);
    let home = tempfile::tempdir().unwrap();
    let config = home.path().join("gcloud");
    std::fs::create_dir_all(config.join("configurations")).unwrap();
    std::fs::write(config.join("active_config"), "default").unwrap();
    std::fs::write(
        config.join("configurations/config_default"),
        format!("[auth]\ntoken_host = {}\n", fixture.emulator.token_uri()),
    )
    .unwrap();
    let user: Value =
        serde_json::from_str(&fixture.emulator.authorized_user_credentials(ALICE)).unwrap();
    let env = gcloud_env(home.path(), &config);
    // With prompts on, gcloud reads the refresh token from stdin.
    let mut activation_env = env.clone();
    activation_env.push(("CLOUDSDK_CORE_DISABLE_PROMPTS".into(), "0".into()));
    gcloud(
        &config,
        &["auth", "activate-refresh-token", ALICE],
        &activation_env,
        Some(&format!("{}\n", user["refresh_token"].as_str().unwrap())),
    );
    let (token, stderr) = mint(&audience(&fixture), &env);
    assert!(
        stderr.contains(&format!("user account {ALICE}")),
        "{stderr}"
    );
    assert_eq!(claims(&token)["aud"], GCLOUD_CLIENT_ID);
    accepted_as(&fixture, &token, ALICE);

    // gcloud's access token (`print-access-token`) opens the Admin API lookup.
    let mut env = env;
    env.extend([
        (
            "CLOUDRUN_TEST_PROJECT".into(),
            fixture.emulator.project().into(),
        ),
        (
            "CLOUDRUN_TEST_REGION".into(),
            fixture.emulator.region().into(),
        ),
        ("CLOUDRUN_TEST_RUN_ENDPOINT".into(), base(&fixture)),
    ]);
    let output = run_isolated(&["doctor", "--service", "hello"], &env);
    let text = output_text(&output);
    assert!(output.status.success(), "{text}");
    assert!(text.contains("accepts that for development"), "{text}");
    assert!(!text.contains("eyJ"), "a token leaked: {text}");
}

#[test]
fn doctor_explains_the_choice_without_showing_the_token() {
    let fixture = fixture(|builder| builder);
    let home = tempfile::tempdir().unwrap();
    let mut env = fixture.environment(TESTER);
    env.extend(isolated_env(home.path(), &[]));
    let url = fixture.emulator.service_url("hello").unwrap();
    let output = run_isolated(&["doctor", "--url", url.as_str()], &env);
    let text = output_text(&output);
    assert!(output.status.success(), "{text}");
    for expected in [
        "1. CLOUDRUN_TEST_ID_TOKEN [id-token]: skipped: not set",
        "2. GOOGLE_APPLICATION_CREDENTIALS [google-application-credentials]: chosen: service-account key file",
        &format!("Identity:    {TESTER}"),
        &format!("aud:   {}", audience(&fixture)),
        "expires: ",
    ] {
        assert!(text.contains(expected), "{expected:?} in:\n{text}");
    }
    assert!(!text.contains("eyJ"), "a token leaked:\n{text}");
}

/// With nothing configured, `token` fails at once, listing what it tried and how to
/// set each up. Timed against `cloudrun-test --version` (the process start alone).
#[test]
fn no_credentials_fail_fast() {
    let home = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| {
        let started = Instant::now();
        let output = Command::new(env!("CARGO_BIN_EXE_cloudrun-test"))
            .args(args)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", home.path())
            .output()
            .unwrap();
        (started.elapsed(), output)
    };
    let (_, output) = run(&["token", "--audience", "https://hello.example.com"]);
    assert_eq!(output.status.code(), Some(1), "{}", output_text(&output));
    let stderr = String::from_utf8_lossy(&output.stderr);
    for expected in [
        "CLOUDRUN_TEST_ID_TOKEN: not set",
        "GOOGLE_APPLICATION_CREDENTIALS: not set",
        "application_default_credentials.json",
        "the gcloud CLI:",
        "the metadata server: not on Google Cloud",
        "to use it: run `gcloud auth login`",
    ] {
        assert!(stderr.contains(expected), "{expected:?} in:\n{stderr}");
    }
    // Interleaved, so that the machine's noise hits both alike.
    let (mut versions, mut tokens) = (Vec::new(), Vec::new());
    for _ in 0..11 {
        versions.push(run(&["--version"]).0);
        tokens.push(run(&["token", "--audience", "https://hello.example.com"]).0);
    }
    versions.sort();
    tokens.sort();
    let (version, token) = (versions[5], tokens[5]);
    eprintln!(
        "no credentials: `cloudrun-test token` fails in {token:?} (median of 11; fastest {:?}), \
         `cloudrun-test --version` takes {version:?} (fastest {:?}): ratio {:.2} (fastest {:.2})",
        tokens[0],
        versions[0],
        token.as_secs_f64() / version.as_secs_f64(),
        tokens[0].as_secs_f64() / versions[0].as_secs_f64(),
    );
    // Off Google Cloud nothing is probed: no more than process start-up plus a little.
    assert!(
        token < version + Duration::from_millis(50),
        "{token:?} against {version:?}"
    );
}

/// `impersonate = "..."` in the attribute: one principal allowed, another denied,
/// both minted by impersonation from the same key.
#[test]
fn per_test_impersonation_allows_one_principal_and_denies_another() {
    if !cloudrun_test_e2e::tier::slow() {
        return;
    }
    const ALLOWED: &str = "allowed@emulated-project.iam.gserviceaccount.com";
    const DENIED: &str = "denied@emulated-project.iam.gserviceaccount.com";
    let fixture = Fixture::start(
        Emulator::builder()
            .service(ServiceConfig::new("hello").invoker(&format!("serviceAccount:{ALLOWED}")))
            .token_creator(&format!("serviceAccount:{TESTER}"), ALLOWED)
            .token_creator(&format!("serviceAccount:{TESTER}"), DENIED),
    );
    let source = format!(
        r#"
use cloudrun_test::{{cloudrun_test, Client}};

#[cloudrun_test(service = "hello", impersonate = "{ALLOWED}")]
async fn allowed_principal(client: Client) {{
    assert_eq!(client.identity().as_deref(), Some("{ALLOWED}"));
    let response = client.get("/").send().await.unwrap();
    assert_eq!(response.status(), 200);
    let echo: serde_json::Value = response.json().await.unwrap();
    assert_eq!(echo["caller"], "{ALLOWED}");
}}

#[cloudrun_test(service = "hello", impersonate = "{DENIED}")]
async fn denied_principal(client: Client) {{
    assert_eq!(client.get("/").send().await.unwrap().status(), 403);
}}
"#
    );
    let generated = GeneratedCrate::new("impersonation-suite", &source);
    let home = tempfile::tempdir().unwrap();
    let mut env = fixture.environment(TESTER);
    env.extend(isolated_env(home.path(), &[]));
    let output = generated.cargo(&["test", "--offline", "--test", "generated"], &env);
    let text = output_text(&output);
    assert!(output.status.success(), "{text}");
    assert!(text.contains("test result: ok. 2 passed"), "{text}");
    let stats = fixture.emulator.stats();
    assert_eq!(stats.front_accepted, 1, "{stats:?}");
    assert_eq!(stats.front_forbidden, 1, "{stats:?}");
}

/// A source that is present but broken stops the chain (no silent fallback to the
/// next), and forcing a source that is not usable says why.
#[test]
fn a_broken_source_stops_the_chain_and_forcing_explains_itself() {
    let fixture = fixture(|builder| builder);
    let home = tempfile::tempdir().unwrap();
    let config = home.path().join("gcloud");
    std::fs::create_dir_all(&config).unwrap();
    // A usable ADC file, which must not be reached.
    write(
        &config,
        "application_default_credentials.json",
        &fixture.emulator.authorized_user_credentials(ALICE),
    );
    let broken = write(
        home.path(),
        "broken.json",
        r#"{"type": "authorized_user", "client_id": 7}"#,
    );
    let mut env = isolated_env(
        home.path(),
        &[(
            "GOOGLE_APPLICATION_CREDENTIALS",
            broken.display().to_string(),
        )],
    );
    env.push(("CLOUDSDK_CONFIG".into(), config.display().to_string()));
    let output = run_isolated(&["token", "--audience", &audience(&fixture)], &env);
    assert_eq!(output.status.code(), Some(1), "{}", output_text(&output));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(&format!("credentials file {}", broken.display()))
            && stderr.contains("field `client_id` is not a string"),
        "{stderr}"
    );

    let output = run_isolated(&["doctor"], &env);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.contains("present but unusable, so the chain stopped") && !stdout.contains("[adc]"),
        "{stdout}"
    );

    for (forced, expected) in [
        (
            "bogus",
            "use one of id-token, google-application-credentials, adc, gcloud, metadata",
        ),
        (
            "gcloud",
            "CLOUDRUN_TEST_CREDENTIALS=gcloud, but the gcloud CLI: gcloud",
        ),
        (
            "adc",
            "CLOUDRUN_TEST_CREDENTIALS=adc, but gcloud's application default credentials: no file",
        ),
    ] {
        let env = isolated_env(
            home.path(),
            &[("CLOUDRUN_TEST_CREDENTIALS", forced.to_owned())],
        );
        let output = run_isolated(&["token", "--audience", "https://x.example.com"], &env);
        assert_eq!(output.status.code(), Some(1), "{}", output_text(&output));
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(expected), "{forced}: {stderr}");
    }
}

/// gcloud's hazards, with a stand-in gcloud (`CLOUDRUN_TEST_GCLOUD`): a stale token for
/// another audience printed with exit status 0 is refused, a hanging gcloud is stopped,
/// and a failing one's stderr is shown without anything token-like.
#[test]
fn a_stale_hanging_or_failing_gcloud_is_refused_clearly() {
    use base64::Engine as _;
    let home = tempfile::tempdir().unwrap();
    let config = home.path().join("gcloud");
    std::fs::create_dir_all(config.join("configurations")).unwrap();
    std::fs::write(config.join("active_config"), "default").unwrap();
    std::fs::write(
        config.join("configurations/config_default"),
        format!("[core]\naccount = {TESTER}\n"),
    )
    .unwrap();
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 3000;
    let encode =
        |value: Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(value.to_string());
    let stale = format!(
        "{}.{}.c2ln",
        encode(json!({"alg": "RS256"})),
        encode(json!({"aud": "https://other.example.com", "email": TESTER, "exp": exp}))
    );
    let script = write(
        home.path(),
        "fake-gcloud",
        &format!(
            "#!/bin/sh\ncase \"$FAKE_GCLOUD\" in\n\
             stale) echo '{stale}' ;;\n\
             hang) exec sleep 30 ;;\n\
             *) echo 'ERROR: (gcloud.auth.print-identity-token) refreshing failed for eyJhbGciOi.eyJzdWIi.c2ln' >&2; exit 1 ;;\n\
             esac\n"
        ),
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    for (mode, expected) in [
        (
            "stale",
            "gcloud printed a token for audience https://other.example.com, not https://hello.example.com",
        ),
        ("hang", "gcloud did not finish within 1s and was stopped"),
        ("fail", "gcloud exited with exit status: 1"),
    ] {
        let env = isolated_env(
            home.path(),
            &[
                ("CLOUDSDK_CONFIG", config.display().to_string()),
                ("CLOUDRUN_TEST_GCLOUD", script.display().to_string()),
                ("CLOUDRUN_TEST_GCLOUD_TIMEOUT", "1".to_owned()),
                ("FAKE_GCLOUD", mode.to_owned()),
            ],
        );
        let started = Instant::now();
        let output = run_isolated(&["token", "--audience", "https://hello.example.com"], &env);
        assert_eq!(output.status.code(), Some(1), "{}", output_text(&output));
        assert!(started.elapsed() < Duration::from_secs(10));
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(expected), "{mode}: {stderr}");
        assert!(!stderr.contains("eyJ"), "{mode}: a token in {stderr}");
        assert!(output.stdout.is_empty());
    }
}

/// Access tokens from the same sources open the Admin API: `doctor --service hello`
/// looks the service up (`services.get`), then calls it, with the metadata server,
/// user credentials and workload identity federation (generateAccessToken).
#[test]
fn access_tokens_of_each_source_look_the_service_up() {
    let fixture = fixture(|builder| {
        builder
            .metadata_service_account(RUNNER)
            .workload_identity_subject("lookup-subject", "repo:org/app")
    });
    fixture
        .emulator
        .add_token_creator(&fixture.emulator.workload_identity_pool_members(), DEPLOYER);
    let home = tempfile::tempdir().unwrap();
    let user = write(
        home.path(),
        "user.json",
        &fixture.emulator.authorized_user_credentials(ALICE),
    );
    let subject = write(home.path(), "subject", "lookup-subject");
    let wif = write(
        home.path(),
        "wif.json",
        &external_account(&fixture, json!({ "file": subject }), Some(DEPLOYER)).to_string(),
    );
    let lookup = [
        (
            "CLOUDRUN_TEST_PROJECT",
            fixture.emulator.project().to_owned(),
        ),
        ("CLOUDRUN_TEST_REGION", fixture.emulator.region().to_owned()),
        ("CLOUDRUN_TEST_RUN_ENDPOINT", base(&fixture)),
    ];
    let sources = [
        (
            "GCE_METADATA_HOST",
            fixture.emulator.metadata_host(),
            RUNNER,
        ),
        (
            "GOOGLE_APPLICATION_CREDENTIALS",
            user.display().to_string(),
            ALICE,
        ),
        (
            "GOOGLE_APPLICATION_CREDENTIALS",
            wif.display().to_string(),
            DEPLOYER,
        ),
    ];
    for (variable, value, identity) in sources {
        let mut env = isolated_env(home.path(), &lookup);
        env.push((variable.to_owned(), value));
        let output = run_isolated(&["doctor", "--service", "hello"], &env);
        let text = output_text(&output);
        assert!(output.status.success(), "{identity}: {text}");
        assert!(
            text.contains(&format!(
                "Service:     hello at {}",
                fixture.emulator.service_url("hello").unwrap()
            )),
            "{identity}: {text}"
        );
        assert!(text.contains(identity), "{identity}: {text}");
        assert!(!text.contains("eyJ"), "a token leaked: {text}");
    }
}
