//! The process-wide token cache, and the one thread that mints tokens.
//!
//! Every `#[cloudrun_test]` builds its own tokio runtime and drops it at the end, so
//! nothing here may live on a test's runtime: a connection pool or a task spawned
//! there dies with that test (reqwest #1148). Instead all minting runs on a dedicated
//! background runtime with its own HTTP client (built only once a fetch needs it), and
//! tests wait for results through `tokio::sync::watch`, which works from any runtime. A
//! test whose runtime dies while waiting strands nobody: the mint goes on and the others
//! get its result.
//!
//! [`SingleFlight`] makes N tests that start together cause one mint per key.

use std::borrow::Borrow;
use std::collections::HashMap;
use std::future::Future;
use std::hash::Hash;
use std::sync::{Arc, LazyLock, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::watch;

use crate::disk_cache::DiskCache;
use crate::error::Error;
use crate::token::Token;

/// The runtime that all token and lookup fetches run on.
static FETCHER: LazyLock<tokio::runtime::Runtime> = LazyLock::new(|| {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("cloudrun-test-fetcher")
        .enable_all()
        .build()
        .expect("starting cloudrun-test's token fetcher thread failed")
});

/// The fetcher's HTTP client, built on first use: loading the system's CA certificates
/// takes milliseconds, which a process served by the disk cache never needs to spend.
pub(crate) fn fetcher_http() -> Result<&'static reqwest::Client, Error> {
    static HTTP: LazyLock<Result<reqwest::Client, Error>> = LazyLock::new(|| {
        let builder = || {
            reqwest::Client::builder()
                .connect_timeout(Duration::from_secs(10))
                .timeout(Duration::from_secs(60))
        };
        // Proxies by `transport`'s rules only. With an invalid HTTPS_PROXY it uses none:
        // every request carrying a credential is refused before it gets here
        // (`transport::check_destination` names the variable), and the metadata server,
        // which gets no credential, is never proxied anyway.
        crate::transport::configure(builder())
            .unwrap_or_else(|_| {
                builder()
                    .no_proxy()
                    .dns_resolver(Arc::new(crate::dns::Resolver))
            })
            .build()
            // E.g. SSL_CERT_FILE naming a file without certificates: no CA roots.
            .map_err(|error| {
                Error::setting(
                    format!(
                        "building the HTTP client for Google's token endpoints failed: {}",
                        crate::error::describe_http_error(&error)
                    ),
                    "check that SSL_CERT_FILE and SSL_CERT_DIR, if set, name readable CA \
                     certificates (unset them to use the system's)",
                )
                .with_source(error)
            })
    });
    HTTP.as_ref().map_err(Clone::clone)
}

type Shared<V> = watch::Receiver<Option<Result<V, Error>>>;

enum Slot<V> {
    Ready(V),
    Pending(Shared<V>),
}

/// A map where concurrent requests for a missing or stale key share one fetch.
pub(crate) struct SingleFlight<K, V> {
    slots: Mutex<HashMap<K, Slot<V>>>,
}

impl<K, V> SingleFlight<K, V>
where
    K: Eq + Hash + Clone + Send + 'static,
    V: Clone + Send + Sync + 'static,
{
    pub(crate) fn new() -> Self {
        SingleFlight {
            slots: Mutex::new(HashMap::new()),
        }
    }

    /// The cached value for `key` if `is_fresh` accepts it, without fetching: the hot
    /// path, one lock and one lookup by a borrowed key.
    pub(crate) fn ready<Q>(&self, key: &Q, is_fresh: impl Fn(&V) -> bool) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        match self.lock().get(key) {
            Some(Slot::Ready(value)) if is_fresh(value) => Some(value.clone()),
            _ => None,
        }
    }

    /// The cached value for `key` if `is_fresh` accepts it; otherwise the result of one
    /// shared run of `fetch` on the fetcher runtime. Failures are not cached. `fetch`
    /// takes [`fetcher_http`] itself when it needs it (not on a disk cache hit).
    pub(crate) async fn get_lazy<F>(
        &'static self,
        key: K,
        is_fresh: impl Fn(&V) -> bool,
        fetch: impl FnOnce() -> F,
    ) -> Result<V, Error>
    where
        F: Future<Output = Result<V, Error>> + Send + 'static,
    {
        let mut waiting = {
            let mut slots = self.lock();
            match slots.get(&key) {
                Some(Slot::Ready(value)) if is_fresh(value) => return Ok(value.clone()),
                Some(Slot::Pending(shared)) => shared.clone(),
                _ => {
                    let (sender, receiver) = watch::channel(None);
                    slots.insert(key.clone(), Slot::Pending(receiver.clone()));
                    let fetch = fetch();
                    let finished_key = key.clone();
                    FETCHER.spawn(async move {
                        // The fetch runs as a task of its own so that a panic in it ends
                        // only that task: it comes back here as an error for every waiter,
                        // and `finish` frees the slot for the next caller to try again.
                        let result = match FETCHER.spawn(fetch).await {
                            Ok(result) => result,
                            Err(stopped) => Err(Error::internal(format!(
                                "the token fetch {}; the next request tries again",
                                if stopped.is_panic() {
                                    "panicked (its message is on stderr)"
                                } else {
                                    "was cancelled"
                                }
                            ))),
                        };
                        self.finish(finished_key, &result);
                        // Nobody may be waiting any more; that is fine.
                        let _ = sender.send(Some(result));
                    });
                    receiver
                }
            }
        };
        let answer = match waiting.wait_for(Option::is_some).await {
            Ok(result) => Some(result.clone().expect("wait_for returns a filled slot")),
            Err(_) => None,
        };
        match answer {
            Some(result) => result,
            None => {
                // The fetch's task ended without an answer (its runtime is gone): free
                // the slot, if it is still that fetch's, so that the next caller retries.
                let mut slots = self.lock();
                if let Some(Slot::Pending(shared)) = slots.get(&key)
                    && shared.same_channel(&waiting)
                {
                    slots.remove(&key);
                }
                Err(Error::internal(
                    "the background token fetch stopped without an answer; the next request \
                     tries again",
                ))
            }
        }
    }

    fn finish(&self, key: K, result: &Result<V, Error>) {
        let mut slots = self.lock();
        match result {
            Ok(value) => {
                slots.insert(key, Slot::Ready(value.clone()));
            }
            Err(_) => {
                slots.remove(&key);
            }
        }
    }

    /// Keeps `value` for `key`, found without fetching (on disk), unless a fetch for
    /// `key` is under way: its waiters get that fetch's result.
    pub(crate) fn offer(&self, key: K, value: V) {
        let mut slots = self.lock();
        if !matches!(slots.get(&key), Some(Slot::Pending(_))) {
            slots.insert(key, Slot::Ready(value));
        }
    }

    /// Forgets the value for `key` if `matches` says it is the bad one.
    pub(crate) fn forget_if(&self, key: &K, matches: impl Fn(&V) -> bool) {
        let mut slots = self.lock();
        if let Some(Slot::Ready(value)) = slots.get(key)
            && matches(value)
        {
            slots.remove(key);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<K, Slot<V>>> {
        // A panic while holding the lock leaves the map consistent (every write is one
        // insert or remove), so a poisoned lock is safe to use.
        self.slots.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// `"{credential fingerprint}|id:{audience}"` or `"{credential fingerprint}|access-token"`:
/// one string, so that a lookup hashes once, and the disk cache's key too.
type TokenKey = String;

static TOKENS: LazyLock<SingleFlight<TokenKey, Token>> = LazyLock::new(SingleFlight::new);

/// The key of an identity token for `audience` minted with the credential `fingerprint`.
pub(crate) fn id_token_key(fingerprint: &str, audience: &str) -> TokenKey {
    let mut key = String::with_capacity(fingerprint.len() + 4 + audience.len());
    key.push_str(fingerprint);
    key.push_str("|id:");
    key.push_str(audience);
    key
}

/// The key of an access token minted with the credential `fingerprint`.
pub(crate) fn access_token_key(fingerprint: &str) -> TokenKey {
    format!("{fingerprint}|access-token")
}

/// The token for `key`: the cached one while it is fresh, else the result of one
/// shared run of the future `mint` builds (on a miss only), on the fetcher runtime,
/// through the disk cache when `on_disk`. A fresh token on disk is read on the caller's
/// thread, and the future takes [`fetcher_http`] itself when it runs, so that a disk
/// cache hit starts no fetcher thread and builds no HTTP client.
pub(crate) async fn token<F>(
    key: TokenKey,
    on_disk: bool,
    mint: impl FnOnce() -> F,
) -> Result<Token, Error>
where
    F: Future<Output = Result<Token, Error>> + Send + 'static,
{
    // The hot path: a fresh token, with nothing built for a fetch.
    if let Some(token) = TOKENS.ready(&key, Token::is_fresh) {
        return Ok(token);
    }
    // The warm path of a new process: a token another process stored, read here on the
    // caller's thread (one small file), so that neither the fetcher's runtime nor its
    // HTTP client is built. A miss takes the locked path below, which reads again.
    if let Some(token) = DiskCache::get()
        .filter(|_| on_disk)
        .and_then(|disk| disk.peek(&key))
    {
        TOKENS.offer(key, token.clone());
        return Ok(token);
    }
    let disk_key = key.clone();
    TOKENS
        .get_lazy(key, Token::is_fresh, move || {
            let mint = mint();
            async move {
                match DiskCache::get().filter(|_| on_disk) {
                    Some(disk) => disk.get_or_mint(&disk_key, mint).await,
                    None => mint.await,
                }
            }
        })
        .await
}

/// Drops `bad` from the cache (and the disk cache when `on_disk`) if it is still the
/// token for `key`, so that the next request mints a new one.
pub(crate) fn forget(key: &TokenKey, on_disk: bool, bad: &Token) {
    // The same mint, not the same text: a re-mint within the same second gives the
    // same text, which a late 401 on the old token must not make us mint again.
    TOKENS.forget_if(key, |cached| cached.same_mint(bad));
    // Else the re-mint after a 401 would be served the same token from disk.
    if let Some(disk) = DiskCache::get().filter(|_| on_disk) {
        disk.forget(key, bad);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;

    /// A fetch that panics, or fails, leaves nothing behind: every waiter gets an error
    /// and the next caller fetches again.
    #[tokio::test]
    async fn a_panicking_or_failing_fetch_poisons_nothing() {
        static FLIGHTS: LazyLock<SingleFlight<String, u32>> = LazyLock::new(SingleFlight::new);
        let panicking = || async {
            tokio::time::sleep(Duration::from_millis(50)).await;
            if std::hint::black_box(true) {
                panic!("a fetch that panics (expected by this test)");
            }
            Ok(0)
        };
        // Two callers share the panicking fetch; both get the error.
        let (first, second) = tokio::join!(
            FLIGHTS.get_lazy("key".into(), |_| true, panicking),
            FLIGHTS.get_lazy("key".into(), |_| true, || async { Ok(99) }),
        );
        for result in [first, second] {
            match result {
                Err(error) if error.kind() == ErrorKind::Internal => {
                    assert!(error.to_string().contains("panicked"), "{error}")
                }
                other => panic!("expected the panic as an error, got {other:?}"),
            }
        }
        // The next caller fetches again, and its value is kept.
        let again = FLIGHTS.get_lazy("key".into(), |_| true, || async { Ok(1) });
        assert_eq!(again.await.unwrap(), 1);
        let cached = FLIGHTS.get_lazy("key".into(), |_| true, || async { Ok(2) });
        assert_eq!(cached.await.unwrap(), 1);

        // A failure is not kept either.
        let failed = FLIGHTS.get_lazy(
            "other".into(),
            |_| true,
            || async { Err(Error::internal("refused")) },
        );
        assert!(failed.await.is_err());
        let after = FLIGHTS.get_lazy("other".into(), |_| true, || async { Ok(3) });
        assert_eq!(after.await.unwrap(), 3);
    }
}
