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
use std::collections::VecDeque;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};

/// Upper bound on rows in one transaction, so one commit never holds the replies of many
/// requests for long.
const MAX_ROWS_PER_COMMIT: usize = 5_000;
/// Upper bound on jobs committed together, for the same reason.
const MAX_JOBS_PER_COMMIT: usize = 64;
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

/// A job waiting for the writer.
struct QueuedJob {
    job: Job,
    durable: bool,
    reply: oneshot::Sender<Result<(), StoreError>>,
}

/// A job's reply channel and what to answer on it.
type JobAnswer = (
    oneshot::Sender<Result<(), StoreError>>,
    Result<(), StoreError>,
);

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
        // A command taken from the queue that belongs to the next turn.
        let mut held: Option<WriteCommand> = None;
        loop {
            let first = match held.take().map_or_else(|| commands.try_recv(), Ok) {
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
            let mut jobs: Vec<QueuedJob> = Vec::new();
            let mut shutdown = None;
            let mut next = Some(first);
            while let Some(command) = next.take() {
                match command {
                    WriteCommand::Append { batch, reply } if !jobs.is_empty() => {
                        // Jobs and appends keep their order: this append starts the next turn.
                        held = Some(WriteCommand::Append { batch, reply });
                        break;
                    }
                    WriteCommand::Append { batch, reply } => {
                        rows += batch.rows();
                        group.push((batch, reply));
                        if rows >= MAX_ROWS_PER_COMMIT {
                            break;
                        }
                    }
                    WriteCommand::Job {
                        job,
                        durable,
                        reply,
                    } => {
                        jobs.push(QueuedJob {
                            job,
                            durable,
                            reply,
                        });
                        if jobs.len() >= MAX_JOBS_PER_COMMIT {
                            break;
                        }
                    }
                    WriteCommand::Shutdown { reply } => {
                        shutdown = Some(reply);
                        break;
                    }
                }
                next = commands.try_recv().ok();
            }
            if !group.is_empty() {
                self.commit_group(&mut group);
                if self.index_lag() >= MAX_INDEX_LAG {
                    self.extend_index();
                }
            }
            if !jobs.is_empty() {
                self.run_jobs(jobs.into());
            }
            if let Some(reply) = shutdown {
                let _ = reply.send(());
                return;
            }
        }
    }

    /// Runs queued jobs in as few transactions as they allow (one, unless SQLite gives a
    /// transaction up), with a durable commit when any of them asked for one, and answers each.
    fn run_jobs(&mut self, mut jobs: VecDeque<QueuedJob>) {
        while !jobs.is_empty() {
            let durable = jobs.iter().any(|j| j.durable);
            let started = Instant::now();
            let answers = match self.set_synchronous(durable) {
                Ok(()) => self.commit_jobs(&mut jobs),
                Err(error) => jobs
                    .drain(..)
                    .map(|j| (j.reply, Err(StoreError::from(clone_error(&error)))))
                    .collect(),
            };
            if !durable && let Err(error) = self.set_synchronous(true) {
                tracing::error!(%error, "the store writer cannot make its commits durable again");
            }
            metrics::histogram!("junction_store_jobs_commit_seconds")
                .record(started.elapsed().as_secs_f64());
            metrics::histogram!("junction_store_jobs_commit_size").record(answers.len() as f64);
            for (reply, result) in answers {
                let _ = reply.send(result);
            }
        }
    }

    fn set_synchronous(&self, durable: bool) -> rusqlite::Result<()> {
        let mode = if durable { "FULL" } else { "NORMAL" };
        self.conn.pragma_update(None, "synchronous", mode)
    }

    /// Runs jobs from the front of the queue in one transaction, each inside a savepoint of
    /// its own so that a job's error undoes only that job, and commits them together: one
    /// fsync for all instead of one each. Returns the jobs run with their results. Should
    /// SQLite roll the whole transaction back (an I/O error, a full disk), the jobs run so far
    /// are answered with that error and the rest stay queued for a fresh transaction.
    fn commit_jobs(&mut self, jobs: &mut VecDeque<QueuedJob>) -> Vec<JobAnswer> {
        let tx = match self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
        {
            Ok(tx) => tx,
            Err(error) => {
                return jobs
                    .drain(..)
                    .map(|j| (j.reply, Err(StoreError::from(clone_error(&error)))))
                    .collect();
            }
        };
        let mut answers: Vec<JobAnswer> = Vec::with_capacity(jobs.len());
        while let Some(QueuedJob { job, reply, .. }) = jobs.pop_front() {
            let result = tx
                .execute_batch("SAVEPOINT job")
                .map_err(StoreError::from)
                .and_then(|()| job(&tx))
                .and_then(|()| tx.execute_batch("RELEASE job").map_err(StoreError::from));
            if tx.is_autocommit() {
                // The transaction is gone, and with it what the earlier jobs wrote.
                let reason = match &result {
                    Err(error) => error.to_string(),
                    Ok(()) => "the transaction ended early".to_owned(),
                };
                for (_, answer) in answers.iter_mut() {
                    *answer = Err(lost_with(&reason));
                }
                answers.push((reply, result.and(Err(lost_with(&reason)))));
                return answers;
            }
            if result.is_err() {
                // Undo this job alone. Should even that fail, the transaction is over: the next
                // job or the commit sees it.
                let _ = tx.execute_batch("ROLLBACK TO job; RELEASE job");
            }
            answers.push((reply, result));
        }
        if let Err(error) = tx.commit() {
            for (_, answer) in answers.iter_mut() {
                if answer.is_ok() {
                    *answer = Err(StoreError::from(clone_error(&error)));
                }
            }
        }
        answers
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
/// The error for a job whose writes were undone with a later job's failed transaction.
fn lost_with(reason: &str) -> StoreError {
    StoreError::from(rusqlite::Error::SqliteFailure(
        rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_ABORT),
        Some(format!("rolled back with the rest of its commit: {reason}")),
    ))
}

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
