//! The PostgreSQL store (`store: postgres://…`), for several Junction nodes sharing one
//! database.
//!
//! Client: tokio-postgres with a deadpool-postgres pool. Chosen over sqlx because the SQL is
//! written by hand anyway (it differs from SQLite's), tokio-postgres is async from the ground
//! up with pipelining and `unnest`-friendly array parameters, and it builds faster: measured for
//! this project in `shared/reference/crates.md` (no second SQLite build, no proc-macro copy).
//!
//! Ingest is a group commit per node ([`ingest`]); every other write is its own transaction on
//! a pooled connection, and writes that touch a user's pending actions take that user's lock
//! first ([`outbox::lock_users`]). The schema is migrated when the store opens ([`schema`]).

mod ingest;
mod notify;
mod outbox;
pub mod schema;

use crate::IdentityKey;
use crate::outbox::{
    ActionOutcome, ActionRecord, Attempt, Claim, ClusterView, DeadLetterQuery, EngineCommit,
    HeldClaim, Lease, NewAction, NodeRecord, OutboxCounts, PartitionState, QuarantineRecord,
    ReleasedEntry, RunQuery, RunRecord, SharedEntry,
};
use crate::query::{page_size, parse_cursor};
use crate::{
    AppendBatch, AppendReceipt, Coordination, DeliveryQueue, EngineState, EventLog, EventQuery,
    IdentityMap, Inspection, Page, RateBudget, RejectedQuery, RejectedRecord, Store, StoreError,
    StoreOptions, StoredEvent,
};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use deadpool_postgres::{Client, Manager, ManagerConfig, Pool, RecyclingMethod};
use ingest::IngestCommand;
use std::collections::{HashMap, HashSet};
use std::str::FromStr;
use std::sync::Arc;
use tokio::sync::Notify;
use tokio::sync::{mpsc, oneshot};
use tokio_postgres::Row;
use tokio_postgres::types::ToSql;

impl From<tokio_postgres::Error> for StoreError {
    fn from(error: tokio_postgres::Error) -> Self {
        StoreError::Database(Box::new(error))
    }
}

impl From<schema::MigrateError> for StoreError {
    fn from(error: schema::MigrateError) -> Self {
        match error {
            schema::MigrateError::Database(e) => e.into(),
            newer @ schema::MigrateError::Newer { .. } => StoreError::Unreadable(newer.to_string()),
        }
    }
}

/// Appends waiting for the ingest task; past this, callers wait (back-pressure).
const INGEST_QUEUE: usize = 4_096;
/// Connections per node: ingest holds one while committing, delivery and the engine a few.
const POOL_SIZE: usize = 16;

pub struct PostgresStore {
    ingest: mpsc::Sender<IngestCommand>,
    pool: Pool,
    /// For connections of its own (LISTEN).
    config: tokio_postgres::Config,
    /// Turns true at close: listeners stop.
    closed: tokio::sync::watch::Receiver<bool>,
    close: tokio::sync::watch::Sender<bool>,
}

/// Reads a `postgres://` URL into a client configuration (the password never reaches an error).
pub fn config(url: &str) -> Result<tokio_postgres::Config, StoreError> {
    tokio_postgres::Config::from_str(url).map_err(|e| StoreError::Unsupported {
        url: crate::redact_url(url),
        reason: format!("not a PostgreSQL connection URL: {e}"),
    })
}

fn pool_for(config: tokio_postgres::Config, size: usize) -> Result<Pool, StoreError> {
    let manager = Manager::from_config(
        config,
        tokio_postgres::NoTls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    Pool::builder(manager)
        .max_size(size)
        .runtime(deadpool_postgres::Runtime::Tokio1)
        .build()
        .map_err(|e| StoreError::Pool(e.to_string()))
}

impl PostgresStore {
    /// Connects, brings the schema up to date, and starts this node's ingest task.
    pub async fn open(url: &str, options: StoreOptions) -> Result<Self, StoreError> {
        let config = config(url)?;
        let pool = pool_for(config.clone(), POOL_SIZE)?;
        {
            let mut client = get(&pool).await?;
            schema::migrate(&mut client).await?;
        }
        let (ingest, commands) = mpsc::channel(INGEST_QUEUE);
        tokio::spawn(ingest::run(pool.clone(), options.dedupe_window, commands));
        let (close, closed) = tokio::sync::watch::channel(false);
        Ok(PostgresStore {
            ingest,
            pool,
            config,
            closed,
            close,
        })
    }

    async fn client(&self) -> Result<Client, StoreError> {
        get(&self.pool).await
    }
}

async fn get(pool: &Pool) -> Result<Client, StoreError> {
    pool.get().await.map_err(|e| match e {
        deadpool_postgres::PoolError::Backend(e) => StoreError::from(e),
        other => StoreError::Pool(other.to_string()),
    })
}

/// Runs `work` in one transaction on a pooled connection and commits it.
macro_rules! in_transaction {
    ($store:expr, |$tx:ident| $work:expr) => {{
        let mut client = $store.client().await?;
        let $tx = client.transaction().await?;
        let value = $work;
        $tx.commit().await?;
        value
    }};
}

const EVENT_COLUMNS: &str = "seq, source, message_id, type, identity, user_id, anonymous_id, \
                             event, timestamp_ms, received_ms, body";

fn event_from_row(row: &Row) -> Result<StoredEvent, StoreError> {
    let body: String = row.get(10);
    Ok(StoredEvent {
        seq: row.get(0),
        source: row.get(1),
        message_id: row.get(2),
        kind: row.get(3),
        identity: row.get(4),
        user_id: row.get(5),
        anonymous_id: row.get(6),
        event: row.get(7),
        timestamp: from_millis(row.get(8)),
        received_at: from_millis(row.get(9)),
        body: serde_json::from_str(&body)
            .map_err(|e| StoreError::Unreadable(format!("event {}: {e}", row.get::<_, i64>(0))))?,
    })
}

fn lease_from_row(row: &Row) -> Lease {
    Lease {
        name: row.get(0),
        node: row.get(1),
        token: row.get(2),
        expires_ms: row.get(3),
    }
}

fn from_millis(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms).unwrap_or_default()
}

fn to_limit(limit: usize) -> i64 {
    i64::try_from(limit).unwrap_or(i64::MAX)
}

#[async_trait]
impl EventLog for PostgresStore {
    async fn append(&self, batch: AppendBatch) -> Result<AppendReceipt, StoreError> {
        let (reply, receipt) = oneshot::channel();
        self.ingest
            .send(IngestCommand::Append { batch, reply })
            .await
            .map_err(|_| StoreError::Closed)?;
        receipt.await.map_err(|_| StoreError::Closed)?
    }

    async fn events(&self, query: EventQuery) -> Result<Page<StoredEvent>, StoreError> {
        let before = parse_cursor(query.cursor.as_deref()).map_err(StoreError::InvalidQuery)?;
        let limit = page_size(query.limit).map_err(StoreError::InvalidQuery)?;
        let mut sql = format!("SELECT {EVENT_COLUMNS} FROM events WHERE TRUE");
        let mut args: Vec<Box<dyn ToSql + Sync + Send>> = Vec::new();
        let client = self.client().await?;
        // A type alone has no index: search a bounded span of the log per page.
        let searched_to = if query.by_type_alone() {
            let top = match before {
                Some(before) => before,
                None => client
                    .query_one("SELECT coalesce(max(seq), 0) + 1 FROM events", &[])
                    .await?
                    .get::<_, i64>(0),
            };
            Some(crate::query::type_search_floor(top))
        } else {
            None
        };
        // Each filter is written so that it can use an index (see schema.rs): an event's
        // identity is its userId when it has one.
        let filters: [(Option<String>, fn(&str) -> String); 4] = [
            (query.kind, |p| format!("type = {p}")),
            (query.user_id, |p| {
                format!("identity = {p} AND user_id = {p}")
            }),
            (query.anonymous_id, |p| format!("anonymous_id = {p}")),
            (query.message_id, |p| {
                format!("seq IN (SELECT seq FROM message_ids WHERE message_id = {p})")
            }),
        ];
        for (value, condition) in filters {
            if let Some(value) = value {
                args.push(Box::new(value));
                sql.push_str(" AND ");
                sql.push_str(&condition(&format!("${}", args.len())));
            }
        }
        if let Some(before) = before {
            args.push(Box::new(before));
            sql.push_str(&format!(" AND seq < ${}", args.len()));
        }
        if let Some(searched_to) = searched_to {
            args.push(Box::new(searched_to));
            sql.push_str(&format!(" AND seq >= ${}", args.len()));
        }
        sql.push_str(&format!(" ORDER BY seq DESC LIMIT {}", limit + 1));
        let params: Vec<&(dyn ToSql + Sync)> = args
            .iter()
            .map(|a| a.as_ref() as &(dyn ToSql + Sync))
            .collect();
        let rows = client
            .query(&client.prepare_cached(&sql).await?, &params)
            .await?
            .iter()
            .map(event_from_row)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Page::from_search(rows, limit, |e| e.seq, searched_to))
    }

    async fn event(&self, seq: i64) -> Result<Option<StoredEvent>, StoreError> {
        let client = self.client().await?;
        let statement = client
            .prepare_cached(&format!(
                "SELECT {EVENT_COLUMNS} FROM events WHERE seq = $1"
            ))
            .await?;
        client
            .query_opt(&statement, &[&seq])
            .await?
            .as_ref()
            .map(event_from_row)
            .transpose()
    }

    async fn identity_events(
        &self,
        identity: &str,
        after_seq: i64,
        limit: usize,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        let client = self.client().await?;
        let statement = client
            .prepare_cached(&format!(
                "SELECT {EVENT_COLUMNS} FROM events WHERE identity = $1 AND seq > $2
                 ORDER BY seq LIMIT $3"
            ))
            .await?;
        client
            .query(&statement, &[&identity, &after_seq, &to_limit(limit)])
            .await?
            .iter()
            .map(event_from_row)
            .collect()
    }

    async fn events_after(
        &self,
        partition: u32,
        after_seq: i64,
        limit: usize,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        let client = self.client().await?;
        let statement = client
            .prepare_cached(&format!(
                "SELECT {EVENT_COLUMNS} FROM events WHERE part = $1 AND seq > $2
                 ORDER BY seq LIMIT $3"
            ))
            .await?;
        client
            .query(
                &statement,
                &[&(partition as i32), &after_seq, &to_limit(limit)],
            )
            .await?
            .iter()
            .map(event_from_row)
            .collect()
    }

    async fn rejected(&self, query: RejectedQuery) -> Result<Page<RejectedRecord>, StoreError> {
        let before = parse_cursor(query.cursor.as_deref())
            .map_err(StoreError::InvalidQuery)?
            .unwrap_or(i64::MAX);
        let limit = page_size(query.limit).map_err(StoreError::InvalidQuery)?;
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT id, source, received_ms, position, type, message_id, code, field,
                        reason, body
                 FROM rejected WHERE id < $1 ORDER BY id DESC LIMIT $2",
                &[&before, &((limit + 1) as i64)],
            )
            .await?
            .iter()
            .map(|row| RejectedRecord {
                id: row.get(0),
                source: row.get(1),
                received_at: from_millis(row.get(2)),
                index: row.get(3),
                kind: row.get(4),
                message_id: row.get(5),
                code: row.get(6),
                field: row.get(7),
                reason: row.get(8),
                body: row.get(9),
            })
            .collect();
        Ok(Page::from_rows(rows, limit, |r| r.id))
    }
}

#[async_trait]
impl EngineState for PostgresStore {
    async fn partitions(&self) -> Result<u32, StoreError> {
        let client = self.client().await?;
        let statement = client
            .prepare_cached("SELECT partitions FROM event_log_head")
            .await?;
        Ok(client.query_one(&statement, &[]).await?.get::<_, i32>(0) as u32)
    }

    async fn cursor(&self, partition: u32) -> Result<i64, StoreError> {
        let client = self.client().await?;
        let statement = client
            .prepare_cached("SELECT cursor FROM planner_partitions WHERE part = $1")
            .await?;
        client
            .query_opt(&statement, &[&(partition as i32)])
            .await?
            .map(|r| r.get(0))
            .ok_or_else(|| {
                StoreError::Unreadable(format!("planning partition {partition} is missing"))
            })
    }

    async fn partition_states(&self) -> Result<Vec<PartitionState>, StoreError> {
        let client = self.client().await?;
        Ok(client
            .query(
                "SELECT p.part, p.cursor,
                        (SELECT count(*) FROM events e WHERE e.part = p.part AND e.seq > p.cursor)
                 FROM planner_partitions p ORDER BY p.part",
                &[],
            )
            .await?
            .iter()
            .map(|r| PartitionState {
                partition: r.get::<_, i32>(0) as u32,
                cursor: r.get(1),
                behind: r.get(2),
            })
            .collect())
    }

    async fn shared_state(
        &self,
        keys: Vec<String>,
        prefixes: Vec<String>,
    ) -> Result<HashMap<String, SharedEntry>, StoreError> {
        let client = self.client().await?;
        let statement = client
            .prepare_cached(
                // Keys compare byte-wise (COLLATE "C"): a prefix's entries lie between it and
                // the prefix followed by the highest character, a range the index serves.
                "SELECT key, value, version FROM shared_state WHERE key = ANY($1)
                 UNION
                 SELECT s.key, s.value, s.version
                 FROM unnest($2::text[]) AS p(prefix)
                 JOIN shared_state AS s ON s.key >= p.prefix AND s.key < p.prefix || chr(1114111)",
            )
            .await?;
        Ok(client
            .query(&statement, &[&keys, &prefixes])
            .await?
            .iter()
            .map(|r| {
                (
                    r.get(0),
                    SharedEntry {
                        value: r.get(1),
                        version: r.get(2),
                    },
                )
            })
            .collect())
    }

    async fn profiles(
        &self,
        identities: Vec<String>,
    ) -> Result<HashMap<String, String>, StoreError> {
        let client = self.client().await?;
        let statement = client
            .prepare_cached("SELECT identity, body FROM profiles WHERE identity = ANY($1)")
            .await?;
        Ok(client
            .query(&statement, &[&identities])
            .await?
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect())
    }

    async fn engine_commit(&self, commit: EngineCommit) -> Result<(), StoreError> {
        in_transaction!(self, |tx| outbox::engine_commit(&tx, &commit).await?);
        Ok(())
    }

    async fn due_timers(
        &self,
        partition: u32,
        now_ms: i64,
        limit: usize,
    ) -> Result<Vec<(String, String)>, StoreError> {
        let client = self.client().await?;
        let statement = client
            .prepare_cached(
                "SELECT id, body FROM timers
                 WHERE status = 'pending' AND part = $1 AND fire_at_ms <= $2
                 ORDER BY fire_at_ms LIMIT $3",
            )
            .await?;
        Ok(client
            .query(
                &statement,
                &[&(partition as i32), &now_ms, &to_limit(limit)],
            )
            .await?
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect())
    }

    async fn next_timer_ms(&self, partition: u32) -> Result<Option<i64>, StoreError> {
        let client = self.client().await?;
        let statement = client
            .prepare_cached(
                "SELECT min(fire_at_ms) FROM timers WHERE status = 'pending' AND part = $1",
            )
            .await?;
        Ok(client
            .query_one(&statement, &[&(partition as i32)])
            .await?
            .get(0))
    }

    async fn repartition(
        &self,
        partitions: u32,
        node: &str,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        in_transaction!(self, |tx| outbox::repartition(
            &tx, partitions, node, now_ms
        )
        .await?);
        Ok(())
    }

    async fn quarantine_released(
        &self,
        partition: u32,
        limit: usize,
    ) -> Result<Vec<ReleasedEntry>, StoreError> {
        let client = self.client().await?;
        Ok(client
            .query(
                "SELECT id, identity, seq, timer FROM quarantine WHERE released AND part = $1
                 ORDER BY seq, id LIMIT $2",
                &[&(partition as i32), &to_limit(limit)],
            )
            .await?
            .iter()
            .map(|r| ReleasedEntry {
                id: r.get(0),
                identity: r.get(1),
                seq: r.get(2),
                timer: r.get(3),
            })
            .collect())
    }
}

#[async_trait]
impl DeliveryQueue for PostgresStore {
    async fn ready_heads(
        &self,
        now_ms: i64,
        limit: usize,
    ) -> Result<Vec<ActionRecord>, StoreError> {
        let client = self.client().await?;
        Ok(outbox::ready_heads(&client, now_ms, to_limit(limit)).await?)
    }

    async fn next_due_ms(&self) -> Result<Option<i64>, StoreError> {
        let client = self.client().await?;
        let statement = client
            .prepare_cached("SELECT min(next_at_ms) FROM user_heads")
            .await?;
        Ok(client.query_one(&statement, &[]).await?.get(0))
    }

    async fn pending_of(
        &self,
        identity: &str,
        limit: usize,
    ) -> Result<Vec<ActionRecord>, StoreError> {
        let client = self.client().await?;
        let statement = client
            .prepare_cached(&format!(
                "SELECT {} FROM actions WHERE identity = $1 AND status = 'pending'
                 ORDER BY position LIMIT $2",
                outbox::ACTION_COLUMNS
            ))
            .await?;
        Ok(client
            .query(&statement, &[&identity, &to_limit(limit)])
            .await?
            .iter()
            .map(outbox::action_from_row)
            .collect())
    }

    async fn claim_users_in(
        &self,
        node: &str,
        now_ms: i64,
        lease_ms: i64,
        limit: usize,
        lanes: std::ops::RangeInclusive<i64>,
    ) -> Result<Vec<Claim>, StoreError> {
        let client = self.client().await?;
        // SKIP LOCKED: nodes claiming at the same moment take different users instead of
        // queueing behind each other. The ON CONFLICT guard settles the rare race where a
        // head's lock was released by a commit that granted it: that grant stands.
        let statement = client
            .prepare_cached(
                "WITH candidates AS (
                     SELECT h.identity, h.lane, h.position FROM user_heads AS h
                     LEFT JOIN delivery_claims AS c ON c.identity = h.identity
                     WHERE h.lane BETWEEN $5 AND $6
                       AND h.next_at_ms <= $1 AND (c.identity IS NULL OR c.expires_ms <= $1)
                     ORDER BY h.lane, h.position
                     LIMIT $2
                     FOR UPDATE OF h SKIP LOCKED)
                 INSERT INTO delivery_claims (identity, node, token, expires_ms)
                 SELECT identity, $3, nextval('claim_tokens'), $1 + $4
                 FROM (SELECT identity FROM candidates ORDER BY lane, position) AS ordered
                 ON CONFLICT (identity) DO UPDATE
                     SET node = excluded.node, token = excluded.token,
                         expires_ms = excluded.expires_ms
                     WHERE delivery_claims.expires_ms <= $1
                 RETURNING identity, token, expires_ms",
            )
            .await?;
        let mut claims: Vec<Claim> = client
            .query(
                &statement,
                &[
                    &now_ms,
                    &to_limit(limit),
                    &node,
                    &lease_ms,
                    lanes.start(),
                    lanes.end(),
                ],
            )
            .await?
            .iter()
            .map(|r| Claim {
                identity: r.get(0),
                token: r.get(1),
                expires_ms: r.get(2),
            })
            .collect();
        // Tokens are drawn in the candidates' order: they give it back.
        claims.sort_by_key(|c| c.token);
        Ok(claims)
    }

    async fn renew_claims(
        &self,
        claims: Vec<Claim>,
        now_ms: i64,
        lease_ms: i64,
    ) -> Result<Vec<Claim>, StoreError> {
        if claims.is_empty() {
            return Ok(claims);
        }
        let identities: Vec<&str> = claims.iter().map(|c| c.identity.as_str()).collect();
        let tokens: Vec<i64> = claims.iter().map(|c| c.token).collect();
        let client = self.client().await?;
        Ok(client
            .query(
                "UPDATE delivery_claims AS c SET expires_ms = $3
                 FROM unnest($1::text[], $2::bigint[]) AS t(identity, token)
                 WHERE c.identity = t.identity AND c.token = t.token
                 RETURNING c.identity, c.token, c.expires_ms",
                &[&identities, &tokens, &(now_ms + lease_ms)],
            )
            .await?
            .iter()
            .map(|r| Claim {
                identity: r.get(0),
                token: r.get(1),
                expires_ms: r.get(2),
            })
            .collect())
    }

    async fn release_claim(&self, claim: &Claim) -> Result<(), StoreError> {
        let client = self.client().await?;
        client
            .execute(
                "DELETE FROM delivery_claims WHERE identity = $1 AND token = $2",
                &[&claim.identity, &claim.token],
            )
            .await?;
        Ok(())
    }

    async fn release_claims_of(&self, node: &str) -> Result<usize, StoreError> {
        let client = self.client().await?;
        let n = client
            .execute("DELETE FROM delivery_claims WHERE node = $1", &[&node])
            .await?;
        Ok(n as usize)
    }

    async fn mark_started(&self, claim: &Claim, id: &str, now_ms: i64) -> Result<(), StoreError> {
        in_transaction!(self, |tx| {
            outbox::check_claim(&tx, claim, Some(now_ms)).await?;
            tx.execute(
                "UPDATE actions SET started_ms = $2,
                        first_attempt_ms = coalesce(first_attempt_ms, $2)
                 WHERE id = $1",
                &[&id, &now_ms],
            )
            .await?;
        });
        Ok(())
    }

    async fn action_outcomes(
        &self,
        claim: &Claim,
        outcomes: Vec<ActionOutcome>,
    ) -> Result<(), StoreError> {
        // The claim is checked last: by then this transaction holds the user's head row, which
        // a node taking the user over would have to lock first (so the locks are always taken
        // in one order), and a fenced outcome simply rolls back.
        in_transaction!(self, |tx| {
            outbox::action_outcomes(&tx, &outcomes).await?;
            outbox::check_claim(&tx, claim, None).await?
        });
        Ok(())
    }

    async fn cleanup(&self, before_ms: i64) -> Result<usize, StoreError> {
        Ok(in_transaction!(self, |tx| outbox::cleanup(&tx, before_ms).await?))
    }

    async fn outbox_counts(&self) -> Result<OutboxCounts, StoreError> {
        let client = self.client().await?;
        Ok(outbox::outbox_counts(&client).await?)
    }

    async fn backlog(&self) -> Result<crate::Backlog, StoreError> {
        let client = self.client().await?;
        Ok(outbox::backlog(&client).await?)
    }
}

#[async_trait]
impl IdentityMap for PostgresStore {
    async fn identity_lookup(
        &self,
        workspace: &str,
        key: &IdentityKey,
    ) -> Result<Option<String>, StoreError> {
        let client = self.client().await?;
        let statement = client
            .prepare_cached(
                "SELECT contact_id FROM identity_map
                 WHERE workspace = $1 AND kind = $2 AND value = $3",
            )
            .await?;
        Ok(client
            .query_opt(&statement, &[&workspace, &key.kind(), &key.value()])
            .await?
            .map(|r| r.get(0)))
    }

    async fn identity_remember(
        &self,
        workspace: &str,
        keys: &[IdentityKey],
        contact_id: &str,
    ) -> Result<(), StoreError> {
        let kinds: Vec<&str> = keys.iter().map(IdentityKey::kind).collect();
        let values: Vec<String> = keys.iter().map(IdentityKey::value).collect();
        let client = self.client().await?;
        client
            .execute(
                "INSERT INTO identity_map (workspace, kind, value, contact_id, updated_ms)
                 SELECT DISTINCT ON (kind, value) $1, kind, value, $2, $3
                 FROM unnest($4::text[], $5::text[]) AS t(kind, value)
                 ON CONFLICT (workspace, kind, value)
                 DO UPDATE SET contact_id = excluded.contact_id, updated_ms = excluded.updated_ms",
                &[
                    &workspace,
                    &contact_id,
                    &Utc::now().timestamp_millis(),
                    &kinds,
                    &values,
                ],
            )
            .await?;
        Ok(())
    }

    async fn identity_forget(&self, workspace: &str, contact_id: &str) -> Result<(), StoreError> {
        let client = self.client().await?;
        client
            .execute(
                "DELETE FROM identity_map WHERE workspace = $1 AND contact_id = $2",
                &[&workspace, &contact_id],
            )
            .await?;
        Ok(())
    }

    async fn identity_entries(
        &self,
        search: &crate::IdentitySearch,
    ) -> Result<Vec<crate::IdentityEntry>, StoreError> {
        let client = self.client().await?;
        let rows = match search {
            crate::IdentitySearch::Key(key) => {
                client
                    .query(
                        "SELECT m.workspace, m.kind, m.value, m.contact_id
                         FROM identity_map AS k
                         JOIN identity_map AS m
                           ON m.workspace = k.workspace AND m.contact_id = k.contact_id
                         WHERE k.kind = $1 AND k.value = $2
                         ORDER BY m.workspace, m.contact_id, m.kind, m.value",
                        &[&key.kind(), &key.value()],
                    )
                    .await?
            }
            crate::IdentitySearch::Contact(id) => {
                client
                    .query(
                        "SELECT workspace, kind, value, contact_id FROM identity_map
                         WHERE contact_id = $1 ORDER BY workspace, kind, value",
                        &[id],
                    )
                    .await?
            }
        };
        Ok(rows
            .iter()
            .map(|r| crate::IdentityEntry {
                workspace: r.get(0),
                kind: r.get(1),
                value: r.get(2),
                contact_id: r.get(3),
            })
            .collect())
    }

    async fn identity_unlink(&self, workspace: &str, key: &IdentityKey) -> Result<(), StoreError> {
        let client = self.client().await?;
        client
            .execute(
                "DELETE FROM identity_map WHERE workspace = $1 AND kind = $2 AND value = $3",
                &[&workspace, &key.kind(), &key.value()],
            )
            .await?;
        Ok(())
    }

    async fn remember_made(&self, kind: &str, id: &str) -> Result<(), StoreError> {
        let client = self.client().await?;
        client
            .execute(
                "INSERT INTO made_by_junction (kind, id, made_ms) VALUES ($1, $2, $3)
                 ON CONFLICT (kind, id) DO NOTHING",
                &[&kind, &id, &Utc::now().timestamp_millis()],
            )
            .await?;
        Ok(())
    }

    async fn made_by_junction(
        &self,
        kind: &str,
        ids: Vec<String>,
    ) -> Result<HashSet<String>, StoreError> {
        let client = self.client().await?;
        Ok(client
            .query(
                "SELECT id FROM made_by_junction WHERE kind = $1 AND id = ANY($2)",
                &[&kind, &ids],
            )
            .await?
            .iter()
            .map(|r| r.get(0))
            .collect())
    }
}

#[async_trait]
impl Coordination for PostgresStore {
    async fn acquire_lease(
        &self,
        name: &str,
        node: &str,
        now_ms: i64,
        lease_ms: i64,
    ) -> Result<Option<Lease>, StoreError> {
        let client = self.client().await?;
        Ok(client
            .query_opt(
                "INSERT INTO leases (name, node, token, expires_ms)
                 VALUES ($1, $2, nextval('claim_tokens'), $3::bigint + $4::bigint)
                 ON CONFLICT (name) DO UPDATE
                     SET node = excluded.node, token = excluded.token,
                         expires_ms = excluded.expires_ms
                     WHERE leases.expires_ms <= $3 OR leases.node = excluded.node
                 RETURNING name, node, token, expires_ms",
                &[&name, &node, &now_ms, &lease_ms],
            )
            .await?
            .map(|r| lease_from_row(&r)))
    }

    async fn renew_lease(
        &self,
        lease: &Lease,
        now_ms: i64,
        lease_ms: i64,
    ) -> Result<Option<Lease>, StoreError> {
        let client = self.client().await?;
        Ok(client
            .query_opt(
                "UPDATE leases SET expires_ms = $3 WHERE name = $1 AND token = $2
                 RETURNING name, node, token, expires_ms",
                &[&lease.name, &lease.token, &(now_ms + lease_ms)],
            )
            .await?
            .map(|r| lease_from_row(&r)))
    }

    async fn release_lease(&self, lease: &Lease) -> Result<(), StoreError> {
        let client = self.client().await?;
        client
            .execute(
                "DELETE FROM leases WHERE name = $1 AND token = $2",
                &[&lease.name, &lease.token],
            )
            .await?;
        Ok(())
    }

    async fn ring_on_changes(
        &self,
        events_arrived: Arc<Notify>,
        actions_planned: Arc<Notify>,
    ) -> Result<(), StoreError> {
        let config = self.config.clone();
        let closed = self.closed.clone();
        tokio::spawn(notify::listen(
            config,
            events_arrived,
            actions_planned,
            closed,
        ));
        Ok(())
    }

    async fn heartbeat(
        &self,
        node: &str,
        started_ms: i64,
        now_ms: i64,
        expires_ms: i64,
    ) -> Result<(), StoreError> {
        let client = self.client().await?;
        client
            .execute(
                "INSERT INTO nodes (name, started_ms, seen_ms, expires_ms)
                 VALUES ($1, $2, $3, $4)
                 ON CONFLICT (name) DO UPDATE SET started_ms = excluded.started_ms,
                                                  seen_ms = excluded.seen_ms,
                                                  expires_ms = excluded.expires_ms",
                &[&node, &started_ms, &now_ms, &expires_ms],
            )
            .await?;
        Ok(())
    }

    async fn cluster(&self) -> Result<ClusterView, StoreError> {
        let client = self.client().await?;
        let nodes = client
            .query(
                "SELECT name, started_ms, seen_ms, expires_ms FROM nodes ORDER BY name",
                &[],
            )
            .await?
            .iter()
            .map(|r| NodeRecord {
                name: r.get(0),
                started_ms: r.get(1),
                seen_ms: r.get(2),
                expires_ms: r.get(3),
            })
            .collect();
        let leases = client
            .query(
                "SELECT name, node, token, expires_ms FROM leases ORDER BY name",
                &[],
            )
            .await?
            .iter()
            .map(lease_from_row)
            .collect();
        let claims = client
            .query(
                "SELECT node, identity, token, expires_ms FROM delivery_claims
                 ORDER BY node, token",
                &[],
            )
            .await?
            .iter()
            .map(|r| HeldClaim {
                node: r.get(0),
                claim: Claim {
                    identity: r.get(1),
                    token: r.get(2),
                    expires_ms: r.get(3),
                },
            })
            .collect();
        Ok(ClusterView {
            nodes,
            leases,
            claims,
        })
    }
}

#[async_trait]
impl RateBudget for PostgresStore {
    async fn take_budget(
        &self,
        workspace: &str,
        bucket: i64,
        limit: i64,
        wanted: i64,
    ) -> Result<i64, StoreError> {
        let granted = in_transaction!(self, |tx| {
            tx.execute(
                "INSERT INTO rate_budget (workspace, bucket, used) VALUES ($1, $2, 0)
                 ON CONFLICT (workspace, bucket) DO NOTHING",
                &[&workspace, &bucket],
            )
            .await?;
            // The row lock makes nodes asking at once take their slices one after the other.
            let used: i64 = tx
                .query_one(
                    "SELECT used FROM rate_budget WHERE workspace = $1 AND bucket = $2
                     FOR UPDATE",
                    &[&workspace, &bucket],
                )
                .await?
                .get(0);
            let grant = wanted.min(limit - used).max(0);
            if grant > 0 {
                tx.execute(
                    "UPDATE rate_budget SET used = used + $3 WHERE workspace = $1 AND bucket = $2",
                    &[&workspace, &bucket, &grant],
                )
                .await?;
            }
            tx.execute(
                "DELETE FROM rate_budget WHERE workspace = $1 AND bucket < $2",
                &[&workspace, &(bucket - 6)],
            )
            .await?;
            grant
        });
        Ok(granted)
    }

    async fn budget_taken(&self, bucket: i64) -> Result<i64, StoreError> {
        let client = self.client().await?;
        Ok(client
            .query_one(
                "SELECT coalesce(sum(used), 0)::bigint FROM rate_budget WHERE bucket = $1",
                &[&bucket],
            )
            .await?
            .get(0))
    }
}

#[async_trait]
impl Inspection for PostgresStore {
    async fn action(&self, id: &str) -> Result<Option<ActionRecord>, StoreError> {
        let client = self.client().await?;
        Ok(client
            .query_opt(
                &format!(
                    "SELECT {} FROM actions WHERE id = $1",
                    outbox::ACTION_COLUMNS
                ),
                &[&id],
            )
            .await?
            .as_ref()
            .map(outbox::action_from_row))
    }

    async fn attempts(&self, id: &str) -> Result<Vec<Attempt>, StoreError> {
        let client = self.client().await?;
        Ok(outbox::attempts(&client, id).await?)
    }

    async fn dead_letters(&self, query: DeadLetterQuery) -> Result<Vec<ActionRecord>, StoreError> {
        let client = self.client().await?;
        Ok(outbox::dead_letters(&client, &query).await?)
    }

    async fn discard(&self, ids: Vec<String>) -> Result<usize, StoreError> {
        let client = self.client().await?;
        let n = client
            .execute(
                "UPDATE actions SET status = 'discarded', updated_ms = $2
                 WHERE id = ANY($1) AND status = 'failed'",
                &[&ids, &Utc::now().timestamp_millis()],
            )
            .await?;
        Ok(n as usize)
    }

    async fn shadow_calls(&self, limit: usize) -> Result<Vec<crate::ShadowCalls>, StoreError> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT a.id, (a.body::jsonb) ->> 'workflow', t.calls
                 FROM actions a JOIN attempts t ON t.action_id = a.id
                 WHERE a.result LIKE $1 || '%'
                 ORDER BY a.position DESC, t.number DESC LIMIT $2",
                &[&crate::SHADOW_RESULT_PREFIX, &to_limit(limit)],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|row| {
                let calls: String = row.get(2);
                crate::ShadowCalls {
                    action: row.get(0),
                    workflow: row.get::<_, Option<String>>(1).unwrap_or_default(),
                    calls: serde_json::from_str(&calls).unwrap_or(serde_json::Value::Null),
                }
            })
            .collect())
    }

    async fn release_capped(&self, ids: Vec<String>) -> Result<usize, StoreError> {
        let released = in_transaction!(self, |tx| {
            let identities: Vec<String> = tx
                .query(
                    "SELECT DISTINCT identity FROM actions WHERE id = ANY($1) AND status = 'capped'",
                    &[&ids],
                )
                .await?
                .iter()
                .map(|row| row.get(0))
                .collect();
            outbox::lock_users(&tx, &identities).await?;
            let n = tx
                .execute(
                    "UPDATE actions SET status = 'pending', updated_ms = $2
                     WHERE id = ANY($1) AND status = 'capped'",
                    &[&ids, &Utc::now().timestamp_millis()],
                )
                .await?;
            outbox::refresh_heads(&tx, &identities).await?;
            tx.batch_execute(&format!("NOTIFY {}", notify::ACTIONS))
                .await?;
            n as usize
        });
        Ok(released)
    }

    async fn replay(&self, id: &str, actions: Vec<NewAction>) -> Result<bool, StoreError> {
        let replayed = in_transaction!(self, |tx| {
            let identities: Vec<String> = actions.iter().map(|a| a.identity.clone()).collect();
            outbox::lock_users(&tx, &identities).await?;
            let now = Utc::now().timestamp_millis();
            let taken = tx
                .execute(
                    "UPDATE actions SET status = 'replayed', updated_ms = $2
                     WHERE id = $1 AND status = 'failed'",
                    &[&id, &now],
                )
                .await?;
            if taken == 1 {
                outbox::insert_actions(&tx, &actions, now).await?;
            }
            taken == 1
        });
        Ok(replayed)
    }

    async fn runs(&self, query: RunQuery) -> Result<Vec<RunRecord>, StoreError> {
        let client = self.client().await?;
        Ok(outbox::runs(&client, &query).await?)
    }

    async fn run(&self, id: &str) -> Result<Option<(RunRecord, Vec<ActionRecord>)>, StoreError> {
        let client = self.client().await?;
        Ok(outbox::run(&client, id).await?)
    }

    async fn quarantine_list(&self, limit: usize) -> Result<Vec<QuarantineRecord>, StoreError> {
        let client = self.client().await?;
        Ok(client
            .query(
                "SELECT id, identity, seq, timer IS NOT NULL, reason, at_ms, released
                 FROM quarantine ORDER BY id LIMIT $1",
                &[&to_limit(limit)],
            )
            .await?
            .iter()
            .map(|r| QuarantineRecord {
                id: r.get(0),
                identity: r.get(1),
                seq: r.get(2),
                timer: r.get(3),
                reason: r.get(4),
                at_ms: r.get(5),
                released: r.get(6),
            })
            .collect())
    }

    async fn quarantine_release(
        &self,
        identity: &str,
        reset_profile: bool,
    ) -> Result<usize, StoreError> {
        let released = in_transaction!(self, |tx| {
            if reset_profile {
                tx.execute("DELETE FROM profiles WHERE identity = $1", &[&identity])
                    .await?;
            }
            tx.execute(
                "UPDATE quarantine SET released = TRUE WHERE identity = $1 AND NOT released",
                &[&identity],
            )
            .await?
        });
        Ok(released as usize)
    }
}

#[async_trait]
impl Store for PostgresStore {
    async fn check(&self) -> Result<(), StoreError> {
        if self.ingest.is_closed() {
            return Err(StoreError::Closed);
        }
        let client = self.client().await?;
        client.query_one("SELECT 1", &[]).await?;
        Ok(())
    }

    async fn close(&self) -> Result<(), StoreError> {
        let (reply, done) = oneshot::channel();
        if self
            .ingest
            .send(IngestCommand::Shutdown { reply })
            .await
            .is_err()
        {
            return Ok(()); // already closed
        }
        let _ = done.await;
        let _ = self.close.send(true);
        self.pool.close();
        Ok(())
    }
}

/// Creates an empty database on the server `admin_url` points at and returns its URL: tests
/// and benchmarks each want a database of their own. `prefix` is letters, digits and `_`.
pub async fn create_scratch_database(admin_url: &str, prefix: &str) -> Result<String, StoreError> {
    use std::sync::atomic::{AtomicU64, Ordering};
    static CREATED: AtomicU64 = AtomicU64::new(0);
    if prefix.is_empty()
        || !prefix
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_')
    {
        return Err(StoreError::InvalidQuery(format!(
            "database prefix {prefix:?} must be letters, digits and _"
        )));
    }
    let name = format!(
        "{prefix}_{}_{}_{}",
        std::process::id(),
        Utc::now().timestamp_micros(),
        CREATED.fetch_add(1, Ordering::Relaxed)
    );
    let (client, connection) = config(admin_url)?.connect(tokio_postgres::NoTls).await?;
    let connection = tokio::spawn(connection);
    client
        .batch_execute(&format!("CREATE DATABASE \"{name}\""))
        .await?;
    drop(client);
    let _ = connection.await;
    Ok(with_database(admin_url, &name))
}

/// The same URL naming another database.
fn with_database(url: &str, database: &str) -> String {
    let after_scheme = url.find("://").map_or(0, |i| i + 3);
    let path_start = url[after_scheme..]
        .find('/')
        .map_or(url.len(), |i| after_scheme + i);
    let query_start = url[path_start..]
        .find('?')
        .map_or(url.len(), |i| path_start + i);
    format!("{}/{database}{}", &url[..path_start], &url[query_start..])
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_url_can_name_another_database() {
        let cases = [
            ("postgres://u@h:5432/postgres", "postgres://u@h:5432/x"),
            ("postgres://u@h", "postgres://u@h/x"),
            (
                "postgresql://u:p@h/db?sslmode=disable",
                "postgresql://u:p@h/x?sslmode=disable",
            ),
        ];
        for (url, expected) in cases {
            assert_eq!(super::with_database(url, "x"), expected);
        }
    }
}
