//! The SQLite schema and its migrations, numbered by `PRAGMA user_version`.

use rusqlite::Connection;

/// Each entry upgrades the schema by one version; never edit a released entry, append a new one.
const MIGRATIONS: &[&str] = &[
    // 1: the event log, the messageId index (which is also the de-duplication record), the
    // identity index and the rejected-message log.
    //
    // Every index on `events` costs a random b-tree insert per event inside the ingest commit;
    // measured with the load harness, an (identity, seq) index cut durable ingest by a third.
    // So the ingest transaction writes only `events` (an append) and `message_ids` (which it
    // needs to answer "duplicate?"); `identity_index` is derived from `events` by the writer
    // when it has no appends waiting (identity_index.rs), and readers cover the not-yet-indexed
    // tail (seq > index_progress.upto) with a short scan, so lookups are always exact.
    r#"
    CREATE TABLE events (
        seq          INTEGER PRIMARY KEY AUTOINCREMENT, -- arrival order, never reused
        source       TEXT    NOT NULL,
        message_id   TEXT    NOT NULL,
        type         TEXT    NOT NULL,
        identity     TEXT    NOT NULL,                  -- userId, else anonymousId
        user_id      TEXT,
        anonymous_id TEXT,
        event        TEXT,
        timestamp_ms INTEGER NOT NULL,
        received_ms  INTEGER NOT NULL,
        body         TEXT    NOT NULL
    );

    -- Each event under its identity, and also under its anonymousId when it has both ids.
    CREATE TABLE identity_index (
        id  TEXT    NOT NULL,
        seq INTEGER NOT NULL,
        PRIMARY KEY (id, seq)
    ) WITHOUT ROWID;
    -- identity_index holds every event up to and including this seq.
    CREATE TABLE index_progress (upto INTEGER NOT NULL);
    INSERT INTO index_progress (upto) VALUES (0);

    -- The latest event stored for each (messageId, source), and when it arrived: a messageId
    -- seen again within the de-duplication window is a duplicate.
    CREATE TABLE message_ids (
        message_id  TEXT    NOT NULL,
        source      TEXT    NOT NULL,
        received_ms INTEGER NOT NULL,
        seq         INTEGER NOT NULL,
        PRIMARY KEY (message_id, source)
    ) WITHOUT ROWID;

    CREATE TABLE rejected (
        id           INTEGER PRIMARY KEY AUTOINCREMENT,
        source       TEXT    NOT NULL,
        received_ms  INTEGER NOT NULL,
        position     INTEGER NOT NULL,
        type         TEXT,
        message_id   TEXT,
        code         TEXT    NOT NULL,
        field        TEXT    NOT NULL,
        reason       TEXT    NOT NULL,
        body         TEXT    NOT NULL
    );
    "#,
    // 2: the identity map: which Intercom contact a Segment id (userId, anonymousId, email)
    // belongs to, per Intercom workspace.
    r#"
    CREATE TABLE identity_map (
        workspace  TEXT    NOT NULL,
        kind       TEXT    NOT NULL,  -- user_id, anonymous_id or email
        value      TEXT    NOT NULL,
        contact_id TEXT    NOT NULL,
        updated_ms INTEGER NOT NULL,
        PRIMARY KEY (workspace, kind, value)
    ) WITHOUT ROWID;
    CREATE INDEX identity_map_by_contact ON identity_map (workspace, contact_id);
    "#,
    // 3: the engine and delivery. Profiles (per-user state), the planner's cursor and shared
    // state, the outbox of planned actions (position = delivery order), durable timers.
    r#"
    CREATE TABLE profiles (
        identity TEXT PRIMARY KEY,
        body     TEXT NOT NULL
    ) WITHOUT ROWID;
    CREATE TABLE engine_state (
        key   TEXT PRIMARY KEY,  -- cursor | globals
        value TEXT NOT NULL
    ) WITHOUT ROWID;
    CREATE TABLE actions (
        position    INTEGER PRIMARY KEY AUTOINCREMENT,
        id          TEXT    NOT NULL UNIQUE,  -- messageId/workflow/step
        identity    TEXT    NOT NULL,
        run         TEXT    NOT NULL,         -- messageId/workflow
        seq         INTEGER NOT NULL,
        standby_for TEXT,
        status      TEXT    NOT NULL,         -- pending | standby | done | failed | skipped
        attempts    INTEGER NOT NULL DEFAULT 0,
        next_at_ms  INTEGER NOT NULL DEFAULT 0,
        body        TEXT    NOT NULL,
        result      TEXT,
        created_ms  INTEGER NOT NULL,
        updated_ms  INTEGER NOT NULL
    );
    -- Delivery reads the pending head in order; the partial index keeps finished actions out.
    CREATE INDEX actions_pending ON actions (position) WHERE status = 'pending';
    CREATE INDEX actions_by_run ON actions (run, position);
    CREATE INDEX actions_by_standby ON actions (standby_for) WHERE standby_for IS NOT NULL;
    CREATE INDEX actions_by_identity ON actions (identity, position);
    CREATE TABLE timers (
        id         TEXT    PRIMARY KEY,
        identity   TEXT    NOT NULL,
        fire_at_ms INTEGER NOT NULL,
        status     TEXT    NOT NULL,  -- pending | done
        body       TEXT    NOT NULL
    ) WITHOUT ROWID;
    CREATE INDEX timers_due ON timers (fire_at_ms) WHERE status = 'pending';
    "#,
    // 4: delivery you can trust. Lanes (0 urgent, 1 bulk), the first attempt's time (for the
    // retry window), a mark set before a call that must not be repeated and cleared by its
    // outcome, the error code of a failure; every attempt with the calls it made; every run
    // (event × workflow) for the execution log.
    r#"
    ALTER TABLE actions ADD COLUMN lane INTEGER NOT NULL DEFAULT 1;
    ALTER TABLE actions ADD COLUMN first_attempt_ms INTEGER;
    ALTER TABLE actions ADD COLUMN started_ms INTEGER;
    ALTER TABLE actions ADD COLUMN error_code TEXT;
    CREATE INDEX actions_failed ON actions (updated_ms) WHERE status = 'failed';
    CREATE INDEX actions_started ON actions (position) WHERE started_ms IS NOT NULL;
    -- Each user's head of line: min(position) per identity among pending actions.
    CREATE INDEX actions_pending_by_identity ON actions (identity, position) WHERE status = 'pending';
    CREATE TABLE attempts (
        action_id   TEXT    NOT NULL,
        number      INTEGER NOT NULL,
        at_ms       INTEGER NOT NULL,
        duration_ms INTEGER NOT NULL,
        outcome     TEXT    NOT NULL,  -- done | retry | failed | paused
        error       TEXT,
        calls       TEXT    NOT NULL,  -- JSON: [{method, path, status, request, response, ms}]
        PRIMARY KEY (action_id, number)
    ) WITHOUT ROWID;
    CREATE TABLE runs (
        run        TEXT    PRIMARY KEY,  -- messageId/workflow
        seq        INTEGER NOT NULL,
        workflow   TEXT    NOT NULL,
        identity   TEXT    NOT NULL,
        planned_ms INTEGER NOT NULL,
        actions    INTEGER NOT NULL,
        paused     INTEGER NOT NULL,
        error      TEXT
    ) WITHOUT ROWID;
    CREATE INDEX runs_by_time ON runs (planned_ms);
    CREATE INDEX runs_by_identity ON runs (identity, planned_ms);
    "#,
    // 5: what Junction itself created in Intercom (conversations), so that Intercom's webhook
    // about it is known for an echo and triggers nothing.
    r#"
    CREATE TABLE made_by_junction (
        kind    TEXT    NOT NULL,
        id      TEXT    NOT NULL,
        made_ms INTEGER NOT NULL,
        PRIMARY KEY (kind, id)
    ) WITHOUT ROWID;
    "#,
    // 6: events and timers held because their user's stored state could not be read.
    r#"
    CREATE TABLE quarantine (
        id       INTEGER PRIMARY KEY AUTOINCREMENT,
        identity TEXT    NOT NULL,
        seq      INTEGER NOT NULL,
        timer    TEXT,              -- a held timer's body
        reason   TEXT    NOT NULL,
        at_ms    INTEGER NOT NULL,
        released INTEGER NOT NULL DEFAULT 0
    );
    CREATE INDEX quarantine_by_identity ON quarantine (identity);
    CREATE INDEX quarantine_released ON quarantine (seq) WHERE released = 1;
    "#,
    // 7: each user's head of line, kept in the same transactions that change actions, so that
    // delivery finds work in O(users with work) whatever the backlog (a GROUP BY over every
    // pending action cost time and memory in proportion to it).
    r#"
    CREATE TABLE user_heads (
        identity   TEXT    PRIMARY KEY,
        position   INTEGER NOT NULL,  -- the user's first pending action
        next_at_ms INTEGER NOT NULL,  -- when it is due
        urgent     INTEGER NOT NULL   -- 1 when the user has anything urgent pending
    ) WITHOUT ROWID;
    CREATE INDEX user_heads_order ON user_heads (urgent DESC, position);
    CREATE INDEX user_heads_due ON user_heads (next_at_ms);
    CREATE INDEX actions_pending_urgent ON actions (identity) WHERE status = 'pending' AND lane = 0;
    INSERT INTO user_heads (identity, position, next_at_ms, urgent)
        SELECT h.identity, h.head, a.next_at_ms, h.lane = 0
        FROM (SELECT identity, min(position) AS head, min(lane) AS lane FROM actions
              WHERE status = 'pending' GROUP BY identity) AS h
        JOIN actions AS a ON a.position = h.head;
    "#,
    // 8: delivery claims: which node delivers to which user, until when, under which fencing
    // token (tokens only grow: claim_tokens holds the last one handed out); named leases (the
    // planner's), under the same tokens.
    r#"
    CREATE TABLE nodes (
        name       TEXT    PRIMARY KEY,
        started_ms INTEGER NOT NULL,
        seen_ms    INTEGER NOT NULL,
        expires_ms INTEGER NOT NULL
    ) WITHOUT ROWID;
    CREATE TABLE leases (
        name       TEXT    PRIMARY KEY,
        node       TEXT    NOT NULL,
        token      INTEGER NOT NULL,
        expires_ms INTEGER NOT NULL
    ) WITHOUT ROWID;
    CREATE TABLE delivery_claims (
        identity   TEXT    PRIMARY KEY,
        node       TEXT    NOT NULL,
        token      INTEGER NOT NULL,
        expires_ms INTEGER NOT NULL
    ) WITHOUT ROWID;
    CREATE TABLE claim_tokens (last INTEGER NOT NULL);
    INSERT INTO claim_tokens (last) VALUES (0);
    -- Intercom's rate budget per workspace and 10-second window, as handed out to nodes.
    CREATE TABLE rate_budget (
        workspace TEXT    NOT NULL,
        bucket    INTEGER NOT NULL,
        used      INTEGER NOT NULL,
        PRIMARY KEY (workspace, bucket)
    ) WITHOUT ROWID;
    "#,
    // 9: planning partitions. Events, timers and quarantine entries carry the partition of
    // their identity (`partition_of`); each partition has its own cursor. The planner state
    // that partitions share becomes one row per entry with a version, so that planners on
    // different nodes change it without losing each other's writes. A store from before
    // starts with one partition, where the single cursor was.
    r#"
    ALTER TABLE events ADD COLUMN part INTEGER NOT NULL DEFAULT 0;
    CREATE INDEX events_by_part ON events (part, seq);
    ALTER TABLE timers ADD COLUMN part INTEGER NOT NULL DEFAULT 0;
    DROP INDEX timers_due;
    CREATE INDEX timers_due ON timers (part, fire_at_ms) WHERE status = 'pending';
    ALTER TABLE quarantine ADD COLUMN part INTEGER NOT NULL DEFAULT 0;
    CREATE TABLE planner_partitions (
        part   INTEGER PRIMARY KEY,
        cursor INTEGER NOT NULL
    );
    INSERT INTO planner_partitions (part, cursor)
        SELECT 0, coalesce((SELECT CAST(value AS INTEGER) FROM engine_state
                            WHERE key = 'cursor'), 0);
    CREATE TABLE shared_state (
        key     TEXT    PRIMARY KEY,  -- round_robin/WORKFLOW/STEP | company/GROUP_ID
        value   TEXT    NOT NULL,     -- JSON
        version INTEGER NOT NULL
    ) WITHOUT ROWID;
    -- Each entry as `{"v": 1, "value": …}`, the format of stored state (junction_flow::stored).
    INSERT INTO shared_state (key, value, version)
        SELECT 'round_robin/' || j.key, json_object('v', 1, 'value', j.value), 1
        FROM engine_state, json_each(engine_state.value, '$.round_robin') AS j
        WHERE engine_state.key = 'globals' AND json_valid(engine_state.value)
        UNION ALL
        SELECT 'company/' || j.key, json_object('v', 1, 'value', json(j.value)), 1
        FROM engine_state, json_each(engine_state.value, '$.companies') AS j
        WHERE engine_state.key = 'globals' AND json_valid(engine_state.value);
    DROP TABLE engine_state;
    "#,
    // 10: the execution log listed by workflow, newest first, without walking every run (the
    // console's and the admin API's runs filtered by workflow).
    r#"
    CREATE INDEX runs_by_workflow ON runs (workflow, planned_ms);
    "#,
    // 11: messages held back by a frequency cap, listed like dead letters.
    r#"
    CREATE INDEX actions_capped ON actions (updated_ms) WHERE status = 'capped';
    "#,
    // 12: three lanes (0 urgent, 1 live, 2 backfill): a user's head row carries the lane of
    // the most pressing action they have pending, and delivery serves users in lane order.
    r#"
    DROP INDEX user_heads_order;
    ALTER TABLE user_heads RENAME COLUMN urgent TO lane;
    UPDATE user_heads SET lane = 1 - lane;
    CREATE INDEX user_heads_order ON user_heads (lane, position);
    CREATE INDEX actions_pending_live ON actions (identity) WHERE status = 'pending' AND lane = 1;
    "#,
];

/// Brings the database up to the latest schema, one transaction per step.
pub fn migrate(conn: &mut Connection) -> rusqlite::Result<()> {
    let current: i64 = conn.query_row("PRAGMA user_version", [], |row| row.get(0))?;
    for (index, sql) in MIGRATIONS
        .iter()
        .enumerate()
        .skip(usize::try_from(current).unwrap_or(0))
    {
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        // Another process may have migrated while this one waited for the write lock.
        let now: i64 = tx.query_row("PRAGMA user_version", [], |row| row.get(0))?;
        if now > index as i64 {
            continue;
        }
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", index as i64 + 1)?;
        tx.commit()?;
    }
    Ok(())
}

/// Pragmas for the one connection that writes: WAL so readers never block it, and FULL
/// synchronous so that a commit is on disk before anyone is told it happened.
pub fn configure_writer(conn: &Connection) -> rusqlite::Result<()> {
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "busy_timeout", 5_000)?;
    conn.pragma_update(None, "journal_size_limit", 64 * 1024 * 1024)?;
    // SQLite's own checkpoint every 1000 pages, inside the writer. Measured with the load
    // harness against larger intervals and against a separate checkpoint thread: small, frequent
    // checkpoints gave the lowest tail latency (big ones stall the WAL fsync behind them) at
    // the same throughput.
    conn.pragma_update(None, "wal_autocheckpoint", 1_000)?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    tune_memory(conn)
}

/// A page cache large enough for the hot index pages. Not larger: SQLite walks the whole
/// cache when a write transaction ends, which made a 64 MiB cache cost more than it saved on
/// small, frequent commits (measured with the load harness: 16 MiB was best).
fn tune_memory(conn: &Connection) -> rusqlite::Result<()> {
    conn.pragma_update(None, "cache_size", -16 * 1024) // KiB: 16 MiB
}

/// Pragmas for reader connections: they never write.
pub fn configure_reader(conn: &Connection) -> rusqlite::Result<()> {
    conn.pragma_update(None, "busy_timeout", 5_000)?;
    conn.pragma_update(None, "query_only", "ON")?;
    tune_memory(conn)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A store from before partitions keeps its place and its shared state: the single cursor
    /// becomes partition 0's, and the globals blob becomes one versioned entry per turn and
    /// per company, in the stored-state format.
    #[test]
    fn the_planner_state_of_an_older_store_carries_over_into_partitions() {
        let mut conn = Connection::open_in_memory().unwrap();
        for (index, sql) in MIGRATIONS.iter().take(8).enumerate() {
            conn.execute_batch(sql).unwrap();
            conn.pragma_update(None, "user_version", index as i64 + 1)
                .unwrap();
        }
        conn.execute_batch(
            r#"INSERT INTO engine_state (key, value) VALUES ('cursor', '41');
               INSERT INTO engine_state (key, value) VALUES ('globals',
                 '{"v":1,"round_robin":{"lead/assign":5},"companies":{"acme":{"plan":"pro","seats":3}}}');"#,
        )
        .unwrap();
        migrate(&mut conn).unwrap();
        let cursor: (i64, i64) = conn
            .query_row("SELECT part, cursor FROM planner_partitions", [], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .unwrap();
        assert_eq!(cursor, (0, 41));
        let shared: Vec<(String, String)> = conn
            .prepare("SELECT key, value FROM shared_state ORDER BY key")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(
            shared,
            [
                (
                    "company/acme".to_owned(),
                    r#"{"v":1,"value":{"plan":"pro","seats":3}}"#.to_owned()
                ),
                (
                    "round_robin/lead/assign".to_owned(),
                    r#"{"v":1,"value":5}"#.to_owned()
                ),
            ]
        );
    }
}
