//! The front's proxy to a real upstream, as Cloud Run forwards to its container:
//! the request body streams up, the answer streams back frame by frame (trailers
//! included, for gRPC), and the service's request timeout bounds the whole exchange.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::Request;
use axum::http::{StatusCode, Version, header};
use axum::response::{IntoResponse, Response};
use http_body_util::{LengthLimitError, Limited};
use sync_wrapper::SyncWrapper;

use super::forward;
use crate::services::Service;
use crate::state::State;

/// Cloud Run's size limit for requests over HTTP/1 (HTTP/2 has none).
const MAX_HTTP1_REQUEST_BODY: usize = 32 * 1024 * 1024;

/// The client for upstreams (HTTP/1, or h2c prior knowledge for services declared
/// HTTP/2), built on first use. Redirects pass through to the caller, as a proxy's
/// should; proxies from the environment are not used (upstreams are usually on
/// localhost). No client-wide timeout: each request carries its service's.
pub(crate) fn client(state: &State, http2: bool) -> Result<&reqwest::Client, &str> {
    let cell = match http2 {
        true => &state.upstream_h2_client,
        false => &state.upstream_client,
    };
    let client = cell.get_or_init(|| {
        let builder = reqwest::Client::builder()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(Duration::from_secs(5));
        let builder = match http2 {
            true => builder.http2_prior_knowledge(),
            false => builder.http1_only(),
        };
        builder
            .build()
            .map_err(|error| format!("building the HTTP client for upstreams failed: {error}"))
    });
    client.as_ref().map_err(String::as_str)
}

/// [`client`] from a request handler: built already (by the warm-up thread) in all
/// but the first moments, else built without stalling the runtime's other tasks.
pub(crate) fn client_now(state: &State, http2: bool) -> Result<&reqwest::Client, &str> {
    let built = match http2 {
        true => state.upstream_h2_client.get(),
        false => state.upstream_client.get(),
    };
    match built {
        Some(client) => client.as_ref().map_err(String::as_str),
        None => tokio::task::block_in_place(|| client(state, http2)),
    }
}

/// A handler's answer when the upstream client could not be built: a 502 saying why.
pub(crate) fn no_client(error: &str) -> Response {
    (
        StatusCode::BAD_GATEWAY,
        format!("cloudrun-test emulator: {error}\n"),
    )
        .into_response()
}

/// `upstream`'s URL for `request`: its path joined with the request's path and query.
pub(crate) fn target(upstream: &reqwest::Url, request: &Request) -> reqwest::Url {
    let mut url = upstream.clone();
    url.set_path(&format!(
        "{}{}",
        upstream.path().trim_end_matches('/'),
        request.uri().path()
    ));
    url.set_query(request.uri().query());
    url
}

/// Forwards the request (headers already rewritten by `forward`) and streams the
/// answer back.
pub(crate) async fn proxy(
    state: &State,
    service: &Service,
    upstream: &reqwest::Url,
    request: Request,
) -> Response {
    let url = target(upstream, &request);
    let http1 = request.version() <= Version::HTTP_11;
    let too_large = || {
        (
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "cloudrun-test emulator: request body too large ({} MiB limit for HTTP/1)\n",
                MAX_HTTP1_REQUEST_BODY >> 20
            ),
        )
            .into_response()
    };
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok()?.parse::<u64>().ok());
    if http1 && declared.is_some_and(|length| length > MAX_HTTP1_REQUEST_BODY as u64) {
        return too_large();
    }
    let (parts, body) = request.into_parts();
    let body = match http1 {
        true => reqwest::Body::wrap(UpstreamBody::new(Limited::new(
            body,
            MAX_HTTP1_REQUEST_BODY,
        ))),
        false => reqwest::Body::wrap(UpstreamBody::new(body)),
    };
    let mut headers = parts.headers;
    // reqwest sets these for the upstream connection.
    headers.remove(header::HOST);
    if declared.is_none() {
        headers.remove(header::CONTENT_LENGTH);
    }
    let http = match client_now(state, service.use_http2) {
        Ok(http) => http,
        Err(error) => return no_client(error),
    };
    let answer = http
        .request(parts.method, url)
        .headers(headers)
        .body(body)
        .timeout(service.timeout)
        .send()
        .await;
    match answer {
        Ok(answer) => stream_back(answer),
        Err(error) if caused_by::<LengthLimitError>(&error) => too_large(),
        Err(error) => upstream_failure(upstream, &error),
    }
}

/// The upstream's answer as it arrives, frame by frame, trailers included. Past the
/// timeout the body ends with an error, and hyper resets the stream or closes the
/// connection, as Cloud Run closes it.
pub(crate) fn stream_back(answer: reqwest::Response) -> Response {
    let mut answer: axum::http::Response<reqwest::Body> = answer.into();
    forward::strip_hop_by_hop(answer.headers_mut());
    answer.map(Body::new)
}

fn caused_by<E: std::error::Error + 'static>(error: &reqwest::Error) -> bool {
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        if cause.is::<E>() {
            return true;
        }
        source = cause.source();
    }
    false
}

/// The client's body as reqwest takes it: reqwest wants `Sync`, axum's body is not;
/// only `poll_frame` ever touches it, through `&mut`.
struct UpstreamBody<B>(SyncWrapper<B>);

impl<B> UpstreamBody<B> {
    fn new(body: B) -> Self {
        UpstreamBody(SyncWrapper::new(body))
    }
}

impl<B> http_body::Body for UpstreamBody<B>
where
    B: http_body::Body<Data = Bytes> + Unpin,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        Pin::new(self.get_mut().0.get_mut())
            .poll_frame(cx)
            .map_err(Into::into)
    }
}

pub(crate) fn upstream_failure(upstream: &reqwest::Url, error: &reqwest::Error) -> Response {
    tracing::warn!(%upstream, %error, "upstream request failed");
    let status = if error.is_timeout() {
        StatusCode::GATEWAY_TIMEOUT
    } else {
        StatusCode::BAD_GATEWAY
    };
    // reqwest's error names the URL; the source chain says why (refused, reset, ...).
    let mut message =
        format!("cloudrun-test emulator: the upstream {upstream} did not answer: {error}");
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        message.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    message.push('\n');
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        message,
    )
        .into_response()
}
