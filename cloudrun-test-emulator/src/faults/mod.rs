//! The faults in force, and what they decide for each request.
//!
//! [`crate::Emulator::inject`] sets a [`Fault`]; the endpoints then ask [`Faults`]
//! whether their next request fails, waits or hangs, and answer accordingly (the
//! token endpoint in `oauth.rs`, the Admin API in `admin.rs`, a service's front in
//! `front/`, connection resets at accept in `server.rs`). Each counts what it
//! injected in [`crate::Stats::faults_injected`]. The text form (`token-error=503x2`)
//! is in `text.rs`.

mod text;

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use axum::http::StatusCode;
use tokio::sync::watch;

use crate::locks::lock;
use crate::{Error, Fault};

/// The faults in force; lives in `State`.
pub(crate) struct Faults {
    pending: Mutex<Pending>,
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

/// What a token request meets: a delay (zero for none), then maybe an error status.
pub(crate) struct TokenFault {
    pub(crate) delay: Duration,
    pub(crate) error: Option<StatusCode>,
}

/// What a request to a service's front meets: a cold start, then maybe a status.
pub(crate) struct FrontFault {
    pub(crate) cold_start: Option<Duration>,
    pub(crate) status: Option<StatusCode>,
}

/// A token request held by `token-hang`; [`Hold::released`] waits for the release.
pub(crate) struct Hold(watch::Receiver<bool>);

impl Hold {
    /// Returns once token requests no longer hang, or the emulator goes away.
    pub(crate) async fn released(mut self) {
        let _ = self.0.wait_for(|hanging| !hanging).await;
    }
}

impl Default for Faults {
    fn default() -> Self {
        Faults {
            pending: Mutex::default(),
            hang: watch::Sender::new(false),
        }
    }
}

impl Faults {
    /// Puts `fault` in force. Fails for a service not in `services` or an HTTP status
    /// outside 100–599. [`Fault::RotateSigningKey`] is no pending fault: the caller
    /// rotates the key.
    pub(crate) fn set(&self, fault: Fault, services: &[&str]) -> Result<(), Error> {
        let known = |service: &str| {
            if services.contains(&service) {
                return Ok(());
            }
            let names = if services.is_empty() {
                "none".to_owned()
            } else {
                services.join(", ")
            };
            Err(Error::Config(format!(
                "no service {service:?} to inject a fault into; services: {names}"
            )))
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
        match fault {
            Fault::TokenErrors { status, times } => {
                valid(status)?;
                lock(&self.pending).token_errors = Countdown { status, times };
            }
            Fault::TokenDelay(delay) => lock(&self.pending).token_delay = delay,
            Fault::TokenHang => {
                self.hang.send_replace(true);
            }
            Fault::AdminErrors { status, times } => {
                valid(status)?;
                lock(&self.pending).admin_errors = Countdown { status, times };
            }
            Fault::ServiceErrors {
                service,
                status,
                times,
            } => {
                known(&service)?;
                valid(status)?;
                self.service(service, |faults| {
                    faults.errors = Countdown { status, times }
                });
            }
            Fault::ConnectionResets { service, times } => {
                known(&service)?;
                self.service(service, |faults| faults.resets = times);
            }
            Fault::ColdStart { service, delay } => {
                known(&service)?;
                self.service(service, |faults| faults.cold_start = Some(delay));
            }
            Fault::RotateSigningKey => {}
        }
        Ok(())
    }

    fn service(&self, service: String, update: impl FnOnce(&mut ServiceFaults)) {
        update(lock(&self.pending).services.entry(service).or_default());
    }

    /// Lets held token requests go on and new ones through.
    pub(crate) fn release_token_requests(&self) {
        self.hang.send_replace(false);
    }

    /// Ends every fault and releases held token requests.
    pub(crate) fn clear(&self) {
        *lock(&self.pending) = Pending::default();
        self.release_token_requests();
    }

    /// `Some` while token requests hang: the request waits for [`Hold::released`].
    pub(crate) fn token_hold(&self) -> Option<Hold> {
        let mut hang = self.hang.subscribe();
        let hanging = *hang.borrow_and_update();
        hanging.then_some(Hold(hang))
    }

    /// The next token request's delay and error; an error is used up.
    pub(crate) fn take_token_fault(&self) -> TokenFault {
        let mut pending = lock(&self.pending);
        TokenFault {
            delay: pending.token_delay,
            error: pending.token_errors.take(),
        }
    }

    /// The status the next Admin API request fails with, if one is due.
    pub(crate) fn take_admin_error(&self) -> Option<StatusCode> {
        lock(&self.pending).admin_errors.take()
    }

    /// The cold start and status due for the next request to `service`; both are used up.
    pub(crate) fn take_front_fault(&self, service: &str) -> FrontFault {
        let mut pending = lock(&self.pending);
        match pending.services.get_mut(service) {
            Some(faults) => FrontFault {
                cold_start: faults.cold_start.take(),
                status: faults.errors.take(),
            },
            None => FrontFault {
                cold_start: None,
                status: None,
            },
        }
    }

    /// Whether the next connection to `service` is to be reset; one reset is used up.
    pub(crate) fn take_reset(&self, service: &str) -> bool {
        let mut pending = lock(&self.pending);
        match pending.services.get_mut(service) {
            Some(faults) if faults.resets > 0 => {
                faults.resets -= 1;
                true
            }
            _ => false,
        }
    }
}
