use cloudrun_test::cloudrun_test;

#[cloudrun_test(service = "hello", timeout = "30 parsecs")]
async fn unknown_unit() {}

#[cloudrun_test(service = "hello", timeout = "soon")]
async fn words() {}

#[cloudrun_test(service = "hello", timeout = "0s")]
async fn zero() {}

fn main() {}
