//! Tokens and the little we read from them.
//!
//! A token's text is a bearer secret: every type here prints it as `<redacted>`.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use reqwest::header::HeaderValue;
use serde::Deserialize;
use serde_json::Value;

/// The longest a token is trusted, whatever its issuer, its claims or a cache file say:
/// Google's tokens live an hour (access tokens with an extended lifetime, twelve).
pub(crate) const MAX_LIFETIME: Duration = Duration::from_secs(12 * 3600);
/// The lifetime of a token that does not state one: Google's.
const DEFAULT_LIFETIME: Duration = Duration::from_secs(3600);
/// The most a token is replaced ahead of its expiry (else a quarter of its lifetime).
const MAX_MARGIN: Duration = Duration::from_secs(300);

/// A bearer token (identity or access) and when it stops being valid. Cheap to clone.
#[derive(Clone)]
pub(crate) struct Token {
    inner: Arc<TokenInner>,
}

struct TokenInner {
    secret: String,
    /// `Bearer {secret}`, marked sensitive: built once per token, cloned (a reference
    /// count) into every request.
    authorization: HeaderValue,
    issued_at: SystemTime,
    expires_at: SystemTime,
    /// When to stop using the token: a quarter of its lifetime (at most [`MAX_MARGIN`])
    /// before it expires, so a request never leaves with a token about to lapse.
    refresh_at: SystemTime,
    claims: Claims,
}

/// The claims of an identity token that we use for diagnosis. Decoded without
/// verifying the signature: the service verifies, we only explain.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
pub struct Claims {
    /// The audience: whom the token is for. Cloud Run accepts a token whose audience is
    /// the service's URL (or a custom audience set on the service). A list of audiences
    /// reads as its first.
    #[serde(default, deserialize_with = "audience_claim")]
    pub aud: Option<String>,
    /// The principal's email, when the token carries it (service accounts and users).
    #[serde(default)]
    pub email: Option<String>,
    /// The principal's unique ID at the issuer.
    #[serde(default)]
    pub sub: Option<String>,
    /// Who issued the token, e.g. `https://accounts.google.com`.
    #[serde(default)]
    pub iss: Option<String>,
    /// When the token was issued, in seconds since the Unix epoch.
    #[serde(default, deserialize_with = "numeric_date")]
    pub iat: Option<u64>,
    /// When the token expires, in seconds since the Unix epoch.
    #[serde(default, deserialize_with = "numeric_date")]
    pub exp: Option<u64>,
}

/// `iat`, `exp`: seconds since the epoch (RFC 7519 allows a fraction, rounded down
/// here; a negative number reads as 0, the epoch). Anything else reads as absent, so
/// that an odd claim does not hide the others.
fn numeric_date<'de, D: serde::Deserializer<'de>>(de: D) -> Result<Option<u64>, D::Error> {
    Ok(match Option::<Value>::deserialize(de)? {
        Some(Value::Number(number)) => number
            .as_u64()
            // Float to integer casts saturate: 1e300 is u64::MAX, -5 is 0.
            .or_else(|| number.as_f64().map(|seconds| seconds.max(0.0) as u64)),
        _ => None,
    })
}

/// `expires_in` of an OAuth answer: seconds as a number (a fraction rounded down, a
/// negative number zero) or as a string of digits (Google's Go library reads both); at
/// most [`MAX_LIFETIME`]. Anything else is an error, which fails the whole answer.
pub(crate) fn expires_in<'de, D: serde::Deserializer<'de>>(
    de: D,
) -> Result<Option<Duration>, D::Error> {
    let seconds = match Option::<Value>::deserialize(de)? {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Number(number)) => number
            .as_u64()
            .or_else(|| number.as_f64().map(|seconds| seconds.max(0.0) as u64)),
        // Digits past u64 are capped below like any other huge number.
        Some(Value::String(text))
            if !text.trim().is_empty() && text.trim().bytes().all(|byte| byte.is_ascii_digit()) =>
        {
            Some(text.trim().parse::<u64>().unwrap_or(u64::MAX))
        }
        Some(_) => None,
    };
    match seconds {
        Some(seconds) => Ok(Some(Duration::from_secs(seconds).min(MAX_LIFETIME))),
        None => Err(serde::de::Error::custom(
            "`expires_in` is not a number of seconds",
        )),
    }
}

/// `aud` may be a string or a list of strings (RFC 7519); we keep the first.
fn audience_claim<'de, D: serde::Deserializer<'de>>(de: D) -> Result<Option<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Aud {
        One(String),
        Many(Vec<String>),
    }
    Ok(match Option::<Aud>::deserialize(de)? {
        Some(Aud::One(aud)) => Some(aud),
        Some(Aud::Many(list)) => list.into_iter().next(),
        None => None,
    })
}

impl Claims {
    /// Reads the claims of a JWT, or `None` if it is not one.
    pub(crate) fn decode_unverified(jwt: &str) -> Option<Claims> {
        let mut parts = jwt.split('.');
        let (_header, payload, _signature) = (parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some() {
            return None;
        }
        let bytes = URL_SAFE_NO_PAD.decode(payload.trim_end_matches('=')).ok()?;
        serde_json::from_slice(&bytes).ok()
    }
}

impl Token {
    /// An identity token (a JWT): its expiry comes from its `exp` claim, trusted for
    /// [`MAX_LIFETIME`] at most.
    pub(crate) fn from_jwt(secret: String) -> Token {
        let claims = Claims::decode_unverified(&secret).unwrap_or_default();
        let now = SystemTime::now();
        let latest = later(now, MAX_LIFETIME);
        let issued_at = claims
            .iat
            .and_then(unix_time)
            .filter(|issued_at| *issued_at <= latest)
            .unwrap_or(now);
        // A token we cannot read an expiry from is used for an hour, Google's lifetime;
        // one whose expiry is past what a clock can hold, for the longest we trust.
        let expires_at = claims
            .exp
            .map_or(later(now, DEFAULT_LIFETIME), |exp| {
                unix_time(exp).unwrap_or(latest)
            })
            .min(latest);
        Token::new(secret, issued_at, expires_at, claims)
    }

    /// An opaque access token with the lifetime its issuer stated, trusted for
    /// [`MAX_LIFETIME`] at most.
    pub(crate) fn from_access_token(secret: String, expires_in: Duration) -> Token {
        let now = SystemTime::now();
        Token::new(
            secret,
            now,
            later(now, expires_in.min(MAX_LIFETIME)),
            Claims::default(),
        )
    }

    /// A token read back from the disk cache.
    pub(crate) fn restore(secret: String, issued_at: SystemTime, expires_at: SystemTime) -> Token {
        let claims = Claims::decode_unverified(&secret).unwrap_or_default();
        Token::new(secret, issued_at, expires_at, claims)
    }

    fn new(secret: String, issued_at: SystemTime, expires_at: SystemTime, claims: Claims) -> Token {
        let mut authorization = HeaderValue::try_from(format!("Bearer {secret}"))
            .unwrap_or_else(|_| HeaderValue::from_static("Bearer invalid-token-characters"));
        authorization.set_sensitive(true);
        let lifetime = expires_at.duration_since(issued_at).unwrap_or_default();
        let margin = (lifetime / 4).min(MAX_MARGIN);
        Token {
            inner: Arc::new(TokenInner {
                secret,
                authorization,
                issued_at,
                expires_at,
                refresh_at: expires_at.checked_sub(margin).unwrap_or(expires_at),
                claims,
            }),
        }
    }

    pub(crate) fn secret(&self) -> &str {
        &self.inner.secret
    }

    pub(crate) fn claims(&self) -> &Claims {
        &self.inner.claims
    }

    /// The `Authorization` header carrying the token, marked sensitive.
    pub(crate) fn authorization(&self) -> HeaderValue {
        self.inner.authorization.clone()
    }

    pub(crate) fn issued_at(&self) -> SystemTime {
        self.inner.issued_at
    }

    pub(crate) fn expires_at(&self) -> SystemTime {
        self.inner.expires_at
    }

    /// Whether the token is still good for a while: tokens are replaced a quarter of
    /// their lifetime (at most [`MAX_MARGIN`]) before they expire, so a request never
    /// leaves with a token about to lapse.
    pub(crate) fn is_fresh(&self) -> bool {
        SystemTime::now() < self.inner.refresh_at
    }

    pub(crate) fn same_secret(&self, other: &Token) -> bool {
        self.inner.secret == other.inner.secret
    }

    /// The very token `other` is (a clone of the same mint), not merely the same
    /// text: two mints within one second can give the same text.
    pub(crate) fn same_mint(&self, other: &Token) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Token")
            .field("secret", &"<redacted>")
            .field("expires_at", &self.inner.expires_at)
            .field("claims", &self.inner.claims)
            .finish()
    }
}

/// `seconds` since the epoch, or `None` past what the system's clock can hold (a
/// number read from a token or a file may be anything).
pub(crate) fn unix_time(seconds: u64) -> Option<SystemTime> {
    UNIX_EPOCH.checked_add(Duration::from_secs(seconds))
}

/// `duration` after `time`, or `time` itself if the clock cannot hold that.
fn later(time: SystemTime, duration: Duration) -> SystemTime {
    time.checked_add(duration).unwrap_or(time)
}

/// An identity token for a Cloud Run service, as `client.id_token()` returns it.
///
/// `Debug` and `Display` never show the token itself; [`IdToken::as_str`] does.
#[derive(Clone)]
pub struct IdToken(pub(crate) Token);

impl IdToken {
    /// The token, to put in an `Authorization: Bearer` header yourself.
    pub fn as_str(&self) -> &str {
        self.0.secret()
    }

    /// The claims read from the token (not verified: the service does that).
    pub fn claims(&self) -> &Claims {
        self.0.claims()
    }

    /// When the token stops being accepted.
    pub fn expires_at(&self) -> SystemTime {
        self.0.expires_at()
    }
}

impl fmt::Debug for IdToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("IdToken").field(&self.0).finish()
    }
}

impl fmt::Display for IdToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let claims = self.claims();
        write!(
            f,
            "<identity token for {} with audience {}>",
            claims.email.as_deref().unwrap_or("an unknown identity"),
            claims.aud.as_deref().unwrap_or("unknown"),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jwt(claims: Value) -> String {
        format!(
            "{}.{}.signature",
            URL_SAFE_NO_PAD.encode(r#"{"alg":"RS256"}"#),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        )
    }

    fn within_trust(token: &Token) -> bool {
        token.expires_at() <= SystemTime::now() + MAX_LIFETIME
    }

    #[test]
    fn extreme_claims_are_read_without_overflow_and_trusted_for_a_bounded_time() {
        let extremes = [
            serde_json::json!(u64::MAX),
            serde_json::json!(i64::MAX),
            serde_json::json!(i64::MIN),
            serde_json::json!(1e300),
            serde_json::json!(-5),
            serde_json::json!(0.5),
            serde_json::json!("abc"),
            serde_json::json!(null),
            serde_json::json!([1]),
        ];
        for exp in &extremes {
            for iat in &extremes {
                let token = Token::from_jwt(jwt(serde_json::json!({
                    "aud": "https://hello.example.com", "exp": exp, "iat": iat,
                })));
                // An odd number hides no other claim.
                assert_eq!(
                    token.claims().aud.as_deref(),
                    Some("https://hello.example.com")
                );
                assert!(within_trust(&token), "exp {exp}, iat {iat}");
            }
        }
        let read = |exp: Value| Claims::decode_unverified(&jwt(serde_json::json!({ "exp": exp })));
        assert_eq!(read(serde_json::json!(-5)).unwrap().exp, Some(0));
        assert_eq!(read(serde_json::json!(1.9)).unwrap().exp, Some(1));
        assert_eq!(read(serde_json::json!(1e300)).unwrap().exp, Some(u64::MAX));
        assert_eq!(read(serde_json::json!("1")).unwrap().exp, None);
        // Expired long ago: not fresh.
        assert!(!Token::from_jwt(jwt(serde_json::json!({ "exp": -5 }))).is_fresh());
    }

    #[test]
    fn access_token_lifetimes_are_bounded() {
        for lifetime in [
            Duration::MAX,
            Duration::from_secs(u64::MAX),
            MAX_LIFETIME * 2,
        ] {
            assert!(within_trust(&Token::from_access_token(
                "t".into(),
                lifetime
            )));
        }
        assert!(!Token::from_access_token("t".into(), Duration::ZERO).is_fresh());
    }

    #[test]
    fn expires_in_accepts_numbers_and_digit_strings_only() {
        #[derive(Deserialize, Debug)]
        struct Answer {
            #[serde(default, deserialize_with = "expires_in")]
            expires_in: Option<Duration>,
        }
        let read =
            |json: &str| serde_json::from_str::<Answer>(json).map(|answer| answer.expires_in);
        let secs = |seconds| Some(Some(Duration::from_secs(seconds)));
        assert_eq!(read(r#"{"expires_in":3599}"#).ok(), secs(3599));
        assert_eq!(read(r#"{"expires_in":"3599"}"#).ok(), secs(3599));
        assert_eq!(
            read(r#"{"expires_in":" 99999999999999999999999 "}"#).ok(),
            Some(Some(MAX_LIFETIME))
        );
        assert_eq!(read(r#"{"expires_in":12.7}"#).ok(), secs(12));
        assert_eq!(read(r#"{"expires_in":-5}"#).ok(), secs(0));
        assert_eq!(
            read(r#"{"expires_in":1e300}"#).ok(),
            Some(Some(MAX_LIFETIME))
        );
        assert_eq!(
            read(r#"{"expires_in":18446744073709551615}"#).ok(),
            Some(Some(MAX_LIFETIME))
        );
        assert_eq!(read("{}").ok(), Some(None));
        assert_eq!(read(r#"{"expires_in":null}"#).ok(), Some(None));
        for bad in [r#""abc""#, r#""-5""#, "true", "[]", "{}"] {
            let error = read(&format!(r#"{{"expires_in":{bad}}}"#)).unwrap_err();
            assert!(error.to_string().contains("expires_in"), "{bad}: {error}");
        }
    }
}
