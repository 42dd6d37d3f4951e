use cloudrun_test::cloudrun_test;

#[cloudrun_test(service = "hello", worker_threads = 4)]
async fn without_flavor() {}

#[cloudrun_test(service = "hello", flavor = "current_thread", worker_threads = 4)]
async fn with_current_thread() {}

#[cloudrun_test(service = "hello", flavor = "multi_thread", worker_threads = 0)]
async fn zero() {}

fn main() {}
