//! The emulated Cloud Run services: their origins (service URL and traffic tags),
//! the audiences their front accepts, and who may invoke them.

use std::sync::RwLock;
use std::time::Duration;

use reqwest::Url;

use crate::Upstream;
use crate::keys::random_hex;
use crate::locks::read;
use crate::members::member_matches;

/// The client id of gcloud's user login: `aud` of `gcloud auth print-identity-token`
/// for user accounts, accepted by Cloud Run for development.
pub(crate) const GCLOUD_CLIENT_ID: &str = "32555940559.apps.googleusercontent.com";

/// One origin of a service: the service's own URL or a traffic tag's.
#[derive(Debug)]
pub(crate) struct Origin {
    pub(crate) tag: Option<String>,
    pub(crate) url: Url,
}

impl Origin {
    /// The URL as Cloud Run prints it and uses as audience: no trailing slash.
    pub(crate) fn uri(&self) -> String {
        self.url.as_str().trim_end_matches('/').to_owned()
    }
}

#[derive(Debug)]
pub(crate) struct Service {
    pub(crate) name: String,
    pub(crate) uid: String,
    /// The service URL first, then one origin per tag.
    pub(crate) origins: Vec<Origin>,
    pub(crate) custom_audiences: Vec<String>,
    pub(crate) upstream: Upstream,
    /// The request timeout, answer body and WebSocket session included.
    pub(crate) timeout: Duration,
    /// Whether the upstream speaks h2c (`--use-http2`).
    pub(crate) use_http2: bool,
    /// IAM members holding `roles/run.invoker`; changed while the emulator runs.
    pub(crate) invokers: RwLock<Vec<String>>,
}

impl Service {
    pub(crate) fn url(&self) -> &Url {
        &self.origins[0].url
    }

    pub(crate) fn tags(&self) -> impl Iterator<Item = (&str, &Origin)> {
        self.origins
            .iter()
            .filter_map(|origin| origin.tag.as_deref().map(|tag| (tag, origin)))
    }

    /// The revision name the Admin API reports for every tag (one revision here).
    pub(crate) fn revision(&self) -> String {
        format!("{}-00001-emu", self.name)
    }

    /// Whether `aud` is one Cloud Run accepts for this service: any of its
    /// origins (with or without a trailing slash), a custom audience, or gcloud's
    /// user-account client id.
    pub(crate) fn accepts_audience(&self, aud: &str) -> bool {
        let bare = aud.strip_suffix('/').unwrap_or(aud);
        self.origins.iter().any(|origin| origin.uri() == bare)
            || self.custom_audiences.iter().any(|custom| custom == aud)
            || aud == GCLOUD_CLIENT_ID
    }

    pub(crate) fn is_public(&self) -> bool {
        read(&self.invokers)
            .iter()
            .any(|member| member == "allUsers")
    }

    pub(crate) fn may_invoke(&self, email: &str) -> bool {
        read(&self.invokers)
            .iter()
            .any(|member| member_matches(member, email))
    }
}

/// A UUID-shaped random id, as the Admin API's `uid`.
pub(crate) fn random_uid() -> String {
    let hex = random_hex(16).unwrap_or_else(|_| "0".repeat(32));
    format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    )
}
