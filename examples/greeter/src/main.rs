//! A small gRPC service for Cloud Run: it listens on $PORT, as Cloud Run requires, and
//! speaks HTTP/2 without TLS (h2c), as Cloud Run sends it to a service deployed with
//! `--use-http2`.

use greeter::{GreeterServer, GreeterService};

#[tokio::main]
async fn main() {
    let port = std::env::var("PORT").unwrap_or_else(|_| "8080".into());
    let listener =
        match tokio::net::TcpListener::bind(("0.0.0.0", port.parse().unwrap_or(8080))).await {
            Ok(listener) => listener,
            Err(error) => {
                eprintln!("greeter: cannot listen on port {port}: {error}");
                std::process::exit(1);
            }
        };
    eprintln!("greeter: listening on port {port}");
    let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
    if let Err(error) = tonic::transport::Server::builder()
        .add_service(GreeterServer::new(GreeterService))
        .serve_with_incoming(incoming)
        .await
    {
        eprintln!("greeter: server failed: {error}");
        std::process::exit(1);
    }
}
