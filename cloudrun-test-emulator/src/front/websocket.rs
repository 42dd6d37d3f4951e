//! WebSocket upgrades passed through to the upstream, as Cloud Run passes them
//! (HTTP/1.1 only): the upgrade request goes up, and once the upstream switched
//! protocols both connections are spliced until either side closes or the service's
//! request timeout passes, which bounds a WebSocket session on Cloud Run too.

use axum::extract::Request;
use axum::http::{StatusCode, Version};
use axum::response::{IntoResponse, Response};
use tokio::time::Instant;

use super::upstream::{client_now, no_client, stream_back, target, upstream_failure};
use crate::services::Service;
use crate::state::State;

/// Forwards the upgrade request (headers already rewritten by `forward`, keeping
/// `Connection: upgrade` and `Upgrade`) and splices the two connections on 101.
pub(crate) async fn pass_through(
    state: &State,
    service: &Service,
    upstream: &reqwest::Url,
    mut request: Request,
) -> Response {
    let deadline = Instant::now() + service.timeout;
    let Some(client_side) = request
        .extensions_mut()
        .remove::<hyper::upgrade::OnUpgrade>()
    else {
        return (
            StatusCode::BAD_REQUEST,
            "cloudrun-test emulator: WebSockets need HTTP/1.1\n",
        )
            .into_response();
    };
    let url = target(upstream, &request);
    let http = match client_now(state, false) {
        Ok(http) => http,
        Err(error) => return no_client(error),
    };
    let (parts, _) = request.into_parts();
    let mut headers = parts.headers;
    headers.remove(axum::http::header::HOST);
    let answer = http
        .request(parts.method, url)
        .version(Version::HTTP_11)
        .headers(headers)
        .timeout(service.timeout)
        .send()
        .await;
    let answer = match answer {
        Ok(answer) => answer,
        Err(error) => return upstream_failure(upstream, &error),
    };
    if answer.status() != StatusCode::SWITCHING_PROTOCOLS {
        return stream_back(answer);
    }
    let mut switched = Response::new(axum::body::Body::empty());
    *switched.status_mut() = answer.status();
    *switched.headers_mut() = answer.headers().clone();
    let name = service.name.clone();
    tokio::spawn(async move {
        let splice = async {
            let mut upstream_side = answer.upgrade().await.map_err(std::io::Error::other)?;
            let client_side = client_side.await.map_err(std::io::Error::other)?;
            let mut client_side = hyper_util::rt::TokioIo::new(client_side);
            tokio::io::copy_bidirectional(&mut client_side, &mut upstream_side).await
        };
        match tokio::time::timeout_at(deadline, splice).await {
            Ok(Ok(_)) => {}
            Ok(Err(error)) => tracing::debug!(service = name, %error, "WebSocket splice ended"),
            Err(_) => tracing::info!(service = name, "WebSocket closed at the request timeout"),
        }
    });
    switched
}
