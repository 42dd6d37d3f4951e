use cloudrun_test::cloudrun_test;

#[cloudrun_test(service = "hello", flavor = "multi-thread")]
async fn dash() {}

fn main() {}
