//! Resolution under `cloudrun-test emulate`: the emulator's world and nothing else.
//!
//! A service must be one the emulator serves. Its URL is `CLOUDRUN_TEST_URL_<SERVICE>`
//! (which emulate exports) or, for a traffic tag or when that variable is unset, the
//! answer of the emulator's Admin API. `cloudrun-test.toml` (profiles included), gcloud's
//! properties and `CLOUDRUN_TEST_RUN_ENDPOINT` are not consulted. Every URL must be on
//! this machine: anything else is an error before a token is minted for it.

use super::{Endpoint, ServiceId, ServiceQuery, Target, lookup, origin, parse_url, tagged_uri};
use crate::credentials::Credentials;
use crate::error::Error;
use crate::settings::{EMULATOR_VARIABLE, Emulated, Settings, url_variable};
use reqwest::Url;

pub(super) async fn resolve(
    query: &ServiceQuery,
    settings: &Settings,
    credentials: &Result<Credentials, Error>,
    emulated: &Emulated,
) -> Result<Target, Error> {
    // GOOGLE_CLOUD_PROJECT is the shell's, not the emulator's: not asked here.
    let project = query.project.clone().or_else(|| settings.project.clone());
    let region = query.region.clone().or_else(|| settings.region.clone());
    let target = |url: Url, from: &str, project, region, accepted_audiences| {
        on_this_machine(&url, from)?;
        Ok(Target {
            audience: query.audience.clone().unwrap_or_else(|| origin(&url)),
            url,
            service: query.service.clone(),
            project,
            region,
            accepted_audiences,
        })
    };

    if let Some(url) = &query.url {
        let from = "`url = ...`";
        return target(parse_url(url, from)?, from, project, region, Vec::new());
    }
    let Some(service) = query.service.as_deref() else {
        return Err(Error::setting(
            "no service to test: neither a service name nor a URL was given",
            "write `#[cloudrun_test(service = \"NAME\")]` for a service given to \
                  `cloudrun-test emulate --service NAME`",
        ));
    };
    if !emulated.services.iter().any(|name| name == service) {
        let guess = super::closest(service, emulated.services.iter().cloned())
            .map(|name| format!("did you mean `{name}`? Otherwise "))
            .unwrap_or_default();
        return Err(Error::setting(
            format!(
                "service `{service}` is not emulated: under `cloudrun-test emulate` a test reaches \
                 only the emulated services (emulated: {}), whatever the environment or \
                 cloudrun-test.toml say",
                emulated.list()
            ),
            format!(
                "{guess}emulate it too: add `--service {service}` (or `--serve {service}=COMMAND` \
                 for a local upstream) to `cloudrun-test emulate`"
            ),
        ));
    }
    let tag = query.tag.clone().or_else(|| settings.tag.clone());
    if tag.is_none()
        && let Some((variable, url)) = settings.service_url_of(service)
    {
        return target(
            parse_url(&url, &variable)?,
            &variable,
            project,
            region,
            Vec::new(),
        );
    }

    // A tag (or no exported URL): the emulator's Admin API knows.
    let missing = |variable: &str| {
        Error::setting(
            format!(
                "cannot look emulated service `{service}` up in the emulator's Admin API: {variable} is not set"
            ),
            format!(
                "run the command under `cloudrun-test emulate`, which sets {variable}; or set {} \
             to the service's emulated URL",
                url_variable(service)
            ),
        )
    };
    let project = project.ok_or_else(|| missing("CLOUDRUN_TEST_PROJECT"))?;
    let region = region.ok_or_else(|| missing("CLOUDRUN_TEST_REGION"))?;
    let credentials = credentials.clone()?;
    let endpoint = Endpoint {
        url: &emulated.endpoint,
        from: EMULATOR_VARIABLE,
    };
    let id = ServiceId {
        project: &project,
        region: &region,
        service,
        tag: tag.as_deref(),
    };
    let info = lookup(&credentials, endpoint, id).await?;
    let uri = match &tag {
        None => info.uri.clone().ok_or_else(|| {
            Error::admin_api(
                service,
                emulated.endpoint.clone(),
                "the emulator's Admin API gives the service no URL",
                format!("emulate it with `cloudrun-test emulate --service {service}`"),
            )
        })?,
        Some(tag) => tagged_uri(&info, service, tag, &region)?,
    };
    let from = "the emulator's Admin API";
    let url = parse_url(&uri, from)?;
    let mut accepted: Vec<String> = info
        .urls
        .iter()
        .map(|url| url.trim_end_matches('/').to_owned())
        .collect();
    accepted.push(origin(&url));
    accepted.extend(info.custom_audiences.iter().cloned());
    accepted.dedup();
    target(url, from, Some(project), Some(region), accepted)
}

/// Under emulate, a URL off this machine gets no token and no request.
fn on_this_machine(url: &Url, from: &str) -> Result<(), Error> {
    if crate::transport::is_loopback(url) {
        return Ok(());
    }
    Err(Error::setting(
        format!(
            "under `cloudrun-test emulate`, {from} gives {}, which is not on this machine: an \
             emulated test reaches only the emulator and loopback addresses, and no token is \
             minted for anywhere else",
            origin(url)
        ),
        "test an emulated service by name (`service = \"NAME\"` with `cloudrun-test emulate \
              --service NAME`), or run this test outside `cloudrun-test emulate`",
    ))
}
