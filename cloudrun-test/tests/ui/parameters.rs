use cloudrun_test::cloudrun_test;

#[cloudrun_test(service = "hello")]
async fn two_parameters(client: cloudrun_test::Client, context: cloudrun_test::TestContext) {
    let _ = (client, context);
}

#[cloudrun_test(service = "hello")]
async fn impl_trait(client: impl Clone) {
    let _ = client;
}

fn main() {}
