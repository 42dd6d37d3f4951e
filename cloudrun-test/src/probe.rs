//! Sending a request once to see what its answer means: `RequestBuilder::probe`, what
//! `cloudrun-test doctor` checks a setup with.

use std::sync::Arc;

use reqwest::{Request, Response, Url};

use crate::credentials::Credentials;
use crate::diagnose::{NoAnswer, Place, Sent, Verdict};
use crate::error::Error;
use crate::send::{self, Sender};
use crate::token::IdToken;

/// What one request showed, sent once as it was built: see
/// [`RequestBuilder::probe`](crate::RequestBuilder::probe).
#[derive(Debug)]
pub enum Probe {
    /// An answer came. The verdict says whether Cloud Run let the request through and
    /// the service did not fail, and if not, why and the fix.
    #[non_exhaustive]
    Answered {
        /// The answer, its body unread.
        response: Response,
        /// What the answer means: [`Verdict::ok`], else its cause and fix.
        verdict: Verdict,
    },
    /// No answer came: why, by the client's rules; reqwest's error; and where the
    /// service lives, as far as the client knows (for commands that check it).
    #[non_exhaustive]
    Unanswered {
        /// Why no answer came (DNS, refused connection, TLS, timeout...).
        cause: NoAnswer,
        /// reqwest's error, with its source chain.
        error: reqwest::Error,
        /// Where the service lives, as far as the client knows.
        place: Place,
    },
}

impl Probe {
    /// Whether an answer came, got past Cloud Run, and the service did not fail.
    pub fn ok(&self) -> bool {
        matches!(self, Probe::Answered { verdict, .. } if verdict.ok())
    }
}

/// Sends `request` once, with the token if it goes to the service's origin, and reads
/// what came back.
pub(crate) async fn probe(
    sender: Arc<Sender>,
    request: Result<(Request, Url), Error>,
) -> Result<Probe, Error> {
    let (request, url) = request?;
    let hop = send::send_hop(&sender, request, url).await?;
    let place = Place::of(&sender.target);
    match hop.outcome {
        Ok(response) => {
            let token = hop.token.map(IdToken);
            let identity = sender.auth.credentials().and_then(Credentials::identity);
            let sent = Sent::by_client(
                &sender.target,
                &place,
                &hop.url,
                token.as_ref(),
                identity.as_deref(),
            );
            let verdict = Verdict::explain(response.status().as_u16(), &sent);
            Ok(Probe::Answered { response, verdict })
        }
        Err(error) => Ok(Probe::Unanswered {
            cause: NoAnswer::of(&error),
            error,
            place,
        }),
    }
}
