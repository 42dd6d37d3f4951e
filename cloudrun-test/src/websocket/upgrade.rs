//! The HTTP/1.1 upgrade to a WebSocket, written here rather than by tungstenite: its
//! client handshake logs the whole request at TRACE, and ours carries the token.
//! tungstenite takes over once the service has switched protocols.

use std::io;
use std::sync::Arc;

use reqwest::StatusCode;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::MaybeTlsStream;
use tokio_tungstenite::tungstenite::handshake::client::Request;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;
use url::{Host, Url};

use super::WebSocket;

/// The most an answer's head (status line and headers) may take before we give up.
const MAX_HEAD: usize = 16 * 1024;

/// Why the upgrade did not happen.
pub(super) enum Failure {
    /// Connecting, TLS, or the connection broke.
    Io(io::Error),
    /// The service answered, but not with 101 Switching Protocols.
    Answered {
        status: StatusCode,
        headers: HeaderMap,
    },
    /// The service's answer is not a valid WebSocket handshake.
    Protocol(String),
}

impl From<io::Error> for Failure {
    fn from(error: io::Error) -> Self {
        Failure::Io(error)
    }
}

/// A TCP connection to `url`'s host, in TLS with `tls` if given.
pub(super) async fn connect(
    url: &Url,
    tls: Option<Arc<rustls::ClientConfig>>,
) -> io::Result<MaybeTlsStream<TcpStream>> {
    let host = match url.host() {
        Some(Host::Domain(domain)) => domain.to_owned(),
        Some(Host::Ipv4(ip)) => ip.to_string(),
        Some(Host::Ipv6(ip)) => ip.to_string(),
        None => return Err(io::Error::new(io::ErrorKind::InvalidInput, "no host")),
    };
    let port = url.port_or_known_default().unwrap_or(80);
    let tcp = TcpStream::connect((host.as_str(), port)).await?;
    tcp.set_nodelay(true)?;
    let Some(tls) = tls else {
        return Ok(MaybeTlsStream::Plain(tcp));
    };
    let name = ServerName::try_from(host)
        .map_err(|error| io::Error::new(io::ErrorKind::InvalidInput, error))?;
    let stream = tokio_rustls::TlsConnector::from(tls)
        .connect(name, tcp)
        .await?;
    Ok(MaybeTlsStream::Rustls(stream))
}

/// Sends `request` (which holds the `Sec-WebSocket-Key` and the other upgrade headers,
/// see `IntoClientRequest`) on `stream` and checks the service's answer.
pub(super) async fn upgrade(
    mut stream: MaybeTlsStream<TcpStream>,
    request: &Request,
) -> Result<WebSocket, Failure> {
    stream.write_all(&request_head(request)).await?;
    stream.flush().await?;
    let (head, rest) = read_head(&mut stream).await?;
    let (status, headers) = parse_head(&head)?;
    if status != StatusCode::SWITCHING_PROTOCOLS {
        return Err(Failure::Answered { status, headers });
    }
    check_switch(request.headers(), &headers)?;
    // Frames the service sent right after its head are already in `rest`.
    Ok(WebSocket::from_partially_read(stream, rest, Role::Client, None).await)
}

/// The request line and headers, with the names some servers want capitalised
/// (as tungstenite writes them).
fn request_head(request: &Request) -> Vec<u8> {
    let target = request
        .uri()
        .path_and_query()
        .map_or("/", |target| target.as_str());
    let mut head = format!("GET {target} HTTP/1.1\r\n").into_bytes();
    for (name, value) in request.headers() {
        let name = match name.as_str() {
            "host" => "Host",
            "connection" => "Connection",
            "upgrade" => "Upgrade",
            "sec-websocket-version" => "Sec-WebSocket-Version",
            "sec-websocket-key" => "Sec-WebSocket-Key",
            "sec-websocket-protocol" => "Sec-WebSocket-Protocol",
            "origin" => "Origin",
            other => other,
        };
        head.extend_from_slice(name.as_bytes());
        head.extend_from_slice(b": ");
        head.extend_from_slice(value.as_bytes());
        head.extend_from_slice(b"\r\n");
    }
    head.extend_from_slice(b"\r\n");
    head
}

/// Reads up to the end of the answer's head: the head, and what came after it.
async fn read_head(stream: &mut MaybeTlsStream<TcpStream>) -> Result<(Vec<u8>, Vec<u8>), Failure> {
    let mut buffer = Vec::with_capacity(1024);
    let mut chunk = [0; 4096];
    loop {
        if let Some(end) = buffer.windows(4).position(|four| four == b"\r\n\r\n") {
            let rest = buffer.split_off(end + 4);
            return Ok((buffer, rest));
        }
        if buffer.len() > MAX_HEAD {
            return Err(Failure::Protocol(format!(
                "the answer's head is over {MAX_HEAD} bytes"
            )));
        }
        let read = stream.read(&mut chunk).await?;
        if read == 0 {
            return Err(Failure::Protocol(
                "the connection closed before the answer's head ended".into(),
            ));
        }
        buffer.extend_from_slice(&chunk[..read]);
    }
}

fn parse_head(head: &[u8]) -> Result<(StatusCode, HeaderMap), Failure> {
    let invalid = |why: String| Failure::Protocol(format!("the answer is not HTTP/1.1: {why}"));
    let mut slots = [httparse::EMPTY_HEADER; 64];
    let mut parsed = httparse::Response::new(&mut slots);
    match parsed.parse(head) {
        Ok(httparse::Status::Complete(_)) => {}
        Ok(httparse::Status::Partial) => return Err(invalid("an incomplete head".into())),
        Err(error) => return Err(invalid(error.to_string())),
    }
    let status = parsed
        .code
        .and_then(|code| StatusCode::from_u16(code).ok())
        .ok_or_else(|| invalid("no valid status".into()))?;
    let mut headers = HeaderMap::new();
    for header in parsed.headers.iter() {
        let name = HeaderName::from_bytes(header.name.as_bytes());
        let value = HeaderValue::from_bytes(header.value);
        if let (Ok(name), Ok(value)) = (name, value) {
            headers.append(name, value);
        }
    }
    Ok((status, headers))
}

/// RFC 6455 4.1: a 101 answer must upgrade to `websocket`, accept our key, and pick
/// one of the subprotocols we asked for (or none if we asked for none).
fn check_switch(sent: &HeaderMap, answer: &HeaderMap) -> Result<(), Failure> {
    let header = |name: &str| answer.get(name).and_then(|value| value.to_str().ok());
    let wrong = |what: &str| Err(Failure::Protocol(format!("the 101 answer {what}")));
    if !header("upgrade").is_some_and(|value| value.eq_ignore_ascii_case("websocket")) {
        return wrong("does not upgrade to websocket");
    }
    let connection = header("connection").unwrap_or_default();
    if !connection
        .split(',')
        .any(|token| token.trim().eq_ignore_ascii_case("upgrade"))
    {
        return wrong("has no Connection: Upgrade");
    }
    let key = sent
        .get("sec-websocket-key")
        .map(|key| derive_accept_key(key.as_bytes()));
    if header("sec-websocket-accept") != key.as_deref() {
        return wrong("does not accept our Sec-WebSocket-Key");
    }
    let asked: Vec<&str> = sent
        .get_all("sec-websocket-protocol")
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(str::trim)
        .collect();
    match header("sec-websocket-protocol") {
        Some(chosen) if !asked.contains(&chosen) => wrong("picks a subprotocol we did not ask for"),
        None if !asked.is_empty() => wrong("picks none of the subprotocols we asked for"),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(name, value)| (HeaderName::from_static(name), value.parse().unwrap()))
            .collect()
    }

    #[test]
    fn a_switch_must_accept_our_key_and_a_subprotocol_we_asked_for() {
        let key = "dGhlIHNhbXBsZSBub25jZQ==";
        let sent = headers(&[
            ("sec-websocket-key", key),
            ("sec-websocket-protocol", "a, b"),
        ]);
        let answer = |accept: &str, protocol: Option<&str>| {
            let mut pairs = vec![
                ("upgrade", "websocket"),
                ("connection", "Upgrade"),
                ("sec-websocket-accept", accept),
            ];
            pairs.extend(protocol.map(|protocol| ("sec-websocket-protocol", protocol)));
            check_switch(&sent, &headers(&pairs)).is_ok()
        };
        // RFC 6455's own example.
        let accept = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";
        assert!(answer(accept, Some("b")));
        assert!(!answer("c3BwUExNQmlUeGFROWtZR3p6aFpSYks=", Some("b")));
        assert!(!answer(accept, Some("c")));
        assert!(!answer(accept, None));
    }

    #[test]
    fn an_answer_head_gives_its_status_and_headers_and_non_http_is_refused() {
        let (status, headers) = parse_head(b"HTTP/1.1 403 Forbidden\r\nX-Reason: no\r\n\r\n")
            .ok()
            .unwrap();
        assert_eq!(status, StatusCode::FORBIDDEN);
        assert_eq!(headers["x-reason"], "no");
        assert!(parse_head(b"SSH-2.0-OpenSSH\r\n\r\n").is_err());
    }
}
