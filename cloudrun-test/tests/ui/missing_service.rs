use cloudrun_test::cloudrun_test;

#[cloudrun_test]
async fn no_arguments() {}

#[cloudrun_test(timeout = "5s")]
async fn no_service() {}

fn main() {}
