use cloudrun_test::{Client, cloudrun_test};

#[cloudrun_test(service = "hello")]
async fn body_has_a_type_error(client: Client) {
    let count: u32 = "three";
    let _ = (client, count);
}

fn main() {}
