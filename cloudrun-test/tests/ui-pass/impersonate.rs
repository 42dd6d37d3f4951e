//! `impersonate`: the service account a test calls the service as.

// trybuild builds this without `--test`, where the tests and so their imports vanish.
#![cfg_attr(not(test), allow(unused_imports))]

use cloudrun_test::{TestContext, cloudrun_test};

#[cloudrun_test(
    service = "hello",
    impersonate = "allowed@my-project.iam.gserviceaccount.com"
)]
async fn as_an_invoker(context: TestContext) {
    let _ = context.identity();
}

#[cloudrun_test(
    url = "https://hello-abc123-ew.a.run.app",
    impersonate = "denied@my-project.iam.gserviceaccount.com",
    timeout = "30s"
)]
async fn as_someone_else() {}

fn main() {}
