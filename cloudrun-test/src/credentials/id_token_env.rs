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
        Box::pin(async move {
            // No identity token has them, and no header (nor one line of output) can carry them.
            if !self
                .token
                .secret()
                .bytes()
                .all(|byte| byte.is_ascii_graphic())
            {
                return Err(Error::setting(
                    "CLOUDRUN_TEST_ID_TOKEN holds spaces or control characters (a line \
                              break?), which no identity token has",
                    "set it to the token alone, e.g. \
                          CLOUDRUN_TEST_ID_TOKEN=\"$(gcloud auth print-identity-token)\"",
                ));
            }
            Ok(self.token.clone())
        })
    }

    fn mint_access_token<'a>(
        &'a self,
        _http: &'a reqwest::Client,
    ) -> BoxFuture<'a, Result<Token, Error>> {
        Box::pin(async move {
            Err(Error::setting(
                "CLOUDRUN_TEST_ID_TOKEN gives an identity token only, and looking a \
                          service up in the Cloud Run Admin API needs an access token",
                "give the service's URL: `url = \"https://...\"` in the attribute, or \
                      CLOUDRUN_TEST_URL_<SERVICE>",
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_token_with_a_line_break_is_refused_naming_the_variable() {
        let http = reqwest::Client::new();
        let source = StaticIdToken::new("eyJ.first\nsecond".into());
        let error = source.mint_id_token(&http, "aud").await.unwrap_err();
        let text = error.to_string();
        assert!(
            text.contains("CLOUDRUN_TEST_ID_TOKEN") && text.contains("fix:"),
            "{text}"
        );
        let fine = StaticIdToken::new("eyJ.a.b".into());
        assert_eq!(
            fine.mint_id_token(&http, "aud").await.unwrap().secret(),
            "eyJ.a.b"
        );
    }
}
