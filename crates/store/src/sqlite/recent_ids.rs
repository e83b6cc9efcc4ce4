//! The messageIds of the events the index does not cover yet, in memory.
//!
//! De-duplication needs "was (source, messageId) stored within the window?" for every event.
//! Answering from a b-tree keyed by messageId means inserting every id into it inside the
//! ingest commit: with random ids (analytics-python sends uuid4s) each insert dirties a
//! different page, and durable ingest fell from 52,074 to 15,655 events/s. So `message_ids` is
//! now derived like the identity index (identity_index.rs): filled in log order, in sorted
//! steps, when the writer is idle or the tail grows long. The tail's ids live here, so that the
//! answer stays exact: an id is a duplicate when it is here or in `message_ids` and was stored
//! within the window. After a restart the tail is read back from `events`.
//!
//! Ids are kept as 64-bit hashes (a few dozen bytes per event, bounded by
//! `writer::MAX_INDEX_LAG`); a hash that matches is confirmed against the stored event, so a
//! collision can never turn a new message into a duplicate.

use rusqlite::{Connection, OptionalExtension, params};
use std::collections::{HashMap, VecDeque};
use std::hash::{DefaultHasher, Hash, Hasher};

#[derive(Default)]
pub(crate) struct RecentIds {
    /// Hash of (source, messageId) → (received_ms, seq) of the latest event with it.
    latest: HashMap<u64, (i64, i64)>,
    /// The same entries in log order, to forget them as the index catches up.
    order: VecDeque<(i64, u64)>,
}

fn key(source: &str, message_id: &str) -> u64 {
    let mut hasher = DefaultHasher::new();
    (source, message_id).hash(&mut hasher);
    hasher.finish()
}

impl RecentIds {
    /// The ids of the events after `upto` (what the index covers), from the log.
    pub(crate) fn load(conn: &Connection, upto: i64) -> rusqlite::Result<RecentIds> {
        let mut recent = RecentIds::default();
        let mut statement = conn.prepare(
            "SELECT seq, source, message_id, received_ms FROM events WHERE seq > ?1 ORDER BY seq",
        )?;
        let mut rows = statement.query(params![upto])?;
        while let Some(row) = rows.next()? {
            let (seq, source, message_id, received): (i64, String, String, i64) =
                (row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?);
            recent.remember(&source, &message_id, received, seq);
        }
        Ok(recent)
    }

    /// When (source, messageId) was last stored among the events after `upto`, if it was.
    pub(crate) fn received(
        &self,
        conn: &Connection,
        upto: i64,
        source: &str,
        message_id: &str,
    ) -> rusqlite::Result<Option<i64>> {
        let Some(&(received, seq)) = self.latest.get(&key(source, message_id)) else {
            return Ok(None);
        };
        let stored: Option<(String, String)> = conn
            .prepare_cached("SELECT source, message_id FROM events WHERE seq = ?1")?
            .query_row(params![seq], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?;
        if stored
            .as_ref()
            .is_some_and(|(s, m)| s == source && m == message_id)
        {
            return Ok(Some(received));
        }
        // Another id with the same hash: ask the log itself.
        conn.prepare_cached(
            "SELECT max(received_ms) FROM events
             WHERE seq > ?1 AND message_id = ?2 AND source = ?3",
        )?
        .query_row(params![upto, message_id, source], |r| r.get(0))
    }

    /// Records a stored event's id (after its commit).
    pub(crate) fn remember(&mut self, source: &str, message_id: &str, received: i64, seq: i64) {
        let key = key(source, message_id);
        self.latest.insert(key, (received, seq));
        self.order.push_back((seq, key));
    }

    /// Forgets the ids of events up to `upto`, now in the index.
    pub(crate) fn forget_upto(&mut self, upto: i64) {
        while let Some(&(seq, key)) = self.order.front() {
            if seq > upto {
                break;
            }
            self.order.pop_front();
            // Keep an entry a later event with the same id has replaced.
            if self
                .latest
                .get(&key)
                .is_some_and(|&(_, latest)| latest == seq)
            {
                self.latest.remove(&key);
            }
        }
    }
}
