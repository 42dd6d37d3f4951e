//! How often a 401 may force a new token: at most once per [`HOLD_OFF`] for each
//! (credentials, audience) when re-minting does not help.
//!
//! A 401 can mean the keys rotated or the token was revoked (a new token fixes it) or
//! that the token is for the wrong audience (no new token ever will). The first 401
//! forces one re-mint and one retry, as before, and is remembered here, process-wide,
//! with the token that was refused. Then, for [`HOLD_OFF`], a 401 on any other token (the
//! fresh one, or one minted since) means re-minting did not help, as does a retry
//! refused again; that is also noted in the disk cache, so that every test process of
//! a nextest run shares it. Requests with these credentials and this audience then get
//! their 401 at once with the cached token, instead of minting on every request (with
//! gcloud, a second each, and a storm of mints at Google). A 401 on the refused token itself
//! (a request that sent it before the re-mint) joins that re-mint: the cache mints
//! once per refused token. A re-mint that helped is forgotten: it costs nothing.

use std::collections::HashMap;
use std::sync::{LazyLock, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::disk_cache::DiskCache;
use crate::token::Token;

/// How long a forced re-mint holds off the next one unless it helped.
pub(crate) const HOLD_OFF: Duration = Duration::from_secs(60);

/// The last forced re-mint for one (credentials, audience).
struct Forced {
    at: Instant,
    /// The token whose 401 forced it: that mint, compared as such (a re-mint within
    /// the same second gives the same text).
    refused: Token,
    /// A token minted since was refused too.
    did_not_help: bool,
}

/// `"{credential fingerprint}|{audience}"` -> its last forced re-mint, while it counts.
static FORCED: LazyLock<Mutex<HashMap<String, Forced>>> =
    LazyLock::new(|| Mutex::new(HashMap::new()));

fn key(fingerprint: &str, audience: &str) -> String {
    format!("{fingerprint}|{audience}")
}

fn lock() -> MutexGuard<'static, HashMap<String, Forced>> {
    // Every write is one insert, update or removal: a poisoned map is still a valid one.
    FORCED.lock().unwrap_or_else(|poison| poison.into_inner())
}

/// After a 401 on `sent`: `None` to force a new token (and then [`forcing`]), or how
/// long ago a forced re-mint for these credentials and audience was made that did
/// not help (`sent` is newer than the token it replaced, or its retry was refused), in
/// this process or (through the disk cache) in another one of this user's.
pub(crate) fn held_off(fingerprint: &str, audience: &str, sent: &Token) -> Option<Duration> {
    let key = key(fingerprint, audience);
    let here = lock().get(&key).and_then(|forced| {
        let ago = forced.at.elapsed();
        (ago < HOLD_OFF && (forced.did_not_help || !forced.refused.same_mint(sent))).then_some(ago)
    });
    here.or_else(|| DiskCache::get()?.refused_remint_ago(&key, HOLD_OFF))
        .filter(|ago| *ago < HOLD_OFF)
}

/// A new token is forced because `refused` was refused. A re-mint already under way
/// for the same refused token stays the one that counts.
pub(crate) fn forcing(fingerprint: &str, audience: &str, refused: &Token) {
    let now = Instant::now();
    let mut map = lock();
    // Keeps the map as small as the number of (credentials, audience) failing now.
    map.retain(|_, forced| now.duration_since(forced.at) < HOLD_OFF);
    map.entry(key(fingerprint, audience))
        .or_insert_with(|| Forced {
            at: now,
            refused: refused.clone(),
            did_not_help: false,
        });
}

/// The retry with the fresh token was refused too: noted here and on disk.
pub(crate) fn did_not_help(fingerprint: &str, audience: &str) {
    let key = key(fingerprint, audience);
    if let Some(forced) = lock().get_mut(&key) {
        forced.did_not_help = true;
    }
    if let Some(disk) = DiskCache::get() {
        disk.remember_refused_remint(&key, HOLD_OFF);
    }
}

/// The retry with the fresh token was not refused: the next 401 may force one again.
pub(crate) fn helped(fingerprint: &str, audience: &str) {
    let mut map = lock();
    let key = key(fingerprint, audience);
    if map.get(&key).is_some_and(|forced| !forced.did_not_help) {
        map.remove(&key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(text: &str) -> Token {
        Token::from_access_token(text.to_owned(), Duration::from_secs(600))
    }

    /// A fingerprint no other run has used: a refused re-mint is also noted in the
    /// user's disk cache, where an earlier run's note would still hold.
    fn fp(name: &str) -> String {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos();
        format!("unit-{name}-{}-{nanos}", std::process::id())
    }

    #[test]
    fn a_fresh_token_refused_too_holds_off_only_its_own_credentials_and_audience() {
        let unit_fp = fp("unit-fp");
        let other_fp = fp("other-fp");
        let (old, fresh) = (token("old-a"), token("fresh-a"));
        assert_eq!(held_off(&unit_fp, "https://a.example", &old), None);
        forcing(&unit_fp, "https://a.example", &old);
        // Another request that sent the refused token joins the re-mint under way.
        assert_eq!(held_off(&unit_fp, "https://a.example", &old), None);
        // One that sent a newer token, refused too: re-minting did not help.
        assert!(held_off(&unit_fp, "https://a.example", &fresh).is_some_and(|ago| ago < HOLD_OFF));
        assert_eq!(held_off(&unit_fp, "https://b.example", &fresh), None);
        assert_eq!(held_off(&other_fp, "https://a.example", &fresh), None);
        // Once the retry was refused, even the old token is held off.
        did_not_help(&unit_fp, "https://a.example");
        assert!(held_off(&unit_fp, "https://a.example", &old).is_some());
        // And nothing undoes that within the minute.
        helped(&unit_fp, "https://a.example");
        assert!(held_off(&unit_fp, "https://a.example", &fresh).is_some());
    }

    #[test]
    fn a_re_mint_that_helped_holds_nothing_off() {
        let helped_fp = fp("helped-fp");
        let (old, fresh) = (token("old-h"), token("fresh-h"));
        forcing(&helped_fp, "https://h.example", &old);
        helped(&helped_fp, "https://h.example");
        assert_eq!(held_off(&helped_fp, "https://h.example", &fresh), None);
    }

    #[test]
    fn a_poisoned_map_still_answers() {
        let poisoned_fp = fp("poisoned-fp");
        let _ = std::thread::spawn(|| {
            let _guard = lock();
            panic!("poisoning the map on purpose");
        })
        .join();
        forcing(&poisoned_fp, "https://c.example", &token("old-p"));
        did_not_help(&poisoned_fp, "https://c.example");
        assert!(held_off(&poisoned_fp, "https://c.example", &token("old-p")).is_some());
    }

    #[test]
    fn an_old_re_mint_holds_off_nothing_and_goes() {
        let old_fp = fp("old-fp");
        let new_fp = fp("new-fp");
        let Some(long_ago) = Instant::now().checked_sub(HOLD_OFF + Duration::from_secs(1)) else {
            return;
        };
        let old = token("old-o");
        lock().insert(
            key(&old_fp, "https://d.example"),
            Forced {
                at: long_ago,
                refused: old.clone(),
                did_not_help: true,
            },
        );
        assert_eq!(
            held_off(&old_fp, "https://d.example", &token("fresh-o")),
            None
        );
        // It goes at the next write.
        forcing(&new_fp, "https://d.example", &old);
        assert!(!lock().contains_key(&key(&old_fp, "https://d.example")));
    }
}
