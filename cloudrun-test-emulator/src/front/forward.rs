//! What Cloud Run changes in a request on its way to the container: the verified
//! token loses its signature, connection headers and client-sent `X-Google-*` go,
//! `X-Forwarded-For`, `X-Forwarded-Proto`, `X-Cloud-Trace-Context` and `traceparent`
//! come (<https://cloud.google.com/functions/docs/reference/headers>).

use std::net::IpAddr;

use axum::http::{HeaderMap, HeaderName, HeaderValue, header};

use crate::keys::random_bytes;

/// What replaces the signature of the token Cloud Run verified: the app may read the
/// caller's claims, but never receives a token it could replay.
pub(crate) const SIGNATURE_REMOVED: &str = "SIGNATURE_REMOVED_BY_GOOGLE";

/// Headers that belong to one connection, not to the request (RFC 9110 §7.6.1).
const HOP_BY_HOP: [&str; 9] = [
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// How the request goes on to the upstream.
#[derive(Clone, Copy, Default)]
pub(crate) struct Hop {
    /// A WebSocket upgrade: `Connection: upgrade` and `Upgrade` must reach it.
    pub(crate) websocket: bool,
    /// An HTTP/2 upstream: `te: trailers` may (and for gRPC must) reach it.
    pub(crate) http2: bool,
}

/// Rewrites the client's headers into what the container receives. `verified` is
/// the header whose Google-signed token the front checked.
pub(crate) fn request_headers(
    headers: &mut HeaderMap,
    verified: Option<&HeaderName>,
    peer: IpAddr,
    hop: Hop,
) {
    let te_trailers = hop.http2
        && headers
            .get_all(header::TE)
            .iter()
            .any(|value| value.as_bytes().eq_ignore_ascii_case(b"trailers"));
    let upgrade = headers.get(header::UPGRADE).cloned();
    strip_hop_by_hop(headers);
    if te_trailers {
        headers.insert(header::TE, HeaderValue::from_static("trailers"));
    }
    if let (true, Some(upgrade)) = (hop.websocket, upgrade) {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(header::UPGRADE, upgrade);
    }
    let google: Vec<HeaderName> = headers
        .keys()
        .filter(|name| name.as_str().starts_with("x-google-"))
        .cloned()
        .collect();
    for name in google {
        headers.remove(name);
    }
    if let Some(name) = verified
        && let Some(value) = headers.get(name).and_then(remove_signature)
    {
        headers.insert(name, value);
    }
    forwarded_for(headers, peer);
    headers.insert("x-forwarded-proto", HeaderValue::from_static("http"));
    trace_context(headers);
}

/// `Bearer H.P.S` → `Bearer H.P.SIGNATURE_REMOVED_BY_GOOGLE`; `None` for anything else.
fn remove_signature(value: &HeaderValue) -> Option<HeaderValue> {
    let value = value.to_str().ok()?.trim();
    let (scheme, token) = value.split_once(' ')?;
    let (signed, _signature) = token.trim().rsplit_once('.')?;
    HeaderValue::from_str(&format!("{scheme} {signed}.{SIGNATURE_REMOVED}")).ok()
}

/// Removes hop-by-hop headers, including those the Connection header names; also
/// used on the upstream's answer.
pub(crate) fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
}

/// Appends the peer to the client's `X-Forwarded-For` list, in one header.
fn forwarded_for(headers: &mut HeaderMap, peer: IpAddr) {
    let sent: Vec<&str> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|value| value.to_str().ok())
        .collect();
    let list = match sent.is_empty() {
        true => peer.to_string(),
        false => format!("{}, {peer}", sent.join(", ")),
    };
    if let Ok(value) = HeaderValue::from_str(&list) {
        headers.insert("x-forwarded-for", value);
    }
}

/// `X-Cloud-Trace-Context: TRACE/SPAN;o=1` and `traceparent: 00-TRACE-SPAN-01` with
/// one trace id: the client's (from either header) if it sent one, else a new one;
/// the span is always new, the front's own.
fn trace_context(headers: &mut HeaderMap) {
    let is_trace = |id: &str| {
        id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()) && id != "0".repeat(32)
    };
    let from_traceparent = headers
        .get("traceparent")
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split('-').nth(1))
        .filter(|id| is_trace(id))
        .map(str::to_ascii_lowercase);
    let from_cloud = headers
        .get("x-cloud-trace-context")
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split('/').next())
        .filter(|id| is_trace(id))
        .map(str::to_ascii_lowercase);
    let random = random_bytes(24).unwrap_or_else(|_| vec![1; 24]);
    let trace = from_traceparent.or(from_cloud).unwrap_or_else(|| {
        random[..16]
            .iter()
            .map(|byte| format!("{byte:02x}"))
            .collect()
    });
    let mut span_bytes = [0; 8];
    span_bytes.copy_from_slice(&random[16..]);
    // Never 0: both formats reserve it.
    let span = u64::from_be_bytes(span_bytes).max(1);
    if let Ok(value) = HeaderValue::from_str(&format!("{trace}/{span};o=1")) {
        headers.insert("x-cloud-trace-context", value);
    }
    if let Ok(value) = HeaderValue::from_str(&format!("00-{trace}-{span:016x}-01")) {
        headers.insert("traceparent", value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn forwarded(pairs: &[(&str, &str)], verified: Option<&str>, hop: Hop) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            headers.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        let verified = verified.map(|name| HeaderName::from_bytes(name.as_bytes()).unwrap());
        request_headers(
            &mut headers,
            verified.as_ref(),
            "10.0.0.7".parse().unwrap(),
            hop,
        );
        headers
    }

    #[test]
    fn strips_hop_by_hop_headers() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONNECTION,
            HeaderValue::from_static("close, x-private"),
        );
        headers.insert("x-private", HeaderValue::from_static("1"));
        headers.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        headers.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer x"));
        strip_hop_by_hop(&mut headers);
        assert_eq!(headers.len(), 1);
        assert!(headers.contains_key(header::AUTHORIZATION));
    }

    #[test]
    fn only_the_verified_header_loses_its_signature() {
        let headers = forwarded(
            &[
                ("authorization", "Bearer app.own.token"),
                (
                    "x-serverless-authorization",
                    "Bearer aGVhZA.cGF5bG9hZA.c2ln",
                ),
            ],
            Some("x-serverless-authorization"),
            Hop::default(),
        );
        assert_eq!(
            headers["x-serverless-authorization"],
            "Bearer aGVhZA.cGF5bG9hZA.SIGNATURE_REMOVED_BY_GOOGLE"
        );
        assert_eq!(headers["authorization"], "Bearer app.own.token");
    }

    #[test]
    fn adds_cloud_runs_headers_and_drops_the_clients_google_ones() {
        let headers = forwarded(
            &[
                ("x-forwarded-for", "203.0.113.9"),
                ("x-google-internal", "spoofed"),
                ("te", "trailers"),
                ("upgrade", "websocket"),
                ("connection", "upgrade"),
                ("keep-alive", "timeout=5"),
                ("proxy-authorization", "Basic eA=="),
            ],
            None,
            Hop::default(),
        );
        assert_eq!(headers["x-forwarded-for"], "203.0.113.9, 10.0.0.7");
        assert_eq!(headers["x-forwarded-proto"], "http");
        for gone in [
            "x-google-internal",
            "te",
            "upgrade",
            "connection",
            "keep-alive",
            "proxy-authorization",
        ] {
            assert!(!headers.contains_key(gone), "{gone}: {headers:?}");
        }
        let cloud = headers["x-cloud-trace-context"].to_str().unwrap();
        let (trace, rest) = cloud.split_once('/').unwrap();
        assert_eq!(trace.len(), 32);
        let (span, options) = rest.split_once(';').unwrap();
        assert_eq!(options, "o=1");
        let span: u64 = span.parse().unwrap();
        assert_eq!(
            headers["traceparent"].to_str().unwrap(),
            format!("00-{trace}-{span:016x}-01")
        );
    }

    #[test]
    fn keeps_the_clients_trace_and_what_the_protocol_needs() {
        let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
        let headers = forwarded(
            &[
                ("traceparent", &format!("00-{trace}-00f067aa0ba902b7-01")),
                ("te", "trailers"),
            ],
            None,
            Hop {
                http2: true,
                websocket: false,
            },
        );
        assert!(
            headers["x-cloud-trace-context"]
                .to_str()
                .unwrap()
                .starts_with(&format!("{trace}/"))
        );
        assert!(
            headers["traceparent"]
                .to_str()
                .unwrap()
                .starts_with(&format!("00-{trace}-"))
        );
        assert_ne!(
            headers["traceparent"],
            format!("00-{trace}-00f067aa0ba902b7-01").as_str(),
            "the front's span is its own"
        );
        assert_eq!(headers["te"], "trailers");

        let headers = forwarded(
            &[("upgrade", "websocket"), ("connection", "Upgrade")],
            None,
            Hop {
                http2: false,
                websocket: true,
            },
        );
        assert_eq!(headers["upgrade"], "websocket");
        assert_eq!(headers["connection"], "upgrade");
    }
}
