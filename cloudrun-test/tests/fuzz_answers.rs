//! Property tests over every parser of an endpoint's answer, through the real code
//! path: real credentials ask a local listener over HTTP, and the listener answers
//! what proptest generated. Covered: the OAuth token endpoint (identity tokens, and
//! access tokens with their `expires_in`), IAM Credentials `generateIdToken`, STS, the
//! metadata server, the Cloud Run Admin API's service, and the JWT claims inside every
//! identity token, with numbers at their extremes (u64/i64 bounds, 1e300, negatives,
//! fractions, text).
//!
//! Each property checks both sides: an answer that should be accepted gives a token
//! (or a service) carrying what the answer said, and one that should not gives an error
//! that names the endpoint and says how to fix it; nothing panics (a panic in the token
//! fetcher would come back as an "internal error", which fails the property).
//! `PROPTEST_CASES=10000 cargo test -p cloudrun-test --test fuzz_answers` runs longer.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex, Once};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use cloudrun_test::{Client, Credentials, Error};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use serde_json::{Value, json};

/// What the listener answers, by kind of request: the status and the body.
type Answers = HashMap<&'static str, (u16, String)>;

/// One listener for every property. A case's answers are found by the marker
/// (`fuzzcaseN`) its request carries in its path, query or body; requests without
/// one (a second step the case does not fuzz) get a valid default answer.
struct Listener {
    base: String,
    cases: Mutex<HashMap<String, Answers>>,
}

static LISTENER: LazyLock<Arc<Listener>> = LazyLock::new(|| {
    let socket = TcpListener::bind("127.0.0.1:0").unwrap();
    let listener = Arc::new(Listener {
        base: format!("http://{}", socket.local_addr().unwrap()),
        cases: Mutex::new(HashMap::new()),
    });
    let serving = Arc::clone(&listener);
    std::thread::spawn(move || {
        for stream in socket.incoming().flatten() {
            let serving = Arc::clone(&serving);
            std::thread::spawn(move || serving.serve(stream));
        }
    });
    listener
});

impl Listener {
    fn serve(&self, stream: std::net::TcpStream) {
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        let mut head = String::new();
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            head.push_str(&line);
            if line == "\r\n" {
                break;
            }
        }
        let length = head
            .lines()
            .find_map(|line| {
                let (name, value) = line.split_once(':')?;
                name.eq_ignore_ascii_case("content-length")
                    .then(|| value.trim().parse::<usize>().ok())?
            })
            .unwrap_or(0);
        let mut body = vec![0; length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let body = String::from_utf8_lossy(&body);
        let target = head.split_whitespace().nth(1).unwrap_or("").to_owned();
        let kind = kind(&target, &body);
        let marker = find_marker(&target).or_else(|| find_marker(&body));
        let answer = marker
            .and_then(|marker| self.cases.lock().unwrap().get(&marker)?.get(kind).cloned())
            .unwrap_or_else(|| default_answer(kind));
        let (status, body) = answer;
        let mut stream = stream;
        let _ = write!(
            stream,
            "HTTP/1.1 {status} Fuzzed\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\
             connection: close\r\n\r\n{body}",
            body.len()
        );
    }
}

/// Which endpoint a request is for.
fn kind(target: &str, body: &str) -> &'static str {
    if target.contains("/computeMetadata/") {
        if target.contains("/identity") {
            "metadata-identity"
        } else {
            "metadata-token"
        }
    } else if target.contains(":generateIdToken") {
        "iam-id"
    } else if target.contains(":generateAccessToken") {
        "iam-access"
    } else if target.contains("/sts") {
        "sts"
    } else if target.contains("/v2/projects/") {
        "admin"
    } else if asks_for_identity_token(body) {
        "token-id"
    } else {
        "token-access"
    }
}

/// Whether a token endpoint's form asks for an identity token: a `target_audience`
/// among the assertion's claims, or one in the form itself.
fn asks_for_identity_token(form: &str) -> bool {
    let in_assertion = form
        .split('&')
        .find_map(|pair| pair.strip_prefix("assertion="))
        .and_then(|assertion| assertion.split('.').nth(1))
        .and_then(|claims| URL_SAFE_NO_PAD.decode(claims).ok())
        .is_some_and(|claims| String::from_utf8_lossy(&claims).contains("target_audience"));
    in_assertion || form.contains("target_audience")
}

fn find_marker(text: &str) -> Option<String> {
    let start = text.find("fuzzcase")?;
    let rest = &text[start..];
    let end = rest
        .find(|c: char| !c.is_ascii_alphanumeric())
        .unwrap_or(rest.len());
    Some(rest[..end].to_owned())
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// An unsigned JWT with `claims`: the library reads claims without verifying them.
fn jwt(claims: &Value) -> String {
    format!(
        "{}.{}.c2lnbmF0dXJl",
        URL_SAFE_NO_PAD.encode(r#"{"alg":"RS256","typ":"JWT"}"#),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    )
}

fn default_answer(kind: &str) -> (u16, String) {
    let id_token = jwt(&json!({
        "aud": "https://default.example", "exp": now() + 3600, "iat": now(),
        "email": "default@fuzz.iam.gserviceaccount.com",
    }));
    let body = match kind {
        "token-id" => json!({ "id_token": id_token }),
        "iam-id" => json!({ "token": id_token }),
        "iam-access" => json!({ "accessToken": "ya29.fuzz", "expireTime": "2099-01-01T00:00:00Z" }),
        "admin" => json!({ "uri": "http://127.0.0.1:9/" }),
        "metadata-identity" => return (200, id_token),
        _ => json!({ "access_token": "ya29.fuzz", "expires_in": 3600, "token_type": "Bearer" }),
    };
    (200, body.to_string())
}

/// A fresh case: its marker, with `answers` registered for it.
fn case(answers: Answers) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let marker = format!("fuzzcase{}", NEXT.fetch_add(1, Ordering::Relaxed));
    LISTENER
        .cases
        .lock()
        .unwrap()
        .insert(marker.clone(), answers);
    marker
}

/// The environment every property shares, set once before any request: no disk cache
/// (every case mints), IAM Credentials and the metadata server at the listener.
fn setup() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let host = LISTENER.base.trim_start_matches("http://").to_owned();
        // SAFETY: set once, before any of this binary's tests reads the environment
        // (each calls `setup` first and waits on `ONCE`).
        unsafe {
            std::env::set_var("CLOUDRUN_TEST_DISK_CACHE", "off");
            std::env::set_var("CLOUDRUN_TEST_IAM_ENDPOINT", &LISTENER.base);
            std::env::set_var("GCE_METADATA_HOST", host);
            std::env::set_var("CLOUDRUN_TEST_CREDENTIALS", "metadata");
            std::env::remove_var("CLOUDRUN_TEST_TOKEN_TIMEOUT");
        }
    });
}

fn block_on<T>(future: impl Future<Output = T>) -> T {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(future)
}

/// A service-account key whose token endpoint is the listener, at a path carrying
/// `marker` (which also makes the key's cache identity its own).
fn service_account_key(marker: &str) -> Credentials {
    static KEY: LazyLock<Value> = LazyLock::new(|| {
        let emulator = cloudrun_test_emulator::Emulator::builder().start().unwrap();
        serde_json::from_str(&emulator.service_account_key("fuzz@fuzz.iam.gserviceaccount.com"))
            .unwrap()
    });
    let mut key = KEY.clone();
    key["token_uri"] = format!("{}/token/{marker}", LISTENER.base).into();
    key["private_key_id"] = marker.into();
    Credentials::from_json(format!("/fuzz/{marker}.json"), &key.to_string()).unwrap()
}

/// A JSON value at the edges of what a number field may hold, or not a number at all.
fn extreme_value() -> impl Strategy<Value = Value> {
    prop_oneof![
        any::<u64>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("JSON numbers are finite", |f| f.is_finite())
            .prop_map(Value::from),
        prop::sample::select(vec![
            json!(u64::MAX),
            json!(i64::MAX),
            json!(i64::MIN),
            json!(1e300),
            json!(-1e300),
            json!(-5),
            json!(0),
            json!(0.5),
            json!(3600),
        ]),
        "[0-9]{1,25}".prop_map(Value::from),
        ".{0,12}".prop_map(Value::from),
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        Just(json!([1, 2])),
        Just(json!({"seconds": 1})),
    ]
}

/// A valid identity token's claims: an email, `exp` and `iat` at extremes (or absent).
fn valid() -> impl Strategy<Value = Answer> {
    (
        prop::option::of(extreme_value()),
        prop::option::of(extreme_value()),
        "[a-z]{1,12}",
    )
        .prop_map(|(exp, iat, user)| {
            let email = format!("{user}@fuzz.iam.gserviceaccount.com");
            let mut claims = json!({ "email": email, "iss": "https://accounts.google.com" });
            if let Some(exp) = exp {
                claims["exp"] = exp;
            }
            if let Some(iat) = iat {
                claims["iat"] = iat;
            }
            Answer::Valid { claims, email }
        })
}

/// An answer of one endpoint: a valid identity token (its claims, `aud` filled in by
/// the property, and the email they name), or garbage of the kinds endpoints send when
/// they are not what they should be.
#[derive(Debug, Clone)]
enum Answer {
    Valid { claims: Value, email: String },
    Garbage { status: u16, body: String },
}

impl Answer {
    /// The status and body to answer with: a valid token for `audience`, wrapped by `wrap`.
    fn reply(&self, audience: &str, wrap: fn(String) -> String) -> (u16, String) {
        match self {
            Answer::Valid { claims, .. } => {
                let mut claims = claims.clone();
                claims["aud"] = audience.into();
                (200, wrap(jwt(&claims)))
            }
            Answer::Garbage { status, body } => (*status, body.clone()),
        }
    }
}

fn garbage() -> impl Strategy<Value = Answer> {
    let body = prop_oneof![
        ".{0,200}",
        Just(String::new()),
        Just("<html><h1>Error: Forbidden</h1></html>".to_owned()),
        Just("null".to_owned()),
        Just("[]".to_owned()),
        Just(r#"{"error":"invalid_grant","error_description":"Bad Request"}"#.to_owned()),
        // Not a string where the token should be (a string is taken as an opaque token).
        extreme_value()
            .prop_filter("not a string", |value| !value.is_string())
            .prop_map(|value| json!({ "id_token": value, "token": value }).to_string()),
    ];
    (prop::sample::select(vec![200u16, 400, 403, 404]), body)
        .prop_map(|(status, body)| Answer::Garbage { status, body })
}

/// Runs `property` over `strategy` with proptest's settings.
fn check<S: Strategy>(strategy: S, property: impl Fn(S::Value) -> Result<(), TestCaseError>) {
    setup();
    TestRunner::new(Config::default())
        .run(&strategy, property)
        .unwrap();
}

/// Checks the outcome of asking for an identity token with `answer`: a token carrying
/// the answer's audience and email, trusted for at most 12 hours; or a clear error.
fn check_identity(
    answer: &Answer,
    audience: &str,
    result: Result<cloudrun_test::IdToken, Error>,
    names: &str,
) -> Result<(), TestCaseError> {
    match (answer, result) {
        (Answer::Valid { email, .. }, Ok(token)) => {
            prop_assert_eq!(token.claims().aud.as_deref(), Some(audience));
            prop_assert_eq!(token.claims().email.as_deref(), Some(email.as_str()));
            let latest = SystemTime::now() + Duration::from_secs(12 * 3600 + 60);
            prop_assert!(
                token.expires_at() <= latest,
                "trusted too long: {:?}",
                token
            );
        }
        (Answer::Garbage { .. }, Err(error)) => {
            let message = error.to_string();
            prop_assert!(!message.contains("internal error"), "{}", message);
            prop_assert!(message.contains(names), "{} not named: {}", names, message);
            prop_assert!(message.contains("fix:"), "{}", message);
        }
        (answer, outcome) => {
            prop_assert!(
                false,
                "answer {:?} gave {:?}",
                answer,
                outcome.map(|_| "a token")
            );
        }
    }
    Ok(())
}

#[test]
fn token_endpoint_identity_answers() {
    check(prop_oneof![valid(), garbage()], |answer| {
        let audience = "https://aud.example";
        let reply = answer.reply(audience, |token| {
            json!({ "id_token": token, "token_type": "Bearer" }).to_string()
        });
        let marker = case(HashMap::from([("token-id", reply)]));
        let result = block_on(service_account_key(&marker).id_token(audience));
        check_identity(&answer, audience, result, &marker)
    });
}

#[test]
fn iam_generate_id_token_answers() {
    check(prop_oneof![valid(), garbage()], |answer| {
        let audience = "https://iam.example";
        let reply = answer.reply(audience, |token| json!({ "token": token }).to_string());
        let marker = case(HashMap::from([("iam-id", reply)]));
        // The caller's key gets its access token from the listener's default answer.
        let credentials = service_account_key(&marker)
            .impersonate(&format!("{marker}@fuzz.iam.gserviceaccount.com"));
        let result = block_on(credentials.id_token(audience));
        check_identity(&answer, audience, result, &marker)
    });
}

#[test]
fn metadata_server_identity_answers() {
    let credentials = {
        setup();
        Credentials::from_env().unwrap()
    };
    check(prop_oneof![valid(), garbage()], |answer| {
        // The marker rides in the audience (the query of the request), which also gives
        // each case a cache key of its own.
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let marker = format!("fuzzcasemeta{}", NEXT.fetch_add(1, Ordering::Relaxed));
        let audience = format!("https://metadata.example/{marker}");
        let reply = answer.reply(&audience, |token| token);
        LISTENER
            .cases
            .lock()
            .unwrap()
            .insert(marker, HashMap::from([("metadata-identity", reply)]));
        let result = block_on(credentials.id_token(&audience));
        check_identity(&answer, &audience, result, "metadata server")
    });
}

/// Whether an `expires_in` should be accepted: absent, a number, or a string of digits.
fn readable_lifetime(value: &Option<Value>) -> bool {
    match value {
        None | Some(Value::Null) | Some(Value::Number(_)) => true,
        Some(Value::String(text)) => {
            let text = text.trim();
            !text.is_empty() && text.bytes().all(|byte| byte.is_ascii_digit())
        }
        Some(_) => false,
    }
}

fn access_token_answer(expires_in: &Option<Value>) -> String {
    let mut answer = json!({ "access_token": "ya29.fuzz", "token_type": "Bearer" });
    if let Some(expires_in) = expires_in {
        answer["expires_in"] = expires_in.clone();
    }
    answer.to_string()
}

#[test]
fn access_token_lifetimes_from_the_token_endpoint() {
    check(prop::option::of(extreme_value()), |expires_in| {
        let marker = case(HashMap::from([(
            "token-access",
            (200, access_token_answer(&expires_in)),
        )]));
        // An Admin API lookup is what needs an access token.
        let result = block_on(
            Client::builder()
                .service(&marker)
                .project("fuzz")
                .region("europe-west1")
                .run_endpoint(&LISTENER.base)
                .credentials(service_account_key(&marker))
                .build(),
        );
        match (readable_lifetime(&expires_in), result) {
            (true, Ok(client)) => prop_assert_eq!(client.url().as_str(), "http://127.0.0.1:9/"),
            (false, Err(error)) => {
                let message = error.to_string();
                prop_assert!(message.contains("expires_in"), "{}", message);
                prop_assert!(message.contains(&marker), "{}", message);
                prop_assert!(message.contains("fix:"), "{}", message);
            }
            (readable, outcome) => {
                prop_assert!(
                    false,
                    "expires_in {:?} ({}) gave {:?}",
                    expires_in,
                    readable,
                    outcome.map(|_| ())
                );
            }
        }
        Ok(())
    });
}

#[test]
fn sts_answers() {
    let folder = tempfile::tempdir().unwrap();
    let subject = folder.path().join("subject-token");
    std::fs::write(&subject, "a-subject-token").unwrap();
    check(
        (prop::option::of(extreme_value()), any::<bool>()),
        |(expires_in, with_token)| {
            let mut answer: Value =
                serde_json::from_str(&access_token_answer(&expires_in)).unwrap();
            if !with_token {
                answer.as_object_mut().unwrap().remove("access_token");
            }
            let marker = case(HashMap::from([("sts", (200, answer.to_string()))]));
            let file = json!({
                "type": "external_account",
                "audience": format!("//iam.googleapis.com/projects/1/locations/global/workloadIdentityPools/p/providers/{marker}"),
                "subject_token_type": "urn:ietf:params:oauth:token-type:jwt",
                "token_url": format!("{}/sts/{marker}", LISTENER.base),
                "service_account_impersonation_url": format!(
                    "{}/v1/projects/-/serviceAccounts/sa@fuzz.iam.gserviceaccount.com:generateAccessToken",
                    LISTENER.base
                ),
                "credential_source": { "file": subject.display().to_string() },
            });
            let credentials =
                Credentials::from_json(format!("/fuzz/{marker}.json"), &file.to_string()).unwrap();
            let result = block_on(credentials.id_token("https://sts.example"));
            match (readable_lifetime(&expires_in) && with_token, result) {
                (true, Ok(token)) => {
                    prop_assert_eq!(
                        token.claims().aud.as_deref(),
                        Some("https://default.example")
                    )
                }
                (false, Err(error)) => {
                    let message = error.to_string();
                    prop_assert!(message.contains(&marker), "{}", message);
                    prop_assert!(message.contains("fix:"), "{}", message);
                    let named = if readable_lifetime(&expires_in) {
                        "access_token"
                    } else {
                        "expires_in"
                    };
                    prop_assert!(message.contains(named), "{}", message);
                }
                (expected, outcome) => {
                    prop_assert!(
                        false,
                        "expected {}, got {:?}",
                        expected,
                        outcome.map(|_| ())
                    );
                }
            }
            Ok(())
        },
    );
}

/// A Cloud Run service as the Admin API describes it, with a loopback `uri` when
/// `usable`, and odd values in the other fields.
fn service_answer() -> impl Strategy<Value = (Value, Option<String>)> {
    (
        any::<bool>(),
        0u16..u16::MAX,
        prop::collection::vec(extreme_value(), 0..3),
        prop::collection::vec(extreme_value(), 0..3),
    )
        .prop_map(|(usable, port, urls, audiences)| {
            let uri = format!("http://127.0.0.1:{port}/");
            let mut service = json!({
                "name": "projects/fuzz/locations/r/services/s",
                "urls": urls.into_iter().filter(Value::is_string).collect::<Vec<_>>(),
                "customAudiences": audiences.into_iter().filter(Value::is_string).collect::<Vec<_>>(),
                "generation": u64::MAX,
                "traffic": [{"percent": 1e300}],
            });
            if usable {
                service["uri"] = uri.clone().into();
            }
            (service, usable.then_some(uri))
        })
}

#[test]
fn admin_api_service_answers() {
    let answers = prop_oneof![
        service_answer().prop_map(|(service, uri)| (200u16, service.to_string(), uri)),
        garbage().prop_map(|answer| match answer {
            Answer::Garbage { status, body } => (status, body, None),
            Answer::Valid { .. } => unreachable!(),
        }),
    ];
    check(answers, |(status, body, uri)| {
        let marker = case(HashMap::from([("admin", (status, body))]));
        let result = block_on(
            Client::builder()
                .service(&marker)
                .project("fuzz")
                .region("europe-west1")
                .run_endpoint(&LISTENER.base)
                .credentials(service_account_key(&marker))
                .build(),
        );
        match (uri, result) {
            (Some(uri), Ok(client)) => prop_assert_eq!(client.url().as_str(), uri),
            (None, Err(error)) => {
                let message = error.to_string();
                prop_assert!(!message.contains("internal error"), "{}", message);
                prop_assert!(message.contains(&marker), "{}", message);
                prop_assert!(message.contains("fix"), "{}", message);
            }
            (uri, outcome) => prop_assert!(false, "uri {:?} gave {:?}", uri, outcome.map(|_| ())),
        }
        Ok(())
    });
}
