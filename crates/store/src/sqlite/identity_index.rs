//! The indexes derived from the event log behind ingest: events by identity
//! (`identity_index`) and by messageId (`message_ids`, also the de-duplication record).
//!
//! Ingest commits only what it must before answering: the events, an append. Indexing each
//! event under its identity and its messageId would add random b-tree inserts to every commit
//! (with uuid4 messageIds, one dirty page per event). Instead the writer calls [`index_step`]
//! when it is idle (see writer.rs for when): one short transaction indexes the next events in
//! log order, sorted by key so that neighbours share pages, and advances `index_progress.upto`.
//! Readers use the indexes up to `upto` and scan the short tail after it ([`events_of`]), and
//! de-duplication keeps the tail's ids in memory (recent_ids.rs), so answers are exact however
//! far behind the indexes are. After a crash they simply continue from the last `upto`.

use rusqlite::{Connection, TransactionBehavior, params};

/// Events indexed per step: small enough that an append arriving meanwhile waits only a few
/// milliseconds.
pub(crate) const STEP: i64 = 256;
/// Events indexed per step when the indexes trail by the most allowed (then each commit pays
/// a step). With random messageIds each inserted record lands on its own page of
/// `message_ids` until a step is about as big as the b-tree, so the step is big: measured
/// over 60 s of saturated ingest with uuid4-like ids, 4,096 sustained 25,858 events/s,
/// 16,384 31,716 and 65,536 40,787 (BENCHMARKS.md). The price is a pause of up to ~0.8 s for
/// the commits waiting behind a step, and only while ingest outruns the indexes.
pub(crate) const CATCH_UP_STEP: i64 = 65_536;

/// Indexes the next `step` events after `upto` (what the writer knows the indexes cover) and
/// returns the new `upto` (unchanged when there was nothing to index).
pub(crate) fn index_step(conn: &mut Connection, upto: i64, step: i64) -> rusqlite::Result<i64> {
    // Derived data: it needs no fsync of its own. The next ingest commit (synchronous=FULL)
    // makes it durable, and after a crash before that, indexing resumes from the old `upto`.
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    let result = (|| {
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let next: Option<i64> = tx.query_row(
            "SELECT max(seq) FROM (SELECT seq FROM events WHERE seq > ?1 ORDER BY seq LIMIT ?2)",
            params![upto, step],
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
        // Only stored events are in the log (duplicates were refused), so each is the latest
        // with its id; a later one in the same step (resent after the window) comes after.
        tx.execute(
            "INSERT INTO message_ids (message_id, source, received_ms, seq)
             SELECT message_id, source, received_ms, seq FROM events
             WHERE seq > ?1 AND seq <= ?2
             ORDER BY message_id, source, seq
             ON CONFLICT (message_id, source)
             DO UPDATE SET received_ms = excluded.received_ms, seq = excluded.seq",
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

/// Indexes every event not indexed yet (before the store is copied elsewhere).
pub(crate) fn index_all(conn: &mut Connection) -> rusqlite::Result<()> {
    let (_, mut upto) = positions(conn)?;
    loop {
        let next = index_step(conn, upto, CATCH_UP_STEP)?;
        if next == upto {
            return Ok(());
        }
        upto = next;
    }
}

/// SQL condition (on `events`) selecting the events with messageId `?N`: the latest per
/// source from the index up to `upto`, and any in the tail after it.
pub(crate) fn events_with_message_id(placeholder: &str) -> String {
    format!(
        "seq IN (SELECT seq FROM message_ids WHERE message_id = {p}
                 UNION ALL
                 SELECT seq FROM events
                 WHERE seq > (SELECT upto FROM index_progress) AND message_id = {p})",
        p = placeholder
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
