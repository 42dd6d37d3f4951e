//! `GrpcChannel` against a real tonic service over cleartext HTTP/2 on loopback, behind
//! a front that checks tokens as Cloud Run's does (HTML 401/403, no `grpc-status`),
//! with tokens minted by the emulator.

mod protocols;

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use cloudrun_test::tonic::{self, Code, Status};
use cloudrun_test::{Diagnosis, GrpcChannel, TokenHeader};
use cloudrun_test_emulator::Emulator;
use protocols::{Identity, OUTSIDER, REFUSAL_PAGE, TESTER};

#[derive(Clone, PartialEq, prost::Message)]
pub struct HelloRequest {
    #[prost(string, tag = "1")]
    pub name: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct HelloReply {
    #[prost(string, tag = "1")]
    pub message: String,
}

/// What tonic generates for `service Greeter { rpc SayHello; rpc Count (stream) }`,
/// written out (no protoc here).
pub struct GreeterClient<T> {
    inner: tonic::client::Grpc<T>,
}

impl<T> GreeterClient<T>
where
    T: tonic::client::GrpcService<tonic::body::Body>,
    T::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    T::ResponseBody: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    <T::ResponseBody as http_body::Body>::Error:
        Into<Box<dyn std::error::Error + Send + Sync>> + Send,
{
    pub fn new(inner: T) -> Self {
        GreeterClient {
            inner: tonic::client::Grpc::new(inner),
        }
    }

    pub async fn say_hello(&mut self, name: &str) -> Result<HelloReply, Status> {
        self.ready().await?;
        let request = tonic::Request::new(HelloRequest { name: name.into() });
        let path = http::uri::PathAndQuery::from_static("/test.Greeter/SayHello");
        let codec = tonic_prost::ProstCodec::default();
        Ok(self.inner.unary(request, path, codec).await?.into_inner())
    }

    pub async fn count(&mut self, name: &str) -> Result<Vec<String>, Status> {
        self.ready().await?;
        let request = tonic::Request::new(HelloRequest { name: name.into() });
        let path = http::uri::PathAndQuery::from_static("/test.Greeter/Count");
        let codec = tonic_prost::ProstCodec::default();
        let mut stream: tonic::Streaming<HelloReply> = self
            .inner
            .server_streaming(request, path, codec)
            .await?
            .into_inner();
        let mut replies: Vec<String> = Vec::new();
        while let Some(reply) = stream.message().await? {
            replies.push(reply.message);
        }
        Ok(replies)
    }

    async fn ready(&mut self) -> Result<(), Status> {
        self.inner
            .ready()
            .await
            .map_err(|error| Status::unknown(error.into().to_string()))
    }
}

/// A token as the service received it.
#[derive(Debug, Clone)]
struct Seen {
    /// The header it came in.
    header: &'static str,
    /// How many headers carried a credential (`authorization` and
    /// `x-serverless-authorization`).
    credentials: usize,
    token: String,
    /// Whether it verified (signature, audience, expiry) for an invoker.
    valid: bool,
}

/// The service: `SayHello` answers `hello NAME`, `Count` streams `NAME 1..=3`; in front
/// of it, the token check.
struct Server {
    /// The token check, as Cloud Run's front makes it; `None` behind the emulator's
    /// front, which makes it.
    front: Option<(Arc<Identity>, String)>,
    seen: Mutex<Vec<Seen>>,
}

type Response = http::Response<tonic::body::Body>;

impl Server {
    async fn handle(
        self: Arc<Server>,
        request: http::Request<hyper::body::Incoming>,
    ) -> Result<Response, Infallible> {
        let (header, value) = ["x-serverless-authorization", "authorization"]
            .into_iter()
            .find_map(|name| Some((name, request.headers().get(name)?.to_str().ok()?)))
            .map_or((None, None), |(name, value)| {
                (Some(name), Some(value.to_owned()))
            });
        let verdict = match &self.front {
            Some((identity, audience)) => identity.check(value.as_deref(), audience),
            None => Ok(String::new()),
        };
        if let (Some(header), Some(value)) = (header, &value) {
            self.seen.lock().unwrap().push(Seen {
                header,
                credentials: ["x-serverless-authorization", "authorization"]
                    .iter()
                    .filter(|name| request.headers().contains_key(**name))
                    .count(),
                token: value.trim_start_matches("Bearer ").to_owned(),
                valid: verdict.is_ok(),
            });
        }
        if let Err(status) = verdict {
            let mut page = http::Response::new(tonic::body::Body::new(REFUSAL_PAGE.to_owned()));
            *page.status_mut() = http::StatusCode::from_u16(status).unwrap();
            page.headers_mut()
                .insert("content-type", "text/html; charset=UTF-8".parse().unwrap());
            return Ok(page);
        }
        let mut grpc = tonic::server::Grpc::new(tonic_prost::ProstCodec::default());
        Ok(match request.uri().path() {
            "/test.Greeter/SayHello" => grpc.unary(SayHello, request).await,
            "/test.Greeter/Count" => grpc.server_streaming(Count, request).await,
            _ => Status::unimplemented("no such method").into_http(),
        })
    }
}

struct SayHello;

impl tonic::server::UnaryService<HelloRequest> for SayHello {
    type Response = HelloReply;
    type Future = Pin<Box<dyn Future<Output = Result<tonic::Response<HelloReply>, Status>> + Send>>;

    fn call(&mut self, request: tonic::Request<HelloRequest>) -> Self::Future {
        let name = request.into_inner().name;
        Box::pin(async move {
            Ok(tonic::Response::new(HelloReply {
                message: format!("hello {name}"),
            }))
        })
    }
}

struct Count;

type Replies = Pin<Box<dyn futures_util::Stream<Item = Result<HelloReply, Status>> + Send>>;

impl tonic::server::ServerStreamingService<HelloRequest> for Count {
    type Response = HelloReply;
    type ResponseStream = Replies;
    type Future = Pin<Box<dyn Future<Output = Result<tonic::Response<Replies>, Status>> + Send>>;

    fn call(&mut self, request: tonic::Request<HelloRequest>) -> Self::Future {
        let name = request.into_inner().name;
        let replies = (1..=3).map(move |n| {
            Ok(HelloReply {
                message: format!("{name} {n}"),
            })
        });
        Box::pin(async move {
            Ok(tonic::Response::new(
                Box::pin(futures_util::stream::iter(replies)) as Replies,
            ))
        })
    }
}

/// A running service and what it saw.
struct Service {
    url: String,
    server: Arc<Server>,
}

impl Service {
    /// The service with its own front checking tokens from `identity`.
    async fn start(identity: &Arc<Identity>) -> Service {
        Service::serve(Some(identity)).await
    }

    /// The service alone, to put behind the emulator's front.
    async fn start_open() -> Service {
        Service::serve(None).await
    }

    async fn serve(identity: Option<&Arc<Identity>>) -> Service {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let server = Arc::new(Server {
            front: identity.map(|identity| (Arc::clone(identity), url.clone())),
            seen: Mutex::new(Vec::new()),
        });
        let serving = Arc::clone(&server);
        tokio::spawn(async move {
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                let server = Arc::clone(&serving);
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |request| {
                        Arc::clone(&server).handle(request)
                    });
                    // HTTP/1 and cleartext HTTP/2 on one port, as a Cloud Run front.
                    let _ = hyper_util::server::conn::auto::Builder::new(
                        hyper_util::rt::TokioExecutor::new(),
                    )
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
                });
            }
        });
        Service { url, server }
    }

    fn seen(&self) -> Vec<Seen> {
        self.server.seen.lock().unwrap().clone()
    }
}

#[tokio::test]
async fn unary_and_streaming_calls_carry_a_valid_token_and_forty_calls_mint_once() {
    let identity = Arc::new(Identity::start());
    let service = Service::start(&identity).await;
    let client = identity
        .client_for(TESTER, &service.url)
        .build()
        .await
        .unwrap();
    let mut greeter = GreeterClient::new(client.grpc_channel().unwrap());

    for n in 0..39 {
        let reply = greeter.say_hello(&format!("call {n}")).await.unwrap();
        assert_eq!(reply.message, format!("hello call {n}"));
    }
    let counted = greeter.count("sheep").await.unwrap();
    assert_eq!(counted, ["sheep 1", "sheep 2", "sheep 3"]);

    let seen = service.seen();
    assert_eq!(seen.len(), 40, "one token per call");
    assert!(seen.iter().all(|seen| seen.valid), "{seen:?}");
    assert!(seen.iter().all(|seen| seen.header == "authorization"));
    assert_eq!(
        identity.emulator.stats().id_tokens_minted,
        1,
        "40 calls, one mint (when the client was built)"
    );
}

#[tokio::test]
async fn the_token_goes_in_the_header_the_client_says() {
    let identity = Arc::new(Identity::start());
    let service = Service::start(&identity).await;
    let client = identity
        .client_for(TESTER, &service.url)
        .token_header(TokenHeader::XServerlessAuthorization)
        .build()
        .await
        .unwrap();
    let mut greeter = GreeterClient::new(client.grpc_channel().unwrap());
    greeter.say_hello("x").await.unwrap();
    let seen = service.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].header, "x-serverless-authorization");
    assert_eq!(seen[0].credentials, 1, "the token goes in one header");
    assert!(seen[0].valid);
}

#[tokio::test]
async fn a_call_after_the_token_expired_carries_a_fresh_one() {
    let identity = Arc::new(Identity::with(
        Emulator::builder().id_token_lifetime(Duration::from_secs(3)),
    ));
    let service = Service::start(&identity).await;
    let client = identity
        .client_for(TESTER, &service.url)
        .build()
        .await
        .unwrap();
    let channel: GrpcChannel = client.grpc_channel().unwrap();
    let mut greeter = GreeterClient::new(channel.clone());
    greeter.say_hello("before").await.unwrap();

    let first = client.id_token().await.unwrap();
    let wait = first
        .expires_at()
        .duration_since(SystemTime::now())
        .unwrap_or_default();
    tokio::time::sleep(wait + Duration::from_millis(200)).await;
    assert!(
        identity.verify(first.as_str()).is_none(),
        "the first token has expired"
    );

    // A clone of the channel made before the expiry, as a long suite would hold.
    let mut greeter = GreeterClient::new(channel);
    greeter.say_hello("after").await.unwrap();
    let seen = service.seen();
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[0].token, first.as_str());
    assert_ne!(seen[1].token, first.as_str(), "a new token after expiry");
    assert!(seen[1].valid, "{seen:?}");
    assert_eq!(identity.emulator.stats().id_tokens_minted, 2);
}

/// The diagnosis the HTTP client gives for the same request.
async fn http_diagnosis(client: &cloudrun_test::Client, path: &str) -> String {
    let response = client.post(path).send().await.unwrap();
    response
        .extensions()
        .get::<Diagnosis>()
        .expect("a refusal is diagnosed")
        .message()
        .to_owned()
}

#[tokio::test]
async fn a_non_invoker_gets_permission_denied_with_the_http_clients_diagnosis() {
    let identity = Arc::new(Identity::start());
    let service = Service::start(&identity).await;
    let client = identity
        .client_for(OUTSIDER, &service.url)
        .build()
        .await
        .unwrap();
    let mut greeter = GreeterClient::new(client.grpc_channel().unwrap());

    let status = greeter.say_hello("x").await.unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    let expected = http_diagnosis(&client, "/test.Greeter/SayHello").await;
    assert_eq!(status.message(), expected);
    assert!(status.message().contains("roles/run.invoker"), "{status:?}");
    assert!(status.message().contains(OUTSIDER), "{status:?}");
    let token = client.id_token().await.unwrap();
    assert!(
        !format!("{status:?}").contains(token.as_str()),
        "{status:?}"
    );

    // A server-streaming call is refused the same way.
    let status = greeter.count("x").await.unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
}

#[tokio::test]
async fn a_wrong_audience_gets_unauthenticated_with_the_audience_explained() {
    let identity = Arc::new(Identity::start());
    let service = Service::start(&identity).await;
    let client = identity
        .client_for(TESTER, &service.url)
        .audience("https://elsewhere.example")
        .build()
        .await
        .unwrap();
    let mut greeter = GreeterClient::new(client.grpc_channel().unwrap());

    let status = greeter.say_hello("x").await.unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    let message = status.message();
    assert!(message.contains("answered 401 Unauthorized"), "{message}");
    assert!(message.contains("https://elsewhere.example"), "{message}");
    assert!(
        message.contains(&format!(
            "tokens are minted for the service URL {}",
            service.url
        )),
        "{message}"
    );
    // The HTTP client says the same, after the one new token it tries.
    let expected = http_diagnosis(&client, "/test.Greeter/SayHello").await;
    let fix = |message: &str| {
        message
            .lines()
            .find(|line| line.contains("fix:"))
            .map(str::to_owned)
    };
    assert_eq!(fix(message), fix(&expected), "{message}\n---\n{expected}");
    assert!(!message.contains(client.id_token().await.unwrap().as_str()));
}

#[tokio::test]
async fn no_token_gets_permission_denied_saying_so() {
    let identity = Arc::new(Identity::start());
    let service = Service::start(&identity).await;
    let client = identity
        .client_for(TESTER, &service.url)
        .build()
        .await
        .unwrap()
        .without_auth();
    let mut greeter = GreeterClient::new(client.grpc_channel().unwrap());
    let status = greeter.say_hello("x").await.unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    assert!(status.message().contains("no token was sent"), "{status:?}");
    assert!(service.seen().is_empty(), "no token went out");
}

#[tokio::test]
async fn a_token_that_cannot_be_had_fails_the_call_with_its_error() {
    let identity = Arc::new(Identity::start());
    let service = Service::start(&identity).await;
    // Tokens from another emulator, which stops once the first one is minted.
    let minter = Identity::with(Emulator::builder().id_token_lifetime(Duration::from_secs(2)));
    let client = minter
        .client_for(TESTER, &service.url)
        .build()
        .await
        .unwrap();
    let expires_at = client.id_token().await.unwrap().expires_at();
    drop(minter);
    let mut greeter = GreeterClient::new(client.grpc_channel().unwrap());
    tokio::time::sleep(
        expires_at
            .duration_since(SystemTime::now())
            .unwrap_or_default(),
    )
    .await;

    let status = greeter.say_hello("x").await.unwrap_err();
    // The token endpoint is down: it may answer later.
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(
        status
            .message()
            .starts_with("no identity token for the call: "),
        "{status:?}"
    );
    let source = std::error::Error::source(&status).expect("the error is the source");
    let error = source
        .downcast_ref::<cloudrun_test::Error>()
        .expect("a cloudrun_test::Error");
    assert_eq!(
        error.kind(),
        cloudrun_test::ErrorKind::TokenEndpoint,
        "{error}"
    );
    assert!(service.seen().is_empty(), "nothing was sent");
}

/// Through the emulator's front, as through Cloud Run's: cleartext HTTP/2 end to end
/// (`--use-http2`), the front checking tokens and refusing with its HTML pages.
mod through_the_emulator {
    use super::*;
    use cloudrun_test_emulator::{ServiceConfig, Upstream};

    async fn greeter() -> (Identity, Service, String) {
        let service = Service::start_open().await;
        let identity = Identity::with(
            Emulator::builder().service(
                ServiceConfig::new("greeter")
                    .upstream(Upstream::Url(service.url.parse().unwrap()))
                    .use_http2(true)
                    .invoker(&format!("serviceAccount:{TESTER}")),
            ),
        );
        let url = identity
            .emulator
            .service_url("greeter")
            .unwrap()
            .to_string();
        (identity, service, url)
    }

    #[tokio::test]
    async fn unary_and_streaming_calls_pass_and_forty_calls_mint_once() {
        let (identity, service, url) = greeter().await;
        let client = identity.client_for(TESTER, &url).build().await.unwrap();
        let mut greeter = GreeterClient::new(client.grpc_channel().unwrap());
        for n in 0..39 {
            let reply = greeter.say_hello(&format!("call {n}")).await.unwrap();
            assert_eq!(reply.message, format!("hello call {n}"));
        }
        assert_eq!(
            greeter.count("sheep").await.unwrap(),
            ["sheep 1", "sheep 2", "sheep 3"]
        );
        assert_eq!(identity.emulator.stats().id_tokens_minted, 1);
        let seen = service.seen();
        assert_eq!(seen.len(), 40);
        // What reached the service is the token without its signature, as on Cloud Run.
        assert!(
            seen.iter()
                .all(|seen| seen.token.ends_with(".SIGNATURE_REMOVED_BY_GOOGLE")),
            "{seen:?}"
        );
    }

    #[tokio::test]
    async fn a_non_invoker_gets_permission_denied_with_the_invoker_fix() {
        let (identity, service, url) = greeter().await;
        let client = identity.client_for(OUTSIDER, &url).build().await.unwrap();
        let mut greeter = GreeterClient::new(client.grpc_channel().unwrap());
        let status = greeter.say_hello("x").await.unwrap_err();
        assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
        assert!(
            status.message().contains("--role=roles/run.invoker"),
            "{status:?}"
        );
        assert!(
            status.message().contains("the emulator says:"),
            "{status:?}"
        );
        assert!(service.seen().is_empty());
    }

    #[tokio::test]
    async fn a_wrong_audience_gets_unauthenticated_with_the_audience_explained() {
        let (identity, service, url) = greeter().await;
        let client = identity
            .client_for(TESTER, &url)
            .audience("https://elsewhere.example")
            .build()
            .await
            .unwrap();
        let mut greeter = GreeterClient::new(client.grpc_channel().unwrap());
        let status = greeter.say_hello("x").await.unwrap_err();
        assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
        assert!(
            status.message().contains("https://elsewhere.example"),
            "{status:?}"
        );
        assert!(
            status.message().contains("fix: remove `audience"),
            "{status:?}"
        );
        assert!(service.seen().is_empty());
    }
}
