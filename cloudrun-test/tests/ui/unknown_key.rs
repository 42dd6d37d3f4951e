use cloudrun_test::cloudrun_test;

#[cloudrun_test(servce = "hello")]
async fn typo() {}

#[cloudrun_test(service = "hello", threads = 4)]
async fn partial_name() {}

#[cloudrun_test(service = "hello", banana = 1)]
async fn nothing_close() {}

fn main() {}
