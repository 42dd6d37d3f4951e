//! Test helpers: a minimal RS256 assertion signer built from a key file (as a
//! client library would do), token requests, and JWT inspection.
#![allow(dead_code)] // each test binary uses a different part

use std::time::{SystemTime, UNIX_EPOCH};

use aws_lc_rs::rsa::KeyPair;
use aws_lc_rs::signature;
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use cloudrun_test_emulator::Emulator;
use serde_json::{Value, json};

pub const TESTER: &str = "tester@emulated-project.iam.gserviceaccount.com";
pub const OUTSIDER: &str = "outsider@emulated-project.iam.gserviceaccount.com";
pub const GOOGLE_TOKEN_URI: &str = "https://oauth2.googleapis.com/token";
pub const JWT_BEARER: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";

pub fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// A service account's key file, parsed: what a client library holds.
pub struct ServiceAccount {
    pub email: String,
    pub key_id: String,
    pub token_uri: String,
    pair: KeyPair,
}

impl ServiceAccount {
    pub fn from_key_file(json: &str) -> ServiceAccount {
        let file: Value = serde_json::from_str(json).expect("the key file is JSON");
        let pem = file["private_key"].as_str().expect("private_key");
        let body: String = pem
            .lines()
            .filter(|line| !line.starts_with("-----"))
            .collect();
        let der = STANDARD.decode(body).expect("the PEM body is base64");
        ServiceAccount {
            email: file["client_email"].as_str().unwrap().to_owned(),
            key_id: file["private_key_id"].as_str().unwrap().to_owned(),
            token_uri: file["token_uri"].as_str().unwrap().to_owned(),
            pair: KeyPair::from_pkcs8(&der).expect("the private key is PKCS#8 RSA"),
        }
    }

    pub fn of(emulator: &Emulator, email: &str) -> ServiceAccount {
        ServiceAccount::from_key_file(&emulator.service_account_key(email))
    }

    /// The standard assertion claims, with `extra` merged in.
    pub fn claims(&self, extra: Value) -> Value {
        let now = now();
        let mut claims =
            json!({"iss": self.email, "aud": GOOGLE_TOKEN_URI, "iat": now, "exp": now + 3600});
        for (name, value) in extra.as_object().unwrap() {
            claims[name] = value.clone();
        }
        claims
    }

    /// An RS256 JWT with this account's key id in the header.
    pub fn sign(&self, claims: &Value) -> String {
        let header = json!({"alg": "RS256", "typ": "JWT", "kid": self.key_id});
        sign_with(&self.pair, &header, claims)
    }
}

pub fn sign_with(pair: &KeyPair, header: &Value, claims: &Value) -> String {
    let input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let mut signature = vec![0; pair.public_modulus_len()];
    pair.sign(
        &signature::RSA_PKCS1_SHA256,
        &aws_lc_rs::rand::SystemRandom::new(),
        input.as_bytes(),
        &mut signature,
    )
    .unwrap();
    format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature))
}

/// The claims of a JWT, unverified.
pub fn claims_of(token: &str) -> Value {
    let payload = token.split('.').nth(1).expect("a JWT");
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap()
}

pub fn header_of(token: &str) -> Value {
    let header = token.split('.').next().unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(header).unwrap()).unwrap()
}

pub fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(30))
        .no_proxy()
        .build()
        .unwrap()
}

/// POSTs an assertion to the token endpoint; returns status and JSON body.
pub async fn exchange(emulator: &Emulator, assertion: &str) -> (u16, Value) {
    post_token_form(
        emulator,
        &[("grant_type", JWT_BEARER), ("assertion", assertion)],
    )
    .await
}

pub async fn post_token_form(emulator: &Emulator, form: &[(&str, &str)]) -> (u16, Value) {
    let response = http()
        .post(emulator.token_uri())
        .form(form)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

/// An ID token for `audience`, minted as `email`.
pub async fn id_token(emulator: &Emulator, email: &str, audience: &str) -> String {
    let account = ServiceAccount::of(emulator, email);
    let (status, body) = exchange(
        emulator,
        &account.sign(&account.claims(json!({"target_audience": audience}))),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    body["id_token"].as_str().unwrap().to_owned()
}

pub async fn access_token(emulator: &Emulator, email: &str) -> String {
    let account = ServiceAccount::of(emulator, email);
    let scope = json!({"scope": "https://www.googleapis.com/auth/cloud-platform"});
    let (status, body) = exchange(emulator, &account.sign(&account.claims(scope))).await;
    assert_eq!(status, 200, "{body}");
    body["access_token"].as_str().unwrap().to_owned()
}

/// The service URL as an audience: an origin, no trailing slash.
pub fn audience(url: &reqwest::Url) -> String {
    url.as_str().trim_end_matches('/').to_owned()
}
