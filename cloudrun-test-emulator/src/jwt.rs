//! Compact JWS (JWT) encoding, decoding and RS256 signatures.
//!
//! Decoding never panics: tokens arrive from the network and may be anything.
//! Error messages describe the problem, never the token.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use serde_json::{Map, Value};

use crate::keys::{KeyError, RsaKey};

/// Longer than any token Google issues; bounds the work done on garbage.
const MAX_TOKEN_LEN: usize = 16 * 1024;

/// JWTs are unpadded base64url, but some encoders pad: accept both.
const DECODER: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::URL_SAFE,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Why a string is not a well-formed JWT.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum JwtError {
    #[error("the token is longer than {MAX_TOKEN_LEN} bytes")]
    TooLong,
    #[error("the token does not have three dot-separated parts")]
    Parts,
    #[error("the token's {0} is not base64url")]
    Base64(&'static str),
    #[error("the token's {0} is not a JSON object")]
    Json(&'static str),
}

/// A decoded, not yet verified JWT.
pub(crate) struct Jwt {
    pub(crate) header: Map<String, Value>,
    pub(crate) claims: Map<String, Value>,
    signing_input: String,
    signature: Vec<u8>,
}

impl Jwt {
    pub(crate) fn decode(token: &str) -> Result<Jwt, JwtError> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(JwtError::TooLong);
        }
        let mut parts = token.split('.');
        let (Some(header), Some(claims), Some(signature), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(JwtError::Parts);
        };
        let signature = DECODER
            .decode(signature)
            .map_err(|_| JwtError::Base64("signature"))?;
        Ok(Jwt {
            header: json_object(header, "header")?,
            claims: json_object(claims, "claims")?,
            signing_input: format!("{header}.{claims}"),
            signature,
        })
    }

    pub(crate) fn alg(&self) -> Option<&str> {
        self.header.get("alg").and_then(Value::as_str)
    }

    pub(crate) fn kid(&self) -> Option<&str> {
        self.header.get("kid").and_then(Value::as_str)
    }

    pub(crate) fn claim_str(&self, name: &str) -> Option<&str> {
        self.claims.get(name).and_then(Value::as_str)
    }

    /// A NumericDate claim; some encoders write floats.
    pub(crate) fn claim_time(&self, name: &str) -> Option<i64> {
        let value = self.claims.get(name)?;
        value
            .as_i64()
            .or_else(|| value.as_f64().map(|seconds| seconds as i64))
    }

    /// `aud` is a string or, per RFC 7519, an array of strings.
    pub(crate) fn audiences(&self) -> Vec<&str> {
        match self.claims.get("aud") {
            Some(Value::String(aud)) => vec![aud],
            Some(Value::Array(auds)) => auds.iter().filter_map(Value::as_str).collect(),
            _ => Vec::new(),
        }
    }

    /// True when `alg` is RS256 and `key` made the signature.
    pub(crate) fn verify(&self, key: &RsaKey) -> bool {
        self.alg() == Some("RS256") && key.verify(self.signing_input.as_bytes(), &self.signature)
    }
}

fn json_object(part: &str, what: &'static str) -> Result<Map<String, Value>, JwtError> {
    let bytes = DECODER.decode(part).map_err(|_| JwtError::Base64(what))?;
    match serde_json::from_slice(&bytes) {
        Ok(Value::Object(object)) => Ok(object),
        _ => Err(JwtError::Json(what)),
    }
}

/// Signs `claims` with `key` as an RS256 JWT whose header names the key.
pub(crate) fn encode(claims: &Value, key: &RsaKey) -> Result<String, KeyError> {
    let header = serde_json::json!({"alg": "RS256", "kid": key.kid(), "typ": "JWT"});
    let signing_input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let signature = key.sign(signing_input.as_bytes())?;
    Ok(format!(
        "{signing_input}.{}",
        URL_SAFE_NO_PAD.encode(signature)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn round_trip() {
        let key = RsaKey::generate().unwrap();
        let token = encode(&json!({"aud": "a", "exp": 5, "iat": 1.5}), &key).unwrap();
        let jwt = Jwt::decode(&token).unwrap();
        assert!(jwt.verify(&key));
        assert_eq!(jwt.kid(), Some(key.kid()));
        assert_eq!(jwt.audiences(), vec!["a"]);
        assert_eq!(jwt.claim_time("exp"), Some(5));
        assert_eq!(jwt.claim_time("iat"), Some(1));
        let other = RsaKey::generate().unwrap();
        assert!(!jwt.verify(&other));
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        for token in [
            "",
            ".",
            "..",
            "a.b.c",
            "a.b.c.d",
            "e30.e30",
            "W10.e30.",
            "e30.W10.",
            "e30.e30.!!",
        ] {
            assert!(Jwt::decode(token).is_err(), "{token:?}");
        }
        assert_eq!(
            Jwt::decode(&"a".repeat(MAX_TOKEN_LEN + 1)).err(),
            Some(JwtError::TooLong)
        );
        // Well-formed but unsigned: decodes, does not verify.
        let jwt = Jwt::decode("e30.e30.").unwrap();
        assert!(!jwt.verify(&RsaKey::generate().unwrap()));
    }
}
