//! The on-disk token cache, shared by every process of the same user.
//!
//! `cargo nextest run` starts a process per test and the CLI a process per call, so
//! the in-memory cache alone would mint once per process. Here a token is kept in a
//! file (mode 0600, in a 0700 folder, written by atomic rename) and a file lock makes
//! concurrent processes mint once. Files are named by a hash of (credential
//! fingerprint, audience) and never trusted past the token's expiry minus its margin;
//! a corrupt or foreign file is ignored and replaced.
//!
//! The trade-off: tokens (valid for at most an hour) rest on disk, readable by the
//! same user. Set `CLOUDRUN_TEST_DISK_CACHE=off` to keep them in memory only.

use std::fs::{self, File, OpenOptions};
use std::future::Future;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::error::Error;
use crate::token::Token;

/// How long to wait for another process that is minting the same token.
const LOCK_WAIT: Duration = Duration::from_secs(60);
const FORMAT_VERSION: u32 = 1;

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

    /// Opens (creating if needed) a cache folder that only this user can read.
    pub(crate) fn open(dir: PathBuf) -> Result<DiskCache, String> {
        fs::create_dir_all(&dir).map_err(|error| format!("cannot create it: {error}"))?;
        let metadata = fs::metadata(&dir).map_err(|error| error.to_string())?;
        if metadata.permissions().mode() & 0o077 != 0 {
            fs::set_permissions(&dir, fs::Permissions::from_mode(0o700))
                .map_err(|error| format!("cannot make it private (0700): {error}"))?;
        }
        Ok(DiskCache { dir })
    }

    /// The token for `key` from disk if fresh; otherwise the result of `mint`, stored
    /// for the other processes. Holds a file lock meanwhile so that they wait for it
    /// instead of minting too. Disk problems never fail a test: they cost a mint.
    pub(crate) async fn get_or_mint<F>(&self, key: &str, mint: F) -> Result<Token, Error>
    where
        F: Future<Output = Result<Token, Error>>,
    {
        let name = file_name(key);
        let path = self.dir.join(format!("{name}.json"));
        let _lock = self.lock(&self.dir.join(format!("{name}.lock"))).await;
        if let Some(token) = read(&path, key) {
            tracing::debug!("identity token served from the disk cache");
            return Ok(token);
        }
        let token = mint.await?;
        if let Err(error) = write(&self.dir, &path, key, &token) {
            tracing::warn!(path = %path.display(), "could not store the token on disk: {error}");
        }
        Ok(token)
    }

    /// An exclusive lock on `path`, or `None` (go on without it) if the holder takes
    /// longer than [`LOCK_WAIT`] or locking is not possible here.
    async fn lock(&self, path: &Path) -> Option<File> {
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(path)
            .ok()?;
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

fn default_dir() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .filter(|dir| !dir.is_empty())
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME")
                .filter(|dir| !dir.is_empty())
                .map(|home| PathBuf::from(home).join(".cache"))
        })?;
    Some(base.join("cloudrun-test"))
}

fn file_name(key: &str) -> String {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, key.as_bytes());
    digest.as_ref()[..16]
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

fn read(path: &Path, key: &str) -> Option<Token> {
    let text = fs::read_to_string(path).ok()?;
    let entry: Entry = serde_json::from_str(&text).ok()?;
    if entry.version != FORMAT_VERSION || entry.key != key {
        return None;
    }
    let token = Token::restore(
        entry.token,
        UNIX_EPOCH + Duration::from_secs(entry.issued_at),
        UNIX_EPOCH + Duration::from_secs(entry.expires_at),
    );
    token.is_fresh().then_some(token)
}

fn write(dir: &Path, path: &Path, key: &str, token: &Token) -> std::io::Result<()> {
    let seconds = |time: SystemTime| {
        time.duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs()
    };
    let entry = Entry {
        version: FORMAT_VERSION,
        key: key.to_owned(),
        token: token.secret().to_owned(),
        issued_at: seconds(token.issued_at()),
        expires_at: seconds(token.expires_at()),
    };
    // A unique name in the same folder, then rename: readers see the old file or the
    // new one, never half of one.
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .subsec_nanos();
    let temporary = dir.join(format!(".token-{}-{nanos}", std::process::id()));
    let result = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&temporary)?;
        file.write_all(&serde_json::to_vec(&entry)?)?;
        file.sync_all()?;
        fs::rename(&temporary, path)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&temporary);
    }
    result
}
