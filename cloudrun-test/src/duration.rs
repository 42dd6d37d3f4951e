//! The one duration syntax of cloudrun-test: its settings (`CLOUDRUN_TEST_TIMEOUT`...),
//! the attribute's `timeout = "..."` and the `cloudrun-test` command all read
//! durations as the `humantime` crate does (`500ms`, `90s`, `10m`, `1h`, `1m30s`,
//! `1.5s`, `2min`), plus a bare number of seconds, which they have always accepted.

use std::time::Duration;

/// Reads `text` as a time limit: a `humantime` duration such as `500ms`, `90s`, `10m`,
/// `1h` or `1m30s`, or a bare number of seconds (`45`). Zero, a value too large for a
/// [`Duration`] and anything else are errors, whose text says why (for a message
/// that names where `text` came from).
///
/// ```
/// use std::time::Duration;
/// assert_eq!(cloudrun_test::parse_duration("1m30s"), Ok(Duration::from_secs(90)));
/// assert_eq!(cloudrun_test::parse_duration("45"), Ok(Duration::from_secs(45)));
/// assert!(cloudrun_test::parse_duration("0s").is_err());
/// ```
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let duration = if !text.is_empty() && text.bytes().all(|byte| byte.is_ascii_digit()) {
        // humantime wants a unit; a bare number means seconds here.
        text.parse()
            .map(Duration::from_secs)
            .map_err(|_| "the number is too large".to_owned())?
    } else {
        humantime::parse_duration(text).map_err(|error| error.to_string())?
    };
    if duration.is_zero() {
        return Err("zero is no time limit".into());
    }
    Ok(duration)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_documented_form_is_read() {
        for (text, expected) in [
            ("500ms", Duration::from_millis(500)),
            (" 2s ", Duration::from_secs(2)),
            ("3", Duration::from_secs(3)),
            ("90s", Duration::from_secs(90)),
            ("1m", Duration::from_secs(60)),
            ("10m", Duration::from_secs(600)),
            ("1h", Duration::from_secs(3600)),
            ("1m30s", Duration::from_secs(90)),
            ("2s500ms", Duration::from_millis(2500)),
            ("1h2m3s4ms", Duration::from_millis(3_723_004)),
            ("1.5m", Duration::from_secs(90)),
            ("10 minutes", Duration::from_secs(600)),
        ] {
            assert_eq!(parse_duration(text), Ok(expected), "{text:?}");
        }
    }

    #[test]
    fn zero_overflow_and_garbage_are_errors_that_say_why() {
        for zero in ["0", "0s", "0m0s", "000"] {
            let why = parse_duration(zero).unwrap_err();
            assert!(why.contains("zero"), "{zero:?}: {why}");
        }
        for huge in [
            "99999999999999999999",
            "99999999999999999999s",
            "99999999999999999h",
            "18446744073709551615h",
        ] {
            let why = parse_duration(huge).unwrap_err();
            assert!(why.contains("too large"), "{huge:?}: {why}");
        }
        for garbage in [
            "", "s", "soon", "a while", "-1s", "ms500", "1m30", "5S", "1.2.3s",
        ] {
            assert!(parse_duration(garbage).is_err(), "{garbage:?}");
        }
    }
}
