//! The engine's and delivery's records: profiles, the planner's cursor and shared state, the
//! outbox of planned actions and the durable timers. Bodies are JSON text; the store does not
//! interpret them (their types live in `junction-flow`).

use serde::Serialize;

/// Everything one planning step changes, committed in one transaction so that a crash never
/// leaves an event half planned: either its actions, timers, profile updates and the cursor
/// past it are all durable, or none is and the event is planned again.
#[derive(Debug, Default, Clone)]
pub struct EngineCommit {
    /// The last event seq planned (the planner resumes after it).
    pub cursor: Option<i64>,
    /// identity → profile JSON.
    pub profiles: Vec<(String, String)>,
    pub globals: Option<String>,
    pub actions: Vec<NewAction>,
    pub timers: Vec<NewTimer>,
    /// Timers cancelled by an event, or fired (their steps are in `actions`).
    pub timers_done: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct NewAction {
    pub id: String,
    pub identity: String,
    pub run: String,
    /// The event that led to it.
    pub seq: i64,
    /// The action it stands by for (an error branch), if any: it waits as `standby`.
    pub standby_for: Option<String>,
    pub body: String,
}

#[derive(Debug, Clone)]
pub struct NewTimer {
    pub id: String,
    pub identity: String,
    pub fire_at_ms: i64,
    pub body: String,
}

/// Where an action is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ActionStatus {
    /// Waiting to be delivered (possibly after `next_at_ms`, when retrying).
    Pending,
    /// An error branch waiting for its action's fate.
    Standby,
    Done,
    Failed,
    /// Not run: an earlier action of its run failed, or its action succeeded (error branch).
    Skipped,
}

impl ActionStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ActionStatus::Pending => "pending",
            ActionStatus::Standby => "standby",
            ActionStatus::Done => "done",
            ActionStatus::Failed => "failed",
            ActionStatus::Skipped => "skipped",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "pending" => ActionStatus::Pending,
            "standby" => ActionStatus::Standby,
            "done" => ActionStatus::Done,
            "failed" => ActionStatus::Failed,
            "skipped" => ActionStatus::Skipped,
            _ => return None,
        })
    }
}

/// An action as stored.
#[derive(Debug, Clone, Serialize)]
pub struct ActionRecord {
    /// Delivery order (planning order).
    pub position: i64,
    pub id: String,
    pub identity: String,
    pub run: String,
    pub seq: i64,
    pub status: ActionStatus,
    pub attempts: i64,
    pub next_at_ms: i64,
    pub body: serde_json::Value,
    /// The last attempt's outcome.
    pub result: Option<String>,
    pub updated_ms: i64,
}

/// What delivery learned about one action.
#[derive(Debug, Clone)]
pub enum ActionOutcome {
    Done {
        id: String,
        result: Option<String>,
    },
    /// Try again at `next_at_ms`.
    Retry {
        id: String,
        next_at_ms: i64,
        error: String,
    },
    /// Failed for good. `skip_rest_of_run`: the run's later actions are skipped;
    /// `activate_fallback`: its error-branch actions become pending.
    Failed {
        id: String,
        error: String,
        skip_rest_of_run: bool,
    },
}

/// Counts of actions by status (for metrics, `/readyz` detail and tests).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct OutboxCounts {
    pub pending: i64,
    pub standby: i64,
    pub done: i64,
    pub failed: i64,
    pub skipped: i64,
    pub timers_pending: i64,
}
