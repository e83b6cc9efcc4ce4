//! The embedded store: one SQLite file in WAL mode. Writes go through the single group-commit
//! writer thread ([`writer`]); reads use a small pool of read-only connections, which WAL lets
//! run alongside the writer (and alongside other processes, such as the `junction events` CLI).

mod identity_index;
mod outbox;
mod recent_ids;
mod schema;
mod writer;

use crate::IdentityKey;
use crate::outbox::{
    ActionOutcome, ActionRecord, Attempt, Claim, ClusterView, DeadLetterQuery, EngineCommit, Lease,
    NewAction, OutboxCounts, PartitionState, QuarantineRecord, ReleasedEntry, RunQuery, RunRecord,
    SharedEntry,
};
use crate::query::{page_size, parse_cursor};
use crate::{
    AppendBatch, AppendReceipt, Coordination, DeliveryQueue, EngineState, EventLog, EventQuery,
    IdentityMap, Inspection, Page, RateBudget, RejectedQuery, RejectedRecord, Store, StoreError,
    StoreOptions, StoredEvent,
};

impl From<rusqlite::Error> for StoreError {
    fn from(error: rusqlite::Error) -> Self {
        StoreError::Database(Box::new(error))
    }
}
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use deadpool_sqlite::{Hook, HookError, Pool, Runtime};
use rusqlite::types::Value as SqlValue;
use rusqlite::{Connection, OptionalExtension, Row, params};
use std::path::Path;
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};
use writer::{WriteCommand, Writer};

/// Appends waiting for the writer; past this, callers wait (back-pressure) instead of
/// queueing without bound.
const WRITE_QUEUE: usize = 4_096;
const READERS: usize = 4;

pub struct SqliteStore {
    commands: mpsc::Sender<WriteCommand>,
    readers: Pool,
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path`, migrates it, and starts the writer.
    pub async fn open(path: impl AsRef<Path>, options: StoreOptions) -> Result<Self, StoreError> {
        let path = path.as_ref().to_path_buf();
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| StoreError::Io {
                path: dir.display().to_string(),
                source,
            })?;
        }
        let writer_path = path.clone();
        let conn = tokio::task::spawn_blocking(move || -> Result<Connection, StoreError> {
            let mut conn = Connection::open(&writer_path)?;
            schema::configure_writer(&conn)?;
            schema::migrate(&mut conn)?;
            Ok(conn)
        })
        .await
        .map_err(|e| StoreError::Pool(e.to_string()))??;

        let (commands, receiver) = mpsc::channel(WRITE_QUEUE);
        let writer = Writer::new(conn, options.dedupe_window)?;
        std::thread::Builder::new()
            .name("junction-writer".into())
            .spawn(move || writer.run(receiver))
            .map_err(|source| StoreError::Io {
                path: path.display().to_string(),
                source,
            })?;

        let readers = deadpool_sqlite::Config::new(&path)
            .builder(Runtime::Tokio1)
            .map_err(|e| StoreError::Pool(e.to_string()))?
            .max_size(READERS)
            .post_create(Hook::async_fn(|conn, _| {
                Box::pin(async move {
                    conn.interact(|c: &mut Connection| schema::configure_reader(c))
                        .await
                        .map_err(|e| HookError::message(e.to_string()))?
                        .map_err(HookError::Backend)
                })
            }))
            .build()
            .map_err(|e| StoreError::Pool(e.to_string()))?;
        Ok(SqliteStore { commands, readers })
    }

    /// Runs a small write on the writer thread, in order with appends, and waits for its
    /// durable commit.
    async fn write(&self, job: writer::Job) -> Result<(), StoreError> {
        self.write_job(job, true).await
    }

    /// Like [`Self::write`] for coordination rows (claims, leases, heartbeats, the rate
    /// budget), committed without an fsync of their own. A crash may lose the last of them,
    /// which is harmless on SQLite: one process uses the file, and a restarted one gives up
    /// its old claims and takes its lease again anyway. Saves an fsync per user delivered.
    async fn write_transient(&self, job: writer::Job) -> Result<(), StoreError> {
        self.write_job(job, false).await
    }

    async fn write_job(&self, job: writer::Job, durable: bool) -> Result<(), StoreError> {
        let started = std::time::Instant::now();
        let (reply, done) = oneshot::channel();
        self.commands
            .send(WriteCommand::Job {
                job,
                durable,
                reply,
            })
            .await
            .map_err(|_| StoreError::Closed)?;
        let result = done.await.map_err(|_| StoreError::Closed)?;
        // Queueing behind other writes included: what a caller waits for.
        metrics::histogram!("junction_store_write_seconds", "kind" => if durable { "job" } else { "transient" })
            .record(started.elapsed().as_secs_f64());
        result
    }

    async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let conn = self
            .readers
            .get()
            .await
            .map_err(|e| StoreError::Pool(e.to_string()))?;
        conn.interact(f)
            .await
            .map_err(|e| StoreError::Pool(e.to_string()))?
    }
}

/// Migrates a database file (see [`crate::migrate`]): the versions found and left.
pub(crate) fn schema_migrate(conn: &mut Connection) -> Result<(i64, i64), StoreError> {
    let version = |conn: &Connection| -> rusqlite::Result<i64> {
        conn.query_row("PRAGMA user_version", [], |row| row.get(0))
    };
    let found = version(conn)?;
    schema::configure_writer(conn)?;
    schema::migrate(conn)?;
    Ok((found, version(conn)?))
}

/// Brings the derived indexes (identity, messageId) up to the end of the log: a store about to
/// be copied elsewhere takes them complete.
pub(crate) fn index_all(path: &str) -> Result<(), StoreError> {
    let mut conn = Connection::open(path)?;
    schema::configure_writer(&conn)?;
    Ok(identity_index::index_all(&mut conn)?)
}

const EVENT_COLUMNS: &str = "seq, source, message_id, type, identity, user_id, anonymous_id, \
                             event, timestamp_ms, received_ms, body";

fn event_from_row(row: &Row<'_>) -> rusqlite::Result<StoredEvent> {
    let body: String = row.get(10)?;
    Ok(StoredEvent {
        seq: row.get(0)?,
        source: row.get(1)?,
        message_id: row.get(2)?,
        kind: row.get(3)?,
        identity: row.get(4)?,
        user_id: row.get(5)?,
        anonymous_id: row.get(6)?,
        event: row.get(7)?,
        timestamp: from_millis(row.get(8)?),
        received_at: from_millis(row.get(9)?),
        body: serde_json::from_str(&body).map_err(|e| {
            rusqlite::Error::FromSqlConversionFailure(10, rusqlite::types::Type::Text, Box::new(e))
        })?,
    })
}

fn rejected_from_row(row: &Row<'_>) -> rusqlite::Result<RejectedRecord> {
    Ok(RejectedRecord {
        id: row.get(0)?,
        source: row.get(1)?,
        received_at: from_millis(row.get(2)?),
        index: row.get(3)?,
        kind: row.get(4)?,
        message_id: row.get(5)?,
        code: row.get(6)?,
        field: row.get(7)?,
        reason: row.get(8)?,
        body: row.get(9)?,
    })
}

fn from_millis(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms).unwrap_or_default()
}

#[async_trait]
impl EventLog for SqliteStore {
    async fn append(&self, batch: AppendBatch) -> Result<AppendReceipt, StoreError> {
        let started = std::time::Instant::now();
        let (reply, receipt) = oneshot::channel();
        self.commands
            .send(WriteCommand::Append { batch, reply })
            .await
            .map_err(|_| StoreError::Closed)?;
        let receipt = receipt.await.map_err(|_| StoreError::Closed)?;
        metrics::histogram!("junction_store_write_seconds", "kind" => "append")
            .record(started.elapsed().as_secs_f64());
        receipt
    }

    async fn events(&self, query: EventQuery) -> Result<Page<StoredEvent>, StoreError> {
        let before = parse_cursor(query.cursor.as_deref()).map_err(StoreError::InvalidQuery)?;
        let limit = page_size(query.limit).map_err(StoreError::InvalidQuery)?;
        let mut sql = format!("SELECT {EVENT_COLUMNS} FROM events WHERE 1 = 1");
        let mut args: Vec<SqlValue> = Vec::new();
        // A type alone has no index: search a bounded span of the log per page.
        let searched_to = if query.by_type_alone() {
            let top = match before {
                Some(before) => before,
                None => {
                    self.read(|conn| {
                        Ok(conn.query_row(
                            "SELECT coalesce(max(seq), 0) + 1 FROM events",
                            [],
                            |r| r.get::<_, i64>(0),
                        )?)
                    })
                    .await?
                }
            };
            Some(crate::query::type_search_floor(top))
        } else {
            None
        };
        // Each filter is written so that it can use an index (see schema.rs).
        let filters: [(Option<String>, fn(&str) -> String); 4] = [
            (query.kind, |p| format!("type = {p}")),
            (query.user_id, |p| {
                format!("{} AND user_id = {p}", identity_index::events_of(p))
            }),
            (query.anonymous_id, |p| {
                format!("{} AND anonymous_id = {p}", identity_index::events_of(p))
            }),
            (query.message_id, |p| {
                identity_index::events_with_message_id(p)
            }),
        ];
        for (value, condition) in filters {
            if let Some(value) = value {
                args.push(SqlValue::Text(value));
                sql.push_str(" AND ");
                sql.push_str(&condition(&format!("?{}", args.len())));
            }
        }
        if let Some(before) = before {
            args.push(SqlValue::Integer(before));
            sql.push_str(&format!(" AND seq < ?{}", args.len()));
        }
        if let Some(searched_to) = searched_to {
            args.push(SqlValue::Integer(searched_to));
            sql.push_str(&format!(" AND seq >= ?{}", args.len()));
        }
        sql.push_str(&format!(" ORDER BY seq DESC LIMIT {}", limit + 1));
        let rows = self
            .read(move |conn| {
                let mut statement = conn.prepare_cached(&sql)?;
                let rows = statement
                    .query_map(rusqlite::params_from_iter(args), event_from_row)?
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(rows)
            })
            .await?;
        Ok(Page::from_search(rows, limit, |e| e.seq, searched_to))
    }

    async fn event(&self, seq: i64) -> Result<Option<StoredEvent>, StoreError> {
        self.read(move |conn| {
            let mut statement = conn.prepare_cached(&format!(
                "SELECT {EVENT_COLUMNS} FROM events WHERE seq = ?1"
            ))?;
            let mut rows = statement.query_map(params![seq], event_from_row)?;
            Ok(rows.next().transpose()?)
        })
        .await
    }

    async fn identity_events(
        &self,
        identity: &str,
        after_seq: i64,
        limit: usize,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        let identity = identity.to_owned();
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.read(move |conn| {
            let mut statement = conn.prepare_cached(&format!(
                "SELECT {EVENT_COLUMNS} FROM events WHERE {} AND identity = ?1 AND seq > ?2
                 ORDER BY seq LIMIT ?3",
                identity_index::events_of("?1")
            ))?;
            let rows = statement
                .query_map(params![identity, after_seq, limit], event_from_row)?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(rows)
        })
        .await
    }

    async fn events_after(
        &self,
        partition: u32,
        after_seq: i64,
        limit: usize,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.read(move |conn| {
            let mut statement = conn.prepare_cached(&format!(
                "SELECT {EVENT_COLUMNS} FROM events WHERE part = ?1 AND seq > ?2
                 ORDER BY seq LIMIT ?3"
            ))?;
            let rows = statement
                .query_map(params![partition, after_seq, limit], event_from_row)?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(rows)
        })
        .await
    }

    async fn rejected(&self, query: RejectedQuery) -> Result<Page<RejectedRecord>, StoreError> {
        let before = parse_cursor(query.cursor.as_deref())
            .map_err(StoreError::InvalidQuery)?
            .unwrap_or(i64::MAX);
        let limit = page_size(query.limit).map_err(StoreError::InvalidQuery)?;
        let rows = self
            .read(move |conn| {
                let mut statement = conn.prepare_cached(
                    "SELECT id, source, received_ms, position, type, message_id, code, field,
                            reason, body
                     FROM rejected WHERE id < ?1 ORDER BY id DESC LIMIT ?2",
                )?;
                let rows = statement
                    .query_map(params![before, (limit + 1) as i64], rejected_from_row)?
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(rows)
            })
            .await?;
        Ok(Page::from_rows(rows, limit, |r| r.id))
    }
}

#[async_trait]
impl EngineState for SqliteStore {
    async fn partitions(&self) -> Result<u32, StoreError> {
        self.read(|conn| {
            Ok(conn
                .prepare_cached("SELECT count(*) FROM planner_partitions")?
                .query_row([], |r| r.get(0))?)
        })
        .await
    }

    async fn cursor(&self, partition: u32) -> Result<i64, StoreError> {
        self.read(move |conn| {
            conn.prepare_cached("SELECT cursor FROM planner_partitions WHERE part = ?1")?
                .query_row(params![partition], |r| r.get(0))
                .optional()?
                .ok_or_else(|| {
                    StoreError::Unreadable(format!("planning partition {partition} is missing"))
                })
        })
        .await
    }

    async fn partition_states(&self) -> Result<Vec<PartitionState>, StoreError> {
        self.read(|conn| {
            let mut statement = conn.prepare_cached(
                "SELECT p.part, p.cursor,
                        (SELECT count(*) FROM events e WHERE e.part = p.part AND e.seq > p.cursor)
                 FROM planner_partitions p ORDER BY p.part",
            )?;
            let rows = statement
                .query_map([], |r| {
                    Ok(PartitionState {
                        partition: r.get(0)?,
                        cursor: r.get(1)?,
                        behind: r.get(2)?,
                    })
                })?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(rows)
        })
        .await
    }

    async fn shared_state(
        &self,
        keys: Vec<String>,
        prefixes: Vec<String>,
    ) -> Result<std::collections::HashMap<String, SharedEntry>, StoreError> {
        self.read(move |conn| {
            let mut found = std::collections::HashMap::new();
            let entry = |r: &Row<'_>| -> rusqlite::Result<(String, SharedEntry)> {
                Ok((
                    r.get(0)?,
                    SharedEntry {
                        value: r.get(1)?,
                        version: r.get(2)?,
                    },
                ))
            };
            let mut by_key =
                conn.prepare_cached("SELECT key, value, version FROM shared_state WHERE key = ?1")?;
            for key in keys {
                if let Some((key, value)) = by_key.query_row(params![key], entry).optional()? {
                    found.insert(key, value);
                }
            }
            // Keys sort as text: a prefix's entries lie between it and the prefix followed by
            // the highest character.
            let mut by_prefix = conn.prepare_cached(
                "SELECT key, value, version FROM shared_state WHERE key >= ?1 AND key < ?2",
            )?;
            for prefix in prefixes {
                let end = format!("{prefix}\u{10ffff}");
                for row in by_prefix.query_map(params![prefix, end], entry)? {
                    let (key, value) = row?;
                    found.insert(key, value);
                }
            }
            Ok(found)
        })
        .await
    }

    async fn profiles(
        &self,
        identities: Vec<String>,
    ) -> Result<std::collections::HashMap<String, String>, StoreError> {
        self.read(move |conn| {
            let mut statement =
                conn.prepare_cached("SELECT body FROM profiles WHERE identity = ?1")?;
            let mut found = std::collections::HashMap::new();
            for identity in identities {
                let mut rows = statement.query_map(params![identity], |r| r.get::<_, String>(0))?;
                if let Some(body) = rows.next().transpose()? {
                    found.insert(identity, body);
                }
            }
            Ok(found)
        })
        .await
    }

    async fn engine_commit(&self, commit: EngineCommit) -> Result<(), StoreError> {
        self.write(Box::new(move |tx| {
            if let Some(lease) = &commit.lease {
                outbox::check_lease(tx, lease)?;
            }
            outbox::write_shared(tx, &commit.shared)?;
            Ok(outbox::engine_commit(tx, &commit)?)
        }))
        .await
    }

    async fn due_timers(
        &self,
        partition: u32,
        now_ms: i64,
        limit: usize,
    ) -> Result<Vec<(String, String)>, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.read(move |conn| {
            let mut statement = conn.prepare_cached(
                "SELECT id, body FROM timers
                 WHERE status = 'pending' AND part = ?1 AND fire_at_ms <= ?2
                 ORDER BY fire_at_ms LIMIT ?3",
            )?;
            let rows = statement
                .query_map(params![partition, now_ms, limit], |r| {
                    Ok((r.get(0)?, r.get(1)?))
                })?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(rows)
        })
        .await
    }

    async fn next_timer_ms(&self, partition: u32) -> Result<Option<i64>, StoreError> {
        self.read(move |conn| {
            Ok(conn
                .prepare_cached(
                    "SELECT min(fire_at_ms) FROM timers WHERE status = 'pending' AND part = ?1",
                )?
                .query_row(params![partition], |r| r.get(0))?)
        })
        .await
    }

    async fn repartition(
        &self,
        partitions: u32,
        node: &str,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        let node = node.to_owned();
        self.write(Box::new(move |tx| {
            outbox::repartition(tx, partitions, &node, now_ms)
        }))
        .await
    }

    async fn quarantine_released(
        &self,
        partition: u32,
        limit: usize,
    ) -> Result<Vec<ReleasedEntry>, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.read(move |conn| {
            let mut statement = conn.prepare_cached(
                "SELECT id, identity, seq, timer FROM quarantine WHERE released = 1 AND part = ?1
                 ORDER BY seq, id LIMIT ?2",
            )?;
            let rows = statement
                .query_map(params![partition, limit], |r| {
                    Ok(ReleasedEntry {
                        id: r.get(0)?,
                        identity: r.get(1)?,
                        seq: r.get(2)?,
                        timer: r.get(3)?,
                    })
                })?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(rows)
        })
        .await
    }
}

#[async_trait]
impl DeliveryQueue for SqliteStore {
    async fn ready_heads(
        &self,
        now_ms: i64,
        limit: usize,
    ) -> Result<Vec<ActionRecord>, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.read(move |conn| Ok(outbox::ready_heads(conn, now_ms, limit)?))
            .await
    }

    async fn next_due_ms(&self) -> Result<Option<i64>, StoreError> {
        self.read(|conn| Ok(outbox::next_due_ms(conn)?)).await
    }

    async fn pending_of(
        &self,
        identity: &str,
        limit: usize,
    ) -> Result<Vec<ActionRecord>, StoreError> {
        let (identity, limit) = (
            identity.to_owned(),
            i64::try_from(limit).unwrap_or(i64::MAX),
        );
        self.read(move |conn| {
            let mut statement = conn.prepare_cached(&format!(
                "SELECT {} FROM actions WHERE identity = ?1 AND status = 'pending'
                 ORDER BY position LIMIT ?2",
                outbox::ACTION_COLUMNS
            ))?;
            let rows = statement
                .query_map(params![identity, limit], outbox::action_from_row)?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(rows)
        })
        .await
    }

    async fn claim_users_in(
        &self,
        node: &str,
        now_ms: i64,
        lease_ms: i64,
        limit: usize,
        lanes: std::ops::RangeInclusive<i64>,
    ) -> Result<Vec<Claim>, StoreError> {
        let node = node.to_owned();
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let (reply, granted) = oneshot::channel();
        self.write_transient(Box::new(move |tx| {
            let _ = reply.send(outbox::claim_users(
                tx, &node, now_ms, lease_ms, limit, lanes,
            )?);
            Ok(())
        }))
        .await?;
        granted.await.map_err(|_| StoreError::Closed)
    }

    async fn renew_claims(
        &self,
        claims: Vec<Claim>,
        now_ms: i64,
        lease_ms: i64,
    ) -> Result<Vec<Claim>, StoreError> {
        let (reply, renewed) = oneshot::channel();
        self.write_transient(Box::new(move |tx| {
            let mut held = Vec::with_capacity(claims.len());
            let mut renew = tx.prepare_cached(
                "UPDATE delivery_claims SET expires_ms = ?3 WHERE identity = ?1 AND token = ?2",
            )?;
            for claim in claims {
                if renew.execute(params![claim.identity, claim.token, now_ms + lease_ms])? == 1 {
                    held.push(Claim {
                        expires_ms: now_ms + lease_ms,
                        ..claim
                    });
                }
            }
            let _ = reply.send(held);
            Ok(())
        }))
        .await?;
        renewed.await.map_err(|_| StoreError::Closed)
    }

    async fn release_claim(&self, claim: &Claim) -> Result<(), StoreError> {
        let claim = claim.clone();
        self.write_transient(Box::new(move |tx| {
            tx.execute(
                "DELETE FROM delivery_claims WHERE identity = ?1 AND token = ?2",
                params![claim.identity, claim.token],
            )?;
            Ok(())
        }))
        .await
    }

    async fn release_claims_of(&self, node: &str) -> Result<usize, StoreError> {
        let node = node.to_owned();
        let (reply, count) = oneshot::channel();
        self.write_transient(Box::new(move |tx| {
            let _ = reply
                .send(tx.execute("DELETE FROM delivery_claims WHERE node = ?1", params![node])?);
            Ok(())
        }))
        .await?;
        count.await.map_err(|_| StoreError::Closed)
    }

    async fn mark_started(&self, claim: &Claim, id: &str, now_ms: i64) -> Result<(), StoreError> {
        let (claim, id) = (claim.clone(), id.to_owned());
        self.write(Box::new(move |tx| {
            outbox::check_claim(tx, &claim, Some(now_ms))?;
            tx.execute(
                "UPDATE actions SET started_ms = ?2, first_attempt_ms = coalesce(first_attempt_ms, ?2)
                 WHERE id = ?1",
                params![id, now_ms],
            )?;
            Ok(())
        }))
        .await
    }

    async fn action_outcomes(
        &self,
        claim: &Claim,
        outcomes: Vec<ActionOutcome>,
    ) -> Result<(), StoreError> {
        let claim = claim.clone();
        self.write(Box::new(move |tx| {
            outbox::check_claim(tx, &claim, None)?;
            Ok(outbox::action_outcomes(tx, &outcomes)?)
        }))
        .await
    }

    async fn cleanup(&self, before_ms: i64) -> Result<usize, StoreError> {
        let (reply, count) = tokio::sync::oneshot::channel();
        self.write(Box::new(move |tx| {
            let _ = reply.send(outbox::cleanup(tx, before_ms)?);
            Ok(())
        }))
        .await?;
        count.await.map_err(|_| StoreError::Closed)
    }

    async fn outbox_counts(&self) -> Result<OutboxCounts, StoreError> {
        self.read(|conn| Ok(outbox::outbox_counts(conn)?)).await
    }

    async fn backlog(&self) -> Result<crate::Backlog, StoreError> {
        self.read(|conn| Ok(outbox::backlog(conn)?)).await
    }
}

#[async_trait]
impl IdentityMap for SqliteStore {
    async fn identity_lookup(
        &self,
        workspace: &str,
        key: &IdentityKey,
    ) -> Result<Option<String>, StoreError> {
        let (workspace, kind, value) = (workspace.to_owned(), key.kind(), key.value());
        self.read(move |conn| {
            let mut statement = conn.prepare_cached(
                "SELECT contact_id FROM identity_map WHERE workspace = ?1 AND kind = ?2 AND value = ?3",
            )?;
            let mut rows = statement.query_map(params![workspace, kind, value], |r| r.get(0))?;
            Ok(rows.next().transpose()?)
        })
        .await
    }

    async fn identity_remember(
        &self,
        workspace: &str,
        keys: &[IdentityKey],
        contact_id: &str,
    ) -> Result<(), StoreError> {
        let workspace = workspace.to_owned();
        let contact_id = contact_id.to_owned();
        let rows: Vec<(&'static str, String)> =
            keys.iter().map(|k| (k.kind(), k.value())).collect();
        self.write(Box::new(move |tx| {
            let now = chrono::Utc::now().timestamp_millis();
            let mut upsert = tx.prepare_cached(
                "INSERT INTO identity_map (workspace, kind, value, contact_id, updated_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (workspace, kind, value)
                 DO UPDATE SET contact_id = excluded.contact_id, updated_ms = excluded.updated_ms",
            )?;
            for (kind, value) in &rows {
                upsert.execute(params![workspace, kind, value, contact_id, now])?;
            }
            Ok(())
        }))
        .await
    }

    async fn identity_forget(&self, workspace: &str, contact_id: &str) -> Result<(), StoreError> {
        let (workspace, contact_id) = (workspace.to_owned(), contact_id.to_owned());
        self.write(Box::new(move |tx| {
            tx.execute(
                "DELETE FROM identity_map WHERE workspace = ?1 AND contact_id = ?2",
                params![workspace, contact_id],
            )?;
            Ok(())
        }))
        .await
    }

    async fn identity_entries(
        &self,
        search: &crate::IdentitySearch,
    ) -> Result<Vec<crate::IdentityEntry>, StoreError> {
        let search = search.clone();
        self.read(move |conn| {
            let entry = |r: &rusqlite::Row<'_>| {
                Ok(crate::IdentityEntry {
                    workspace: r.get(0)?,
                    kind: r.get(1)?,
                    value: r.get(2)?,
                    contact_id: r.get(3)?,
                })
            };
            let entries = match search {
                crate::IdentitySearch::Key(key) => conn
                    .prepare_cached(
                        "SELECT m.workspace, m.kind, m.value, m.contact_id
                         FROM identity_map AS k
                         JOIN identity_map AS m
                           ON m.workspace = k.workspace AND m.contact_id = k.contact_id
                         WHERE k.kind = ?1 AND k.value = ?2
                         ORDER BY m.workspace, m.contact_id, m.kind, m.value",
                    )?
                    .query_map(params![key.kind(), key.value()], entry)?
                    .collect::<rusqlite::Result<Vec<_>>>()?,
                crate::IdentitySearch::Contact(id) => conn
                    .prepare_cached(
                        "SELECT workspace, kind, value, contact_id FROM identity_map
                         WHERE contact_id = ?1 ORDER BY workspace, kind, value",
                    )?
                    .query_map(params![id], entry)?
                    .collect::<rusqlite::Result<Vec<_>>>()?,
            };
            Ok(entries)
        })
        .await
    }

    async fn identity_unlink(&self, workspace: &str, key: &IdentityKey) -> Result<(), StoreError> {
        let (workspace, kind, value) = (workspace.to_owned(), key.kind(), key.value());
        self.write(Box::new(move |tx| {
            tx.execute(
                "DELETE FROM identity_map WHERE workspace = ?1 AND kind = ?2 AND value = ?3",
                params![workspace, kind, value],
            )?;
            Ok(())
        }))
        .await
    }

    async fn remember_made(&self, kind: &str, id: &str) -> Result<(), StoreError> {
        let (kind, id) = (kind.to_owned(), id.to_owned());
        self.write(Box::new(move |tx| {
            tx.execute(
                "INSERT OR IGNORE INTO made_by_junction (kind, id, made_ms) VALUES (?1, ?2, ?3)",
                params![kind, id, chrono::Utc::now().timestamp_millis()],
            )?;
            Ok(())
        }))
        .await
    }

    async fn made_by_junction(
        &self,
        kind: &str,
        ids: Vec<String>,
    ) -> Result<std::collections::HashSet<String>, StoreError> {
        let kind = kind.to_owned();
        self.read(move |conn| {
            let mut statement =
                conn.prepare_cached("SELECT 1 FROM made_by_junction WHERE kind = ?1 AND id = ?2")?;
            let mut made = std::collections::HashSet::new();
            for id in ids {
                if statement.exists(params![kind, id])? {
                    made.insert(id);
                }
            }
            Ok(made)
        })
        .await
    }
}

#[async_trait]
impl Coordination for SqliteStore {
    async fn acquire_lease(
        &self,
        name: &str,
        node: &str,
        now_ms: i64,
        lease_ms: i64,
    ) -> Result<Option<Lease>, StoreError> {
        let (name, node) = (name.to_owned(), node.to_owned());
        let (reply, granted) = oneshot::channel();
        self.write_transient(Box::new(move |tx| {
            let _ = reply.send(outbox::acquire_lease(tx, &name, &node, now_ms, lease_ms)?);
            Ok(())
        }))
        .await?;
        granted.await.map_err(|_| StoreError::Closed)
    }

    async fn renew_lease(
        &self,
        lease: &Lease,
        now_ms: i64,
        lease_ms: i64,
    ) -> Result<Option<Lease>, StoreError> {
        let lease = lease.clone();
        let (reply, renewed) = oneshot::channel();
        self.write_transient(Box::new(move |tx| {
            let n = tx.execute(
                "UPDATE leases SET expires_ms = ?3 WHERE name = ?1 AND token = ?2",
                params![lease.name, lease.token, now_ms + lease_ms],
            )?;
            let _ = reply.send((n == 1).then(|| Lease {
                expires_ms: now_ms + lease_ms,
                ..lease
            }));
            Ok(())
        }))
        .await?;
        renewed.await.map_err(|_| StoreError::Closed)
    }

    async fn release_lease(&self, lease: &Lease) -> Result<(), StoreError> {
        let lease = lease.clone();
        self.write_transient(Box::new(move |tx| {
            tx.execute(
                "DELETE FROM leases WHERE name = ?1 AND token = ?2",
                params![lease.name, lease.token],
            )?;
            Ok(())
        }))
        .await
    }

    async fn ring_on_changes(
        &self,
        _events_arrived: Arc<tokio::sync::Notify>,
        _actions_planned: Arc<tokio::sync::Notify>,
    ) -> Result<(), StoreError> {
        // One process per SQLite file: ingest and the engine ring the bells themselves.
        Ok(())
    }

    async fn heartbeat(
        &self,
        node: &str,
        started_ms: i64,
        now_ms: i64,
        expires_ms: i64,
    ) -> Result<(), StoreError> {
        let node = node.to_owned();
        self.write_transient(Box::new(move |tx| {
            tx.prepare_cached(
                "INSERT INTO nodes (name, started_ms, seen_ms, expires_ms)
                 VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (name) DO UPDATE SET started_ms = excluded.started_ms,
                                                  seen_ms = excluded.seen_ms,
                                                  expires_ms = excluded.expires_ms",
            )?
            .execute(params![node, started_ms, now_ms, expires_ms])?;
            Ok(())
        }))
        .await
    }

    async fn cluster(&self) -> Result<ClusterView, StoreError> {
        self.read(|conn| Ok(outbox::cluster(conn)?)).await
    }
}

#[async_trait]
impl RateBudget for SqliteStore {
    async fn take_budget(
        &self,
        workspace: &str,
        bucket: i64,
        limit: i64,
        wanted: i64,
    ) -> Result<i64, StoreError> {
        let workspace = workspace.to_owned();
        let (reply, granted) = oneshot::channel();
        self.write_transient(Box::new(move |tx| {
            let used: i64 = tx
                .prepare_cached(
                    "SELECT used FROM rate_budget WHERE workspace = ?1 AND bucket = ?2",
                )?
                .query_row(params![workspace, bucket], |r| r.get(0))
                .optional()?
                .unwrap_or(0);
            let grant = wanted.min(limit - used).max(0);
            tx.prepare_cached(
                "INSERT INTO rate_budget (workspace, bucket, used) VALUES (?1, ?2, ?3)
                 ON CONFLICT (workspace, bucket) DO UPDATE SET used = excluded.used",
            )?
            .execute(params![workspace, bucket, used + grant])?;
            // Windows long gone are of no use to anyone.
            tx.prepare_cached("DELETE FROM rate_budget WHERE workspace = ?1 AND bucket < ?2")?
                .execute(params![workspace, bucket - 6])?;
            let _ = reply.send(grant);
            Ok(())
        }))
        .await?;
        granted.await.map_err(|_| StoreError::Closed)
    }

    async fn budget_taken(&self, bucket: i64) -> Result<i64, StoreError> {
        self.read(move |conn| {
            Ok(conn
                .prepare_cached("SELECT coalesce(sum(used), 0) FROM rate_budget WHERE bucket = ?1")?
                .query_row(params![bucket], |r| r.get(0))?)
        })
        .await
    }
}

#[async_trait]
impl Inspection for SqliteStore {
    async fn action(&self, id: &str) -> Result<Option<ActionRecord>, StoreError> {
        let id = id.to_owned();
        self.read(move |conn| Ok(outbox::action(conn, &id)?)).await
    }

    async fn attempts(&self, id: &str) -> Result<Vec<Attempt>, StoreError> {
        let id = id.to_owned();
        self.read(move |conn| Ok(outbox::attempts(conn, &id)?))
            .await
    }

    async fn dead_letters(&self, query: DeadLetterQuery) -> Result<Vec<ActionRecord>, StoreError> {
        self.read(move |conn| Ok(outbox::dead_letters(conn, &query)?))
            .await
    }

    async fn discard(&self, ids: Vec<String>) -> Result<usize, StoreError> {
        let (reply, count) = tokio::sync::oneshot::channel();
        self.write(Box::new(move |tx| {
            let now = chrono::Utc::now().timestamp_millis();
            let mut n = 0;
            for id in &ids {
                n += tx.execute(
                    "UPDATE actions SET status = 'discarded', updated_ms = ?2
                     WHERE id = ?1 AND status = 'failed'",
                    params![id, now],
                )?;
            }
            let _ = reply.send(n);
            Ok(())
        }))
        .await?;
        count.await.map_err(|_| StoreError::Closed)
    }

    async fn shadow_calls(&self, limit: usize) -> Result<Vec<crate::ShadowCalls>, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.read(move |conn| {
            let mut statement = conn.prepare_cached(
                "SELECT a.id, json_extract(a.body, '$.workflow'), t.calls
                 FROM actions a JOIN attempts t ON t.action_id = a.id
                 WHERE a.result LIKE ?1 || '%'
                 ORDER BY a.position DESC, t.number DESC LIMIT ?2",
            )?;
            let rows = statement
                .query_map(params![crate::SHADOW_RESULT_PREFIX, limit], |r| {
                    let calls: String = r.get(2)?;
                    Ok(crate::ShadowCalls {
                        action: r.get(0)?,
                        workflow: r.get::<_, Option<String>>(1)?.unwrap_or_default(),
                        calls: serde_json::from_str(&calls).unwrap_or(serde_json::Value::Null),
                    })
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(rows)
        })
        .await
    }

    async fn release_capped(&self, ids: Vec<String>) -> Result<usize, StoreError> {
        let (reply, count) = tokio::sync::oneshot::channel();
        self.write(Box::new(move |tx| {
            let now = chrono::Utc::now().timestamp_millis();
            let mut released = Vec::new();
            for id in &ids {
                let identity: Option<String> = tx
                    .query_row(
                        "UPDATE actions SET status = 'pending', updated_ms = ?2
                         WHERE id = ?1 AND status = 'capped' RETURNING identity",
                        params![id, now],
                        |row| row.get(0),
                    )
                    .optional()?;
                released.extend(identity);
            }
            outbox::refresh_heads(tx, released.iter().map(String::as_str))?;
            let _ = reply.send(released.len());
            Ok(())
        }))
        .await?;
        count.await.map_err(|_| StoreError::Closed)
    }

    async fn replay(&self, id: &str, actions: Vec<NewAction>) -> Result<bool, StoreError> {
        let id = id.to_owned();
        let (reply, replayed) = tokio::sync::oneshot::channel();
        self.write(Box::new(move |tx| {
            let now = chrono::Utc::now().timestamp_millis();
            let taken = tx.execute(
                "UPDATE actions SET status = 'replayed', updated_ms = ?2 WHERE id = ?1 AND status = 'failed'",
                params![id, now],
            )?;
            if taken == 1 {
                outbox::insert_actions(tx, &actions, now)?;
            }
            let _ = reply.send(taken == 1);
            Ok(())
        }))
        .await?;
        replayed.await.map_err(|_| StoreError::Closed)
    }

    async fn runs(&self, query: RunQuery) -> Result<Vec<RunRecord>, StoreError> {
        self.read(move |conn| Ok(outbox::runs(conn, &query)?)).await
    }

    async fn run(&self, id: &str) -> Result<Option<(RunRecord, Vec<ActionRecord>)>, StoreError> {
        let id = id.to_owned();
        self.read(move |conn| Ok(outbox::run(conn, &id)?)).await
    }

    async fn quarantine_list(&self, limit: usize) -> Result<Vec<QuarantineRecord>, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.read(move |conn| {
            let mut statement = conn.prepare_cached(
                "SELECT id, identity, seq, timer IS NOT NULL, reason, at_ms, released
                 FROM quarantine ORDER BY id LIMIT ?1",
            )?;
            let rows = statement
                .query_map(params![limit], |r| {
                    Ok(QuarantineRecord {
                        id: r.get(0)?,
                        identity: r.get(1)?,
                        seq: r.get(2)?,
                        timer: r.get(3)?,
                        reason: r.get(4)?,
                        at_ms: r.get(5)?,
                        released: r.get(6)?,
                    })
                })?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(rows)
        })
        .await
    }

    async fn quarantine_release(
        &self,
        identity: &str,
        reset_profile: bool,
    ) -> Result<usize, StoreError> {
        let identity = identity.to_owned();
        let released = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let count = Arc::clone(&released);
        self.write(Box::new(move |tx| {
            if reset_profile {
                tx.execute(
                    "DELETE FROM profiles WHERE identity = ?1",
                    params![identity],
                )?;
            }
            let n = tx.execute(
                "UPDATE quarantine SET released = 1 WHERE identity = ?1 AND released = 0",
                params![identity],
            )?;
            count.store(n, std::sync::atomic::Ordering::SeqCst);
            Ok(())
        }))
        .await?;
        Ok(released.load(std::sync::atomic::Ordering::SeqCst))
    }
}

#[async_trait]
impl Store for SqliteStore {
    async fn check(&self) -> Result<(), StoreError> {
        if self.commands.is_closed() {
            return Err(StoreError::Closed);
        }
        self.read(|conn| {
            conn.query_row("SELECT count(*) FROM sqlite_master", [], |_| Ok(()))?;
            Ok(())
        })
        .await
    }

    async fn close(&self) -> Result<(), StoreError> {
        let (reply, done) = oneshot::channel();
        if self
            .commands
            .send(WriteCommand::Shutdown { reply })
            .await
            .is_err()
        {
            return Ok(()); // already closed
        }
        let _ = done.await;
        self.readers.close();
        Ok(())
    }
}

#[cfg(test)]
mod tests;
