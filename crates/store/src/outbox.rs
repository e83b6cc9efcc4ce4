//! The engine's and delivery's records: profiles, the planner's cursor and shared state, the
//! outbox of planned actions (whose failed entries are the dead-letter queue), every delivery
//! attempt, the run log, and the durable timers. Bodies are JSON text; the store does not
//! interpret them (their types live in `junction-flow`).

use serde::Serialize;

/// Everything one planning step changes, committed in one transaction so that a crash never
/// leaves an event half planned: either its actions, timers, runs, profile updates and the
/// cursor past it are all durable, or none is and the event is planned again.
#[derive(Debug, Default, Clone)]
pub struct EngineCommit {
    /// The planning partition this step belongs to: the cursor is its cursor, and the timers
    /// and quarantine entries written are its own.
    pub partition: u32,
    /// The last event seq planned (the partition's planner resumes after it).
    pub cursor: Option<i64>,
    /// identity → profile JSON.
    pub profiles: Vec<(String, String)>,
    /// Shared planner state changed by this step, each written only if nobody else has
    /// changed it since it was read (else the whole commit is refused as a conflict).
    pub shared: Vec<SharedWrite>,
    pub actions: Vec<NewAction>,
    pub timers: Vec<NewTimer>,
    /// Timers cancelled by an event, or fired (their steps are in `actions`).
    pub timers_done: Vec<String>,
    /// Pending timers brought forward to a time (Unix ms): a wait whose event came.
    pub timers_rescheduled: Vec<(String, i64)>,
    pub runs: Vec<NewRun>,
    /// Events and timers of users whose stored profile could not be read: held aside, not
    /// planned against an empty profile, until an operator releases them.
    pub quarantine: Vec<NewQuarantine>,
    /// Released quarantine entries planned in this step (removed).
    pub released_done: Vec<i64>,
    /// The planner's lease this step was planned under: the commit is refused (fenced) when
    /// another node has taken it since. None for a commit made outside the planner (tests).
    pub lease: Option<Lease>,
    /// Users deleted at their request: what is stored of them is redacted.
    pub erasures: Vec<Erasure>,
}

/// A user deleted at their request (a Segment `delete` message). In the event log, every event
/// of theirs before the deletion keeps its place, type, messageId and times, but its body
/// becomes `{"type", "messageId", "redacted"}`; finished actions keep their workflow, step
/// and kind but lose what they sent and who to (`action`, `who`), and their attempts lose the
/// calls' bodies; their timers (which carry events and held messages) are deleted. The deletion message itself is kept whole.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Erasure {
    /// Every id the user's events and actions are stored under (userId, anonymousId).
    pub ids: Vec<String>,
    /// The deletion message's seq: events before it are redacted.
    pub before_seq: i64,
}

/// What a redacted event body and a redacted action say instead of what they held.
pub const REDACTED: &str = "erased at the user's request";

/// One entry of the state planning partitions share (a round-robin turn, a company's traits).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharedEntry {
    pub value: String,
    /// Grows with every write: what a [`SharedWrite`] expects to find.
    pub version: i64,
}

/// A change to shared planner state, made only if the entry is still at `expected` (0: the
/// entry must not exist yet).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharedWrite {
    pub key: String,
    pub value: String,
    pub expected: i64,
}

/// Whether a repartition may go on: refused while other nodes are alive (they would keep
/// numbering events into the old split) or while `behind` names a partition with events or
/// released entries not planned yet (they would land in a partition whose cursor is past them).
pub(crate) fn may_repartition(
    partitions: u32,
    others_alive: &[String],
    behind: Option<u32>,
) -> Result<(), crate::StoreError> {
    if partitions == 0 {
        return Err(crate::StoreError::Refused(
            "planning needs at least one partition".into(),
        ));
    }
    if !others_alive.is_empty() {
        return Err(crate::StoreError::Refused(format!(
            "other nodes are running on this store ({}): stop every node before changing the number of planning partitions",
            others_alive.join(", ")
        )));
    }
    if let Some(partition) = behind {
        return Err(crate::StoreError::Refused(format!(
            "planning partition {partition} has events not planned yet: let the nodes plan the backlog (`junction cluster` shows each partition's lag), stop them, then change the number of partitions"
        )));
    }
    Ok(())
}

/// Where one planning partition stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PartitionState {
    pub partition: u32,
    /// The last event planned.
    pub cursor: i64,
    /// Events of the partition after the cursor (waiting to be planned).
    pub behind: i64,
}

/// A named lease held by one node at a time (`planner/N` for planning partition N): `token`
/// grows with every grant, and writes made under a token that is no longer current are refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Lease {
    pub name: String,
    pub node: String,
    pub token: i64,
    pub expires_ms: i64,
}

impl Lease {
    /// Whether a commit may go on under this lease, given the lease's token as stored.
    pub(crate) fn verify(&self, current_token: Option<i64>) -> Result<(), crate::StoreError> {
        if current_token == Some(self.token) {
            Ok(())
        } else {
            Err(crate::StoreError::Fenced {
                what: self.name.clone(),
                token: self.token,
            })
        }
    }
}

/// A delivery claim with the node holding it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HeldClaim {
    pub node: String,
    #[serde(flatten)]
    pub claim: Claim,
}

/// A node as its heartbeats describe it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NodeRecord {
    pub name: String,
    pub started_ms: i64,
    pub seen_ms: i64,
    /// Taken for gone from then on, unless heard from again.
    pub expires_ms: i64,
}

/// Who is there and who holds what: every node seen, every lease, every delivery claim.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ClusterView {
    pub nodes: Vec<NodeRecord>,
    pub leases: Vec<Lease>,
    pub claims: Vec<HeldClaim>,
}

/// An event (or a due timer) held because its user's stored state could not be read.
#[derive(Debug, Clone)]
pub struct NewQuarantine {
    pub identity: String,
    /// The event's log position (for a timer, the event its run started from; 0 if unknown).
    pub seq: i64,
    /// A held timer's body, re-armed on release.
    pub timer: Option<String>,
    pub reason: String,
}

/// A held event or timer as stored.
#[derive(Debug, Clone, Serialize)]
pub struct QuarantineRecord {
    pub id: i64,
    pub identity: String,
    pub seq: i64,
    pub timer: bool,
    pub reason: String,
    pub at_ms: i64,
    /// Released by an operator, waiting to be planned.
    pub released: bool,
}

/// A released entry, for the engine to plan: the event (read from the log) or the timer body.
#[derive(Debug, Clone)]
pub struct ReleasedEntry {
    pub id: i64,
    pub identity: String,
    pub seq: i64,
    pub timer: Option<String>,
}

#[derive(Debug, Clone)]
pub struct NewAction {
    pub id: String,
    pub identity: String,
    pub run: String,
    /// The event that led to it.
    pub seq: i64,
    /// The action's [`lane`]: 0 urgent (messages, conversations, notes, alerts), 1 bulk (live
    /// syncs), 2 backfill.
    pub lane: i64,
    /// The action it stands by for (an error branch), if any: it waits as `standby`.
    pub standby_for: Option<String>,
    /// A message over a frequency cap: kept as `capped` with this reason, not delivered.
    pub capped: Option<String>,
    pub body: String,
}

impl NewAction {
    /// The status it is stored with.
    pub fn initial_status(&self) -> ActionStatus {
        if self.standby_for.is_some() {
            ActionStatus::Standby
        } else if self.capped.is_some() {
            ActionStatus::Capped
        } else {
            ActionStatus::Pending
        }
    }
}

#[derive(Debug, Clone)]
pub struct NewTimer {
    pub id: String,
    pub identity: String,
    pub fire_at_ms: i64,
    pub body: String,
}

/// One run (event × workflow) as planned.
#[derive(Debug, Clone)]
pub struct NewRun {
    pub run: String,
    pub seq: i64,
    pub workflow: String,
    pub identity: String,
    pub actions: i64,
    pub paused: bool,
    pub error: Option<String>,
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
    /// Failed for good: in the dead-letter queue.
    Failed,
    /// Not run: an earlier action of its run failed, or its action succeeded (error branch).
    Skipped,
    /// Taken out of the dead-letter queue by hand.
    Discarded,
    /// Taken out of the dead-letter queue by a replay (the new actions carry on).
    Replayed,
    /// A message over a frequency cap: kept, not delivered unless released by hand.
    Capped,
    /// The stored status is not one Junction knows (a damaged or newer database): never
    /// delivered, shown as it is, and not mistaken for any other state.
    Unreadable,
}

impl ActionStatus {
    pub const ALL: [ActionStatus; 8] = [
        ActionStatus::Pending,
        ActionStatus::Standby,
        ActionStatus::Done,
        ActionStatus::Failed,
        ActionStatus::Skipped,
        ActionStatus::Discarded,
        ActionStatus::Replayed,
        ActionStatus::Capped,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ActionStatus::Pending => "pending",
            ActionStatus::Standby => "standby",
            ActionStatus::Done => "done",
            ActionStatus::Failed => "failed",
            ActionStatus::Skipped => "skipped",
            ActionStatus::Discarded => "discarded",
            ActionStatus::Replayed => "replayed",
            ActionStatus::Capped => "capped",
            ActionStatus::Unreadable => "unreadable",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        ActionStatus::ALL.into_iter().find(|s| s.as_str() == text)
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
    pub lane: i64,
    pub status: ActionStatus,
    pub attempts: i64,
    pub next_at_ms: i64,
    pub body: serde_json::Value,
    /// The last attempt's outcome.
    pub result: Option<String>,
    /// The failure's code (Intercom's error code, `transport`, `server_error`, …).
    pub error_code: Option<String>,
    pub created_ms: i64,
    pub first_attempt_ms: Option<i64>,
    /// Set while a call that must not be repeated is in flight.
    pub started_ms: Option<i64>,
    pub updated_ms: i64,
}

/// A node's lease on delivering to one user. While it is live (until `expires_ms`) no other
/// node is granted the user. `token` is a fencing token: every grant gets a larger one, and
/// writes made under a token that is no longer the user's current one are refused — so a node
/// that stalled past its lease and woke up cannot record over the node that took over.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Claim {
    pub identity: String,
    pub token: i64,
    pub expires_ms: i64,
}

impl Claim {
    /// Whether a write may go on under this claim, given the user's current claim as stored
    /// (token, expiry): only under the current token, and (with `live_at`) only while it lasts.
    pub(crate) fn verify(
        &self,
        current: Option<(i64, i64)>,
        live_at: Option<i64>,
    ) -> Result<(), crate::StoreError> {
        match current {
            Some((token, expires_ms))
                if token == self.token && live_at.is_none_or(|now| expires_ms > now) =>
            {
                Ok(())
            }
            _ => Err(crate::StoreError::Fenced {
                what: self.identity.clone(),
                token: self.token,
            }),
        }
    }
}

/// One delivery attempt of an action.
#[derive(Debug, Clone, Serialize)]
pub struct Attempt {
    pub number: i64,
    pub at_ms: i64,
    pub duration_ms: i64,
    /// done | retry | failed | paused
    pub outcome: String,
    pub error: Option<String>,
    /// The calls it made: `[{method, path, status, request, response, ms}]`.
    pub calls: serde_json::Value,
}

/// What delivery learned about one action, with the attempt that taught it.
#[derive(Debug, Clone)]
pub enum ActionOutcome {
    /// Delivered. `merged`: later actions of the same user coalesced into this call, done too.
    Done {
        id: String,
        result: Option<String>,
        attempt: Attempt,
        merged: Vec<String>,
    },
    /// Try again at `next_at_ms`. `counts`: false when the attempt says nothing about the
    /// action (the workspace's credentials were refused: delivery pauses instead).
    Retry {
        id: String,
        next_at_ms: i64,
        error: String,
        code: String,
        attempt: Attempt,
        counts: bool,
    },
    /// Failed for good: into the dead-letter queue. `skip_rest_of_run`: the run's later actions
    /// are skipped (unless an error branch is activated instead).
    Failed {
        id: String,
        error: String,
        code: String,
        attempt: Attempt,
        skip_rest_of_run: bool,
    },
}

/// Delivery lanes, stored with each action: which users delivery serves first. A user is
/// served in the lane of the most pressing action they have pending (their own order still
/// holds), and backfill users take at most part of delivery's workers and of each rate window.
pub mod lane {
    /// Messages, conversations, notes, owners, alerts: what a person or a team waits for.
    pub const URGENT: i64 = 0;
    /// Live syncs: profiles, events, companies.
    pub const BULK: i64 = 1;
    /// Everything planned for a backfilled event (`junction backfill`).
    pub const BACKFILL: i64 = 2;
    /// Names for metrics and the admin API, by lane.
    pub const NAMES: [&str; 3] = ["urgent", "bulk", "backfill"];
}

/// The delivery backlog, read through the partial indexes only: it costs the same with a
/// million finished actions (health checks, metrics and the console's overview use it;
/// [`OutboxCounts`] counts every action).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Backlog {
    pub pending: i64,
    /// The dead-letter queue.
    pub failed: i64,
    pub timers_pending: i64,
    /// Age of the oldest pending action per [`lane`] (ms): [urgent, bulk, backfill].
    pub oldest_pending_ms: [Option<i64>; 3],
    /// Pending actions per [`lane`].
    pub pending_by_lane: [i64; 3],
    /// Backfilled events with an action still pending (how far delivery of a backfill is).
    pub backfill_events_pending: i64,
}

impl Backlog {
    /// Counts one [`lane`]'s pending actions: the oldest one's age, how many, and how many
    /// events they belong to (read in one pass over the pending actions, grouped by lane).
    pub(crate) fn add_lane(&mut self, lane: i64, oldest_ms: i64, pending: i64, events: i64) {
        let index = lane.clamp(lane::URGENT, lane::BACKFILL) as usize;
        self.oldest_pending_ms[index] = Some(oldest_ms);
        self.pending_by_lane[index] += pending;
        if lane == lane::BACKFILL {
            self.backfill_events_pending += events;
        }
    }
}

/// Counts of actions by status (for metrics, alerts and tests).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct OutboxCounts {
    pub pending: i64,
    pub standby: i64,
    pub done: i64,
    pub failed: i64,
    pub skipped: i64,
    pub discarded: i64,
    pub replayed: i64,
    pub capped: i64,
    /// Actions whose stored status Junction cannot read (never delivered).
    pub unreadable: i64,
    pub timers_pending: i64,
    /// Age of the oldest pending action per [`lane`] (ms): [urgent, bulk, backfill].
    pub oldest_pending_ms: [Option<i64>; 3],
}

impl OutboxCounts {
    /// Counts `n` actions with this stored status (one row of a count by status).
    pub(crate) fn add(&mut self, status: &str, n: i64) {
        match ActionStatus::parse(status) {
            Some(ActionStatus::Pending) => self.pending = n,
            Some(ActionStatus::Standby) => self.standby = n,
            Some(ActionStatus::Done) => self.done = n,
            Some(ActionStatus::Failed) => self.failed = n,
            Some(ActionStatus::Skipped) => self.skipped = n,
            Some(ActionStatus::Discarded) => self.discarded = n,
            Some(ActionStatus::Replayed) => self.replayed = n,
            Some(ActionStatus::Capped) => self.capped = n,
            Some(ActionStatus::Unreadable) | None => self.unreadable += n,
        }
    }
}

/// The columns every backend reads an action from, in [`ActionRecord`]'s order.
pub(crate) const ACTION_COLUMNS: &str = "position, id, identity, run, seq, lane, status, \
     attempts, next_at_ms, body, result, error_code, created_ms, first_attempt_ms, started_ms, \
     updated_ms";

/// A run's status derived from its actions (SQL for a `runs r` row, the same on every backend).
pub(crate) const RUN_STATUS: &str = "CASE
    WHEN r.error IS NOT NULL THEN 'failed'
    WHEN EXISTS (SELECT 1 FROM actions x WHERE x.run = r.run AND x.status = 'failed')
        THEN CASE WHEN EXISTS (SELECT 1 FROM actions x WHERE x.run = r.run AND x.status = 'done')
                  THEN 'partial' ELSE 'failed' END
    WHEN EXISTS (SELECT 1 FROM actions x WHERE x.run = r.run AND x.status = 'pending') THEN 'delivering'
    WHEN r.paused THEN 'paused'
    WHEN EXISTS (SELECT 1 FROM actions x WHERE x.run = r.run AND x.status = 'capped') THEN 'capped'
    WHEN r.actions = 0 THEN 'empty'
    ELSE 'done' END";

/// What shadow delivery would have sent for one action: the calls it recorded instead.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ShadowCalls {
    pub action: String,
    pub workflow: String,
    /// The attempt's calls: `[{method, path, status, request, response, ms}]`.
    pub calls: serde_json::Value,
}

/// The result shadow delivery records on an action (what it would have sent is in its attempt).
pub const SHADOW_RESULT_PREFIX: &str = "shadow: ";

/// Which dead letters to list.
#[derive(Debug, Clone, Default)]
pub struct DeadLetterQuery {
    pub workflow: Option<String>,
    pub code: Option<String>,
    pub identity: Option<String>,
    /// Failed at or after (Unix ms).
    pub since_ms: Option<i64>,
    /// Failed before (Unix ms).
    pub until_ms: Option<i64>,
    pub limit: usize,
    /// List the capped messages (held back by a frequency cap) instead of the failed actions.
    pub capped: bool,
}

/// One run of the execution log.
#[derive(Debug, Clone, Serialize)]
pub struct RunRecord {
    pub run: String,
    pub seq: i64,
    pub workflow: String,
    pub identity: String,
    pub planned_ms: i64,
    pub actions: i64,
    pub paused: bool,
    /// Why planning stopped early.
    pub error: Option<String>,
    /// Derived from its actions: planned | delivering | done | failed | partial | paused |
    /// capped | empty
    pub status: String,
}

#[derive(Debug, Clone, Default)]
pub struct RunQuery {
    pub workflow: Option<String>,
    pub identity: Option<String>,
    pub status: Option<String>,
    /// Runs planned before this (Unix ms): the page cursor.
    pub before_ms: Option<i64>,
    pub limit: usize,
}
