//! Name resolution whose failures can be told apart by type.
//!
//! reqwest's own resolver reports a host name that does not resolve as an `io::Error`
//! of no stable kind, inside an error type hyper-util does not export: only its text
//! says "dns error". Resolving through [`Resolver`] (the same system lookup) wraps that
//! failure in [`Unresolved`], so the retry and diagnosis code can ask
//! [`is_unresolved`] instead of reading messages.

use std::error::Error as StdError;
use std::io;

use reqwest::dns::{Addrs, Name, Resolve, Resolving};

/// The system's resolver (`getaddrinfo`, as reqwest's default), with typed failures.
pub(crate) struct Resolver;

impl Resolve for Resolver {
    fn resolve(&self, name: Name) -> Resolving {
        // Port 0: reqwest puts the URL's port in (a name is never an IP literal here).
        let host = format!("{}:0", name.as_str());
        Box::pin(async move {
            match tokio::net::lookup_host(host).await {
                Ok(addrs) => Ok(Box::new(addrs) as Addrs),
                Err(error) => Err(Box::new(Unresolved(error)) as Box<dyn StdError + Send + Sync>),
            }
        })
    }
}

/// A host name that did not resolve. Shown exactly as the system's error.
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub(crate) struct Unresolved(io::Error);

/// Whether `error` or one of its causes is a host name that did not resolve.
pub(crate) fn is_unresolved(error: &(dyn StdError + 'static)) -> bool {
    std::iter::successors(Some(error), |&cause| cause.source())
        .any(|cause| cause.is::<Unresolved>())
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn get(url: &str) -> reqwest::Error {
        let http = crate::transport::configure(reqwest::Client::builder())
            .unwrap()
            .build()
            .unwrap();
        http.get(url)
            .timeout(std::time::Duration::from_secs(20))
            .send()
            .await
            .unwrap_err()
    }

    /// `.invalid` never resolves (RFC 6761); a refused connection is no DNS failure.
    #[tokio::test]
    async fn a_name_that_does_not_resolve_is_told_apart_by_type() {
        let unresolved = get("http://does-not-exist.invalid/").await;
        assert!(is_unresolved(&unresolved), "{unresolved:?}");
        assert!(crate::retry::is_dns_failure(&unresolved));
        assert!(!crate::retry::is_transient(&unresolved));
        let port = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            listener.local_addr().unwrap().port()
        };
        let refused = get(&format!("http://127.0.0.1:{port}/")).await;
        assert!(!is_unresolved(&refused), "{refused:?}");
        assert!(crate::retry::is_transient(&refused));
        // `localhost` is pinned to loopback, never asked of the resolver.
        let local = get(&format!("http://localhost:{port}/")).await;
        assert!(!is_unresolved(&local), "{local:?}");
    }
}
