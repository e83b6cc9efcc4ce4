//! SQLite side of the engine's and delivery's records (see `crate::outbox`).

use crate::outbox::{ActionOutcome, ActionRecord, ActionStatus, EngineCommit, OutboxCounts};
use rusqlite::{Row, Transaction, params};

pub(super) const ACTION_COLUMNS: &str =
    "position, id, identity, run, seq, status, attempts, next_at_ms, body, result, updated_ms";

pub(super) fn action_from_row(row: &Row<'_>) -> rusqlite::Result<ActionRecord> {
    let status: String = row.get(5)?;
    let body: String = row.get(8)?;
    Ok(ActionRecord {
        position: row.get(0)?,
        id: row.get(1)?,
        identity: row.get(2)?,
        run: row.get(3)?,
        seq: row.get(4)?,
        status: ActionStatus::parse(&status).unwrap_or(ActionStatus::Pending),
        attempts: row.get(6)?,
        next_at_ms: row.get(7)?,
        body: serde_json::from_str(&body).unwrap_or(serde_json::Value::String(body)),
        result: row.get(9)?,
        updated_ms: row.get(10)?,
    })
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

pub(super) fn engine_commit(tx: &Transaction<'_>, commit: &EngineCommit) -> rusqlite::Result<()> {
    let now = now_ms();
    if let Some(cursor) = commit.cursor {
        tx.prepare_cached(
            "INSERT INTO engine_state (key, value) VALUES ('cursor', ?1)
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        )?
        .execute(params![cursor.to_string()])?;
    }
    if let Some(globals) = &commit.globals {
        tx.prepare_cached(
            "INSERT INTO engine_state (key, value) VALUES ('globals', ?1)
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        )?
        .execute(params![globals])?;
    }
    let mut profile = tx.prepare_cached(
        "INSERT INTO profiles (identity, body) VALUES (?1, ?2)
         ON CONFLICT (identity) DO UPDATE SET body = excluded.body",
    )?;
    for (identity, body) in &commit.profiles {
        profile.execute(params![identity, body])?;
    }
    // A re-planned event (after a crash between delivery and the cursor) makes the same ids:
    // the actions already there are kept as they are.
    let mut action = tx.prepare_cached(
        "INSERT OR IGNORE INTO actions
             (id, identity, run, seq, standby_for, status, body, created_ms, updated_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?8)",
    )?;
    for a in &commit.actions {
        let status = if a.standby_for.is_some() {
            "standby"
        } else {
            "pending"
        };
        action.execute(params![
            a.id,
            a.identity,
            a.run,
            a.seq,
            a.standby_for,
            status,
            a.body,
            now
        ])?;
    }
    let mut timer = tx.prepare_cached(
        "INSERT OR IGNORE INTO timers (id, identity, fire_at_ms, status, body)
         VALUES (?1, ?2, ?3, 'pending', ?4)",
    )?;
    for t in &commit.timers {
        timer.execute(params![t.id, t.identity, t.fire_at_ms, t.body])?;
    }
    let mut done = tx.prepare_cached("UPDATE timers SET status = 'done' WHERE id = ?1")?;
    for id in &commit.timers_done {
        done.execute(params![id])?;
    }
    Ok(())
}

pub(super) fn action_outcomes(
    tx: &Transaction<'_>,
    outcomes: &[ActionOutcome],
) -> rusqlite::Result<()> {
    let now = now_ms();
    for outcome in outcomes {
        match outcome {
            ActionOutcome::Done { id, result } => {
                tx.prepare_cached(
                    "UPDATE actions SET status = 'done', attempts = attempts + 1, result = ?2,
                            updated_ms = ?3 WHERE id = ?1",
                )?
                .execute(params![id, result, now])?;
                // Its error branch is not needed.
                tx.prepare_cached(
                    "UPDATE actions SET status = 'skipped', updated_ms = ?2
                     WHERE standby_for = ?1 AND status = 'standby'",
                )?
                .execute(params![id, now])?;
            }
            ActionOutcome::Retry {
                id,
                next_at_ms,
                error,
            } => {
                tx.prepare_cached(
                    "UPDATE actions SET attempts = attempts + 1, next_at_ms = ?2, result = ?3,
                            updated_ms = ?4 WHERE id = ?1",
                )?
                .execute(params![id, next_at_ms, error, now])?;
            }
            ActionOutcome::Failed {
                id,
                error,
                skip_rest_of_run,
            } => {
                tx.prepare_cached(
                    "UPDATE actions SET status = 'failed', attempts = attempts + 1, result = ?2,
                            updated_ms = ?3 WHERE id = ?1",
                )?
                .execute(params![id, error, now])?;
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
    Ok(())
}

pub(super) fn outbox_counts(conn: &rusqlite::Connection) -> rusqlite::Result<OutboxCounts> {
    let mut counts = OutboxCounts::default();
    let mut statement =
        conn.prepare_cached("SELECT status, count(*) FROM actions GROUP BY status")?;
    let rows = statement.query_map([], |row| {
        Ok((row.get::<_, String>(0)?, row.get::<_, i64>(1)?))
    })?;
    for row in rows {
        let (status, n) = row?;
        match ActionStatus::parse(&status) {
            Some(ActionStatus::Pending) => counts.pending = n,
            Some(ActionStatus::Standby) => counts.standby = n,
            Some(ActionStatus::Done) => counts.done = n,
            Some(ActionStatus::Failed) => counts.failed = n,
            Some(ActionStatus::Skipped) => counts.skipped = n,
            None => {}
        }
    }
    counts.timers_pending = conn
        .prepare_cached("SELECT count(*) FROM timers WHERE status = 'pending'")?
        .query_row([], |row| row.get(0))?;
    Ok(counts)
}
