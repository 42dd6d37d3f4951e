//! What a URL's host is, for the rules on where credentials may go: this machine
//! (loopback) or its own link (link-local, where clouds serve instance metadata).

use reqwest::Url;

/// Whether `url`'s host is this machine: a loopback address, or exactly `localhost`,
/// which every client built here resolves to 127.0.0.1 and ::1 itself (`transport::configure`).
/// Other names, `*.localhost` included, are not: the system resolver may send them to
/// DNS, which can answer any address.
pub fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(domain)) => domain.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => {
            ip.is_loopback() || ip.to_ipv4_mapped().is_some_and(|ip| ip.is_loopback())
        }
        None => false,
    }
}

/// Whether `url`'s host is a link-local address (`169.254.0.0/16`, `fe80::/10`):
/// where clouds serve instance metadata (Google's metadata server, Azure's and AWS's
/// token services). Such a peer is on this machine's own link and answers token
/// requests; it is asked for tokens, never sent one.
pub(crate) fn is_link_local(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_link_local(),
        Some(url::Host::Ipv6(ip)) => ip.is_unicast_link_local(),
        _ => false,
    }
}
