//! The rules that keep journeys considerate of the people they message: how many messages a
//! contact may get (frequency caps), when not to message them (quiet hours, in their own time
//! zone), and whether a person may enter a workflow again (re-entry).
//!
//! Pure functions of the profile and a time: the planner calls them with the event's own
//! timestamp, so a case replays the same way at any hour, and tests pick the hour.

use crate::definition::{CapsDef, JourneysDef, Located, QuietHoursDef};
use crate::duration::Span;
use crate::profile::Profile;
use chrono::{DateTime, Duration, LocalResult, NaiveDate, NaiveDateTime, NaiveTime, TimeZone};
use chrono_tz::Tz;
use std::fmt;
use std::str::FromStr;

const DAY_MS: i64 = 86_400_000;

/// The longest cap window: a profile keeps the times of its messages this long.
pub const LONGEST_CAP: Span = Span(31 * DAY_MS);

/// At most `limit` messages per `per`. A whole number of days counts calendar days in the
/// contact's time zone (`2 per 1d`: two today, whatever the hour); a shorter span is a
/// rolling window (`1 per 4h`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cap {
    pub limit: u32,
    pub per: Span,
}

impl FromStr for Cap {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let expected = || format!("`{text}`: expected a cap like `2 per 1d` or `1 per 4h`");
        let (limit, per) = text.trim().split_once(" per ").ok_or_else(expected)?;
        let limit: u32 = limit.trim().parse().map_err(|_| expected())?;
        let per: Span = per.trim().parse().map_err(|e| format!("{e}"))?;
        if per > LONGEST_CAP {
            return Err(format!("`{text}`: a cap's window is at most 31d"));
        }
        Ok(Cap { limit, per })
    }
}

impl fmt::Display for Cap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} per {}", self.limit, self.per)
    }
}

impl Cap {
    /// How many of the messages sent at `sent` (Unix ms) count against this cap at `now_ms`.
    pub fn counted(&self, sent: impl Iterator<Item = i64>, now_ms: i64, zone: Tz) -> usize {
        if self.per.millis() % DAY_MS == 0 {
            let days = self.per.millis() / DAY_MS;
            let today = local_date(now_ms, zone);
            let first = today - chrono::Days::new((days - 1) as u64);
            sent.filter(|&at| at <= now_ms && local_date(at, zone) >= first)
                .count()
        } else {
            sent.filter(|&at| at <= now_ms && at > now_ms - self.per.millis())
                .count()
        }
    }
}

/// A daily window in the contact's local time when messages are held; `from` after `to` spans
/// midnight (`21:00`–`08:00`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuietHours {
    pub from: NaiveTime,
    pub to: NaiveTime,
}

impl fmt::Display for QuietHours {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}–{}",
            self.from.format("%H:%M"),
            self.to.format("%H:%M")
        )
    }
}

impl QuietHours {
    /// When the quiet window `at_ms` falls in ends (Unix ms), or `None` outside the window.
    /// Computed in local time, so a window ending at 08:00 ends at 08:00 on a DST change day;
    /// a local end time that does not exist that day (the hour skipped in spring) ends at the
    /// first local time after it.
    pub fn release_at(&self, at_ms: i64, zone: Tz) -> Option<i64> {
        let local = DateTime::from_timestamp_millis(at_ms)?.with_timezone(&zone);
        let time = local.time();
        let inside = if self.from <= self.to {
            time >= self.from && time < self.to
        } else {
            time >= self.from || time < self.to
        };
        if !inside {
            return None;
        }
        let date = local.date_naive();
        let end_date = if time < self.to {
            date
        } else {
            date + chrono::Days::new(1)
        };
        Some(first_instant(zone, end_date.and_time(self.to)).timestamp_millis())
    }
}

/// The instant a local wall-clock time names: the earlier of two (the hour repeated in autumn),
/// or the first instant after a skipped one.
fn first_instant(zone: Tz, local: NaiveDateTime) -> DateTime<Tz> {
    let mut local = local;
    loop {
        match zone.from_local_datetime(&local) {
            LocalResult::Single(at) | LocalResult::Ambiguous(at, _) => return at,
            // Gaps are at most a few hours: minute steps find the end quickly.
            LocalResult::None => local += Duration::minutes(1),
        }
    }
}

fn local_date(at_ms: i64, zone: Tz) -> NaiveDate {
    DateTime::from_timestamp_millis(at_ms)
        .map(|at| at.with_timezone(&zone).date_naive())
        .unwrap_or_default()
}

/// Whether a person may start a workflow again.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Reentry {
    /// Every matching event starts a run (the default).
    #[default]
    Always,
    /// One run per person, ever.
    Once,
    /// Another run only this long after the last one started.
    After(Span),
}

impl FromStr for Reentry {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text.trim() {
            "always" => Ok(Reentry::Always),
            "once" => Ok(Reentry::Once),
            other => match other.strip_prefix("after ") {
                Some(span) => span.parse().map(Reentry::After).map_err(|e| format!("{e}")),
                None => Err(format!(
                    "`{other}`: expected `always`, `once` or `after` and a duration (`after 7d`)"
                )),
            },
        }
    }
}

impl Reentry {
    /// Whether a person who last entered at `last_ms` (if ever) may enter at `now_ms`.
    pub fn allows(self, last_ms: Option<i64>, now_ms: i64) -> bool {
        match (self, last_ms) {
            (Reentry::Always, _) | (_, None) => true,
            (Reentry::Once, Some(_)) => false,
            (Reentry::After(span), Some(last)) => now_ms - last >= span.millis(),
        }
    }
}

/// The workspace's journey rules (the configuration's `journeys:`), which every workflow
/// follows unless it says otherwise.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct JourneyRules {
    /// The time zone of contacts whose own is unknown (UTC when unset).
    pub timezone: Option<Tz>,
    pub cap: Option<Cap>,
    pub quiet_hours: Option<QuietHours>,
}

/// A rule that does not read, with where it was written.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{line}:{column}: {message}")]
pub struct RuleError {
    pub line: u32,
    pub column: u32,
    pub message: String,
}

fn located<T>(
    value: &Located<String>,
    what: &str,
    parse: impl FnOnce(&str) -> Result<T, String>,
) -> Result<T, RuleError> {
    parse(&value.value).map_err(|message| RuleError {
        line: value.line,
        column: value.column,
        message: format!("{what}: {message}"),
    })
}

/// Reads a time zone name (`Europe/Paris`, `America/New_York`, `UTC`).
pub fn zone(name: &str) -> Result<Tz, String> {
    name.trim().parse::<Tz>().map_err(|_| {
        format!("`{name}` is not a time zone; expected an IANA name like Europe/Paris")
    })
}

/// Reads a `caps:` block.
pub fn caps(def: &CapsDef) -> Result<Cap, RuleError> {
    located(&def.messages, "caps.messages", str::parse)
}

/// Reads a `quiet_hours:` block.
pub fn quiet_hours(def: &QuietHoursDef) -> Result<QuietHours, RuleError> {
    let time = |text: &str| {
        NaiveTime::parse_from_str(text.trim(), "%H:%M")
            .map_err(|_| format!("`{text}`: expected a time of day like 21:00"))
    };
    let from = located(&def.from, "quiet_hours.from", time)?;
    let to = located(&def.to, "quiet_hours.to", time)?;
    if from == to {
        return Err(RuleError {
            line: def.to.line,
            column: def.to.column,
            message: "quiet_hours: `from` and `to` are the same time; the window would be empty"
                .into(),
        });
    }
    Ok(QuietHours { from, to })
}

impl JourneyRules {
    /// Reads the configuration's `journeys:` block.
    pub fn from_def(def: &JourneysDef) -> Result<JourneyRules, RuleError> {
        Ok(JourneyRules {
            timezone: def
                .timezone
                .as_ref()
                .map(|name| located(name, "timezone", zone))
                .transpose()?,
            cap: def.caps.as_ref().map(caps).transpose()?,
            quiet_hours: def.quiet_hours.as_ref().map(quiet_hours).transpose()?,
        })
    }

    /// A contact's time zone: their `timezone` trait, else the `context.timezone` their
    /// events carried last, else the workspace's, else UTC. Names that do not read are passed
    /// over.
    pub fn zone_of(&self, profile: &Profile) -> Tz {
        profile
            .traits
            .get("timezone")
            .and_then(|zone| zone.as_str())
            .into_iter()
            .chain(profile.timezone.as_deref())
            .find_map(|name| name.parse::<Tz>().ok())
            .or(self.timezone)
            .unwrap_or(Tz::UTC)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(text: &str) -> i64 {
        DateTime::parse_from_rfc3339(text)
            .unwrap()
            .timestamp_millis()
    }

    #[test]
    fn caps_read_as_written() {
        assert_eq!(
            "2 per 1d".parse::<Cap>().unwrap(),
            Cap {
                limit: 2,
                per: Span(DAY_MS)
            }
        );
        for bad in ["2", "two per 1d", "2 per day", "2 per 32d"] {
            assert!(bad.parse::<Cap>().is_err(), "{bad}");
        }
    }

    #[test]
    fn a_daily_cap_counts_the_contacts_calendar_day() {
        let cap: Cap = "2 per 1d".parse().unwrap();
        let tokyo: Tz = "Asia/Tokyo".parse().unwrap();
        // 14:30 UTC is 23:30 in Tokyo; 15:30 UTC is 00:30 the next day there.
        let sent = [ms("2026-03-01T14:30:00Z")];
        assert_eq!(
            cap.counted(sent.into_iter(), ms("2026-03-01T14:50:00Z"), tokyo),
            1
        );
        assert_eq!(
            cap.counted(sent.into_iter(), ms("2026-03-01T15:30:00Z"), tokyo),
            0
        );
        // In UTC both are the same day.
        assert_eq!(
            cap.counted(sent.into_iter(), ms("2026-03-01T15:30:00Z"), Tz::UTC),
            1
        );
    }

    #[test]
    fn quiet_hours_end_at_local_time_across_a_dst_change() {
        let quiet = QuietHours {
            from: NaiveTime::from_hms_opt(21, 0, 0).unwrap(),
            to: NaiveTime::from_hms_opt(8, 0, 0).unwrap(),
        };
        let new_york: Tz = "America/New_York".parse().unwrap();
        // The night clocks go forward (8 March 2026): 22:00 EST is 03:00 UTC; 08:00 EDT the
        // next morning is 12:00 UTC, not 13:00.
        assert_eq!(
            quiet.release_at(ms("2026-03-08T03:00:00Z"), new_york),
            Some(ms("2026-03-08T12:00:00Z"))
        );
        // Outside the window nothing is held.
        assert_eq!(quiet.release_at(ms("2026-03-08T15:00:00Z"), new_york), None);
    }

    #[test]
    fn reentry() {
        let week: Reentry = "after 7d".parse().unwrap();
        assert!(week.allows(None, 0));
        assert!(!week.allows(Some(0), DAY_MS));
        assert!(week.allows(Some(0), 7 * DAY_MS));
        assert!(!Reentry::Once.allows(Some(0), 100 * DAY_MS));
        assert!("sometimes".parse::<Reentry>().is_err());
    }
}
