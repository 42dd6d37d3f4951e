use cloudrun_test::{Client, cloudrun_test};

#[cloudrun_test(service = "hello")]
async fn borrows_the_client(client: &Client) {
    let _ = client;
}

fn main() {}
