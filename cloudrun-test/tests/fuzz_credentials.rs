//! Property-based fuzzing of credential-file parsing, for every file type
//! (`service_account`, `authorized_user`, `impersonated_service_account`,
//! `external_account` with each credential source): no input panics, every error
//! names the file and says how to fix it, and no key material or refresh token leaks
//! into a message.
//!
//! Each property also counts how its inputs came out (accepted or refused) and asserts
//! the split it must show: inputs that can never be a credentials file are all
//! refused, and mutations of valid files reach both sides, so a parser that refused
//! everything (or accepted everything) fails too. CI runs proptest's default 256
//! cases per property; run longer by hand, e.g.
//! `PROPTEST_CASES=100000 cargo test -p cloudrun-test --release --test fuzz_credentials -- --nocapture`.

use std::cell::Cell;
use std::sync::OnceLock;

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

/// How the inputs of one property came out.
#[derive(Default)]
struct Tally {
    accepted: Cell<u64>,
    refused: Cell<u64>,
}

impl Tally {
    /// Parses `text`, checks the outcome (panicking, which fails the property, on a
    /// defect) and counts it; returns whether `text` was accepted.
    fn check(&self, text: &str) -> bool {
        let accepted = check(text);
        let count = if accepted {
            &self.accepted
        } else {
            &self.refused
        };
        count.set(count.get() + 1);
        accepted
    }
}

/// Parses `text` and checks the outcome; panics (failing the property) on a defect.
/// Returns whether the file was accepted.
fn check(text: &str) -> bool {
    match Credentials::from_json("/fuzz/key.json", text) {
        Ok(credentials) => {
            let described = format!("{credentials:?} {}", credentials.describe());
            assert!(!described.contains("PRIVATE KEY"), "{described}");
            assert!(!described.contains("1//emulated-"), "{described}");
            true
        }
        Err(error) => {
            let message = error.to_string();
            assert!(message.contains("/fuzz/key.json"), "{message}");
            assert!(message.contains("fix:"), "{message}");
            assert!(
                !message.contains("PRIVATE KEY-----\n"),
                "key material in: {message}"
            );
            assert!(
                !message.contains("1//emulated-"),
                "a refresh token in: {message}"
            );
            false
        }
    }
}

/// Which outcomes a property's inputs must reach.
#[derive(Clone, Copy)]
enum Expect {
    /// Every input is refused.
    AllRefused,
    /// Some inputs are accepted and some refused.
    Both,
}

/// Runs `property` over `strategy` (each input checked through the tally), then
/// asserts that the outcomes are split as `expect` says.
fn fuzz<S: Strategy>(name: &str, expect: Expect, strategy: S, property: impl Fn(S::Value, &Tally)) {
    let tally = Tally::default();
    TestRunner::new(Config::default())
        .run(&strategy, |input| {
            property(input, &tally);
            Ok(())
        })
        .unwrap();
    let (accepted, refused) = (tally.accepted.get(), tally.refused.get());
    eprintln!("credential fuzzing, {name}: {accepted} files accepted, {refused} refused");
    match expect {
        Expect::AllRefused => assert!(
            accepted == 0 && refused > 0,
            "{name}: {accepted} accepted, {refused} refused; every input should be refused"
        ),
        Expect::Both => assert!(
            accepted > 0 && refused > 0,
            "{name}: {accepted} accepted, {refused} refused; both should occur"
        ),
    }
}

#[test]
fn arbitrary_text_never_panics() {
    fuzz(
        "arbitrary text",
        Expect::AllRefused,
        ".{0,400}",
        |text: String, tally| {
            tally.check(&text);
        },
    );
}

#[test]
fn truncated_and_spliced_keys_never_panic() {
    fuzz(
        "truncated and spliced keys",
        Expect::Both,
        (any::<prop::sample::Index>(), ".{0,20}"),
        |(cut, insert): (prop::sample::Index, String), tally| {
            // Without its final line break: cutting that off truncates nothing.
            let key = valid_key().trim_end();
            let boundaries: Vec<usize> = key.char_indices().map(|(index, _)| index).collect();
            let cut = boundaries[cut.index(boundaries.len())];
            assert!(!tally.check(&key[..cut]), "a truncated key was accepted");
            tally.check(&format!("{}{insert}{}", &key[..cut], &key[cut..]));
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
        Expect::Both,
        (field, value),
        |(field, value), tally| {
            let mut key: serde_json::Value = serde_json::from_str(valid_key()).unwrap();
            key[field] = value;
            tally.check(&key.to_string());
        },
    );
}

/// One valid file of every type and credential source, made by the emulator.
fn templates() -> &'static [(&'static str, serde_json::Value)] {
    static TEMPLATES: OnceLock<Vec<(&'static str, serde_json::Value)>> = OnceLock::new();
    TEMPLATES.get_or_init(|| {
        let emulator = cloudrun_test_emulator::Emulator::builder().start().unwrap();
        let key: serde_json::Value = serde_json::from_str(valid_key()).unwrap();
        let user: serde_json::Value =
            serde_json::from_str(&emulator.authorized_user_credentials("fuzz@example.com"))
                .unwrap();
        let impersonation_url = format!(
            "{}v1/projects/-/serviceAccounts/target@p.iam.gserviceaccount.com:generateAccessToken",
            emulator.base_url()
        );
        let external = |source: serde_json::Value| {
            serde_json::json!({
                "type": "external_account",
                "audience": emulator.workload_identity_audience(),
                "subject_token_type": "urn:ietf:params:oauth:token-type:jwt",
                "token_url": emulator.sts_token_url().as_str(),
                "service_account_impersonation_url": impersonation_url,
                "credential_source": source,
            })
        };
        vec![
            ("service_account", key.clone()),
            ("authorized_user", user.clone()),
            (
                "impersonated_service_account (key)",
                serde_json::json!({
                    "type": "impersonated_service_account",
                    "service_account_impersonation_url": impersonation_url,
                    "delegates": ["projects/-/serviceAccounts/d@p.iam.gserviceaccount.com"],
                    "source_credentials": key,
                }),
            ),
            (
                "impersonated_service_account (user)",
                serde_json::json!({
                    "type": "impersonated_service_account",
                    "service_account_impersonation_url": impersonation_url,
                    "source_credentials": user,
                }),
            ),
            (
                "external_account (file)",
                external(serde_json::json!({"file": "/var/run/token.jwt"})),
            ),
            (
                "external_account (url)",
                external(serde_json::json!({
                    "url": "http://127.0.0.1:1/token?audience=x",
                    "headers": {"Authorization": "Bearer x"},
                    "format": {"type": "json", "subject_token_field_name": "value"},
                })),
            ),
            (
                "external_account (executable)",
                external(serde_json::json!({
                    "executable": {"command": "/bin/true --flag", "timeout_millis": 5000, "output_file": "/tmp/x.json"},
                })),
            ),
        ]
    })
}

/// Every field path of `value`, nested objects included (`credential_source.format.type`).
fn field_paths(value: &serde_json::Value, prefix: &str, out: &mut Vec<String>) {
    if let Some(object) = value.as_object() {
        for (key, inner) in object {
            let path = format!("{prefix}{key}");
            out.push(path.clone());
            field_paths(inner, &format!("{path}."), out);
        }
    }
}

fn at_path<'a>(
    value: &'a mut serde_json::Value,
    path: &str,
) -> Option<(&'a mut serde_json::Map<String, serde_json::Value>, String)> {
    let mut parts: Vec<&str> = path.split('.').collect();
    let last = parts.pop()?.to_owned();
    let mut current = value;
    for part in parts {
        current = current.get_mut(part)?;
    }
    Some((current.as_object_mut()?, last))
}

fn any_json() -> impl Strategy<Value = serde_json::Value> {
    prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        ".{0,40}".prop_map(serde_json::Value::from),
        Just(serde_json::json!("")),
        Just(serde_json::json!("not a url")),
        Just(serde_json::json!({})),
        Just(serde_json::json!({"type": "json"})),
        prop::collection::vec(".{0,8}", 0..3).prop_map(serde_json::Value::from),
    ]
}

/// Any type of file, cut at any point, or with anything spliced in.
#[test]
fn every_file_type_truncated_and_spliced_never_panics() {
    fuzz(
        "every file type, truncated and spliced",
        Expect::Both,
        (
            any::<prop::sample::Index>(),
            any::<prop::sample::Index>(),
            ".{0,20}",
        ),
        |(which, cut, insert): (prop::sample::Index, prop::sample::Index, String), tally| {
            let (name, template) = &templates()[which.index(templates().len())];
            let text = serde_json::to_string_pretty(template).unwrap();
            let boundaries: Vec<usize> = text.char_indices().map(|(index, _)| index).collect();
            let cut = boundaries[cut.index(boundaries.len())];
            assert!(
                !tally.check(&text[..cut]),
                "a truncated {name} was accepted"
            );
            tally.check(&format!("{}{insert}{}", &text[..cut], &text[cut..]));
        },
    );
}

/// Any field of any file type, nested ones included, replaced by a value of another
/// type, or removed.
#[test]
fn every_field_of_every_file_type_wrong_or_missing_never_panics() {
    fuzz(
        "every field of every file type, wrong or missing",
        Expect::Both,
        (
            any::<prop::sample::Index>(),
            any::<prop::sample::Index>(),
            prop::option::of(any_json()),
        ),
        |(which, field, value): (
            prop::sample::Index,
            prop::sample::Index,
            Option<serde_json::Value>,
        ),
         tally| {
            let (_, template) = &templates()[which.index(templates().len())];
            let mut paths = Vec::new();
            field_paths(template, "", &mut paths);
            let path = &paths[field.index(paths.len())];
            let mut file = template.clone();
            let (object, last) = at_path(&mut file, path).expect("a path of the template");
            match value {
                Some(value) => {
                    object.insert(last, value);
                }
                None => {
                    object.remove(&last);
                }
            }
            tally.check(&file.to_string());
        },
    );
}

/// Private keys mangled inside their PEM armour, at the top level and nested: every
/// one refused (keys are parsed when the file is read), none panics.
#[test]
fn bad_pem_never_panics() {
    fuzz(
        "bad PEM in every file holding a key",
        Expect::AllRefused,
        (any::<bool>(), any::<prop::sample::Index>(), "[ -~\n]{0,12}"),
        |(nested, cut, insert): (bool, prop::sample::Index, String), tally| {
            let index = if nested { 2 } else { 0 };
            let mut file = templates()[index].1.clone();
            let key = if nested {
                &mut file["source_credentials"]["private_key"]
            } else {
                &mut file["private_key"]
            };
            let pem = key.as_str().unwrap().to_owned();
            // Inside the armour, in the base64 lines before the last: PEM readers ignore
            // text after the END line, a missing line break before it, and the unused
            // bits of the last line's final character, so mangling those may change
            // nothing.
            let body_start = pem.find('\n').unwrap() + 1;
            let last_line = pem.find("-----END").unwrap() - 1;
            let body_end = pem[..last_line].rfind('\n').unwrap();
            let cut = body_start + cut.index(body_end - body_start);
            let end = (cut + 7).min(body_end);
            *key = serde_json::Value::from(format!("{}{insert}{}", &pem[..cut], &pem[end..]));
            tally.check(&file.to_string());
        },
    );
}

/// Deterministic: removing each required field of each file type gives an error that
/// names the file and that field (with its nesting).
#[test]
fn every_missing_required_field_is_named() {
    let required: &[(usize, &[&str])] = &[
        (0, &["type", "client_email", "private_key"]),
        (1, &["client_id", "client_secret", "refresh_token"]),
        (
            2,
            &[
                "service_account_impersonation_url",
                "source_credentials",
                "source_credentials.client_email",
                "source_credentials.private_key",
            ],
        ),
        (3, &["source_credentials.refresh_token"]),
        (
            4,
            &[
                "audience",
                "subject_token_type",
                "credential_source",
                "credential_source.file",
            ],
        ),
        (5, &["credential_source.format.subject_token_field_name"]),
        (6, &["credential_source.executable.command"]),
    ];
    let mut checked = 0;
    for (index, fields) in required {
        let (name, template) = &templates()[*index];
        for path in *fields {
            let mut file = template.clone();
            let (object, last) = at_path(&mut file, path).unwrap();
            object.remove(&last);
            let message = match Credentials::from_json("/fuzz/key.json", &file.to_string()) {
                Ok(_) => panic!("{name} without {path} was accepted"),
                Err(error) => error.to_string(),
            };
            assert!(message.contains("/fuzz/key.json"), "{message}");
            let named = if *path == "credential_source.file" {
                // Without any source the message names the three it may have.
                "`credential_source` has none of `file`, `url`, `executable`".to_owned()
            } else {
                format!("`{path}`")
            };
            assert!(message.contains(&named), "{name} without {path}: {message}");
            checked += 1;
        }
    }
    eprintln!("credential files: {checked} missing required fields each named in the error");
}
