use cloudrun_test::cloudrun_test;

struct Opaque;

#[cloudrun_test(service = "hello")]
async fn error_without_debug() -> Result<(), Opaque> {
    Err(Opaque)
}

fn main() {}
