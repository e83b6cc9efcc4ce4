//! The identity index, derived from the event log behind ingest.
//!
//! Ingest commits only what it must before answering (the event and its messageId record);
//! indexing each event under its identity would add a random b-tree insert to every commit.
//! Instead the writer calls [`index_step`] when it is idle (see writer.rs for when): one short
//! transaction indexes the next [`STEP`] events in log order and advances
//! `index_progress.upto`. Readers use the index up to `upto` and scan the short tail after it
//! ([`events_of`]), so answers are exact however far behind the index is. After a crash the
//! index simply continues from the last committed `upto`.

use rusqlite::{Connection, TransactionBehavior, params};

/// Events indexed per step: small enough that an append arriving meanwhile waits only a few
/// milliseconds.
pub(crate) const STEP: i64 = 256;

/// Indexes the next [`STEP`] events after `upto` (what the writer knows the index covers) and
/// returns the new `upto` (unchanged when there was nothing to index).
pub(crate) fn index_step(conn: &mut Connection, upto: i64) -> rusqlite::Result<i64> {
    // Derived data: it needs no fsync of its own. The next ingest commit (synchronous=FULL)
    // makes it durable, and after a crash before that, indexing resumes from the old `upto`.
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    let result = (|| {
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let next: Option<i64> = tx.query_row(
            "SELECT max(seq) FROM (SELECT seq FROM events WHERE seq > ?1 ORDER BY seq LIMIT ?2)",
            params![upto, STEP],
            |r| r.get(0),
        )?;
        let Some(next) = next else {
            return Ok(upto);
        };
        tx.execute(
            "INSERT OR IGNORE INTO identity_index (id, seq)
             SELECT identity, seq FROM events WHERE seq > ?1 AND seq <= ?2
             UNION ALL
             SELECT anonymous_id, seq FROM events
             WHERE seq > ?1 AND seq <= ?2 AND anonymous_id IS NOT NULL AND anonymous_id <> identity
             ORDER BY 1, 2",
            params![upto, next],
        )?;
        tx.execute("UPDATE index_progress SET upto = ?1", params![next])?;
        tx.commit()?;
        Ok(next)
    })();
    conn.pragma_update(None, "synchronous", "FULL")?;
    result
}

/// The log's last seq and the last seq the index covers.
pub(crate) fn positions(conn: &Connection) -> rusqlite::Result<(i64, i64)> {
    conn.query_row(
        "SELECT coalesce((SELECT max(seq) FROM events), 0), (SELECT upto FROM index_progress)",
        [],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )
}

/// SQL condition (on `events`) selecting every event filed under id `?N` (its identity, or its
/// anonymousId): the index up to `upto`, a scan of the tail after it.
pub(crate) fn events_of(placeholder: &str) -> String {
    format!(
        "seq IN (SELECT seq FROM identity_index WHERE id = {p}
                 UNION ALL
                 SELECT seq FROM events
                 WHERE seq > (SELECT upto FROM index_progress)
                   AND (identity = {p} OR anonymous_id = {p}))",
        p = placeholder
    )
}
