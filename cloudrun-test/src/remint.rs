//! How often a 401 may force a new token: at most once a minute per (credentials,
//! audience) when re-minting did not help.
//!
//! A 401 can mean the keys rotated or the token was revoked (a new token fixes it) or
//! that the token is for the wrong audience (no new token ever will). The first 401
//! forces one re-mint and one retry, as before. When the fresh token is refused too,
//! that is remembered here, process-wide and in the disk cache (so every test process
//! of a nextest run shares it): for the next minute, requests with these
//! credentials and this audience get their 401 straight away with the cached token,
//! instead of minting on every request (with gcloud, a second each, and a storm of
//! mints at Google). A re-mint that helped costs nothing.

use std::collections::HashMap;
use std::sync::{LazyLock, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::disk_cache::DiskCache;

/// How long a re-mint that did not help holds off the next one.
pub(crate) const HOLD_OFF: Duration = Duration::from_secs(60);

/// `"{credential fingerprint}|{audience}"` -> when a fresh token was refused too.
static NOT_HELPED: LazyLock<Mutex<HashMap<String, Instant>>> =
    LazyLock::new(|| Mutex::new(HashMap::new()));

fn key(fingerprint: &str, audience: &str) -> String {
    format!("{fingerprint}|{audience}")
}

fn lock() -> MutexGuard<'static, HashMap<String, Instant>> {
    // Every write is one insert or retain: a poisoned map is still a valid one.
    NOT_HELPED
        .lock()
        .unwrap_or_else(|poison| poison.into_inner())
}

/// How long ago a re-mint for these credentials and audience did not help, if that
/// was within [`HOLD_OFF`], in this process or (through the disk cache) in another one
/// of this user's, such as the other tests of a nextest run: then no new token is forced.
pub(crate) fn held_off(fingerprint: &str, audience: &str) -> Option<Duration> {
    let key = key(fingerprint, audience);
    let here = lock().get(&key).map(Instant::elapsed);
    here.or_else(|| DiskCache::get()?.refused_remint_ago(&key))
        .filter(|ago| *ago < HOLD_OFF)
}

/// Remembers that a freshly minted token was refused too, here and on disk.
pub(crate) fn did_not_help(fingerprint: &str, audience: &str) {
    let now = Instant::now();
    let key = key(fingerprint, audience);
    if let Some(disk) = DiskCache::get() {
        disk.remember_refused_remint(&key, HOLD_OFF);
    }
    let mut map = lock();
    // Keeps the map as small as the number of (credentials, audience) failing now.
    map.retain(|_, when| now.duration_since(*when) < HOLD_OFF);
    map.insert(key, now);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_re_mint_holds_off_only_its_own_credentials_and_audience() {
        assert_eq!(held_off("unit-fp", "https://a.example"), None);
        did_not_help("unit-fp", "https://a.example");
        assert!(held_off("unit-fp", "https://a.example").is_some_and(|ago| ago < HOLD_OFF));
        assert_eq!(held_off("unit-fp", "https://b.example"), None);
        assert_eq!(held_off("other-fp", "https://a.example"), None);
    }

    #[test]
    fn a_poisoned_map_still_answers() {
        let _ = std::thread::spawn(|| {
            let _guard = lock();
            panic!("poisoning the map on purpose");
        })
        .join();
        did_not_help("poisoned-fp", "https://c.example");
        assert!(held_off("poisoned-fp", "https://c.example").is_some());
    }

    #[test]
    fn an_old_entry_holds_off_nothing() {
        let long_ago = Instant::now().checked_sub(HOLD_OFF + Duration::from_secs(1));
        if let Some(long_ago) = long_ago {
            lock().insert(key("old-fp", "https://d.example"), long_ago);
            assert_eq!(held_off("old-fp", "https://d.example"), None);
            // And it goes at the next write.
            did_not_help("new-fp", "https://d.example");
            assert!(!lock().contains_key(&key("old-fp", "https://d.example")));
        }
    }
}
