//! Hostile cases: the token cache and what it reads. Cache files with extreme or
//! planted contents, links, FIFOs and other users' files in the cache folder, a cache
//! folder others can write to or that is someone else's, a credentials file that never
//! ends, and endpoints answering endless bodies, huge tokens or nonsense lifetimes.
//! Each runs the real `cloudrun-test` binary against real files and a real emulator or
//! listener, bounded in time, and asserts that nothing panicked, that the token that
//! came out is a fresh one the service accepts (or that the error names what was tried
//! and has a fix), and that nothing outside the cache folder was touched.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use cloudrun_test_e2e::recorder::{Recorder, response};
use cloudrun_test_e2e::{CANARY_SIGNATURE, canary_token};
use cloudrun_test_emulator::{Emulator, ServiceConfig};
use serde_json::{Value, json};

use crate::support::{self, Fixture, TESTER, accepted_as, output_text};

/// A user id that is not ours (we run as root here, as CI does): `nobody`.
const OTHER_USER: u32 = 65534;
/// Every case ends well within this, or fails as a hang.
const LIMIT: Duration = Duration::from_secs(60);

/// An emulator whose `hello` admits [`TESTER`], a home folder and a cache folder of
/// the case's own.
struct Case {
    fixture: Fixture,
    home: tempfile::TempDir,
    cache: PathBuf,
}

impl Case {
    fn new() -> Case {
        let hello = ServiceConfig::new("hello").invoker(&format!("serviceAccount:{TESTER}"));
        let fixture = Fixture::start(Emulator::builder().service(hello));
        let home = tempfile::tempdir().unwrap();
        let cache = home.path().join("token-cache");
        Case {
            fixture,
            home,
            cache,
        }
    }

    fn audience(&self) -> String {
        let url = self.fixture.emulator.service_url("hello").unwrap();
        url.origin().ascii_serialization()
    }

    /// The emulator's environment with the cache in [`Case::cache`], plus `extra`.
    fn env(&self, extra: &[(&str, String)]) -> Vec<(String, String)> {
        let mut env = self.fixture.environment(TESTER);
        env.retain(|(name, _)| name != "CLOUDRUN_TEST_CACHE_DIR");
        env.push((
            "CLOUDRUN_TEST_CACHE_DIR".into(),
            self.cache.display().to_string(),
        ));
        env.extend(
            extra
                .iter()
                .map(|(name, value)| ((*name).into(), value.clone())),
        );
        env
    }

    /// `cloudrun-test --verbose token --audience AUD` (the log shows the cache's warnings).
    fn token_run(&self, env: &[(String, String)]) -> Output {
        let audience = self.audience();
        let command = support::command(
            &["--verbose", "token", "--audience", &audience],
            env,
            self.home.path(),
        );
        run_within(command, LIMIT)
    }

    /// A token run that must succeed: the token it printed, checked at the service.
    fn token_ok(&self) -> String {
        let output = self.token_run(&self.env(&[]));
        let text = output_text(&output);
        assert!(output.status.success(), "{text}");
        assert_no_panic(&text);
        let token = String::from_utf8(output.stdout)
            .unwrap()
            .trim_end()
            .to_owned();
        accepted_as(&self.fixture, &token, TESTER);
        token
    }

    fn mints(&self) -> u64 {
        self.fixture.emulator.stats().id_tokens_minted
    }

    /// Mints once so that the cache holds a real entry; returns its path.
    fn primed_entry(&self) -> PathBuf {
        self.token_ok();
        let entries = json_files(&self.cache);
        assert_eq!(entries.len(), 1, "{entries:?}");
        entries.into_iter().next().unwrap()
    }
}

/// Runs `command` and fails the test if it takes longer than `limit`: a hang becomes
/// a failure with a name, and the process is killed.
fn run_within(mut command: Command, limit: Duration) -> Output {
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the binary starts");
    let (mut stdout, mut stderr) = (child.stdout.take().unwrap(), child.stderr.take().unwrap());
    let out = std::thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = stdout.read_to_end(&mut bytes);
        bytes
    });
    let err = std::thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = stderr.read_to_end(&mut bytes);
        bytes
    });
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("`cloudrun-test` did not finish within {limit:?}: it hangs");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    Output {
        status,
        stdout: out.join().unwrap(),
        stderr: err.join().unwrap(),
    }
}

fn assert_no_panic(text: &str) {
    assert!(!text.contains("panicked"), "a panic:\n{text}");
    assert!(
        !text.contains("internal error"),
        "an internal error:\n{text}"
    );
}

/// A failed run whose error names `names` and says how to fix it, without a panic.
fn assert_clear_failure(output: &Output, names: &[&str]) -> String {
    let text = output_text(output);
    assert!(!output.status.success(), "it succeeded:\n{text}");
    assert_no_panic(&text);
    assert!(text.contains("fix:"), "no fix in:\n{text}");
    for name in names {
        assert!(text.contains(name), "{name:?} is not named in:\n{text}");
    }
    text
}

fn json_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .map(|entry| entry.unwrap().path())
                .filter(|path| path.extension().is_some_and(|ext| ext == "json"))
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    files
}

fn read_entry(path: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

/// Rewrites the entry at `path` with its fields changed by `change`, keeping its mode.
fn tamper(path: &Path, change: impl FnOnce(&mut Value)) {
    let mut entry = read_entry(path);
    change(&mut entry);
    std::fs::write(path, entry.to_string()).unwrap();
}

fn mode(path: &Path) -> u32 {
    std::fs::symlink_metadata(path).unwrap().mode() & 0o777
}

fn mkfifo(path: &Path) {
    let made = Command::new("mkfifo").arg(path).status().unwrap();
    assert!(made.success(), "mkfifo {}", path.display());
}

/// After the cache was fed `planted`, the next run mints a fresh token the service
/// accepts, stores it with sane numbers, and the run after that is served from disk.
fn assert_replaced_then_served(case: &Case, entry: &Path, planted: &str) {
    let before = case.mints();
    let token = case.token_ok();
    assert_ne!(token, planted);
    assert_eq!(case.mints(), before + 1, "one mint replaces the entry");
    let stored = read_entry(entry);
    let expires_at = stored["expires_at"].as_u64().expect("a number again");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(expires_at > now && expires_at <= now + 2 * 3600, "{stored}");
    assert_eq!(case.token_ok(), token, "served from disk");
    assert_eq!(case.mints(), before + 1);
}

#[test]
fn cache_entries_expiring_at_u64_or_i64_max_are_replaced_without_a_panic() {
    let case = Case::new();
    let entry = case.primed_entry();
    for extreme in [json!(u64::MAX), json!(i64::MAX), json!(u64::MAX - 1)] {
        tamper(&entry, |entry| {
            entry["expires_at"] = extreme.clone();
            entry["token"] = canary_token(&case.audience()).into();
        });
        assert_replaced_then_served(&case, &entry, &canary_token(&case.audience()));
    }
}

#[test]
fn cache_entries_with_negative_float_or_text_times_are_replaced() {
    let case = Case::new();
    let entry = case.primed_entry();
    for (field, odd) in [
        ("expires_at", json!(-1)),
        ("expires_at", json!(i64::MIN)),
        ("expires_at", json!(1e300)),
        ("expires_at", json!("NaN")),
        ("expires_at", json!("18446744073709551616")),
        ("issued_at", json!(u64::MAX)),
        ("issued_at", json!(-5)),
        ("issued_at", json!(null)),
    ] {
        tamper(&entry, |entry| {
            entry[field] = odd.clone();
            entry["token"] = canary_token(&case.audience()).into();
        });
        assert_replaced_then_served(&case, &entry, &canary_token(&case.audience()));
    }
}

#[test]
fn a_planted_entry_fresh_for_a_year_is_not_served() {
    let case = Case::new();
    let entry = case.primed_entry();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    tamper(&entry, |entry| {
        entry["issued_at"] = json!(now);
        entry["expires_at"] = json!(now + 365 * 24 * 3600);
        entry["token"] = canary_token(&case.audience()).into();
    });
    assert_replaced_then_served(&case, &entry, &canary_token(&case.audience()));
}

#[test]
fn a_symlinked_cache_entry_is_not_followed_and_its_target_is_untouched() {
    let case = Case::new();
    let entry = case.primed_entry();
    // A valid, fresh entry elsewhere, with a planted token: a link to it must not be read.
    let outside = tempfile::tempdir().unwrap();
    let target = outside.path().join("victim.json");
    tamper(&entry, |entry| {
        entry["token"] = canary_token(&case.audience()).into()
    });
    std::fs::copy(&entry, &target).unwrap();
    std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o600)).unwrap();
    let before = std::fs::read(&target).unwrap();
    let modified = std::fs::metadata(&target).unwrap().modified().unwrap();
    std::fs::remove_file(&entry).unwrap();
    std::os::unix::fs::symlink(&target, &entry).unwrap();

    let token = case.token_ok();
    assert!(
        !token.contains(CANARY_SIGNATURE),
        "the planted token was served"
    );
    assert_eq!(
        std::fs::read(&target).unwrap(),
        before,
        "the link's target changed"
    );
    assert_eq!(
        std::fs::metadata(&target).unwrap().modified().unwrap(),
        modified
    );
    // The link itself was replaced by a private file of ours.
    let kind = std::fs::symlink_metadata(&entry).unwrap().file_type();
    assert!(kind.is_file(), "{kind:?}");
    assert_eq!(mode(&entry), 0o600);
}

#[test]
fn a_symlinked_lock_file_is_not_followed_and_its_target_is_untouched() {
    let case = Case::new();
    let entry = case.primed_entry();
    let lock = entry.with_extension("lock");
    assert!(lock.exists());
    std::fs::remove_file(&entry).unwrap();
    std::fs::remove_file(&lock).unwrap();
    let outside = tempfile::tempdir().unwrap();
    let target = outside.path().join("victim");
    std::fs::write(&target, "precious").unwrap();
    std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::os::unix::fs::symlink(&target, &lock).unwrap();

    case.token_ok();
    assert_eq!(std::fs::read_to_string(&target).unwrap(), "precious");
    assert!(std::fs::symlink_metadata(&lock).unwrap().is_symlink());
    // The entry was still written, as a private file.
    assert_eq!(mode(&entry), 0o600);
}

#[test]
fn fifos_named_like_cache_files_make_nothing_hang() {
    let case = Case::new();
    let entry = case.primed_entry();
    let lock = entry.with_extension("lock");
    std::fs::remove_file(&entry).unwrap();
    std::fs::remove_file(&lock).unwrap();
    mkfifo(&entry);
    mkfifo(&lock);
    let before = case.mints();
    // Bounded by `run_within`: opening a FIFO for reading or writing would block.
    case.token_ok();
    assert_eq!(case.mints(), before + 1);
}

#[test]
fn cache_entries_of_another_user_or_readable_by_others_are_not_served() {
    let case = Case::new();
    let entry = case.primed_entry();
    for foreign in ["another user's", "readable by others"] {
        tamper(&entry, |entry| {
            entry["token"] = canary_token(&case.audience()).into()
        });
        match foreign {
            "another user's" => std::os::unix::fs::chown(&entry, Some(OTHER_USER), None).unwrap(),
            _ => std::fs::set_permissions(&entry, std::fs::Permissions::from_mode(0o644)).unwrap(),
        }
        let token = case.token_ok();
        assert!(
            !token.contains(CANARY_SIGNATURE),
            "{foreign}: the planted token was served"
        );
        // Replaced by a private file of ours.
        let metadata = std::fs::metadata(&entry).unwrap();
        assert_eq!(metadata.uid(), my_uid());
        assert_eq!(metadata.mode() & 0o777, 0o600);
    }
}

/// This process's effective user, read from a file it creates.
fn my_uid() -> u32 {
    let file = tempfile::NamedTempFile::new().unwrap();
    file.as_file().metadata().unwrap().uid()
}

#[test]
fn a_cache_folder_others_can_write_to_is_not_used_and_not_changed() {
    let case = Case::new();
    std::fs::create_dir(&case.cache).unwrap();
    std::fs::set_permissions(&case.cache, std::fs::Permissions::from_mode(0o777)).unwrap();
    let output = case.token_run(&case.env(&[]));
    let text = output_text(&output);
    assert!(output.status.success(), "{text}");
    assert_no_panic(&text);
    assert!(
        text.contains("disk cache disabled"),
        "no warning in:\n{text}"
    );
    assert!(text.contains("may write to it (mode 777)"), "{text}");
    let token = String::from_utf8(output.stdout)
        .unwrap()
        .trim_end()
        .to_owned();
    accepted_as(&case.fixture, &token, TESTER);
    assert_eq!(mode(&case.cache), 0o777, "the folder was changed");
    assert_eq!(
        std::fs::read_dir(&case.cache).unwrap().count(),
        0,
        "a file was written"
    );
    // No disk cache: the next process mints again.
    case.token_ok();
    assert_eq!(case.mints(), 2);
}

#[test]
fn another_users_cache_folder_is_not_used_and_not_changed() {
    let case = Case::new();
    std::fs::create_dir(&case.cache).unwrap();
    std::fs::set_permissions(&case.cache, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::os::unix::fs::chown(&case.cache, Some(OTHER_USER), Some(OTHER_USER)).unwrap();
    let output = case.token_run(&case.env(&[]));
    let text = output_text(&output);
    assert!(output.status.success(), "{text}");
    assert_no_panic(&text);
    assert!(
        text.contains("disk cache disabled"),
        "no warning in:\n{text}"
    );
    assert!(
        text.contains(&format!("belongs to user {OTHER_USER}")),
        "{text}"
    );
    let token = String::from_utf8(output.stdout)
        .unwrap()
        .trim_end()
        .to_owned();
    accepted_as(&case.fixture, &token, TESTER);
    let metadata = std::fs::metadata(&case.cache).unwrap();
    assert_eq!(
        (metadata.uid(), metadata.mode() & 0o777),
        (OTHER_USER, 0o755)
    );
    assert_eq!(std::fs::read_dir(&case.cache).unwrap().count(), 0);
}

#[test]
fn a_huge_credentials_file_is_refused_quickly_with_its_name_and_the_limit() {
    let case = Case::new();
    let huge = case.home.path().join("huge-key.json");
    // 100 MB, sparse: costs nothing on disk.
    std::fs::File::create(&huge)
        .unwrap()
        .set_len(100 << 20)
        .unwrap();
    for path in [huge.as_path(), Path::new("/dev/zero")] {
        let started = Instant::now();
        let output = case.token_run(
            &case.env(&[("GOOGLE_APPLICATION_CREDENTIALS", path.display().to_string())]),
        );
        assert_clear_failure(&output, &[&path.display().to_string(), "larger than 1 MiB"]);
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "{:?}",
            started.elapsed()
        );
    }
    assert_eq!(case.mints(), 0);
}

/// A listener whose every answer is a 200 with a body that never ends (chunked),
/// written until the client hangs up, or 1 GiB / 60 s at most.
fn endless_server() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            std::thread::spawn(move || {
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut line = String::new();
                while reader.read_line(&mut line).is_ok_and(|read| read > 2) {
                    line.clear();
                }
                let _ = stream.write_all(
                    b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n\
                      transfer-encoding: chunked\r\n\r\n",
                );
                let chunk = format!("{:x}\r\n{}\r\n", 64 << 10, "x".repeat(64 << 10));
                let started = Instant::now();
                for _ in 0..(1 << 14) {
                    if stream.write_all(chunk.as_bytes()).is_err()
                        || started.elapsed() > Duration::from_secs(60)
                    {
                        return;
                    }
                }
            });
        }
    });
    url
}

#[test]
fn an_endless_token_endpoint_answer_is_cut_at_the_limit() {
    let case = Case::new();
    let endless = endless_server();
    let mut key: Value =
        serde_json::from_str(&case.fixture.emulator.service_account_key(TESTER)).unwrap();
    let token_uri = format!("{endless}/token");
    key["token_uri"] = token_uri.clone().into();
    let path = case.home.path().join("endless-key.json");
    std::fs::write(&path, key.to_string()).unwrap();
    let started = Instant::now();
    let output = case
        .token_run(&case.env(&[("GOOGLE_APPLICATION_CREDENTIALS", path.display().to_string())]));
    assert_clear_failure(&output, &[&token_uri, "larger than 1 MiB"]);
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn a_ten_megabyte_token_from_the_metadata_server_is_refused() {
    let case = Case::new();
    let huge = format!("eyJ{}", "A".repeat(10 << 20));
    let metadata = Recorder::start(move |_| response(200, &[("metadata-flavor", "Google")], &huge));
    let host = metadata.url.host_str().unwrap().to_owned();
    let host = format!("{host}:{}", metadata.url.port().unwrap());
    let mut env = case.env(&[
        ("CLOUDRUN_TEST_CREDENTIALS", "metadata".into()),
        ("GCE_METADATA_HOST", host.clone()),
    ]);
    env.retain(|(name, _)| name != "GOOGLE_APPLICATION_CREDENTIALS");
    let output = case.token_run(&env);
    let text = assert_clear_failure(&output, &[&host, "metadata server", "larger than 1 MiB"]);
    assert!(!text.contains("AAAAAAAAAA"), "the answer is quoted");
    assert_eq!(metadata.requests().len(), 1, "asked once, not retried");
}

/// An `authorized_user` file whose token endpoint is a recorder answering a token
/// response with `expires_in` set to `expires_in`; returns the run and the planted token.
fn user_token_with_lifetime(case: &Case, expires_in: Value) -> (Output, String) {
    let client_id = "12345-fuzz.apps.googleusercontent.com";
    let id_token = canary_token(client_id);
    let answer = json!({
        "access_token": "ya29.hostile-cache-test",
        "id_token": id_token,
        "expires_in": expires_in,
        "token_type": "Bearer",
    })
    .to_string();
    let endpoint =
        Recorder::start(move |_| response(200, &[("content-type", "application/json")], &answer));
    let file = json!({
        "type": "authorized_user",
        "client_id": client_id,
        "client_secret": "hostile-secret",
        "refresh_token": "1//hostile-refresh",
        "token_uri": endpoint.at("/token").as_str(),
    });
    let path = case.home.path().join("user.json");
    std::fs::write(&path, file.to_string()).unwrap();
    let mut env = case.env(&[("GOOGLE_APPLICATION_CREDENTIALS", path.display().to_string())]);
    env.push(("CLOUDRUN_TEST_DISK_CACHE".into(), "off".into()));
    let output = case.token_run(&env);
    assert_eq!(endpoint.requests().len(), 1);
    (output, id_token)
}

#[test]
fn token_answers_with_huge_or_negative_lifetimes_do_not_panic() {
    let case = Case::new();
    for lifetime in [
        json!(1e300),
        json!(-5),
        json!(u64::MAX),
        json!(i64::MIN),
        json!("3600"),
    ] {
        let (output, id_token) = user_token_with_lifetime(&case, lifetime.clone());
        let text = output_text(&output);
        assert!(output.status.success(), "expires_in {lifetime}: {text}");
        assert_no_panic(&text);
        assert_eq!(
            String::from_utf8(output.stdout).unwrap().trim_end(),
            id_token
        );
    }
}

#[test]
fn a_token_answer_whose_lifetime_is_not_a_number_is_a_clear_error() {
    let case = Case::new();
    for lifetime in [json!("abc"), json!(true), json!({"seconds": 1})] {
        let (output, _) = user_token_with_lifetime(&case, lifetime.clone());
        let text = assert_clear_failure(&output, &["/token", "expires_in"]);
        assert!(!text.contains(CANARY_SIGNATURE), "the token leaked: {text}");
    }
}

#[test]
fn an_extreme_gcloud_timeout_is_refused_naming_the_variable() {
    let case = Case::new();
    let gcloud = case.home.path().join("gcloud");
    std::fs::create_dir_all(gcloud.join("configurations")).unwrap();
    std::fs::write(gcloud.join("active_config"), "default").unwrap();
    std::fs::write(
        gcloud.join("configurations/config_default"),
        "[core]\naccount = someone@example.com\n",
    )
    .unwrap();
    for timeout in ["18446744073709551615", "99999999999999h", "0", "soon"] {
        let mut env = case.env(&[
            ("CLOUDRUN_TEST_CREDENTIALS", "gcloud".into()),
            ("CLOUDRUN_TEST_GCLOUD", "/bin/true".into()),
            ("CLOUDSDK_CONFIG", gcloud.display().to_string()),
            ("CLOUDRUN_TEST_GCLOUD_TIMEOUT", timeout.into()),
        ]);
        env.retain(|(name, _)| name != "GOOGLE_APPLICATION_CREDENTIALS");
        let output = case.token_run(&env);
        assert_clear_failure(&output, &["CLOUDRUN_TEST_GCLOUD_TIMEOUT", timeout]);
    }
}

#[test]
fn gcloud_printing_without_end_is_stopped_at_the_limit() {
    let case = Case::new();
    let gcloud = case.home.path().join("gcloud");
    std::fs::create_dir_all(gcloud.join("configurations")).unwrap();
    std::fs::write(
        gcloud.join("configurations/config_default"),
        "[core]\naccount = someone@example.com\n",
    )
    .unwrap();
    // A "gcloud" that prints forever (`yes` stops when its pipe closes).
    let fake = case.home.path().join("fake-gcloud");
    std::fs::write(&fake, "#!/bin/sh\nexec yes eyJhbGciOiJSUzI1NiJ9\n").unwrap();
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut env = case.env(&[
        ("CLOUDRUN_TEST_CREDENTIALS", "gcloud".into()),
        ("CLOUDRUN_TEST_GCLOUD", fake.display().to_string()),
        ("CLOUDSDK_CONFIG", gcloud.display().to_string()),
    ]);
    env.retain(|(name, _)| name != "GOOGLE_APPLICATION_CREDENTIALS");
    let started = Instant::now();
    let output = case.token_run(&env);
    let text = assert_clear_failure(&output, &["gcloud", "more than 1 MiB on stdout"]);
    assert!(
        !text.contains("eyJhbGciOiJSUzI1NiJ9"),
        "the output is quoted: {text}"
    );
    // Stopped at the limit, long before gcloud's 30 s time limit.
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn token_timeouts_too_large_for_the_clock_do_not_panic() {
    let case = Case::new();
    // u64::MAX seconds, and just under it in minutes, fit a Duration but not the
    // clock: accepted, and the wait is capped. u64::MAX in milliseconds is read by
    // humantime as too large: refused with the fix. Never a panic.
    for (timeout, accepted) in [
        ("18446744073709551615", true),
        ("18446744073709551615ms", false),
        ("307445734561825860m", true),
    ] {
        let env = case.env(&[
            ("CLOUDRUN_TEST_TOKEN_TIMEOUT", timeout.into()),
            ("CLOUDRUN_TEST_DISK_CACHE", "off".into()),
        ]);
        let output = case.token_run(&env);
        let text = output_text(&output);
        assert_no_panic(&text);
        assert_eq!(output.status.success(), accepted, "{timeout}: {text}");
        if accepted {
            let token = String::from_utf8(output.stdout).unwrap();
            accepted_as(&case.fixture, token.trim_end(), TESTER);
        } else {
            assert!(
                text.contains("CLOUDRUN_TEST_TOKEN_TIMEOUT")
                    && text.contains("too large")
                    && text.contains("fix:"),
                "{timeout}: {text}"
            );
        }
    }
    assert_eq!(case.mints(), 2);
}
