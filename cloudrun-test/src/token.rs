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
    /// When to stop using the token: a quarter of its lifetime (at most five minutes)
    /// before it expires, so a request never leaves with a token about to lapse.
    refresh_at: SystemTime,
    claims: Claims,
}

/// The claims of an identity token that we use for diagnosis. Decoded without
/// verifying the signature: the service verifies, we only explain.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
pub struct Claims {
    #[serde(default, deserialize_with = "audience_claim")]
    pub aud: Option<String>,
    #[serde(default)]
    pub email: Option<String>,
    #[serde(default)]
    pub sub: Option<String>,
    #[serde(default)]
    pub iss: Option<String>,
    #[serde(default)]
    pub iat: Option<u64>,
    #[serde(default)]
    pub exp: Option<u64>,
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
    /// An identity token (a JWT): its expiry comes from its `exp` claim.
    pub(crate) fn from_jwt(secret: String) -> Token {
        let claims = Claims::decode_unverified(&secret).unwrap_or_default();
        let now = SystemTime::now();
        let issued_at = claims.iat.map(unix_time).unwrap_or(now);
        // A token we cannot read an expiry from is used for an hour, Google's lifetime.
        let expires_at = claims
            .exp
            .map(unix_time)
            .unwrap_or(now + Duration::from_secs(3600));
        Token::new(secret, issued_at, expires_at, claims)
    }

    /// An opaque access token with the lifetime its issuer stated.
    pub(crate) fn from_access_token(secret: String, expires_in: Duration) -> Token {
        let now = SystemTime::now();
        Token::new(secret, now, now + expires_in, Claims::default())
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
        let margin = (lifetime / 4).min(Duration::from_secs(300));
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
    /// their lifetime (at most five minutes) before they expire, so a request never
    /// leaves with a token about to lapse.
    pub(crate) fn is_fresh(&self) -> bool {
        SystemTime::now() < self.inner.refresh_at
    }

    pub(crate) fn same_secret(&self, other: &Token) -> bool {
        self.inner.secret == other.inner.secret
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

fn unix_time(seconds: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(seconds)
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
