//! Waiting for a service that is deploying or scaling from zero:
//! `ClientBuilder::wait_until_ready` and `Client::wait_until_ready`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::StatusCode;

use crate::error::Error;
use crate::retry::RetryPolicy;
use crate::send::{self, Sender};

/// Waits until `path` answers something else than 429, 502, 503 or 504 (or a failed
/// connection), polling with backoff, for at most `limit`.
pub(crate) async fn wait_until_ready(
    sender: &Arc<Sender>,
    path: &str,
    limit: Duration,
) -> Result<(), Error> {
    let started = Instant::now();
    let url = sender.target.url.join(path).map_err(|error| {
        Error::setting(
            format!("the readiness path {path:?} is not a path ({error})"),
            "give a path such as \"/\" or \"/healthz\"",
        )
    })?;
    let not_ready = [
        StatusCode::TOO_MANY_REQUESTS,
        StatusCode::BAD_GATEWAY,
        StatusCode::SERVICE_UNAVAILABLE,
        StatusCode::GATEWAY_TIMEOUT,
    ];
    let backoff =
        RetryPolicy::default().backoff(Duration::from_millis(100), Duration::from_secs(2));
    let mut attempt = 0;
    loop {
        attempt += 1;
        let left = limit.saturating_sub(started.elapsed());
        let request = sender
            .http
            .get(url.clone())
            .timeout(left.max(Duration::from_millis(1)))
            .build()
            .map_err(|error| Error::internal(error.to_string()))?;
        // Redirects followed, no retries: the polling here is the retry.
        let hop = send::follow(sender, request).await?;
        let last = match &hop.outcome {
            Ok(response) if !not_ready.contains(&response.status()) => {
                tracing::debug!(%url, status = %response.status(), attempt, "the service is ready");
                return Ok(());
            }
            Ok(response) => format!("HTTP {}", response.status()),
            Err(error) => crate::error::describe_http_error(error),
        };
        let delay = backoff.delay(attempt, None);
        if started.elapsed() + delay >= limit {
            let error = Error::not_ready(
                &url,
                format!("{:.1}s", started.elapsed().as_secs_f64()),
                last,
            );
            // The last answer's status, if the service answered at all.
            return Err(match &hop.outcome {
                Ok(response) => error.with_status(response.status()),
                Err(_) => error,
            });
        }
        tokio::time::sleep(delay).await;
    }
}
