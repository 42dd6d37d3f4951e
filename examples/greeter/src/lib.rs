//! The `Greeter` gRPC service: its messages, the code tonic generates for it (server
//! and client, see build.rs) and its implementation.

use std::pin::Pin;

use tokio_stream::Stream;
use tonic::{Request, Response, Status};

pub use greeter::greeter_client::GreeterClient;
pub use greeter::greeter_server::{Greeter, GreeterServer};

/// The generated server and client.
pub mod greeter {
    include!(concat!(env!("OUT_DIR"), "/greeter.Greeter.rs"));
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct HelloRequest {
    #[prost(string, tag = "1")]
    pub name: String,
    /// For `Count`: how many replies to stream.
    #[prost(uint32, tag = "2")]
    pub count: u32,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct HelloReply {
    #[prost(string, tag = "1")]
    pub message: String,
}

/// The most replies `Count` streams.
pub const MAX_COUNT: u32 = 1000;

#[derive(Debug, Default)]
pub struct GreeterService;

type ReplyStream = Pin<Box<dyn Stream<Item = Result<HelloReply, Status>> + Send>>;

#[tonic::async_trait]
impl Greeter for GreeterService {
    async fn say_hello(
        &self,
        request: Request<HelloRequest>,
    ) -> Result<Response<HelloReply>, Status> {
        let name = request.into_inner().name;
        if name.is_empty() {
            return Err(Status::invalid_argument("name is empty"));
        }
        Ok(Response::new(HelloReply {
            message: format!("Hello, {name}!"),
        }))
    }

    type CountStream = ReplyStream;

    /// Streams `Hello, NAME! (1 of N)` ... `(N of N)`, one message at a time.
    async fn count(
        &self,
        request: Request<HelloRequest>,
    ) -> Result<Response<Self::CountStream>, Status> {
        let HelloRequest { name, count } = request.into_inner();
        if count > MAX_COUNT {
            return Err(Status::out_of_range(format!(
                "count is at most {MAX_COUNT}"
            )));
        }
        let replies = (1..=count).map(move |n| {
            Ok(HelloReply {
                message: format!("Hello, {name}! ({n} of {count})"),
            })
        });
        Ok(Response::new(Box::pin(tokio_stream::iter(replies))))
    }
}
