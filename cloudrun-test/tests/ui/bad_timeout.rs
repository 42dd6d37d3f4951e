use cloudrun_test::cloudrun_test;

#[cloudrun_test(service = "hello", timeout = "30 sec")]
async fn words() {}

#[cloudrun_test(service = "hello", timeout = "1.5s")]
async fn fraction() {}

#[cloudrun_test(service = "hello", timeout = "0s")]
async fn zero() {}

fn main() {}
