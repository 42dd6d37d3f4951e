use cloudrun_test::cloudrun_test;

#[cloudrun_test(service = "hello")]
async fn takes_a_string(client: String) {
    let _ = client;
}

fn main() {}
