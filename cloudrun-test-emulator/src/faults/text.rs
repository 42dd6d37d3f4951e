//! A [`Fault`]'s text form, for command lines (`cloudrun-test emulate --fault`):
//! `FromStr` and its inverse, `Display`. Durations are written as everywhere in the
//! workspace (`humantime`: `500ms`, `2s`, `1m30s`; a bare number is seconds).

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use crate::{Error, Fault};

/// The forms, for error messages.
const EXAMPLES: &str = "token-error=503x2, token-delay=2s, token-hang, admin-error=503x2, \
                        service-error=hello:503x2, connection-reset=hello:x2, cold-start=hello:3s, \
                        rotate-key";

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let duration = humantime::format_duration;
        match self {
            Fault::TokenErrors { status, times } => write!(f, "token-error={status}x{times}"),
            Fault::TokenDelay(delay) => write!(f, "token-delay={}", duration(*delay)),
            Fault::TokenHang => f.write_str("token-hang"),
            Fault::AdminErrors { status, times } => write!(f, "admin-error={status}x{times}"),
            Fault::ServiceErrors {
                service,
                status,
                times,
            } => write!(f, "service-error={service}:{status}x{times}"),
            Fault::ConnectionResets { service, times } => {
                write!(f, "connection-reset={service}:x{times}")
            }
            Fault::ColdStart { service, delay } => {
                write!(f, "cold-start={service}:{}", duration(*delay))
            }
            Fault::RotateSigningKey => f.write_str("rotate-key"),
        }
    }
}

impl FromStr for Fault {
    type Err = Error;

    fn from_str(text: &str) -> Result<Self, Error> {
        let bad =
            |why: &str| Error::Config(format!("fault {text:?}: {why}; write e.g. {EXAMPLES}"));
        let (kind, value) = match text.trim().split_once('=') {
            Some((kind, value)) => (kind.trim(), Some(value.trim())),
            None => (text.trim(), None),
        };
        let has_value = value.is_some();
        let value = || value.ok_or_else(|| bad("a value is missing after `=`"));
        let service_and = |value: &str| -> Result<(String, String), Error> {
            let (service, rest) = value.split_once(':').unwrap_or((value, ""));
            if service.is_empty() {
                return Err(bad("the service name is missing"));
            }
            Ok((service.to_owned(), rest.to_owned()))
        };
        let status_times = |text: &str| -> Result<(u16, u32), Error> {
            let (status, times) = text.split_once('x').unwrap_or((text, "1"));
            let status = status
                .parse()
                .map_err(|_| bad("the status is not a number"))?;
            let times = times
                .parse()
                .map_err(|_| bad("the count after `x` is not a number"))?;
            Ok((status, times))
        };
        let duration = |text: &str| {
            parse_duration(text)
                .map_err(|why| bad(&format!("not a duration (500ms, 2s, 1m30s): {why}")))
        };
        match (kind, has_value) {
            ("token-hang", false) => Ok(Fault::TokenHang),
            ("rotate-key", false) => Ok(Fault::RotateSigningKey),
            ("token-error", _) => {
                let (status, times) = status_times(value()?)?;
                Ok(Fault::TokenErrors { status, times })
            }
            ("token-delay", _) => Ok(Fault::TokenDelay(duration(value()?)?)),
            ("admin-error", _) => {
                let (status, times) = status_times(value()?)?;
                Ok(Fault::AdminErrors { status, times })
            }
            ("service-error", _) => {
                let (service, rest) = service_and(value()?)?;
                let (status, times) = status_times(&rest)?;
                Ok(Fault::ServiceErrors {
                    service,
                    status,
                    times,
                })
            }
            ("connection-reset", _) => {
                let (service, rest) = service_and(value()?)?;
                let times = match rest.strip_prefix('x').unwrap_or(&rest) {
                    "" => 1,
                    count => count
                        .parse()
                        .map_err(|_| bad("the count is not a number"))?,
                };
                Ok(Fault::ConnectionResets { service, times })
            }
            ("cold-start", _) => {
                let (service, rest) = service_and(value()?)?;
                Ok(Fault::ColdStart {
                    service,
                    delay: duration(&rest)?,
                })
            }
            ("token-hang" | "rotate-key", true) => Err(bad("this fault takes no value")),
            _ => Err(bad("unknown fault")),
        }
    }
}

/// `humantime`'s syntax (`250ms`, `2s`, `1m30s`); a bare number is seconds. Zero is
/// a duration here (`token-delay=0s` ends a delay); a number too large for a
/// `Duration` and anything else are errors that say why.
fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if !text.is_empty() && text.bytes().all(|byte| byte.is_ascii_digit()) {
        // humantime wants a unit; a bare number means seconds, as it always has.
        return text
            .parse()
            .map(Duration::from_secs)
            .map_err(|_| "the number is too large".to_owned());
    }
    humantime::parse_duration(text).map_err(|error| error.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn faults_parse_and_print_back() {
        let cases = [
            (
                "token-error=503x2",
                Fault::TokenErrors {
                    status: 503,
                    times: 2,
                },
            ),
            (
                "token-error=500",
                Fault::TokenErrors {
                    status: 500,
                    times: 1,
                },
            ),
            ("token-delay=2s", Fault::TokenDelay(Duration::from_secs(2))),
            ("token-delay=0s", Fault::TokenDelay(Duration::ZERO)),
            ("token-delay=3", Fault::TokenDelay(Duration::from_secs(3))),
            ("token-hang", Fault::TokenHang),
            (
                "admin-error=503x2",
                Fault::AdminErrors {
                    status: 503,
                    times: 2,
                },
            ),
            (
                "service-error=hello:429x3",
                Fault::ServiceErrors {
                    service: "hello".into(),
                    status: 429,
                    times: 3,
                },
            ),
            (
                "connection-reset=hello",
                Fault::ConnectionResets {
                    service: "hello".into(),
                    times: 1,
                },
            ),
            (
                "connection-reset=hello:x2",
                Fault::ConnectionResets {
                    service: "hello".into(),
                    times: 2,
                },
            ),
            (
                "cold-start=hello:1500ms",
                Fault::ColdStart {
                    service: "hello".into(),
                    delay: Duration::from_millis(1500),
                },
            ),
            (
                "cold-start=hello:1m30s",
                Fault::ColdStart {
                    service: "hello".into(),
                    delay: Duration::from_secs(90),
                },
            ),
            (
                "cold-start=hello:2m",
                Fault::ColdStart {
                    service: "hello".into(),
                    delay: Duration::from_secs(120),
                },
            ),
            ("rotate-key", Fault::RotateSigningKey),
        ];
        for (text, fault) in cases {
            assert_eq!(text.parse::<Fault>().unwrap(), fault, "{text}");
            assert_eq!(
                fault.to_string().parse::<Fault>().unwrap(),
                fault,
                "{fault}"
            );
        }
        assert_eq!(
            Fault::TokenDelay(Duration::from_millis(2500)).to_string(),
            "token-delay=2s 500ms"
        );
    }

    #[test]
    fn bad_faults_say_what_is_expected() {
        for (text, expected) in [
            ("nonsense", "unknown fault"),
            ("token-error", "a value is missing"),
            ("token-error=abc", "not a number"),
            ("service-error=:503", "service name is missing"),
            ("cold-start=hello:soon", "not a duration"),
            ("cold-start=hello:", "not a duration"),
            ("token-delay=-1s", "not a duration"),
            // Overflowing values are errors, never a panic.
            ("cold-start=hello:18446744073709551615m", "too large"),
            ("token-delay=99999999999999999999s", "too large"),
            ("token-delay=99999999999999999999", "too large"),
            ("rotate-key=1", "takes no value"),
        ] {
            let message = text.parse::<Fault>().unwrap_err().to_string();
            assert!(message.contains(expected), "{text}: {message}");
            assert!(message.contains("token-error=503x2"), "{message}");
        }
    }
}
