//! Checks an [`EmulatorBuilder`]'s configuration before anything starts, with
//! messages that say what Cloud Run accepts.

use crate::members::member_is_valid;
use std::time::Duration;

use crate::{EmulatorBuilder, Error, ServiceConfig, Upstream};

pub(crate) fn validate(builder: &EmulatorBuilder) -> Result<(), Error> {
    let config = |message: String| Err(Error::Config(message));
    for (what, value) in [("project", &builder.project), ("region", &builder.region)] {
        if value.is_empty() || !value.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
            return config(format!(
                "{what} {value:?} must be non-empty letters, digits and '-'"
            ));
        }
    }
    for (index, service) in builder.services.iter().enumerate() {
        let name = &service.name;
        if !is_resource_name(name) {
            return config(format!(
                "service name {name:?} must start with a lower-case letter and hold only \
                 lower-case letters, digits and '-' (as on Cloud Run)"
            ));
        }
        if builder.services[..index]
            .iter()
            .any(|other| &other.name == name)
        {
            return config(format!("service {name:?} is configured twice"));
        }
        for (tag_index, tag) in service.tags.iter().enumerate() {
            if !is_resource_name(tag) {
                return config(format!(
                    "tag {tag:?} of service {name:?} must start with a lower-case letter and hold \
                     only lower-case letters, digits and '-'"
                ));
            }
            if service.tags[..tag_index].contains(tag) {
                return config(format!(
                    "tag {tag:?} of service {name:?} is configured twice"
                ));
            }
        }
        if let Some(member) = service
            .invokers
            .iter()
            .find(|member| !member_is_valid(member))
        {
            return config(format!(
                "invoker {member:?} of service {name:?} is not an IAM member; use \
                 serviceAccount:EMAIL, user:EMAIL, group:EMAIL, domain:DOMAIN, EMAIL or allUsers"
            ));
        }
        if service.timeout < Duration::from_secs(1) || service.timeout > ServiceConfig::MAX_TIMEOUT
        {
            return config(format!(
                "timeout {:?} of service {name:?} must be from 1s to 3600s (as on Cloud Run)",
                service.timeout
            ));
        }
        if let Upstream::Url(url) = &service.upstream
            && !matches!(url.scheme(), "http" | "https")
        {
            return config(format!(
                "upstream {url} of service {name:?} is not an http(s) URL"
            ));
        }
    }
    Ok(())
}

/// A Cloud Run resource name: a lower-case letter, then lower-case letters,
/// digits and '-', at most 63 characters.
fn is_resource_name(name: &str) -> bool {
    name.starts_with(|c: char| c.is_ascii_lowercase())
        && name.len() <= 63
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}
