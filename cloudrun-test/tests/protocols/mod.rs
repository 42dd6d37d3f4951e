//! What the protocol tests (grpc.rs, sse.rs, websocket.rs) share: an emulator minting
//! real tokens, clients pointed at a server of the test's own on loopback, and the
//! check such a server makes of a token (RS256 against the emulator's keys, audience,
//! expiry, invoker), as Cloud Run's front does.

#![allow(dead_code)] // Each test file uses its part.

use std::time::{SystemTime, UNIX_EPOCH};

use aws_lc_rs::signature::{RSA_PKCS1_2048_8192_SHA256, RsaPublicKeyComponents};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use cloudrun_test::{Client, ClientBuilder, Credentials, Settings};
use cloudrun_test_emulator::{Emulator, EmulatorBuilder};
use serde_json::Value;

pub const TESTER: &str = "tester@emulated-project.iam.gserviceaccount.com";
pub const OUTSIDER: &str = "outsider@emulated-project.iam.gserviceaccount.com";

/// Cloud Run's refusal page: HTML, no `grpc-status` (what tonic misreads).
pub const REFUSAL_PAGE: &str = "\n<html><head>\n<meta http-equiv=\"content-type\" content=\"text/html;charset=utf-8\">\n<title>403 Forbidden</title>\n</head>\n<body text=#000000 bgcolor=#ffffff>\n<h1>Error: Forbidden</h1>\n</body></html>\n";

/// An emulator for the tokens, and the keys of its JWKS.
pub struct Identity {
    pub emulator: Emulator,
    keys: Vec<(String, RsaPublicKeyComponents<Vec<u8>>)>,
}

impl Identity {
    pub fn start() -> Identity {
        Identity::with(Emulator::builder())
    }

    pub fn with(builder: EmulatorBuilder) -> Identity {
        let emulator = builder.start().expect("the emulator starts");
        let jwks: Value = fetch::json(emulator.jwks_uri().as_str());
        let keys = jwks["keys"]
            .as_array()
            .expect("a JWKS")
            .iter()
            .map(|key| {
                let part =
                    |name: &str| URL_SAFE_NO_PAD.decode(key[name].as_str().unwrap()).unwrap();
                (
                    key["kid"].as_str().unwrap().to_owned(),
                    RsaPublicKeyComponents {
                        n: part("n"),
                        e: part("e"),
                    },
                )
            })
            .collect();
        Identity { emulator, keys }
    }

    /// A client builder for the service at `url`, authenticating as `email` with a
    /// service-account key from the emulator; no settings from the environment.
    pub fn client_for(&self, email: &str, url: &str) -> ClientBuilder {
        let key = self.emulator.service_account_key(email);
        let credentials =
            Credentials::from_json(format!("/keys/{email}.json"), &key).expect("the key parses");
        Client::builder()
            .url(url)
            .credentials(credentials)
            .settings(Settings::from_vars(std::iter::empty::<(&str, &str)>()).unwrap())
    }

    /// What a front checking `authorization` (a header value) for `audience` decides:
    /// the caller's email, or the status to refuse with.
    pub fn check(&self, authorization: Option<&str>, audience: &str) -> Result<String, u16> {
        let token = authorization
            .ok_or(403u16)?
            .strip_prefix("Bearer ")
            .ok_or(401u16)?;
        let claims = self.verify(token).ok_or(401u16)?;
        if claims["aud"] != audience {
            return Err(401);
        }
        let email = claims["email"].as_str().ok_or(401u16)?.to_owned();
        if email != TESTER {
            return Err(403);
        }
        Ok(email)
    }

    /// The claims of `token` if its RS256 signature is the emulator's and it has not
    /// expired.
    pub fn verify(&self, token: &str) -> Option<Value> {
        let mut parts = token.split('.');
        let (header, payload, signature) = (parts.next()?, parts.next()?, parts.next()?);
        let decode = |part: &str| URL_SAFE_NO_PAD.decode(part).ok();
        let header: Value = serde_json::from_slice(&decode(header)?).ok()?;
        let (_, key) = self
            .keys
            .iter()
            .find(|(kid, _)| header["kid"].as_str() == Some(kid))?;
        key.verify(
            &RSA_PKCS1_2048_8192_SHA256,
            token.rsplit_once('.')?.0.as_bytes(),
            &decode(signature)?,
        )
        .ok()?;
        let claims: Value = serde_json::from_slice(&decode(payload)?).ok()?;
        let now = SystemTime::now().duration_since(UNIX_EPOCH).ok()?.as_secs();
        (claims["exp"].as_u64()? > now).then_some(claims)
    }
}

mod fetch {
    /// The JWKS at start-up, fetched on a runtime of its own (tests may call this from
    /// inside theirs).
    pub fn json(url: &str) -> serde_json::Value {
        let url = url.to_owned();
        std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
                .block_on(async {
                    cloudrun_test::reqwest::get(&url)
                        .await
                        .unwrap()
                        .json()
                        .await
                        .unwrap()
                })
        })
        .join()
        .unwrap()
    }
}
