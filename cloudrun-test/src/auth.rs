//! The identity token on a client's requests: which requests carry it (those for the
//! service's own origin only), in which header ([`TokenHeader`]), and which token (the
//! client's own copy while it is fresh, else the process-wide cache's; forgotten and
//! renewed when the service refuses it).

use std::sync::{Mutex, MutexGuard};

use reqwest::Url;
use reqwest::header::{
    AUTHORIZATION, COOKIE, HeaderMap, HeaderName, PROXY_AUTHORIZATION, WWW_AUTHENTICATE,
};

use crate::credentials::Credentials;
use crate::error::Error;
use crate::settings::TokenHeader;
use crate::token::Token;

const X_SERVERLESS_AUTHORIZATION: HeaderName =
    HeaderName::from_static("x-serverless-authorization");

impl TokenHeader {
    fn name(self) -> HeaderName {
        match self {
            TokenHeader::Authorization => AUTHORIZATION,
            TokenHeader::XServerlessAuthorization => X_SERVERLESS_AUTHORIZATION,
        }
    }
}

/// Headers that carry credentials: they never follow a redirect to another origin.
pub(crate) const CREDENTIAL_HEADERS: [HeaderName; 5] = [
    AUTHORIZATION,
    X_SERVERLESS_AUTHORIZATION,
    COOKIE,
    PROXY_AUTHORIZATION,
    WWW_AUTHENTICATE,
];

/// Same scheme, host and port: `Url::origin` without its allocations.
pub(crate) fn same_origin(a: &Url, b: &Url) -> bool {
    a.scheme() == b.scheme()
        && a.host() == b.host()
        && a.port_or_known_default() == b.port_or_known_default()
}

/// How a client authenticates to its service.
pub(crate) struct Auth {
    /// `None` when the client sends no token (a local URL and no credentials, or
    /// `without_auth`).
    credentials: Option<Credentials>,
    /// The service's URL: only its origin gets the token.
    service_url: Url,
    audience: String,
    header: TokenHeader,
    /// The last token this client got from the process-wide cache: while it is fresh,
    /// a request needs no lookup in the shared map.
    kept: Mutex<Option<Token>>,
}

impl Auth {
    pub(crate) fn new(
        credentials: Option<Credentials>,
        service_url: Url,
        audience: String,
        header: TokenHeader,
        first_token: Option<Token>,
    ) -> Auth {
        Auth {
            credentials,
            service_url,
            audience,
            header,
            kept: Mutex::new(first_token),
        }
    }

    /// The same service and header, and no token at all.
    pub(crate) fn without_token(&self) -> Auth {
        Auth::new(
            None,
            self.service_url.clone(),
            self.audience.clone(),
            self.header,
            None,
        )
    }

    pub(crate) fn credentials(&self) -> Option<&Credentials> {
        self.credentials.as_ref()
    }

    pub(crate) fn audience(&self) -> &str {
        &self.audience
    }

    /// Whether `url` is the service's origin, the only one that may see its token (and
    /// which `ClientBuilder::build` checked is https or on this machine; checked again
    /// for every hop).
    pub(crate) fn sends_token_to(&self, url: &Url) -> bool {
        self.credentials.is_some()
            && same_origin(url, &self.service_url)
            && crate::transport::allows_credentials(url)
    }

    /// The token for a request to `url`: the service's (minted if need be) when `url`
    /// may have it, as [`Auth::sends_token_to`] decides; `None` when it gets none.
    pub(crate) async fn token_for(&self, url: &Url) -> Result<Option<Token>, Error> {
        if !self.sends_token_to(url) {
            return Ok(None);
        }
        self.token().await.map(Some)
    }

    /// For transports that build their own requests (gRPC, WebSocket): puts the token
    /// for `url`, if any, in `headers`, and returns it (for the diagnosis of a refusal).
    #[cfg(any(feature = "grpc", feature = "websocket"))]
    pub(crate) async fn authorize(
        &self,
        url: &Url,
        headers: &mut HeaderMap,
    ) -> Result<Option<Token>, Error> {
        let token = self.token_for(url).await?;
        if let Some(token) = &token {
            self.attach(headers, token);
        }
        Ok(token)
    }

    /// Puts `token` in `headers`, in the chosen header.
    pub(crate) fn attach(&self, headers: &mut HeaderMap, token: &Token) {
        headers.insert(self.header.name(), token.authorization());
    }

    /// The token for the service: this client's own copy while it is fresh, else one
    /// from the process-wide cache (which mints when it has none).
    pub(crate) async fn token(&self) -> Result<Token, Error> {
        let Some(credentials) = &self.credentials else {
            return Err(Error::setting(
                format!(
                    "the client for {} has no credentials (a local URL needs none)",
                    self.service_url
                ),
                "set GOOGLE_APPLICATION_CREDENTIALS or CLOUDRUN_TEST_ID_TOKEN to send tokens to local services too",
            ));
        };
        if let Some(token) = self.fresh_token() {
            return Ok(token);
        }
        // Boxed: the cache's future is large, and every request would otherwise carry
        // (and copy) its space although a fresh token needs none of it.
        let token = Box::pin(credentials.id_token(&self.audience)).await?.0;
        *self.kept_token() = Some(token.clone());
        Ok(token)
    }

    /// After the service refused `sent`: forgets it here and in the shared caches, and
    /// gets a new one (the same text if nothing changed, e.g. within the same second).
    pub(crate) async fn renew(&self, sent: &Token) -> Result<Token, Error> {
        {
            let mut kept = self.kept_token();
            if kept.as_ref().is_some_and(|token| token.same_secret(sent)) {
                *kept = None;
            }
        }
        if let Some(credentials) = &self.credentials {
            credentials.forget_id_token(&self.audience, sent);
        }
        self.token().await
    }

    /// This client's own copy of the token, if it is fresh: no waiting.
    pub(crate) fn fresh_token(&self) -> Option<Token> {
        self.kept_token()
            .as_ref()
            .filter(|token| token.is_fresh())
            .cloned()
    }

    fn kept_token(&self) -> MutexGuard<'_, Option<Token>> {
        // The slot is only ever replaced whole: a poisoned lock still holds a valid value.
        self.kept
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_token_header_setting_is_checked() {
        assert_eq!(
            TokenHeader::parse_setting(" X-Serverless-Authorization ").unwrap(),
            TokenHeader::XServerlessAuthorization
        );
        assert_eq!(
            TokenHeader::parse_setting("authorization").unwrap(),
            TokenHeader::Authorization
        );
        let message = TokenHeader::parse_setting("bearer")
            .unwrap_err()
            .to_string();
        assert!(
            message.contains("CLOUDRUN_TEST_TOKEN_HEADER is \"bearer\""),
            "{message}"
        );
        assert!(
            message.contains("fix: set it to `authorization`"),
            "{message}"
        );
    }

    #[test]
    fn origins_compare_scheme_host_and_port() {
        let url = |text: &str| Url::parse(text).unwrap();
        assert!(same_origin(
            &url("https://a.run.app/x"),
            &url("https://a.run.app:443/y")
        ));
        assert!(!same_origin(
            &url("https://a.run.app/"),
            &url("http://a.run.app/")
        ));
        assert!(!same_origin(
            &url("https://a.run.app/"),
            &url("https://b.run.app/")
        ));
        assert!(!same_origin(
            &url("http://127.0.0.1:1/"),
            &url("http://127.0.0.1:2/")
        ));
    }
}
