//! Hostile cases: redaction. Endpoints and programs that answer with secrets in every
//! form (`key=value` and form bodies, `key: value` headers, JSON, `Bearer ...`, a JWT,
//! a PEM private key) get quoted in errors, diagnoses and the command's output without
//! any of them, while the words that explain the failure stay.
//!
//! Each endpoint is a real loopback listener ([`Recorder`]), each program a real
//! script; the command cases run the real binary and read its stdout and stderr.

use std::path::{Path, PathBuf};

use cloudrun_test::reqwest::StatusCode;
use cloudrun_test::{Client, Credentials, Diagnosis};
use cloudrun_test_e2e::recorder::{Recorder, response};
use cloudrun_test_e2e::{CANARY_SIGNATURE, canary_token};
use cloudrun_test_emulator::{Emulator, ServiceConfig};
use serde_json::{Value, json};

use crate::support::{self, Fixture, TESTER, output_text};

/// Secrets, one per form; none may ever be shown. Not shaped like tokens: only the
/// name before them marks them.
const SECRETS: [&str; 9] = [
    "Zq7SECRETaccess",
    "Zq7SECRETrefresh",
    "Zq7SECRETbearer",
    "Zq7SECRETidtoken",
    "Zq7SECRETclient",
    "Zq7SECRETassertion",
    "Zq7SECRETpassword",
    "Zq7SECRETpemBody",
    "Zq7SECRETsubject",
];

/// Text holding every secret in every form, around words that explain the failure.
fn secrets_in_every_form() -> String {
    let jwt = canary_token("https://leak.example.com");
    format!(
        "upstream failure, reauthentication required\n\
         grant_type=refresh_token&access_token={}&refresh_token={}\n\
         Authorization: Bearer {}\n\
         {{\"id_token\": \"{}\", \"client_secret\":\"{}\"}}\n\
         assertion: {} password={} subject_token='{}'\n\
         stale {jwt}\n\
         -----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n\
         see the logs",
        SECRETS[0],
        SECRETS[1],
        SECRETS[2],
        SECRETS[3],
        SECRETS[4],
        SECRETS[5],
        SECRETS[6],
        SECRETS[8],
        SECRETS[7],
    )
}

/// Asserts that `text` (from `what`) shows no secret, no JWT, and every `useful` word.
fn assert_clean(text: &str, what: &str, useful: &[&str]) {
    for secret in SECRETS.iter().chain([&CANARY_SIGNATURE]) {
        assert!(!text.contains(secret), "{secret} shows in {what}:\n{text}");
    }
    assert!(!text.contains("eyJ"), "a JWT shows in {what}:\n{text}");
    assert!(
        !text.contains("BEGIN PRIVATE"),
        "a key shows in {what}:\n{text}"
    );
    for word in useful {
        assert!(text.contains(word), "{what} lacks {word:?}:\n{text}");
    }
}

/// One line (or, for a key or a split JWT, a few) holding one secret in one form, what
/// the secret is, and what of the line must still show, redacted, when quoted.
fn one_secret_per_form() -> Vec<(String, String, String)> {
    let jwt = canary_token("https://leak.example.com");
    let (jwt_head, jwt_signature) = jwt.rsplit_once('.').unwrap();
    let line = |line: &str, secret: &str, shown: &str| {
        (line.to_owned(), secret.to_owned(), shown.to_owned())
    };
    vec![
        line(
            &format!("grant_type=refresh_token&access_token={}&x=y", SECRETS[0]),
            SECRETS[0],
            "access_token=<redacted>&x=y",
        ),
        line(
            &format!("form refresh_token%3D{} sent", SECRETS[1]),
            SECRETS[1],
            "refresh_token%3D<redacted> sent",
        ),
        line(
            &format!("Authorization: Bearer {}", SECRETS[2]),
            SECRETS[2],
            "Authorization: Bearer <redacted>",
        ),
        line(
            &format!("{{\"id_token\": \"{}\"}}", SECRETS[3]),
            SECRETS[3],
            "{\"id_token\": \"<redacted>\"}",
        ),
        line(
            &format!("{{\"client_secret\": [\"{}\"], \"n\": 1}}", SECRETS[4]),
            SECRETS[4],
            "{\"client_secret\": <redacted>, \"n\": 1}",
        ),
        line(
            &format!("{{\"assertion\": {{\"value\": \"{}\"}}}}", SECRETS[5]),
            SECRETS[5],
            "{\"assertion\": <redacted>}",
        ),
        line(
            &format!("password => {}", SECRETS[6]),
            SECRETS[6],
            "password => <redacted>",
        ),
        line(
            &format!(
                "-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----",
                SECRETS[7]
            ),
            SECRETS[7],
            "<redacted private key>",
        ),
        line(
            &format!("<subject_token>{}</subject_token>", SECRETS[8]),
            SECRETS[8],
            "<subject_token><redacted></subject_token>",
        ),
        line(
            &format!("stale {jwt} here"),
            CANARY_SIGNATURE,
            "stale <redacted> here",
        ),
        line(
            &format!("cut {jwt_head}.\n{jwt_signature}"),
            CANARY_SIGNATURE,
            "cut <redacted>",
        ),
        line(
            "AWS_SECRET_ACCESS_KEY=Zq7SECRETaws",
            "Zq7SECRETaws",
            "AWS_SECRET_ACCESS_KEY=<redacted>",
        ),
        line(
            "fetch https://oauth:Zq7SECRETuri@127.0.0.1:9/t failed",
            "Zq7SECRETuri",
            "https://oauth:<redacted>@127.0.0.1:9/t failed",
        ),
    ]
}

/// Asserts that `text` shows no raw control character but line feeds, and no line
/// of its own forged by the quoted text.
fn assert_inert(text: &str, what: &str) {
    assert!(
        !text.chars().any(|c| c.is_control() && c != '\n'),
        "a control character shows raw in {what}:\n{text:?}"
    );
    assert!(text.contains("\\u{1b}"), "{what} lacks the escape:\n{text}");
    assert!(
        !text.lines().any(|line| line.starts_with("fix: run evil")),
        "{what} has a forged fix line:\n{text}"
    );
}

/// What an endpoint or a program prints to take over the terminal: erase the line,
/// go up one, write a fix of its own, retitle the window.
const TERMINAL_ATTACK: &str = "\u{1b}[2K\u{1b}[1A\rfix: run evil\u{1b}]0;pwned\u{7}\u{9b}2J";

/// A recorder answering every request with `status` and `body`.
fn answering(status: u16, content_type: &'static str, body: String) -> Recorder {
    Recorder::start(move |_| response(status, &[("content-type", content_type)], &body))
}

/// An emulator whose `hello` service admits [`TESTER`].
fn fixture() -> Fixture {
    Fixture::start(
        Emulator::builder()
            .service(ServiceConfig::new("hello").invoker(&format!("serviceAccount:{TESTER}"))),
    )
}

/// A service-account key of the emulator's whose `token_uri` is `token_uri`.
fn key_with_token_uri(fixture: &Fixture, dir: &Path, token_uri: &str) -> PathBuf {
    let mut key: Value =
        serde_json::from_str(&fixture.emulator.service_account_key(TESTER)).unwrap();
    key["token_uri"] = json!(token_uri);
    write(dir, "key.json", &key.to_string())
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

fn executable(dir: &Path, name: &str, script: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = write(dir, name, script);
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

/// `cloudrun-test ARGS` in `home` with `env` and no disk cache; stdout and stderr.
fn run(args: &[&str], env: &[(&str, String)], home: &Path) -> String {
    let mut all = vec![("CLOUDRUN_TEST_DISK_CACHE".to_owned(), "off".to_owned())];
    all.extend(
        env.iter()
            .map(|(name, value)| ((*name).to_owned(), value.clone())),
    );
    let output = support::run(args, &all, home);
    assert_eq!(output.status.code(), Some(1), "{}", output_text(&output));
    output_text(&output)
}

/// The token endpoint's JSON error is quoted by its safe fields only (`error`,
/// `error_description`), redacted inside too; the tokens beside them never show, in
/// the error's `Display` or its `Debug` (what `unwrap()` prints).
#[tokio::test]
async fn a_token_endpoint_json_error_shows_only_its_safe_fields_redacted() {
    let fixture = fixture();
    let dir = tempfile::tempdir().unwrap();
    let body = json!({
        "error": "invalid_grant",
        "error_description": format!("the grant was revoked; refresh_token={} Bearer {}", SECRETS[1], SECRETS[2]),
        "access_token": SECRETS[0],
        "id_token": canary_token("https://leak.example.com"),
        "private_key": format!("-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n", SECRETS[7]),
        "details": [{ "client_secret": SECRETS[4] }],
    });
    let endpoint = answering(400, "application/json", body.to_string());
    let credentials = Credentials::from_file(key_with_token_uri(
        &fixture,
        dir.path(),
        endpoint.url.as_str(),
    ))
    .unwrap();
    let error = credentials
        .id_token("https://hello.example.com")
        .await
        .unwrap_err();
    let useful = ["HTTP 400", "invalid_grant", "the grant was revoked", "fix:"];
    assert_clean(&error.to_string(), "the error", &useful);
    assert_clean(&format!("{error:?}"), "the error's Debug", &useful);
    assert_eq!(endpoint.requests().len(), 1, "a 400 is not retried");
}

/// A `token_uri` that carries a secret in its query (`?access_token=...`): the error
/// names the endpoint, without the secret.
#[tokio::test]
async fn an_endpoint_url_with_a_secret_in_its_query_is_named_without_it() {
    let fixture = fixture();
    let dir = tempfile::tempdir().unwrap();
    let endpoint = answering(
        400,
        "application/json",
        json!({"error": "invalid_request"}).to_string(),
    );
    let token_uri = format!(
        "{}token?client=ci&access_token={}&api_key={}",
        endpoint.url, SECRETS[0], SECRETS[4]
    );
    let credentials =
        Credentials::from_file(key_with_token_uri(&fixture, dir.path(), &token_uri)).unwrap();
    let error = credentials
        .id_token("https://hello.example.com")
        .await
        .unwrap_err();
    let named = format!("{}token?client=ci&access_token=<redacted>", endpoint.url);
    assert_clean(
        &error.to_string(),
        "the error",
        &[&named, "invalid_request"],
    );
    assert_clean(&format!("{error:?}"), "the error's Debug", &[&named]);
    assert_eq!(endpoint.requests().len(), 1, "the endpoint was asked");

    // Unreachable: the error and its fix both name the endpoint, neither the secret.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let token_uri = format!("http://127.0.0.1:{port}/token?access_token={}", SECRETS[0]);
    let credentials =
        Credentials::from_file(key_with_token_uri(&fixture, dir.path(), &token_uri)).unwrap();
    let error = credentials
        .id_token("https://hello.example.com")
        .await
        .unwrap_err()
        .to_string();
    let named = format!("http://127.0.0.1:{port}/token?access_token=<redacted>");
    assert_clean(&error, "the error", &[&named, "could not connect", "fix:"]);
}

/// A body that is not JSON (a proxy's page, a log dump, a form) can spell a secret
/// in more ways than redaction knows, so it is not quoted at all: the error says the
/// status, the endpoint and the answer's size, through the library and the command.
#[tokio::test]
async fn a_token_endpoint_text_error_is_described_not_quoted() {
    let fixture = fixture();
    let dir = tempfile::tempdir().unwrap();
    let odd_forms = [
        "<input name=\"refresh_token\" value=\"Zq7SECREThtml\">",
        "<id_token>Zq7SECRETxml</id_token>",
        "refresh_token%3DZq7SECRETurlenc",
        "access_token\tZq7SECRETtab",
        "refresh_token => Zq7SECRETarrow",
        "X-Goog-Iam-Authorization-Token Zq7SECRETheader",
    ];
    let body = format!("{}\n{}", odd_forms.join("\n"), secrets_in_every_form());
    let endpoint = answering(400, "text/html", body.clone());
    let key = key_with_token_uri(&fixture, dir.path(), endpoint.url.as_str());
    let error = Credentials::from_file(&key)
        .unwrap()
        .id_token("https://hello.example.com")
        .await
        .unwrap_err()
        .to_string();
    let described = format!(
        "HTTP 400 Bad Request, a non-JSON answer of {} bytes",
        body.len()
    );
    let useful = [endpoint.url.as_str(), described.as_str(), "fix:"];
    assert_clean(&error, "the error", &useful);
    let text = run(
        &["token", "--audience", "https://hello.example.com"],
        &[("GOOGLE_APPLICATION_CREDENTIALS", key.display().to_string())],
        dir.path(),
    );
    assert_clean(&text, "the command's output", &useful);
    for shown in [&error, &text] {
        assert!(!shown.contains("Zq7SECRET"), "{shown}");
        assert!(
            !shown.contains("upstream failure"),
            "the body is quoted: {shown}"
        );
    }
    assert_eq!(
        endpoint.requests().len(),
        2,
        "the endpoint was asked, once per run"
    );
}

/// A JSON refusal whose quoted `error_description` holds arrays and objects after
/// secret names, a URL password and terminal escapes: the command's error keeps the
/// status and the reason's words, without any secret, and cannot drive the terminal.
#[test]
fn a_token_endpoint_json_error_with_nested_values_and_escapes_is_made_safe() {
    let fixture = fixture();
    let home = tempfile::tempdir().unwrap();
    let description = format!(
        "grant revoked {{\"accessToken\":[\"{}\"],\"id_token\":{{\"value\":\"{}\"}}}} \
         retry at https://oauth:Zq7SECRETuri@idp.example.com/token {TERMINAL_ATTACK}",
        SECRETS[0], SECRETS[3]
    );
    let body = json!({"error": "invalid_grant", "error_description": description});
    let endpoint = answering(400, "application/json", body.to_string());
    let key = key_with_token_uri(&fixture, home.path(), endpoint.url.as_str());
    let text = run(
        &["token", "--audience", "https://hello.example.com"],
        &[("GOOGLE_APPLICATION_CREDENTIALS", key.display().to_string())],
        home.path(),
    );
    assert_clean(
        &text,
        "the command's output",
        &[
            endpoint.url.as_str(),
            "HTTP 400",
            "invalid_grant: grant revoked {\"accessToken\":<redacted>,\"id_token\":<redacted>}",
            "https://oauth:<redacted>@idp.example.com/token",
            "fix:",
        ],
    );
    assert!(!text.contains("Zq7SECRETuri"), "{text}");
    assert_inert(&text, "the command's output");
}

/// A `token_uri` with a password in its userinfo: refused before any request, and
/// the error and its fix name the endpoint without the password. (A URL password
/// quoted from elsewhere is redacted: see the JSON case above and the stderr forms.)
#[test]
fn a_token_uri_with_a_password_is_named_without_it() {
    let fixture = fixture();
    let home = tempfile::tempdir().unwrap();
    let endpoint = answering(
        400,
        "application/json",
        json!({"error": "invalid_request"}).to_string(),
    );
    let port = endpoint.url.port().unwrap();
    let token_uri = format!("http://oauth:UriPassw0rd9@127.0.0.1:{port}/token");
    let key = key_with_token_uri(&fixture, home.path(), &token_uri);
    let text = run(
        &["token", "--audience", "https://hello.example.com"],
        &[("GOOGLE_APPLICATION_CREDENTIALS", key.display().to_string())],
        home.path(),
    );
    let named = format!("127.0.0.1:{port}");
    assert_clean(
        &text,
        "the command's output",
        &[&named, "token_uri", "fix:"],
    );
    assert!(!text.contains("UriPassw0rd9"), "{text}");
    assert!(endpoint.requests().is_empty(), "nothing was sent");
}

/// The same endpoint through the real binary: stderr shows the reason, not the secrets.
#[test]
fn the_command_shows_a_token_endpoint_refusal_without_its_secrets() {
    let fixture = fixture();
    let home = tempfile::tempdir().unwrap();
    let body = json!({
        "error": "invalid_grant",
        "error_description": format!("Invalid JWT Signature. {}", secrets_in_every_form()),
        "access_token": SECRETS[0],
    });
    let endpoint = answering(400, "application/json", body.to_string());
    let key = key_with_token_uri(&fixture, home.path(), endpoint.url.as_str());
    let text = run(
        &["token", "--audience", "https://hello.example.com"],
        &[("GOOGLE_APPLICATION_CREDENTIALS", key.display().to_string())],
        home.path(),
    );
    assert_clean(
        &text,
        "the command's output",
        &["error:", "invalid_grant: Invalid JWT Signature.", "fix:"],
    );
}

/// `external_account` whose `credential_source.executable` fails with secrets on
/// stderr: one run per form, the secret's line between two lines of context so that
/// it stands in the tail the error quotes, and is shown there redacted.
#[test]
fn an_executable_credential_source_failing_with_secrets_on_stderr() {
    let home = tempfile::tempdir().unwrap();
    let mut forms = one_secret_per_form();
    forms.push((
        TERMINAL_ATTACK.to_owned(),
        "\u{1b}".to_owned(),
        "\\u{1b}[2K".to_owned(),
    ));
    for (line, secret, shown) in forms {
        let script = executable(
            home.path(),
            "subject-token.sh",
            &format!(
                "#!/bin/sh\ncat >&2 <<'EOF'\nupstream failure\n{line}\nsee the logs\nEOF\n\
                 echo 'federation broke' >&2\nexit 3\n"
            ),
        );
        let file = external_account(
            home.path(),
            json!({ "executable": { "command": script.display().to_string() } }),
        );
        let text = run(
            &["token", "--audience", "https://hello.example.com"],
            &[
                ("GOOGLE_APPLICATION_CREDENTIALS", file.display().to_string()),
                ("GOOGLE_EXTERNAL_ACCOUNT_ALLOW_EXECUTABLES", "1".to_owned()),
            ],
            home.path(),
        );
        assert!(!text.contains(&secret), "{secret:?} shows:\n{text}");
        assert_clean(
            &text,
            &format!("the output for {line:?}"),
            &[
                "it exited with",
                &shown,
                "see the logs | federation broke",
                "fix:",
            ],
        );
        if secret == "\u{1b}" {
            assert_inert(&text, "the command's output");
        }
    }
}

/// The executable's own failure report (`"success": false`) carries secrets in its
/// `code` and `message`.
#[test]
fn an_executable_reporting_a_failure_with_secrets_in_its_answer() {
    let home = tempfile::tempdir().unwrap();
    let answer = json!({
        "version": 1,
        "success": false,
        "code": format!("password={}", SECRETS[6]),
        "message": format!("login expired for subject_token={} (Bearer {})", SECRETS[8], SECRETS[2]),
    });
    let script = executable(
        home.path(),
        "subject-token.sh",
        &format!("#!/bin/sh\necho '{answer}'\n"),
    );
    let file = external_account(
        home.path(),
        json!({ "executable": { "command": script.display().to_string() } }),
    );
    let text = run(
        &["token", "--audience", "https://hello.example.com"],
        &[
            ("GOOGLE_APPLICATION_CREDENTIALS", file.display().to_string()),
            ("GOOGLE_EXTERNAL_ACCOUNT_ALLOW_EXECUTABLES", "1".to_owned()),
        ],
        home.path(),
    );
    assert_clean(
        &text,
        "the command's output",
        &[
            "reports a failure",
            "login expired for subject_token=<redacted>",
        ],
    );
}

/// `credential_source.url` (a CI's token service) refusing with secrets in its body.
#[test]
fn a_url_credential_source_refusing_with_secrets() {
    let home = tempfile::tempdir().unwrap();
    let service = answering(403, "text/plain", secrets_in_every_form());
    let file = external_account(
        home.path(),
        json!({ "url": service.at("/token").as_str(), "headers": { "Authorization": "Bearer request-token" } }),
    );
    let text = run(
        &["token", "--audience", "https://hello.example.com"],
        &[("GOOGLE_APPLICATION_CREDENTIALS", file.display().to_string())],
        home.path(),
    );
    assert_clean(
        &text,
        "the command's output",
        &["HTTP 403", "a non-JSON answer of", "fix:"],
    );
    assert!(!text.contains("request-token"), "{text}");
}

/// An `external_account` file for the credential `source`; its token endpoints are
/// never reached (the subject token fails first).
fn external_account(dir: &Path, source: Value) -> PathBuf {
    let file = json!({
        "type": "external_account",
        "audience": "//iam.googleapis.com/projects/1/locations/global/workloadIdentityPools/p/providers/q",
        "subject_token_type": "urn:ietf:params:oauth:token-type:jwt",
        "token_url": "http://127.0.0.1:9/v1/token",
        "service_account_impersonation_url": format!(
            "http://127.0.0.1:9/v1/projects/-/serviceAccounts/{TESTER}:generateAccessToken"
        ),
        "credential_source": source,
    });
    write(dir, "external-account.json", &file.to_string())
}

/// A stand-in gcloud (`CLOUDRUN_TEST_GCLOUD`) whose error prints tokens.
#[test]
fn a_failing_gcloud_printing_tokens_in_its_error() {
    let home = tempfile::tempdir().unwrap();
    let config = home.path().join("gcloud");
    std::fs::create_dir_all(config.join("configurations")).unwrap();
    std::fs::write(config.join("active_config"), "default").unwrap();
    std::fs::write(
        config.join("configurations/config_default"),
        format!("[core]\naccount = {TESTER}\n"),
    )
    .unwrap();
    let mut forms = one_secret_per_form();
    forms.push((
        TERMINAL_ATTACK.to_owned(),
        "\u{1b}".to_owned(),
        "\\u{1b}[2K".to_owned(),
    ));
    for (line, secret, shown) in forms {
        let script = executable(
            home.path(),
            "fake-gcloud",
            &format!(
                "#!/bin/sh\ncat >&2 <<'EOF'\nERROR: (gcloud.auth.print-identity-token) failed:\n\
                 {line}\nsee the logs\nEOF\nexit 1\n"
            ),
        );
        let text = run(
            &["token", "--audience", "https://hello.example.com"],
            &[
                ("CLOUDSDK_CONFIG", config.display().to_string()),
                ("CLOUDRUN_TEST_GCLOUD", script.display().to_string()),
                ("CLOUDRUN_TEST_CREDENTIALS", "gcloud".to_owned()),
            ],
            home.path(),
        );
        assert!(!text.contains(&secret), "{secret:?} shows:\n{text}");
        assert_clean(
            &text,
            &format!("the output for {line:?}"),
            &["gcloud exited with", &shown, "see the logs", "fix:"],
        );
        if secret == "\u{1b}" {
            assert_inert(&text, "the command's output");
        }
    }
}

/// A metadata server (`GCE_METADATA_HOST`) refusing with secrets in its body.
#[test]
fn a_metadata_server_refusing_with_secrets() {
    let home = tempfile::tempdir().unwrap();
    let metadata = answering(403, "text/plain", secrets_in_every_form());
    let host = format!("127.0.0.1:{}", metadata.url.port().unwrap());
    let text = run(
        &["token", "--audience", "https://hello.example.com"],
        &[
            ("GCE_METADATA_HOST", host),
            ("CLOUDRUN_TEST_CREDENTIALS", "metadata".to_owned()),
        ],
        home.path(),
    );
    assert_clean(
        &text,
        "the command's output",
        &["metadata server", "HTTP 403", "a non-JSON answer of"],
    );
}

/// IAM Credentials (impersonation) refusing with an API error whose message and
/// details carry secrets: the status and the message's words show, nothing else.
#[test]
fn iam_credentials_refusing_with_secrets() {
    let fixture = fixture();
    let home = tempfile::tempdir().unwrap();
    let body = json!({
        "error": {
            "code": 403,
            "status": "PERMISSION_DENIED",
            "message": format!("Permission 'iam.serviceAccounts.getOpenIdToken' denied; Authorization: Bearer {}", SECRETS[2]),
            "details": [{ "accessToken": SECRETS[0], "debug": secrets_in_every_form() }],
        }
    });
    let iam = answering(403, "application/json", body.to_string());
    let text = run(
        &["token", "--audience", "https://hello.example.com"],
        &[
            (
                "GOOGLE_APPLICATION_CREDENTIALS",
                fixture.key_file(TESTER).display().to_string(),
            ),
            (
                "CLOUDRUN_TEST_IMPERSONATE_SERVICE_ACCOUNT",
                "deployer@emulated-project.iam.gserviceaccount.com".to_owned(),
            ),
            (
                "CLOUDRUN_TEST_IAM_ENDPOINT",
                iam.url.as_str().trim_end_matches('/').to_owned(),
            ),
        ],
        home.path(),
    );
    assert_clean(
        &text,
        "the command's output",
        &[
            "PERMISSION_DENIED",
            "iam.serviceAccounts.getOpenIdToken' denied",
            "fix:",
        ],
    );
    assert_eq!(iam.requests().len(), 1, "IAM Credentials was asked");
}

/// The Cloud Run Admin API answering a token where a list belongs: the parser's own
/// words quote the value (`invalid type: string "..."`), and the error still shows no
/// token, in `Display` or `Debug`: every error's quoted text goes through redaction.
#[tokio::test]
async fn an_admin_api_answer_quoting_a_token_in_a_parse_error() {
    let fixture = fixture();
    let body = json!({
        "uri": "https://hello.example.com",
        "urls": canary_token("https://hello.example.com"),
    });
    let admin = answering(200, "application/json", body.to_string());
    let error = Client::builder()
        .service("hello")
        .project("p")
        .region("r")
        .run_endpoint(admin.url.as_str())
        .credentials(Credentials::from_file(fixture.key_file(TESTER)).unwrap())
        .build()
        .await
        .unwrap_err();
    let useful = [
        "the answer is not a Cloud Run service",
        "invalid type: string",
    ];
    assert_clean(&error.to_string(), "the error", &useful);
    assert_clean(&format!("{error:?}"), "the error's Debug", &useful);
}

/// A service that refuses with a reason carrying secrets (the header the emulator
/// explains itself with): the diagnosis quotes it redacted.
#[tokio::test]
async fn a_refusal_reason_with_secrets_is_quoted_redacted_in_the_diagnosis() {
    let reason = format!(
        "token rejected: access_token={} Authorization: Bearer {} password: {}",
        SECRETS[0], SECRETS[2], SECRETS[6]
    );
    let service = Recorder::start(move |_| {
        response(
            401,
            &[("x-cloudrun-test-emulator-reason", &reason)],
            "<h1>Error: Unauthorized</h1>",
        )
    });
    let audience = service.url.origin().ascii_serialization();
    let client = Client::builder()
        .url(service.url.as_str())
        .credentials(Credentials::from_id_token(canary_token(&audience)))
        .build()
        .await
        .unwrap();
    let response = client.get("/").send().await.unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    let diagnosis = response
        .extensions()
        .get::<Diagnosis>()
        .unwrap()
        .message()
        .to_owned();
    assert_clean(
        &diagnosis,
        "the diagnosis",
        &[
            "the emulator says: token rejected: access_token=<redacted>",
            "fix:",
        ],
    );
}

/// `doctor --url` quotes the service's reason, redacted, and never the token.
#[test]
fn doctor_quotes_the_reason_of_a_refusal_without_its_secrets() {
    let home = tempfile::tempdir().unwrap();
    let reason = format!(
        "refresh_token={} {{\"id_token\": \"{}\"}}",
        SECRETS[1], SECRETS[3]
    );
    let service = Recorder::start(move |_| {
        response(
            401,
            &[("x-cloudrun-test-emulator-reason", &reason)],
            "<h1>Error: Unauthorized</h1>",
        )
    });
    let audience = service.url.origin().ascii_serialization();
    let text = run(
        &["doctor", "--url", service.url.as_str()],
        &[("CLOUDRUN_TEST_ID_TOKEN", canary_token(&audience))],
        home.path(),
    );
    assert_clean(
        &text,
        "doctor's output",
        &[
            "REFUSED",
            "(the emulator says: refresh_token=<redacted>",
            "fix:",
        ],
    );
}
