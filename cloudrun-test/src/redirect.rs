//! Following redirects as browsers and reqwest do, but with the token's rule: reqwest
//! drops `Authorization` on a cross-host redirect yet would carry a custom header such
//! as `X-Serverless-Authorization` anywhere. Here a hop to another origin loses every
//! credential header, the application's own included; the token itself is put on a
//! hop only if it is the service's origin ([`crate::auth::Auth::sends_token_to`]).

use reqwest::header::{
    CONTENT_ENCODING, CONTENT_LENGTH, CONTENT_TYPE, LOCATION, TRANSFER_ENCODING,
};
use reqwest::{Method, Request, Response, StatusCode, Url};

use crate::auth::{CREDENTIAL_HEADERS, same_origin};

/// reqwest's default limit, kept.
pub(crate) const MAX_REDIRECTS: usize = 10;

/// Where `response`, the answer to a request for `from`, redirects to, if it is a
/// redirect to follow (301, 302, 303, 307 or 308 with a usable `Location`).
pub(crate) fn location(response: &Response, from: &Url) -> Option<Url> {
    let status = response.status();
    if !matches!(
        status,
        StatusCode::MOVED_PERMANENTLY
            | StatusCode::FOUND
            | StatusCode::SEE_OTHER
            | StatusCode::TEMPORARY_REDIRECT
            | StatusCode::PERMANENT_REDIRECT
    ) {
        // 300, 304, 305...: not a redirect to follow.
        return None;
    }
    let location = response.headers().get(LOCATION)?.to_str().ok()?;
    from.join(location).ok()
}

/// Turns `next`, a copy of the request that was answered `status` at `from`, into the
/// request for `to`.
pub(crate) fn prepare(next: &mut Request, status: StatusCode, from: &Url, to: &Url) {
    if matches!(
        status,
        StatusCode::MOVED_PERMANENTLY | StatusCode::FOUND | StatusCode::SEE_OTHER
    ) {
        // As browsers and reqwest do: the next request is a GET without a body.
        if next.method() != Method::HEAD {
            *next.method_mut() = Method::GET;
        }
        *next.body_mut() = None;
        for name in [
            CONTENT_TYPE,
            CONTENT_LENGTH,
            CONTENT_ENCODING,
            TRANSFER_ENCODING,
        ] {
            next.headers_mut().remove(name);
        }
    }
    if !same_origin(from, to) {
        for name in &CREDENTIAL_HEADERS {
            next.headers_mut().remove(name);
        }
    }
    tracing::debug!(%from, %to, %status, "following a redirect");
    *next.url_mut() = to.clone();
}
