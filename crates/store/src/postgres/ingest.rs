//! Ingest on PostgreSQL: one task per node commits every append waiting for it in one
//! transaction (group commit, as the SQLite writer does), with multi-row inserts.
//!
//! Numbering. Events are numbered by the store, and a reader following the log by number
//! (`events_after(cursor)`) must never see event N+1 before event N has committed, or it would
//! move its cursor past N for good. Sequences give no such promise under concurrent
//! transactions. So each ingest transaction first locks the single row of `event_log_head`,
//! numbers its events from it, and holds the lock until it commits: every ingest commit, on
//! every node, happens in number order. The lock is held for one group's inserts and its
//! commit, which is why each node groups as much as it can into one transaction.
//!
//! De-duplication happens under the same lock, so a `messageId` sent to two nodes at once is
//! stored once: the second transaction to take the lock sees the first one's record.

use crate::{AppendBatch, AppendReceipt, Appended, StoreError};
use deadpool_postgres::Pool;
use std::collections::HashMap;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};
use tokio_postgres::types::ToSql;

/// Upper bound on rows in one transaction, so one commit never holds the replies of many
/// requests for long.
const MAX_ROWS_PER_COMMIT: usize = 5_000;

pub(crate) enum IngestCommand {
    Append {
        batch: AppendBatch,
        reply: oneshot::Sender<Result<AppendReceipt, StoreError>>,
    },
    /// Everything queued before this is committed; then the task stops.
    Shutdown { reply: oneshot::Sender<()> },
}

type Pending = (
    AppendBatch,
    oneshot::Sender<Result<AppendReceipt, StoreError>>,
);

/// Runs until a shutdown command arrives or every sender is gone.
pub(crate) async fn run(
    pool: Pool,
    dedupe_window: Duration,
    mut commands: mpsc::Receiver<IngestCommand>,
) {
    let window_ms = i64::try_from(dedupe_window.as_millis()).unwrap_or(i64::MAX);
    let mut group: Vec<Pending> = Vec::new();
    while let Some(first) = commands.recv().await {
        let mut rows = 0;
        let mut shutdown = None;
        let mut next = Some(first);
        while let Some(command) = next.take() {
            match command {
                IngestCommand::Append { batch, reply } => {
                    rows += batch.rows();
                    group.push((batch, reply));
                }
                IngestCommand::Shutdown { reply } => {
                    shutdown = Some(reply);
                    break;
                }
            }
            if rows < MAX_ROWS_PER_COMMIT {
                next = commands.try_recv().ok();
            }
        }
        if !group.is_empty() {
            commit_group(&pool, window_ms, &mut group).await;
        }
        if let Some(reply) = shutdown {
            let _ = reply.send(());
            return;
        }
    }
}

async fn commit_group(pool: &Pool, window_ms: i64, group: &mut Vec<Pending>) {
    let started = Instant::now();
    let events: usize = group.iter().map(|(batch, _)| batch.events.len()).sum();
    match write(pool, window_ms, group).await {
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
            let text = error.to_string();
            for (_, reply) in group.drain(..) {
                let _ = reply.send(Err(StoreError::Database(text.clone().into())));
            }
        }
    }
}

/// The columns of one group's fresh events, as arrays for `unnest`.
#[derive(Default)]
struct EventColumns {
    seq: Vec<i64>,
    source: Vec<String>,
    message_id: Vec<String>,
    kind: Vec<&'static str>,
    identity: Vec<String>,
    user_id: Vec<Option<String>>,
    anonymous_id: Vec<Option<String>>,
    event: Vec<Option<String>>,
    timestamp_ms: Vec<i64>,
    received_ms: Vec<i64>,
    body: Vec<String>,
    part: Vec<i32>,
}

#[derive(Default)]
struct RejectedColumns {
    source: Vec<String>,
    received_ms: Vec<i64>,
    position: Vec<i64>,
    kind: Vec<Option<String>>,
    message_id: Vec<Option<String>>,
    code: Vec<String>,
    field: Vec<String>,
    reason: Vec<String>,
    body: Vec<String>,
}

async fn write(
    pool: &Pool,
    window_ms: i64,
    group: &[Pending],
) -> Result<Vec<AppendReceipt>, StoreError> {
    let mut client = pool
        .get()
        .await
        .map_err(|e| StoreError::Pool(e.to_string()))?;
    let tx = client.transaction().await?;
    // Statements are prepared once per connection, and the ones that do not depend on each
    // other's answers are sent together (tokio-postgres pipelines concurrent queries on one
    // connection): a commit costs four round trips, not twelve. On this 2-core machine each
    // round trip is a scheduling delay for PostgreSQL and for Junction, and one node's commits
    // are sequential, so round trips, not rows, bounded ingest.
    let (lock, lookup) = futures_util::try_join!(
        tx.prepare_cached("SELECT next_seq, partitions FROM event_log_head FOR UPDATE"),
        tx.prepare_cached(
            "SELECT m.message_id, m.source, m.received_ms
             FROM message_ids m
             JOIN unnest($1::text[], $2::text[]) AS t(message_id, source)
               ON m.message_id = t.message_id AND m.source = t.source",
        ),
    )?;

    // What the log already knows of these messageIds, read under the lock that orders every
    // ingest commit (see the module doc); the lookup is sent right behind the lock, so it
    // runs once the lock is held. The number of planning partitions is read under the lock
    // too: a repartition takes the same lock.
    let (mut ids, mut sources) = (Vec::new(), Vec::new());
    for (batch, _) in group {
        for event in &batch.events {
            ids.push(event.message_id.as_str());
            sources.push(batch.source.as_str());
        }
    }
    let lookup_params: [&(dyn ToSql + Sync); 2] = [&ids, &sources];
    let (head, known) =
        futures_util::try_join!(tx.query_one(&lock, &[]), tx.query(&lookup, &lookup_params),)?;
    let (first_seq, partitions): (i64, i32) = (head.get(0), head.get(1));
    let partitions = partitions as u32;
    let mut last_seen: HashMap<(String, String), i64> = HashMap::new();
    for row in known {
        last_seen.insert((row.get(0), row.get(1)), row.get(2));
    }

    let mut next_seq = first_seq;
    let mut events = EventColumns::default();
    let mut rejected = RejectedColumns::default();
    let mut receipts = Vec::with_capacity(group.len());
    for (batch, _) in group {
        let received_ms = batch.received_at.timestamp_millis();
        let cutoff = received_ms.saturating_sub(window_ms);
        let mut receipt = AppendReceipt {
            events: Vec::with_capacity(batch.events.len()),
        };
        for event in &batch.events {
            let key = (event.message_id.clone(), batch.source.clone());
            // New when unseen, or when last stored before the window (same rule as SQLite).
            if last_seen.get(&key).is_some_and(|seen| *seen >= cutoff) {
                receipt.events.push(Appended::Duplicate);
                continue;
            }
            last_seen.insert(key, received_ms);
            events.seq.push(next_seq);
            events.source.push(batch.source.clone());
            events.message_id.push(event.message_id.clone());
            events.kind.push(event.kind.as_str());
            events.identity.push(event.identity.clone());
            events.user_id.push(event.user_id.clone());
            events.anonymous_id.push(event.anonymous_id.clone());
            events.event.push(event.event.clone());
            events.timestamp_ms.push(event.timestamp.timestamp_millis());
            events.received_ms.push(received_ms);
            events.body.push(event.body.clone());
            events
                .part
                .push(crate::partition_of(&event.identity, partitions) as i32);
            receipt.events.push(Appended::Stored(next_seq));
            next_seq += 1;
        }
        for refused in &batch.rejected {
            rejected.source.push(batch.source.clone());
            rejected.received_ms.push(received_ms);
            rejected.position.push(refused.index as i64);
            rejected.kind.push(refused.kind.clone());
            rejected.message_id.push(refused.message_id.clone());
            rejected.code.push(refused.error.code.to_string());
            rejected.field.push(refused.error.field.clone());
            rejected.reason.push(refused.error.rule.clone());
            rejected.body.push(refused.raw.clone());
        }
        receipts.push(receipt);
    }

    let (insert_events, insert_ids, advance_head, insert_rejected) = futures_util::try_join!(
        tx.prepare_cached(
            "INSERT INTO events (seq, source, message_id, type, identity, user_id, anonymous_id,
                                 event, timestamp_ms, received_ms, body, part)
             SELECT * FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[], $5::text[],
                                  $6::text[], $7::text[], $8::text[], $9::bigint[],
                                  $10::bigint[], $11::text[], $12::int[])",
        ),
        tx.prepare_cached(
            "INSERT INTO message_ids (message_id, source, received_ms, seq)
             SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[], $4::bigint[])
             ON CONFLICT (message_id, source)
             DO UPDATE SET received_ms = excluded.received_ms, seq = excluded.seq",
        ),
        tx.prepare_cached("UPDATE event_log_head SET next_seq = $1"),
        tx.prepare_cached(
            "INSERT INTO rejected (source, received_ms, position, type, message_id, code, field,
                                   reason, body)
             SELECT * FROM unnest($1::text[], $2::bigint[], $3::bigint[], $4::text[], $5::text[],
                                  $6::text[], $7::text[], $8::text[], $9::text[])",
        ),
    )?;
    // The writes, sent together; PostgreSQL runs them in order.
    let write_events = async {
        if events.seq.is_empty() {
            return Ok(());
        }
        let event_params: [&(dyn ToSql + Sync); 12] = [
            &events.seq,
            &events.source,
            &events.message_id,
            &events.kind,
            &events.identity,
            &events.user_id,
            &events.anonymous_id,
            &events.event,
            &events.timestamp_ms,
            &events.received_ms,
            &events.body,
            &events.part,
        ];
        let id_params: [&(dyn ToSql + Sync); 4] = [
            &events.message_id,
            &events.source,
            &events.received_ms,
            &events.seq,
        ];
        let head_params: [&(dyn ToSql + Sync); 1] = [&next_seq];
        futures_util::try_join!(
            tx.execute(&insert_events, &event_params),
            tx.execute(&insert_ids, &id_params),
            tx.execute(&advance_head, &head_params),
        )
        .map(|_| ())
    };
    let write_rejected = async {
        if rejected.source.is_empty() {
            return Ok(());
        }
        tx.execute(
            &insert_rejected,
            &[
                &rejected.source,
                &rejected.received_ms,
                &rejected.position,
                &rejected.kind,
                &rejected.message_id,
                &rejected.code,
                &rejected.field,
                &rejected.reason,
                &rejected.body,
            ],
        )
        .await
        .map(|_| ())
    };
    futures_util::try_join!(write_events, write_rejected)?;
    tx.commit().await?;
    Ok(receipts)
}
