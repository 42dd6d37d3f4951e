//! `#[cloudrun_test]` below rstest's or test-case's attributes: they expand first, so
//! the errors are theirs (rstest's, or rustc's on the call test-case generates); the
//! docs name the supported order, `#[cloudrun_test(...)]` first.

use cloudrun_test::{Client, cloudrun_test};
use rstest::rstest;
use test_case::test_case;

#[rstest]
#[case(1)]
#[cloudrun_test(service = "hello")]
async fn rstest_first(#[case] n: u32, client: Client) {
    let _ = (n, client);
}

#[test_case(1)]
#[cloudrun_test(service = "hello")]
async fn test_case_first(n: u32, client: Client) {
    let _ = (n, client);
}

fn main() {}
