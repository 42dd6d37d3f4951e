//! `()` and `Result` returns, with and without a parameter.

// trybuild builds this without `--test`, where the tests and so their imports vanish.
#![cfg_attr(not(test), allow(unused_imports))]

use cloudrun_test::{Client, TestContext, cloudrun_test};

#[cloudrun_test(service = "hello")]
async fn no_parameter() {}

#[cloudrun_test(service = "hello")]
async fn unit(client: Client) {
    let _ = client;
}

#[derive(Debug)]
struct MyError;

#[cloudrun_test(service = "hello")]
async fn result(client: Client) -> Result<(), MyError> {
    let _ = client;
    Err(MyError)
}

#[cloudrun_test(service = "hello")]
async fn boxed_error(_context: TestContext) -> Result<(), Box<dyn std::error::Error>> {
    Ok(())
}

#[cloudrun_test(service = "hello")]
async fn explicit_unit(mut context: TestContext) -> () {
    context = context.clone();
    let _ = context.client();
}

fn main() {}
