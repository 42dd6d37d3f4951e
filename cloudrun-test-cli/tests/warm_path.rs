//! `cloudrun-test token` served from the disk cache builds nothing that only a mint
//! needs (issue 16): no runtime or fetcher thread, no HTTP client or proxy rules, no
//! parsed private key. Each is made to fail here, and the warm call must not notice.

mod support;

use base64::Engine;
use cloudrun_test_e2e::{Fixture, TESTER, isolate, output_text};
use cloudrun_test_emulator::{Emulator, ServiceConfig};

/// A PKCS#8 header for rsaEncryption followed by zeros: shaped like a key, so the file
/// is accepted when read, but no RSA key, so any signature (any mint) fails.
fn unusable_private_key() -> String {
    let mut der = vec![0x30, 0x82, 0x00, 0x80, 0x02, 0x01, 0x00];
    der.extend_from_slice(&[
        0x30, 0x0d, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01, 0x05, 0x00,
    ]);
    der.extend_from_slice(&[0; 110]);
    let body = base64::engine::general_purpose::STANDARD.encode(der);
    format!("-----BEGIN PRIVATE KEY-----\n{body}\n-----END PRIVATE KEY-----\n")
}

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
fn a_cached_token_needs_no_runtime_client_proxy_network_or_key_parse() {
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

    // Now everything a mint needs is broken: the same key (same email, key id and
    // token URI: the same cache key) with a body no signature can come from, an
    // invalid proxy, a missing CA bundle, and the token endpoint gone.
    let key_path = fixture.key_file(TESTER);
    let mut key: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&key_path).unwrap()).unwrap();
    key["private_key"] = unusable_private_key().into();
    let broken_key = fixture.keys.path().join("broken-key.json");
    std::fs::write(&broken_key, key.to_string()).unwrap();
    env.retain(|(name, _)| name != "GOOGLE_APPLICATION_CREDENTIALS");
    env.extend(
        [
            (
                "GOOGLE_APPLICATION_CREDENTIALS",
                broken_key.display().to_string(),
            ),
            ("HTTPS_PROXY", "socks5://not-a-proxy:1080".into()),
            ("SSL_CERT_FILE", "/nonexistent/ca-bundle.pem".into()),
            ("SSL_CERT_DIR", "/nonexistent".into()),
        ]
        .map(|(name, value)| (name.to_owned(), value)),
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
    // came from the cache alone. The unusable key is reported as when it was parsed
    // on reading (only the proxy and CA settings are left out, which fail first).
    env.retain(|(name, _)| !name.starts_with("SSL_CERT") && name != "HTTPS_PROXY");
    env.push(("CLOUDRUN_TEST_DISK_CACHE".into(), "off".into()));
    let uncached = token(&audience, &env, 1024);
    assert_eq!(
        uncached.status.code(),
        Some(1),
        "{}",
        output_text(&uncached)
    );
    let stderr = String::from_utf8_lossy(&uncached.stderr);
    assert!(
        stderr.contains(
            "field `private_key` is not usable: the PEM body is not a PKCS#8 RSA private key"
        ) && stderr.contains("fix:"),
        "{stderr}"
    );
    drop(keys);
}
