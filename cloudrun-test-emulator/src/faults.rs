//! Fault injection: what goes wrong with Google's endpoints and Cloud Run, on demand.
//!
//! Faults are set while the emulator runs, through [`Emulator`] methods or
//! [`Emulator::inject`] with a [`Fault`] (which also parses from text, for command
//! lines), and apply from the next request on:
//!
//! - the token endpoint answers an HTTP error N times, answers late, or hangs
//!   (holds every request until released);
//! - the Admin API answers an HTTP error N times;
//! - a service's front answers an HTTP status (401, 429, 503...) N times before
//!   looking at the request, resets the next N connections, or delays its next
//!   request (a slow cold start);
//! - the signing key rotates: ID tokens issued before no longer verify, so the
//!   front answers them with 401.
//!
//! Every injected fault counts in [`crate::Stats::faults_injected`].

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use tokio::sync::watch;

use crate::state::{Service, State, lock};
use crate::{Emulator, Error};

/// One fault to inject; see the [module documentation](self) and [`Emulator::inject`].
///
/// As text (`FromStr`, `Display`), for command-line flags:
///
/// | text | fault |
/// |---|---|
/// | `token-error=503x2` | the token endpoint answers 503 twice (`=503`: once) |
/// | `token-delay=2s` | every token answer comes 2 s late (`0s` ends it) |
/// | `token-hang` | token requests hang until [`Emulator::hang_token_requests`]`(false)` or [`Emulator::clear_faults`] |
/// | `admin-error=503x2` | the Admin API answers 503 twice (`=503`: once) |
/// | `service-error=hello:503x2` | service `hello` answers 503 twice |
/// | `connection-reset=hello:x2` | the next 2 connections to `hello` are reset (`hello`: once) |
/// | `cold-start=hello:3s` | `hello`'s next request waits 3 s |
/// | `rotate-key` | the ID token signing key is replaced |
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Fault {
    TokenErrors {
        status: u16,
        times: u32,
    },
    TokenDelay(Duration),
    TokenHang,
    AdminErrors {
        status: u16,
        times: u32,
    },
    ServiceErrors {
        service: String,
        status: u16,
        times: u32,
    },
    ConnectionResets {
        service: String,
        times: u32,
    },
    ColdStart {
        service: String,
        delay: Duration,
    },
    RotateSigningKey,
}

/// The faults in force; lives in [`State`].
pub(crate) struct Faults {
    inner: Mutex<Pending>,
    /// `true` while token requests hang; they go on when it turns `false`.
    hang: watch::Sender<bool>,
}

#[derive(Default)]
struct Pending {
    token_errors: Countdown,
    token_delay: Duration,
    admin_errors: Countdown,
    services: HashMap<String, ServiceFaults>,
}

#[derive(Default)]
struct ServiceFaults {
    errors: Countdown,
    resets: u32,
    cold_start: Option<Duration>,
}

/// "Answer `status` for the next `times` requests".
#[derive(Default)]
struct Countdown {
    status: u16,
    times: u32,
}

impl Countdown {
    fn take(&mut self) -> Option<StatusCode> {
        if self.times == 0 {
            return None;
        }
        self.times -= 1;
        StatusCode::from_u16(self.status).ok()
    }
}

impl Default for Faults {
    fn default() -> Self {
        Faults {
            inner: Mutex::default(),
            hang: watch::Sender::new(false),
        }
    }
}

impl Faults {
    fn clear(&self) {
        *lock(&self.inner) = Pending::default();
        self.hang.send_replace(false);
    }

    fn take_reset(&self, service: &str) -> bool {
        let mut pending = lock(&self.inner);
        match pending.services.get_mut(service) {
            Some(faults) if faults.resets > 0 => {
                faults.resets -= 1;
                true
            }
            _ => false,
        }
    }
}

/// Called first by every token endpoint: hangs, waits or answers an error as the
/// faults say; `None` lets the request through.
pub(crate) async fn token_request(state: &State) -> Option<Response> {
    let faults = &state.faults;
    let mut hang = faults.hang.subscribe();
    if *hang.borrow_and_update() {
        state.count(|stats| stats.faults_injected += 1);
        tracing::info!("token request held (injected fault: token-hang)");
        // Ends when released, or when the emulator (the sender) goes away.
        let _ = hang.wait_for(|hanging| !hanging).await;
    }
    let (delay, error) = {
        let mut pending = lock(&faults.inner);
        (pending.token_delay, pending.token_errors.take())
    };
    if !delay.is_zero() {
        state.count(|stats| stats.faults_injected += 1);
        tokio::time::sleep(delay).await;
    }
    let status = error?;
    state.count(|stats| stats.faults_injected += 1);
    tracing::info!(%status, "token request failed (injected fault: token-error)");
    let error = if status.is_server_error() {
        "internal_failure"
    } else {
        "invalid_request"
    };
    let body = json!({
        "error": error,
        "error_description": format!("injected fault: HTTP {status} (cloudrun-test emulator)"),
    });
    Some((status, Json(body)).into_response())
}

/// Called first by the Admin API: answers an injected error as Google APIs do, if one
/// is due; `None` lets the request through.
pub(crate) fn admin_request(state: &State) -> Option<Response> {
    let status = lock(&state.faults.inner).admin_errors.take()?;
    state.count(|stats| stats.faults_injected += 1);
    tracing::info!(%status, "Admin API request failed (injected fault: admin-error)");
    let body = json!({
        "error": {
            "code": status.as_u16(),
            "message": format!("injected fault: HTTP {status} (cloudrun-test emulator)"),
            "status": if status.is_server_error() { "UNAVAILABLE" } else { "FAILED_PRECONDITION" },
        }
    });
    Some((status, Json(body)).into_response())
}

/// Called first by a service's front: waits out a cold start, then answers an
/// injected status if one is due; `None` lets the request through.
pub(crate) async fn front_request(
    state: &State,
    service: &Service,
    path: &str,
) -> Option<Response> {
    let (cold_start, status) = {
        let mut pending = lock(&state.faults.inner);
        let faults = pending.services.get_mut(&service.name)?;
        (faults.cold_start.take(), faults.errors.take())
    };
    if let Some(delay) = cold_start {
        state.count(|stats| stats.faults_injected += 1);
        tracing::info!(
            service = service.name,
            ?delay,
            "cold start (injected fault)"
        );
        tokio::time::sleep(delay).await;
    }
    let status = status?;
    state.count(|stats| stats.faults_injected += 1);
    tracing::info!(service = service.name, path, %status, "injected fault: service-error");
    Some(fault_page(status, path))
}

/// What Cloud Run's front end answers with `status`.
fn fault_page(status: StatusCode, path: &str) -> Response {
    if matches!(status, StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN) {
        return crate::front::error_page(status, path, "injected fault");
    }
    let reason = status.canonical_reason().unwrap_or("Error");
    let detail = match status {
        StatusCode::TOO_MANY_REQUESTS => {
            "The request was aborted because there was no available instance."
        }
        StatusCode::SERVICE_UNAVAILABLE => {
            "The service you requested is not available yet. Please try again in 30 seconds."
        }
        _ => "The server encountered an error and could not complete your request.",
    };
    let body = format!(
        "\n<html><head>\n<meta http-equiv=\"content-type\" content=\"text/html;charset=utf-8\">\n\
         <title>{} {reason}</title>\n</head>\n<body text=#000000 bgcolor=#ffffff>\n\
         <h1>Error: {reason}</h1>\n<h2>{detail}</h2>\n<h2></h2>\n</body></html>\n",
        status.as_u16()
    );
    let mut response = (status, body).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=UTF-8"),
    );
    headers.insert(
        "x-cloudrun-test-emulator-reason",
        HeaderValue::from_static("injected fault"),
    );
    response
}

/// A listener that resets connections while a `connection-reset` fault is due for
/// its service: accepted, then closed with a TCP reset before any answer, as when
/// an instance goes away during a cold start.
pub(crate) struct FaultyListener {
    inner: tokio::net::TcpListener,
    state: Arc<State>,
    /// The service whose front this is; `None` for the Google endpoints.
    service: Option<usize>,
}

impl FaultyListener {
    pub(crate) fn new(
        inner: tokio::net::TcpListener,
        state: Arc<State>,
        service: Option<usize>,
    ) -> Self {
        FaultyListener {
            inner,
            state,
            service,
        }
    }
}

impl axum::serve::Listener for FaultyListener {
    type Io = tokio::net::TcpStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let (stream, peer) = axum::serve::Listener::accept(&mut self.inner).await;
            let service = self.service.map(|index| &self.state.services[index]);
            match service {
                Some(service) if self.state.faults.take_reset(&service.name) => {
                    self.state.count(|stats| stats.faults_injected += 1);
                    tracing::info!(service = service.name, %peer, "connection reset (injected fault)");
                    // SO_LINGER 0: close() sends RST instead of FIN.
                    let _ = stream.set_zero_linger();
                    drop(stream);
                }
                _ => return (stream, peer),
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.inner.local_addr()
    }
}

impl Emulator {
    /// Injects `fault`; see [`Fault`]. Fails for an unknown service or an HTTP status
    /// outside 100–599.
    pub fn inject(&self, fault: Fault) -> Result<(), Error> {
        let state = &self.state;
        let known = |service: &str| {
            if state.service(service).is_some() {
                Ok(())
            } else {
                let names: Vec<&str> = state.services.iter().map(|s| s.name.as_str()).collect();
                Err(Error::Config(format!(
                    "no service {service:?} to inject a fault into; services: {}",
                    if names.is_empty() {
                        "none".to_owned()
                    } else {
                        names.join(", ")
                    }
                )))
            }
        };
        let valid = |status: u16| {
            if (100..=599).contains(&status) {
                Ok(())
            } else {
                Err(Error::Config(format!(
                    "{status} is not an HTTP status (100-599)"
                )))
            }
        };
        tracing::info!(%fault, "fault injected");
        match fault {
            Fault::TokenErrors { status, times } => {
                valid(status)?;
                lock(&state.faults.inner).token_errors = Countdown { status, times };
            }
            Fault::TokenDelay(delay) => lock(&state.faults.inner).token_delay = delay,
            Fault::TokenHang => {
                state.faults.hang.send_replace(true);
            }
            Fault::AdminErrors { status, times } => {
                valid(status)?;
                lock(&state.faults.inner).admin_errors = Countdown { status, times };
            }
            Fault::ServiceErrors {
                service,
                status,
                times,
            } => {
                known(&service)?;
                valid(status)?;
                lock(&state.faults.inner)
                    .services
                    .entry(service)
                    .or_default()
                    .errors = Countdown { status, times };
            }
            Fault::ConnectionResets { service, times } => {
                known(&service)?;
                lock(&state.faults.inner)
                    .services
                    .entry(service)
                    .or_default()
                    .resets = times;
            }
            Fault::ColdStart { service, delay } => {
                known(&service)?;
                lock(&state.faults.inner)
                    .services
                    .entry(service)
                    .or_default()
                    .cold_start = Some(delay);
            }
            Fault::RotateSigningKey => {
                match state.keys.rotate() {
                    Ok(Some(key)) => tracing::info!(kid = key.kid(), "signing key rotated"),
                    Ok(None) => {
                        return Err(Error::Config(format!(
                            "the signing key was rotated {} times already; that is the limit",
                            crate::keys::MAX_ROTATIONS
                        )));
                    }
                    Err(error) => return Err(Error::Config(error.to_string())),
                }
                state.count(|stats| stats.faults_injected += 1);
            }
        }
        Ok(())
    }

    /// The token endpoint answers the next `times` token requests with `status`
    /// (e.g. 503) and a JSON OAuth error.
    ///
    /// # Panics
    /// If `status` is not an HTTP status.
    pub fn fail_token_requests(&self, times: u32, status: u16) {
        self.inject_or_panic(Fault::TokenErrors { status, times });
    }

    /// The Admin API answers the next `times` requests with `status` (e.g. 503).
    ///
    /// # Panics
    /// If `status` is not an HTTP status.
    pub fn fail_admin_requests(&self, times: u32, status: u16) {
        self.inject_or_panic(Fault::AdminErrors { status, times });
    }

    /// Every token answer comes `delay` late, until set back to zero.
    pub fn delay_token_requests(&self, delay: Duration) {
        self.inject_or_panic(Fault::TokenDelay(delay));
    }

    /// While `true`, token requests get no answer; set `false` to let the held ones go on.
    pub fn hang_token_requests(&self, hang: bool) {
        if hang {
            self.inject_or_panic(Fault::TokenHang);
        } else {
            self.state.faults.hang.send_replace(false);
        }
    }

    /// Service `service` answers its next `times` requests with `status` (401, 429,
    /// 503...), as Cloud Run's front end does, before checking the token.
    ///
    /// # Panics
    /// If there is no such service or `status` is not an HTTP status.
    pub fn fail_service_requests(&self, service: &str, times: u32, status: u16) {
        self.inject_or_panic(Fault::ServiceErrors {
            service: service.to_owned(),
            status,
            times,
        });
    }

    /// The next `times` connections to `service` are reset before any answer.
    ///
    /// # Panics
    /// If there is no such service.
    pub fn reset_service_connections(&self, service: &str, times: u32) {
        self.inject_or_panic(Fault::ConnectionResets {
            service: service.to_owned(),
            times,
        });
    }

    /// The next request to `service` waits `delay` first, as after a cold start.
    ///
    /// # Panics
    /// If there is no such service.
    pub fn cold_start(&self, service: &str, delay: Duration) {
        self.inject_or_panic(Fault::ColdStart {
            service: service.to_owned(),
            delay,
        });
    }

    /// Replaces the key that signs ID tokens: tokens issued so far are answered
    /// with 401 by every front, new ones are signed with the new key.
    ///
    /// # Panics
    /// After 32 rotations.
    pub fn rotate_signing_key(&self) {
        self.inject_or_panic(Fault::RotateSigningKey);
    }

    /// Ends every fault (a rotated key stays rotated) and releases held token requests.
    pub fn clear_faults(&self) {
        self.state.faults.clear();
    }

    fn inject_or_panic(&self, fault: Fault) {
        if let Err(error) = self.inject(fault) {
            panic!("{error}");
        }
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fault::TokenErrors { status, times } => write!(f, "token-error={status}x{times}"),
            Fault::TokenDelay(delay) => write!(f, "token-delay={}ms", delay.as_millis()),
            Fault::TokenHang => f.write_str("token-hang"),
            Fault::AdminErrors { status, times } => write!(f, "admin-error={status}x{times}"),
            Fault::ServiceErrors {
                service,
                status,
                times,
            } => write!(f, "service-error={service}:{status}x{times}"),
            Fault::ConnectionResets { service, times } => {
                write!(f, "connection-reset={service}:x{times}")
            }
            Fault::ColdStart { service, delay } => {
                write!(f, "cold-start={service}:{}ms", delay.as_millis())
            }
            Fault::RotateSigningKey => f.write_str("rotate-key"),
        }
    }
}

impl FromStr for Fault {
    type Err = Error;

    fn from_str(text: &str) -> Result<Self, Error> {
        let bad = |why: &str| {
            Error::Config(format!(
                "fault {text:?}: {why}; write e.g. token-error=503x2, token-delay=2s, token-hang, \
                 admin-error=503x2, service-error=hello:503x2, connection-reset=hello:x2, cold-start=hello:3s, rotate-key"
            ))
        };
        let (kind, value) = match text.trim().split_once('=') {
            Some((kind, value)) => (kind.trim(), Some(value.trim())),
            None => (text.trim(), None),
        };
        let has_value = value.is_some();
        let value = || value.ok_or_else(|| bad("a value is missing after `=`"));
        let service_and = |value: &str| -> Result<(String, String), Error> {
            let (service, rest) = value.split_once(':').unwrap_or((value, ""));
            if service.is_empty() {
                return Err(bad("the service name is missing"));
            }
            Ok((service.to_owned(), rest.to_owned()))
        };
        let status_times = |text: &str| -> Result<(u16, u32), Error> {
            let (status, times) = text.split_once('x').unwrap_or((text, "1"));
            let status = status
                .parse()
                .map_err(|_| bad("the status is not a number"))?;
            let times = times
                .parse()
                .map_err(|_| bad("the count after `x` is not a number"))?;
            Ok((status, times))
        };
        let duration =
            |text: &str| parse_duration(text).ok_or_else(|| bad("not a duration (500ms, 2s, 1m)"));
        match (kind, has_value) {
            ("token-hang", false) => Ok(Fault::TokenHang),
            ("rotate-key", false) => Ok(Fault::RotateSigningKey),
            ("token-error", _) => {
                let (status, times) = status_times(value()?)?;
                Ok(Fault::TokenErrors { status, times })
            }
            ("token-delay", _) => Ok(Fault::TokenDelay(duration(value()?)?)),
            ("admin-error", _) => {
                let (status, times) = status_times(value()?)?;
                Ok(Fault::AdminErrors { status, times })
            }
            ("service-error", _) => {
                let (service, rest) = service_and(value()?)?;
                let (status, times) = status_times(&rest)?;
                Ok(Fault::ServiceErrors {
                    service,
                    status,
                    times,
                })
            }
            ("connection-reset", _) => {
                let (service, rest) = service_and(value()?)?;
                let times = match rest.strip_prefix('x').unwrap_or(&rest) {
                    "" => 1,
                    count => count
                        .parse()
                        .map_err(|_| bad("the count is not a number"))?,
                };
                Ok(Fault::ConnectionResets { service, times })
            }
            ("cold-start", _) => {
                let (service, rest) = service_and(value()?)?;
                Ok(Fault::ColdStart {
                    service,
                    delay: duration(&rest)?,
                })
            }
            ("token-hang" | "rotate-key", true) => Err(bad("this fault takes no value")),
            _ => Err(bad("unknown fault")),
        }
    }
}

/// `250ms`, `2s`, `1m`; a bare number is seconds.
fn parse_duration(text: &str) -> Option<Duration> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 = number.parse().ok()?;
    match unit {
        "ms" => Some(Duration::from_millis(number)),
        "" | "s" => Some(Duration::from_secs(number)),
        "m" => Some(Duration::from_secs(number.checked_mul(60)?)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn faults_parse_and_print_back() {
        let cases = [
            (
                "token-error=503x2",
                Fault::TokenErrors {
                    status: 503,
                    times: 2,
                },
            ),
            (
                "token-error=500",
                Fault::TokenErrors {
                    status: 500,
                    times: 1,
                },
            ),
            ("token-delay=2s", Fault::TokenDelay(Duration::from_secs(2))),
            ("token-hang", Fault::TokenHang),
            (
                "admin-error=503x2",
                Fault::AdminErrors {
                    status: 503,
                    times: 2,
                },
            ),
            (
                "service-error=hello:429x3",
                Fault::ServiceErrors {
                    service: "hello".into(),
                    status: 429,
                    times: 3,
                },
            ),
            (
                "connection-reset=hello",
                Fault::ConnectionResets {
                    service: "hello".into(),
                    times: 1,
                },
            ),
            (
                "connection-reset=hello:x2",
                Fault::ConnectionResets {
                    service: "hello".into(),
                    times: 2,
                },
            ),
            (
                "cold-start=hello:1500ms",
                Fault::ColdStart {
                    service: "hello".into(),
                    delay: Duration::from_millis(1500),
                },
            ),
            ("rotate-key", Fault::RotateSigningKey),
        ];
        for (text, fault) in cases {
            assert_eq!(text.parse::<Fault>().unwrap(), fault, "{text}");
            assert_eq!(
                fault.to_string().parse::<Fault>().unwrap(),
                fault,
                "{fault}"
            );
        }
    }

    #[test]
    fn bad_faults_say_what_is_expected() {
        for (text, expected) in [
            ("nonsense", "unknown fault"),
            ("token-error", "a value is missing"),
            ("token-error=abc", "not a number"),
            ("service-error=:503", "service name is missing"),
            ("cold-start=hello:soon", "not a duration"),
            // u64::MAX minutes: the multiplication overflows, which must not panic.
            ("cold-start=hello:18446744073709551615m", "not a duration"),
            ("token-delay=99999999999999999999s", "not a duration"),
            ("rotate-key=1", "takes no value"),
        ] {
            let message = text.parse::<Fault>().unwrap_err().to_string();
            assert!(message.contains(expected), "{text}: {message}");
            assert!(message.contains("token-error=503x2"), "{message}");
        }
    }
}
