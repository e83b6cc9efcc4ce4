//! PostgreSQL side of the engine's and delivery's records (see `crate::outbox`; the SQL
//! follows `sqlite/outbox.rs`, which explains each rule).
//!
//! Several transactions run at once here, on one node and across nodes, where SQLite has one
//! writer. Every transaction that changes a user's pending actions therefore first takes that
//! user's lock ([`lock_users`]): without it two commits could each recompute the user's
//! `user_heads` row from a snapshot missing the other's change.

use crate::StoreError;
use crate::outbox::{
    ActionOutcome, ActionRecord, ActionStatus, Attempt, Claim, DeadLetterQuery, EngineCommit,
    Lease, NewAction, OutboxCounts, RUN_STATUS, RunQuery, RunRecord, SharedWrite,
};
use deadpool_postgres::{Client, GenericClient, Transaction};
use tokio_postgres::Row;

pub(super) use crate::outbox::ACTION_COLUMNS;

/// The advisory-lock class of per-user locks (the other key is a hash of the identity).
const USER_LOCK_CLASS: i32 = 0x4a55_4e01;

pub(super) fn action_from_row(row: &Row) -> ActionRecord {
    let status: String = row.get(6);
    let body: String = row.get(9);
    ActionRecord {
        position: row.get(0),
        id: row.get(1),
        identity: row.get(2),
        run: row.get(3),
        seq: row.get(4),
        lane: row.get(5),
        status: ActionStatus::parse(&status).unwrap_or(ActionStatus::Unreadable),
        attempts: row.get(7),
        next_at_ms: row.get(8),
        body: serde_json::from_str(&body).unwrap_or(serde_json::Value::String(body)),
        result: row.get(10),
        error_code: row.get(11),
        created_ms: row.get(12),
        first_attempt_ms: row.get(13),
        started_ms: row.get(14),
        updated_ms: row.get(15),
    }
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// Takes the transaction-scoped locks of these users, in one order everywhere (so that two
/// transactions locking overlapping sets cannot deadlock).
pub(super) async fn lock_users(
    tx: &Transaction<'_>,
    identities: &[String],
) -> Result<(), tokio_postgres::Error> {
    if identities.is_empty() {
        return Ok(());
    }
    tx.execute(
        "SELECT pg_advisory_xact_lock($1, k)
         FROM (SELECT DISTINCT hashtext(i) AS k FROM unnest($2::text[]) AS i ORDER BY 1) AS keys",
        &[&USER_LOCK_CLASS, &identities],
    )
    .await?;
    Ok(())
}

/// Refuses a write under a claim that is no longer the user's current one, or (with `live_at`)
/// that has expired by then. The claim row stays locked until the transaction ends, so it
/// cannot be taken over between this check and the commit.
pub(super) async fn check_claim(
    tx: &Transaction<'_>,
    claim: &Claim,
    live_at: Option<i64>,
) -> Result<(), StoreError> {
    let current = tx
        .query_opt(
            "SELECT token, expires_ms FROM delivery_claims WHERE identity = $1 FOR SHARE",
            &[&claim.identity],
        )
        .await?;
    claim.verify(current.map(|r| (r.get(0), r.get(1))), live_at)
}

pub(super) async fn insert_actions(
    tx: &Transaction<'_>,
    actions: &[NewAction],
    now: i64,
) -> Result<(), tokio_postgres::Error> {
    if actions.is_empty() {
        return Ok(());
    }
    let mut ids = Vec::with_capacity(actions.len());
    let mut identities = Vec::with_capacity(actions.len());
    let mut runs = Vec::with_capacity(actions.len());
    let mut seqs = Vec::with_capacity(actions.len());
    let mut lanes = Vec::with_capacity(actions.len());
    let mut standby_for = Vec::with_capacity(actions.len());
    let mut statuses = Vec::with_capacity(actions.len());
    let mut bodies = Vec::with_capacity(actions.len());
    let mut capped = Vec::with_capacity(actions.len());
    for a in actions {
        ids.push(a.id.as_str());
        identities.push(a.identity.clone());
        runs.push(a.run.as_str());
        seqs.push(a.seq);
        lanes.push(a.lane);
        standby_for.push(a.standby_for.as_deref());
        statuses.push(a.initial_status().as_str());
        bodies.push(a.body.as_str());
        capped.push(a.capped.as_deref());
    }
    // Wakes every node's delivery once this commits.
    tx.batch_execute(&format!("NOTIFY {}", super::notify::ACTIONS))
        .await?;
    // Positions are handed out in the order rows reach the insert, which ORDER BY fixes to
    // the plan's order. A re-planned event makes the same ids: those already there are kept.
    tx.execute(
        "INSERT INTO actions (id, identity, run, seq, lane, standby_for, status, body,
                              created_ms, updated_ms, result, error_code)
         SELECT id, identity, run, seq, lane, standby_for, status, body, $9, $9,
                capped, CASE WHEN capped IS NOT NULL THEN 'capped' END
         FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[], $5::bigint[],
                     $6::text[], $7::text[], $8::text[], $10::text[])
              WITH ORDINALITY
              AS t(id, identity, run, seq, lane, standby_for, status, body, capped, ord)
         ORDER BY ord
         ON CONFLICT (id) DO NOTHING",
        &[
            &ids,
            &identities,
            &runs,
            &seqs,
            &lanes,
            &standby_for,
            &statuses,
            &bodies,
            &now,
            &capped,
        ],
    )
    .await?;
    refresh_heads(tx, &identities).await
}

/// Recomputes the `user_heads` rows of these users from their pending actions (the callers
/// hold their locks). Rows are changed in place, and only when the head moved: a new row
/// version per user per commit would leave the table (and the index delivery reads it by)
/// full of dead versions between vacuums, and every wake-up would step over them.
pub(super) async fn refresh_heads(
    tx: &Transaction<'_>,
    identities: &[String],
) -> Result<(), tokio_postgres::Error> {
    if identities.is_empty() {
        return Ok(());
    }
    tx.execute(
        "INSERT INTO user_heads (identity, position, next_at_ms, lane)
         SELECT DISTINCT ON (a.identity) a.identity, a.position, a.next_at_ms,
                CASE WHEN EXISTS (SELECT 1 FROM actions u WHERE u.identity = a.identity
                                    AND u.status = 'pending' AND u.lane = 0) THEN 0
                     WHEN EXISTS (SELECT 1 FROM actions u WHERE u.identity = a.identity
                                    AND u.status = 'pending' AND u.lane = 1) THEN 1
                     ELSE 2 END
         FROM actions a
         WHERE a.identity = ANY($1) AND a.status = 'pending'
         ORDER BY a.identity, a.position
         ON CONFLICT (identity) DO UPDATE
             SET position = excluded.position, next_at_ms = excluded.next_at_ms,
                 lane = excluded.lane
             WHERE (user_heads.position, user_heads.next_at_ms, user_heads.lane)
                   IS DISTINCT FROM (excluded.position, excluded.next_at_ms, excluded.lane)",
        &[&identities],
    )
    .await?;
    tx.execute(
        "DELETE FROM user_heads AS h WHERE h.identity = ANY($1)
           AND NOT EXISTS (SELECT 1 FROM actions a
                           WHERE a.identity = h.identity AND a.status = 'pending')",
        &[&identities],
    )
    .await?;
    Ok(())
}

/// Refuses a commit under a lease whose token is no longer current (the row stays locked until
/// the commit, so it cannot change hands in between).
async fn check_lease(tx: &Transaction<'_>, lease: &Lease) -> Result<(), StoreError> {
    let token: Option<i64> = tx
        .query_opt(
            "SELECT token FROM leases WHERE name = $1 FOR SHARE",
            &[&lease.name],
        )
        .await?
        .map(|r| r.get(0));
    lease.verify(token)
}

/// Writes shared planner state, each entry only if it is still at the version the planner
/// read; otherwise refuses the whole commit as a conflict.
async fn write_shared(tx: &Transaction<'_>, writes: &[SharedWrite]) -> Result<(), StoreError> {
    for write in writes {
        let written = if write.expected == 0 {
            tx.execute(
                "INSERT INTO shared_state (key, value, version) VALUES ($1, $2, 1)
                 ON CONFLICT (key) DO NOTHING",
                &[&write.key, &write.value],
            )
            .await?
        } else {
            tx.execute(
                "UPDATE shared_state SET value = $2, version = version + 1
                 WHERE key = $1 AND version = $3",
                &[&write.key, &write.value, &write.expected],
            )
            .await?
        };
        if written == 0 {
            return Err(StoreError::Conflict(write.key.clone()));
        }
    }
    Ok(())
}

/// See [`crate::EngineState::repartition`]. Locks every partition row first, so two nodes
/// starting together on a fresh store repartition one after the other.
pub(super) async fn repartition(
    tx: &Transaction<'_>,
    partitions: u32,
    node: &str,
    now_ms: i64,
) -> Result<(), StoreError> {
    tx.execute("LOCK TABLE planner_partitions IN EXCLUSIVE MODE", &[])
        .await?;
    // Under the ingest lock from here: no event is numbered meanwhile, so
    // what is found behind below stays true until the commit.
    let have: i32 = tx
        .query_one("SELECT partitions FROM event_log_head FOR UPDATE", &[])
        .await?
        .get(0);
    if have as u32 == partitions {
        return Ok(());
    }
    let others: Vec<String> = tx
        .query(
            "SELECT name FROM nodes WHERE expires_ms > $1 AND name <> $2",
            &[&now_ms, &node],
        )
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let behind: Option<u32> = tx
        .query_opt(
            "SELECT p.part FROM planner_partitions p
             WHERE EXISTS (SELECT 1 FROM events e WHERE e.part = p.part AND e.seq > p.cursor)
             UNION ALL (SELECT part FROM quarantine WHERE released)
             LIMIT 1",
            &[],
        )
        .await?
        .map(|r| r.get::<_, i32>(0) as u32);
    crate::outbox::may_repartition(partitions, &others, behind)?;
    let cursor: i64 = tx
        .query_one(
            "SELECT greatest(coalesce((SELECT max(cursor) FROM planner_partitions), 0),
                             coalesce((SELECT max(seq) FROM events), 0))",
            &[],
        )
        .await?
        .get(0);
    tx.execute(
        "UPDATE event_log_head SET partitions = $1",
        &[&(partitions as i32)],
    )
    .await?;
    tx.execute("DELETE FROM planner_partitions", &[]).await?;
    tx.execute(
        "INSERT INTO planner_partitions (part, cursor)
         SELECT part, $2 FROM generate_series(0, $1 - 1) AS part",
        &[&(partitions as i32), &cursor],
    )
    .await?;
    for (table, key, condition) in [
        ("timers", "id", "status = 'pending'"),
        ("quarantine", "id::text", "TRUE"),
    ] {
        let rows = tx
            .query(
                &format!("SELECT {key}, identity FROM {table} WHERE {condition}"),
                &[],
            )
            .await?;
        let (keys, parts): (Vec<String>, Vec<i32>) = rows
            .iter()
            .map(|r| {
                let identity: String = r.get(1);
                (
                    r.get::<_, String>(0),
                    crate::partition_of(&identity, partitions) as i32,
                )
            })
            .unzip();
        tx.execute(
            &format!(
                "UPDATE {table} SET part = t.part
                 FROM unnest($1::text[], $2::int[]) AS t(key, part) WHERE {key} = t.key"
            ),
            &[&keys, &parts],
        )
        .await?;
    }
    Ok(())
}

pub(super) async fn engine_commit(
    tx: &Transaction<'_>,
    commit: &EngineCommit,
) -> Result<(), StoreError> {
    let now = now_ms();
    if let Some(lease) = &commit.lease {
        check_lease(tx, lease).await?;
    }
    let mut users: Vec<String> = commit.actions.iter().map(|a| a.identity.clone()).collect();
    users.extend(commit.profiles.iter().map(|(identity, _)| identity.clone()));
    lock_users(tx, &users).await?;
    write_shared(tx, &commit.shared).await?;
    let partition = commit.partition as i32;
    if let Some(cursor) = commit.cursor {
        tx.execute(
            "UPDATE planner_partitions SET cursor = $2 WHERE part = $1",
            &[&partition, &cursor],
        )
        .await?;
    }
    if !commit.profiles.is_empty() {
        let (identities, bodies): (Vec<&str>, Vec<&str>) = commit
            .profiles
            .iter()
            .map(|(i, b)| (i.as_str(), b.as_str()))
            .unzip();
        tx.execute(
            "INSERT INTO profiles (identity, body)
             SELECT DISTINCT ON (identity) identity, body
             FROM unnest($1::text[], $2::text[]) WITH ORDINALITY AS t(identity, body, ord)
             ORDER BY identity, ord DESC
             ON CONFLICT (identity) DO UPDATE SET body = excluded.body",
            &[&identities, &bodies],
        )
        .await?;
    }
    insert_actions(tx, &commit.actions, now).await?;
    if !commit.timers.is_empty() {
        let ids: Vec<&str> = commit.timers.iter().map(|t| t.id.as_str()).collect();
        let identities: Vec<&str> = commit.timers.iter().map(|t| t.identity.as_str()).collect();
        let fire_at: Vec<i64> = commit.timers.iter().map(|t| t.fire_at_ms).collect();
        let bodies: Vec<&str> = commit.timers.iter().map(|t| t.body.as_str()).collect();
        tx.execute(
            "INSERT INTO timers (id, identity, fire_at_ms, status, body, part)
             SELECT id, identity, fire_at_ms, 'pending', body, $5
             FROM unnest($1::text[], $2::text[], $3::bigint[], $4::text[])
                  AS t(id, identity, fire_at_ms, body)
             ON CONFLICT (id) DO NOTHING",
            &[&ids, &identities, &fire_at, &bodies, &partition],
        )
        .await?;
    }
    if !commit.timers_done.is_empty() {
        tx.execute(
            "UPDATE timers SET status = 'done' WHERE id = ANY($1)",
            &[&commit.timers_done],
        )
        .await?;
    }
    if !commit.timers_rescheduled.is_empty() {
        let (ids, at): (Vec<&str>, Vec<i64>) = commit
            .timers_rescheduled
            .iter()
            .map(|(id, at)| (id.as_str(), *at))
            .unzip();
        tx.execute(
            "UPDATE timers SET fire_at_ms = t.at
             FROM unnest($1::text[], $2::bigint[]) AS t(id, at)
             WHERE timers.id = t.id AND timers.status = 'pending'",
            &[&ids, &at],
        )
        .await?;
    }
    insert_runs(tx, &commit.runs, now).await?;
    for q in &commit.quarantine {
        tx.execute(
            "INSERT INTO quarantine (identity, seq, timer, reason, at_ms, part)
             VALUES ($1, $2, $3, $4, $5, $6)",
            &[&q.identity, &q.seq, &q.timer, &q.reason, &now, &partition],
        )
        .await?;
    }
    if !commit.released_done.is_empty() {
        tx.execute(
            "DELETE FROM quarantine WHERE id = ANY($1)",
            &[&commit.released_done],
        )
        .await?;
    }
    for erasure in &commit.erasures {
        erase(tx, erasure).await?;
    }
    Ok(())
}

/// Redacts what is stored of a user deleted at their request (see [`crate::Erasure`]).
async fn erase(tx: &Transaction<'_>, erasure: &crate::Erasure) -> Result<(), StoreError> {
    let ids = &erasure.ids;
    tx.execute(
        "UPDATE events
         SET body = json_build_object('type', type, 'messageId', message_id, 'redacted', $3::text)::text
         WHERE seq < $2 AND (identity = ANY($1) OR anonymous_id = ANY($1))",
        &[ids, &erasure.before_seq, &crate::REDACTED],
    )
    .await?;
    tx.execute(
        "UPDATE attempts SET calls = '[]'
         WHERE action_id IN (SELECT id FROM actions
                             WHERE identity = ANY($1) AND status NOT IN ('pending', 'standby'))",
        &[ids],
    )
    .await?;
    tx.execute(
        "UPDATE actions
         SET body = (body::jsonb
                     || jsonb_build_object(
                          'action', jsonb_build_object('kind', body::jsonb -> 'action' ->> 'kind',
                                                       'redacted', $2::text),
                          'who', '{}'::jsonb))::text
         WHERE identity = ANY($1) AND status NOT IN ('pending', 'standby')",
        &[ids, &crate::REDACTED],
    )
    .await?;
    // Timers carry the event that started their run (and a held message): gone, pending or not.
    tx.execute("DELETE FROM timers WHERE identity = ANY($1)", &[ids])
        .await?;
    Ok(())
}

/// Records a step's runs in one statement. A run named twice in one step (a run continued by
/// a timer, say) is merged first, as the upsert would merge it: PostgreSQL refuses to update a
/// row twice in one statement.
async fn insert_runs(
    tx: &Transaction<'_>,
    runs: &[crate::outbox::NewRun],
    now: i64,
) -> Result<(), tokio_postgres::Error> {
    if runs.is_empty() {
        return Ok(());
    }
    let mut merged: Vec<crate::outbox::NewRun> = Vec::with_capacity(runs.len());
    let mut index: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
    for run in runs {
        match index.get(run.run.as_str()) {
            Some(&at) => {
                let earlier = &mut merged[at];
                earlier.actions += run.actions;
                earlier.paused = run.paused;
                if run.error.is_some() {
                    earlier.error = run.error.clone();
                }
            }
            None => {
                index.insert(&run.run, merged.len());
                merged.push(run.clone());
            }
        }
    }
    let names: Vec<&str> = merged.iter().map(|r| r.run.as_str()).collect();
    let seqs: Vec<i64> = merged.iter().map(|r| r.seq).collect();
    let workflows: Vec<&str> = merged.iter().map(|r| r.workflow.as_str()).collect();
    let identities: Vec<&str> = merged.iter().map(|r| r.identity.as_str()).collect();
    let actions: Vec<i64> = merged.iter().map(|r| r.actions).collect();
    let paused: Vec<bool> = merged.iter().map(|r| r.paused).collect();
    let errors: Vec<Option<&str>> = merged.iter().map(|r| r.error.as_deref()).collect();
    tx.execute(
        "INSERT INTO runs (run, seq, workflow, identity, planned_ms, actions, paused, error)
         SELECT run, seq, workflow, identity, $8, actions, paused, error
         FROM unnest($1::text[], $2::bigint[], $3::text[], $4::text[], $5::bigint[],
                     $6::boolean[], $7::text[])
              AS t(run, seq, workflow, identity, actions, paused, error)
         ON CONFLICT (run) DO UPDATE SET actions = runs.actions + excluded.actions,
                                         paused = excluded.paused,
                                         error = coalesce(excluded.error, runs.error)",
        &[
            &names,
            &seqs,
            &workflows,
            &identities,
            &actions,
            &paused,
            &errors,
            &now,
        ],
    )
    .await?;
    Ok(())
}

async fn record_attempt(
    tx: &Transaction<'_>,
    id: &str,
    attempt: &Attempt,
) -> Result<(), tokio_postgres::Error> {
    tx.execute(
        "INSERT INTO attempts (action_id, number, at_ms, duration_ms, outcome, error, calls)
         VALUES ($1, $2, $3, $4, $5, $6, $7)
         ON CONFLICT (action_id, number) DO UPDATE SET
             at_ms = excluded.at_ms, duration_ms = excluded.duration_ms,
             outcome = excluded.outcome, error = excluded.error, calls = excluded.calls",
        &[
            &id,
            &attempt.number,
            &attempt.at_ms,
            &attempt.duration_ms,
            &attempt.outcome,
            &attempt.error,
            &attempt.calls.to_string(),
        ],
    )
    .await?;
    Ok(())
}

pub(super) async fn action_outcomes(
    tx: &Transaction<'_>,
    outcomes: &[ActionOutcome],
) -> Result<(), tokio_postgres::Error> {
    let now = now_ms();
    let ids: Vec<&str> = outcomes
        .iter()
        .map(|outcome| match outcome {
            ActionOutcome::Done { id, .. }
            | ActionOutcome::Retry { id, .. }
            | ActionOutcome::Failed { id, .. } => id.as_str(),
        })
        .collect();
    let touched: Vec<String> = tx
        .query(
            "SELECT DISTINCT identity FROM actions WHERE id = ANY($1)",
            &[&ids],
        )
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    lock_users(tx, &touched).await?;
    for outcome in outcomes {
        match outcome {
            ActionOutcome::Done {
                id,
                result,
                attempt,
                merged,
            } => {
                record_attempt(tx, id, attempt).await?;
                tx.execute(
                    "UPDATE actions SET status = 'done', attempts = attempts + 1, result = $2,
                            error_code = NULL, started_ms = NULL,
                            first_attempt_ms = coalesce(first_attempt_ms, $4), updated_ms = $3
                     WHERE id = $1",
                    &[id, result, &now, &attempt.at_ms],
                )
                .await?;
                for other in merged {
                    tx.execute(
                        "UPDATE actions SET status = 'done', result = $2, updated_ms = $3
                         WHERE id = $1 AND status = 'pending'",
                        &[other, &format!("coalesced into {id}"), &now],
                    )
                    .await?;
                }
                let finished: Vec<&str> = std::iter::once(id.as_str())
                    .chain(merged.iter().map(String::as_str))
                    .collect();
                tx.execute(
                    "UPDATE actions SET status = 'skipped', updated_ms = $2
                     WHERE standby_for = ANY($1) AND status = 'standby'",
                    &[&finished, &now],
                )
                .await?;
            }
            ActionOutcome::Retry {
                id,
                next_at_ms,
                error,
                code,
                attempt,
                counts,
            } => {
                record_attempt(tx, id, attempt).await?;
                tx.execute(
                    "UPDATE actions SET attempts = attempts + $5, next_at_ms = $2, result = $3,
                            error_code = $6, started_ms = NULL,
                            first_attempt_ms = coalesce(first_attempt_ms, $7), updated_ms = $4
                     WHERE id = $1",
                    &[
                        id,
                        next_at_ms,
                        error,
                        &now,
                        &i64::from(*counts),
                        code,
                        &attempt.at_ms,
                    ],
                )
                .await?;
            }
            ActionOutcome::Failed {
                id,
                error,
                code,
                attempt,
                skip_rest_of_run,
            } => {
                record_attempt(tx, id, attempt).await?;
                tx.execute(
                    "UPDATE actions SET status = 'failed', attempts = attempts + 1, result = $2,
                            error_code = $4, started_ms = NULL,
                            first_attempt_ms = coalesce(first_attempt_ms, $5), updated_ms = $3
                     WHERE id = $1",
                    &[id, error, &now, code, &attempt.at_ms],
                )
                .await?;
                let activated = tx
                    .execute(
                        "UPDATE actions SET status = 'pending', updated_ms = $2
                         WHERE standby_for = $1 AND status = 'standby'",
                        &[id, &now],
                    )
                    .await?;
                if *skip_rest_of_run && activated == 0 {
                    tx.execute(
                        "UPDATE actions SET status = 'skipped', result = $2, updated_ms = $3
                         WHERE run = (SELECT run FROM actions WHERE id = $1)
                           AND position > (SELECT position FROM actions WHERE id = $1)
                           AND status IN ('pending', 'standby')",
                        &[id, &format!("skipped: {id} failed"), &now],
                    )
                    .await?;
                }
            }
        }
    }
    refresh_heads(tx, &touched).await
}

fn prefixed(alias: &str) -> String {
    ACTION_COLUMNS
        .split(", ")
        .map(|c| format!("{alias}.{c}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Each user's first pending action that is due, in lane order (urgent, bulk, backfill),
/// then planning order.
pub(super) async fn ready_heads(
    client: &Client,
    now_ms: i64,
    limit: i64,
) -> Result<Vec<ActionRecord>, tokio_postgres::Error> {
    let sql = format!(
        "SELECT {} FROM user_heads AS h JOIN actions AS a ON a.position = h.position
         WHERE h.next_at_ms <= $1
         ORDER BY h.lane, h.position LIMIT $2",
        prefixed("a")
    );
    let statement = client.prepare_cached(&sql).await?;
    Ok(client
        .query(&statement, &[&now_ms, &limit])
        .await?
        .iter()
        .map(action_from_row)
        .collect())
}

pub(super) async fn backlog(client: &Client) -> Result<crate::Backlog, tokio_postgres::Error> {
    let row = client
        .query_one(
            "SELECT (SELECT count(*) FROM actions WHERE status = 'pending'),
                    (SELECT count(*) FROM actions WHERE status = 'failed'),
                    (SELECT count(*) FROM timers WHERE status = 'pending')",
            &[],
        )
        .await?;
    let mut backlog = crate::Backlog {
        pending: row.get(0),
        failed: row.get(1),
        timers_pending: row.get(2),
        ..crate::Backlog::default()
    };
    let now = now_ms();
    for row in client
        .query(
            "SELECT lane, min(created_ms), count(*), count(DISTINCT seq) FROM actions
             WHERE status = 'pending' GROUP BY lane",
            &[],
        )
        .await?
    {
        let created: i64 = row.get(1);
        backlog.add_lane(row.get(0), now - created, row.get(2), row.get(3));
    }
    Ok(backlog)
}

pub(super) async fn outbox_counts(client: &Client) -> Result<OutboxCounts, tokio_postgres::Error> {
    let mut counts = OutboxCounts::default();
    for row in client
        .query("SELECT status, count(*) FROM actions GROUP BY status", &[])
        .await?
    {
        let (status, n): (String, i64) = (row.get(0), row.get(1));
        counts.add(&status, n);
    }
    // Timers and the backlog's age as the backlog reads them.
    let backlog = backlog(client).await?;
    counts.timers_pending = backlog.timers_pending;
    counts.oldest_pending_ms = backlog.oldest_pending_ms;
    Ok(counts)
}

pub(super) async fn dead_letters(
    client: &Client,
    query: &DeadLetterQuery,
) -> Result<Vec<ActionRecord>, tokio_postgres::Error> {
    let sql = format!(
        "SELECT {ACTION_COLUMNS} FROM actions
         WHERE status = $7
           AND ($1::text IS NULL OR (body::jsonb) ->> 'workflow' = $1)
           AND ($2::text IS NULL OR error_code = $2)
           AND ($3::text IS NULL OR identity = $3)
           AND ($4::bigint IS NULL OR updated_ms >= $4)
           AND ($5::bigint IS NULL OR updated_ms < $5)
         ORDER BY position LIMIT $6"
    );
    Ok(client
        .query(
            &sql,
            &[
                &query.workflow,
                &query.code,
                &query.identity,
                &query.since_ms,
                &query.until_ms,
                &(query.limit as i64),
                &(if query.capped { "capped" } else { "failed" }),
            ],
        )
        .await?
        .iter()
        .map(action_from_row)
        .collect())
}

fn run_from_row(r: &Row) -> RunRecord {
    RunRecord {
        run: r.get(0),
        seq: r.get(1),
        workflow: r.get(2),
        identity: r.get(3),
        planned_ms: r.get(4),
        actions: r.get(5),
        paused: r.get(6),
        error: r.get(7),
        status: r.get(8),
    }
}

pub(super) async fn runs(
    client: &Client,
    query: &RunQuery,
) -> Result<Vec<RunRecord>, tokio_postgres::Error> {
    // Only the filters given are in the SQL, so that the user and time indexes serve them;
    // each run's status is worked out only for the rows returned unless it is a filter.
    let limit = query.limit as i64;
    let mut conditions = Vec::new();
    let mut values: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = Vec::new();
    if let Some(workflow) = &query.workflow {
        values.push(workflow);
        conditions.push(format!("r.workflow = ${}", values.len()));
    }
    if let Some(identity) = &query.identity {
        values.push(identity);
        conditions.push(format!("r.identity = ${}", values.len()));
    }
    if let Some(before) = &query.before_ms {
        values.push(before);
        conditions.push(format!("r.planned_ms < ${}", values.len()));
    }
    let filter = if conditions.is_empty() {
        String::new()
    } else {
        format!("WHERE {}", conditions.join(" AND "))
    };
    let listed = format!(
        "SELECT r.run, r.seq, r.workflow, r.identity, r.planned_ms, r.actions, r.paused,
                r.error, {RUN_STATUS} AS status
         FROM runs r {filter}
         ORDER BY r.planned_ms DESC, r.seq DESC"
    );
    let sql = match &query.status {
        None => {
            values.push(&limit);
            format!("{listed} LIMIT ${}", values.len())
        }
        Some(status) => {
            values.push(status);
            values.push(&limit);
            format!(
                "SELECT * FROM ({listed}) AS listed WHERE status = ${} LIMIT ${}",
                values.len() - 1,
                values.len()
            )
        }
    };
    Ok(client
        .query(&sql, &values)
        .await?
        .iter()
        .map(run_from_row)
        .collect())
}

pub(super) async fn run(
    client: &Client,
    id: &str,
) -> Result<Option<(RunRecord, Vec<ActionRecord>)>, tokio_postgres::Error> {
    let sql = format!(
        "SELECT r.run, r.seq, r.workflow, r.identity, r.planned_ms, r.actions, r.paused, r.error,
                {RUN_STATUS} FROM runs r WHERE r.run = $1"
    );
    let Some(row) = client.query_opt(&sql, &[&id]).await? else {
        return Ok(None);
    };
    let actions = client
        .query(
            &format!("SELECT {ACTION_COLUMNS} FROM actions WHERE run = $1 ORDER BY position"),
            &[&id],
        )
        .await?
        .iter()
        .map(action_from_row)
        .collect();
    Ok(Some((run_from_row(&row), actions)))
}

pub(super) async fn attempts(
    client: &Client,
    id: &str,
) -> Result<Vec<Attempt>, tokio_postgres::Error> {
    Ok(client
        .query(
            "SELECT number, at_ms, duration_ms, outcome, error, calls FROM attempts
             WHERE action_id = $1 ORDER BY number",
            &[&id],
        )
        .await?
        .iter()
        .map(|r| {
            let calls: String = r.get(5);
            Attempt {
                number: r.get(0),
                at_ms: r.get(1),
                duration_ms: r.get(2),
                outcome: r.get(3),
                error: r.get(4),
                calls: serde_json::from_str(&calls).unwrap_or_default(),
            }
        })
        .collect())
}

/// Deletes what is finished and older than `before_ms` (as in `sqlite/outbox.rs`).
pub(super) async fn cleanup(
    tx: &Transaction<'_>,
    before_ms: i64,
) -> Result<usize, tokio_postgres::Error> {
    tx.execute(
        "DELETE FROM attempts WHERE action_id IN (
             SELECT id FROM actions WHERE updated_ms < $1
               AND status IN ('done', 'skipped', 'discarded', 'replayed'))",
        &[&before_ms],
    )
    .await?;
    let actions = tx
        .execute(
            "DELETE FROM actions WHERE updated_ms < $1
               AND status IN ('done', 'skipped', 'discarded', 'replayed')",
            &[&before_ms],
        )
        .await?;
    tx.execute(
        "DELETE FROM runs WHERE planned_ms < $1
           AND NOT EXISTS (SELECT 1 FROM actions x WHERE x.run = runs.run)",
        &[&before_ms],
    )
    .await?;
    tx.execute(
        "DELETE FROM timers WHERE status = 'done' AND fire_at_ms < $1",
        &[&before_ms],
    )
    .await?;
    Ok(actions as usize)
}
