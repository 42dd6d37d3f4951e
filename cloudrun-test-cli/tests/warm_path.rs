//! `cloudrun-test token` served from the disk cache builds nothing that only a mint
//! needs (issue 16): no runtime or fetcher thread, no HTTP client, proxy rules or CA
//! roots. Each is made to fail here, and the warm call must not notice.

mod support;

use cloudrun_test_e2e::{Fixture, TESTER, isolate, output_text};
use cloudrun_test_emulator::{Emulator, ServiceConfig};

/// `cloudrun-test token --audience AUDIENCE` with `env` and at most `files` open
/// files (a tokio runtime alone takes an epoll and an eventfd).
fn token(audience: &str, env: &[(String, String)], files: u32) -> std::process::Output {
    let mut command = std::process::Command::new("sh");
    command.args([
        "-c",
        &format!(r#"ulimit -n {files} && exec "$0" "$@""#),
        support::BIN,
        "token",
        "--audience",
        audience,
    ]);
    isolate(&mut command);
    command.envs(env.iter().cloned()).output().unwrap()
}

#[test]
fn a_cached_token_needs_no_runtime_client_proxy_or_network() {
    let fixture = Fixture::start(
        Emulator::builder()
            .service(ServiceConfig::new("hello").invoker(&format!("serviceAccount:{TESTER}"))),
    );
    let audience = fixture
        .emulator
        .service_url("hello")
        .unwrap()
        .origin()
        .ascii_serialization();
    let mut env = fixture.environment(TESTER);
    // A mint stores the token on disk.
    let minted = support::run_isolated(&["token", "--audience", &audience], &env);
    assert!(minted.status.success(), "{}", output_text(&minted));

    // Now everything a mint needs is broken: an invalid proxy, a missing CA bundle,
    // and the token endpoint gone.
    env.extend(
        [
            ("HTTPS_PROXY", "socks5://not-a-proxy:1080"),
            ("SSL_CERT_FILE", "/nonexistent/ca-bundle.pem"),
            ("SSL_CERT_DIR", "/nonexistent"),
        ]
        .map(|(name, value)| (name.to_owned(), value.to_owned())),
    );
    let Fixture { emulator, keys } = fixture;
    drop(emulator);

    // Five files: stdin, stdout, stderr and two more; the key file and the cache entry
    // are read one after the other. The code before issue 16 started two runtimes here.
    let cached = token(&audience, &env, 5);
    assert!(cached.status.success(), "{}", output_text(&cached));
    let printed = String::from_utf8(cached.stdout).unwrap();
    assert_eq!(
        printed.trim_end(),
        String::from_utf8(minted.stdout).unwrap().trim_end()
    );

    // The same call without the disk cache must mint, and fails: so the success above
    // came from the cache alone.
    env.push(("CLOUDRUN_TEST_DISK_CACHE".into(), "off".into()));
    let uncached = token(&audience, &env, 1024);
    let text = output_text(&uncached);
    assert_eq!(uncached.status.code(), Some(1), "{text}");
    // The missing CA bundle is the first thing a mint meets: a clear error naming the
    // variable, not a panic reported as an internal error.
    assert!(
        text.contains("SSL_CERT_FILE") && text.contains("fix:"),
        "{text}"
    );
    assert!(
        !text.contains("panicked") && !text.contains("internal error"),
        "{text}"
    );
    drop(keys);
}
