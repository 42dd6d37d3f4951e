//! What a test gets to know: built once per test from the attribute's arguments.

use crate::client::Client;
use crate::entry::TestSpec;
use crate::error::Error;

/// The service under test: its client, URL and audience. Inject it as a parameter
/// (`context: TestContext`) when a test needs more than the [`Client`].
#[derive(Clone, Debug)]
pub struct TestContext {
    client: Client,
}

impl TestContext {
    pub(crate) async fn for_spec(spec: &TestSpec) -> Result<Self, Error> {
        // The test's own limit (see `entry::run_test`) bounds every request.
        let mut builder = Client::builder().no_timeout();
        if !spec.manifest_dir.is_empty() {
            builder = builder.config_dir(spec.manifest_dir);
        }
        if let Some(service) = spec.service {
            builder = builder.service(service);
        }
        if let Some(url) = spec.url {
            builder = builder.url(url);
        }
        if let Some(audience) = spec.audience {
            builder = builder.audience(audience);
        }
        if let Some(tag) = spec.tag {
            builder = builder.tag(tag);
        }
        if let Some(project) = spec.project {
            builder = builder.project(project);
        }
        if let Some(region) = spec.region {
            builder = builder.region(region);
        }
        if let Some(email) = spec.impersonate {
            builder = builder.impersonate(email);
        }
        Ok(TestContext {
            client: builder.build().await?,
        })
    }

    /// The authenticated client for the service.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The service URL.
    pub fn url(&self) -> &reqwest::Url {
        self.client.url()
    }

    /// The audience of the tokens sent to the service.
    pub fn audience(&self) -> &str {
        self.client.audience()
    }

    /// The principal the tests run as, when known.
    pub fn identity(&self) -> Option<String> {
        self.client.identity()
    }
}
