//! The hermetic promise of `cloudrun-test emulate`, read once per process.

use std::sync::OnceLock;

use super::env;
use crate::error::Error;

/// Set by `cloudrun-test emulate` (and `Emulator::hermetic_environment`): the emulator's
/// base URL. While it is set the process lives in the emulator's world only.
pub(crate) const EMULATOR_VARIABLE: &str = "CLOUDRUN_TEST_EMULATOR";
/// The emulated services' names, comma-separated, beside [`EMULATOR_VARIABLE`].
pub(crate) const EMULATED_SERVICES_VARIABLE: &str = "CLOUDRUN_TEST_EMULATED_SERVICES";

/// The hermetic promise of `cloudrun-test emulate`: services resolve only to the
/// emulator (its Admin API, or a loopback `CLOUDRUN_TEST_URL_<SERVICE>`), never through
/// `cloudrun-test.toml` or gcloud's settings, and a service it does not emulate is an
/// error rather than a request to somewhere else.
#[derive(Debug)]
pub(crate) struct Emulated {
    /// The emulator's Google endpoints; its Admin API answers the lookups.
    pub endpoint: String,
    pub services: Vec<String>,
}

impl Emulated {
    /// The promise, read once per process; `None` outside `cloudrun-test emulate`.
    pub(crate) fn get() -> Result<Option<&'static Emulated>, Error> {
        static EMULATED: OnceLock<Result<Option<Emulated>, Error>> = OnceLock::new();
        match EMULATED.get_or_init(Emulated::from_env) {
            Ok(emulated) => Ok(emulated.as_ref()),
            Err(error) => Err(error.clone()),
        }
    }

    fn from_env() -> Result<Option<Emulated>, Error> {
        let Some(endpoint) = env(EMULATOR_VARIABLE) else {
            return Ok(None);
        };
        // Only an emulator on this machine can make the promise.
        let loopback = reqwest::Url::parse(&endpoint).is_ok_and(|url| {
            matches!(url.scheme(), "http" | "https") && crate::host::is_loopback(&url)
        });
        if !loopback {
            return Err(Error::setting(
                format!(
                    "{EMULATOR_VARIABLE} is {endpoint:?}, which is not an emulator on this machine \
                     (an http URL of a loopback address)"
                ),
                format!(
                    "{EMULATOR_VARIABLE} is set by `cloudrun-test emulate` for its COMMAND; unset it \
                     to test real services"
                ),
            ));
        }
        let services = env(EMULATED_SERVICES_VARIABLE)
            .unwrap_or_default()
            .split(',')
            .map(str::trim)
            .filter(|name| !name.is_empty())
            .map(str::to_owned)
            .collect();
        Ok(Some(Emulated {
            endpoint: endpoint.trim_end_matches('/').to_owned(),
            services,
        }))
    }

    /// The emulated services, for messages: `hello, greeter` or `none`.
    pub(crate) fn list(&self) -> String {
        if self.services.is_empty() {
            "none".into()
        } else {
            self.services.join(", ")
        }
    }
}
