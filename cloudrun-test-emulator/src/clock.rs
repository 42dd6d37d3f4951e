//! The emulator's clock: JWT times (seconds since the Unix epoch) and their
//! RFC 3339 form, written by `humantime` as everywhere in the workspace.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Seconds since the Unix epoch.
pub(crate) fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs() as i64)
}

/// The last second RFC 3339 can write (9999-12-31T23:59:59Z); `humantime` fails past it.
const LAST_RFC3339_SECOND: u64 = 253_402_300_799;

/// `1970-01-01T00:00:00Z` for seconds since the epoch (IAM Credentials' `expireTime`);
/// times outside years 1970 to 9999 are written as the nearest end.
pub(crate) fn rfc3339(seconds: i64) -> String {
    let seconds = u64::try_from(seconds).unwrap_or(0).min(LAST_RFC3339_SECOND);
    let time = UNIX_EPOCH + Duration::from_secs(seconds);
    humantime::format_rfc3339_seconds(time).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_rfc3339() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_620_433_341), "2021-05-08T00:22:21Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(-5), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(i64::MAX), "9999-12-31T23:59:59Z");
    }
}
