//! SQLite side of the engine's and delivery's records (see `crate::outbox`).

use crate::StoreError;
use crate::outbox::{
    ActionOutcome, ActionRecord, ActionStatus, Attempt, Claim, ClusterView, DeadLetterQuery,
    EngineCommit, HeldClaim, Lease, NewAction, NodeRecord, OutboxCounts, RUN_STATUS, RunQuery,
    RunRecord, SharedWrite,
};
use rusqlite::{Connection, OptionalExtension, Row, Transaction, params};

pub(super) use crate::outbox::ACTION_COLUMNS;

pub(super) fn action_from_row(row: &Row<'_>) -> rusqlite::Result<ActionRecord> {
    let status: String = row.get(6)?;
    let body: String = row.get(9)?;
    Ok(ActionRecord {
        position: row.get(0)?,
        id: row.get(1)?,
        identity: row.get(2)?,
        run: row.get(3)?,
        seq: row.get(4)?,
        lane: row.get(5)?,
        status: ActionStatus::parse(&status).unwrap_or(ActionStatus::Unreadable),
        attempts: row.get(7)?,
        next_at_ms: row.get(8)?,
        body: serde_json::from_str(&body).unwrap_or(serde_json::Value::String(body)),
        result: row.get(10)?,
        error_code: row.get(11)?,
        created_ms: row.get(12)?,
        first_attempt_ms: row.get(13)?,
        started_ms: row.get(14)?,
        updated_ms: row.get(15)?,
    })
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

pub(super) fn insert_actions(
    tx: &Transaction<'_>,
    actions: &[NewAction],
    now: i64,
) -> rusqlite::Result<()> {
    // A re-planned event (after a crash between delivery and the cursor) makes the same ids:
    // the actions already there are kept as they are.
    let mut insert = tx.prepare_cached(
        "INSERT OR IGNORE INTO actions
             (id, identity, run, seq, lane, standby_for, status, body, created_ms, updated_ms,
              result, error_code)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?9, ?10, ?11)",
    )?;
    for a in actions {
        insert.execute(params![
            a.id,
            a.identity,
            a.run,
            a.seq,
            a.lane,
            a.standby_for,
            a.initial_status().as_str(),
            a.body,
            now,
            a.capped,
            a.capped.as_ref().map(|_| "capped"),
        ])?;
    }
    refresh_heads(tx, actions.iter().map(|a| a.identity.as_str()))
}

/// Recomputes the `user_heads` row of each of these users from their pending actions: called
/// in every transaction that adds actions or changes their status, so that finding work costs
/// O(users with work) instead of a scan of every pending action.
pub(super) fn refresh_heads<'a>(
    tx: &Transaction<'_>,
    identities: impl IntoIterator<Item = &'a str>,
) -> rusqlite::Result<()> {
    let mut seen = std::collections::HashSet::new();
    let mut forget = tx.prepare_cached("DELETE FROM user_heads WHERE identity = ?1")?;
    let mut head = tx.prepare_cached(
        "INSERT INTO user_heads (identity, position, next_at_ms, lane)
         SELECT identity, position, next_at_ms,
                CASE WHEN EXISTS (SELECT 1 FROM actions INDEXED BY actions_pending_urgent
                                  WHERE identity = ?1 AND status = 'pending' AND lane = 0) THEN 0
                     WHEN EXISTS (SELECT 1 FROM actions INDEXED BY actions_pending_live
                                  WHERE identity = ?1 AND status = 'pending' AND lane = 1) THEN 1
                     ELSE 2 END
         FROM actions WHERE identity = ?1 AND status = 'pending'
         ORDER BY position LIMIT 1",
    )?;
    for identity in identities {
        if seen.insert(identity) {
            forget.execute(params![identity])?;
            head.execute(params![identity])?;
        }
    }
    Ok(())
}

/// Writes shared planner state, each entry only if it is still at the version the planner
/// read; otherwise refuses the whole commit as a conflict.
pub(super) fn write_shared(tx: &Transaction<'_>, writes: &[SharedWrite]) -> Result<(), StoreError> {
    let mut insert = tx.prepare_cached(
        "INSERT INTO shared_state (key, value, version) VALUES (?1, ?2, 1)
         ON CONFLICT (key) DO NOTHING",
    )?;
    let mut update = tx.prepare_cached(
        "UPDATE shared_state SET value = ?2, version = version + 1
         WHERE key = ?1 AND version = ?3",
    )?;
    for write in writes {
        let written = if write.expected == 0 {
            insert.execute(params![write.key, write.value])?
        } else {
            update.execute(params![write.key, write.value, write.expected])?
        };
        if written == 0 {
            return Err(StoreError::Conflict(write.key.clone()));
        }
    }
    Ok(())
}

/// See [`crate::EngineState::repartition`].
pub(super) fn repartition(
    tx: &Transaction<'_>,
    partitions: u32,
    node: &str,
    now_ms: i64,
) -> Result<(), StoreError> {
    let have: u32 = tx.query_row("SELECT count(*) FROM planner_partitions", [], |r| r.get(0))?;
    if have == partitions {
        return Ok(());
    }
    let others: Vec<String> = tx
        .prepare_cached("SELECT name FROM nodes WHERE expires_ms > ?1 AND name <> ?2")?
        .query_map(params![now_ms, node], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    let behind: Option<u32> = tx
        .query_row(
            "SELECT p.part FROM planner_partitions p
             WHERE EXISTS (SELECT 1 FROM events e WHERE e.part = p.part AND e.seq > p.cursor)
             UNION ALL SELECT part FROM quarantine WHERE released = 1
             LIMIT 1",
            [],
            |r| r.get(0),
        )
        .optional()?;
    crate::outbox::may_repartition(partitions, &others, behind)?;
    let cursor: i64 = tx.query_row(
        "SELECT max(coalesce((SELECT max(cursor) FROM planner_partitions), 0),
                    coalesce((SELECT max(seq) FROM events), 0))",
        [],
        |r| r.get(0),
    )?;
    tx.execute("DELETE FROM planner_partitions", [])?;
    let mut insert =
        tx.prepare_cached("INSERT INTO planner_partitions (part, cursor) VALUES (?1, ?2)")?;
    for part in 0..partitions {
        insert.execute(params![part, cursor])?;
    }
    let timers: Vec<(String, String)> = tx
        .prepare("SELECT id, identity FROM timers WHERE status = 'pending'")?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<Result<_, _>>()?;
    let mut timer = tx.prepare("UPDATE timers SET part = ?2 WHERE id = ?1")?;
    for (id, identity) in timers {
        timer.execute(params![id, crate::partition_of(&identity, partitions)])?;
    }
    let held: Vec<(i64, String)> = tx
        .prepare("SELECT id, identity FROM quarantine")?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<Result<_, _>>()?;
    let mut entry = tx.prepare("UPDATE quarantine SET part = ?2 WHERE id = ?1")?;
    for (id, identity) in held {
        entry.execute(params![id, crate::partition_of(&identity, partitions)])?;
    }
    Ok(())
}

pub(super) fn engine_commit(tx: &Transaction<'_>, commit: &EngineCommit) -> rusqlite::Result<()> {
    let now = now_ms();
    if let Some(cursor) = commit.cursor {
        tx.prepare_cached("UPDATE planner_partitions SET cursor = ?2 WHERE part = ?1")?
            .execute(params![commit.partition, cursor])?;
    }
    let mut profile = tx.prepare_cached(
        "INSERT INTO profiles (identity, body) VALUES (?1, ?2)
         ON CONFLICT (identity) DO UPDATE SET body = excluded.body",
    )?;
    for (identity, body) in &commit.profiles {
        profile.execute(params![identity, body])?;
    }
    insert_actions(tx, &commit.actions, now)?;
    let mut timer = tx.prepare_cached(
        "INSERT OR IGNORE INTO timers (id, identity, fire_at_ms, status, body, part)
         VALUES (?1, ?2, ?3, 'pending', ?4, ?5)",
    )?;
    for t in &commit.timers {
        timer.execute(params![
            t.id,
            t.identity,
            t.fire_at_ms,
            t.body,
            commit.partition
        ])?;
    }
    let mut done = tx.prepare_cached("UPDATE timers SET status = 'done' WHERE id = ?1")?;
    for id in &commit.timers_done {
        done.execute(params![id])?;
    }
    let mut forward = tx
        .prepare_cached("UPDATE timers SET fire_at_ms = ?2 WHERE id = ?1 AND status = 'pending'")?;
    for (id, at) in &commit.timers_rescheduled {
        forward.execute(params![id, at])?;
    }
    let mut run = tx.prepare_cached(
        "INSERT INTO runs (run, seq, workflow, identity, planned_ms, actions, paused, error)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
         ON CONFLICT (run) DO UPDATE SET actions = runs.actions + excluded.actions,
                                         paused = excluded.paused,
                                         error = coalesce(excluded.error, runs.error)",
    )?;
    for r in &commit.runs {
        run.execute(params![
            r.run, r.seq, r.workflow, r.identity, now, r.actions, r.paused, r.error
        ])?;
    }
    let mut hold = tx.prepare_cached(
        "INSERT INTO quarantine (identity, seq, timer, reason, at_ms, part)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?;
    for q in &commit.quarantine {
        hold.execute(params![
            q.identity,
            q.seq,
            q.timer,
            q.reason,
            now,
            commit.partition
        ])?;
    }
    let mut planned = tx.prepare_cached("DELETE FROM quarantine WHERE id = ?1")?;
    for id in &commit.released_done {
        planned.execute(params![id])?;
    }
    for erasure in &commit.erasures {
        erase(tx, erasure)?;
    }
    Ok(())
}

/// Redacts what is stored of a user deleted at their request (see [`crate::Erasure`]). Their
/// events are found through the identity index, plus the short tail it has not reached yet.
fn erase(tx: &Transaction<'_>, erasure: &crate::Erasure) -> rusqlite::Result<()> {
    let ids = serde_json::to_string(&erasure.ids).expect("ids are JSON");
    tx.execute(
        "UPDATE events
         SET body = json_object('type', type, 'messageId', message_id, 'redacted', ?3)
         WHERE seq < ?2 AND seq IN (
             SELECT seq FROM identity_index WHERE id IN (SELECT value FROM json_each(?1))
             UNION ALL
             SELECT seq FROM events
             WHERE seq > (SELECT upto FROM index_progress)
               AND (identity IN (SELECT value FROM json_each(?1))
                    OR anonymous_id IN (SELECT value FROM json_each(?1))))",
        params![ids, erasure.before_seq, crate::REDACTED],
    )?;
    tx.execute(
        "UPDATE attempts SET calls = '[]'
         WHERE action_id IN (SELECT id FROM actions
                             WHERE identity IN (SELECT value FROM json_each(?1))
                               AND status NOT IN ('pending', 'standby'))",
        params![ids],
    )?;
    tx.execute(
        "UPDATE actions
         SET body = json_set(body,
                '$.action', json_object('kind', json_extract(body, '$.action.kind'),
                                        'redacted', ?2),
                '$.who', json_object())
         WHERE identity IN (SELECT value FROM json_each(?1))
           AND status NOT IN ('pending', 'standby')",
        params![ids, crate::REDACTED],
    )?;
    // Timers carry the event that started their run (and a held message): gone, pending or not.
    tx.execute(
        "DELETE FROM timers WHERE identity IN (SELECT value FROM json_each(?1))",
        params![ids],
    )?;
    Ok(())
}

fn record_attempt(tx: &Transaction<'_>, id: &str, attempt: &Attempt) -> rusqlite::Result<()> {
    tx.prepare_cached(
        "INSERT OR REPLACE INTO attempts (action_id, number, at_ms, duration_ms, outcome, error, calls)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )?
    .execute(params![
        id,
        attempt.number,
        attempt.at_ms,
        attempt.duration_ms,
        attempt.outcome,
        attempt.error,
        attempt.calls.to_string()
    ])?;
    Ok(())
}

pub(super) fn action_outcomes(
    tx: &Transaction<'_>,
    outcomes: &[ActionOutcome],
) -> rusqlite::Result<()> {
    let now = now_ms();
    let mut touched = Vec::with_capacity(outcomes.len());
    let mut identity_of = tx.prepare_cached("SELECT identity FROM actions WHERE id = ?1")?;
    for outcome in outcomes {
        let id = match outcome {
            ActionOutcome::Done { id, .. }
            | ActionOutcome::Retry { id, .. }
            | ActionOutcome::Failed { id, .. } => id,
        };
        if let Some(identity) = identity_of
            .query_row(params![id], |r| r.get::<_, String>(0))
            .optional()?
        {
            touched.push(identity);
        }
        match outcome {
            ActionOutcome::Done {
                id,
                result,
                attempt,
                merged,
            } => {
                record_attempt(tx, id, attempt)?;
                tx.prepare_cached(
                    "UPDATE actions SET status = 'done', attempts = attempts + 1, result = ?2,
                            error_code = NULL, started_ms = NULL,
                            first_attempt_ms = coalesce(first_attempt_ms, ?4), updated_ms = ?3
                     WHERE id = ?1",
                )?
                .execute(params![id, result, now, attempt.at_ms])?;
                for other in merged {
                    tx.prepare_cached(
                        "UPDATE actions SET status = 'done', result = ?2, updated_ms = ?3
                         WHERE id = ?1 AND status = 'pending'",
                    )?
                    .execute(params![
                        other,
                        format!("coalesced into {id}"),
                        now
                    ])?;
                }
                // Error branches of what succeeded are not needed.
                for done in std::iter::once(id).chain(merged) {
                    tx.prepare_cached(
                        "UPDATE actions SET status = 'skipped', updated_ms = ?2
                         WHERE standby_for = ?1 AND status = 'standby'",
                    )?
                    .execute(params![done, now])?;
                }
            }
            ActionOutcome::Retry {
                id,
                next_at_ms,
                error,
                code,
                attempt,
                counts,
            } => {
                record_attempt(tx, id, attempt)?;
                tx.prepare_cached(
                    "UPDATE actions SET attempts = attempts + ?5, next_at_ms = ?2, result = ?3,
                            error_code = ?6, started_ms = NULL,
                            first_attempt_ms = coalesce(first_attempt_ms, ?7), updated_ms = ?4
                     WHERE id = ?1",
                )?
                .execute(params![
                    id,
                    next_at_ms,
                    error,
                    now,
                    i64::from(*counts),
                    code,
                    attempt.at_ms
                ])?;
            }
            ActionOutcome::Failed {
                id,
                error,
                code,
                attempt,
                skip_rest_of_run,
            } => {
                record_attempt(tx, id, attempt)?;
                tx.prepare_cached(
                    "UPDATE actions SET status = 'failed', attempts = attempts + 1, result = ?2,
                            error_code = ?4, started_ms = NULL,
                            first_attempt_ms = coalesce(first_attempt_ms, ?5), updated_ms = ?3
                     WHERE id = ?1",
                )?
                .execute(params![id, error, now, code, attempt.at_ms])?;
                let activated = tx
                    .prepare_cached(
                        "UPDATE actions SET status = 'pending', updated_ms = ?2
                         WHERE standby_for = ?1 AND status = 'standby'",
                    )?
                    .execute(params![id, now])?;
                if *skip_rest_of_run && activated == 0 {
                    tx.prepare_cached(
                        "UPDATE actions SET status = 'skipped', result = ?2, updated_ms = ?3
                         WHERE run = (SELECT run FROM actions WHERE id = ?1)
                           AND position > (SELECT position FROM actions WHERE id = ?1)
                           AND status IN ('pending', 'standby')",
                    )?
                    .execute(params![
                        id,
                        format!("skipped: {id} failed"),
                        now
                    ])?;
                }
            }
        }
    }
    refresh_heads(tx, touched.iter().map(String::as_str))
}

/// Each user's first pending action that is due. Users come in the order of their lane (a
/// user with anything urgent pending first: their head goes out first, since a user's order
/// holds; backfill users last), then planning order. Read
/// from `user_heads`, one row per user with pending work, not from the actions themselves.
pub(super) fn ready_heads(
    conn: &Connection,
    now_ms: i64,
    limit: i64,
) -> rusqlite::Result<Vec<ActionRecord>> {
    let sql = format!(
        "SELECT {} FROM user_heads AS h JOIN actions AS a ON a.position = h.position
         WHERE h.next_at_ms <= ?1
         ORDER BY h.lane, h.position LIMIT ?2",
        prefixed("a")
    );
    let mut statement = conn.prepare_cached(&sql)?;
    statement
        .query_map(params![now_ms, limit], action_from_row)?
        .collect()
}

/// Grants claims on up to `limit` users served in `lanes` whose head is due and whom no live
/// claim holds (the writer runs one job at a time, so nothing else grants meanwhile).
pub(super) fn claim_users(
    tx: &Transaction<'_>,
    node: &str,
    now_ms: i64,
    lease_ms: i64,
    limit: i64,
    lanes: std::ops::RangeInclusive<i64>,
) -> rusqlite::Result<Vec<Claim>> {
    let identities = tx
        .prepare_cached(
            "SELECT h.identity FROM user_heads AS h
             LEFT JOIN delivery_claims AS c ON c.identity = h.identity
             WHERE h.lane BETWEEN ?3 AND ?4
               AND h.next_at_ms <= ?1 AND (c.identity IS NULL OR c.expires_ms <= ?1)
             ORDER BY h.lane, h.position LIMIT ?2",
        )?
        .query_map(params![now_ms, limit, lanes.start(), lanes.end()], |r| {
            r.get::<_, String>(0)
        })?
        .collect::<Result<Vec<_>, _>>()?;
    let mut token = tx.prepare_cached("UPDATE claim_tokens SET last = last + 1 RETURNING last")?;
    let mut grant = tx.prepare_cached(
        "INSERT INTO delivery_claims (identity, node, token, expires_ms) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (identity) DO UPDATE SET node = excluded.node, token = excluded.token,
                                              expires_ms = excluded.expires_ms",
    )?;
    let mut claims = Vec::with_capacity(identities.len());
    for identity in identities {
        let token: i64 = token.query_row([], |r| r.get(0))?;
        grant.execute(params![identity, node, token, now_ms + lease_ms])?;
        claims.push(Claim {
            identity,
            token,
            expires_ms: now_ms + lease_ms,
        });
    }
    Ok(claims)
}

/// Refuses a write under a claim that is no longer the user's current one, or (with `live_at`)
/// that has expired by then.
pub(super) fn check_claim(
    tx: &Transaction<'_>,
    claim: &Claim,
    live_at: Option<i64>,
) -> Result<(), StoreError> {
    let current: Option<(i64, i64)> = tx
        .prepare_cached("SELECT token, expires_ms FROM delivery_claims WHERE identity = ?1")?
        .query_row(params![claim.identity], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    claim.verify(current, live_at)
}

pub(super) fn acquire_lease(
    tx: &Transaction<'_>,
    name: &str,
    node: &str,
    now_ms: i64,
    lease_ms: i64,
) -> rusqlite::Result<Option<Lease>> {
    let holder: Option<(String, i64)> = tx
        .prepare_cached("SELECT node, expires_ms FROM leases WHERE name = ?1")?
        .query_row(params![name], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    if holder.is_some_and(|(holder, expires_ms)| holder != node && expires_ms > now_ms) {
        return Ok(None);
    }
    let token: i64 = tx
        .prepare_cached("UPDATE claim_tokens SET last = last + 1 RETURNING last")?
        .query_row([], |r| r.get(0))?;
    tx.prepare_cached(
        "INSERT OR REPLACE INTO leases (name, node, token, expires_ms) VALUES (?1, ?2, ?3, ?4)",
    )?
    .execute(params![name, node, token, now_ms + lease_ms])?;
    Ok(Some(Lease {
        name: name.to_owned(),
        node: node.to_owned(),
        token,
        expires_ms: now_ms + lease_ms,
    }))
}

/// Refuses a commit under a lease whose token is no longer current.
pub(super) fn check_lease(tx: &Transaction<'_>, lease: &Lease) -> Result<(), StoreError> {
    let token: Option<i64> = tx
        .prepare_cached("SELECT token FROM leases WHERE name = ?1")?
        .query_row(params![lease.name], |r| r.get(0))
        .optional()?;
    lease.verify(token)
}

pub(super) fn cluster(conn: &Connection) -> rusqlite::Result<ClusterView> {
    let nodes = conn
        .prepare_cached("SELECT name, started_ms, seen_ms, expires_ms FROM nodes ORDER BY name")?
        .query_map([], |r| {
            Ok(NodeRecord {
                name: r.get(0)?,
                started_ms: r.get(1)?,
                seen_ms: r.get(2)?,
                expires_ms: r.get(3)?,
            })
        })?
        .collect::<Result<Vec<_>, _>>()?;
    let leases = conn
        .prepare_cached("SELECT name, node, token, expires_ms FROM leases ORDER BY name")?
        .query_map([], |r| {
            Ok(Lease {
                name: r.get(0)?,
                node: r.get(1)?,
                token: r.get(2)?,
                expires_ms: r.get(3)?,
            })
        })?
        .collect::<Result<Vec<_>, _>>()?;
    let claims = conn
        .prepare_cached(
            "SELECT node, identity, token, expires_ms FROM delivery_claims ORDER BY node, token",
        )?
        .query_map([], |r| {
            Ok(HeldClaim {
                node: r.get(0)?,
                claim: Claim {
                    identity: r.get(1)?,
                    token: r.get(2)?,
                    expires_ms: r.get(3)?,
                },
            })
        })?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(ClusterView {
        nodes,
        leases,
        claims,
    })
}

fn prefixed(alias: &str) -> String {
    ACTION_COLUMNS
        .split(", ")
        .map(|c| format!("{alias}.{c}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The earliest time a waiting head becomes due.
pub(super) fn next_due_ms(conn: &Connection) -> rusqlite::Result<Option<i64>> {
    conn.prepare_cached("SELECT min(next_at_ms) FROM user_heads")?
        .query_row([], |r| r.get(0))
}

pub(super) fn backlog(conn: &Connection) -> rusqlite::Result<crate::Backlog> {
    let count = |sql: &str| conn.prepare_cached(sql)?.query_row([], |row| row.get(0));
    let mut backlog = crate::Backlog {
        pending: count(
            "SELECT count(*) FROM actions INDEXED BY actions_pending WHERE status = 'pending'",
        )?,
        failed: count(
            "SELECT count(*) FROM actions INDEXED BY actions_failed WHERE status = 'failed'",
        )?,
        timers_pending: count("SELECT count(*) FROM timers WHERE status = 'pending'")?,
        ..crate::Backlog::default()
    };
    let now = now_ms();
    let mut by_lane = conn.prepare_cached(
        "SELECT lane, min(created_ms), count(*), count(DISTINCT seq)
         FROM actions INDEXED BY actions_pending WHERE status = 'pending' GROUP BY lane",
    )?;
    for row in by_lane.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))? {
        let (lane, created, pending, events): (i64, i64, i64, i64) = row?;
        backlog.add_lane(lane, now - created, pending, events);
    }
    Ok(backlog)
}

pub(super) fn outbox_counts(conn: &Connection) -> rusqlite::Result<OutboxCounts> {
    let mut counts = OutboxCounts::default();
    let mut statement =
        conn.prepare_cached("SELECT status, count(*) FROM actions GROUP BY status")?;
    let rows = statement.query_map([], |row| {
        Ok((row.get::<_, String>(0)?, row.get::<_, i64>(1)?))
    })?;
    for row in rows {
        let (status, n) = row?;
        counts.add(&status, n);
    }
    // Timers and the backlog's age as the backlog reads them.
    let backlog = backlog(conn)?;
    counts.timers_pending = backlog.timers_pending;
    counts.oldest_pending_ms = backlog.oldest_pending_ms;
    Ok(counts)
}

pub(super) fn dead_letters(
    conn: &Connection,
    query: &DeadLetterQuery,
) -> rusqlite::Result<Vec<ActionRecord>> {
    // Each status listed here has its own partial index.
    let (index, status) = if query.capped {
        ("actions_capped", "capped")
    } else {
        ("actions_failed", "failed")
    };
    let sql = format!(
        "SELECT {ACTION_COLUMNS} FROM actions INDEXED BY {index}
         WHERE status = '{status}'
           AND (?1 IS NULL OR json_extract(body, '$.workflow') = ?1)
           AND (?2 IS NULL OR error_code = ?2)
           AND (?3 IS NULL OR identity = ?3)
           AND (?4 IS NULL OR updated_ms >= ?4)
           AND (?5 IS NULL OR updated_ms < ?5)
         ORDER BY position LIMIT ?6"
    );
    let mut statement = conn.prepare_cached(&sql)?;
    statement
        .query_map(
            params![
                query.workflow,
                query.code,
                query.identity,
                query.since_ms,
                query.until_ms,
                query.limit as i64
            ],
            action_from_row,
        )?
        .collect()
}

pub(super) fn action(conn: &Connection, id: &str) -> rusqlite::Result<Option<ActionRecord>> {
    conn.prepare_cached(&format!(
        "SELECT {ACTION_COLUMNS} FROM actions WHERE id = ?1"
    ))?
    .query_row(params![id], action_from_row)
    .optional()
}

pub(super) fn attempts(conn: &Connection, id: &str) -> rusqlite::Result<Vec<Attempt>> {
    let mut statement = conn.prepare_cached(
        "SELECT number, at_ms, duration_ms, outcome, error, calls FROM attempts
         WHERE action_id = ?1 ORDER BY number",
    )?;
    statement
        .query_map(params![id], |r| {
            let calls: String = r.get(5)?;
            Ok(Attempt {
                number: r.get(0)?,
                at_ms: r.get(1)?,
                duration_ms: r.get(2)?,
                outcome: r.get(3)?,
                error: r.get(4)?,
                calls: serde_json::from_str(&calls).unwrap_or_default(),
            })
        })?
        .collect()
}

pub(super) fn runs(conn: &Connection, query: &RunQuery) -> rusqlite::Result<Vec<RunRecord>> {
    // Only the filters given are in the SQL (`?x IS NULL OR …` would keep SQLite from using the
    // user index), newest first through the time or user index, and each run's status worked
    // out only for the rows returned unless the status is a filter.
    let mut conditions = Vec::new();
    let mut values: Vec<rusqlite::types::Value> = Vec::new();
    for (column, value) in [
        ("r.workflow = ?", query.workflow.clone().map(Into::into)),
        ("r.identity = ?", query.identity.clone().map(Into::into)),
        ("r.planned_ms < ?", query.before_ms.map(Into::into)),
    ] {
        if let Some(value) = value {
            conditions.push(column);
            values.push(value);
        }
    }
    let filter = if conditions.is_empty() {
        String::new()
    } else {
        format!("WHERE {}", conditions.join(" AND "))
    };
    let listed = format!(
        "SELECT r.run, r.seq, r.workflow, r.identity, r.planned_ms, r.actions, r.paused, r.error,
                {RUN_STATUS} AS status
         FROM runs r {filter}
         ORDER BY r.planned_ms DESC, r.seq DESC"
    );
    let sql = match &query.status {
        None => format!("{listed} LIMIT ?"),
        Some(status) => {
            values.push(status.clone().into());
            format!("SELECT * FROM ({listed}) WHERE status = ? LIMIT ?")
        }
    };
    values.push((query.limit as i64).into());
    conn.prepare_cached(&sql)?
        .query_map(rusqlite::params_from_iter(values), run_from_row)?
        .collect()
}

fn run_from_row(r: &Row<'_>) -> rusqlite::Result<RunRecord> {
    Ok(RunRecord {
        run: r.get(0)?,
        seq: r.get(1)?,
        workflow: r.get(2)?,
        identity: r.get(3)?,
        planned_ms: r.get(4)?,
        actions: r.get(5)?,
        paused: r.get(6)?,
        error: r.get(7)?,
        status: r.get(8)?,
    })
}

pub(super) fn run(
    conn: &Connection,
    id: &str,
) -> rusqlite::Result<Option<(RunRecord, Vec<ActionRecord>)>> {
    let sql = format!(
        "SELECT r.run, r.seq, r.workflow, r.identity, r.planned_ms, r.actions, r.paused, r.error,
                {RUN_STATUS} FROM runs r WHERE r.run = ?1"
    );
    let Some(record) = conn
        .prepare_cached(&sql)?
        .query_row(params![id], run_from_row)
        .optional()?
    else {
        return Ok(None);
    };
    let mut statement = conn.prepare_cached(&format!(
        "SELECT {ACTION_COLUMNS} FROM actions WHERE run = ?1 ORDER BY position"
    ))?;
    let actions = statement
        .query_map(params![id], action_from_row)?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Some((record, actions)))
}

/// Deletes what is finished and older than `before_ms`: delivered, skipped, discarded and
/// replayed actions with their attempts, runs with nothing left, done timers. Dead letters stay
/// until replayed or discarded.
pub(super) fn cleanup(tx: &Transaction<'_>, before_ms: i64) -> rusqlite::Result<usize> {
    tx.execute(
        "DELETE FROM attempts WHERE action_id IN (
             SELECT id FROM actions WHERE updated_ms < ?1
               AND status IN ('done', 'skipped', 'discarded', 'replayed'))",
        params![before_ms],
    )?;
    let actions = tx.execute(
        "DELETE FROM actions WHERE updated_ms < ?1
           AND status IN ('done', 'skipped', 'discarded', 'replayed')",
        params![before_ms],
    )?;
    tx.execute(
        "DELETE FROM runs WHERE planned_ms < ?1
           AND NOT EXISTS (SELECT 1 FROM actions x WHERE x.run = runs.run)",
        params![before_ms],
    )?;
    tx.execute(
        "DELETE FROM timers WHERE status = 'done' AND fire_at_ms < ?1",
        params![before_ms],
    )?;
    Ok(actions)
}
