//! `-L` without curl's `-L`: redirects are followed only within the service's origin.
//!
//! curl's own `-L` follows a redirect to any host and sends custom headers (the token
//! in `X-Serverless-Authorization`, say) along. So curl runs without it, and after each
//! response [`step`] reads the status and `Location` from curl's header dump and says
//! whether to request the next URL, with the method curl would use.

use cloudrun_test::Url;

/// A response's status and `Location`, from curl's `-D` output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    pub status: u16,
    pub location: Option<String>,
}

/// The final response's head in `dump` (curl's `-D` text), once its blank line has
/// arrived; informational (1xx) heads are skipped.
pub fn final_head(dump: &[u8]) -> Option<Head> {
    let text = String::from_utf8_lossy(dump);
    let mut lines: Vec<&str> = Vec::new();
    for line in text.split_inclusive('\n') {
        let content = line.trim_end_matches(['\r', '\n']);
        if !line.ends_with('\n') {
            return None; // still arriving
        }
        if !content.is_empty() {
            lines.push(content);
            continue;
        }
        let Some((first, headers)) = lines.split_first() else {
            continue;
        };
        let status = first
            .split_whitespace()
            .nth(1)
            .and_then(|status| status.parse::<u16>().ok())?;
        if (100..200).contains(&status) {
            lines.clear();
            continue;
        }
        let location = headers.iter().find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.trim()
                .eq_ignore_ascii_case("location")
                .then(|| value.trim().to_owned())
        });
        return Some(Head { status, location });
    }
    None
}

/// The request as sent, as far as redirects care.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sent {
    pub method: String,
    pub body: bool,
    pub body_from_stdin: bool,
    /// `-G`: the data went into the first URL's query, not to later ones.
    pub data_in_query: bool,
}

/// What to do after a response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Not a redirect to follow: this response is the answer.
    Done,
    /// Request `url` next; `as_get` drops the body, -X and -G.
    Follow { url: Url, as_get: bool },
    /// A redirect that is not followed: say why; exit with `exit` if given, else
    /// with curl's status.
    Stop { note: String, exit: Option<u8> },
}

/// curl's exit status when it gives up after --max-redirs redirects.
const TOO_MANY_REDIRECTS: u8 = 47;

/// The step after the response `head` to `url`, `followed` redirects into a chain
/// that began at `origin`'s URL, allowing `max` redirects.
pub fn step(origin: &Url, url: &Url, head: &Head, sent: &Sent, followed: u32, max: u32) -> Step {
    if !matches!(head.status, 301 | 302 | 303 | 307 | 308) {
        return Step::Done;
    }
    let Some(location) = &head.location else {
        return Step::Done;
    };
    let Ok(mut next) = url.join(location) else {
        return Step::Stop {
            note: format!(
                "not following the {} redirect: its Location is not a URL",
                head.status
            ),
            exit: None,
        };
    };
    next.set_fragment(None);
    if next.origin() != origin.origin() {
        return Step::Stop {
            note: format!(
                "not following the {} redirect to {}: the token is for {} only. To call that \
                 service: cloudrun-test curl '{next}'",
                head.status,
                next.origin().ascii_serialization(),
                origin.origin().ascii_serialization(),
            ),
            exit: None,
        };
    }
    if followed >= max {
        return Step::Stop {
            note: format!("stopped after {max} redirects (--max-redirs {max})"),
            exit: Some(TOO_MANY_REDIRECTS),
        };
    }
    // As curl does: 303 asks for a GET (HEAD stays HEAD); 301 and 302 turn POST into GET.
    let to_get = match head.status {
        303 => !sent.method.eq_ignore_ascii_case("HEAD"),
        301 | 302 => sent.method.eq_ignore_ascii_case("POST"),
        _ => false,
    };
    if !to_get && sent.body && sent.body_from_stdin && !sent.data_in_query {
        return Step::Stop {
            note: format!(
                "not following the {} redirect to {next}: it asks for the body again, and the \
                 body was read from standard input; send it from a file (-d @FILE) instead",
                head.status
            ),
            exit: None,
        };
    }
    Step::Follow {
        url: next,
        as_get: to_get || sent.data_in_query,
    }
}

impl Sent {
    /// The request after following a redirect.
    pub fn after(&self, as_get: bool) -> Sent {
        if !as_get {
            return self.clone();
        }
        Sent {
            method: if self.method.eq_ignore_ascii_case("HEAD") {
                "HEAD".into()
            } else {
                "GET".into()
            },
            body: false,
            body_from_stdin: false,
            data_in_query: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(status: u16, location: Option<&str>) -> Head {
        Head {
            status,
            location: location.map(str::to_owned),
        }
    }

    fn sent(method: &str, body: bool) -> Sent {
        Sent {
            method: method.into(),
            body,
            body_from_stdin: false,
            data_in_query: false,
        }
    }

    fn url(text: &str) -> Url {
        Url::parse(text).unwrap()
    }

    #[test]
    fn the_final_head_skips_informational_ones_and_waits_for_its_end() {
        let dump =
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 302 Found\r\nlocation: /b\r\nX: y\r\n\r\n";
        assert_eq!(final_head(dump), Some(head(302, Some("/b"))));
        assert_eq!(final_head(&dump[..dump.len() - 2]), None);
        assert_eq!(final_head(b"HTTP/2 200 \nx: y\n\n"), Some(head(200, None)));
        assert_eq!(final_head(b""), None);
        assert_eq!(final_head(b"garbage\r\n\r\n"), None);
    }

    #[test]
    fn only_redirects_within_the_origin_are_followed() {
        let start = url("https://hello.run.app/a");
        let get = sent("GET", false);
        let follow =
            |status, location| step(&start, &start, &head(status, Some(location)), &get, 0, 10);
        assert_eq!(
            follow(302, "/b?c=d#frag"),
            Step::Follow {
                url: url("https://hello.run.app/b?c=d"),
                as_get: false
            }
        );
        assert_eq!(
            follow(301, "https://hello.run.app:443/x"),
            Step::Follow {
                url: url("https://hello.run.app/x"),
                as_get: false
            }
        );
        for elsewhere in [
            "https://evil.example/",
            "http://hello.run.app/",
            "https://hello.run.app:8443/",
            "//evil.example/x",
            "https://hello.run.app.evil.example/",
        ] {
            match follow(307, elsewhere) {
                Step::Stop { note, exit: None } => {
                    assert!(
                        note.contains("the token is for https://hello.run.app only"),
                        "{note}"
                    )
                }
                other => panic!("{elsewhere}: {other:?}"),
            }
        }
        assert_eq!(follow(200, "/b"), Step::Done);
        assert_eq!(follow(304, "/b"), Step::Done);
        assert_eq!(
            step(&start, &start, &head(302, None), &get, 0, 10),
            Step::Done
        );
    }

    #[test]
    fn the_method_changes_as_curl_changes_it() {
        let start = url("https://hello.run.app/a");
        let as_get = |status, sent: &Sent| match step(
            &start,
            &start,
            &head(status, Some("/b")),
            sent,
            0,
            10,
        ) {
            Step::Follow { as_get, .. } => as_get,
            other => panic!("{other:?}"),
        };
        assert!(as_get(303, &sent("PUT", true)));
        assert!(!as_get(303, &sent("HEAD", false)));
        assert!(as_get(302, &sent("POST", true)));
        assert!(as_get(301, &sent("POST", true)));
        assert!(!as_get(301, &sent("PUT", true)));
        assert!(!as_get(307, &sent("POST", true)));
        assert!(!as_get(308, &sent("POST", true)));
        let mut query = sent("GET", true);
        query.data_in_query = true;
        assert!(as_get(307, &query), "-G data goes to the first URL only");
        assert_eq!(sent("POST", true).after(true), sent("GET", false));
        assert_eq!(sent("HEAD", false).after(true), sent("HEAD", false));
    }

    #[test]
    fn limits_stdin_bodies_and_bad_locations_stop_the_chain() {
        let start = url("https://hello.run.app/a");
        let redirect = head(302, Some("/b"));
        assert_eq!(
            step(&start, &start, &redirect, &sent("GET", false), 3, 3),
            Step::Stop {
                note: "stopped after 3 redirects (--max-redirs 3)".into(),
                exit: Some(47)
            }
        );
        let mut stdin = sent("PUT", true);
        stdin.body_from_stdin = true;
        let Step::Stop { note, .. } = step(&start, &start, &head(307, Some("/b")), &stdin, 0, 10)
        else {
            panic!("a body from stdin is not sent twice");
        };
        assert!(note.contains("standard input"), "{note}");
        assert!(matches!(
            step(
                &start,
                &start,
                &head(302, Some("http://[::1")),
                &sent("GET", false),
                0,
                10
            ),
            Step::Stop { .. }
        ));
    }
}
