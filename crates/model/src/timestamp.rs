//! ISO-8601 timestamps as the real SDKs send them: `Z` or `+00:00`, milli- or microseconds.

use chrono::{DateTime, SecondsFormat, Utc};

/// Parses an RFC 3339 / ISO-8601 date-time with an offset, any number of fractional digits.
/// Also tolerates single-digit months and days (`2015-2-02T…`), which JavaScript's `Date`
/// accepts and Segment's own HTTP API documentation uses in its batch example.
pub fn parse(text: &str) -> Option<DateTime<Utc>> {
    let parsed = DateTime::parse_from_rfc3339(text)
        .ok()
        .or_else(|| DateTime::parse_from_rfc3339(&pad_date(text)?).ok())?;
    Some(parsed.with_timezone(&Utc))
}

/// `2015-2-2T…` → `2015-02-02T…`; `None` when the date part is not three numbers.
fn pad_date(text: &str) -> Option<String> {
    let (date, rest) = text.split_once('T')?;
    let mut parts = date.split('-');
    let (year, month, day) = (parts.next()?, parts.next()?, parts.next()?);
    let numeric = |p: &str| !p.is_empty() && p.len() <= 2 && p.bytes().all(|b| b.is_ascii_digit());
    if parts.next().is_some() || year.len() != 4 || !numeric(month) || !numeric(day) {
        return None;
    }
    Some(format!("{year}-{month:0>2}-{day:0>2}T{rest}"))
}

/// The canonical form Junction writes (`receivedAt`): UTC, milliseconds, `Z`.
pub fn format(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_every_form_the_sdks_send() {
        let node = parse("2026-11-29T06:29:22.323Z").unwrap();
        let python_ms = parse("2026-11-29T06:29:22.323+00:00").unwrap();
        let python_us = parse("2026-11-29T06:29:22.323000+00:00").unwrap();
        assert_eq!(node, python_ms);
        assert_eq!(node, python_us);
        assert!(parse("2024-01-01T00:00:00Z").is_some());
        assert!(
            parse("2024-01-01T02:00:00+02:00").unwrap() == parse("2024-01-01T00:00:00Z").unwrap()
        );
        assert_eq!(
            parse("2015-2-02T00:30:08.276Z"),
            parse("2015-02-02T00:30:08.276Z")
        );
    }

    #[test]
    fn refuses_what_is_not_a_date_time() {
        for bad in [
            "",
            "yesterday",
            "2024-13-01T00:00:00Z",
            "2024-01-01",
            "1700000000",
            "2024-1-1-1T00:00:00Z",
            "T",
        ] {
            assert!(parse(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn formats_in_utc_with_milliseconds() {
        let t = parse("2026-11-29T07:29:22.3231+01:00").unwrap();
        assert_eq!(format(t), "2026-11-29T06:29:22.323Z");
    }
}
