//! Times on the wire: RFC 3339 UTC with milliseconds (`2026-11-23T06:06:56.889Z`),
//! and IoT Hub's `0001-01-01T00:00:00Z` for a time never set.

use courier_core::Timestamp;
use time::format_description::well_known::{Rfc2822, Rfc3339};
use time::OffsetDateTime;

/// What IoT Hub sends for a registry time that was never set.
pub(crate) const NEVER: &str = "0001-01-01T00:00:00Z";

/// The latest instant RFC 3339 can show (four-digit years).
#[cfg(test)]
const LATEST: &str = "9999-12-31T23:59:59.999Z";

/// `ts` as RFC 3339 UTC with exactly three fractional digits (the one
/// formatter every head shares, beside the feedback JSON).
pub(crate) fn rfc3339(ts: Timestamp) -> String {
    courier_hub::feedback_json::rfc3339_millis(ts)
}

/// `ts` as RFC 3339, or [`NEVER`].
pub(crate) fn rfc3339_or_never(ts: Option<Timestamp>) -> String {
    ts.map_or_else(|| NEVER.to_owned(), rfc3339)
}

/// Parses RFC 3339 (any offset), or RFC 1123 as HTTP dates are written.
pub(crate) fn parse(s: &str) -> Option<Timestamp> {
    let s = s.trim();
    let t = OffsetDateTime::parse(s, &Rfc3339)
        .or_else(|_| OffsetDateTime::parse(s, &Rfc2822))
        .ok()?;
    i64::try_from(t.unix_timestamp_nanos() / 1_000_000)
        .ok()
        .map(Timestamp)
}

/// The wall clock, for token expiry checks and error time stamps.
pub(crate) fn now() -> Timestamp {
    let ms = OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000;
    Timestamp(i64::try_from(ms).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_with_milliseconds_in_utc() {
        assert_eq!(
            rfc3339(Timestamp(1_795_414_016_889)),
            "2026-11-23T06:06:56.889Z"
        );
        assert_eq!(rfc3339(Timestamp(0)), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(Timestamp(i64::MAX)), LATEST);
        assert_eq!(rfc3339_or_never(None), NEVER);
    }

    #[test]
    fn parses_what_it_writes_and_other_offsets() {
        let t = Timestamp(1_795_414_016_889);
        assert_eq!(parse(&rfc3339(t)), Some(t));
        assert_eq!(parse("2026-11-23T07:06:56.889+01:00"), Some(t));
        assert_eq!(
            parse("Mon, 23 Nov 2026 06:06:56 GMT"),
            Some(Timestamp(1_795_414_016_000))
        );
        assert_eq!(parse("tomorrow"), None);
    }
}
