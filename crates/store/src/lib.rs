//! Junction's durable state behind one trait, [`Store`].
//!
//! The ingest side appends validated messages (and refused ones, to the rejected log) and gets
//! an answer only after they are committed; that answer is what lets the server reply 200.
//! Readers (the admin API, the CLI, and the engine that comes next) page through the log.
//!
//! Two implementations, one conformance suite (`tests/conformance.rs`):
//! [`sqlite::SqliteStore`] (the embedded default: WAL, `synchronous=FULL`, a single writer
//! thread doing group commit) and [`postgres::PostgresStore`] (several nodes on one database:
//! group commit per node, numbering under one row lock, per-user locks). Every call is async,
//! sequence numbers are assigned by the store, and nothing assumes a single process.

pub mod clock;
mod copy;
pub mod outbox;
mod partition;
pub mod postgres;
mod query;
pub mod sqlite;

pub use outbox::{
    ActionOutcome, ActionRecord, ActionStatus, Attempt, Backlog, Claim, ClusterView,
    DeadLetterQuery, EngineCommit, Erasure, HeldClaim, Lease, NewAction, NewQuarantine, NewRun,
    NewTimer, NodeRecord, OutboxCounts, PartitionState, QuarantineRecord, REDACTED, ReleasedEntry,
    RunQuery, RunRecord, SHADOW_RESULT_PREFIX, ShadowCalls, SharedEntry, SharedWrite, lane,
};
pub use partition::{DEFAULT_PARTITIONS, default_partitions, partition_of};
pub use query::{EventQuery, Page, RejectedQuery};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use junction_model::{Message, MessageType, RejectedMessage};
use serde::Serialize;
use std::sync::Arc;
use std::time::Duration;

/// Failures of the store. None of them carries request data or secrets.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The backend failed (its own error, kept as the source).
    #[error("store database error: {0}")]
    Database(Box<dyn std::error::Error + Send + Sync>),
    #[error("store connection pool error: {0}")]
    Pool(String),
    #[error("invalid query: {0}")]
    InvalidQuery(String),
    #[error("the store is shut down")]
    Closed,
    /// A write under a claim or lease that another node has taken over since (`what`: the
    /// user a delivery claim was on, or the lease's name).
    #[error("{what:?} (token {token}) is no longer held by this node")]
    Fenced { what: String, token: i64 },
    /// Shared planner state changed under this commit (another partition's planner wrote it
    /// first): nothing was written; plan the batch again on fresh state.
    #[error("shared planner state changed meanwhile: {0}")]
    Conflict(String),
    /// A change the store cannot make in its present state (the reason says why and what to do).
    #[error("{0}")]
    Refused(String),
    /// Stored state that cannot be read back (damaged, or written by a newer Junction).
    #[error("unreadable stored state: {0}")]
    Unreadable(String),
    #[error("unsupported store URL {url:?}: {reason}")]
    Unsupported { url: String, reason: String },
    #[error("cannot prepare the store at {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
}

/// Settings every implementation honours.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// A `messageId` seen again (from the same source) within this window is a duplicate.
    pub dedupe_window: Duration,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            dedupe_window: Duration::from_secs(7 * 24 * 3600),
        }
    }
}

/// What one request wants stored, committed atomically together.
#[derive(Debug, Clone)]
pub struct AppendBatch {
    /// Where the messages came from (a write key's source name, or the webhook endpoint);
    /// de-duplication is per source.
    pub source: String,
    pub received_at: DateTime<Utc>,
    pub events: Vec<NewEvent>,
    pub rejected: Vec<RejectedMessage>,
}

/// An event ready to be written: its indexed fields and its body already as JSON text.
#[derive(Debug, Clone, PartialEq)]
pub struct NewEvent {
    pub message_id: String,
    pub kind: MessageType,
    pub identity: String,
    pub user_id: Option<String>,
    pub anonymous_id: Option<String>,
    pub event: Option<String>,
    pub timestamp: DateTime<Utc>,
    pub body: String,
}

impl From<Message> for NewEvent {
    fn from(message: Message) -> Self {
        NewEvent {
            identity: message.identity().to_owned(),
            body: message.body_text(),
            message_id: message.message_id,
            kind: message.kind,
            user_id: message.user_id,
            anonymous_id: message.anonymous_id,
            event: message.event,
            timestamp: message.timestamp,
        }
    }
}

impl AppendBatch {
    /// Prepares a request's messages for the store. Serialising here, on the caller's thread,
    /// keeps that work off the single writer.
    pub fn new(
        source: impl Into<String>,
        received_at: DateTime<Utc>,
        messages: Vec<Message>,
        rejected: Vec<RejectedMessage>,
    ) -> Self {
        AppendBatch {
            source: source.into(),
            received_at,
            events: messages.into_iter().map(NewEvent::from).collect(),
            rejected,
        }
    }

    /// Rows this batch writes, the unit the group commit is sized in.
    pub fn rows(&self) -> usize {
        self.events.len() + self.rejected.len()
    }
}

/// The fate of one appended event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Appended {
    /// Stored at this position of the log.
    Stored(i64),
    /// The same `messageId` from the same source is already in the log (within the window).
    Duplicate,
}

/// The answer to an append, once committed: one outcome per event, in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AppendReceipt {
    pub events: Vec<Appended>,
}

impl AppendReceipt {
    pub fn stored(&self) -> usize {
        self.events
            .iter()
            .filter(|a| matches!(a, Appended::Stored(_)))
            .count()
    }

    pub fn duplicates(&self) -> usize {
        self.events.len() - self.stored()
    }
}

/// An event as the log holds it.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StoredEvent {
    /// Position in the log: arrival order, never reused.
    pub seq: i64,
    pub source: String,
    pub message_id: String,
    #[serde(rename = "type")]
    pub kind: String,
    /// `userId`, else `anonymousId`: the key events are ordered by for delivery.
    pub identity: String,
    pub user_id: Option<String>,
    pub anonymous_id: Option<String>,
    pub event: Option<String>,
    pub timestamp: DateTime<Utc>,
    pub received_at: DateTime<Utc>,
    /// The message as stored (see [`junction_model::Message::body`]).
    pub body: serde_json::Value,
}

/// A Segment-side id of a person.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum IdentityKey {
    UserId(String),
    AnonymousId(String),
    /// Compared case-insensitively (stored lower-cased).
    Email(String),
    /// Not an id of a person but a fact about their contact: it is attached to this Intercom
    /// company (by Intercom's company id). Kept with the contact's ids, so that it is forgotten
    /// with them when the contact is gone.
    CompanyAttachment {
        contact_id: String,
        company_id: String,
    },
}

impl IdentityKey {
    pub fn kind(&self) -> &'static str {
        match self {
            IdentityKey::UserId(_) => "user_id",
            IdentityKey::AnonymousId(_) => "anonymous_id",
            IdentityKey::Email(_) => "email",
            IdentityKey::CompanyAttachment { .. } => "company_attachment",
        }
    }

    pub fn value(&self) -> String {
        match self {
            IdentityKey::UserId(v) | IdentityKey::AnonymousId(v) => v.clone(),
            IdentityKey::Email(v) => v.to_lowercase(),
            IdentityKey::CompanyAttachment {
                contact_id,
                company_id,
            } => format!("{contact_id} {company_id}"),
        }
    }
}

/// What the identity map is searched by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdentitySearch {
    Key(IdentityKey),
    /// An Intercom contact id.
    Contact(String),
}

/// One row of the identity map.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct IdentityEntry {
    pub workspace: String,
    /// `user_id`, `anonymous_id`, `email` or `company_attachment`.
    pub kind: String,
    pub value: String,
    pub contact_id: String,
}

/// A refused message, kept so that nothing is dropped silently.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RejectedRecord {
    pub id: i64,
    pub source: String,
    pub received_at: DateTime<Utc>,
    /// Position of the message in its request.
    pub index: i64,
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub message_id: Option<String>,
    pub code: String,
    pub field: String,
    pub reason: String,
    /// The message text as received (without any write key).
    pub body: String,
}

/// The event log: Segment calls and Intercom notifications in arrival order, and the refused
/// messages. [`EventLog::append`] must be durable before it returns: the server answers 200
/// on the strength of it.
#[async_trait]
pub trait EventLog: Send + Sync + 'static {
    /// Commits the batch (events de-duplicated by source and `messageId`) and says what
    /// happened to each event. Returns only once the data is durable.
    async fn append(&self, batch: AppendBatch) -> Result<AppendReceipt, StoreError>;

    /// Events, newest first, filtered and paged.
    async fn events(&self, query: EventQuery) -> Result<Page<StoredEvent>, StoreError>;

    /// One event by its log position.
    async fn event(&self, seq: i64) -> Result<Option<StoredEvent>, StoreError>;

    /// One identity's events after a position, oldest first: the order delivery must keep.
    async fn identity_events(
        &self,
        identity: &str,
        after_seq: i64,
        limit: usize,
    ) -> Result<Vec<StoredEvent>, StoreError>;

    /// One planning partition's events after a position, oldest first (what its planner
    /// reads). An event's partition is [`partition_of`] its identity.
    async fn events_after(
        &self,
        partition: u32,
        after_seq: i64,
        limit: usize,
    ) -> Result<Vec<StoredEvent>, StoreError>;

    /// Refused messages, newest first.
    async fn rejected(&self, query: RejectedQuery) -> Result<Page<RejectedRecord>, StoreError>;
}

/// What the planners keep between events: each partition's cursor, the state partitions share
/// (round-robin turns, company traits), users' profiles, durable timers, and what is held in
/// quarantine. [`EngineState::engine_commit`] writes one planning step atomically.
///
/// Planning is split into [`EngineState::partitions`] partitions by identity
/// ([`partition_of`]); each partition's planner reads only its events, timers and released
/// entries, so the partitions can be planned on different nodes at once.
#[async_trait]
pub trait EngineState: Send + Sync + 'static {
    /// How many planning partitions the store is split into (read from the store each time:
    /// another process may have changed it).
    async fn partitions(&self) -> Result<u32, StoreError>;

    /// Where a partition's planner stands (last event planned; 0 before any).
    async fn cursor(&self, partition: u32) -> Result<i64, StoreError>;

    /// Every partition's cursor and how many of its events wait to be planned.
    async fn partition_states(&self) -> Result<Vec<PartitionState>, StoreError>;

    /// Shared planner state: the entries named in `keys`, and every entry whose key starts
    /// with one of `prefixes`.
    async fn shared_state(
        &self,
        keys: Vec<String>,
        prefixes: Vec<String>,
    ) -> Result<std::collections::HashMap<String, SharedEntry>, StoreError>;

    /// The stored profiles of these identities (identity → JSON).
    async fn profiles(
        &self,
        identities: Vec<String>,
    ) -> Result<std::collections::HashMap<String, String>, StoreError>;

    /// Commits one planning step atomically (see [`EngineCommit`]). Refused with
    /// [`StoreError::Conflict`] when shared state it read has changed since.
    async fn engine_commit(&self, commit: EngineCommit) -> Result<(), StoreError>;

    /// A partition's timers due at `now_ms`, earliest first: (id, body).
    async fn due_timers(
        &self,
        partition: u32,
        now_ms: i64,
        limit: usize,
    ) -> Result<Vec<(String, String)>, StoreError>;

    /// When a partition's next pending timer is due.
    async fn next_timer_ms(&self, partition: u32) -> Result<Option<i64>, StoreError>;

    /// A partition's released entries waiting to be planned, oldest event first.
    async fn quarantine_released(
        &self,
        partition: u32,
        limit: usize,
    ) -> Result<Vec<ReleasedEntry>, StoreError>;

    /// Splits planning into `partitions` partitions from now on. Refused unless planning has
    /// caught up (no partition has events or released entries waiting) and no node other than
    /// `node` is alive at `now_ms`: the nodes running must all read the same split.
    async fn repartition(&self, partitions: u32, node: &str, now_ms: i64)
    -> Result<(), StoreError>;
}

/// The outbox as delivery works through it: each user's head of line, in-flight marks, outcomes.
#[async_trait]
pub trait DeliveryQueue: Send + Sync + 'static {
    /// Each user's first pending action that is due at `now_ms`: users in order of their
    /// [`lane`] (urgent, bulk, backfill), then planning order. (A user whose head waits for a retry is absent: only that user waits.)
    async fn ready_heads(&self, now_ms: i64, limit: usize)
    -> Result<Vec<ActionRecord>, StoreError>;

    /// When the next waiting head becomes due.
    async fn next_due_ms(&self) -> Result<Option<i64>, StoreError>;

    /// One user's pending actions, in order.
    async fn pending_of(
        &self,
        identity: &str,
        limit: usize,
    ) -> Result<Vec<ActionRecord>, StoreError>;

    /// Claims up to `limit` users whose head is due at `now_ms` and whom no live claim holds,
    /// for `lease_ms`, in [`DeliveryQueue::ready_heads`] order. While a claim is live no other
    /// node delivers to that user; each grant carries a new, larger token (see [`Claim`]).
    async fn claim_users(
        &self,
        node: &str,
        now_ms: i64,
        lease_ms: i64,
        limit: usize,
    ) -> Result<Vec<Claim>, StoreError> {
        self.claim_users_in(node, now_ms, lease_ms, limit, lane::URGENT..=lane::BACKFILL)
            .await
    }

    /// [`DeliveryQueue::claim_users`] among users served in `lanes` only (a user is served in
    /// the [`lane`] of the most pressing action they have pending).
    async fn claim_users_in(
        &self,
        node: &str,
        now_ms: i64,
        lease_ms: i64,
        limit: usize,
        lanes: std::ops::RangeInclusive<i64>,
    ) -> Result<Vec<Claim>, StoreError>;

    /// Extends these claims to `now_ms + lease_ms`. Returns the claims still held, renewed;
    /// a claim missing from the answer was taken over (its holder must stop).
    async fn renew_claims(
        &self,
        claims: Vec<Claim>,
        now_ms: i64,
        lease_ms: i64,
    ) -> Result<Vec<Claim>, StoreError>;

    /// Gives a claim up (after its last outcome is recorded).
    async fn release_claim(&self, claim: &Claim) -> Result<(), StoreError>;

    /// Gives up every claim held under this node name: called when a node starts, so that the
    /// users its previous run held (killed, say) need not wait for their leases to lapse.
    /// Node names are unique among running nodes, so none of these claims is in use.
    async fn release_claims_of(&self, node: &str) -> Result<usize, StoreError>;

    /// Marks an action whose call must not be repeated as in flight (committed before the
    /// call; its outcome clears the mark). Refused with [`StoreError::Fenced`] unless `claim`
    /// is still the user's claim and live at `now_ms`: a call is only started under a live
    /// lease. A mark found by a later claim means its holder stopped mid-call.
    async fn mark_started(&self, claim: &Claim, id: &str, now_ms: i64) -> Result<(), StoreError>;

    /// Records what delivery learned, in one commit, under the user's claim: refused with
    /// [`StoreError::Fenced`] when another node has claimed the user since.
    async fn action_outcomes(
        &self,
        claim: &Claim,
        outcomes: Vec<ActionOutcome>,
    ) -> Result<(), StoreError>;

    /// Deletes finished records older than `before_ms` (see the SQLite implementation).
    async fn cleanup(&self, before_ms: i64) -> Result<usize, StoreError>;

    /// How many actions are in each state, how many timers wait, and the backlog's age. Counts
    /// every action: for the admin API, not for anything that runs often.
    async fn outbox_counts(&self) -> Result<OutboxCounts, StoreError>;

    /// Pending actions, dead letters, waiting timers and the backlog's age, through indexes.
    async fn backlog(&self) -> Result<Backlog, StoreError>;
}

/// Which Intercom contact each Segment id belongs to, per workspace, and what Junction itself
/// created in Intercom.
#[async_trait]
pub trait IdentityMap: Send + Sync + 'static {
    /// The Intercom contact a Segment id is known to belong to, in one Intercom workspace.
    async fn identity_lookup(
        &self,
        workspace: &str,
        key: &IdentityKey,
    ) -> Result<Option<String>, StoreError>;

    /// Records that these ids belong to this contact (replacing what they pointed to).
    async fn identity_remember(
        &self,
        workspace: &str,
        keys: &[IdentityKey],
        contact_id: &str,
    ) -> Result<(), StoreError>;

    /// Forgets every id pointing at a contact that no longer exists (404) or was merged (410).
    async fn identity_forget(&self, workspace: &str, contact_id: &str) -> Result<(), StoreError>;

    /// Every entry of the contacts a search finds: those a Segment id points at, or the
    /// contact with this Intercom id, with all their ids, in every workspace (the console's
    /// People page).
    async fn identity_entries(
        &self,
        search: &IdentitySearch,
    ) -> Result<Vec<IdentityEntry>, StoreError>;

    /// Forgets one key (a company attachment that was undone).
    async fn identity_unlink(&self, workspace: &str, key: &IdentityKey) -> Result<(), StoreError>;

    /// Records that Junction created this Intercom object (`conversation`, id).
    async fn remember_made(&self, kind: &str, id: &str) -> Result<(), StoreError>;

    /// Which of these ids of one kind Junction created.
    async fn made_by_junction(
        &self,
        kind: &str,
        ids: Vec<String>,
    ) -> Result<std::collections::HashSet<String>, StoreError>;
}

/// What the nodes sharing a store know of each other: which are alive (heartbeats), and who
/// holds which lease.
#[async_trait]
pub trait Coordination: Send + Sync + 'static {
    /// Takes the lease `name` for `node` until `now_ms + lease_ms` when nobody holds it (or its
    /// holder let it lapse, or `node` itself holds it), with a new, larger token. None when
    /// another node holds it.
    async fn acquire_lease(
        &self,
        name: &str,
        node: &str,
        now_ms: i64,
        lease_ms: i64,
    ) -> Result<Option<Lease>, StoreError>;

    /// Extends a lease still held under its token; None when it was taken over.
    async fn renew_lease(
        &self,
        lease: &Lease,
        now_ms: i64,
        lease_ms: i64,
    ) -> Result<Option<Lease>, StoreError>;

    /// Gives a lease up (at shutdown), so another node can take it at once.
    async fn release_lease(&self, lease: &Lease) -> Result<(), StoreError>;

    /// Rings `events_arrived` when any node commits new events, and `actions_planned` when any
    /// node plans new actions, until the store closes. (With one process, as on SQLite, the
    /// process rings its own bells and this does nothing.)
    async fn ring_on_changes(
        &self,
        events_arrived: std::sync::Arc<tokio::sync::Notify>,
        actions_planned: std::sync::Arc<tokio::sync::Notify>,
    ) -> Result<(), StoreError>;

    /// Says that `node` (running since `started_ms`) is alive at `now_ms` and, unless heard from
    /// again, to be taken for gone from `expires_ms` (a node stopping says `expires_ms = now_ms`).
    async fn heartbeat(
        &self,
        node: &str,
        started_ms: i64,
        now_ms: i64,
        expires_ms: i64,
    ) -> Result<(), StoreError>;

    /// Every node that has been seen, every lease and every delivery claim (for
    /// `junction cluster`).
    async fn cluster(&self) -> Result<ClusterView, StoreError>;
}

/// Intercom's rate budget, shared by every node calling one workspace: each node takes slices
/// of the current window's budget before spending them, so all nodes together stay inside it.
#[async_trait]
pub trait RateBudget: Send + Sync + 'static {
    /// Takes up to `wanted` requests from `workspace`'s budget for the 10-second window
    /// `bucket` (Unix seconds / 10), of which `limit` may be spent in all. Returns how many
    /// were granted: 0 when the window is spent.
    async fn take_budget(
        &self,
        workspace: &str,
        bucket: i64,
        limit: i64,
        wanted: i64,
    ) -> Result<i64, StoreError>;

    /// What all nodes took from every workspace's budget for window `bucket`: what they may
    /// have sent then (at least what they sent). Windows older than a minute are gone.
    async fn budget_taken(&self, bucket: i64) -> Result<i64, StoreError>;
}

/// What operators read and act on: actions with their attempts, the dead-letter queue, the
/// execution log, the quarantine.
#[async_trait]
pub trait Inspection: Send + Sync + 'static {
    /// One action by id.
    async fn action(&self, id: &str) -> Result<Option<ActionRecord>, StoreError>;

    /// Every attempt of an action, first to last.
    async fn attempts(&self, id: &str) -> Result<Vec<Attempt>, StoreError>;

    /// The dead-letter queue (failed actions), oldest first.
    async fn dead_letters(&self, query: DeadLetterQuery) -> Result<Vec<ActionRecord>, StoreError>;

    /// Takes dead letters out of the queue without delivering them. Returns how many.
    async fn discard(&self, ids: Vec<String>) -> Result<usize, StoreError>;

    /// The newest actions shadow delivery recorded (their result starts with
    /// [`SHADOW_RESULT_PREFIX`]), newest first, with the calls each would have made.
    async fn shadow_calls(&self, limit: usize) -> Result<Vec<ShadowCalls>, StoreError>;

    /// Sends capped messages after all: `capped` becomes `pending`. Returns how many.
    async fn release_capped(&self, ids: Vec<String>) -> Result<usize, StoreError>;

    /// Replaces a dead letter with freshly planned actions (pending). False when `id` is not
    /// in the dead-letter queue (any more).
    async fn replay(&self, id: &str, actions: Vec<NewAction>) -> Result<bool, StoreError>;

    /// The execution log, newest first.
    async fn runs(&self, query: RunQuery) -> Result<Vec<RunRecord>, StoreError>;

    /// One run with its actions in order.
    async fn run(&self, id: &str) -> Result<Option<(RunRecord, Vec<ActionRecord>)>, StoreError>;

    /// Events and timers held because their user's state could not be read, oldest first.
    async fn quarantine_list(&self, limit: usize) -> Result<Vec<QuarantineRecord>, StoreError>;

    /// Releases a user's held entries for planning; with `reset_profile`, first deletes the
    /// unreadable profile (the user starts afresh). Returns how many were released.
    async fn quarantine_release(
        &self,
        identity: &str,
        reset_profile: bool,
    ) -> Result<usize, StoreError>;
}

/// Junction's durable state: every role, plus the store's own life. Code that needs one role
/// can take just that trait (`Arc<dyn Store>` upcasts to `Arc<dyn IdentityMap>`, …).
///
/// Every implementation runs the same conformance suite (`tests/conformance.rs`).
#[async_trait]
pub trait Store:
    EventLog + EngineState + DeliveryQueue + IdentityMap + RateBudget + Coordination + Inspection
{
    /// Succeeds when the store can serve reads and writes (for `/readyz`).
    async fn check(&self) -> Result<(), StoreError>;

    /// Finishes every append already accepted, then refuses new ones.
    async fn close(&self) -> Result<(), StoreError>;
}

/// Brings the schema of the store at `url` up to this version's without starting anything else
/// (`junction migrate`). Returns the schema versions found and left.
pub async fn migrate(url: &str) -> Result<(i64, i64), StoreError> {
    match locate(url)? {
        StoreLocation::Sqlite(path) => {
            let path = path.to_owned();
            tokio::task::spawn_blocking(move || -> Result<(i64, i64), StoreError> {
                let mut conn = rusqlite::Connection::open(&path)?;
                sqlite::schema_migrate(&mut conn)
            })
            .await
            .map_err(|e| StoreError::Pool(e.to_string()))?
        }
        StoreLocation::Postgres(url) => {
            let (mut client, connection) = postgres::config(url)?
                .connect(tokio_postgres::NoTls)
                .await?;
            let connection = tokio::spawn(connection);
            let found = postgres::schema::migrate(&mut client).await?;
            drop(client);
            let _ = connection.await;
            Ok((found, postgres::schema::LATEST))
        }
    }
}

pub use clock::{Clock, ManualClock, SystemClock, TokioClock};
pub use copy::copy;

/// Where a store URL points.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreLocation<'a> {
    /// `sqlite://PATH` (or `sqlite:PATH`): one file, one node.
    Sqlite(&'a str),
    /// `postgres://…` or `postgresql://…`: shared by any number of nodes.
    Postgres(&'a str),
}

/// Opens the store a URL names (see [`StoreLocation`]).
pub async fn open(url: &str, options: StoreOptions) -> Result<Arc<dyn Store>, StoreError> {
    Ok(match locate(url)? {
        StoreLocation::Sqlite(path) => Arc::new(sqlite::SqliteStore::open(path, options).await?),
        StoreLocation::Postgres(url) => {
            Arc::new(postgres::PostgresStore::open(url, options).await?)
        }
    })
}

/// What a store URL names, or why it is not a URL this version can open (checked when the
/// configuration is read, too).
pub fn locate(url: &str) -> Result<StoreLocation<'_>, StoreError> {
    let unsupported = |reason: &str| StoreError::Unsupported {
        url: redact_url(url),
        reason: reason.into(),
    };
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        postgres::config(url)?;
        return Ok(StoreLocation::Postgres(url));
    }
    match url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
    {
        Some("") => Err(unsupported("expected sqlite://PATH with a file path")),
        Some(path) => Ok(StoreLocation::Sqlite(path)),
        None => Err(unsupported(
            "expected sqlite://PATH or postgres://USER@HOST/DATABASE",
        )),
    }
}

/// A URL with any password replaced, fit for an error message or a log line.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            let userinfo = &url[scheme_end + 3..at];
            match userinfo.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme_end + 3], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_in_errors_never_show_a_password() {
        assert_eq!(
            redact_url("postgres://app:s3cret@db:5432/j"),
            "postgres://app:***@db:5432/j"
        );
        assert_eq!(redact_url("postgres://db/j"), "postgres://db/j");
    }
}
