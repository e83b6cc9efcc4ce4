//! Numbers kept exactly as sent.
//!
//! Junction reads JSON numbers as 64-bit integers or doubles. An integer beyond 64 bits (an
//! order id of 25 digits, say) or a decimal with more significant digits than a double holds
//! would be rounded when the message is written back. The log must keep what was sent, so a
//! message whose text holds such a number keeps the text of the top-level fields carrying them
//! (`properties`, `traits`, …) exactly as sent; the rest of the message is written as usual.
//! (Workflows still read those numbers as doubles: Intercom takes nothing larger.)

use serde_json::value::RawValue;
use serde_json::{Map, Value};

/// Whether `text` (JSON) holds a number that a double or a 64-bit integer cannot carry.
pub fn has_inexact_number(text: &str) -> bool {
    let bytes = text.as_bytes();
    let mut index = 0;
    while index < bytes.len() {
        match bytes[index] {
            b'"' => {
                // Skip the string, escapes included.
                index += 1;
                while index < bytes.len() && bytes[index] != b'"' {
                    index += if bytes[index] == b'\\' { 2 } else { 1 };
                }
                index += 1;
            }
            b'-' | b'0'..=b'9' => {
                let start = index;
                while index < bytes.len()
                    && matches!(bytes[index], b'0'..=b'9' | b'-' | b'+' | b'.' | b'e' | b'E')
                {
                    index += 1;
                }
                if !is_exact(&text[start..index]) {
                    return true;
                }
            }
            _ => index += 1,
        }
    }
    false
}

fn is_exact(number: &str) -> bool {
    if !number.contains(['.', 'e', 'E']) {
        return number.parse::<i64>().is_ok() || number.parse::<u64>().is_ok();
    }
    // A short plain decimal (no exponent, at most 17 characters: well inside a double's range)
    // with up to 15 significant digits always survives a double: the common case, checked
    // without allocating. Others are exact when the double nearest to them prints back as the
    // same decimal (Rust prints the shortest text that reads back as the same double).
    if number.len() <= 17 && !number.contains(['e', 'E']) {
        let digits = number.bytes().filter(u8::is_ascii_digit);
        if digits.skip_while(|d| *d == b'0').count() <= 15 {
            return true;
        }
    }
    let Ok(double) = number.parse::<f64>() else {
        return false;
    };
    double.is_finite() && decimal(number) == decimal(&format!("{double:e}"))
}

/// A decimal's sign, significant digits and the power of ten of its first digit: `-0.0120e2`
/// and `-1.2e0` are both `(true, "12", 0)`.
fn decimal(text: &str) -> Option<(bool, String, i64)> {
    let negative = text.starts_with('-');
    let text = text.trim_start_matches(['-', '+']);
    let (mantissa, exponent) = match text.split_once(['e', 'E']) {
        Some((m, e)) => (m, e.parse::<i64>().ok()?),
        None => (text, 0),
    };
    let (whole, fraction) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let digits = format!("{whole}{fraction}");
    let leading = digits.len() - digits.trim_start_matches('0').len();
    let significant = digits.trim_start_matches('0').trim_end_matches('0');
    if significant.is_empty() {
        return Some((false, String::new(), 0));
    }
    let first_power = whole.len() as i64 - 1 - leading as i64 + exponent;
    Some((negative, significant.to_owned(), first_power))
}

/// The top-level fields of a message's text that hold numbers Junction would round, with their
/// exact text — except `skip`, the fields Junction rewrites anyway.
pub fn exact_fields(text: &str, skip: &[&str]) -> Vec<(String, String)> {
    if !has_inexact_number(text) {
        return Vec::new();
    }
    let Ok(raw) = serde_json::from_str::<std::collections::BTreeMap<String, &RawValue>>(text)
    else {
        return Vec::new();
    };
    raw.into_iter()
        .filter(|(key, _)| !skip.contains(&key.as_str()))
        .filter(|(_, value)| has_inexact_number(value.get()))
        .map(|(key, value)| (key, value.get().to_owned()))
        .collect()
}

/// A message body as stored: `body` serialised, with the `exact` fields' text as sent.
pub fn body_text(body: &Map<String, Value>, exact: &[(String, String)]) -> String {
    if exact.is_empty() {
        // A JSON object with string keys and finite numbers always serialises.
        return serde_json::to_string(body).unwrap_or_default();
    }
    let mut text = String::from("{");
    for (index, (key, value)) in body.iter().enumerate() {
        if index > 0 {
            text.push(',');
        }
        text.push_str(&serde_json::to_string(key).unwrap_or_default());
        text.push(':');
        match exact.iter().find(|(name, _)| name == key) {
            Some((_, raw)) => text.push_str(raw),
            None => text.push_str(&serde_json::to_string(value).unwrap_or_default()),
        }
    }
    text.push('}');
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn inexact_numbers_are_found_outside_strings_only() {
        for inexact in [
            "123456789012345678901234",
            "-99999999999999999999",
            "0.10000000000000000001",
            "1.23456789012345678e3",
            "1e400",
        ] {
            assert!(
                has_inexact_number(&format!(r#"{{"a": [{inexact}]}}"#)),
                "{inexact}"
            );
        }
        for exact in [
            r#"{"a": 9007199254740993, "b": -9223372036854775808, "c": 18446744073709551615}"#,
            r#"{"a": 1998.9999999999998, "b": 0.1, "c": 1e300, "d": 100.500, "e": -0.0, "f": 1.5E-7}"#,
            r#"{"a": "123456789012345678901234", "b": "\"1234567890123456789012\""}"#,
        ] {
            assert!(!has_inexact_number(exact), "{exact}");
        }
    }

    #[test]
    fn the_stored_text_keeps_inexact_fields_as_sent() {
        let text = r#"{"type":"track","properties":{"order":123456789012345678901234,"n":1},"context":{"x":1}}"#;
        let exact = exact_fields(text, &["context"]);
        assert_eq!(
            exact,
            [(
                "properties".to_owned(),
                r#"{"order":123456789012345678901234,"n":1}"#.to_owned()
            )]
        );
        let body: Map<String, Value> = serde_json::from_str(text).unwrap();
        let stored = body_text(&body, &exact);
        assert!(stored.contains("123456789012345678901234"), "{stored}");
        let reread: Value = serde_json::from_str(&stored).unwrap();
        assert_eq!(reread["type"], "track");
        assert_eq!(reread["context"]["x"], 1);
    }

    proptest! {
        /// Whatever the digits, an integer's text survives storage exactly.
        #[test]
        fn any_integer_is_stored_as_sent(digits in "-?[1-9][0-9]{0,40}") {
            let text = format!(r#"{{"type":"track","properties":{{"id":{digits}}}}}"#);
            let body: Map<String, Value> = serde_json::from_str(&text).unwrap();
            let stored = body_text(&body, &exact_fields(&text, &[]));
            prop_assert!(stored.contains(&format!(":{digits}}}")), "{} → {}", text, stored);
        }
    }
}
