//! The single writer: one thread owns the write connection and commits whatever appends are
//! waiting in one transaction (group commit), then answers each of them.
//!
//! Why: with `synchronous=FULL` each commit costs an fsync. Committing requests one by one caps
//! ingest at the disk's fsync rate; sharing the commit among every request that arrived while
//! the previous one was on disk keeps the same durability at a fraction of the cost, with no
//! artificial delay (a lone request is committed at once).
//!
//! Appends always come first. The identity index (identity_index.rs) is extended only after
//! the writer has been idle for [`IDLE_BEFORE_INDEXING`], or, so that lookups never have to
//! scan more than a bounded tail, on every commit once it trails by [`MAX_INDEX_LAG`] events.

use super::identity_index;
use super::recent_ids::RecentIds;
use crate::{AppendBatch, AppendReceipt, Appended, StoreError};
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};

/// Upper bound on rows in one transaction, so one commit never holds the replies of many
/// requests for long.
const MAX_ROWS_PER_COMMIT: usize = 5_000;
/// Quiet time after which the writer spends itself on the identity index.
const IDLE_BEFORE_INDEXING: Duration = Duration::from_millis(5);
/// The most events the indexes (identity, messageId) may trail by; past it, each commit also
/// indexes a step. A lookup scans at most this many events (about half a second on this
/// project's test machine), and the writer keeps as many ids in memory (`RecentIds`, about
/// 30 MB).
pub(crate) const MAX_INDEX_LAG: i64 = 500_000;

pub(crate) enum WriteCommand {
    Append {
        batch: AppendBatch,
        reply: oneshot::Sender<Result<AppendReceipt, StoreError>>,
    },
    /// A small write of its own (identity map and other state), run in its own transaction
    /// after everything queued before it. Not `durable`: committed without an fsync of its own
    /// (the next durable commit carries it to disk), for coordination rows a crash may lose.
    Job {
        job: Job,
        durable: bool,
        reply: oneshot::Sender<Result<(), StoreError>>,
    },
    /// Everything queued before this is committed; then the writer stops.
    Shutdown { reply: oneshot::Sender<()> },
}

/// A write job: its error (a database error, or a refusal such as [`StoreError::Fenced`])
/// rolls its transaction back.
pub(crate) type Job = Box<dyn FnOnce(&rusqlite::Transaction<'_>) -> Result<(), StoreError> + Send>;

type Pending = (
    AppendBatch,
    oneshot::Sender<Result<AppendReceipt, StoreError>>,
);

pub(crate) struct Writer {
    conn: Connection,
    dedupe_window_ms: i64,
    /// The last seq committed, and the last seq the identity index covers.
    last_seq: i64,
    indexed_upto: i64,
    last_commit: Instant,
    /// After a failed indexing step, when to try again.
    index_retry_at: Instant,
    /// The messageIds of the events after `indexed_upto`.
    recent: RecentIds,
}

impl Writer {
    pub(crate) fn new(conn: Connection, dedupe_window: Duration) -> rusqlite::Result<Self> {
        let (last_seq, indexed_upto) = identity_index::positions(&conn)?;
        let recent = RecentIds::load(&conn, indexed_upto)?;
        Ok(Writer {
            conn,
            dedupe_window_ms: i64::try_from(dedupe_window.as_millis()).unwrap_or(i64::MAX),
            last_seq,
            indexed_upto,
            last_commit: Instant::now(),
            index_retry_at: Instant::now(),
            recent,
        })
    }

    /// Runs until a shutdown command arrives or every sender is gone.
    pub(crate) fn run(mut self, mut commands: mpsc::Receiver<WriteCommand>) {
        // Only for waiting on the queue with a timeout; all the work happens on this thread.
        let Ok(waiter) = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
        else {
            tracing::error!("the store writer cannot start its timer");
            return;
        };
        let mut group: Vec<Pending> = Vec::new();
        loop {
            let first = match commands.try_recv() {
                Ok(command) => command,
                Err(mpsc::error::TryRecvError::Disconnected) => return,
                Err(mpsc::error::TryRecvError::Empty) => {
                    let quiet = self.last_commit.elapsed();
                    let wait = if self.index_lag() == 0 {
                        None
                    } else if Instant::now() < self.index_retry_at {
                        Some(self.index_retry_at - Instant::now())
                    } else if quiet >= IDLE_BEFORE_INDEXING {
                        self.extend_index();
                        continue;
                    } else {
                        Some(IDLE_BEFORE_INDEXING - quiet)
                    };
                    let received = waiter.block_on(async {
                        match wait {
                            Some(wait) => tokio::time::timeout(wait, commands.recv()).await.ok(),
                            None => Some(commands.recv().await),
                        }
                    });
                    match received {
                        Some(Some(command)) => command,
                        Some(None) => return,
                        None => continue, // quiet long enough: index on the next turn
                    }
                }
            };
            let mut rows = 0;
            let mut shutdown = None;
            let mut job = None;
            let mut next = Some(first);
            while let Some(command) = next.take() {
                match command {
                    WriteCommand::Append { batch, reply } => {
                        rows += batch.rows();
                        group.push((batch, reply));
                    }
                    WriteCommand::Job {
                        job: work,
                        durable,
                        reply,
                    } => {
                        job = Some((work, durable, reply));
                        break;
                    }
                    WriteCommand::Shutdown { reply } => {
                        shutdown = Some(reply);
                        break;
                    }
                }
                if rows < MAX_ROWS_PER_COMMIT {
                    next = commands.try_recv().ok();
                }
            }
            if !group.is_empty() {
                self.commit_group(&mut group);
                if self.index_lag() >= MAX_INDEX_LAG {
                    self.extend_index();
                }
            }
            if let Some((work, durable, reply)) = job {
                let started = Instant::now();
                let result = self.run_job(work, durable);
                metrics::histogram!("junction_store_job_seconds", "durable" => if durable { "yes" } else { "no" })
                    .record(started.elapsed().as_secs_f64());
                let _ = reply.send(result);
            }
            if let Some(reply) = shutdown {
                let _ = reply.send(());
                return;
            }
        }
    }

    fn run_job(&mut self, job: Job, durable: bool) -> Result<(), StoreError> {
        if !durable {
            self.conn.pragma_update(None, "synchronous", "NORMAL")?;
        }
        let result = (|| {
            let tx = self
                .conn
                .transaction_with_behavior(TransactionBehavior::Immediate)?;
            job(&tx)?;
            tx.commit()?;
            Ok(())
        })();
        if !durable {
            self.conn.pragma_update(None, "synchronous", "FULL")?;
        }
        result
    }

    fn index_lag(&self) -> i64 {
        self.last_seq - self.indexed_upto
    }

    /// One indexing step.
    fn extend_index(&mut self) {
        if Instant::now() < self.index_retry_at {
            return;
        }
        // Behind by the most allowed: bigger steps, whose sorted inserts share pages.
        let step = if self.index_lag() >= MAX_INDEX_LAG {
            identity_index::CATCH_UP_STEP
        } else {
            identity_index::STEP
        };
        let started = Instant::now();
        let stepped = identity_index::index_step(&mut self.conn, self.indexed_upto, step);
        metrics::histogram!("junction_store_index_step_seconds")
            .record(started.elapsed().as_secs_f64());
        match stepped {
            // No progress means the log ends at `upto`: nothing is waiting to be indexed.
            Ok(upto) if upto == self.indexed_upto => self.last_seq = upto,
            Ok(upto) => {
                self.indexed_upto = upto;
                self.recent.forget_upto(upto);
            }
            Err(error) => {
                // Reads stay exact (they scan the unindexed tail); try again a little later.
                tracing::warn!(%error, "extending the identity index failed; retrying in 1 s");
                self.index_retry_at = Instant::now() + Duration::from_secs(1);
            }
        }
        metrics::gauge!("junction_store_index_lag_events").set(self.index_lag() as f64);
    }

    /// Commits a group and answers each request.
    fn commit_group(&mut self, group: &mut Vec<Pending>) {
        let started = Instant::now();
        let events: usize = group.iter().map(|(batch, _)| batch.events.len()).sum();
        match self.write(group) {
            Ok(receipts) => {
                self.last_commit = Instant::now();
                if let Some(Appended::Stored(seq)) = receipts
                    .iter()
                    .flat_map(|r| r.events.iter().rev())
                    .find(|a| matches!(a, Appended::Stored(_)))
                {
                    self.last_seq = self.last_seq.max(*seq);
                }
                // Committed: the new ids count for de-duplication from now on.
                for ((batch, _), receipt) in group.iter().zip(&receipts) {
                    let received = batch.received_at.timestamp_millis();
                    for (event, appended) in batch.events.iter().zip(&receipt.events) {
                        if let Appended::Stored(seq) = appended {
                            self.recent
                                .remember(&batch.source, &event.message_id, received, *seq);
                        }
                    }
                }
                metrics::gauge!("junction_store_index_lag_events").set(self.index_lag() as f64);
                metrics::histogram!("junction_store_commit_seconds")
                    .record(started.elapsed().as_secs_f64());
                metrics::histogram!("junction_store_commit_events").record(events as f64);
                for ((_, reply), receipt) in group.drain(..).zip(receipts) {
                    let _ = reply.send(Ok(receipt));
                }
            }
            Err(error) => {
                tracing::error!(%error, requests = group.len(), "store commit failed");
                metrics::counter!("junction_store_commit_failures_total").increment(1);
                for (_, reply) in group.drain(..) {
                    let _ = reply.send(Err(StoreError::from(clone_error(&error))));
                }
            }
        }
    }

    fn write(&mut self, group: &[Pending]) -> rusqlite::Result<Vec<AppendReceipt>> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let mut receipts = Vec::with_capacity(group.len());
        // Read under the write lock, so events are never numbered into a split that changed.
        let partitions: u32 =
            tx.query_row("SELECT count(*) FROM planner_partitions", [], |r| r.get(0))?;
        // Holding the write lock (BEGIN IMMEDIATE), this transaction numbers its own events.
        let mut next_seq: i64 = tx.query_row(
            "SELECT max(coalesce((SELECT max(seq) FROM events), 0),
                        coalesce((SELECT seq FROM sqlite_sequence WHERE name = 'events'), 0)) + 1",
            [],
            |row| row.get(0),
        )?;
        {
            // When each messageId was last stored: the unindexed tail (in memory) first, then
            // the index (a read: nothing is written to it here).
            let mut indexed = tx.prepare_cached(
                "SELECT received_ms FROM message_ids WHERE message_id = ?1 AND source = ?2",
            )?;
            // Ids stored by this very transaction.
            let mut this_commit: std::collections::HashMap<(&str, &str), i64> =
                std::collections::HashMap::new();
            let mut insert_event = tx.prepare_cached(
                "INSERT INTO events (seq, source, message_id, type, identity, user_id,
                                     anonymous_id, event, timestamp_ms, received_ms, body, part)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
            )?;
            let mut insert_rejected = tx.prepare_cached(
                "INSERT INTO rejected (source, received_ms, position, type, message_id, code,
                                       field, reason, body)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            )?;
            for (batch, _) in group {
                let received_ms = batch.received_at.timestamp_millis();
                let cutoff = received_ms.saturating_sub(self.dedupe_window_ms);
                let mut receipt = AppendReceipt {
                    events: Vec::with_capacity(batch.events.len()),
                };
                for event in &batch.events {
                    let id = (batch.source.as_str(), event.message_id.as_str());
                    let last = match this_commit.get(&id) {
                        Some(&received) => Some(received),
                        None => match self.recent.received(&tx, self.indexed_upto, id.0, id.1)? {
                            Some(received) => Some(received),
                            None => indexed
                                .query_row(params![id.1, id.0], |r| r.get(0))
                                .optional()?,
                        },
                    };
                    // New when unseen, or when last stored before the window.
                    if last.is_some_and(|last| last >= cutoff) {
                        receipt.events.push(Appended::Duplicate);
                        continue;
                    }
                    this_commit.insert(id, received_ms);
                    insert_event.execute(params![
                        next_seq,
                        batch.source,
                        event.message_id,
                        event.kind.as_str(),
                        event.identity,
                        event.user_id,
                        event.anonymous_id,
                        event.event,
                        event.timestamp.timestamp_millis(),
                        received_ms,
                        event.body,
                        crate::partition_of(&event.identity, partitions),
                    ])?;
                    receipt.events.push(Appended::Stored(next_seq));
                    next_seq += 1;
                }
                for rejected in &batch.rejected {
                    insert_rejected.execute(params![
                        batch.source,
                        received_ms,
                        rejected.index as i64,
                        rejected.kind,
                        rejected.message_id,
                        rejected.error.code,
                        rejected.error.field,
                        rejected.error.rule,
                        rejected.raw,
                    ])?;
                }
                receipts.push(receipt);
            }
        }
        tx.commit()?;
        Ok(receipts)
    }
}

/// rusqlite errors are not `Clone`; every request of a failed group gets an equivalent one.
fn clone_error(error: &rusqlite::Error) -> rusqlite::Error {
    match error {
        rusqlite::Error::SqliteFailure(code, message) => {
            rusqlite::Error::SqliteFailure(*code, message.clone())
        }
        other => rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_ERROR),
            Some(other.to_string()),
        ),
    }
}
