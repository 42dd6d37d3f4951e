//! Reading what we do not control, with a limit: files (credentials, configuration),
//! HTTP answers (token endpoints, the metadata server, the Admin API) and what a helper
//! program prints. Past the limit reading stops and the caller says so, naming the file
//! or endpoint, instead of filling memory with `/dev/zero` or waiting on an endless answer.

use std::fmt;
use std::io::Read;
use std::path::Path;

/// Credentials and configuration files: a service-account key is about 2.3 KiB.
pub(crate) const FILE_LIMIT: u64 = 1 << 20;
/// One answer of a token endpoint, the metadata server or the Admin API: a token is
/// about 1 KiB, a service's description a few KiB.
pub(crate) const BODY_LIMIT: u64 = 1 << 20;
/// What a helper program (gcloud, an `executable` credential source) prints on one stream.
pub(crate) const OUTPUT_LIMIT: u64 = 1 << 20;

/// `1 MiB`, `64 KiB` or `100 bytes`, for messages.
pub(crate) fn size(bytes: u64) -> String {
    match bytes {
        _ if bytes >= 1 << 20 && bytes.is_multiple_of(1 << 20) => format!("{} MiB", bytes >> 20),
        _ if bytes >= 1 << 10 && bytes.is_multiple_of(1 << 10) => format!("{} KiB", bytes >> 10),
        _ => format!("{bytes} bytes"),
    }
}

/// Why a bounded read gave nothing.
#[derive(Debug)]
pub(crate) enum ReadError {
    /// Reading failed (the file is missing, unreadable, not UTF-8...).
    Io(std::io::Error),
    /// There is more than `limit` bytes; reading stopped there.
    TooLarge { limit: u64 },
}

impl fmt::Display for ReadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReadError::Io(error) => write!(f, "{error}"),
            ReadError::TooLarge { limit } => write!(
                f,
                "it is larger than {}, the most cloudrun-test reads from it; reading stopped there",
                size(*limit)
            ),
        }
    }
}

/// Its text says it all: an `Io` failure is shown as the `io::Error` it holds.
impl std::error::Error for ReadError {}

impl From<std::io::Error> for ReadError {
    fn from(error: std::io::Error) -> Self {
        ReadError::Io(error)
    }
}

/// The text of the file at `path`, if it is UTF-8 and at most `limit` bytes.
pub(crate) fn read_file(path: &Path, limit: u64) -> Result<String, ReadError> {
    let file = std::fs::File::open(path)?;
    String::from_utf8(read_to_end(file, limit)?).map_err(|_| {
        ReadError::Io(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "it is not UTF-8 text",
        ))
    })
}

/// Everything `reader` gives, if at most `limit` bytes; never reads more than one byte
/// past the limit.
pub(crate) fn read_to_end(reader: impl Read, limit: u64) -> Result<Vec<u8>, ReadError> {
    let mut bytes = Vec::new();
    reader
        .take(limit.saturating_add(1))
        .read_to_end(&mut bytes)?;
    if bytes.len() as u64 > limit {
        return Err(ReadError::TooLarge { limit });
    }
    Ok(bytes)
}

/// Why reading an HTTP answer's body gave nothing.
#[derive(Debug)]
pub(crate) enum BodyError {
    Http(reqwest::Error),
    TooLarge { limit: u64 },
}

impl BodyError {
    /// The problem, for an answer larger than the limit.
    pub(crate) fn too_large(limit: u64) -> String {
        format!(
            "the answer is larger than {}, the most cloudrun-test reads from it; reading stopped there",
            size(limit)
        )
    }
}

/// The body of `response` as text, read chunk by chunk and abandoned as soon as it
/// passes `limit` bytes (an endless answer ends there, not at the request's timeout).
pub(crate) async fn read_body(
    mut response: reqwest::Response,
    limit: u64,
) -> Result<String, BodyError> {
    if response
        .content_length()
        .is_some_and(|length| length > limit)
    {
        return Err(BodyError::TooLarge { limit });
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(BodyError::Http)? {
        if (body.len() as u64).saturating_add(chunk.len() as u64) > limit {
            return Err(BodyError::TooLarge { limit });
        }
        body.extend_from_slice(&chunk);
    }
    Ok(String::from_utf8_lossy(&body).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_well() {
        assert_eq!(size(FILE_LIMIT), "1 MiB");
        assert_eq!(size(64 << 10), "64 KiB");
        assert_eq!(size(1000), "1000 bytes");
    }

    #[test]
    fn a_read_stops_one_byte_past_the_limit() {
        assert_eq!(read_to_end(&b"abcd"[..], 4).unwrap(), b"abcd");
        assert!(matches!(
            read_to_end(&b"abcde"[..], 4),
            Err(ReadError::TooLarge { limit: 4 })
        ));
        // An endless source ends at the limit.
        let endless = std::io::repeat(b'x');
        assert!(matches!(
            read_to_end(endless, 1 << 20),
            Err(ReadError::TooLarge { .. })
        ));
        assert!(read_to_end(&b""[..], u64::MAX).unwrap().is_empty());
    }

    #[test]
    fn files_past_the_limit_or_not_text_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, "hello").unwrap();
        assert_eq!(read_file(&path, 5).unwrap(), "hello");
        let error = read_file(&path, 4).unwrap_err().to_string();
        assert!(error.contains("larger than 4 bytes"), "{error}");
        std::fs::write(&path, b"\xff\xfe").unwrap();
        assert!(
            read_file(&path, 5)
                .unwrap_err()
                .to_string()
                .contains("UTF-8")
        );
        #[cfg(unix)]
        {
            let error = read_file(Path::new("/dev/zero"), FILE_LIMIT)
                .unwrap_err()
                .to_string();
            assert!(error.contains("larger than 1 MiB"), "{error}");
        }
    }
}
