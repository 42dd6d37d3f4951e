//! What a test gets to know: built once per test from the attribute's arguments
//! (by the test entry, `entry::run_started`).

use crate::client::Client;

/// The service under test: its client, URL and audience. Inject it as a parameter
/// (`context: TestContext`) when a test needs more than the [`Client`].
#[derive(Clone, Debug)]
pub struct TestContext {
    client: Client,
}

impl TestContext {
    pub(crate) fn new(client: Client) -> Self {
        TestContext { client }
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
