//! The token cache in every way tests run: many runtimes in one process (`cargo test`),
//! a process per test (`cargo nextest run`, the CLI: here the `token-probe` binary),
//! runtimes dropped mid-fetch, tokens that expire during the run, and the disk cache's
//! files. Every scenario is bounded in time: a hang fails the test instead of the CI job.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier, mpsc};
use std::time::{Duration, Instant};

use cloudrun_test::reqwest::StatusCode;
use cloudrun_test::{Client, Credentials};
use cloudrun_test_e2e::{Fixture, TESTER, isolate, output_text};
use cloudrun_test_emulator::{Emulator, ServiceConfig};
use serde_json::Value;

fn fixture(lifetime: Option<Duration>) -> Fixture {
    let invoker = format!("serviceAccount:{TESTER}");
    let mut builder = Emulator::builder()
        .service(ServiceConfig::new("hello").invoker(&invoker))
        .service(ServiceConfig::new("other").invoker(&invoker));
    if let Some(lifetime) = lifetime {
        builder = builder.id_token_lifetime(lifetime);
    }
    Fixture::start(builder)
}

fn url(fixture: &Fixture, service: &str) -> String {
    fixture.emulator.service_url(service).unwrap().to_string()
}

fn audience(fixture: &Fixture, service: &str) -> String {
    let url = fixture.emulator.service_url(service).unwrap();
    url.origin().ascii_serialization()
}

/// Runs `body` on its own thread and fails the test if it takes longer than `limit`:
/// a hang becomes a failure with a name instead of a stuck CI job.
fn within<T: Send + 'static>(limit: Duration, body: impl FnOnce() -> T + Send + 'static) -> T {
    let (sender, receiver) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = sender.send(std::panic::catch_unwind(std::panic::AssertUnwindSafe(body)));
    });
    match receiver.recv_timeout(limit) {
        Ok(Ok(value)) => value,
        Ok(Err(panic)) => std::panic::resume_unwind(panic),
        Err(_) => panic!("did not finish within {limit:?}: something hangs"),
    }
}

fn current_thread_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn a_thousand_requests_from_fifty_runtimes_mint_one_token() {
    const THREADS: usize = 50;
    const PER_THREAD: usize = 20;
    let fixture = Arc::new(fixture(None));
    let key = fixture.key_file(TESTER);
    let audience = audience(&fixture, "hello");
    let tokens = within(Duration::from_secs(60), move || {
        let start = Arc::new(Barrier::new(THREADS));
        let threads: Vec<_> = (0..THREADS)
            .map(|_| {
                let (start, key, audience) = (start.clone(), key.clone(), audience.clone());
                std::thread::spawn(move || {
                    // Each thread parses the key itself, as each test does: the cache is
                    // keyed by the credential's identity, not by the object.
                    let credentials = Credentials::from_file(&key).unwrap();
                    let runtime = current_thread_runtime();
                    start.wait();
                    runtime.block_on(async move {
                        let mut calls = tokio::task::JoinSet::new();
                        for _ in 0..PER_THREAD {
                            let (credentials, audience) = (credentials.clone(), audience.clone());
                            calls.spawn(async move { credentials.id_token(&audience).await });
                        }
                        let mut tokens = Vec::new();
                        while let Some(token) = calls.join_next().await {
                            tokens.push(token.unwrap().unwrap().as_str().to_owned());
                        }
                        tokens
                    })
                })
            })
            .collect();
        threads
            .into_iter()
            .flat_map(|thread| thread.join().unwrap())
            .collect::<Vec<_>>()
    });
    assert_eq!(tokens.len(), THREADS * PER_THREAD);
    assert!(tokens.iter().all(|token| *token == tokens[0]));
    let stats = fixture.emulator.stats();
    assert_eq!(stats.id_tokens_minted, 1, "{stats:?}");
}

/// A token endpoint that answers `answer` to every request, but only when released:
/// a slow Google, to catch a fetch in flight.
struct SlowTokenEndpoint {
    url: String,
    requests: Arc<AtomicUsize>,
    received: mpsc::Receiver<()>,
    release: mpsc::Sender<()>,
}

impl SlowTokenEndpoint {
    fn start(answer: String) -> SlowTokenEndpoint {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/token", listener.local_addr().unwrap());
        let requests = Arc::new(AtomicUsize::new(0));
        let (received_sender, received) = mpsc::channel();
        let (release, released) = mpsc::channel::<()>();
        let counter = requests.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { return };
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut length = 0;
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 {
                        break;
                    }
                    if let Some((name, value)) = line.split_once(':')
                        && name.eq_ignore_ascii_case("content-length")
                    {
                        length = value.trim().parse().unwrap_or(0);
                    }
                    if line == "\r\n" {
                        break;
                    }
                }
                let mut body = vec![0; length];
                let _ = reader.read_exact(&mut body);
                counter.fetch_add(1, Ordering::SeqCst);
                let _ = received_sender.send(());
                if released.recv().is_err() {
                    return;
                }
                let _ = write!(
                    stream,
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\
                     connection: close\r\n\r\n{answer}",
                    answer.len()
                );
            }
        });
        SlowTokenEndpoint {
            url,
            requests,
            received,
            release,
        }
    }
}

#[test]
fn a_runtime_dropped_mid_fetch_strands_nobody() {
    let fixture = Arc::new(fixture(None));
    let audience = audience(&fixture, "hello");
    let service_url = url(&fixture, "hello");
    // The slow endpoint hands out a real token of the emulator's, minted beforehand.
    let direct = Credentials::from_file(fixture.key_file(TESTER)).unwrap();
    let token = current_thread_runtime()
        .block_on(direct.id_token(&audience))
        .unwrap();
    let answer = serde_json::json!({ "id_token": token.as_str(), "token_type": "Bearer" });
    let slow = SlowTokenEndpoint::start(answer.to_string());
    let mut key: Value =
        serde_json::from_str(&fixture.emulator.service_account_key(TESTER)).unwrap();
    key["token_uri"] = slow.url.clone().into();
    let credentials = Credentials::from_json("/keys/slow.json", &key.to_string()).unwrap();

    let expected = token.as_str().to_owned();
    let requests = slow.requests.clone();
    let checked_fixture = fixture.clone();
    within(Duration::from_secs(60), move || {
        // Test A starts the fetch, and its runtime ends while the fetch is in flight.
        let first = current_thread_runtime();
        let started = first.spawn({
            let (credentials, audience) = (credentials.clone(), audience.clone());
            async move { credentials.id_token(&audience).await }
        });
        first.block_on(async {
            while slow.received.try_recv().is_err() {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        });
        // Test B asks for the same token meanwhile, on its own runtime.
        let second = std::thread::spawn({
            let (credentials, audience) = (credentials.clone(), audience.clone());
            move || current_thread_runtime().block_on(credentials.id_token(&audience))
        });
        drop(first);
        drop(started);
        std::thread::sleep(Duration::from_millis(200));
        assert!(
            !second.is_finished(),
            "B got an answer before the endpoint gave one"
        );
        slow.release.send(()).unwrap();
        let got = second
            .join()
            .unwrap()
            .expect("B gets the token A's fetch brought");
        assert_eq!(got.as_str(), expected);

        // Test C, later, on yet another runtime: the cached token works at the service.
        let answered = current_thread_runtime().block_on(async {
            let client = Client::builder()
                .url(service_url)
                .credentials(credentials)
                .build()
                .await
                .unwrap();
            client.get("/").send().await.unwrap().status()
        });
        assert_eq!(answered, StatusCode::OK);
        assert_eq!(
            requests.load(Ordering::SeqCst),
            1,
            "one request to the endpoint"
        );
        let stats = checked_fixture.emulator.stats();
        assert_eq!(stats.id_tokens_minted, 1, "{stats:?}");
        assert_eq!(stats.front_accepted, 1, "{stats:?}");
    });
}

/// Token lifetime in the expiry tests, and how long they run: over two lifetimes.
const SHORT_LIFETIME: Duration = Duration::from_secs(8);
const LONG_RUN: Duration = Duration::from_secs(18);

#[test]
fn short_lived_tokens_are_replaced_before_they_expire() {
    let fixture = Arc::new(fixture(Some(SHORT_LIFETIME)));
    let key = fixture.key_file(TESTER);
    let service_url = url(&fixture, "hello");
    let sent = within(LONG_RUN + Duration::from_secs(30), move || {
        let credentials = Credentials::from_file(&key).unwrap();
        let started = Instant::now();
        let mut sent = 0;
        // A test after another, each on its own runtime, as `cargo test` runs them.
        while started.elapsed() < LONG_RUN {
            let status = current_thread_runtime().block_on(async {
                let client = Client::builder()
                    .url(service_url.as_str())
                    .credentials(credentials.clone())
                    .build()
                    .await
                    .unwrap();
                client.get("/").send().await.unwrap().status()
            });
            assert_eq!(status, StatusCode::OK);
            sent += 1;
            std::thread::sleep(Duration::from_millis(100));
        }
        sent
    });
    let stats = fixture.emulator.stats();
    // A 401 would mean an expired token left: the client's retry would hide it, the
    // front's counter does not.
    assert_eq!(stats.front_unauthorized, 0, "{stats:?}");
    assert_eq!(stats.front_accepted, sent, "{stats:?}");
    assert!(stats.id_tokens_minted >= 2, "{stats:?}");
    assert!(stats.id_tokens_minted <= 5, "{stats:?}");
}

/// `token-probe URL`: one process doing what one test does, with `env` as its settings.
fn probe(env: &[(String, String)], url: &str) -> Output {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_token-probe"));
    isolate(&mut command);
    command.arg(url).envs(env.iter().cloned());
    command.output().expect("token-probe runs")
}

fn probe_ok(env: &[(String, String)], url: &str) {
    let output = probe(env, url);
    assert!(output.status.success(), "{}", output_text(&output));
}

fn cache_dir(env: &[(String, String)]) -> PathBuf {
    let (_, dir) = env
        .iter()
        .find(|(name, _)| name == "CLOUDRUN_TEST_CACHE_DIR")
        .unwrap();
    PathBuf::from(dir)
}

fn token_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "json"))
        .collect();
    files.sort();
    files
}

#[test]
fn the_disk_cache_replaces_tokens_before_they_expire_too() {
    let fixture = Arc::new(fixture(Some(SHORT_LIFETIME)));
    let env = fixture.environment(TESTER);
    let service_url = url(&fixture, "hello");
    let processes = within(LONG_RUN + Duration::from_secs(60), move || {
        let started = Instant::now();
        let mut processes = 0;
        while started.elapsed() < LONG_RUN {
            probe_ok(&env, &service_url);
            processes += 1;
            std::thread::sleep(Duration::from_millis(100));
        }
        processes
    });
    let stats = fixture.emulator.stats();
    assert_eq!(stats.front_unauthorized, 0, "{stats:?}");
    assert_eq!(stats.front_accepted, processes, "{stats:?}");
    assert!(stats.id_tokens_minted >= 2, "{stats:?}");
    // Each token served the processes of its fresh part of its lifetime.
    assert!(
        stats.id_tokens_minted <= 5,
        "{processes} processes, {stats:?}"
    );
}

#[test]
fn the_disk_cache_is_private_and_serves_every_process() {
    let fixture = fixture(None);
    let env = fixture.environment(TESTER);
    let dir = cache_dir(&env);
    // A folder that exists but is readable by others is made private.
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let service_url = url(&fixture, "hello");
    within(Duration::from_secs(60), move || {
        for _ in 0..3 {
            probe_ok(&env, &service_url);
        }
    });
    let mode = |path: &Path| std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&dir), 0o700);
    let files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .collect();
    assert!(!files.is_empty());
    for file in &files {
        assert_eq!(mode(file), 0o600, "{}", file.display());
    }
    let stats = fixture.emulator.stats();
    assert_eq!(
        stats.id_tokens_minted, 1,
        "three processes, one mint: {stats:?}"
    );
    assert_eq!(stats.front_accepted, 3, "{stats:?}");
}

#[test]
fn corrupt_and_foreign_cache_files_are_ignored_and_replaced() {
    let fixture = fixture(None);
    let env = fixture.environment(TESTER);
    let dir = cache_dir(&env);
    let (hello, other) = (url(&fixture, "hello"), url(&fixture, "other"));
    let checked = within(Duration::from_secs(60), move || {
        probe_ok(&env, &hello);
        let hello_file = token_files(&dir).pop().unwrap();
        probe_ok(&env, &other);
        let other_file = token_files(&dir)
            .into_iter()
            .find(|file| *file != hello_file)
            .unwrap();
        let minted_so_far = 2;

        // Foreign: hello's (valid, fresh) entry under other's name must not be served.
        std::fs::copy(&hello_file, &other_file).unwrap();
        probe_ok(&env, &other);
        let replaced = std::fs::read(&other_file).unwrap();
        assert_ne!(replaced, std::fs::read(&hello_file).unwrap());
        serde_json::from_slice::<Value>(&replaced).expect("valid JSON again");

        // Corrupt: half a file.
        std::fs::write(&other_file, &replaced[..replaced.len() / 2]).unwrap();
        probe_ok(&env, &other);
        serde_json::from_slice::<Value>(&std::fs::read(&other_file).unwrap())
            .expect("valid JSON again");

        // An untouched entry is still served from disk.
        probe_ok(&env, &other);
        minted_so_far + 2
    });
    let stats = fixture.emulator.stats();
    assert_eq!(stats.id_tokens_minted, checked, "{stats:?}");
    // The foreign token was never sent: it would have met a 401 (wrong audience).
    assert_eq!(stats.front_unauthorized, 0, "{stats:?}");
    assert_eq!(stats.front_accepted, 5, "{stats:?}");
}

#[test]
fn with_the_disk_cache_off_every_process_mints() {
    const PROCESSES: u64 = 3;
    let fixture = fixture(None);
    let mut env = fixture.environment(TESTER);
    let dir = cache_dir(&env);
    env.push(("CLOUDRUN_TEST_DISK_CACHE".into(), "off".into()));
    let service_url = url(&fixture, "hello");
    within(Duration::from_secs(60), move || {
        for _ in 0..PROCESSES {
            probe_ok(&env, &service_url);
        }
    });
    let stats = fixture.emulator.stats();
    assert_eq!(stats.id_tokens_minted, PROCESSES, "{stats:?}");
    assert!(!dir.exists(), "nothing written to {}", dir.display());
}
