//! Durations as workflow files write them: `500ms`, `30s`, `15m`, `2h`, `7d`, `2w`.

use std::fmt;
use std::str::FromStr;

/// A span of time, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Span(pub i64);

impl Span {
    pub fn millis(self) -> i64 {
        self.0
    }
}

#[derive(Debug, thiserror::Error)]
#[error(
    "`{0}` is not a duration: expected a number and a unit, like 500ms, 30s, 15m, 2h, 7d or 2w"
)]
pub struct SpanError(String);

impl FromStr for Span {
    type Err = SpanError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let text = text.trim();
        let split = text
            .find(|c: char| !c.is_ascii_digit() && c != '.')
            .ok_or_else(|| SpanError(text.into()))?;
        let (number, unit) = text.split_at(split);
        let number: f64 = number.parse().map_err(|_| SpanError(text.into()))?;
        let unit_ms = match unit.trim() {
            "ms" => 1.0,
            "s" => 1_000.0,
            "m" | "min" => 60_000.0,
            "h" => 3_600_000.0,
            "d" => 86_400_000.0,
            "w" => 604_800_000.0,
            _ => return Err(SpanError(text.into())),
        };
        let ms = number * unit_ms;
        if !ms.is_finite() || ms <= 0.0 {
            return Err(SpanError(text.into()));
        }
        Ok(Span(ms.round() as i64))
    }
}

impl fmt::Display for Span {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.0;
        for (unit, size) in [
            ("w", 604_800_000),
            ("d", 86_400_000),
            ("h", 3_600_000),
            ("m", 60_000),
            ("s", 1_000),
        ] {
            if ms % size == 0 {
                return write!(f, "{}{unit}", ms / size);
            }
        }
        write!(f, "{ms}ms")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units() {
        for (text, ms) in [
            ("500ms", 500),
            ("30s", 30_000),
            ("15m", 900_000),
            ("2h", 7_200_000),
            ("7d", 604_800_000),
            ("1.5s", 1_500),
        ] {
            assert_eq!(text.parse::<Span>().unwrap(), Span(ms), "{text}");
        }
        for bad in ["", "7", "d", "7 days", "-1s", "0s"] {
            assert!(bad.parse::<Span>().is_err(), "{bad}");
        }
        assert_eq!(Span(604_800_000).to_string(), "1w");
        assert_eq!(Span(1_500).to_string(), "1500ms");
    }
}
