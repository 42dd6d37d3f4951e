use cloudrun_test::cloudrun_test;

#[cloudrun_test(service = "")]
async fn empty_service() {}

#[cloudrun_test(url = "hello-abc123-ew.a.run.app")]
async fn url_without_scheme() {}

#[cloudrun_test(service = "hello", crate = "not a path")]
async fn bad_crate() {}

fn main() {}
