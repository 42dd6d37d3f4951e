//! The gRPC service's test suite against its deployment on Cloud Run (or the emulator):
//!
//!     cloudrun-test emulate --use-http2 greeter --serve 'greeter=cargo run -q' -- cargo test
//!
//! Each test takes a `GrpcChannel` to the service whose every call carries an identity
//! token, and hands it to the client tonic generated.

use cloudrun_test::tonic::{Code, Request};
use cloudrun_test::{GrpcChannel, TestContext, cloudrun_test};
use greeter::{GreeterClient, HelloRequest};

fn hello(name: &str) -> Request<HelloRequest> {
    Request::new(HelloRequest {
        name: name.into(),
        count: 0,
    })
}

#[cloudrun_test(service = "greeter")]
async fn says_hello(channel: GrpcChannel) {
    let mut greeter = GreeterClient::new(channel);
    let reply = greeter.say_hello(hello("Ada")).await.unwrap();
    assert_eq!(reply.into_inner().message, "Hello, Ada!");
}

/// A server-streaming call: every message arrives, in order.
#[cloudrun_test(service = "greeter")]
async fn counts_in_a_stream(channel: GrpcChannel) {
    let mut greeter = GreeterClient::new(channel);
    let request = Request::new(HelloRequest {
        name: "Ada".into(),
        count: 3,
    });
    let mut stream = greeter.count(request).await.unwrap().into_inner();
    let mut messages = Vec::new();
    while let Some(reply) = stream.message().await.unwrap() {
        messages.push(reply.message);
    }
    assert_eq!(
        messages,
        [
            "Hello, Ada! (1 of 3)",
            "Hello, Ada! (2 of 3)",
            "Hello, Ada! (3 of 3)"
        ]
    );
}

/// Every call asks for the token anew; the cache hands out the same one, so a long
/// suite costs one mint and never sends an expired token.
#[cloudrun_test(service = "greeter")]
async fn forty_calls_on_one_channel(channel: GrpcChannel) {
    let mut greeter = GreeterClient::new(channel);
    for n in 0..40 {
        let reply = greeter
            .say_hello(hello(&format!("caller {n}")))
            .await
            .unwrap();
        assert_eq!(reply.into_inner().message, format!("Hello, caller {n}!"));
    }
}

/// The service's own errors reach the test as the service sent them.
#[cloudrun_test(service = "greeter")]
async fn an_empty_name_is_refused_by_the_service(channel: GrpcChannel) {
    let mut greeter = GreeterClient::new(channel);
    let status = greeter.say_hello(hello("")).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert_eq!(status.message(), "name is empty");
}

/// The service is private: without a token, Cloud Run refuses the call, which the
/// channel reports as `PERMISSION_DENIED` with its diagnosis.
#[cloudrun_test(service = "greeter")]
async fn is_private(context: TestContext) {
    let channel = context.client().without_auth().grpc_channel().unwrap();
    let status = GreeterClient::new(channel)
        .say_hello(hello("Ada"))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    assert!(status.message().contains("no token was sent"), "{status:?}");
}

/// A token minted for another audience: Cloud Run answers 401, which the channel
/// reports as `UNAUTHENTICATED`, naming the audience the token was for.
#[cloudrun_test(service = "greeter", audience = "https://elsewhere.example")]
async fn a_wrong_audience_is_unauthenticated(channel: GrpcChannel) {
    let status = GreeterClient::new(channel)
        .say_hello(hello("Ada"))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    assert!(
        status.message().contains("https://elsewhere.example"),
        "{status:?}"
    );
}
