// `Client` is not imported: one error, with the import to add.
use cloudrun_test::cloudrun_test;

#[cloudrun_test(service = "hello")]
async fn missing_import(client: Client) {
    let _ = client;
}

fn main() {}
