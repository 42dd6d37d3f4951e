//! curl's `-v` log, copied to our stderr with the token replaced.

use std::io::{Read, Write};

/// Copies curl's stderr (its `-v` log) to ours, with `secret` replaced. Bytes are
/// held back only while they could be the start of the secret, so the progress meter
/// keeps moving.
pub fn copy_redacted(mut from: impl Read, secret: &str, mut to: impl Write) {
    const REDACTED: &[u8] = b"<redacted>";
    let secret = secret.as_bytes();
    let mut pending: Vec<u8> = Vec::new();
    let mut buffer = [0u8; 8192];
    loop {
        let read = match from.read(&mut buffer) {
            Ok(0) | Err(_) => break,
            Ok(read) => read,
        };
        pending.extend_from_slice(&buffer[..read]);
        let mut out = Vec::with_capacity(pending.len());
        let mut start = 0;
        while let Some(found) = find(&pending[start..], secret) {
            out.extend_from_slice(&pending[start..start + found]);
            out.extend_from_slice(REDACTED);
            start += found + secret.len();
        }
        let rest = &pending[start..];
        let keep = (1..secret.len().min(rest.len() + 1))
            .rev()
            .find(|&length| rest.ends_with(&secret[..length]))
            .unwrap_or(0);
        out.extend_from_slice(&rest[..rest.len() - keep]);
        pending = rest[rest.len() - keep..].to_vec();
        let _ = to.write_all(&out);
        let _ = to.flush();
    }
    let _ = to.write_all(&pending);
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() || haystack.len() < needle.len() {
        return None;
    }
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
}

#[cfg(test)]
mod tests {
    use std::io;

    use super::*;

    #[test]
    fn redaction_survives_any_split() {
        let secret = "eyJhbGciOi.payload.signature";
        let text = format!("> Authorization: Bearer {secret}\r\n< HTTP/1.1 200 OK\r\n{secret}");
        for chunk in 1..text.len() {
            let reader = Chunked {
                data: text.as_bytes().to_vec(),
                chunk,
            };
            let mut out = Vec::new();
            copy_redacted(reader, secret, &mut out);
            let out = String::from_utf8(out).unwrap();
            assert!(!out.contains(secret), "chunk {chunk}: {out}");
            assert_eq!(out.matches("<redacted>").count(), 2, "chunk {chunk}: {out}");
            assert!(out.contains("HTTP/1.1 200 OK"));
        }
    }

    struct Chunked {
        data: Vec<u8>,
        chunk: usize,
    }

    impl Read for Chunked {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = self.chunk.min(buf.len()).min(self.data.len());
            buf[..n].copy_from_slice(&self.data[..n]);
            self.data.drain(..n);
            Ok(n)
        }
    }
}
