//! The PostgreSQL schema and its numbered migrations (`junction_schema.version`).
//!
//! The tables mirror the SQLite schema (see `sqlite/schema.rs` for what each holds); the
//! differences are PostgreSQL's types (BIGINT, BOOLEAN, identity columns) and that the event
//! log's numbering has a row of its own, `event_log_head`, whose lock orders ingest commits (see
//! `ingest.rs`). Bodies stay TEXT, not JSONB: JSONB would reorder keys and rewrite numbers, and
//! the log keeps messages exactly as they came.

use tokio_postgres::Client;

/// Each entry upgrades the schema by one version; never edit a released entry, append a new one.
const MIGRATIONS: &[&str] = &[
    // 1: everything the SQLite schema has at its version 7.
    r#"
    CREATE TABLE events (
        seq          BIGINT PRIMARY KEY,  -- arrival order, never reused (see event_log_head)
        source       TEXT   NOT NULL,
        message_id   TEXT   NOT NULL,
        type         TEXT   NOT NULL,
        identity     TEXT   NOT NULL,     -- userId, else anonymousId
        user_id      TEXT,
        anonymous_id TEXT,
        event        TEXT,
        timestamp_ms BIGINT NOT NULL,
        received_ms  BIGINT NOT NULL,
        body         TEXT   NOT NULL
    );
    CREATE INDEX events_by_identity ON events (identity, seq);
    CREATE INDEX events_by_anonymous_id ON events (anonymous_id, seq)
        WHERE anonymous_id IS NOT NULL;
    -- No index on type: each index is one more b-tree insert per event inside the ingest
    -- commit, and listing by type walks the log newest first (as on SQLite).

    -- The next event number. Ingest locks this row, numbers its events and commits: so events
    -- become visible in number order and a reader following seq never skips a late commit.
    CREATE TABLE event_log_head (
        one      BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (one),
        next_seq BIGINT  NOT NULL
    );
    INSERT INTO event_log_head (next_seq) VALUES (1);

    CREATE TABLE message_ids (
        message_id  TEXT   NOT NULL,
        source      TEXT   NOT NULL,
        received_ms BIGINT NOT NULL,
        seq         BIGINT NOT NULL,
        PRIMARY KEY (message_id, source)
    );

    CREATE TABLE rejected (
        id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        source      TEXT   NOT NULL,
        received_ms BIGINT NOT NULL,
        position    BIGINT NOT NULL,
        type        TEXT,
        message_id  TEXT,
        code        TEXT   NOT NULL,
        field       TEXT   NOT NULL,
        reason      TEXT   NOT NULL,
        body        TEXT   NOT NULL
    );

    CREATE TABLE identity_map (
        workspace  TEXT   NOT NULL,
        kind       TEXT   NOT NULL,
        value      TEXT   NOT NULL,
        contact_id TEXT   NOT NULL,
        updated_ms BIGINT NOT NULL,
        PRIMARY KEY (workspace, kind, value)
    );
    CREATE INDEX identity_map_by_contact ON identity_map (workspace, contact_id);

    CREATE TABLE profiles (
        identity TEXT PRIMARY KEY,
        body     TEXT NOT NULL
    );
    CREATE TABLE engine_state (
        key   TEXT PRIMARY KEY,  -- cursor | globals
        value TEXT NOT NULL
    );

    CREATE TABLE actions (
        position         BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        id               TEXT    NOT NULL UNIQUE,
        identity         TEXT    NOT NULL,
        run              TEXT    NOT NULL,
        seq              BIGINT  NOT NULL,
        standby_for      TEXT,
        status           TEXT    NOT NULL,
        attempts         BIGINT  NOT NULL DEFAULT 0,
        next_at_ms       BIGINT  NOT NULL DEFAULT 0,
        body             TEXT    NOT NULL,
        result           TEXT,
        created_ms       BIGINT  NOT NULL,
        updated_ms       BIGINT  NOT NULL,
        lane             BIGINT  NOT NULL DEFAULT 1,
        first_attempt_ms BIGINT,
        started_ms       BIGINT,
        error_code       TEXT
    );
    CREATE INDEX actions_by_run ON actions (run, position);
    CREATE INDEX actions_by_standby ON actions (standby_for) WHERE standby_for IS NOT NULL;
    CREATE INDEX actions_pending_by_identity ON actions (identity, position)
        WHERE status = 'pending';
    CREATE INDEX actions_pending_urgent ON actions (identity)
        WHERE status = 'pending' AND lane = 0;
    CREATE INDEX actions_failed ON actions (updated_ms) WHERE status = 'failed';
    CREATE INDEX actions_started ON actions (position) WHERE started_ms IS NOT NULL;
    CREATE INDEX actions_finished ON actions (updated_ms)
        WHERE status IN ('done', 'skipped', 'discarded', 'replayed');

    CREATE TABLE user_heads (
        identity   TEXT    PRIMARY KEY,
        position   BIGINT  NOT NULL,
        next_at_ms BIGINT  NOT NULL,
        urgent     BOOLEAN NOT NULL
    );
    CREATE INDEX user_heads_order ON user_heads (urgent DESC, position);
    CREATE INDEX user_heads_due ON user_heads (next_at_ms);
    -- Small, hot tables rewritten all the time: vacuumed after a few hundred changes, not
    -- after a fifth of the table (the default), so wake-ups do not step over dead rows.
    ALTER TABLE user_heads SET (autovacuum_vacuum_scale_factor = 0.02,
                                autovacuum_vacuum_threshold = 500);

    CREATE TABLE timers (
        id         TEXT   PRIMARY KEY,
        identity   TEXT   NOT NULL,
        fire_at_ms BIGINT NOT NULL,
        status     TEXT   NOT NULL,
        body       TEXT   NOT NULL
    );
    CREATE INDEX timers_due ON timers (fire_at_ms) WHERE status = 'pending';

    CREATE TABLE attempts (
        action_id   TEXT   NOT NULL,
        number      BIGINT NOT NULL,
        at_ms       BIGINT NOT NULL,
        duration_ms BIGINT NOT NULL,
        outcome     TEXT   NOT NULL,
        error       TEXT,
        calls       TEXT   NOT NULL,
        PRIMARY KEY (action_id, number)
    );

    CREATE TABLE runs (
        run        TEXT    PRIMARY KEY,
        seq        BIGINT  NOT NULL,
        workflow   TEXT    NOT NULL,
        identity   TEXT    NOT NULL,
        planned_ms BIGINT  NOT NULL,
        actions    BIGINT  NOT NULL,
        paused     BOOLEAN NOT NULL,
        error      TEXT
    );
    CREATE INDEX runs_by_time ON runs (planned_ms);
    CREATE INDEX runs_by_identity ON runs (identity, planned_ms);

    CREATE TABLE made_by_junction (
        kind    TEXT   NOT NULL,
        id      TEXT   NOT NULL,
        made_ms BIGINT NOT NULL,
        PRIMARY KEY (kind, id)
    );

    CREATE TABLE quarantine (
        id       BIGINT  GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        identity TEXT    NOT NULL,
        seq      BIGINT  NOT NULL,
        timer    TEXT,
        reason   TEXT    NOT NULL,
        at_ms    BIGINT  NOT NULL,
        released BOOLEAN NOT NULL DEFAULT FALSE
    );
    CREATE INDEX quarantine_by_identity ON quarantine (identity);
    CREATE INDEX quarantine_released ON quarantine (seq) WHERE released;

    -- Which node delivers to which user, until when, under which fencing token.
    CREATE TABLE delivery_claims (
        identity   TEXT   PRIMARY KEY,
        node       TEXT   NOT NULL,
        token      BIGINT NOT NULL,
        expires_ms BIGINT NOT NULL
    );
    ALTER TABLE delivery_claims SET (autovacuum_vacuum_scale_factor = 0.02,
                                     autovacuum_vacuum_threshold = 500);
    CREATE SEQUENCE claim_tokens;

    -- Intercom's rate budget per workspace and 10-second window, as handed out to nodes.
    CREATE TABLE rate_budget (
        workspace TEXT   NOT NULL,
        bucket    BIGINT NOT NULL,
        used      BIGINT NOT NULL,
        PRIMARY KEY (workspace, bucket)
    );

    -- The nodes sharing this store, as their heartbeats describe them.
    CREATE TABLE nodes (
        name       TEXT   PRIMARY KEY,
        started_ms BIGINT NOT NULL,
        seen_ms    BIGINT NOT NULL,
        expires_ms BIGINT NOT NULL
    );

    -- Named leases (the planner's), one holder at a time, under the same tokens.
    CREATE TABLE leases (
        name       TEXT   PRIMARY KEY,
        node       TEXT   NOT NULL,
        token      BIGINT NOT NULL,
        expires_ms BIGINT NOT NULL
    );
    "#,
    // 2: planning partitions (as SQLite's migration 9): events, timers and quarantine entries
    // carry their identity's partition, each partition has a cursor, and the state partitions
    // share is one versioned row per entry, `{"v": 1, "value": …}` (junction_flow::stored).
    r#"
    ALTER TABLE events ADD COLUMN part INTEGER NOT NULL DEFAULT 0;
    CREATE INDEX events_by_part ON events (part, seq);
    -- How many partitions ingest numbers events into, read under the head's lock.
    ALTER TABLE event_log_head ADD COLUMN partitions INTEGER NOT NULL DEFAULT 1;
    ALTER TABLE timers ADD COLUMN part INTEGER NOT NULL DEFAULT 0;
    DROP INDEX timers_due;
    CREATE INDEX timers_due ON timers (part, fire_at_ms) WHERE status = 'pending';
    ALTER TABLE quarantine ADD COLUMN part INTEGER NOT NULL DEFAULT 0;
    CREATE TABLE planner_partitions (
        part   INTEGER PRIMARY KEY,
        cursor BIGINT  NOT NULL
    );
    INSERT INTO planner_partitions (part, cursor)
        SELECT 0, coalesce((SELECT value::bigint FROM engine_state WHERE key = 'cursor'), 0);
    CREATE TABLE shared_state (
        key     TEXT   PRIMARY KEY COLLATE "C",  -- round_robin/WORKFLOW/STEP | company/GROUP_ID
        value   TEXT   NOT NULL,                 -- JSON
        version BIGINT NOT NULL
    );
    INSERT INTO shared_state (key, value, version)
        SELECT 'round_robin/' || j.key, jsonb_build_object('v', 1, 'value', j.value)::text, 1
        FROM engine_state, jsonb_each(engine_state.value::jsonb -> 'round_robin') AS j
        WHERE engine_state.key = 'globals'
        UNION ALL
        SELECT 'company/' || j.key, jsonb_build_object('v', 1, 'value', j.value)::text, 1
        FROM engine_state, jsonb_each(engine_state.value::jsonb -> 'companies') AS j
        WHERE engine_state.key = 'globals';
    DROP TABLE engine_state;
    "#,
    // 3: the execution log listed by workflow, newest first, without walking every run (the
    // console's and the admin API's runs filtered by workflow).
    r#"
    CREATE INDEX runs_by_workflow ON runs (workflow, planned_ms);
    "#,
    // 4: messages held back by a frequency cap, listed like dead letters.
    r#"
    CREATE INDEX actions_capped ON actions (updated_ms) WHERE status = 'capped';
    "#,
    // 5: three lanes (as SQLite's migration 12): a user's head row carries the lane of the most
    // pressing action they have pending (0 urgent, 1 live, 2 backfill).
    r#"
    DROP INDEX user_heads_order;
    ALTER TABLE user_heads RENAME COLUMN urgent TO lane;
    ALTER TABLE user_heads ALTER COLUMN lane TYPE BIGINT USING (CASE WHEN lane THEN 0 ELSE 1 END);
    CREATE INDEX user_heads_order ON user_heads (lane, position);
    CREATE INDEX actions_pending_live ON actions (identity) WHERE status = 'pending' AND lane = 1;
    "#,
];

/// The schema version this build writes.
pub const LATEST: i64 = MIGRATIONS.len() as i64;

/// Session-level advisory lock key held while migrating, so that nodes starting together
/// migrate one at a time (the others then find nothing left to do).
const MIGRATION_LOCK: i64 = 0x4a55_4e43_0001; // "JUNC" 1

/// The schema's version in this database (0 for an empty database).
pub async fn version(client: &Client) -> Result<i64, tokio_postgres::Error> {
    let exists: bool = client
        .query_one("SELECT to_regclass('junction_schema') IS NOT NULL", &[])
        .await?
        .get(0);
    if !exists {
        return Ok(0);
    }
    Ok(client
        .query_one("SELECT version FROM junction_schema", &[])
        .await?
        .get(0))
}

/// Brings the database up to [`LATEST`], one transaction per step. Returns the version found
/// before. Refuses a database written by a newer Junction.
pub async fn migrate(client: &mut Client) -> Result<i64, MigrateError> {
    client
        .execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK])
        .await?;
    let result = migrate_locked(client).await;
    let unlocked = client
        .execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK])
        .await;
    let found = result?;
    unlocked?;
    Ok(found)
}

async fn migrate_locked(client: &mut Client) -> Result<i64, MigrateError> {
    client
        .batch_execute(
            "CREATE TABLE IF NOT EXISTS junction_schema (version BIGINT NOT NULL);
             INSERT INTO junction_schema (version)
                 SELECT 0 WHERE NOT EXISTS (SELECT 1 FROM junction_schema);",
        )
        .await?;
    let found = version(client).await?;
    if found > LATEST {
        return Err(MigrateError::Newer { found });
    }
    for (index, sql) in MIGRATIONS.iter().enumerate().skip(found as usize) {
        let tx = client.transaction().await?;
        tx.batch_execute(sql).await?;
        tx.execute(
            "UPDATE junction_schema SET version = $1",
            &[&(index as i64 + 1)],
        )
        .await?;
        tx.commit().await?;
    }
    Ok(found)
}

#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    #[error(transparent)]
    Database(#[from] tokio_postgres::Error),
    #[error(
        "the database's schema is version {found}, newer than this Junction's {LATEST}: upgrade Junction"
    )]
    Newer { found: i64 },
}
