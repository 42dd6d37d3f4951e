use cloudrun_test::cloudrun_test;

#[cloudrun_test(service = "hello")]
#[test]
async fn twice_a_test() {}

#[cloudrun_test(service = "hello")]
#[tokio::test]
async fn also_tokio() {}

fn main() {}
