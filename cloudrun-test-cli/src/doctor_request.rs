//! `doctor`'s live request: one `GET` to the service with the token, and what the
//! answer (or the failure to get one) means, with the fix. Never prints the token.

use std::time::Duration;

use cloudrun_test::diagnose::{NoAnswer, Sent, Verdict};
use cloudrun_test::reqwest::{self, StatusCode, header};
use cloudrun_test::{IdToken, Url, transport};

/// The emulator's explanation of a 401/403 (real Cloud Run sends no such header).
const EMULATOR_REASON: &str = "x-cloudrun-test-emulator-reason";
const TIMEOUT: Duration = Duration::from_secs(30);

/// What the request showed.
pub struct Outcome {
    pub ok: bool,
    pub report: String,
}

/// Where the service lives, for the `gcloud` commands in fixes.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Place {
    pub service: Option<String>,
    pub region: Option<String>,
    pub project: Option<String>,
}

impl Place {
    /// From a Cloud Run URL (`https://[TAG---]SERVICE-PROJECTNUMBER.REGION.run.app` or
    /// `https://[TAG---]SERVICE-HASH-XX.a.run.app`), then the service name and the
    /// environment's project and region for what the URL does not say.
    pub fn find(url: &Url, service: Option<&str>) -> Place {
        let mut place = Place::from_url(url);
        if let Some(service) = service {
            place.service = Some(service.to_owned());
        }
        let env = |name: &str| {
            std::env::var(name)
                .ok()
                .filter(|value| !value.trim().is_empty())
        };
        if place.region.is_none() {
            place.region = env("CLOUDRUN_TEST_REGION");
        }
        if place.project.is_none() {
            place.project = env("CLOUDRUN_TEST_PROJECT").or_else(|| env("GOOGLE_CLOUD_PROJECT"));
        }
        place
    }

    fn from_url(url: &Url) -> Place {
        let host = url.host_str().unwrap_or("");
        let Some(name) = host.strip_suffix(".run.app") else {
            return Place::default();
        };
        let labels: Vec<&str> = name.split('.').collect();
        let first = |label: &str| -> String {
            // A traffic tag's URL starts with TAG---.
            label.rsplit("---").next().unwrap_or(label).to_owned()
        };
        match labels.as_slice() {
            // SERVICE-HASH-XX.a.run.app
            [label, "a"] => {
                let label = first(label);
                let parts: Vec<&str> = label.rsplitn(3, '-').collect();
                Place {
                    service: (parts.len() == 3).then(|| parts[2].to_owned()),
                    ..Place::default()
                }
            }
            // SERVICE-PROJECTNUMBER.REGION.run.app
            [label, region] => {
                let label = first(label);
                match label.rsplit_once('-') {
                    Some((service, number))
                        if !number.is_empty() && number.bytes().all(|b| b.is_ascii_digit()) =>
                    {
                        Place {
                            service: Some(service.to_owned()),
                            region: Some((*region).to_owned()),
                            project: Some(number.to_owned()),
                        }
                    }
                    _ => Place::default(),
                }
            }
            _ => Place::default(),
        }
    }
}

/// `GET url` once, with `token` (or none), no retry and no redirect followed.
pub async fn check(
    url: &Url,
    audience: &str,
    token: Option<&IdToken>,
    identity: Option<String>,
    place: &Place,
) -> Outcome {
    let mut report = format!("\nLive request: GET {url}");
    if token.is_none() {
        report.push_str(" (without a token)");
    }
    // The library's transport rules: a token goes over https or to loopback only, and
    // through HTTPS_PROXY (CONNECT) only, never HTTP_PROXY or ALL_PROXY.
    if token.is_some()
        && let Err(error) = transport::check_destination(url, "the service")
    {
        report.push_str(&format!(
            "\nVerdict: NOT SENT\n  {}",
            indent(&error.to_string())
        ));
        return Outcome { ok: false, report };
    }
    let builder = match transport::http_client_builder() {
        Ok(builder) => builder,
        Err(error) => {
            report.push_str(&format!(
                "\nVerdict: NOT SENT\n  {}",
                indent(&error.to_string())
            ));
            return Outcome { ok: false, report };
        }
    };
    let http = match builder
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(Duration::from_secs(10))
        .timeout(TIMEOUT)
        .build()
    {
        Ok(http) => http,
        Err(error) => {
            report.push_str(&format!("\n  could not build an HTTP client: {error}"));
            return Outcome { ok: false, report };
        }
    };
    let mut request = http.get(url.clone());
    if let Some(token) = token {
        match header::HeaderValue::try_from(format!("Bearer {}", token.as_str())) {
            Ok(mut value) => {
                value.set_sensitive(true);
                request = request.header(header::AUTHORIZATION, value);
            }
            Err(_) => {
                report.push_str(
                    "\n  the token has characters no HTTP header may carry: it is not an identity token",
                );
                return Outcome { ok: false, report };
            }
        }
    }
    let response = match request.send().await {
        Ok(response) => response,
        Err(error) => {
            report.push_str(&unreachable_report(url, place, &error));
            return Outcome { ok: false, report };
        }
    };
    let status = response.status();
    report.push_str(&format!(" -> {status}"));
    let sent = Sent {
        url,
        audience,
        accepted_audiences: &[],
        token,
        identity: identity.as_deref(),
        service: place.service.as_deref(),
        region: place.region.as_deref(),
        project: place.project.as_deref(),
    };
    let verdict = Verdict::explain(status.as_u16(), &sent);
    report.push_str(&format!(
        "\nVerdict: {}",
        if verdict.ok() { "OK" } else { "REFUSED" }
    ));
    report.push_str(&format!("\n  {}: {}", verdict.status, verdict.evidence));
    if matches!(status, StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN)
        && let Some(reason) = response
            .headers()
            .get(EMULATOR_REASON)
            .and_then(|value| value.to_str().ok())
    {
        let reason = cloudrun_test::redact(reason);
        report.push_str(&format!("\n  (the emulator says: {reason})"));
    }
    if let Some(fix) = &verdict.fix {
        report.push_str(&format!("\n  fix: {fix}"));
    }
    Outcome {
        ok: verdict.ok(),
        report,
    }
}

/// A multi-line message under a verdict line: its later lines indented alike.
fn indent(text: &str) -> String {
    text.replace('\n', "\n  ")
}

/// No answer at all: DNS, connection, TLS or time-out, and what to check.
fn unreachable_report(url: &Url, place: &Place, error: &reqwest::Error) -> String {
    let mut chain = String::new();
    // reqwest's own message repeats the URL: start from its causes.
    let mut source: Option<&dyn std::error::Error> =
        std::error::Error::source(error).or(Some(error as &dyn std::error::Error));
    while let Some(cause) = source {
        if !chain.is_empty() {
            chain.push_str(": ");
        }
        chain.push_str(&cause.to_string());
        source = cause.source();
    }
    let host = url.host_str().unwrap_or("?");
    let port = url.port_or_known_default().unwrap_or(0);
    let service = place.service.as_deref().unwrap_or("SERVICE");
    let region = place
        .region
        .as_deref()
        .map(|region| format!(" --region {region}"))
        .unwrap_or_default();
    let describe = format!("gcloud run services describe {service}{region}");
    // The client's rules for telling the causes apart, with doctor's words.
    let (what, fix) = match NoAnswer::of(error) {
        NoAnswer::Dns => (
            format!("the host {host} does not resolve (DNS)"),
            format!(
                "check the URL for typos; the service's URL is shown by `{describe} --format='value(status.url)'`"
            ),
        ),
        NoAnswer::Timeout => (
            format!("no answer within {}s", TIMEOUT.as_secs()),
            format!(
                "a cold start this long means the container starts slowly or hangs; see its logs \
                 (`gcloud run services logs read {service}{region}`); if the connection itself never \
                 opens, check the service's ingress (below)"
            ),
        ),
        NoAnswer::Connect => (
            format!("could not connect to {host}:{port}"),
            format!(
                "check the URL (`{describe} --format='value(status.url)'`); a service whose ingress is \
                 `internal` or `internal-and-cloud-load-balancing` is reachable only from its VPC or \
                 through its load balancer: `{describe} --format='value(metadata.annotations.\"run.googleapis.com/ingress\")'`"
            ),
        ),
        _ => (
            "the request failed".to_owned(),
            format!("check the URL (`{describe} --format='value(status.url)'`)"),
        ),
    };
    format!("\nVerdict: UNREACHABLE\n  {what}: {chain}\n  fix: {fix}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn place(url: &str) -> Place {
        Place::from_url(&Url::parse(url).unwrap())
    }

    #[test]
    fn cloud_run_urls_say_where_the_service_is() {
        assert_eq!(
            place("https://hello-world-123456789.europe-west1.run.app/x"),
            Place {
                service: Some("hello-world".into()),
                region: Some("europe-west1".into()),
                project: Some("123456789".into()),
            }
        );
        assert_eq!(
            place("https://canary---hello-123456789.us-central1.run.app"),
            Place {
                service: Some("hello".into()),
                region: Some("us-central1".into()),
                project: Some("123456789".into()),
            }
        );
        assert_eq!(
            place("https://hello-abcdefghij-ew.a.run.app")
                .service
                .as_deref(),
            Some("hello")
        );
        assert_eq!(place("http://127.0.0.1:8080/"), Place::default());
    }
}
