use cloudrun_test::cloudrun_test;

// The signature is being typed: syn cannot parse it, so the tokens are given back
// unchanged with syn's error, as `#[tokio::test]` does. rustc reports its own parse
// error first; the macro cannot know that it did, so it says it too, rather than
// risk a function rustc accepts and syn does not silently losing its test.
#[cloudrun_test(service = "hello")]
async fn being_edited(client: ) {}

fn main() {}
