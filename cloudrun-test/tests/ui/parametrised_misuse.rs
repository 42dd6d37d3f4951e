//! Parametrised tests written in a form that cannot work: the error names the one that does.

#![allow(unused_imports)]

use cloudrun_test::{Client, TestContext, cloudrun_test};
use rstest::rstest;

// `#[rstest]` forgotten: the `#[case]`s are left over.
#[cloudrun_test(service = "hello")]
#[case(1)]
async fn no_rstest(#[case] n: u32, client: Client) {
    let _ = (n, client);
}

// Two parameters the library would build.
#[cloudrun_test(service = "hello")]
#[rstest]
#[case(1)]
async fn two_injected(#[case] n: u32, client: Client, context: TestContext) {
    let _ = (n, client, context);
}

fn main() {}
