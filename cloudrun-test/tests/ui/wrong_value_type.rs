use cloudrun_test::cloudrun_test;

#[cloudrun_test(service = 3)]
async fn number_for_a_string() {}

const SERVICE: &str = "hello";

#[cloudrun_test(service = SERVICE)]
async fn constant_for_a_literal() {}

#[cloudrun_test(
    service = "hello",
    timeout = true,
    flavor = "multi_thread",
    worker_threads = "4"
)]
async fn more_wrong_types() {}

fn main() {}
