//! Moving a store from SQLite to PostgreSQL (`junction migrate --from sqlite://… --to
//! postgres://…`): every durable table is copied as it is — events with their numbers, the
//! de-duplication record, refusals, the identity map, profiles, the planning partitions with
//! their cursors and the state they share, the outbox with its attempts and runs, timers,
//! quarantine — in one PostgreSQL transaction, with `COPY … FROM STDIN`. Coordination rows (claims, leases, nodes, the rate budget) are not
//! copied: they describe the nodes of the old store, and none runs during a move.
//!
//! The source must not be in use (stop Junction first); the target must be a PostgreSQL
//! database with no events and no actions yet (its schema is created here if needed).

use crate::{StoreError, StoreLocation, locate, postgres};
use bytes::Bytes;
use futures_util::SinkExt;
use rusqlite::types::ValueRef;

/// A table to copy, its columns (the same names on both sides), and which of them are
/// booleans on PostgreSQL (integers 0/1 on SQLite).
struct Table {
    name: &'static str,
    columns: &'static [&'static str],
    booleans: &'static [&'static str],
}

const TABLES: &[Table] = &[
    Table {
        name: "events",
        columns: &[
            "seq",
            "source",
            "message_id",
            "type",
            "identity",
            "user_id",
            "anonymous_id",
            "event",
            "timestamp_ms",
            "received_ms",
            "body",
            "part",
        ],
        booleans: &[],
    },
    Table {
        name: "message_ids",
        columns: &["message_id", "source", "received_ms", "seq"],
        booleans: &[],
    },
    Table {
        name: "rejected",
        columns: &[
            "id",
            "source",
            "received_ms",
            "position",
            "type",
            "message_id",
            "code",
            "field",
            "reason",
            "body",
        ],
        booleans: &[],
    },
    Table {
        name: "identity_map",
        columns: &["workspace", "kind", "value", "contact_id", "updated_ms"],
        booleans: &[],
    },
    Table {
        name: "profiles",
        columns: &["identity", "body"],
        booleans: &[],
    },
    Table {
        name: "planner_partitions",
        columns: &["part", "cursor"],
        booleans: &[],
    },
    Table {
        name: "shared_state",
        columns: &["key", "value", "version"],
        booleans: &[],
    },
    Table {
        name: "actions",
        columns: &[
            "position",
            "id",
            "identity",
            "run",
            "seq",
            "standby_for",
            "status",
            "attempts",
            "next_at_ms",
            "body",
            "result",
            "created_ms",
            "updated_ms",
            "lane",
            "first_attempt_ms",
            "started_ms",
            "error_code",
        ],
        booleans: &[],
    },
    Table {
        name: "user_heads",
        columns: &["identity", "position", "next_at_ms", "lane"],
        booleans: &[],
    },
    Table {
        name: "timers",
        columns: &["id", "identity", "fire_at_ms", "status", "body", "part"],
        booleans: &[],
    },
    Table {
        name: "attempts",
        columns: &[
            "action_id",
            "number",
            "at_ms",
            "duration_ms",
            "outcome",
            "error",
            "calls",
        ],
        booleans: &[],
    },
    Table {
        name: "runs",
        columns: &[
            "run",
            "seq",
            "workflow",
            "identity",
            "planned_ms",
            "actions",
            "paused",
            "error",
        ],
        booleans: &["paused"],
    },
    Table {
        name: "made_by_junction",
        columns: &["kind", "id", "made_ms"],
        booleans: &[],
    },
    Table {
        name: "quarantine",
        columns: &[
            "id", "identity", "seq", "timer", "reason", "at_ms", "released", "part",
        ],
        booleans: &["released"],
    },
];

/// Rows sent to PostgreSQL per `COPY` chunk.
const CHUNK_ROWS: usize = 5_000;

/// Copies the SQLite store at `from` into the empty PostgreSQL store at `to`. Returns the rows
/// copied per table.
pub async fn copy(from: &str, to: &str) -> Result<Vec<(&'static str, u64)>, StoreError> {
    let (StoreLocation::Sqlite(path), StoreLocation::Postgres(target)) =
        (locate(from)?, locate(to)?)
    else {
        return Err(StoreError::Unsupported {
            url: format!("{} → {}", crate::redact_url(from), crate::redact_url(to)),
            reason: "a store is moved from sqlite://PATH to postgres://…".into(),
        });
    };
    if !std::path::Path::new(path).exists() {
        return Err(StoreError::Unsupported {
            url: crate::redact_url(from),
            reason: "no SQLite store at this path".into(),
        });
    }
    // Bring the source to this version's schema first, then read it as it stands.
    crate::migrate(from).await?;
    let source = path.to_owned();
    tokio::task::spawn_blocking(move || crate::sqlite::index_all(&source))
        .await
        .map_err(|e| StoreError::Pool(e.to_string()))??;
    crate::migrate(to).await?;
    let (mut client, connection) = postgres::config(target)?
        .connect(tokio_postgres::NoTls)
        .await?;
    let connection = tokio::spawn(connection);
    let tx = client.transaction().await?;
    let occupied: bool = tx
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM events) OR EXISTS (SELECT 1 FROM actions)",
            &[],
        )
        .await?
        .get(0);
    if occupied {
        return Err(StoreError::Unsupported {
            url: crate::redact_url(to),
            reason: "the target already holds events or actions: move into an empty database"
                .into(),
        });
    }
    // The new schema's single partition gives way to the source's partitions and cursors.
    tx.execute("DELETE FROM planner_partitions", &[]).await?;
    let mut copied = Vec::new();
    for table in TABLES {
        let (chunks, mut received) = tokio::sync::mpsc::channel(4);
        let reader = read_table(path.to_owned(), table, chunks);
        let sink = tx
            .copy_in(&format!(
                "COPY {} ({}) FROM STDIN",
                table.name,
                table.columns.join(", ")
            ))
            .await?;
        let mut sink = std::pin::pin!(sink);
        let mut rows = 0;
        while let Some((count, chunk)) = received.recv().await {
            rows += count;
            sink.send(Bytes::from(chunk)).await?;
        }
        reader
            .await
            .map_err(|e| StoreError::Pool(e.to_string()))??;
        sink.finish().await?;
        copied.push((table.name, rows));
    }
    // Numbering carries on after what was copied, into the same planning partitions.
    tx.batch_execute(
        "UPDATE event_log_head SET next_seq = (SELECT coalesce(max(seq), 0) + 1 FROM events),
                                   partitions = (SELECT count(*) FROM planner_partitions);
         SELECT setval(pg_get_serial_sequence('actions', 'position'),
                       (SELECT coalesce(max(position), 0) + 1 FROM actions), false);
         SELECT setval(pg_get_serial_sequence('rejected', 'id'),
                       (SELECT coalesce(max(id), 0) + 1 FROM rejected), false);
         SELECT setval(pg_get_serial_sequence('quarantine', 'id'),
                       (SELECT coalesce(max(id), 0) + 1 FROM quarantine), false);",
    )
    .await?;
    tx.commit().await?;
    drop(client);
    let _ = connection.await;
    Ok(copied)
}

/// Reads one table on a blocking thread and hands its rows over in PostgreSQL's COPY text
/// format, [`CHUNK_ROWS`] at a time (a few chunks in memory at most, whatever the table's size).
fn read_table(
    path: String,
    table: &'static Table,
    chunks: tokio::sync::mpsc::Sender<(u64, String)>,
) -> tokio::task::JoinHandle<Result<(), StoreError>> {
    tokio::task::spawn_blocking(move || -> Result<(), StoreError> {
        let conn = rusqlite::Connection::open_with_flags(
            &path,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
        )?;
        let mut statement = conn.prepare(&format!(
            "SELECT {} FROM {}",
            table.columns.join(", "),
            table.name
        ))?;
        let booleans: Vec<bool> = table
            .columns
            .iter()
            .map(|c| table.booleans.contains(c))
            .collect();
        let (mut text, mut count) = (String::new(), 0u64);
        let mut rows = statement.query([])?;
        while let Some(row) = rows.next()? {
            for (i, boolean) in booleans.iter().enumerate() {
                if i > 0 {
                    text.push('\t');
                }
                write_value(&mut text, row.get_ref(i)?, *boolean);
            }
            text.push('\n');
            count += 1;
            if (count as usize).is_multiple_of(CHUNK_ROWS)
                && chunks
                    .blocking_send((CHUNK_ROWS as u64, std::mem::take(&mut text)))
                    .is_err()
            {
                return Ok(()); // the copy stopped on the other side; its error says why
            }
        }
        let rest = count % CHUNK_ROWS as u64;
        if rest > 0 {
            let _ = chunks.blocking_send((rest, text));
        }
        Ok(())
    })
}

/// One value in COPY's text format: `\N` for NULL, backslash escapes for the characters that
/// delimit rows and columns.
fn write_value(out: &mut String, value: ValueRef<'_>, boolean: bool) {
    match value {
        ValueRef::Null => out.push_str("\\N"),
        ValueRef::Integer(n) if boolean => out.push(if n != 0 { 't' } else { 'f' }),
        ValueRef::Integer(n) => out.push_str(&n.to_string()),
        ValueRef::Real(x) => out.push_str(&x.to_string()),
        ValueRef::Text(bytes) | ValueRef::Blob(bytes) => {
            for c in String::from_utf8_lossy(bytes).chars() {
                match c {
                    '\\' => out.push_str("\\\\"),
                    '\t' => out.push_str("\\t"),
                    '\n' => out.push_str("\\n"),
                    '\r' => out.push_str("\\r"),
                    c => out.push(c),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_escaped_for_copy() {
        let mut out = String::new();
        write_value(&mut out, ValueRef::Text(b"a\tb\nc\\d\re"), false);
        assert_eq!(out, "a\\tb\\nc\\\\d\\re");
        out.clear();
        write_value(&mut out, ValueRef::Null, false);
        write_value(&mut out, ValueRef::Integer(1), true);
        write_value(&mut out, ValueRef::Integer(0), true);
        write_value(&mut out, ValueRef::Integer(-7), false);
        assert_eq!(out, "\\Ntf-7");
    }
}
