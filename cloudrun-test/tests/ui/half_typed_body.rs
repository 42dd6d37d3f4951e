use cloudrun_test::cloudrun_test;

// The body is being typed: the error is the parser's, on the user's tokens, and
// the attribute still expands (the IDE keeps the test).
#[cloudrun_test(service = "hello")]
async fn being_edited(client: cloudrun_test::Client) {
    let _response = client.
}

fn main() {}
