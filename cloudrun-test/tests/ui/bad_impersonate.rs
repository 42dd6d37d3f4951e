use cloudrun_test::cloudrun_test;

#[cloudrun_test(service = "hello", impersonate = "tester")]
async fn not_an_email() {}

#[cloudrun_test(service = "hello", impersonate = 3)]
async fn not_a_string() {}

fn main() {}
