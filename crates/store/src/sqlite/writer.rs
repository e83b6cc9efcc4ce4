//! The single writer: one thread owns the write connection and commits whatever appends are
//! waiting in one transaction (group commit), then answers each of them.
//!
//! Why: with `synchronous=FULL` each commit costs an fsync. Committing requests one by one caps
//! ingest at the disk's fsync rate; sharing the commit among every request that arrived while
//! the previous one was on disk keeps the same durability at a fraction of the cost, with no
//! artificial delay (a lone request is committed at once).

use crate::{AppendBatch, AppendReceipt, Appended, StoreError};
use rusqlite::{Connection, TransactionBehavior, params};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};

/// Upper bound on rows in one transaction, so one commit never holds the replies of many
/// requests for long.
const MAX_ROWS_PER_COMMIT: usize = 5_000;
/// How often expired `messageId`s are forgotten.
const PRUNE_EVERY: Duration = Duration::from_secs(60);

pub(crate) enum WriteCommand {
    Append {
        batch: AppendBatch,
        reply: oneshot::Sender<Result<AppendReceipt, StoreError>>,
    },
    /// Everything queued before this is committed; then the writer stops.
    Shutdown { reply: oneshot::Sender<()> },
}

pub(crate) struct Writer {
    conn: Connection,
    dedupe_window_ms: i64,
    last_prune: Instant,
}

impl Writer {
    pub(crate) fn new(conn: Connection, dedupe_window: Duration) -> Self {
        Writer {
            conn,
            dedupe_window_ms: i64::try_from(dedupe_window.as_millis()).unwrap_or(i64::MAX),
            last_prune: Instant::now() - PRUNE_EVERY,
        }
    }

    /// Runs until a shutdown command arrives or every sender is gone.
    pub(crate) fn run(mut self, mut commands: mpsc::Receiver<WriteCommand>) {
        let mut group: Vec<(
            AppendBatch,
            oneshot::Sender<Result<AppendReceipt, StoreError>>,
        )> = Vec::new();
        let mut shutdown = None;
        while let Some(first) = commands.blocking_recv() {
            let mut rows = 0;
            let mut next = Some(first);
            while let Some(command) = next.take() {
                match command {
                    WriteCommand::Append { batch, reply } => {
                        rows += batch.rows();
                        group.push((batch, reply));
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
            }
            if let Some(reply) = shutdown.take() {
                let _ = reply.send(());
                return;
            }
            self.prune_if_due();
        }
    }

    fn commit_group(
        &mut self,
        group: &mut Vec<(
            AppendBatch,
            oneshot::Sender<Result<AppendReceipt, StoreError>>,
        )>,
    ) {
        let started = Instant::now();
        let events: usize = group.iter().map(|(batch, _)| batch.events.len()).sum();
        match self.write(group) {
            Ok(receipts) => {
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
                    let _ = reply.send(Err(StoreError::Database(clone_error(&error))));
                }
            }
        }
    }

    fn write(
        &mut self,
        group: &[(
            AppendBatch,
            oneshot::Sender<Result<AppendReceipt, StoreError>>,
        )],
    ) -> rusqlite::Result<Vec<AppendReceipt>> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let mut receipts = Vec::with_capacity(group.len());
        {
            // A messageId counts as new when unseen, or when last seen before the window.
            let mut remember = tx.prepare_cached(
                "INSERT INTO message_ids (source, message_id, received_ms) VALUES (?1, ?2, ?3)
                 ON CONFLICT (source, message_id) DO UPDATE SET received_ms = excluded.received_ms
                 WHERE message_ids.received_ms < ?4",
            )?;
            let mut insert_event = tx.prepare_cached(
                "INSERT INTO events (source, message_id, type, identity, user_id, anonymous_id,
                                     event, timestamp_ms, received_ms, body)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
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
                for message in &batch.events {
                    let fresh = remember.execute(params![
                        batch.source,
                        message.message_id,
                        received_ms,
                        cutoff
                    ])?;
                    if fresh == 0 {
                        receipt.events.push(Appended::Duplicate);
                        continue;
                    }
                    let body = serde_json::to_string(&message.body)
                        .map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))?;
                    insert_event.execute(params![
                        batch.source,
                        message.message_id,
                        message.kind.as_str(),
                        message.identity(),
                        message.user_id,
                        message.anonymous_id,
                        message.event,
                        message.timestamp.timestamp_millis(),
                        received_ms,
                        body,
                    ])?;
                    receipt
                        .events
                        .push(Appended::Stored(tx.last_insert_rowid()));
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

    /// Forgets messageIds older than the window so the table stays the window's size.
    fn prune_if_due(&mut self) {
        if self.last_prune.elapsed() < PRUNE_EVERY {
            return;
        }
        self.last_prune = Instant::now();
        let cutoff = chrono::Utc::now()
            .timestamp_millis()
            .saturating_sub(self.dedupe_window_ms);
        match self.conn.execute(
            "DELETE FROM message_ids WHERE received_ms < ?1",
            params![cutoff],
        ) {
            Ok(forgotten) if forgotten > 0 => {
                tracing::debug!(
                    forgotten,
                    "forgot messageIds past the de-duplication window"
                )
            }
            Ok(_) => {}
            Err(error) => tracing::warn!(%error, "could not prune expired messageIds"),
        }
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
