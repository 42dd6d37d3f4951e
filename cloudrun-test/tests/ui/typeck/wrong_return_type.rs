use cloudrun_test::cloudrun_test;

#[cloudrun_test(service = "hello")]
async fn returns_a_number() -> u32 {
    42
}

fn main() {}
