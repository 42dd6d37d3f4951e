use cloudrun_test::cloudrun_test;

struct Suite;

impl Suite {
    #[cloudrun_test(service = "hello")]
    async fn method(&self) {}
}

fn main() {}
