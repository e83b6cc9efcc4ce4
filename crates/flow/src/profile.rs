//! What Junction keeps per user between events: merged traits, scores, counters, milestones,
//! remembered values, recent activity and pending timers. One JSON document per identity,
//! written only by the planner (so it needs no locking), read by expressions as `traits` and
//! `profile`.

use crate::duration::Span;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value as Json, json};
use std::collections::{BTreeMap, VecDeque};

/// How many recent events a profile keeps (for activity summaries in notes and conversations).
pub const RECENT_EVENTS: usize = 20;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Profile {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub anonymous_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// Every identify's traits merged, newest value winning.
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub traits: Map<String, Json>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub scores: BTreeMap<String, ScoreState>,
    /// Event times (Unix ms) within the last two windows of each counter.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub counts: BTreeMap<String, CountState>,
    /// Milestones in the order they were reached.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub milestones: Vec<String>,
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub memory: Map<String, Json>,
    #[serde(default, skip_serializing_if = "VecDeque::is_empty")]
    pub recent: VecDeque<RecentEvent>,
    /// Waits in progress, with the events that cancel them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub timers: Vec<PendingTimer>,
    /// Per Intercom topic, the `created_at` (Unix ms) of the newest notification planned:
    /// Intercom does not deliver in order, and an older `contact.user.updated` arriving after a
    /// newer one must not win.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub intercom_seen: BTreeMap<String, i64>,
    /// The `context.timezone` the person's latest event carried (caps and quiet hours use it
    /// when they have no `timezone` trait).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timezone: Option<String>,
    /// The messages planned for the person within the longest cap window, oldest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub messages: Vec<SentMessage>,
    /// Per workflow with a `reentry` rule, when the person last started a run of it (Unix ms).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub entered: BTreeMap<String, i64>,
}

/// A message counted against caps.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SentMessage {
    /// Unix ms.
    pub at: i64,
    pub workflow: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScoreState {
    pub value: f64,
    /// Whether the next upward crossing fires (false from a crossing until the score falls
    /// below threshold − hysteresis).
    pub armed: bool,
    /// When `value` was last brought up to date (Unix ms).
    pub at_ms: i64,
    /// Windowed scores: each event's points and time.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub points: Vec<(i64, f64)>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CountState {
    pub window_ms: i64,
    pub times: Vec<i64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecentEvent {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Unix ms.
    pub at: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PendingTimer {
    pub id: String,
    pub cancel_on: Vec<String>,
    /// A `wait: {until: …}`: the workflow and the index of its wait step, whose events or
    /// condition end it early.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until: Option<(String, usize)>,
    /// When what the wait was waiting for happened (Unix ms): the run goes on from there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub matched_at: Option<i64>,
}

impl Profile {
    /// The profile as expressions see it (`profile.…`), counters evaluated at `now_ms`.
    pub fn view(&self, now_ms: i64) -> Json {
        let scores: Map<String, Json> = self
            .scores
            .iter()
            .map(|(name, score)| (name.clone(), number(score.value)))
            .collect();
        let counts: Map<String, Json> = self
            .counts
            .iter()
            .map(|(name, count)| {
                let (current, previous) = count.windows(now_ms);
                (
                    name.clone(),
                    json!({"current": current, "previous": previous}),
                )
            })
            .collect();
        let recent: Vec<Json> = self
            .recent
            .iter()
            .map(|e| {
                let at = chrono::DateTime::from_timestamp_millis(e.at)
                    .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true));
                json!({"type": e.kind, "name": e.name, "at": at})
            })
            .collect();
        json!({
            "user_id": self.user_id,
            "anonymous_id": self.anonymous_id,
            "email": self.email,
            "scores": scores,
            "counts": counts,
            "milestones": self.milestones,
            "memory": self.memory,
            "recent": recent,
        })
    }
}

impl Profile {
    /// Marks a milestone reached; true the first time.
    pub fn reach_milestone(&mut self, name: String) -> bool {
        let new = !self.milestones.contains(&name);
        if new {
            self.milestones.push(name);
        }
        new
    }
}

/// How a score forgets its points.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Decay {
    /// Points add up for good.
    Never,
    /// Only the points earned within this window count.
    Window(Span),
    /// Points fade, halving over this span.
    HalfLife(Span),
}

impl ScoreState {
    pub fn new(now_ms: i64) -> ScoreState {
        ScoreState {
            value: 0.0,
            armed: true,
            at_ms: now_ms,
            points: Vec::new(),
        }
    }

    /// Adds `points` earned at `now_ms`, forgetting as `decay` says. True when the score
    /// crosses `threshold` upwards while armed; it is then disarmed until it falls below
    /// `threshold − hysteresis`.
    pub fn add(
        &mut self,
        points: f64,
        now_ms: i64,
        decay: Decay,
        threshold: f64,
        hysteresis: f64,
    ) -> bool {
        match decay {
            Decay::Window(window) => {
                if points != 0.0 {
                    self.points.push((now_ms, points));
                }
                self.points.retain(|(at, _)| *at > now_ms - window.millis());
                self.value = self.points.iter().map(|(_, p)| p).sum();
            }
            Decay::HalfLife(half_life) => {
                let elapsed = (now_ms - self.at_ms).max(0) as f64;
                self.value =
                    self.value * 0.5_f64.powf(elapsed / half_life.millis() as f64) + points;
            }
            Decay::Never => self.value += points,
        }
        self.at_ms = now_ms.max(self.at_ms);
        let fire = self.armed && self.value >= threshold;
        if fire {
            self.armed = false;
        } else if !self.armed && self.value < threshold - hysteresis {
            self.armed = true;
        }
        fire
    }
}

impl CountState {
    /// Records an event at `now_ms`, keeping the times of the last two windows.
    pub fn record(&mut self, now_ms: i64, window: Span) {
        self.window_ms = window.millis();
        self.times.push(now_ms);
        self.times.retain(|t| *t > now_ms - 2 * window.millis());
    }

    /// Events in the window ending now, and in the window before it.
    pub fn windows(&self, now_ms: i64) -> (usize, usize) {
        let current_from = now_ms - self.window_ms;
        let previous_from = current_from - self.window_ms;
        let current = self.times.iter().filter(|&&t| t > current_from).count();
        let previous = self
            .times
            .iter()
            .filter(|&&t| t > previous_from && t <= current_from)
            .count();
        (current, previous)
    }
}

/// Scores print as people write them: 50, 2.5 (not 50.0 or 2.4999999).
fn number(value: f64) -> Json {
    let rounded = (value * 1000.0).round() / 1000.0;
    if rounded.fract() == 0.0 && rounded.abs() < 1e15 {
        json!(rounded as i64)
    } else {
        json!(rounded)
    }
}
