//! What this node saw over the last hour, minute by minute, for the console's overview charts:
//! events it stored, and the delivery backlog (pending actions, dead letters, the oldest bulk
//! action's age) as sampled every [`SAMPLE_EVERY`]. Kept in memory: a restarted node starts a
//! new hour; with several nodes, each shows the events it took itself.

use junction_store::Store;
use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Duration;

/// Minutes kept.
pub const MINUTES: usize = 60;
/// How often the backlog is sampled.
pub const SAMPLE_EVERY: Duration = Duration::from_secs(10);

/// One minute of the chart.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub struct Minute {
    /// Unix minute (ms / 60,000).
    pub minute: i64,
    pub events: u64,
    /// The last backlog sample taken in this minute, if any.
    pub pending: Option<i64>,
    pub failed: Option<i64>,
    pub oldest_bulk_s: Option<i64>,
    /// Intercom requests the nodes took budget for, in the windows that ended this minute.
    pub intercom: Option<i64>,
    /// Intercom's 429s to this node this minute.
    pub rate_limited: u64,
}

#[derive(Debug, Default)]
pub struct Activity {
    minutes: Mutex<VecDeque<Minute>>,
}

impl Activity {
    /// The minute `now_ms` falls in, added (with the minutes since the last one) if new.
    fn with_minute(&self, now_ms: i64, change: impl FnOnce(&mut Minute)) {
        let minute = now_ms.div_euclid(60_000);
        let mut minutes = self.minutes.lock().expect("console activity");
        let last = minutes.back().map(|m| m.minute);
        match last {
            Some(last) if last == minute => {}
            Some(last) if last > minute => return,
            _ => {
                let from = last.map_or(minute, |last| (last + 1).max(minute - MINUTES as i64 + 1));
                for m in from..=minute {
                    minutes.push_back(Minute {
                        minute: m,
                        ..Minute::default()
                    });
                }
                while minutes.len() > MINUTES {
                    minutes.pop_front();
                }
            }
        }
        if let Some(current) = minutes.back_mut() {
            change(current);
        }
    }

    pub fn record_events(&self, now_ms: i64, stored: usize) {
        self.with_minute(now_ms, |m| m.events += stored as u64);
    }

    pub fn record_backlog(&self, now_ms: i64, backlog: &junction_store::Backlog) {
        self.with_minute(now_ms, |m| {
            m.pending = Some(backlog.pending);
            m.failed = Some(backlog.failed);
            m.oldest_bulk_s = Some(backlog.oldest_pending_ms[1].unwrap_or(0) / 1000);
        });
    }

    pub fn record_rate_limited(&self, now_ms: i64, answers: u64) {
        self.with_minute(now_ms, |m| m.rate_limited += answers);
    }

    /// Budget taken in a 10-second window that ended at `ended_ms`.
    pub fn record_intercom(&self, ended_ms: i64, taken: i64) {
        self.with_minute(ended_ms, |m| {
            m.intercom = Some(m.intercom.unwrap_or(0) + taken)
        });
    }

    /// The last hour, oldest minute first, with the minutes since the last record filled in.
    pub fn last_hour(&self, now_ms: i64) -> Vec<Minute> {
        self.with_minute(now_ms, |_| {});
        self.minutes
            .lock()
            .expect("console activity")
            .iter()
            .copied()
            .collect()
    }
}

/// Samples the backlog, and the Intercom budget each finished 10-second window took, until the
/// server stops (the task is aborted with it).
pub async fn sample_backlog(store: std::sync::Arc<dyn Store>, activity: std::sync::Arc<Activity>) {
    let mut last_window = None;
    let mut rate_limited = junction_intercom::rate_limited_responses();
    loop {
        let now = chrono::Utc::now().timestamp_millis();
        let answers = junction_intercom::rate_limited_responses();
        activity.record_rate_limited(now, answers.saturating_sub(rate_limited));
        rate_limited = answers;
        match store.backlog().await {
            Ok(backlog) => activity.record_backlog(now, &backlog),
            Err(error) => tracing::debug!(%error, "console: cannot sample the backlog"),
        }
        // The window that ended last (Intercom's windows: 10 s on the Unix clock), once.
        let window = now / 10_000 - 1;
        if last_window != Some(window) {
            match store.budget_taken(window).await {
                Ok(taken) => {
                    activity.record_intercom((window + 1) * 10_000 - 1, taken);
                    last_window = Some(window);
                }
                Err(error) => tracing::debug!(%error, "console: cannot read the Intercom budget"),
            }
        }
        tokio::time::sleep(SAMPLE_EVERY).await;
    }
}

/// A small line chart of `values` (None: no sample), as SVG, with its latest and largest value
/// in words for screen readers.
pub fn sparkline(title: &str, values: &[Option<f64>]) -> String {
    let (width, height) = (360.0, 60.0);
    let max = values.iter().flatten().copied().fold(0.0_f64, f64::max);
    let latest = values.iter().rev().flatten().next().copied();
    let step = width / (values.len().max(2) - 1) as f64;
    let points: Vec<String> = values
        .iter()
        .enumerate()
        .filter_map(|(i, v)| {
            v.map(|v| {
                let y = if max > 0.0 {
                    height - v / max * (height - 4.0) - 2.0
                } else {
                    height - 2.0
                };
                format!("{:.1},{:.1}", i as f64 * step, y)
            })
        })
        .collect();
    let described = format!(
        "{title}: now {}, at most {} in the last hour",
        latest.map_or("—".to_owned(), |v| format!("{v:.0}")),
        format_args!("{max:.0}")
    );
    // A lone sample has no line to draw: a dot shows it.
    let dot = match points.as_slice() {
        [only] => {
            let (x, y) = only.split_once(',').unwrap_or(("0", "0"));
            format!("<circle cx=\"{x}\" cy=\"{y}\" r=\"3\" fill=\"#1f5fbf\"/>")
        }
        _ => String::new(),
    };
    let legend = format!(
        "now {} · max {max:.0}",
        latest.map_or("—".to_owned(), |v| format!("{v:.0}"))
    );
    format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" class=\"spark\" role=\"img\" viewBox=\"0 0 {width} {height}\" width=\"{width}\" height=\"{height}\">\
         <title>{}</title>\
         <line x1=\"0\" y1=\"{height}\" x2=\"{width}\" y2=\"{height}\" stroke=\"#d9dde5\"/>\
         <text x=\"{width}\" y=\"12\" text-anchor=\"end\" font-size=\"11\" fill=\"#5b6475\">{}</text>\
         <polyline fill=\"none\" stroke=\"#1f5fbf\" stroke-width=\"2\" points=\"{}\"/>{dot}</svg>",
        escape(&described),
        escape(&legend),
        points.join(" ")
    )
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minutes_roll_over_and_keep_one_hour() {
        let activity = Activity::default();
        let start: i64 = 30_000_000 * 60_000;
        activity.record_events(start, 5);
        activity.record_events(start + 30_000, 2);
        activity.record_events(start + 3 * 60_000, 4);
        let hour = activity.last_hour(start + 3 * 60_000);
        let events: Vec<u64> = hour.iter().map(|m| m.events).collect();
        assert_eq!(events, [7, 0, 0, 4], "quiet minutes are zeros, not gaps");
        let later = activity.last_hour(start + 200 * 60_000);
        assert_eq!(later.len(), MINUTES);
        assert!(
            later.iter().all(|m| m.events == 0),
            "an hour later all is quiet"
        );
    }

    #[test]
    fn the_intercom_budget_adds_up_per_minute() {
        let activity = Activity::default();
        let minute: i64 = 30_000_000 * 60_000;
        activity.record_intercom(minute + 9_999, 80);
        activity.record_intercom(minute + 19_999, 40);
        activity.record_intercom(minute + 60_000 + 9_999, 5);
        let hour = activity.last_hour(minute + 61_000);
        let taken: Vec<Option<i64>> = hour.iter().map(|m| m.intercom).collect();
        assert_eq!(taken, [Some(120), Some(5)]);
    }

    #[test]
    fn a_sparkline_says_what_it_shows() {
        let svg = sparkline("Events <per> minute", &[Some(1.0), None, Some(4.0)]);
        assert!(svg.contains(
            "<title>Events &lt;per&gt; minute: now 4, at most 4 in the last hour</title>"
        ));
        let points = svg
            .split("points=\"")
            .nth(1)
            .unwrap()
            .split('"')
            .next()
            .unwrap();
        assert_eq!(
            points, "0.0,44.0 360.0,2.0",
            "two points drawn, the gap skipped"
        );
    }
}
