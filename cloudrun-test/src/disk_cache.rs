//! The on-disk token cache, shared by every process of the same user.
//!
//! `cargo nextest run` starts a process per test and the CLI a process per call, so
//! the in-memory cache alone would mint once per process. Here a token is kept in a
//! file (mode 0600, in a 0700 folder, written by atomic rename) and a file lock makes
//! concurrent processes mint once. Files are named by a hash of (credential
//! fingerprint, audience) and never trusted past the token's expiry minus its margin;
//! a corrupt or foreign file is ignored and replaced. After each mint, files of tokens
//! that expired over [`PRUNE_AFTER`] ago are deleted, so the folder does not grow with
//! every key and audience ever used.
//!
//! Nothing in the folder is trusted blindly: it is used only if it is this user's and
//! others cannot write to it, and every file is opened through [`crate::owner_only`]
//! (no link followed, no FIFO waited on, only regular files of this user that nobody
//! else may read). An entry's numbers are checked too: times past what a clock holds,
//! or a lifetime longer than any token's, make it corrupt, so it is replaced.
//!
//! The Admin API's answers (a service's URLs, see `resolve`) are kept here too, for
//! [`LOOKUP_LIFETIME`], under the same rules and lock, so that a run of many processes
//! looks a service up once. Their key holds the credential's fingerprint: another
//! identity may be answered otherwise, so it looks up for itself.
//!
//! On Windows there are no modes: the folder must be inside the user's profile
//! (`%LOCALAPPDATA%\cloudrun-test` by default), closed to other users by its ACL; see
//! [`crate::owner_only`].
//!
//! The trade-off: tokens (valid for at most an hour) rest on disk, readable by the
//! same user. Set `CLOUDRUN_TEST_DISK_CACHE=off` to keep them in memory only.

use std::fs::{self, File};
use std::future::Future;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::bounded;
use crate::error::Error;
use crate::owner_only;
use crate::token::{MAX_LIFETIME, Token, unix_time};

/// How long to wait for another process that is minting the same token.
const LOCK_WAIT: Duration = Duration::from_secs(60);
const FORMAT_VERSION: u32 = 1;
/// How long after its token expired a cache file is deleted (and a leftover temporary
/// or unreadable file, after its last change).
const PRUNE_AFTER: Duration = Duration::from_secs(3600);
/// The most read from one entry: a token and a few numbers take about 2 KiB.
const ENTRY_LIMIT: u64 = 64 << 10;
/// How long an Admin API answer on disk is used: short, since a deploy may change it,
/// and long enough for a test run.
pub(crate) const LOOKUP_LIFETIME: Duration = Duration::from_secs(300);

pub(crate) struct DiskCache {
    dir: PathBuf,
}

#[derive(Serialize, Deserialize)]
struct Entry {
    version: u32,
    /// The (fingerprint, audience) the token is for: a hash collision or a file
    /// copied from elsewhere is detected by comparing it.
    key: String,
    token: String,
    issued_at: u64,
    expires_at: u64,
    /// An Admin API answer (lookup entries only; their `token` is empty).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    answer: Option<serde_json::Value>,
}

impl Entry {
    /// Whether the token expired over [`PRUNE_AFTER`] before `now`. An expiry past what
    /// the clock holds has not come.
    fn expired_long_before(&self, now: SystemTime) -> bool {
        unix_time(self.expires_at)
            .and_then(|expired| expired.checked_add(PRUNE_AFTER))
            .is_some_and(|prunable| prunable < now)
    }

    /// When the token was issued and expires, if those are times a token can have:
    /// on the clock, in order, and at most [`MAX_LIFETIME`] apart, so that no file can
    /// keep a token in use for longer than its issuer could have meant.
    fn times(&self) -> Option<(SystemTime, SystemTime)> {
        let (issued_at, expires_at) = (unix_time(self.issued_at)?, unix_time(self.expires_at)?);
        let lifetime = expires_at.duration_since(issued_at).ok()?;
        (lifetime <= MAX_LIFETIME).then_some((issued_at, expires_at))
    }
}

impl DiskCache {
    /// The cache of this process, or `None` when turned off or unusable.
    pub(crate) fn get() -> Option<&'static DiskCache> {
        static CACHE: OnceLock<Option<DiskCache>> = OnceLock::new();
        CACHE.get_or_init(DiskCache::from_env).as_ref()
    }

    fn from_env() -> Option<DiskCache> {
        let setting = std::env::var("CLOUDRUN_TEST_DISK_CACHE").unwrap_or_default();
        if matches!(setting.trim(), "0" | "off" | "false" | "no") {
            return None;
        }
        let dir = match std::env::var_os("CLOUDRUN_TEST_CACHE_DIR") {
            Some(dir) if !dir.is_empty() => PathBuf::from(dir),
            _ => default_dir()?,
        };
        match DiskCache::open(dir.clone()) {
            Ok(cache) => Some(cache),
            Err(problem) => {
                tracing::warn!(dir = %dir.display(), "token disk cache disabled: {problem}");
                None
            }
        }
    }

    /// Opens (creating if needed) a cache folder that only this user can read; refuses
    /// one that is another user's or that others may write to
    /// ([`owner_only::prepare_folder`]).
    pub(crate) fn open(dir: PathBuf) -> Result<DiskCache, String> {
        Ok(DiskCache {
            dir: owner_only::prepare_folder(&dir)?,
        })
    }

    /// The token for `key` from disk if fresh; otherwise the result of `mint`, stored
    /// for the other processes. Holds a file lock meanwhile so that they wait for it
    /// instead of minting too. Disk problems never fail a test: they cost a mint.
    pub(crate) async fn get_or_mint<F>(&self, key: &str, mint: F) -> Result<Token, Error>
    where
        F: Future<Output = Result<Token, Error>>,
    {
        let path = self.entry_path(key);
        let lock = self.lock(&path.with_extension("lock")).await;
        if let Some(token) = read(&path, key) {
            tracing::debug!("identity token served from the disk cache");
            return Ok(token);
        }
        let token = mint.await?;
        if let Err(error) = write(&self.dir, &path, key, &token) {
            tracing::warn!(path = %path.display(), "could not store the token on disk: {error}");
        }
        drop(lock);
        // Once per mint, not per read: at most one folder scan per key and token lifetime.
        self.prune(SystemTime::now());
        Ok(token)
    }

    /// The fresh token for `key` on disk, read without the lock and without minting:
    /// entries are replaced by atomic rename, so a reader sees a whole one or none. The
    /// warm path of a new process (the CLI, a nextest test) ends here, on the caller's
    /// thread, with no fetcher runtime or HTTP client built.
    pub(crate) fn peek(&self, key: &str) -> Option<Token> {
        let token = read(&self.entry_path(key), key)?;
        tracing::debug!("identity token served from the disk cache");
        Some(token)
    }

    /// Deletes the stored token for `key` if it is `bad` (the service refused it with
    /// 401), so that the next `get_or_mint` mints instead of serving it again. At
    /// worst a racing process's fresh token goes too, which costs one mint.
    pub(crate) fn forget(&self, key: &str, bad: &Token) {
        let path = self.entry_path(key);
        if read(&path, key).is_some_and(|stored| stored.same_secret(bad)) {
            let _ = fs::remove_file(&path);
        }
    }

    /// Remembers, for every process of this user, that a fresh token for `key` was
    /// refused too (see `remint`): an entry with no token, issued now and expiring after
    /// `hold_off`, which pruning removes like any other.
    pub(crate) fn remember_refused_remint(&self, key: &str, hold_off: Duration) {
        let key = refused_remint_key(key);
        let path = self.entry_path(&key);
        if let Err(error) = write_note(&self.dir, &path, &key, hold_off, None, SystemTime::now()) {
            tracing::warn!(path = %path.display(), "could not note the refused re-mint on disk: {error}");
        }
    }

    /// How long ago any process noted a refused re-mint for `key`, if that note is sound
    /// and still holds ([`read_note`], for at most `hold_off`).
    pub(crate) fn refused_remint_ago(&self, key: &str, hold_off: Duration) -> Option<Duration> {
        let key = refused_remint_key(key);
        let (ago, _) = read_note(&self.entry_path(&key), &key, hold_off, SystemTime::now())?;
        Some(ago)
    }

    /// The Admin API's answer for `key` from disk if stored under [`LOOKUP_LIFETIME`]
    /// ago; otherwise the result of `look_up`, stored for the other processes. Holds the
    /// entry's file lock meanwhile, so that processes starting together look up once.
    /// Failures are not stored, and disk problems cost a lookup, never a test.
    pub(crate) async fn get_or_look_up<T, F>(&self, key: &str, look_up: F) -> Result<T, Error>
    where
        T: Serialize + DeserializeOwned,
        F: Future<Output = Result<T, Error>>,
    {
        let key = lookup_key(key);
        let path = self.entry_path(&key);
        let lock = self.lock(&path.with_extension("lock")).await;
        if let Some(answer) = read_lookup(&path, &key, SystemTime::now()) {
            tracing::debug!("Admin API answer served from the disk cache");
            return Ok(answer);
        }
        let answer = look_up.await?;
        if let Err(error) = write_lookup(&self.dir, &path, &key, &answer, SystemTime::now()) {
            tracing::warn!(path = %path.display(), "could not store the Admin API answer on disk: {error}");
        }
        drop(lock);
        Ok(answer)
    }

    /// Where the entry for `key` is; its lock file has the same stem, `.lock`.
    fn entry_path(&self, key: &str) -> PathBuf {
        self.dir.join(format!("{}.json", file_name(key)))
    }

    /// An exclusive lock on `path`, or `None` (go on without it) if the holder takes
    /// longer than [`LOCK_WAIT`] or locking is not possible here.
    async fn lock(&self, path: &Path) -> Option<File> {
        let file = match owner_only::open_or_create(path) {
            Ok(file) => file,
            Err(error) => {
                tracing::warn!(path = %path.display(), "token lock not usable ({error}); minting without it");
                return None;
            }
        };
        // `try_lock` is flock(2) on Linux and macOS and LockFileEx on Windows: the whole
        // file, held through this handle, released when it is closed or the process
        // ends (a crashed minter never leaves the others waiting past its exit).
        let started = Instant::now();
        loop {
            match file.try_lock() {
                Ok(()) => return Some(file),
                Err(fs::TryLockError::WouldBlock) if started.elapsed() < LOCK_WAIT => {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                Err(_) => {
                    tracing::warn!(path = %path.display(), "token lock not acquired; minting without it");
                    return None;
                }
            }
        }
    }
}

impl DiskCache {
    /// Deletes what no reader will ever use again: entries whose token expired over
    /// [`PRUNE_AFTER`] before `now`, with their lock files; unreadable entries, orphan
    /// lock files and temporary files untouched for as long. Only names this cache
    /// writes are considered, and an entry only while holding its lock (a writer holds
    /// it too), so a fresh token is never deleted. Errors are ignored: pruning is tidying.
    fn prune(&self, now: SystemTime) {
        let Ok(entries) = fs::read_dir(&self.dir) else {
            return;
        };
        let untouched_for_long = |path: &Path| {
            fs::symlink_metadata(path)
                .and_then(|metadata| metadata.modified())
                .is_ok_and(|modified| modified + PRUNE_AFTER < now)
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if !entry.file_type().is_ok_and(|kind| kind.is_file()) {
                continue;
            }
            let path = entry.path();
            if is_temporary_name(name) {
                if untouched_for_long(&path) {
                    let _ = fs::remove_file(&path);
                }
                continue;
            }
            let Some((stem, extension)) = name.split_once('.') else {
                continue;
            };
            if !is_entry_stem(stem) {
                continue;
            }
            let json = self.dir.join(format!("{stem}.json"));
            let lock_path = self.dir.join(format!("{stem}.lock"));
            let stale = match extension {
                "json" => match read_entry(&json) {
                    Some(entry) => entry.expired_long_before(now),
                    None => untouched_for_long(&json),
                },
                // A lock file whose entry is gone (it is pruned with its entry otherwise).
                "lock" => !exists(&json) && untouched_for_long(&lock_path),
                _ => false,
            };
            if !stale {
                continue;
            }
            // Held by a process minting this key: leave it alone.
            let lock = match owner_only::open(&lock_path) {
                Ok(lock) => lock,
                // No lock file: nobody can be writing this entry under it.
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                    let _ = fs::remove_file(&json);
                    continue;
                }
                // Not a lock file of ours (a link, a FIFO...): leave it all alone.
                Err(_) => continue,
            };
            if lock.try_lock().is_err() {
                continue;
            }
            // Re-check under the lock: a writer may have just replaced the entry.
            let still_stale = match read_entry(&json) {
                Some(entry) => entry.expired_long_before(now),
                None => !exists(&json) || untouched_for_long(&json),
            };
            if still_stale {
                let _ = fs::remove_file(&json);
                let _ = fs::remove_file(&lock_path);
            }
        }
    }
}

/// The key of the entry that notes a refused re-mint for token key `key`.
fn refused_remint_key(key: &str) -> String {
    format!("refused-remint|{key}")
}

/// The key of the entry that holds the Admin API's answer for lookup key `key`: never
/// a token key, so neither is ever served as the other.
fn lookup_key(key: &str) -> String {
    format!("lookup|{key}")
}

/// The answer stored at `path` for `key`, if it is a sound note ([`read_note`], held for
/// at most [`LOOKUP_LIFETIME`], so no file keeps an answer longer) of type `T`.
fn read_lookup<T: DeserializeOwned>(path: &Path, key: &str, now: SystemTime) -> Option<T> {
    let (_, answer) = read_note(path, key, LOOKUP_LIFETIME, now)?;
    serde_json::from_value(answer?).ok()
}

fn write_lookup<T: Serialize>(
    dir: &Path,
    path: &Path,
    key: &str,
    answer: &T,
    now: SystemTime,
) -> std::io::Result<()> {
    let answer = serde_json::to_value(answer)?;
    write_note(dir, path, key, LOOKUP_LIFETIME, Some(answer), now)
}

/// A note for other processes (a lookup's answer, a refused re-mint): an entry with no
/// token, stored at `now` and held for `lifetime`.
fn write_note(
    dir: &Path,
    path: &Path,
    key: &str,
    lifetime: Duration,
    answer: Option<serde_json::Value>,
    now: SystemTime,
) -> std::io::Result<()> {
    let stored_at = unix_seconds(now);
    let entry = Entry {
        version: FORMAT_VERSION,
        key: key.to_owned(),
        token: String::new(),
        issued_at: stored_at,
        expires_at: stored_at.saturating_add(lifetime.as_secs()),
        answer,
    };
    write_entry(dir, path, &entry)
}

/// The note at `path` for `key`, if it is sound: this key, stored at or before `now`,
/// still held after `now`, and held for at most `lifetime` from when it was stored.
/// How long ago it was stored, and its answer.
fn read_note(
    path: &Path,
    key: &str,
    lifetime: Duration,
    now: SystemTime,
) -> Option<(Duration, Option<serde_json::Value>)> {
    let entry = read_entry(path)?;
    if entry.key != key {
        return None;
    }
    let (stored_at, expires_at) = entry.times()?;
    let held_for = expires_at.duration_since(stored_at).ok()?;
    let ago = now.duration_since(stored_at).ok()?;
    (held_for <= lifetime && now < expires_at).then_some((ago, entry.answer))
}

/// Whether anything (a link included, not followed) is at `path`.
fn exists(path: &Path) -> bool {
    fs::symlink_metadata(path).is_ok()
}

/// `0123...ef` (32 hex digits): the names [`file_name`] gives.
fn is_entry_stem(stem: &str) -> bool {
    stem.len() == 32
        && stem
            .bytes()
            .all(|byte| matches!(byte, b'0'..=b'9' | b'a'..=b'f'))
}

/// `.token-PID-NANOS`: the temporary files [`write`] renames into place.
fn is_temporary_name(name: &str) -> bool {
    name.strip_prefix(".token-")
        .and_then(|rest| rest.split_once('-'))
        .is_some_and(|(pid, nanos)| {
            [pid, nanos]
                .iter()
                .all(|part| !part.is_empty() && part.bytes().all(|byte| byte.is_ascii_digit()))
        })
}

/// The user's cache folder: `$XDG_CACHE_HOME` or `~/.cache` on Linux and macOS, and
/// `%LOCALAPPDATA%` on Windows (inside the profile, as `owner_only` requires there).
fn default_dir() -> Option<PathBuf> {
    let set = |name: &str| {
        std::env::var_os(name)
            .filter(|dir| !dir.is_empty())
            .map(PathBuf::from)
    };
    #[cfg(unix)]
    let base = set("XDG_CACHE_HOME").or_else(|| Some(set("HOME")?.join(".cache")));
    #[cfg(windows)]
    let base = set("LOCALAPPDATA");
    Some(base?.join("cloudrun-test"))
}

fn file_name(key: &str) -> String {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, key.as_bytes());
    digest.as_ref()[..16]
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

/// The entry at `path`, if it is a private regular file of ours holding one in this
/// format.
fn read_entry(path: &Path) -> Option<Entry> {
    let file = owner_only::open(path).ok()?;
    let bytes = bounded::read_to_end(file, ENTRY_LIMIT).ok()?;
    let entry: Entry = serde_json::from_slice(&bytes).ok()?;
    (entry.version == FORMAT_VERSION).then_some(entry)
}

fn read(path: &Path, key: &str) -> Option<Token> {
    let entry = read_entry(path)?;
    if entry.key != key {
        return None;
    }
    let (issued_at, expires_at) = entry.times()?;
    let token = Token::restore(entry.token, issued_at, expires_at);
    token.is_fresh().then_some(token)
}

fn unix_seconds(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
}

fn write(dir: &Path, path: &Path, key: &str, token: &Token) -> std::io::Result<()> {
    let entry = Entry {
        version: FORMAT_VERSION,
        key: key.to_owned(),
        token: token.secret().to_owned(),
        issued_at: unix_seconds(token.issued_at()),
        expires_at: unix_seconds(token.expires_at()),
        answer: None,
    };
    write_entry(dir, path, &entry)
}

fn write_entry(dir: &Path, path: &Path, entry: &Entry) -> std::io::Result<()> {
    // A unique name in the same folder, then rename: readers see the old file or the
    // new one, never half of one.
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .subsec_nanos();
    let temporary = dir.join(format!(".token-{}-{nanos}", std::process::id()));
    let result = (|| {
        let mut file = owner_only::create_new(&temporary)?;
        file.write_all(&serde_json::to_vec(entry)?)?;
        file.sync_all()?;
        fs::rename(&temporary, path)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&temporary);
    }
    result
}

#[cfg(all(test, unix))]
mod tests {
    use std::os::unix::fs::PermissionsExt;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use serde_json::{Value, json};

    use super::*;

    /// The names in `dir`, sorted.
    fn sorted_names(dir: &Path) -> Vec<String> {
        let mut names: Vec<_> = fs::read_dir(dir)
            .unwrap()
            .map(|entry| entry.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        names
    }

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    /// A cache in a fresh folder, and a mint that counts its calls.
    struct Setup {
        _root: tempfile::TempDir,
        cache: DiskCache,
        mints: AtomicUsize,
    }

    impl Setup {
        fn new() -> Setup {
            let root = tempfile::tempdir().unwrap();
            let cache = DiskCache::open(root.path().join("cache")).unwrap();
            Setup {
                _root: root,
                cache,
                mints: AtomicUsize::new(0),
            }
        }

        async fn get(&self, key: &str, lifetime: Duration) -> Token {
            self.cache
                .get_or_mint(key, async {
                    let count = self.mints.fetch_add(1, Ordering::SeqCst) + 1;
                    Ok(Token::from_access_token(format!("token-{count}"), lifetime))
                })
                .await
                .unwrap()
        }

        fn mints(&self) -> usize {
            self.mints.load(Ordering::SeqCst)
        }

        fn entry_path(&self, key: &str) -> PathBuf {
            self.cache.entry_path(key)
        }

        fn write_entry(&self, key: &str, issued_at: SystemTime, expires_at: SystemTime) {
            let token = Token::restore("old-token".into(), issued_at, expires_at);
            write(&self.cache.dir, &self.entry_path(key), key, &token).unwrap();
        }
    }

    const HOUR: Duration = Duration::from_secs(3600);

    #[test]
    fn the_folder_is_made_private() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("cache");
        DiskCache::open(dir.clone()).unwrap();
        assert_eq!(mode(&dir), 0o700);
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
        DiskCache::open(dir.clone()).unwrap();
        assert_eq!(mode(&dir), 0o700);
    }

    #[tokio::test]
    async fn a_stored_token_is_private_and_served_until_its_margin() {
        let setup = Setup::new();
        let first = setup.get("key", HOUR).await;
        let again = setup.get("key", HOUR).await;
        assert!(first.same_secret(&again));
        assert_eq!(setup.mints(), 1);
        assert_eq!(mode(&setup.entry_path("key")), 0o600);
        let lock = setup.cache.dir.join(format!("{}.lock", file_name("key")));
        assert_eq!(mode(&lock), 0o600);

        // Valid for one more second of an eight-second life: inside the two-second
        // margin, so it is not served.
        let now = SystemTime::now();
        setup.write_entry(
            "key",
            now - Duration::from_secs(7),
            now + Duration::from_secs(1),
        );
        let replaced = setup.get("key", HOUR).await;
        assert_eq!(replaced.secret(), "token-2");
        // Valid for a minute of an hour: inside the five-minute margin.
        setup.write_entry(
            "key",
            now - HOUR + Duration::from_secs(60),
            now + Duration::from_secs(60),
        );
        assert_eq!(setup.get("key", HOUR).await.secret(), "token-3");
    }

    #[tokio::test]
    async fn corrupt_or_foreign_files_are_ignored_and_replaced() {
        let setup = Setup::new();
        setup.get("mine", HOUR).await;
        let path = setup.entry_path("mine");
        for bad in [
            b"{\"version\":1,\"key\":\"mi".to_vec(),
            b"\xff\xfe not json".to_vec(),
            // Another key's entry under this name (a hash collision, a copied file).
            serde_json::to_vec(&serde_json::json!({
                "version": 1, "key": "theirs", "token": "their-token",
                "issued_at": 0, "expires_at": u32::MAX,
            }))
            .unwrap(),
            // A future format.
            serde_json::to_vec(&serde_json::json!({
                "version": 2, "key": "mine", "token": "new-format",
                "issued_at": 0, "expires_at": u32::MAX,
            }))
            .unwrap(),
        ] {
            fs::write(&path, &bad).unwrap();
            let before = setup.mints();
            let token = setup.get("mine", HOUR).await;
            assert_eq!(setup.mints(), before + 1);
            assert_eq!(token.secret(), format!("token-{}", before + 1));
            assert_eq!(read(&path, "mine").unwrap().secret(), token.secret());
        }
    }

    #[tokio::test]
    async fn pruning_deletes_only_what_expired_long_ago() {
        let setup = Setup::new();
        let dir = setup.cache.dir.clone();
        let now = SystemTime::now();
        // Expired two hours ago: pruned with its lock file.
        setup.write_entry("stale", now - 3 * HOUR, now - 2 * HOUR);
        owner_only::open_or_create(&dir.join(format!("{}.lock", file_name("stale")))).unwrap();
        // Expired half an hour ago: kept (for now).
        setup.write_entry("recent", now - 2 * HOUR, now - HOUR / 2);
        // Stale but locked by a process minting it: kept.
        setup.write_entry("busy", now - 3 * HOUR, now - 2 * HOUR);
        let busy = DiskCache::lock(
            &setup.cache,
            &dir.join(format!("{}.lock", file_name("busy"))),
        )
        .await
        .unwrap();
        // Fresh: kept.
        setup.get("fresh", 10 * HOUR).await;
        // Not ours: kept whatever their age.
        fs::write(dir.join("notes.txt"), "mine").unwrap();
        fs::write(dir.join("0123.json"), "{}").unwrap();

        setup.cache.prune(now);
        let left = sorted_names(&dir);
        let mut expected = vec![
            "notes.txt".to_owned(),
            "0123.json".to_owned(),
            format!("{}.json", file_name("recent")),
            format!("{}.json", file_name("busy")),
            format!("{}.lock", file_name("busy")),
            format!("{}.json", file_name("fresh")),
            format!("{}.lock", file_name("fresh")),
        ];
        expected.sort();
        assert_eq!(left, expected);

        // Two hours on, files untouched for over an hour go too: a leftover temporary
        // file and an unreadable entry; fresh entries and other files stay.
        drop(busy);
        fs::write(dir.join(".token-123-456"), "half").unwrap();
        fs::write(setup.entry_path("recent"), "garbage").unwrap();
        setup.cache.prune(now + 2 * HOUR);
        let left = sorted_names(&dir);
        let mut expected = vec![
            "notes.txt".to_owned(),
            "0123.json".to_owned(),
            format!("{}.json", file_name("fresh")),
            format!("{}.lock", file_name("fresh")),
        ];
        expected.sort();
        assert_eq!(left, expected);
    }

    #[tokio::test]
    async fn a_mint_prunes_the_folder() {
        let setup = Setup::new();
        let now = SystemTime::now();
        setup.write_entry("stale", now - 3 * HOUR, now - 2 * HOUR);
        setup.get("new", HOUR).await;
        assert!(!setup.entry_path("stale").exists());
        assert!(setup.entry_path("new").exists());
    }

    #[tokio::test]
    async fn entries_with_extreme_numbers_are_replaced_without_panicking() {
        let setup = Setup::new();
        setup.get("key", HOUR).await;
        let path = setup.entry_path("key");
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let extremes = [
            (0, u64::MAX),
            (u64::MAX, u64::MAX),
            (0, i64::MAX as u64),
            (now, i64::MAX as u64),
            // Fresh for a year: longer than any token lives.
            (now, now + 365 * 24 * 3600),
            // Issued after it expires.
            (now + 7200, now + 3600),
        ];
        for (issued_at, expires_at) in extremes {
            let entry = serde_json::json!({
                "version": 1, "key": "key", "token": "planted",
                "issued_at": issued_at, "expires_at": expires_at,
            });
            fs::write(&path, entry.to_string()).unwrap();
            let before = setup.mints();
            let token = setup.get("key", HOUR).await;
            assert_eq!(setup.mints(), before + 1, "{entry}");
            assert_ne!(token.secret(), "planted");
            // Pruning reads the same numbers.
            fs::write(&path, entry.to_string()).unwrap();
            setup.cache.prune(SystemTime::now());
        }
        for odd in ["-1", "1e300", "\"NaN\"", "18446744073709551616"] {
            fs::write(
                &path,
                format!(
                    r#"{{"version":1,"key":"key","token":"planted","issued_at":0,"expires_at":{odd}}}"#
                ),
            )
            .unwrap();
            assert_ne!(setup.get("key", HOUR).await.secret(), "planted", "{odd}");
        }
    }

    #[tokio::test]
    async fn links_fifos_and_files_others_may_read_are_not_used() {
        let setup = Setup::new();
        let outside = tempfile::tempdir().unwrap();
        // A fresh entry for "key", kept outside the cache folder.
        let elsewhere = outside.path().join("entry.json");
        let token = Token::from_access_token("planted".into(), HOUR);
        write(outside.path(), &elsewhere, "key", &token).unwrap();
        let original = fs::read(&elsewhere).unwrap();

        std::os::unix::fs::symlink(&elsewhere, setup.entry_path("key")).unwrap();
        let lock = setup.cache.dir.join(format!("{}.lock", file_name("key")));
        std::os::unix::fs::symlink(&elsewhere, &lock).unwrap();
        assert_eq!(setup.get("key", HOUR).await.secret(), "token-1");
        // The link was replaced, its target neither read nor changed.
        assert!(
            !fs::symlink_metadata(setup.entry_path("key"))
                .unwrap()
                .is_symlink()
        );
        assert_eq!(fs::read(&elsewhere).unwrap(), original);

        // A FIFO as the entry and as the lock: no wait.
        let fifo_entry = setup.entry_path("fifo");
        let fifo_lock = setup.cache.dir.join(format!("{}.lock", file_name("fifo")));
        for fifo in [&fifo_entry, &fifo_lock] {
            let made = std::process::Command::new("mkfifo")
                .arg(fifo)
                .status()
                .unwrap();
            assert!(made.success());
        }
        let got = tokio::time::timeout(Duration::from_secs(10), setup.get("fifo", HOUR))
            .await
            .expect("a FIFO in the cache folder makes nothing wait");
        assert_eq!(got.secret(), "token-2");
        tokio::time::timeout(Duration::from_secs(10), async {
            setup.cache.prune(SystemTime::now() + 3 * HOUR)
        })
        .await
        .unwrap();

        // A copy of an entry that others may read is not served.
        let path = setup.entry_path("shared");
        write(&setup.cache.dir, &path, "shared", &token).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        assert_eq!(setup.get("shared", HOUR).await.secret(), "token-3");
    }

    /// Property over the entry format: whatever its numbers and fields, an entry is
    /// served exactly when it is sound (this format, this key, times a clock holds, in
    /// order, at most `MAX_LIFETIME` apart, and fresh), and nothing panics.
    #[test]
    fn an_entry_is_served_exactly_when_it_is_sound() {
        use proptest::prelude::*;
        use proptest::test_runner::{Config, TestRunner};
        use serde_json::{Value, json};

        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let setup = Setup::new();
        runtime.block_on(setup.get("key", HOUR));
        let path = setup.entry_path("key");
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let time = prop_oneof![
            // Around now: fresh, stale, or just expired.
            4 => prop::sample::select(vec![
                -86_400i64, -7200, -3600, -600, 600, 3000, 7200, 86_400
            ])
            .prop_map(move |offset| json!(now.saturating_add_signed(offset))),
            1 => any::<u64>().prop_map(Value::from),
            1 => any::<i64>().prop_map(Value::from),
            1 => prop::sample::select(vec![
                json!(u64::MAX),
                json!(i64::MAX),
                json!(-1),
                json!(1e300),
                json!(0.5),
                json!("NaN"),
                json!(null),
            ]),
        ];
        let strategy = (
            prop_oneof![
                4 => Just(json!(1)),
                1 => prop::sample::select(vec![json!(2), json!(0), json!("1"), json!(-1)]),
            ],
            prop::bool::weighted(0.8),
            time.clone(),
            time,
        );
        let (served, replaced) = (AtomicUsize::new(0), AtomicUsize::new(0));
        TestRunner::new(Config::default())
            .run(&strategy, |(version, same_key, issued_at, expires_at)| {
                let entry = json!({
                    "version": version,
                    "key": if same_key { "key" } else { "other" },
                    "token": "planted",
                    "issued_at": issued_at,
                    "expires_at": expires_at,
                });
                fs::write(&path, entry.to_string()).unwrap();
                let sound = version == json!(1)
                    && same_key
                    && match (issued_at.as_u64(), expires_at.as_u64()) {
                        (Some(issued), Some(expires)) => {
                            let lifetime = expires.checked_sub(issued);
                            let margin = lifetime.map_or(0, |lifetime| (lifetime / 4).min(300));
                            let fresh_until = expires.saturating_sub(margin);
                            // Too close to call: the clock moves while the case runs.
                            prop_assume!(fresh_until.abs_diff(now) > 5);
                            unix_time(expires).is_some()
                                && lifetime
                                    .is_some_and(|lifetime| lifetime <= MAX_LIFETIME.as_secs())
                                && fresh_until > now
                        }
                        _ => false,
                    };
                let token = runtime.block_on(setup.get("key", HOUR));
                prop_assert_eq!(token.secret() == "planted", sound, "{}", entry);
                let outcome = if sound { &served } else { &replaced };
                outcome.fetch_add(1, Ordering::Relaxed);
                Ok(())
            })
            .unwrap();
        // Both sides of the property were tried.
        let (served, replaced) = (served.into_inner(), replaced.into_inner());
        assert!(
            served > 0 && replaced > 0,
            "served {served}, replaced {replaced}"
        );
    }

    /// A looked-up answer, and a lookup that counts its calls.
    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Answer {
        uri: String,
    }

    impl Setup {
        async fn look_up(&self, key: &str) -> Answer {
            self.cache
                .get_or_look_up(key, async {
                    let count = self.mints.fetch_add(1, Ordering::SeqCst) + 1;
                    Ok(Answer {
                        uri: format!("https://answer-{count}"),
                    })
                })
                .await
                .unwrap()
        }

        fn lookup_path(&self, key: &str) -> PathBuf {
            self.cache.entry_path(&lookup_key(key))
        }
    }

    #[tokio::test]
    async fn a_lookup_is_stored_privately_and_served_to_the_same_key_only() {
        let setup = Setup::new();
        let first = setup.look_up("fingerprint|hello").await;
        assert_eq!(setup.look_up("fingerprint|hello").await, first);
        assert_eq!(setup.mints(), 1);
        assert_eq!(mode(&setup.lookup_path("fingerprint|hello")), 0o600);
        // Another identity (or service) looks up for itself.
        assert_eq!(setup.look_up("other|hello").await.uri, "https://answer-2");
        // A token under the same key is another entry: neither is served as the other.
        setup.get("fingerprint|hello", HOUR).await;
        assert_eq!(setup.look_up("fingerprint|hello").await, first);
        assert_eq!(setup.mints(), 3);
        // A failed lookup is not stored.
        let failed = setup
            .cache
            .get_or_look_up::<Answer, _>("failing", async { Err(Error::internal("refused")) })
            .await;
        assert!(failed.is_err());
        assert!(!setup.lookup_path("failing").exists());
    }

    #[tokio::test]
    async fn unsound_lookup_entries_are_ignored_and_replaced() {
        let setup = Setup::new();
        let key = "fingerprint|hello";
        setup.look_up(key).await;
        let path = setup.lookup_path(key);
        let stored_key = lookup_key(key);
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let entry =
            |version: Value, key: &str, stored_at: Value, expires_at: Value, answer: Value| {
                json!({
                    "version": version, "key": key, "token": "",
                    "issued_at": stored_at, "expires_at": expires_at, "answer": answer,
                })
                .to_string()
            };
        let planted = json!({ "uri": "https://planted" });
        // Sound: served.
        fs::write(
            &path,
            entry(
                json!(1),
                &stored_key,
                json!(now - 10),
                json!(now + 290),
                planted.clone(),
            ),
        )
        .unwrap();
        assert_eq!(setup.look_up(key).await.uri, "https://planted");
        let unsound = [
            // Stored over five minutes ago.
            entry(
                json!(1),
                &stored_key,
                json!(now - 301),
                json!(now - 1),
                planted.clone(),
            ),
            // Written with a lifetime longer than a lookup's.
            entry(
                json!(1),
                &stored_key,
                json!(now - 10),
                json!(now + 3600),
                planted.clone(),
            ),
            // Stored in the future: it would outlive its five minutes.
            entry(
                json!(1),
                &stored_key,
                json!(now + 100),
                json!(now + 200),
                planted.clone(),
            ),
            // Another key's (a collision, a copied file), a token key, another format.
            entry(
                json!(1),
                "lookup|theirs",
                json!(now),
                json!(now + 300),
                planted.clone(),
            ),
            entry(json!(1), key, json!(now), json!(now + 300), planted.clone()),
            entry(
                json!(2),
                &stored_key,
                json!(now),
                json!(now + 300),
                planted.clone(),
            ),
            // No answer, or one of another shape.
            entry(
                json!(1),
                &stored_key,
                json!(now),
                json!(now + 300),
                Value::Null,
            ),
            entry(
                json!(1),
                &stored_key,
                json!(now),
                json!(now + 300),
                json!({ "url": 1 }),
            ),
            // Numbers no clock holds, or not numbers.
            entry(
                json!(1),
                &stored_key,
                json!(0),
                json!(u64::MAX),
                planted.clone(),
            ),
            entry(
                json!(1),
                &stored_key,
                json!(u64::MAX),
                json!(u64::MAX),
                planted.clone(),
            ),
            entry(
                json!(1),
                &stored_key,
                json!(-1),
                json!(now + 300),
                planted.clone(),
            ),
            entry(
                json!(1),
                &stored_key,
                json!(1e300),
                json!(now + 300),
                planted.clone(),
            ),
            entry(
                json!(1),
                &stored_key,
                json!("NaN"),
                json!(now + 300),
                planted.clone(),
            ),
            // Not an entry.
            "{\"version\":1,\"key\":\"lookup|fi".into(),
            "\u{ff} not json".into(),
        ];
        for bad in unsound {
            fs::write(&path, &bad).unwrap();
            let before = setup.mints();
            let answer = setup.look_up(key).await;
            assert_eq!(setup.mints(), before + 1, "{bad}");
            assert_ne!(answer.uri, "https://planted", "{bad}");
            // Replaced by a sound entry: served from now on.
            assert_eq!(setup.look_up(key).await, answer, "{bad}");
            // Pruning reads the same numbers without panicking.
            fs::write(&path, &bad).unwrap();
            setup.cache.prune(SystemTime::now());
        }
        // Bounded: an entry past the limit is not read.
        let huge = json!({ "uri": "x".repeat(ENTRY_LIMIT as usize) });
        fs::write(
            &path,
            entry(json!(1), &stored_key, json!(now), json!(now + 300), huge),
        )
        .unwrap();
        let before = setup.mints();
        setup.look_up(key).await;
        assert_eq!(setup.mints(), before + 1);
    }

    #[test]
    fn only_names_of_this_cache_are_recognised() {
        assert!(is_entry_stem(&file_name("anything")));
        assert!(!is_entry_stem("0123"));
        assert!(!is_entry_stem(&file_name("x").to_uppercase()));
        assert!(is_temporary_name(".token-12-345"));
        for name in [
            ".token-",
            ".token-12",
            ".token-a-1",
            "token-1-2",
            ".token-1-2-3",
        ] {
            assert!(!is_temporary_name(name), "{name}");
        }
    }
}
