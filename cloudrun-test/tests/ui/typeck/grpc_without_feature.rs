// cloudrun-test without its `grpc` feature: a test taking a `GrpcChannel` is refused
// on the parameter's type, with the fix.
use cloudrun_test::{GrpcChannel, cloudrun_test};

#[cloudrun_test(service = "greeter")]
async fn says_hello(channel: GrpcChannel) {
    let _ = channel;
}

fn main() {}
