//! The user's attributes pass through to the generated `#[test]`.

// trybuild builds this without `--test`, where the tests and so their imports vanish.
#![cfg_attr(not(test), allow(unused_imports))]

use cloudrun_test::{Client, cloudrun_test};

/// Doc comments stay on the test.
#[cloudrun_test(service = "hello")]
#[ignore = "needs a deployed service"]
async fn ignored(client: Client) {
    let _ = client;
}

#[cloudrun_test(service = "hello")]
#[should_panic(expected = "boom")]
async fn should_panic() {
    panic!("boom");
}

#[cloudrun_test(service = "hello")]
#[cfg(any())]
async fn compiled_out() {
    this_does_not_exist();
}

#[cloudrun_test(service = "hello")]
#[allow(unused_variables)]
async fn lints(client: Client) {
    let unused = 1;
}

#[cloudrun_test(service = "hello")]
pub async fn public() {}

mod nested {
    #[cloudrun_test::test(service = "hello")]
    async fn in_a_module(_client: cloudrun_test::Client) {}
}

fn main() {}
