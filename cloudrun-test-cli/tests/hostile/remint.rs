//! Hostile cases: re-minting. A 401 that a fresh token cannot fix (a wrong audience)
//! costs at most one forced re-mint per (identity, audience) per minute, process-wide;
//! the requests in between get their 401 at once with the cached token, and every
//! diagnosis says that re-minting did not help, and why: the audience. A 401 that a
//! new token does fix (rotated keys) still recovers, every time.
//!
//! The limiter is process-wide, keyed by the credentials' fingerprint (which names the
//! emulator's token endpoint, a new port for each [`fixture`]) and the audience: each
//! case starts its own emulator, so no case sees another's state.

use std::time::Duration;

use cloudrun_test::reqwest::StatusCode;
use cloudrun_test::{Client, ClientBuilder, Credentials, Diagnosis, RetryPolicy};
use cloudrun_test_e2e::recorder::{Recorder, response};
use cloudrun_test_e2e::{CANARY_SIGNATURE, canary_token};
use cloudrun_test_emulator::{Emulator, ServiceConfig};

use crate::support::{Fixture, OUTSIDER, TESTER};

const REQUESTS: usize = 20;

/// An emulator whose `hello` service admits [`TESTER`] and [`OUTSIDER`].
fn fixture() -> Fixture {
    Fixture::start(
        Emulator::builder().service(
            ServiceConfig::new("hello")
                .invoker(&format!("serviceAccount:{TESTER}"))
                .invoker(&format!("serviceAccount:{OUTSIDER}")),
        ),
    )
}

/// A client for `hello` by URL as `email`, minting for `audience` (no Admin API
/// lookup: ID tokens are the only mints), quick to retry.
fn by_url(fixture: &Fixture, email: &str, audience: Option<&str>) -> ClientBuilder {
    let builder = Client::builder()
        .url(fixture.emulator.service_url("hello").unwrap().as_str())
        .credentials(Credentials::from_file(fixture.key_file(email)).unwrap())
        .retry(
            RetryPolicy::default().backoff(Duration::from_millis(10), Duration::from_millis(50)),
        );
    match audience {
        Some(audience) => builder.audience(audience),
        None => builder,
    }
}

/// The diagnosis on a refused response (and that it was refused).
fn refused(response: &cloudrun_test::reqwest::Response) -> String {
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    response
        .extensions()
        .get::<Diagnosis>()
        .expect("a 401 carries its diagnosis")
        .message()
        .to_owned()
}

/// Whether `diagnosis` says that re-minting did not help (this request forced a new
/// token, refused too) or does not (a recent one was refused: none was forced).
fn re_minting_is_no_help(diagnosis: &str) -> bool {
    diagnosis.contains("Re-minting did not help: a freshly minted token was refused too")
        || diagnosis.contains("Re-minting does not help:")
}

/// Asserts that `diagnosis` says re-minting did not help, names `audience` against the
/// service URL, and gives the fix of removing the `audience` setting.
fn says_re_minting_did_not_help(diagnosis: &str, audience: &str, url: &str) {
    assert!(re_minting_is_no_help(diagnosis), "{diagnosis}");
    assert!(
        diagnosis.contains(&format!(
            "every new token is for the same audience, {audience}"
        )),
        "{diagnosis}"
    );
    assert!(diagnosis.contains(url.trim_end_matches('/')), "{diagnosis}");
    assert!(
        diagnosis.contains(&format!("fix: remove `audience = \"{audience}\"`")),
        "{diagnosis}"
    );
}

#[tokio::test]
async fn twenty_requests_with_a_wrong_audience_cost_one_forced_re_mint() {
    let fixture = fixture();
    let audience = "https://remint-sequential.example.com";
    let url = fixture.emulator.service_url("hello").unwrap();
    let client = by_url(&fixture, TESTER, Some(audience))
        .build()
        .await
        .unwrap();
    for request in 0..REQUESTS {
        let response = client.get(&format!("/{request}")).send().await.unwrap();
        says_re_minting_did_not_help(&refused(&response), audience, url.as_str());
    }
    let stats = fixture.emulator.stats();
    // One mint when the client was built, one forced by the first 401, no more.
    assert_eq!(stats.id_tokens_minted, 2, "{stats:?}");
    assert_eq!(
        stats.id_tokens_by_audience.get(audience),
        Some(&2),
        "{stats:?}"
    );
    // The first request was sent twice (the fresh token too); the others once.
    assert_eq!(stats.front_unauthorized, REQUESTS as u64 + 1, "{stats:?}");
}

#[tokio::test]
async fn the_first_refusal_re_mints_and_says_so_the_next_ones_say_why_they_did_not() {
    let fixture = fixture();
    let audience = "https://remint-wording.example.com";
    let url = fixture.emulator.service_url("hello").unwrap();
    let client = by_url(&fixture, TESTER, Some(audience))
        .build()
        .await
        .unwrap();

    let first = refused(&client.get("/").send().await.unwrap());
    assert!(
        first.contains("Re-minting did not help: a freshly minted token was refused too"),
        "{first}"
    );
    assert!(
        first.contains(&format!(
            "the token is for {audience} (the client's `audience`), not for the service URL {}",
            url.as_str().trim_end_matches('/')
        )),
        "{first}"
    );
    assert!(first.contains("No new token is forced for this identity and audience for 60s"));

    let second = refused(&client.get("/").send().await.unwrap());
    assert!(
        second.contains("Re-minting does not help:")
            && second.contains(
                "ago a freshly minted token for this identity and audience was refused too"
            )
            && second.contains("so this 401 was not retried with a new one"),
        "{second}"
    );
    assert!(
        second.contains("--add-custom-audiences=https://remint-wording.example.com"),
        "{second}"
    );
    assert_eq!(fixture.emulator.stats().id_tokens_minted, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twice_twenty_requests_at_once_with_a_wrong_audience_cost_one_forced_re_mint() {
    let fixture = fixture();
    let audience = "https://remint-concurrent.example.com";
    // By name: the Admin API says what the service accepts (its URLs).
    let client = fixture
        .client_for(TESTER, "hello")
        .audience(audience)
        .build()
        .await
        .unwrap();
    // Two waves: the first all carry the first token, the second the re-minted one.
    for _wave in 0..2 {
        let requests: Vec<_> = (0..REQUESTS)
            .map(|request| {
                let client = client.clone();
                tokio::spawn(
                    async move { client.get(&format!("/{request}")).send().await.unwrap() },
                )
            })
            .collect();
        for request in requests {
            let diagnosis = refused(&request.await.unwrap());
            assert!(
                diagnosis.contains(&format!(
                    "wrong audience: the token is for {audience}, but the service accepts"
                )),
                "{diagnosis}"
            );
            assert!(re_minting_is_no_help(&diagnosis), "{diagnosis}");
        }
    }
    let stats = fixture.emulator.stats();
    assert_eq!(
        stats.id_tokens_by_audience.get(audience),
        Some(&2),
        "{stats:?}"
    );
    assert_eq!(stats.id_tokens_minted, 2, "{stats:?}");
}

#[tokio::test]
async fn two_audiences_and_two_identities_each_get_their_own_budget() {
    let fixture = fixture();
    let (first, second) = (
        "https://remint-budget-a.example.com",
        "https://remint-budget-b.example.com",
    );
    let clients = [
        by_url(&fixture, TESTER, Some(first)).build().await.unwrap(),
        by_url(&fixture, TESTER, Some(second))
            .build()
            .await
            .unwrap(),
        by_url(&fixture, OUTSIDER, Some(first))
            .build()
            .await
            .unwrap(),
    ];
    for _ in 0..5 {
        for client in &clients {
            refused(&client.get("/").send().await.unwrap());
        }
    }
    // Each (identity, audience): its first mint and one forced re-mint.
    let stats = fixture.emulator.stats();
    assert_eq!(stats.id_tokens_minted, 6, "{stats:?}");
    assert_eq!(
        stats.id_tokens_by_audience.get(first),
        Some(&4),
        "{stats:?}"
    );
    assert_eq!(
        stats.id_tokens_by_audience.get(second),
        Some(&2),
        "{stats:?}"
    );
}

/// The hold-off is process-wide: a client built later, in another runtime, with the
/// same credentials and audience, does not force a mint either.
#[test]
fn the_hold_off_holds_across_clients_and_runtimes() {
    let fixture = fixture();
    let audience = "https://remint-process-wide.example.com";
    let runtime = || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    };
    runtime().block_on(async {
        let client = by_url(&fixture, TESTER, Some(audience))
            .build()
            .await
            .unwrap();
        refused(&client.get("/").send().await.unwrap());
    });
    assert_eq!(fixture.emulator.stats().id_tokens_minted, 2);
    runtime().block_on(async {
        let client = by_url(&fixture, TESTER, Some(audience))
            .build()
            .await
            .unwrap();
        let diagnosis = refused(&client.get("/").send().await.unwrap());
        assert!(
            diagnosis.contains("Re-minting does not help:"),
            "{diagnosis}"
        );
    });
    // The second client took the cached token: no mint at all.
    assert_eq!(fixture.emulator.stats().id_tokens_minted, 2);
}

/// A 401 that a new token fixes (the signing keys rotated) costs one re-mint and the
/// request passes, each time: a re-mint that helped holds nothing off.
#[tokio::test]
async fn a_401_that_a_new_token_fixes_recovers_every_time() {
    let fixture = fixture();
    let client = by_url(&fixture, TESTER, None).build().await.unwrap();
    assert_eq!(
        client.get("/").send().await.unwrap().status(),
        StatusCode::OK
    );
    for rotation in 1..=3u64 {
        fixture.emulator.rotate_signing_key();
        let response = client.get("/after-rotation").send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK, "rotation {rotation}");
        assert!(response.extensions().get::<Diagnosis>().is_none());
        let stats = fixture.emulator.stats();
        assert_eq!(stats.id_tokens_minted, 1 + rotation, "{stats:?}");
        assert_eq!(stats.front_unauthorized, rotation, "{stats:?}");
        // The next request uses the new token at once.
        assert_eq!(
            client.get("/").send().await.unwrap().status(),
            StatusCode::OK
        );
    }
}

/// After a wrong-audience hold-off for one audience, the right audience with the same
/// credentials still re-mints and recovers when its keys rotate.
#[tokio::test]
async fn a_hold_off_for_one_audience_leaves_the_right_one_recovering() {
    let fixture = fixture();
    let wrong = by_url(&fixture, TESTER, Some("https://remint-other.example.com"))
        .build()
        .await
        .unwrap();
    refused(&wrong.get("/").send().await.unwrap());
    let right = by_url(&fixture, TESTER, None).build().await.unwrap();
    fixture.emulator.rotate_signing_key();
    let response = right.get("/").send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
}

/// A ready token that the service refuses (here a recording service that refuses
/// everything) is sent once more after the first 401, then never twice per request:
/// the service sees one request per call, plus one.
#[tokio::test]
async fn a_refused_ready_token_is_not_resent_on_every_request() {
    let service = Recorder::start(|_| response(401, &[], "<h1>Error: Unauthorized</h1>"));
    let audience = service.url.origin().ascii_serialization();
    let token = canary_token(&audience);
    let client = Client::builder()
        .url(service.url.as_str())
        .credentials(Credentials::from_id_token(token.clone()))
        .build()
        .await
        .unwrap();
    for _ in 0..10 {
        let diagnosis = refused(&client.get("/").send().await.unwrap());
        assert!(re_minting_is_no_help(&diagnosis), "{diagnosis}");
        assert!(!diagnosis.contains(CANARY_SIGNATURE), "{diagnosis}");
        assert!(!diagnosis.contains(&token), "{diagnosis}");
    }
    assert_eq!(service.requests().len(), 11);
}

/// The variables that make [`wrong_audience_child`] call the service.
const CHILD_URL: &str = "HOSTILE_REMINT_CHILD_URL";
const CHILD_AUDIENCE: &str = "HOSTILE_REMINT_CHILD_AUDIENCE";

/// Not a case: one test process of a nextest-like run, for
/// [`a_nextest_run_of_wrong_audience_tests_forces_one_re_mint_in_all`]. Sends one
/// request with the audience in [`CHILD_AUDIENCE`] and prints `status=CODE`.
#[test]
#[ignore = "the child process of the cross-process re-mint case"]
fn wrong_audience_child() {
    let (Ok(url), Ok(audience)) = (std::env::var(CHILD_URL), std::env::var(CHILD_AUDIENCE)) else {
        return;
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let client = Client::builder()
            .url(url)
            .audience(audience)
            .build()
            .await
            .unwrap();
        let response = client.get("/").send().await.unwrap();
        println!("status={}", response.status().as_u16());
    });
}

/// nextest runs each test in its own process: the hold-off is shared through the disk
/// cache, so five processes with a wrong audience cost one mint (shared) and one forced
/// re-mint in all, not one forced re-mint each.
#[test]
fn a_nextest_run_of_wrong_audience_tests_forces_one_re_mint_in_all() {
    let fixture = fixture();
    let audience = "https://remint-across-processes.example.com";
    let url = fixture.emulator.service_url("hello").unwrap().to_string();
    let environment = fixture.environment(TESTER);
    assert!(
        environment
            .iter()
            .any(|(name, _)| name == "CLOUDRUN_TEST_CACHE_DIR"),
        "the fixture gives the run a disk cache of its own"
    );
    for process in 0..5 {
        let mut command = std::process::Command::new("/proc/self/exe");
        command.args([
            "remint::wrong_audience_child",
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ]);
        cloudrun_test_e2e::isolate(&mut command);
        let output = command
            .envs(environment.iter().cloned())
            .env(CHILD_URL, &url)
            .env(CHILD_AUDIENCE, audience)
            .output()
            .expect("the test binary runs");
        let text = crate::support::output_text(&output);
        assert!(text.contains("status=401"), "process {process}: {text}");
    }
    let stats = fixture.emulator.stats();
    assert_eq!(
        stats.id_tokens_by_audience.get(audience),
        Some(&2),
        "one mint shared through the disk cache, one forced re-mint for the whole run: {stats:?}"
    );
}
