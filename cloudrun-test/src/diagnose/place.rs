//! Where a service lives, for the `gcloud` commands in fixes.

use reqwest::Url;

use crate::resolve::Target;

/// Where a Cloud Run service lives, as far as the client knows: its name, region and
/// project (ID or number), for the `gcloud` commands in fixes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Place {
    /// The service's name.
    pub service: Option<String>,
    /// Its Cloud Run region, e.g. `europe-west1`.
    pub region: Option<String>,
    /// Its project, by ID or number.
    pub project: Option<String>,
}

impl Place {
    /// What the settings or the Admin API said of `target`, with the gaps filled from
    /// its URL when that is a Cloud Run URL.
    pub(crate) fn of(target: &Target) -> Place {
        let url = Place::from_url(&target.url);
        Place {
            service: target.service.clone().or(url.service),
            region: target.region.clone().or(url.region),
            project: target.project.clone().or(url.project),
        }
    }

    /// From a Cloud Run URL: `https://[TAG---]SERVICE-PROJECTNUMBER.REGION.run.app` or
    /// `https://[TAG---]SERVICE-HASH-XX.a.run.app` (which names the service only).
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

    #[test]
    fn what_the_settings_say_wins_over_the_url() {
        let target = |service: Option<&str>, region: Option<&str>| Target {
            url: Url::parse("https://hello-123456789.europe-west1.run.app/").unwrap(),
            audience: "https://hello-123456789.europe-west1.run.app".into(),
            service: service.map(str::to_owned),
            project: None,
            region: region.map(str::to_owned),
            accepted_audiences: Vec::new(),
        };
        let place = Place::of(&target(Some("named"), Some("us-east1")));
        assert_eq!(place.service.as_deref(), Some("named"));
        assert_eq!(place.region.as_deref(), Some("us-east1"));
        assert_eq!(place.project.as_deref(), Some("123456789"));
        let place = Place::of(&target(None, None));
        assert_eq!(place.service.as_deref(), Some("hello"));
        assert_eq!(place.region.as_deref(), Some("europe-west1"));
    }
}
