//! The SQLite schema and its migrations, numbered by `PRAGMA user_version`.

use rusqlite::Connection;

/// Each entry upgrades the schema by one version; never edit a released entry, append a new one.
const MIGRATIONS: &[&str] = &[
    // 1: the event log, the de-duplication window and the rejected-message log.
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
    CREATE INDEX events_by_identity ON events (identity, seq);
    CREATE INDEX events_by_user ON events (user_id, seq) WHERE user_id IS NOT NULL;
    CREATE INDEX events_by_anonymous ON events (anonymous_id, seq) WHERE anonymous_id IS NOT NULL;
    CREATE INDEX events_by_message_id ON events (message_id);

    -- messageIds seen per source, kept for the de-duplication window and then forgotten.
    CREATE TABLE message_ids (
        source      TEXT    NOT NULL,
        message_id  TEXT    NOT NULL,
        received_ms INTEGER NOT NULL,
        PRIMARY KEY (source, message_id)
    ) WITHOUT ROWID;
    CREATE INDEX message_ids_by_age ON message_ids (received_ms);

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
    conn.pragma_update(None, "foreign_keys", "ON")?;
    Ok(())
}

/// Pragmas for reader connections: they never write.
pub fn configure_reader(conn: &Connection) -> rusqlite::Result<()> {
    conn.pragma_update(None, "busy_timeout", 5_000)?;
    conn.pragma_update(None, "query_only", "ON")?;
    Ok(())
}
