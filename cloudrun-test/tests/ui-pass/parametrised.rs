//! Parametrised tests: `#[cloudrun_test(...)]` first, then rstest's or test-case's
//! cases; the injected parameter, chosen by type, may sit anywhere among the values.

// trybuild builds this without `--test`, where the tests and so their imports vanish.
#![cfg_attr(not(test), allow(unused_imports))]

use cloudrun_test::{Client, TestContext, cloudrun_test};
use rstest::rstest;
use test_case::test_case;

#[cloudrun_test(service = "hello")]
#[rstest]
#[case::root("/", 200)]
#[case::missing("/missing", 404)]
async fn rstest_cases(client: Client, #[case] path: &str, #[case] status: u16) {
    let response = client.get(path).send().await.unwrap();
    assert_eq!(response.status(), status);
}

#[cloudrun_test(service = "hello", timeout = "30s")]
#[rstest]
async fn rstest_values(#[values(1, 2)] n: u32, context: TestContext) -> Result<(), String> {
    let _ = (n, context);
    Ok(())
}

#[cloudrun_test(service = "hello")]
#[test_case("/", 200 ; "root")]
#[test_case("/missing", 404 ; "missing")]
async fn test_case_cases(path: &str, status: u16, client: Client) {
    let response = client.get(path).send().await.unwrap();
    assert_eq!(response.status(), status);
}

#[cloudrun_test(service = "hello")]
#[test_case(1)]
#[test_case(2)]
async fn test_case_without_client(n: u32) {
    assert!(n > 0);
}

fn main() {}
