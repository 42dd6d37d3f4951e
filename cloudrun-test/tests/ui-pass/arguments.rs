//! Every argument, in its accepted forms.

// trybuild builds this without `--test`, where the tests and so their imports vanish.
#![cfg_attr(not(test), allow(unused_imports))]

use cloudrun_test::{Client, cloudrun_test};

#[cloudrun_test(
    service = "hello",
    audience = "https://hello.example.com",
    tag = "canary",
    project = "my-project",
    region = "europe-west1",
    timeout = "500ms"
)]
async fn everything(client: Client) {
    let _ = client;
}

#[cloudrun_test(url = "https://hello-abc123-ew.a.run.app", timeout = 30)]
async fn by_url() {}

#[cloudrun_test(
    service = "hello",
    timeout = "2m",
    flavor = "multi_thread",
    worker_threads = 2
)]
async fn multi_thread() {}

#[cloudrun_test(service = "hello", timeout = "1h", flavor = "current_thread")]
async fn current_thread() {}

#[cloudrun_test(service = "hello", timeout = "1m30s")]
async fn compound_timeout() {}

// A test named like the helper the expansion defines.
#[cloudrun_test(service = "hello")]
async fn cloudrun_test() {}

fn main() {}
