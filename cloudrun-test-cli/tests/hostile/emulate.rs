//! Hostile cases: `cloudrun-test emulate -- COMMAND` is hermetic. The shell around it
//! and a `cloudrun-test.toml` try to send COMMAND's requests and tokens elsewhere (a
//! recording listener) or to hand it credentials from outside; COMMAND, the real
//! binary run inside emulate, must see only the emulator's world.

use std::path::Path;
use std::process::Output;

use cloudrun_test_e2e::recorder::{Recorder, response};
use cloudrun_test_e2e::{CANARY_SIGNATURE, canary_token};

use crate::support::{BIN, FakeCurl, command, output_text};

/// A listener that answers 200 to anything and records it: any request it gets is a
/// request that left the emulator's world.
fn recorder() -> Recorder {
    Recorder::start(|_| response(200, &[("content-type", "application/json")], "{}"))
}

/// `cloudrun-test emulate --service hello EXTRA... -- sh -c SCRIPT`, in `dir`, with the
/// shell environment `env` (HOME is `home`). `$BIN` in the script is this binary.
fn emulate(
    extra: &[&str],
    script: &str,
    env: &[(String, String)],
    home: &Path,
    dir: &Path,
) -> Output {
    let mut args = vec!["emulate", "--service", "hello"];
    args.extend_from_slice(extra);
    args.extend_from_slice(&["--", "sh", "-c", script]);
    let mut env = env.to_vec();
    env.push(("BIN".into(), BIN.into()));
    // Where the library looks for cloudrun-test.toml first (cargo sets it for tests).
    env.push(("CARGO_MANIFEST_DIR".into(), dir.display().to_string()));
    command(&args, &env, home)
        .current_dir(dir)
        .output()
        .expect("the binary runs")
}

/// `doctor --service hello` outside emulate, with the same shell and a ready token:
/// the control that shows the hostile setting really reaches the recorder when
/// nothing stops it.
fn doctor_outside(env: &[(String, String)], home: &Path, dir: &Path) -> Output {
    let mut env = env.to_vec();
    env.push((
        "CLOUDRUN_TEST_ID_TOKEN".into(),
        canary_token("http://127.0.0.1"),
    ));
    env.push(("CARGO_MANIFEST_DIR".into(), dir.display().to_string()));
    command(&["doctor", "--service", "hello"], &env, home)
        .current_dir(dir)
        .output()
        .expect("the binary runs")
}

/// The URL emulate announced for `what` (`service hello`, `tag candidate of hello`).
fn announced(text: &str, what: &str) -> String {
    let prefix = format!("cloudrun-test emulate: {what} at ");
    text.lines()
        .find_map(|line| line.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("emulate did not announce {what}:\n{text}"))
        .trim_end_matches('/')
        .to_owned()
}

fn assert_untouched(recorder: &Recorder, text: &str) {
    assert!(
        recorder.requests().is_empty(),
        "a request left the emulator's world: {:?}\n{text}",
        recorder.requests()
    );
    assert!(!text.contains("panicked"), "{text}");
}

#[test]
fn a_service_url_from_the_shell_does_not_redirect_an_emulated_service() {
    let recorder = recorder();
    let home = tempfile::tempdir().unwrap();
    let env = [(
        "CLOUDRUN_TEST_URL_HELLO".to_string(),
        recorder.url.to_string(),
    )];

    let control = doctor_outside(&env, home.path(), home.path());
    assert!(
        !recorder.requests().is_empty(),
        "control: outside emulate the variable reaches the recorder\n{}",
        output_text(&control)
    );
    let recorder = self::recorder();
    let env = [(
        "CLOUDRUN_TEST_URL_HELLO".to_string(),
        recorder.url.to_string(),
    )];

    let output = emulate(
        &[],
        "echo \"SEEN=$CLOUDRUN_TEST_URL_HELLO\"; $BIN doctor --service hello",
        &env,
        home.path(),
        home.path(),
    );
    let text = output_text(&output);
    assert!(output.status.success(), "{text}");
    let hello = announced(&text, "service hello");
    assert!(text.contains(&format!("SEEN={hello}\n")), "{text}");
    assert!(
        text.contains(&format!("Service:     hello at {hello}/")),
        "{text}"
    );
    assert!(text.contains("-> 200 OK"), "{text}");
    assert_untouched(&recorder, &text);
}

#[test]
fn a_profile_in_cloudrun_test_toml_does_not_redirect_an_emulated_service() {
    let recorder = recorder();
    let home = tempfile::tempdir().unwrap();
    let project = tempfile::tempdir().unwrap();
    std::fs::write(
        project.path().join("cloudrun-test.toml"),
        format!(
            "run_endpoint = \"{url}\"\n\n[services.hello]\nurl = \"{url}\"\n\n\
             [profiles.prod]\nrun_endpoint = \"{url}\"\n\n\
             [profiles.prod.services.hello]\nurl = \"{url}\"\n",
            url = recorder.url
        ),
    )
    .unwrap();
    let env = [("CLOUDRUN_TEST_PROFILE".to_string(), "prod".to_string())];

    let control = doctor_outside(&env, home.path(), project.path());
    assert!(
        !recorder.requests().is_empty(),
        "control: outside emulate the profile reaches the recorder\n{}",
        output_text(&control)
    );
    let recorder_seen = recorder.requests().len();

    // Also when COMMAND picks the profile itself, and when it drops the exported URL
    // (the emulator's Admin API answers then, not the file).
    let output = emulate(
        &[],
        "$BIN doctor --service hello && CLOUDRUN_TEST_PROFILE=prod $BIN doctor --service hello && \
         env -u CLOUDRUN_TEST_URL_HELLO CLOUDRUN_TEST_PROFILE=prod $BIN doctor --service hello",
        &env,
        home.path(),
        project.path(),
    );
    let text = output_text(&output);
    assert!(output.status.success(), "{text}");
    let hello = announced(&text, "service hello");
    assert_eq!(
        text.matches(&format!("Service:     hello at {hello}/"))
            .count(),
        3,
        "{text}"
    );
    assert_eq!(
        recorder.requests().len(),
        recorder_seen,
        "a request left the emulator's world\n{text}"
    );
    assert!(!text.contains("panicked"), "{text}");
}

#[test]
fn a_service_that_is_not_emulated_fails_naming_it_and_the_fix() {
    let recorder = recorder();
    let home = tempfile::tempdir().unwrap();
    let project = tempfile::tempdir().unwrap();
    std::fs::write(
        project.path().join("cloudrun-test.toml"),
        format!("[services.other]\nurl = \"{}\"\n", recorder.url),
    )
    .unwrap();
    let env = [(
        "CLOUDRUN_TEST_URL_OTHER".to_string(),
        recorder.url.to_string(),
    )];

    // From the shell, from the file, and set by COMMAND itself: all refused.
    let script = format!(
        "$BIN doctor --service other; echo shell=$?; \
         CLOUDRUN_TEST_URL_OTHER={url} $BIN doctor --service other; echo command=$?",
        url = recorder.url
    );
    let output = emulate(&[], &script, &env, home.path(), project.path());
    let text = output_text(&output);
    assert!(output.status.success(), "{text}");
    assert!(
        text.contains("shell=1") && text.contains("command=1"),
        "{text}"
    );
    assert_eq!(
        text.matches("service `other` is not emulated").count(),
        2,
        "{text}"
    );
    assert!(text.contains("(emulated: hello)"), "{text}");
    assert!(
        text.contains("fix: emulate it too: add `--service other`"),
        "{text}"
    );
    assert!(!text.contains("Service:     other at"), "{text}");
    assert_untouched(&recorder, &text);
}

/// A misspelt emulated service: the closest emulated name is offered.
#[test]
fn a_misspelt_service_under_emulate_gets_did_you_mean() {
    let home = tempfile::tempdir().unwrap();
    let project = tempfile::tempdir().unwrap();
    let script = "$BIN doctor --service helo; echo status=$?";
    let output = emulate(&[], script, &[], home.path(), project.path());
    let text = output_text(&output);
    assert!(text.contains("status=1"), "{text}");
    assert!(
        text.contains("fix: did you mean `hello`? Otherwise emulate it too: add `--service helo`"),
        "{text}"
    );
}

#[test]
fn a_url_off_this_machine_gets_no_token_under_emulate() {
    let home = tempfile::tempdir().unwrap();
    // `--url` off this machine, and COMMAND pointing the emulated service elsewhere.
    let script = "$BIN doctor --url https://hello-123.europe-west1.run.app/; echo url=$?; \
         CLOUDRUN_TEST_URL_HELLO=https://hello-123.europe-west1.run.app $BIN doctor --service hello; \
         echo variable=$?; \
         curl -sf \"$CLOUDRUN_TEST_EMULATOR/_emulator/stats\"; echo";
    let output = emulate(&[], script, &[], home.path(), home.path());
    let text = output_text(&output);
    assert!(output.status.success(), "{text}");
    assert!(
        text.contains("url=1") && text.contains("variable=1"),
        "{text}"
    );
    assert!(
        text.contains(
            "`url = ...` gives https://hello-123.europe-west1.run.app, which is not on this machine"
        ),
        "{text}"
    );
    assert!(
        text.contains(
            "CLOUDRUN_TEST_URL_HELLO gives https://hello-123.europe-west1.run.app, which is not on this machine"
        ),
        "{text}"
    );
    assert!(
        text.contains("no token is minted for anywhere else"),
        "{text}"
    );
    // The emulator's counters: not one token minted.
    let stats = text
        .lines()
        .find(|line| line.starts_with('{'))
        .unwrap_or_else(|| panic!("no stats:\n{text}"));
    let stats: serde_json::Value = serde_json::from_str(stats).unwrap();
    assert_eq!(stats["id_tokens_minted"], 0, "{text}");
    assert!(!text.contains("panicked"), "{text}");
}

#[test]
fn curl_to_a_url_off_this_machine_is_refused_under_emulate() {
    let home = tempfile::tempdir().unwrap();
    let fake = FakeCurl::new(0);
    let env = [(
        "FAKE_CURL".to_string(),
        fake.dir.path().join("curl").display().to_string(),
    )];
    let script = "CLOUDRUN_TEST_CURL=$FAKE_CURL $BIN curl https://hello-123.europe-west1.run.app/ -sS; \
         echo curl=$?; curl -sf \"$CLOUDRUN_TEST_EMULATOR/_emulator/stats\"; echo";
    let output = emulate(&[], script, &env, home.path(), home.path());
    let text = output_text(&output);
    assert!(output.status.success(), "{text}");
    assert!(text.contains("curl=1"), "{text}");
    assert!(
        text.contains(
            "refusing to send a credential to the service at https://hello-123.europe-west1.run.app: \
             under `cloudrun-test emulate` credentials go only to the emulator and loopback addresses"
        ),
        "{text}"
    );
    assert!(!fake.ran(), "curl ran:\n{text}");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stats = stdout
        .lines()
        .find(|line| line.starts_with('{'))
        .unwrap_or_else(|| panic!("no stats:\n{text}"));
    let stats: serde_json::Value = serde_json::from_str(stats).unwrap();
    assert_eq!(stats["id_tokens_minted"], 0, "{text}");

    // The control: the emulated service itself is reached through the same fake curl.
    let script = "CLOUDRUN_TEST_CURL=$FAKE_CURL $BIN curl \"$CLOUDRUN_TEST_URL_HELLO/\" -sS";
    let output = emulate(&[], script, &env, home.path(), home.path());
    assert!(output.status.success(), "{}", output_text(&output));
    assert!(fake.ran(), "{}", output_text(&output));
}

#[test]
fn the_shells_credentials_and_endpoints_are_invisible_to_the_command() {
    let recorder = recorder();
    let home = tempfile::tempdir().unwrap();
    let metadata_host = format!("127.0.0.1:{}", recorder.url.port().unwrap());
    // A real-looking key file whose token endpoint is the recorder.
    let real_key = home.path().join("real-key.json");
    std::fs::write(
        &real_key,
        serde_json::json!({
            "type": "authorized_user",
            "client_id": "real-client",
            "client_secret": "real-secret",
            "refresh_token": "real-refresh-token",
            "token_uri": recorder.at("token").to_string(),
        })
        .to_string(),
    )
    .unwrap();
    let canary = canary_token("http://127.0.0.1");
    let env: Vec<(String, String)> = [
        ("CLOUDRUN_TEST_ID_TOKEN", canary.as_str()),
        ("GOOGLE_APPLICATION_CREDENTIALS", real_key.to_str().unwrap()),
        ("GCE_METADATA_HOST", metadata_host.as_str()),
        ("CLOUDRUN_TEST_CREDENTIALS", "metadata"),
        (
            "CLOUDRUN_TEST_IMPERSONATE_SERVICE_ACCOUNT",
            "real@real-project.iam.gserviceaccount.com",
        ),
        ("CLOUDRUN_TEST_RUN_ENDPOINT", recorder.url.as_str()),
        ("CLOUDRUN_TEST_IAM_ENDPOINT", recorder.url.as_str()),
        ("CLOUDRUN_TEST_TAG", "real-tag"),
        ("GOOGLE_CLOUD_PROJECT", "real-project"),
        ("CLOUDSDK_CORE_PROJECT", "real-project"),
        ("CLOUDRUN_TEST_SOMETHING_NEW", "from-the-shell"),
        // A behaviour switch, which selects nothing: kept.
        ("CLOUDRUN_TEST_TIMEOUT", "77s"),
    ]
    .iter()
    .map(|(name, value)| (name.to_string(), value.to_string()))
    .collect();

    let output = emulate(
        &[],
        "env; $BIN doctor --service hello",
        &env,
        home.path(),
        home.path(),
    );
    let text = output_text(&output);
    assert!(output.status.success(), "{text}");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let seen = |name: &str| {
        stdout
            .lines()
            .find_map(|line| line.strip_prefix(&format!("{name}=")))
            .map(str::to_owned)
    };
    for name in [
        "CLOUDRUN_TEST_ID_TOKEN",
        "GCE_METADATA_HOST",
        "CLOUDRUN_TEST_CREDENTIALS",
        "CLOUDRUN_TEST_IMPERSONATE_SERVICE_ACCOUNT",
        "CLOUDRUN_TEST_TAG",
        "CLOUDSDK_CORE_PROJECT",
        "CLOUDRUN_TEST_SOMETHING_NEW",
    ] {
        assert_eq!(seen(name), None, "{name} reached COMMAND:\n{text}");
    }
    let emulator = announced(&text, "Google endpoints").to_owned();
    let key = seen("GOOGLE_APPLICATION_CREDENTIALS").expect("the emulator's key");
    assert_ne!(key, real_key.to_str().unwrap(), "{text}");
    assert_eq!(
        seen("CLOUDRUN_TEST_RUN_ENDPOINT").as_deref(),
        Some(emulator.as_str())
    );
    assert_eq!(
        seen("CLOUDRUN_TEST_IAM_ENDPOINT").as_deref(),
        Some(emulator.as_str())
    );
    assert_eq!(
        seen("GOOGLE_CLOUD_PROJECT").as_deref(),
        Some("emulated-project")
    );
    assert_eq!(seen("NO_GCE_CHECK").as_deref(), Some("true"));
    // gcloud's folder is the emulator's own, not the developer's.
    let gcloud = seen("CLOUDSDK_CONFIG").expect("CLOUDSDK_CONFIG is set");
    assert!(gcloud.contains("cloudrun-test-emulate-"), "{text}");
    // What cargo and the rest need is inherited.
    assert_eq!(seen("HOME").as_deref(), home.path().to_str());
    assert!(seen("PATH").is_some(), "{text}");
    assert_eq!(seen("CLOUDRUN_TEST_TIMEOUT").as_deref(), Some("77s"));

    // The emulator's key was chosen, and the service let its tester in.
    assert!(
        text.contains(
            "GOOGLE_APPLICATION_CREDENTIALS [google-application-credentials]: chosen: \
             service-account key file /tmp/cloudrun-test-emulate-"
        ),
        "{text}"
    );
    assert!(text.contains("-> 200 OK"), "{text}");
    assert!(!text.contains(CANARY_SIGNATURE), "{text}");
    assert!(!text.contains("real-refresh-token"), "{text}");
    assert_untouched(&recorder, &text);
}

#[test]
fn the_developers_gcloud_credentials_are_out_of_reach_even_when_forced() {
    let recorder = recorder();
    let home = tempfile::tempdir().unwrap();
    // The developer's gcloud folder: application default credentials whose refresh
    // goes to the recorder.
    let gcloud = home.path().join("gcloud");
    std::fs::create_dir_all(&gcloud).unwrap();
    std::fs::write(
        gcloud.join("application_default_credentials.json"),
        serde_json::json!({
            "type": "authorized_user",
            "client_id": "real-client",
            "client_secret": "real-secret",
            "refresh_token": "real-refresh-token",
            "token_uri": recorder.at("token").to_string(),
        })
        .to_string(),
    )
    .unwrap();
    let env = [("CLOUDSDK_CONFIG".to_string(), gcloud.display().to_string())];

    // COMMAND forces the ADC source, and the metadata server at the recorder.
    let script = "CLOUDRUN_TEST_CREDENTIALS=adc $BIN token --audience http://127.0.0.1:1; echo adc=$?; \
         CLOUDRUN_TEST_CREDENTIALS=gcloud $BIN token --audience http://127.0.0.1:1; echo gcloud=$?";
    let output = emulate(&[], script, &env, home.path(), home.path());
    let text = output_text(&output);
    assert!(output.status.success(), "{text}");
    assert!(
        text.contains("adc=1") && text.contains("gcloud=1"),
        "{text}"
    );
    assert!(
        text.contains(
            "CLOUDRUN_TEST_CREDENTIALS=adc, but gcloud's application default credentials: no file"
        ),
        "{text}"
    );
    assert!(text.contains("cloudrun-test-emulate-"), "{text}");
    assert_untouched(&recorder, &text);
}

#[test]
fn a_tag_resolves_through_the_emulated_admin_api_whatever_the_shell_says() {
    let recorder = recorder();
    let home = tempfile::tempdir().unwrap();
    let env = [
        (
            "CLOUDRUN_TEST_URL_HELLO".to_string(),
            recorder.url.to_string(),
        ),
        (
            "CLOUDRUN_TEST_RUN_ENDPOINT".to_string(),
            recorder.url.to_string(),
        ),
    ];
    let output = emulate(
        &["--tag", "hello=candidate"],
        "CLOUDRUN_TEST_TAG=candidate $BIN doctor --service hello",
        &env,
        home.path(),
        home.path(),
    );
    let text = output_text(&output);
    assert!(output.status.success(), "{text}");
    let tag = announced(&text, "tag candidate of hello");
    assert_ne!(tag, announced(&text, "service hello"));
    assert!(
        text.contains(&format!("Service:     hello at {tag}/")),
        "{text}"
    );
    assert!(text.contains("-> 200 OK"), "{text}");
    assert_untouched(&recorder, &text);
}

#[test]
fn the_token_cache_lives_and_dies_with_the_emulator() {
    let home = tempfile::tempdir().unwrap();
    let shared = home.path().join("shared-cache");
    let env = [
        (
            "XDG_CACHE_HOME".to_string(),
            home.path().join(".cache").display().to_string(),
        ),
        (
            "CLOUDRUN_TEST_CACHE_DIR".to_string(),
            shared.display().to_string(),
        ),
    ];
    let output = emulate(
        &[],
        "$BIN token --audience http://127.0.0.1:1 >/dev/null || exit 3; \
         echo \"CACHE=$CLOUDRUN_TEST_CACHE_DIR\"; ls \"$CLOUDRUN_TEST_CACHE_DIR\"",
        &env,
        home.path(),
        home.path(),
    );
    let text = output_text(&output);
    assert!(output.status.success(), "{text}");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let cache = stdout
        .lines()
        .find_map(|line| line.strip_prefix("CACHE="))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(cache.contains("cloudrun-test-emulate-"), "{text}");
    assert!(
        stdout.lines().any(|line| line.ends_with(".json")),
        "the token was cached in {cache}:\n{text}"
    );
    assert!(!Path::new(cache).exists(), "{cache} outlived the emulator");
    for place in [home.path().join(".cache/cloudrun-test"), shared] {
        let entries = std::fs::read_dir(&place)
            .map(|dir| dir.count())
            .unwrap_or(0);
        assert_eq!(entries, 0, "{} holds emulated tokens", place.display());
    }
}

#[test]
fn an_emulator_variable_off_this_machine_is_refused() {
    let recorder = recorder();
    let home = tempfile::tempdir().unwrap();
    let env = [
        (
            "CLOUDRUN_TEST_EMULATOR".to_string(),
            "https://emulator.example.com".to_string(),
        ),
        (
            "CLOUDRUN_TEST_URL_HELLO".to_string(),
            recorder.url.to_string(),
        ),
    ];
    let output = doctor_outside(&env, home.path(), home.path());
    let text = output_text(&output);
    assert!(!output.status.success(), "{text}");
    assert!(
        text.contains("CLOUDRUN_TEST_EMULATOR is \"https://emulator.example.com\", which is not an emulator on this machine"),
        "{text}"
    );
    assert!(text.contains("fix:"), "{text}");
    assert_untouched(&recorder, &text);
}
