//! Service accounts: each has an email, a numeric client id and one RSA key, and
//! is handed out as the key file Google issues (`"type": "service_account"`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use reqwest::Url;
use serde::Serialize;

use crate::keys::{KeyError, Keys, RsaKey, random_bytes};
use crate::locks::{read, write};

/// A service account: its email, numeric id and its one key.
#[derive(Debug)]
pub(crate) struct Account {
    pub(crate) email: String,
    pub(crate) client_id: String,
    pub(crate) key: RsaKey,
}

/// The service accounts created so far, by lower-case email.
#[derive(Default)]
pub(crate) struct Accounts {
    by_email: RwLock<BTreeMap<String, Arc<Account>>>,
}

impl Accounts {
    pub(crate) fn get(&self, email: &str) -> Option<Arc<Account>> {
        read(&self.by_email)
            .get(&email.to_ascii_lowercase())
            .cloned()
    }

    /// The account for `email`, created with a key from `keys` if it does not exist.
    pub(crate) fn get_or_create(&self, email: &str, keys: &Keys) -> Result<Arc<Account>, KeyError> {
        if let Some(account) = self.get(email) {
            return Ok(account);
        }
        // Generate outside the lock: it is slow. A racing creator may win; its
        // account is then the one returned, and this key is dropped.
        let key = keys.take()?;
        let client_id = random_client_id()?;
        let account = write(&self.by_email)
            .entry(email.to_ascii_lowercase())
            .or_insert_with(|| {
                tracing::info!(email, kid = key.kid(), "created service account");
                Arc::new(Account {
                    email: email.to_owned(),
                    client_id,
                    key,
                })
            })
            .clone();
        Ok(account)
    }
}

impl Account {
    /// The key file Google would hand out for this account, with `token_uri`
    /// pointing at the emulator. `project` is used when the email names none.
    pub(crate) fn key_file(&self, project: &str, token_uri: &Url) -> Result<String, KeyError> {
        let project_id = self
            .email
            .split_once('@')
            .and_then(|(_, domain)| domain.strip_suffix(".iam.gserviceaccount.com"))
            .unwrap_or(project);
        let file = KeyFile {
            r#type: "service_account",
            project_id,
            private_key_id: self.key.kid(),
            private_key: self.key.private_key_pem()?,
            client_email: &self.email,
            client_id: &self.client_id,
            auth_uri: "https://accounts.google.com/o/oauth2/auth",
            token_uri: token_uri.to_string(),
            auth_provider_x509_cert_url: "https://www.googleapis.com/oauth2/v1/certs",
            client_x509_cert_url: format!(
                "https://www.googleapis.com/robot/v1/metadata/x509/{}",
                self.email.replace('@', "%40")
            ),
            universe_domain: "googleapis.com",
        };
        let mut text = serde_json::to_string_pretty(&file).map_err(|_| KeyError)?;
        text.push('\n');
        Ok(text)
    }
}

/// Field order as in Google's key files.
#[derive(Serialize)]
struct KeyFile<'a> {
    r#type: &'a str,
    project_id: &'a str,
    private_key_id: &'a str,
    private_key: String,
    client_email: &'a str,
    client_id: &'a str,
    auth_uri: &'a str,
    token_uri: String,
    auth_provider_x509_cert_url: &'a str,
    client_x509_cert_url: String,
    universe_domain: &'a str,
}

/// A 21-digit numeric id, like Google's service-account client ids.
pub(crate) fn random_client_id() -> Result<String, KeyError> {
    let bytes = random_bytes(8)?;
    let number = u64::from_le_bytes(bytes.try_into().map_err(|_| KeyError)?);
    Ok(format!("1{:020}", number))
}

/// Writes `key_file` (the JSON of `email`'s key) to `dir` as
/// `LOCAL-PART-KEYID.json`, readable by its owner only; returns its path.
pub(crate) fn write_key_file(dir: &Path, email: &str, key_file: &str) -> std::io::Result<PathBuf> {
    let id: String = serde_json::from_str::<serde_json::Value>(key_file)
        .ok()
        .and_then(|json| {
            json["private_key_id"]
                .as_str()
                .map(|id| id.chars().take(12).collect())
        })
        .unwrap_or_default();
    let local: String = email
        .split('@')
        .next()
        .unwrap_or_default()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let path = dir.join(format!("{local}-{id}.json"));
    write_private_file(&path, key_file.as_bytes())?;
    Ok(path)
}

/// Writes a file only its owner can read (mode 0600 on Unix; elsewhere the
/// folder's permissions apply, as for the files Google's tools write).
fn write_private_file(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path)?;
    // `mode` applies to new files only.
    #[cfg(unix)]
    file.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
    file.write_all(contents)
}
