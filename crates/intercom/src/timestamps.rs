//! Dates as Intercom wants them: Unix seconds.

use serde_json::Value;

/// An ISO-8601 date-time with an offset (as Segment sends them) or a plain `YYYY-MM-DD`
/// (midnight UTC), as Unix seconds.
pub fn parse_iso(text: &str) -> Option<i64> {
    let text = text.trim();
    if let Some(time) = junction_model::timestamp::parse(text) {
        return Some(time.timestamp());
    }
    chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d")
        .ok()
        .and_then(|date| date.and_hms_opt(0, 0, 0))
        .map(|midnight| midnight.and_utc().timestamp())
}

/// A JSON value as Unix seconds: an ISO string, or a number already in seconds (milliseconds
/// are recognised by their size and divided).
pub fn unix_seconds(value: &Value) -> Option<i64> {
    match value {
        Value::String(text) => {
            parse_iso(text).or_else(|| text.trim().parse::<i64>().ok().map(normalise))
        }
        Value::Number(n) => n
            .as_i64()
            .or_else(|| n.as_f64().map(|f| f as i64))
            .map(normalise),
        _ => None,
    }
}

/// Numbers past year 5138 in seconds are taken to be milliseconds.
fn normalise(number: i64) -> i64 {
    if number > 100_000_000_000 {
        number / 1000
    } else {
        number
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn iso_dates_in_every_form_become_unix_seconds() {
        assert_eq!(parse_iso("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(parse_iso("2024-01-01T00:00:00Z"), Some(1_704_067_200));
        assert_eq!(
            parse_iso("2024-01-01T02:00:00.123+02:00"),
            Some(1_704_067_200)
        );
        assert_eq!(parse_iso("2023-12-31T19:00:00-05:00"), Some(1_704_067_200));
        assert_eq!(parse_iso("2024-01-01"), Some(1_704_067_200));
        for bad in ["", "soon", "2024-13-01T00:00:00Z", "2024-01-01T25:00:00Z"] {
            assert_eq!(parse_iso(bad), None, "{bad}");
        }
        assert_eq!(
            unix_seconds(&json!(1_704_067_200_000i64)),
            Some(1_704_067_200)
        );
        assert_eq!(unix_seconds(&json!("1704067200")), Some(1_704_067_200));
        assert_eq!(unix_seconds(&json!(true)), None);
    }
}
