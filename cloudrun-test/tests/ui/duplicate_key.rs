use cloudrun_test::cloudrun_test;

#[cloudrun_test(service = "hello", timeout = "5s", service = "world")]
async fn twice() {}

fn main() {}
