//! From a service name to the URL to call and the audience to mint tokens for.
//!
//! Order: an explicit URL (`url = ...`), then `CLOUDRUN_TEST_URL_<SERVICE>`, then the
//! Cloud Run Admin API v2 (`services.get`), whose answers are cached per process and,
//! for [`crate::disk_cache::LOOKUP_LIFETIME`], on disk for every process of the user
//! (keyed by the credentials too: another identity may get another answer).
//! Under `cloudrun-test emulate`, [`emulated`] resolves instead: emulated services only.

mod emulated;

use std::path::PathBuf;
use std::sync::LazyLock;
use std::time::Duration;

use reqwest::Url;
use serde::{Deserialize, Serialize};

use crate::cache::SingleFlight;
use crate::credentials::Credentials;
use crate::disk_cache::DiskCache;
use crate::error::{Error, describe_http_error};
use crate::retry::{REPEAT_TRIES, is_worth_repeating, send_repeatable};
use crate::settings::{
    CONFIG_FILE_NAME, ConfigFile, RUN_ENDPOINT_VARIABLE, ServiceSection, Settings, env_suffix,
    gcloud_property, url_variable,
};

const DEFAULT_RUN_ENDPOINT: &str = "https://run.googleapis.com";

/// What the user asked for; every field optional, settings fill the gaps.
#[derive(Debug, Clone, Default)]
pub(crate) struct ServiceQuery {
    pub service: Option<String>,
    pub url: Option<String>,
    pub audience: Option<String>,
    pub tag: Option<String>,
    pub project: Option<String>,
    pub region: Option<String>,
    /// Base URL of the Cloud Run Admin API.
    pub run_endpoint: Option<String>,
    /// Where to start looking for `cloudrun-test.toml` (the test crate's manifest folder).
    pub config_dir: Option<PathBuf>,
}

/// Where requests go and which audience their tokens carry.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    pub url: Url,
    pub audience: String,
    pub service: Option<String>,
    pub project: Option<String>,
    pub region: Option<String>,
    /// The audiences the service accepts (its URLs and custom audiences), when the
    /// Admin API said; empty otherwise. For explaining a 401.
    pub accepted_audiences: Vec<String>,
}

pub(crate) async fn resolve(
    query: &ServiceQuery,
    settings: &Settings,
    credentials: &Result<Credentials, Error>,
) -> Result<Target, Error> {
    if let Some(emulated) = crate::settings::Emulated::get()? {
        return emulated::resolve(query, settings, credentials, emulated).await;
    }
    let config_dir = query
        .config_dir
        .clone()
        .or_else(|| settings.manifest_dir.clone())
        .or_else(|| std::env::current_dir().ok());
    let file = match &config_dir {
        Some(dir) => ConfigFile::find(dir, settings.profile.as_deref())?,
        None => Default::default(),
    };
    let service = query.service.as_deref();
    let from_file = |field: fn(&ServiceSection) -> Option<&String>| {
        service.and_then(|service| file.service_value(service, field))
    };
    let project = query
        .project
        .clone()
        .or_else(|| settings.any_project())
        .or_else(|| file.value(|section| section.project.as_ref()))
        .or_else(|| gcloud_property("core", "project"));
    let region = query
        .region
        .clone()
        .or_else(|| settings.region.clone())
        .or_else(|| file.value(|section| section.region.as_ref()))
        .or_else(|| gcloud_property("run", "region"));
    let audience = query
        .audience
        .clone()
        .or_else(|| from_file(|section| section.audience.as_ref()));
    let target = |url: Url, project, region| {
        let audience = audience.clone().unwrap_or_else(|| origin(&url));
        Ok(Target {
            url,
            audience,
            service: query.service.clone(),
            project,
            region,
            accepted_audiences: Vec::new(),
        })
    };

    if let Some(url) = &query.url {
        return target(parse_url(url, "`url = ...`")?, project, region);
    }
    let Some(service) = service else {
        return Err(Error::setting(
            "no service to test: neither a service name nor a URL was given",
            "write `#[cloudrun_test(service = \"NAME\")]` or `#[cloudrun_test(url = \"https://...\")]`",
        ));
    };
    if let Some((variable, url)) = settings.service_url_of(service) {
        return target(parse_url(&url, &variable)?, project, region);
    }
    let file_name = file.path.as_ref().map_or_else(
        || CONFIG_FILE_NAME.to_owned(),
        |path| path.display().to_string(),
    );
    if let Some(url) = from_file(|section| section.url.as_ref()) {
        return target(parse_url(&url, &file_name)?, project, region);
    }

    let missing = |what: &str, variable: &str, gcloud: &str| {
        Error::setting(
            format!("cannot look Cloud Run service `{service}` up: no {what} is set"),
            format!(
                "set {variable}, or `{what} = \"...\"` in the attribute or in {CONFIG_FILE_NAME}, \
             or run `gcloud config set {gcloud}`; or skip the lookup by setting {} to the service's URL",
                url_variable(service)
            ),
        )
    };
    let project = project.ok_or_else(|| {
        missing(
            "project",
            "CLOUDRUN_TEST_PROJECT (or GOOGLE_CLOUD_PROJECT)",
            "project PROJECT_ID",
        )
    })?;
    let region =
        region.ok_or_else(|| missing("region", "CLOUDRUN_TEST_REGION", "run/region REGION"))?;
    // Where the endpoint comes from, for the error if it may not get an access token.
    let (endpoint, endpoint_from) = query
        .run_endpoint
        .clone()
        .map(|url| (url, "`ClientBuilder::run_endpoint`".to_owned()))
        .or_else(|| {
            (settings.run_endpoint.clone()).map(|url| (url, RUN_ENDPOINT_VARIABLE.to_owned()))
        })
        .or_else(|| {
            file.value(|section| section.run_endpoint.as_ref())
                .map(|url| (url, format!("`run_endpoint` in {file_name}")))
        })
        .unwrap_or_else(|| (DEFAULT_RUN_ENDPOINT.into(), "the default".into()));
    let credentials = credentials.clone()?;
    let endpoint = Endpoint {
        url: &endpoint,
        from: &endpoint_from,
    };
    let tag = query
        .tag
        .clone()
        .or_else(|| settings.tag.clone())
        .or_else(|| from_file(|section| section.tag.as_ref()));
    let service_id = ServiceId {
        project: &project,
        region: &region,
        service,
        tag: tag.as_deref(),
    };
    let info = lookup(&credentials, endpoint, service_id).await?;
    let uri = match &tag {
        None => info.uri.clone().ok_or_else(|| {
            Error::admin_api(
                service,
                endpoint.url,
                "the service has no URL yet (is its first revision deployed?)",
                format!("deploy it: `gcloud run deploy {service} --region {region}`"),
            )
        })?,
        Some(tag) => tagged_uri(&info, service, tag, &region)?,
    };
    let url = parse_url(&uri, "the Admin API's answer")?;
    let mut target = target(url, Some(project), Some(region))?;
    let mut accepted: Vec<String> = info
        .urls
        .iter()
        .map(|url| url.trim_end_matches('/').to_owned())
        .collect();
    accepted.push(origin(&target.url));
    accepted.extend(info.custom_audiences.iter().cloned());
    accepted.dedup();
    target.accepted_audiences = accepted;
    Ok(target)
}

fn tagged_uri(info: &ServiceInfo, service: &str, tag: &str, region: &str) -> Result<String, Error> {
    if let Some(uri) = info
        .traffic_statuses
        .iter()
        .find(|status| status.tag.as_deref() == Some(tag))
        .and_then(|status| status.uri.clone())
    {
        return Ok(uri);
    }
    let known: Vec<&str> = info
        .traffic_statuses
        .iter()
        .filter_map(|status| status.tag.as_deref())
        .collect();
    Err(Error::setting(
        format!(
            "service `{service}` has no traffic tag `{tag}`; its tags: {}",
            if known.is_empty() {
                "none".into()
            } else {
                known.join(", ")
            }
        ),
        format!(
            "deploy a revision with that tag: `gcloud run deploy {service} --region {region} --no-traffic --tag {tag}`, \
             or pick an existing tag with CLOUDRUN_TEST_TAG"
        ),
    ))
}

fn parse_url(text: &str, from: &str) -> Result<Url, Error> {
    let url = Url::parse(text).map_err(|error| {
        Error::setting(
            format!("the service URL {text:?} from {from} is not a URL ({error})"),
            "give a full URL such as https://hello-123456789.europe-west1.run.app",
        )
    })?;
    if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
        return Err(Error::setting(
            format!("the service URL {text:?} from {from} is not an http(s) URL"),
            "give a full URL such as https://hello-123456789.europe-west1.run.app",
        ));
    }
    Ok(url)
}

/// `https://host[:port]`: what Cloud Run accepts as the audience of its URLs.
pub(crate) fn origin(url: &Url) -> String {
    url.origin().ascii_serialization()
}

/// The part of a `services.get` answer that we use (and store in the disk cache).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ServiceInfo {
    pub uri: Option<String>,
    #[serde(default)]
    pub traffic_statuses: Vec<TrafficStatus>,
    /// Every URL of the service (both forms), accepted as token audiences.
    #[serde(default)]
    pub urls: Vec<String>,
    #[serde(default)]
    pub custom_audiences: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct TrafficStatus {
    pub tag: Option<String>,
    pub uri: Option<String>,
}

/// `[fingerprint, endpoint, project, region, service, tag]` as JSON: unambiguous
/// whatever the parts contain, and the disk cache's key too.
type LookupKey = String;

static LOOKUPS: LazyLock<SingleFlight<LookupKey, ServiceInfo>> = LazyLock::new(SingleFlight::new);

/// The Admin API's base URL, and the setting it comes from.
#[derive(Clone, Copy)]
struct Endpoint<'a> {
    url: &'a str,
    from: &'a str,
}

/// Which service to look up, and the traffic tag wanted of it (part of the cache key).
#[derive(Clone, Copy)]
struct ServiceId<'a> {
    project: &'a str,
    region: &'a str,
    service: &'a str,
    tag: Option<&'a str>,
}

/// The service's description: from this process's cache, else from the disk cache (a
/// lookup by another process with the same credentials, within
/// [`crate::disk_cache::LOOKUP_LIFETIME`]), else
/// from the Admin API. Concurrent callers, here or in other processes, share one lookup.
async fn lookup(
    credentials: &Credentials,
    endpoint: Endpoint<'_>,
    id: ServiceId<'_>,
) -> Result<ServiceInfo, Error> {
    let ServiceId {
        project,
        region,
        service,
        tag,
    } = id;
    let url = format!(
        "{}/v2/projects/{project}/locations/{region}/services/{service}",
        endpoint.url.trim_end_matches('/')
    );
    // The lookup carries an access token: refused before one is even minted unless the
    // endpoint is https or on this machine.
    let what = format!("the Cloud Run Admin API ({})", endpoint.from);
    let parsed = Url::parse(&url).map_err(|error| Error::setting(format!("{what} is not a URL: {:?} ({error})", endpoint.url), format!(
            "set {RUN_ENDPOINT_VARIABLE} to the Admin API's base URL, e.g. {DEFAULT_RUN_ENDPOINT}"
        )))?;
    crate::transport::check_destination(&parsed, &what)?;
    let key = serde_json::json!([
        credentials.fingerprint(),
        endpoint.url,
        project,
        region,
        service,
        tag
    ])
    .to_string();
    let disk_key = key.clone();
    let request = AdminRequest {
        credentials: credentials.clone(),
        url,
        parsed,
        project: project.to_owned(),
        region: region.to_owned(),
        service: service.to_owned(),
    };
    LOOKUPS
        .get_lazy(
            key,
            |_| true,
            move || async move {
                // The HTTP client (and its CA roots) only if the disk has no answer.
                let ask = async move { request.send(crate::cache::fetcher_http()?).await };
                match DiskCache::get() {
                    Some(disk) => disk.get_or_look_up(&disk_key, ask).await,
                    None => ask.await,
                }
            },
        )
        .await
}

/// One `services.get` request, with what its errors name.
struct AdminRequest {
    credentials: Credentials,
    url: String,
    parsed: Url,
    project: String,
    region: String,
    service: String,
}

impl AdminRequest {
    async fn send(self, http: &reqwest::Client) -> Result<ServiceInfo, Error> {
        let AdminRequest {
            credentials,
            url,
            parsed,
            project,
            region,
            service,
        } = self;
        // Minted only now: a lookup served from disk needs no access token.
        let access_token = credentials.access_token().await?;
        let identity = credentials.describe();
        let admin_error = |problem: String, fix: String| {
            Error::admin_api(service.clone(), url.clone(), problem, fix)
        };
        // A read: tried again after a 5xx, a 429 or a failed connection.
        let request = http.get(parsed).bearer_auth(access_token.secret());
        let response = send_repeatable(request, Duration::from_secs(30))
            .await
            .map_err(|error| {
                admin_error(
                    describe_http_error(&error),
                    "check the network, or set CLOUDRUN_TEST_RUN_ENDPOINT if the Admin API lives elsewhere".into(),
                )
                .with_source(error)
            })?;
        let status = response.status();
        let body = match crate::bounded::read_body(response, crate::bounded::BODY_LIMIT).await {
            Ok(body) => body,
            Err(crate::bounded::BodyError::TooLarge { limit }) => {
                return Err(admin_error(
                    crate::bounded::BodyError::too_large(limit),
                    "check CLOUDRUN_TEST_RUN_ENDPOINT points at the Cloud Run Admin API".into(),
                ));
            }
            Err(crate::bounded::BodyError::Http(_)) => String::new(),
        };
        match status.as_u16() {
            200 => serde_json::from_str(&body).map_err(|error| {
                admin_error(
                    format!("the answer is not a Cloud Run service ({error})"),
                    "check CLOUDRUN_TEST_RUN_ENDPOINT points at the Cloud Run Admin API".into(),
                )
            }),
            404 => {
                let error = Error::service_not_found(
                    &service,
                    &project,
                    &region,
                    &url,
                    env_suffix(&service),
                );
                // A misspelt name: the closest the caller may list, if any.
                Err(match closest_service(http, &url, &access_token, &service).await {
                    Some(name) => {
                        let fix = error.fix().unwrap_or_default().to_owned();
                        error.with_fix(format!("did you mean `{name}`? Otherwise {fix}"))
                    }
                    None => error,
                })
            }
            401 | 403 => Err(admin_error(
                format!("HTTP {status}: {identity} may not read the service"),
                format!(
                    "grant it roles/run.viewer: `gcloud projects add-iam-policy-binding {project} \
                     --member=serviceAccount:EMAIL --role=roles/run.viewer`, or set {} to skip the lookup",
                    url_variable(&service)
                ),
            )
            .with_status(status)),
            _ => Err(admin_error(
                if is_worth_repeating(status) {
                    format!("HTTP {status}, {REPEAT_TRIES} times in a row")
                } else {
                    format!("HTTP {status}")
                },
                "retry later; if it persists, check https://status.cloud.google.com".into(),
            )
            .with_status(status)),
        }
    }
}

/// The name closest to `service` among the region's services (`services.list` at the
/// collection `service_url` is in), if one is close enough to be a misspelling. `None`
/// when the caller may not list them, or listing fails: the hint is a bonus.
async fn closest_service(
    http: &reqwest::Client,
    service_url: &str,
    access_token: &crate::token::Token,
    service: &str,
) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Listed {
        #[serde(default)]
        services: Vec<Named>,
    }
    #[derive(serde::Deserialize)]
    struct Named {
        name: String,
    }
    let (collection, _) = service_url.rsplit_once('/')?;
    let response = http
        .get(collection)
        .bearer_auth(access_token.secret())
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .ok()?;
    if !response.status().is_success() {
        return None;
    }
    let body = crate::bounded::read_body(response, crate::bounded::BODY_LIMIT)
        .await
        .ok()?;
    let listed: Listed = serde_json::from_str(&body).ok()?;
    let names = listed.services.into_iter().filter_map(|named| {
        // `projects/P/locations/R/services/NAME`.
        named.name.rsplit('/').next().map(str::to_owned)
    });
    closest(service, names)
}

/// The one of `names` closest to `wanted` by edit distance, if within a third of its
/// length (at least one edit), as a misspelling would be.
fn closest(wanted: &str, names: impl IntoIterator<Item = String>) -> Option<String> {
    let limit = (wanted.chars().count() / 3).max(1);
    names
        .into_iter()
        .filter(|name| name != wanted)
        .map(|name| (strsim::levenshtein(wanted, &name), name))
        .filter(|(distance, _)| *distance <= limit)
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, name)| name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_misspelt_name_finds_the_closest_and_a_stranger_finds_none() {
        let names = || ["hello", "hello-api", "billing"].map(str::to_owned);
        assert_eq!(closest("helo", names()).as_deref(), Some("hello"));
        assert_eq!(closest("hello-app", names()).as_deref(), Some("hello-api"));
        assert_eq!(closest("biling", names()).as_deref(), Some("billing"));
        assert_eq!(closest("orders", names()), None);
        assert_eq!(closest("hello", ["hello".to_owned()]), None);
    }
}
