//! Property-based fuzzing of credential-file parsing: no input panics, every error
//! names the file and says how to fix it, and no key material leaks into a message.
//!
//! Each property reports how many inputs ran clean. CI runs proptest's default 256
//! cases per property; run longer by hand, e.g.
//! `PROPTEST_CASES=100000 cargo test -p cloudrun-test --release --test fuzz_credentials -- --nocapture`.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

use cloudrun_test::Credentials;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

fn valid_key() -> &'static str {
    static KEY: OnceLock<String> = OnceLock::new();
    KEY.get_or_init(|| {
        let emulator = cloudrun_test_emulator::Emulator::builder().start().unwrap();
        emulator.service_account_key("fuzz@emulated-project.iam.gserviceaccount.com")
    })
}

/// Parses `text` and checks the outcome; panics (failing the property) on a defect.
fn check(text: &str) {
    match Credentials::from_json("/fuzz/key.json", text) {
        Ok(credentials) => {
            let described = format!("{credentials:?} {}", credentials.describe());
            assert!(!described.contains("PRIVATE KEY"), "{described}");
        }
        Err(error) => {
            let message = error.to_string();
            assert!(message.contains("/fuzz/key.json"), "{message}");
            assert!(message.contains("fix:"), "{message}");
            assert!(
                !message.contains("PRIVATE KEY-----\n"),
                "key material in: {message}"
            );
        }
    }
}

/// Runs `property` over `strategy` and reports the number of clean inputs.
fn fuzz<S: Strategy>(name: &str, strategy: S, property: impl Fn(S::Value) -> u64) {
    let clean = AtomicU64::new(0);
    TestRunner::new(Config::default())
        .run(&strategy, |input| {
            clean.fetch_add(property(input), Ordering::Relaxed);
            Ok(())
        })
        .unwrap();
    let clean = clean.load(Ordering::Relaxed);
    assert!(clean > 0);
    eprintln!("credential fuzzing, {name}: {clean} inputs ran clean");
}

#[test]
fn arbitrary_text_never_panics() {
    fuzz("arbitrary text", ".{0,400}", |text: String| {
        check(&text);
        1
    });
}

#[test]
fn truncated_and_spliced_keys_never_panic() {
    fuzz(
        "truncated and spliced keys",
        (any::<prop::sample::Index>(), ".{0,20}"),
        |(cut, insert): (prop::sample::Index, String)| {
            let key = valid_key();
            let boundaries: Vec<usize> = key.char_indices().map(|(index, _)| index).collect();
            let cut = boundaries[cut.index(boundaries.len())];
            check(&key[..cut]);
            check(&format!("{}{insert}{}", &key[..cut], &key[cut..]));
            2
        },
    );
}

#[test]
fn fields_of_the_wrong_type_never_panic() {
    let value = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        ".{0,40}".prop_map(serde_json::Value::from),
        prop::collection::vec(".{0,8}", 0..3).prop_map(serde_json::Value::from),
    ];
    let field = prop::sample::select(vec![
        "type",
        "client_email",
        "private_key",
        "private_key_id",
        "token_uri",
        "project_id",
    ]);
    fuzz(
        "fields of the wrong type",
        (field, value),
        |(field, value)| {
            let mut key: serde_json::Value = serde_json::from_str(valid_key()).unwrap();
            key[field] = value;
            check(&key.to_string());
            1
        },
    );
}
