//! The process-wide token cache, and the one thread that mints tokens.
//!
//! Every `#[cloudrun_test]` builds its own tokio runtime and drops it at the end, so
//! nothing here may live on a test's runtime: a connection pool or a task spawned
//! there dies with that test (reqwest #1148). Instead all minting runs on a dedicated
//! background runtime with its own HTTP client, and tests wait for results through
//! `tokio::sync::watch`, which works from any runtime. A test whose runtime dies while
//! waiting strands nobody: the mint goes on and the others get its result.
//!
//! [`SingleFlight`] makes N tests that start together cause one mint per key.

use std::collections::HashMap;
use std::future::Future;
use std::hash::Hash;
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;

use tokio::sync::watch;

use crate::credentials::CredentialSource;
use crate::disk_cache::DiskCache;
use crate::error::Error;
use crate::token::Token;

/// The runtime and HTTP client that all token and lookup fetches run on.
struct Fetcher {
    runtime: tokio::runtime::Runtime,
    http: reqwest::Client,
}

static FETCHER: LazyLock<Fetcher> = LazyLock::new(|| {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("cloudrun-test-fetcher")
        .enable_all()
        .build()
        .expect("starting cloudrun-test's token fetcher thread failed");
    let http = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(10))
        .timeout(Duration::from_secs(60))
        .build()
        .expect("building the token fetcher's HTTP client failed");
    Fetcher { runtime, http }
});

/// Runs `job` on the fetcher's runtime with its HTTP client.
pub(crate) fn spawn_fetch<T, F>(
    job: impl FnOnce(reqwest::Client) -> F,
) -> tokio::task::JoinHandle<T>
where
    F: Future<Output = T> + Send + 'static,
    T: Send + 'static,
{
    let fetcher = &*FETCHER;
    fetcher.runtime.spawn(job(fetcher.http.clone()))
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

    /// The cached value for `key` if `is_fresh` accepts it; otherwise the result of one
    /// shared run of `fetch` on the fetcher runtime. Failures are not cached.
    pub(crate) async fn get<F>(
        &'static self,
        key: K,
        is_fresh: impl Fn(&V) -> bool,
        fetch: impl FnOnce(reqwest::Client) -> F,
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
                    let job = fetch;
                    spawn_fetch(move |http| {
                        let fetch = job(http);
                        async move {
                            let result = fetch.await;
                            self.finish(key, &result);
                            // Nobody may be waiting any more; that is fine.
                            let _ = sender.send(Some(result));
                        }
                    });
                    receiver
                }
            }
        };
        match waiting.wait_for(Option::is_some).await {
            Ok(result) => result.clone().expect("wait_for returns a filled slot"),
            Err(_) => {
                // The fetch task ended without an answer (it panicked): let the next caller retry.
                Err(Error::Internal(
                    "the background token fetch stopped without an answer".into(),
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
        self.slots
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }
}

/// (credential fingerprint, audience or `"access-token"`)
type TokenKey = (String, String);

static TOKENS: LazyLock<SingleFlight<TokenKey, Token>> = LazyLock::new(SingleFlight::new);

pub(crate) async fn id_token(
    source: &Arc<dyn CredentialSource>,
    audience: &str,
) -> Result<Token, Error> {
    let key = (source.fingerprint(), format!("id:{audience}"));
    let source = Arc::clone(source);
    let audience = audience.to_owned();
    let disk_key = format!("{}|{}", key.0, key.1);
    TOKENS
        .get(key, Token::is_fresh, move |http| async move {
            let mint = source.mint_id_token(&http, &audience);
            match DiskCache::get().filter(|_| source.worth_caching_on_disk()) {
                Some(disk) => disk.get_or_mint(&disk_key, mint).await,
                None => mint.await,
            }
        })
        .await
}

pub(crate) async fn access_token(source: &Arc<dyn CredentialSource>) -> Result<Token, Error> {
    let key = (source.fingerprint(), "access-token".to_owned());
    let source = Arc::clone(source);
    let disk_key = format!("{}|{}", key.0, key.1);
    TOKENS
        .get(key, Token::is_fresh, move |http| async move {
            let mint = source.mint_access_token(&http);
            match DiskCache::get().filter(|_| source.worth_caching_on_disk()) {
                Some(disk) => disk.get_or_mint(&disk_key, mint).await,
                None => mint.await,
            }
        })
        .await
}

pub(crate) fn forget_id_token(source: &Arc<dyn CredentialSource>, audience: &str, bad: &Token) {
    let key = (source.fingerprint(), format!("id:{audience}"));
    TOKENS.forget_if(&key, |cached| cached.same_secret(bad));
}
