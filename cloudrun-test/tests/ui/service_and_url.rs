use cloudrun_test::cloudrun_test;

#[cloudrun_test(service = "hello", url = "https://hello-abc123-ew.a.run.app")]
async fn both() {}

fn main() {}
