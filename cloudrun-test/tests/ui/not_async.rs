use cloudrun_test::cloudrun_test;

#[cloudrun_test(service = "hello")]
fn forgot_async(client: cloudrun_test::Client) {
    // The `.await` must not add a second error while `async` is missing.
    async {}.await;
    let _ = client;
}

fn main() {}
