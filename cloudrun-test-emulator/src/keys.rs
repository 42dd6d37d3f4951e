//! RSA keys: generation, PKCS#8 PEM export, JWKS entries and RS256.
//!
//! Generating an RSA-2048 key takes 50–300 ms in a debug build, so keys are made
//! on a background thread after start-up (the emulator's signing key first, then a
//! few spares for service accounts) instead of delaying `Emulator::start`.

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rsa::{KeyPair, KeySize};
use aws_lc_rs::signature::{self, KeyPair as _};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};

/// How many service-account keys to keep ready.
const SPARE_KEYS: usize = 2;
/// How many times the signing key can be rotated in one emulator's life.
pub(crate) const MAX_ROTATIONS: usize = 32;

/// The RS256 key generation or signing failed inside aws-lc (not expected in practice).
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("RSA key operation failed in aws-lc-rs")]
pub(crate) struct KeyError;

/// An RSA-2048 key pair with its key id (`kid` in JWTs, `private_key_id` in key files).
pub(crate) struct RsaKey {
    pair: KeyPair,
    kid: String,
}

// Key material must never reach logs or panic messages: show the id only.
impl fmt::Debug for RsaKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RsaKey")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

impl RsaKey {
    pub(crate) fn generate() -> Result<RsaKey, KeyError> {
        let pair = KeyPair::generate(KeySize::Rsa2048).map_err(|_| KeyError)?;
        // Google's key ids are 40 hex digits.
        let kid = random_hex(20)?;
        Ok(RsaKey { pair, kid })
    }

    pub(crate) fn kid(&self) -> &str {
        &self.kid
    }

    /// RSASSA-PKCS1-v1_5 with SHA-256, i.e. JWS `RS256`.
    pub(crate) fn sign(&self, message: &[u8]) -> Result<Vec<u8>, KeyError> {
        let mut signature = vec![0; self.pair.public_modulus_len()];
        let rng = aws_lc_rs::rand::SystemRandom::new();
        self.pair
            .sign(&signature::RSA_PKCS1_SHA256, &rng, message, &mut signature)
            .map_err(|_| KeyError)?;
        Ok(signature)
    }

    pub(crate) fn verify(&self, message: &[u8], signature: &[u8]) -> bool {
        let public = signature::UnparsedPublicKey::new(
            &signature::RSA_PKCS1_2048_8192_SHA256,
            self.pair.public_key().as_ref(),
        );
        public.verify(message, signature).is_ok()
    }

    /// The private key as Google writes it in key files: PKCS#8, PEM, 64-column lines.
    pub(crate) fn private_key_pem(&self) -> Result<String, KeyError> {
        let der = self.pair.as_der().map_err(|_| KeyError)?;
        let base64 = STANDARD.encode(der.as_ref());
        let mut pem = String::from("-----BEGIN PRIVATE KEY-----\n");
        for line in base64.as_bytes().chunks(64) {
            // Base64 output is ASCII, so every chunk is valid UTF-8.
            pem.push_str(std::str::from_utf8(line).unwrap_or_default());
            pem.push('\n');
        }
        pem.push_str("-----END PRIVATE KEY-----\n");
        Ok(pem)
    }

    /// The public key as a JWKS entry.
    pub(crate) fn jwk(&self) -> serde_json::Value {
        let public = self.pair.public_key();
        serde_json::json!({
            "kty": "RSA",
            "alg": "RS256",
            "use": "sig",
            "kid": self.kid,
            "n": URL_SAFE_NO_PAD.encode(public.modulus().big_endian_without_leading_zero()),
            "e": URL_SAFE_NO_PAD.encode(public.exponent().big_endian_without_leading_zero()),
        })
    }
}

/// The emulator's own signing key (Google's, from the clients' point of view) and a
/// small pool of ready keys for new service accounts.
#[derive(Default)]
pub(crate) struct Keys {
    signing: OnceLock<Result<RsaKey, KeyError>>,
    /// Keys that replaced `signing` ([`Keys::rotate`]), oldest first: slots filled
    /// once and never emptied, so `&RsaKey`s handed out stay valid.
    rotated: [OnceLock<RsaKey>; MAX_ROTATIONS],
    /// How many of `rotated` are filled; the last filled one signs.
    rotations: AtomicUsize,
    rotating: Mutex<()>,
    spares: Mutex<Vec<RsaKey>>,
    /// Set when the emulator stops, so the background thread stops early.
    stopped: AtomicBool,
}

impl Keys {
    /// The signing key, generated on first use; blocks while another thread generates it.
    pub(crate) fn signing(&self) -> Result<&RsaKey, KeyError> {
        if let Some(key) = self.latest_rotation() {
            return Ok(key);
        }
        self.signing
            .get_or_init(RsaKey::generate)
            .as_ref()
            .map_err(|error| *error)
    }

    /// The signing key if it exists already. Nothing can carry its signature before
    /// then, so checking a token never needs to wait for it.
    pub(crate) fn signing_if_ready(&self) -> Option<&RsaKey> {
        self.latest_rotation()
            .or_else(|| self.signing.get().and_then(|key| key.as_ref().ok()))
    }

    fn latest_rotation(&self) -> Option<&RsaKey> {
        match self.rotations.load(Ordering::Acquire) {
            0 => None,
            filled => self.rotated[filled - 1].get(),
        }
    }

    /// Replaces the signing key with a new one: tokens signed before no longer
    /// verify (unlike Google, the JWKS keeps no previous key). Returns the new key,
    /// or `None` after [`MAX_ROTATIONS`] rotations.
    pub(crate) fn rotate(&self) -> Result<Option<&RsaKey>, KeyError> {
        let _one_at_a_time = self
            .rotating
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        // Make sure there is a key to replace, so the old one really disappears.
        self.signing.get_or_init(RsaKey::generate);
        let filled = self.rotations.load(Ordering::Acquire);
        let Some(slot) = self.rotated.get(filled) else {
            return Ok(None);
        };
        // Only rotations fill slots, one at a time: this one is empty.
        let _ = slot.set(self.take()?);
        self.rotations.store(filled + 1, Ordering::Release);
        Ok(slot.get())
    }

    /// A fresh key for a service account: a spare if one is ready, else made now.
    pub(crate) fn take(&self) -> Result<RsaKey, KeyError> {
        let spare = self
            .spares
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
            .pop();
        match spare {
            Some(key) => Ok(key),
            None => RsaKey::generate(),
        }
    }

    /// Runs on the background key thread: the signing key, then the spares.
    pub(crate) fn fill(&self) {
        if self.signing().is_err() {
            tracing::error!("generating the emulator's signing key failed");
            return;
        }
        while !self.stopped.load(Ordering::Relaxed) {
            let missing = SPARE_KEYS.saturating_sub(
                self.spares
                    .lock()
                    .unwrap_or_else(|poison| poison.into_inner())
                    .len(),
            );
            if missing == 0 {
                return;
            }
            match RsaKey::generate() {
                Ok(key) => self
                    .spares
                    .lock()
                    .unwrap_or_else(|poison| poison.into_inner())
                    .push(key),
                Err(_) => return,
            }
        }
    }

    pub(crate) fn stop(&self) {
        self.stopped.store(true, Ordering::Relaxed);
    }
}

/// `bytes` random bytes as lower-case hex.
pub(crate) fn random_hex(bytes: usize) -> Result<String, KeyError> {
    let random = random_bytes(bytes)?;
    Ok(random.iter().map(|byte| format!("{byte:02x}")).collect())
}

pub(crate) fn random_bytes(count: usize) -> Result<Vec<u8>, KeyError> {
    let mut bytes = vec![0; count];
    aws_lc_rs::rand::fill(&mut bytes).map_err(|_| KeyError)?;
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signs_and_verifies() {
        let key = RsaKey::generate().unwrap();
        let signature = key.sign(b"message").unwrap();
        assert!(key.verify(b"message", &signature));
        assert!(!key.verify(b"other message", &signature));
        assert!(!key.verify(b"message", &signature[1..]));
        assert_eq!(key.kid().len(), 40);
    }

    #[test]
    fn pem_round_trips_through_pkcs8() {
        let key = RsaKey::generate().unwrap();
        let pem = key.private_key_pem().unwrap();
        assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----\n"));
        assert!(pem.ends_with("-----END PRIVATE KEY-----\n"));
        let body: String = pem
            .lines()
            .filter(|line| !line.starts_with("-----"))
            .collect();
        let der = STANDARD.decode(body).unwrap();
        let parsed = KeyPair::from_pkcs8(&der).unwrap();
        assert_eq!(parsed.public_key().as_ref(), key.pair.public_key().as_ref());
    }

    #[test]
    fn debug_shows_no_key_material() {
        let key = RsaKey::generate().unwrap();
        let debug = format!("{key:?}");
        assert_eq!(debug, format!("RsaKey {{ kid: {:?}, .. }}", key.kid()));
    }
}
