//! Generates the `Greeter` service's server and client from its description here
//! (what a `.proto` file would say), so building needs no `protoc`. The messages are
//! plain `prost` structs in src/lib.rs.

use tonic_build::manual::{Builder, Method, Service};

fn main() {
    let method = |name: &str, route: &str| {
        Method::builder()
            .name(name)
            .route_name(route)
            .input_type("crate::HelloRequest")
            .output_type("crate::HelloReply")
            .codec_path("tonic_prost::ProstCodec")
    };
    let greeter = Service::builder()
        .name("Greeter")
        .package("greeter")
        // rpc SayHello (HelloRequest) returns (HelloReply)
        .method(method("say_hello", "SayHello").build())
        // rpc Count (HelloRequest) returns (stream HelloReply)
        .method(method("count", "Count").server_streaming().build())
        .build();
    // The client takes any channel (`GreeterClient::new`), not only tonic's transport.
    Builder::new().build_transport(false).compile(&[greeter]);
}
