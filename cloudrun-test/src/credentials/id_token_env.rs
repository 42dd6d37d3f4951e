//! `CLOUDRUN_TEST_ID_TOKEN`: a token minted elsewhere (e.g. by a CI step), used as is.

use super::{BoxFuture, CredentialSource};
use crate::error::Error;
use crate::token::Token;

pub(crate) struct StaticIdToken {
    token: Token,
}

impl StaticIdToken {
    pub(crate) fn new(secret: String) -> StaticIdToken {
        StaticIdToken {
            token: Token::from_jwt(secret),
        }
    }
}

impl CredentialSource for StaticIdToken {
    fn describe(&self) -> String {
        "the identity token in CLOUDRUN_TEST_ID_TOKEN".into()
    }

    fn identity(&self) -> Option<String> {
        self.token.claims().email.clone()
    }

    fn fingerprint(&self) -> String {
        // The token's own claims identify it without revealing it.
        let claims = self.token.claims();
        format!(
            "static:{}:{}:{}",
            claims.email.as_deref().unwrap_or("-"),
            claims.aud.as_deref().unwrap_or("-"),
            claims.iat.unwrap_or(0)
        )
    }

    fn worth_caching_on_disk(&self) -> bool {
        false
    }

    fn mint_id_token<'a>(
        &'a self,
        _http: &'a reqwest::Client,
        _audience: &'a str,
    ) -> BoxFuture<'a, Result<Token, Error>> {
        Box::pin(async move { Ok(self.token.clone()) })
    }

    fn mint_access_token<'a>(
        &'a self,
        _http: &'a reqwest::Client,
    ) -> BoxFuture<'a, Result<Token, Error>> {
        Box::pin(async move {
            Err(Error::Setting {
                problem: "CLOUDRUN_TEST_ID_TOKEN gives an identity token only, and looking a \
                          service up in the Cloud Run Admin API needs an access token"
                    .into(),
                fix: "give the service's URL: `url = \"https://...\"` in the attribute, or \
                      CLOUDRUN_TEST_URL_<SERVICE>"
                    .into(),
            })
        })
    }
}
