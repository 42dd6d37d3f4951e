//! `token-probe URL|--service=NAME [REQUESTS]`: one process that does what one test
//! does, for the tests and benchmarks of the token and lookup caches across processes
//! (as `cargo nextest run` or the CLI run them). Credentials, settings and the disk
//! cache come from the environment, exactly as in a test; it builds a client for URL
//! (or for service NAME, resolved as a test resolves it), sends REQUESTS (default 1)
//! `GET /` and prints `status=CODE` for each. Exits 0 when every answer was 200.
//! Never prints a token.

use std::process::ExitCode;

use cloudrun_test::Client;

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let Some(url) = args.next() else {
        eprintln!("usage: token-probe URL|--service=NAME [REQUESTS]");
        return ExitCode::from(2);
    };
    let requests: usize = match args.next().map(|count| count.parse()) {
        None => 1,
        Some(Ok(count)) => count,
        Some(Err(_)) => {
            eprintln!("REQUESTS must be a number");
            return ExitCode::from(2);
        }
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    runtime.block_on(async {
        let builder = match url.strip_prefix("--service=") {
            Some(service) => Client::builder().service(service),
            None => Client::builder().url(url),
        };
        let client = match builder.build().await {
            Ok(client) => client,
            Err(error) => {
                eprintln!("setup failed: {error}");
                return ExitCode::FAILURE;
            }
        };
        let mut all_ok = true;
        for _ in 0..requests {
            match client.get("/").send().await {
                Ok(response) => {
                    println!("status={}", response.status().as_u16());
                    all_ok &= response.status().is_success();
                }
                Err(error) => {
                    eprintln!("request failed: {error}");
                    all_ok = false;
                }
            }
        }
        if all_ok {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        }
    })
}
