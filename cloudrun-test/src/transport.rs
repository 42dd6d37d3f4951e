//! Where a request carrying a credential may go, and through which proxy.
//!
//! Two rules, for every request that carries a token, a key assertion or a refresh
//! token (the service client, the token fetcher, the Admin API lookup, `doctor`, `curl`):
//!
//! 1. **HTTPS, or this machine.** A credential travels over `https`, or over plain
//!    `http` to a loopback address; anything else is refused before the request leaves
//!    ([`check_destination`]). The metadata server is the one plain-http peer off
//!    loopback, and it is asked for tokens, never sent one.
//! 2. **Proxies as Google's libraries honour them** (Go's `ProxyFromEnvironment`, and its
//!    metadata client, which never uses a proxy): an `https` request goes through
//!    `HTTPS_PROXY` (`https_proxy`) as a CONNECT tunnel, so the proxy sees only
//!    ciphertext, unless `NO_PROXY` (`no_proxy`) names the host. Loopback addresses and
//!    the metadata server are never proxied. `HTTP_PROXY` and `ALL_PROXY` are not used:
//!    the only plain-http peers are loopback and the metadata server, and a plain-http
//!    proxy would read the token in clear.
//!
//! The environment is read once per process.

use std::sync::LazyLock;

use hyper_util::client::proxy::matcher::Matcher;
use reqwest::Url;

use crate::error::Error;
pub(crate) use crate::host::is_link_local;
pub use crate::host::is_loopback;

/// Hosts that never go through a proxy, whatever `NO_PROXY` says: loopback (IPv4,
/// IPv6 and IPv4-mapped IPv6) and the metadata server's names.
const NEVER_PROXIED: &str = "localhost,127.0.0.0/8,::1/128,::ffff:127.0.0.0/104,\
                             169.254.169.254,metadata.google.internal,metadata";

/// Refuses to send a credential to `url` unless it is `https`, or plain `http` to a
/// loopback address. `what` names the request for the error ("the service", "the
/// token endpoint"...).
///
/// A credential also goes nowhere while the way to it is unknown: an invalid
/// `HTTPS_PROXY` is an error here too, wherever `url` is.
pub fn check_destination(url: &Url, what: &str) -> Result<(), Error> {
    // Under `cloudrun-test emulate` a credential stays on this machine.
    if crate::settings::Emulated::get()?.is_some() && !is_loopback(url) {
        return Err(Error::setting(
            format!(
                "refusing to send a credential to {what} at {}: under `cloudrun-test emulate` \
                 credentials go only to the emulator and loopback addresses",
                origin_of(url)
            ),
            "call an emulated service (`cloudrun-test emulate --service NAME` exports \
                  CLOUDRUN_TEST_URL_NAME), or run this outside `cloudrun-test emulate`",
        ));
    }
    // A user or password in the URL would travel as a second credential, and show
    // wherever the URL is printed.
    if !url.username().is_empty() || url.password().is_some() {
        return Err(Error::setting(
            format!(
                "refusing to send a credential to {what} at {}: its URL holds a user name or \
                 password",
                origin_of(url)
            ),
            format!("give the URL of {what} without `user:password@`"),
        ));
    }
    if allows_credentials(url) {
        return proxy_for(url).map(|_| ());
    }
    let scheme = url.scheme();
    let why = if scheme == "http" {
        "to another machine travels in clear"
    } else {
        "is not a transport cloudrun-test sends credentials over"
    };
    Err(Error::setting(
        format!(
            "refusing to send a credential to {what} at {}: `{scheme}` {why}",
            origin_of(url)
        ),
        format!(
            "use the https URL of {what} (plain http is allowed only to a loopback \
             address such as 127.0.0.1, e.g. under `cloudrun-test emulate`)"
        ),
    ))
}

/// Whether `url` may receive a credential at all: `https`, or plain `http` to a
/// loopback address, with no user or password in the URL. [`check_destination`] is
/// this rule with its error.
pub fn allows_credentials(url: &Url) -> bool {
    if !url.username().is_empty() || url.password().is_some() {
        return false;
    }
    match url.scheme() {
        "https" => true,
        "http" => is_loopback(url),
        _ => false,
    }
}

/// The proxy a request to `url` goes through, if any, by the rules above. An invalid
/// `HTTPS_PROXY` is an error naming it.
pub fn proxy_for(url: &Url) -> Result<Option<Url>, Error> {
    let rules = RULES.as_ref().map_err(Clone::clone)?;
    Ok(rules.proxy_for(url).cloned())
}

/// `builder` with exactly these proxy rules, and none of reqwest's own (which would
/// also honour `HTTP_PROXY` and `ALL_PROXY`, and proxy loopback addresses); and with
/// `localhost` pinned to the loopback addresses, so that no resolver (an edited hosts
/// file, DNS) can send a plain-http credential meant for this machine elsewhere.
pub(crate) fn configure(builder: reqwest::ClientBuilder) -> Result<reqwest::ClientBuilder, Error> {
    let rules = RULES.as_ref().map_err(Clone::clone)?;
    // Port 0: the URL's own port is used (reqwest's rule for overrides).
    let loopback = [
        std::net::SocketAddr::from((std::net::Ipv4Addr::LOCALHOST, 0)),
        std::net::SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, 0)),
    ];
    let builder = builder
        .no_proxy()
        .dns_resolver(std::sync::Arc::new(crate::dns::Resolver))
        .resolve_to_addrs("localhost", &loopback);
    Ok(match &rules.https {
        None => builder,
        Some(_) => builder.proxy(reqwest::Proxy::custom(|url| {
            RULES
                .as_ref()
                .ok()
                .and_then(|rules| rules.proxy_for(url).cloned())
        })),
    })
}

/// A `reqwest::ClientBuilder` that follows these rules, for HTTP clients built outside
/// this crate (`cloudrun-test doctor`'s live request). An invalid `HTTPS_PROXY` is an
/// error naming it.
pub fn http_client_builder() -> Result<reqwest::ClientBuilder, Error> {
    configure(reqwest::Client::builder())
}

static RULES: LazyLock<Result<ProxyRules, Error>> = LazyLock::new(ProxyRules::from_env);

struct ProxyRules {
    /// `HTTPS_PROXY` as a URL, and the matcher that applies `NO_PROXY` to it.
    https: Option<(Url, Matcher)>,
}

impl ProxyRules {
    fn from_env() -> Result<ProxyRules, Error> {
        let first = |names: [&str; 2]| names.into_iter().find_map(crate::settings::env);
        let Some(proxy) = first(["HTTPS_PROXY", "https_proxy"]) else {
            return Ok(ProxyRules { https: None });
        };
        let no_proxy = first(["NO_PROXY", "no_proxy"]).unwrap_or_default();
        ProxyRules::new(&proxy, &no_proxy)
    }

    fn new(proxy: &str, no_proxy: &str) -> Result<ProxyRules, Error> {
        // As curl and Go do, a proxy without a scheme is an http proxy.
        let with_scheme = if proxy.contains("://") {
            proxy.to_owned()
        } else {
            format!("http://{proxy}")
        };
        let url = Url::parse(&with_scheme)
            .ok()
            .filter(|url| matches!(url.scheme(), "http" | "https") && url.host().is_some())
            .ok_or_else(|| {
                Error::setting(
                    "HTTPS_PROXY is not an http:// or https:// proxy URL",
                    "set HTTPS_PROXY to the proxy's URL, e.g. http://proxy.example:3128, or \
                      unset it",
                )
            })?;
        let mut never = NEVER_PROXIED.to_owned();
        if let Some(host) = metadata_host() {
            never.push(',');
            never.push_str(&host);
        }
        if !no_proxy.is_empty() {
            never.push(',');
            never.push_str(no_proxy);
        }
        let matcher = Matcher::builder()
            .https(url.as_str())
            .no(never.as_str())
            .build();
        Ok(ProxyRules {
            https: Some((url, matcher)),
        })
    }

    fn proxy_for(&self, url: &Url) -> Option<&Url> {
        let (proxy, matcher) = self.https.as_ref()?;
        if url.scheme() != "https" || is_loopback(url) {
            return None;
        }
        let uri: http::Uri = url.as_str().parse().ok()?;
        matcher.intercept(&uri).map(|_| proxy)
    }
}

/// The host of `GCE_METADATA_HOST` (`host[:port]`), which is never proxied.
fn metadata_host() -> Option<String> {
    let value = crate::settings::env("GCE_METADATA_HOST")?;
    let host = Url::parse(&format!("http://{value}")).ok()?;
    host.host_str()
        .map(|host| host.trim_matches(['[', ']']).to_owned())
}

fn origin_of(url: &Url) -> String {
    url.origin().ascii_serialization()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(no_proxy: &str) -> ProxyRules {
        ProxyRules::new("proxy.corp:3128", no_proxy).unwrap()
    }

    fn via(rules: &ProxyRules, url: &str) -> Option<String> {
        rules
            .proxy_for(&url.parse().unwrap())
            .map(|url| url.to_string())
    }

    #[test]
    fn only_https_to_other_hosts_is_proxied_through_a_tunnel() {
        let rules = rules("");
        let proxy = Some("http://proxy.corp:3128/".to_owned());
        assert_eq!(via(&rules, "https://hello-1.europe-west1.run.app/"), proxy);
        assert_eq!(via(&rules, "https://oauth2.googleapis.com/token"), proxy);
        for direct in [
            "http://hello.example/",
            "https://127.0.0.1:8443/",
            "https://127.9.9.9/",
            "https://[::1]:8443/",
            "https://[::ffff:127.0.0.1]/",
            "https://localhost:9/",
            "http://169.254.169.254/computeMetadata/v1/",
            "https://metadata.google.internal/",
        ] {
            assert_eq!(via(&rules, direct), None, "{direct}");
        }
    }

    #[test]
    fn no_proxy_is_respected_by_domain_suffix_ip_and_network() {
        let rules = rules("example.com, .internal.corp,10.0.0.0/8,192.168.1.5");
        for direct in [
            "https://example.com/",
            "https://a.example.com/",
            "https://svc.internal.corp/",
            "https://10.1.2.3/",
            "https://192.168.1.5/",
        ] {
            assert_eq!(via(&rules, direct), None, "{direct}");
        }
        for proxied in ["https://notexample.com/", "https://192.168.1.6/"] {
            assert!(via(&rules, proxied).is_some(), "{proxied}");
        }
        assert_eq!(
            via(&ProxyRules::new("p:1", "*").unwrap(), "https://a.b/"),
            None
        );
    }

    #[test]
    fn a_bad_proxy_is_an_error_naming_it() {
        for bad in ["socks5://p:1080", "http://", "ftp://p"] {
            let error = ProxyRules::new(bad, "").err().expect(bad).to_string();
            assert!(error.contains("HTTPS_PROXY"), "{error}");
        }
    }

    #[test]
    fn link_local_addresses_are_the_clouds_metadata_services() {
        for link_local in ["http://169.254.169.254/", "http://[fe80::1]/"] {
            assert!(is_link_local(&link_local.parse().unwrap()), "{link_local}");
        }
        for other in ["http://127.0.0.1/", "http://10.0.0.1/", "http://metadata/"] {
            assert!(!is_link_local(&other.parse().unwrap()), "{other}");
        }
    }

    #[test]
    fn credentials_go_over_https_or_to_loopback_only() {
        for allowed in [
            "https://hello.run.app/",
            "http://127.0.0.1:8080/",
            "http://[::1]:1/",
            "http://localhost/",
        ] {
            assert!(
                check_destination(&allowed.parse().unwrap(), "x").is_ok(),
                "{allowed}"
            );
        }
        for refused in [
            "http://hello.run.app/",
            "http://10.0.0.1/",
            "ftp://127.0.0.1/",
            "http://localhost.evil.example/",
            // A second credential in the URL (and a password wherever it is shown).
            "https://user:password@hello.run.app/",
            "http://user@127.0.0.1:8080/",
            // The system resolver may ask DNS for these.
            "http://evil.localhost/",
            "http://localhost./",
            // Linux connects 0.0.0.0 to this machine, but it is no loopback address.
            "http://0.0.0.0:8080/",
            "http://169.254.169.254/",
        ] {
            assert!(!allows_credentials(&refused.parse().unwrap()), "{refused}");
            let error = check_destination(&refused.parse().unwrap(), "the service")
                .unwrap_err()
                .to_string();
            assert!(
                error.contains("refusing") && error.contains("fix:"),
                "{error}"
            );
        }
    }
}
