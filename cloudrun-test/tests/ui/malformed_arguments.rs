use cloudrun_test::cloudrun_test;

#[cloudrun_test("hello")]
async fn positional() {}

#[cloudrun_test(service)]
async fn no_value() {}

#[cloudrun_test(service = "hello" timeout = "5s")]
async fn missing_comma() {}

fn main() {}
