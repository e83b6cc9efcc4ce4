use super::*;
use crate::Appended;
use chrono::Duration as ChronoDuration;
use junction_model::parse_batch;
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;

fn at(seconds: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(1_800_000_000 + seconds, 0).unwrap()
}

fn batch(source: &str, received_at: DateTime<Utc>, messages: serde_json::Value) -> AppendBatch {
    let envelope = parse_batch(
        json!({ "batch": messages }).to_string().as_bytes(),
        received_at,
    )
    .unwrap();
    AppendBatch::new(source, received_at, envelope.messages, envelope.rejected)
}

async fn open(dir: &tempfile::TempDir) -> SqliteStore {
    SqliteStore::open(dir.path().join("data/junction.db"), StoreOptions::default())
        .await
        .unwrap()
}

#[tokio::test]
async fn appends_are_numbered_in_arrival_order_and_listed_newest_first() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir).await;
    let receipt = store
        .append(batch(
            "web",
            at(0),
            json!([
                {"type": "identify", "userId": "u1", "messageId": "m1", "traits": {"plan": "pro"}},
                {"type": "track", "userId": "u1", "event": "Signed In", "messageId": "m2"},
                {"type": "page", "anonymousId": "a1", "messageId": "m3"},
            ]),
        ))
        .await
        .unwrap();
    assert_eq!(
        receipt.events,
        [
            Appended::Stored(1),
            Appended::Stored(2),
            Appended::Stored(3)
        ]
    );

    let page = store.events(EventQuery::default()).await.unwrap();
    let ids: Vec<_> = page.items.iter().map(|e| e.message_id.as_str()).collect();
    assert_eq!(ids, ["m3", "m2", "m1"]);
    let first = &page.items[2];
    assert_eq!(
        (first.kind.as_str(), first.identity.as_str()),
        ("identify", "u1")
    );
    assert_eq!(first.body["traits"]["plan"], "pro");
    assert_eq!(first.received_at, at(0));
    assert_eq!(page.items[0].identity, "a1");
    assert_eq!(page.next_cursor, None);
}

#[tokio::test]
async fn filters_combine_and_cursors_walk_every_page_once() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir).await;
    let messages: Vec<_> = (0..25)
        .map(|i| {
            json!({"type": if i % 2 == 0 {"track"} else {"identify"}, "event": "E",
                        "userId": format!("u{}", i % 3), "messageId": format!("m{i}")})
        })
        .collect();
    store
        .append(batch("web", at(0), json!(messages)))
        .await
        .unwrap();

    let mut seen = Vec::new();
    let mut cursor = None;
    loop {
        let page = store
            .events(EventQuery {
                cursor: cursor.clone(),
                limit: Some(4),
                ..Default::default()
            })
            .await
            .unwrap();
        seen.extend(page.items.iter().map(|e| e.seq));
        match page.next_cursor {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    assert_eq!(seen, (1..=25).rev().collect::<Vec<i64>>());

    let tracks_of_u0 = store
        .events(EventQuery {
            kind: Some("track".into()),
            user_id: Some("u0".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    // i even and i % 3 == 0: 0, 6, 12, 18, 24
    assert_eq!(tracks_of_u0.items.len(), 5);
    let by_id = store
        .events(EventQuery {
            message_id: Some("m7".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(by_id.items.len(), 1);
    assert_eq!(
        store.event(by_id.items[0].seq).await.unwrap(),
        Some(by_id.items[0].clone())
    );
    assert_eq!(store.event(999).await.unwrap(), None);
}

#[tokio::test]
async fn a_message_id_is_stored_once_per_source_within_the_window() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(
        dir.path().join("j.db"),
        StoreOptions {
            dedupe_window: Duration::from_secs(3600),
        },
    )
    .await
    .unwrap();
    let message = json!({"type": "identify", "userId": "u1", "messageId": "dup"});
    let first = store
        .append(batch(
            "web",
            at(0),
            json!([message.clone(), message.clone()]),
        ))
        .await
        .unwrap();
    assert_eq!(first.events, [Appended::Stored(1), Appended::Duplicate]);
    let again = store
        .append(batch("web", at(3599), json!([message.clone()])))
        .await
        .unwrap();
    assert_eq!(again.events, [Appended::Duplicate]);
    // Another source may use the same id.
    let other = store
        .append(batch("ios", at(10), json!([message.clone()])))
        .await
        .unwrap();
    assert_eq!(other.stored(), 1);
    // Past the window (measured from the last time it was stored) it is new again.
    let later = store
        .append(batch("web", at(3601), json!([message])))
        .await
        .unwrap();
    assert_eq!(later.stored(), 1);
    let all = store.events(EventQuery::default()).await.unwrap();
    assert_eq!(all.items.len(), 3);
}

#[tokio::test]
async fn refused_messages_are_kept_with_their_reason() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir).await;
    let receipt = store
        .append(batch(
            "web",
            at(5),
            json!([
                {"type": "track", "userId": "u1", "messageId": "no-event"},
                {"type": "identify", "userId": "u1"},
            ]),
        ))
        .await
        .unwrap();
    assert_eq!(receipt.stored(), 1);
    let rejected = store.rejected(RejectedQuery::default()).await.unwrap();
    let record = &rejected.items[0];
    assert_eq!(record.field, "event");
    assert_eq!(record.code, "invalid_message");
    assert_eq!(record.reason, "required for a track call");
    assert_eq!(record.message_id.as_deref(), Some("no-event"));
    assert_eq!((record.index, record.kind.as_deref()), (0, Some("track")));
    assert!(record.body.contains("no-event"));
    assert_eq!(record.received_at, at(5));
}

#[tokio::test]
async fn concurrent_appends_share_commits_and_lose_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(open(&dir).await);
    let tasks: Vec<_> = (0..400)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .append(batch(
                        "web",
                        at(0),
                        json!([
                            {"type": "track", "userId": format!("u{}", i % 7), "event": "E",
                             "messageId": format!("m{i}")}
                        ]),
                    ))
                    .await
                    .unwrap()
            })
        })
        .collect();
    let mut seqs = Vec::new();
    for task in tasks {
        match task.await.unwrap().events[..] {
            [Appended::Stored(seq)] => seqs.push(seq),
            ref other => panic!("{other:?}"),
        }
    }
    seqs.sort();
    seqs.dedup();
    assert_eq!(seqs.len(), 400);
    let page = store
        .events(EventQuery {
            limit: Some(1000),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(page.items.len(), 400);
}

#[tokio::test]
async fn committed_events_survive_closing_and_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir).await;
    store
        .append(batch(
            "web",
            at(0),
            json!([{"type": "identify", "userId": "u1", "messageId": "kept"}]),
        ))
        .await
        .unwrap();
    store.close().await.unwrap();
    assert!(matches!(
        store
            .append(batch(
                "web",
                at(1),
                json!([{"type": "identify", "userId": "u"}])
            ))
            .await,
        Err(StoreError::Closed)
    ));
    assert!(store.check().await.is_err());
    drop(store);

    let reopened = open(&dir).await;
    reopened.check().await.unwrap();
    let page = reopened.events(EventQuery::default()).await.unwrap();
    assert_eq!(page.items[0].message_id, "kept");
    // The window survives a restart too.
    let again = reopened
        .append(batch(
            "web",
            at(2),
            json!([{"type": "identify", "userId": "u1", "messageId": "kept"}]),
        ))
        .await
        .unwrap();
    assert_eq!(again.events, [Appended::Duplicate]);
}

#[tokio::test]
async fn an_identity_reads_its_events_in_arrival_order() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir).await;
    for round in 0..3 {
        store
            .append(batch("web", at(round) + ChronoDuration::milliseconds(1), json!([
                {"type": "track", "userId": "u1", "event": format!("E{round}")},
                {"type": "track", "anonymousId": "a2", "event": format!("E{round}")},
                {"type": "track", "userId": "u1", "anonymousId": "a1", "event": format!("F{round}")},
            ])))
            .await
            .unwrap();
    }
    let events = store.identity_events("u1", 0, 100).await.unwrap();
    let names: Vec<_> = events.iter().map(|e| e.event.clone().unwrap()).collect();
    assert_eq!(names, ["E0", "F0", "E1", "F1", "E2", "F2"]);
    let rest = store
        .identity_events("u1", events[3].seq, 100)
        .await
        .unwrap();
    assert_eq!(rest.len(), 2);
    assert_eq!(store.identity_events("a2", 0, 2).await.unwrap().len(), 2);
}

#[tokio::test]
async fn bad_cursors_and_limits_are_refused_with_the_rule() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir).await;
    for query in [
        EventQuery {
            cursor: Some("abc".into()),
            ..Default::default()
        },
        EventQuery {
            limit: Some(0),
            ..Default::default()
        },
        EventQuery {
            limit: Some(100_000),
            ..Default::default()
        },
    ] {
        assert!(matches!(
            store.events(query).await,
            Err(StoreError::InvalidQuery(_))
        ));
    }
}

#[tokio::test]
async fn store_urls_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("x.db").display());
    crate::open(&url, StoreOptions::default())
        .await
        .unwrap()
        .check()
        .await
        .unwrap();
    // Neither a malformed PostgreSQL URL nor a server that is not there shows the password.
    for (url, expected) in [
        (
            "postgres://u:pw@localhost:port/db",
            "not a PostgreSQL connection URL",
        ),
        (
            "postgres://u:pw@127.0.0.1:1/db",
            "error connecting to server",
        ),
    ] {
        let err = crate::open(url, StoreOptions::default())
            .await
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains(expected) && !err.contains("pw"), "{err}");
    }
    assert!(
        crate::open("mysql://x", StoreOptions::default())
            .await
            .is_err()
    );
}

#[tokio::test]
async fn id_filters_find_events_through_either_id() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir).await;
    store
        .append(batch("web", at(0), json!([
            {"type": "page", "anonymousId": "a1", "messageId": "anon-only"},
            {"type": "identify", "userId": "u1", "anonymousId": "a1", "messageId": "both"},
            {"type": "track", "userId": "u1", "event": "E", "messageId": "user-only"},
            {"type": "track", "userId": "a1", "event": "E", "messageId": "user-named-like-anon"},
        ])))
        .await
        .unwrap();
    let ids = |page: Page<StoredEvent>| {
        page.items
            .into_iter()
            .map(|e| e.message_id)
            .collect::<Vec<_>>()
    };
    let by_anonymous = store
        .events(EventQuery {
            anonymous_id: Some("a1".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(ids(by_anonymous), ["both", "anon-only"]);
    let by_user = store
        .events(EventQuery {
            user_id: Some("u1".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(ids(by_user), ["user-only", "both"]);
    let by_user_a1 = store
        .events(EventQuery {
            user_id: Some("a1".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(ids(by_user_a1), ["user-named-like-anon"]);
}

/// Ingest speed depends on few indexes; reads must still not scan the whole log.
#[tokio::test]
async fn filtered_reads_use_indexes_not_scans() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("plan.db");
    let store = SqliteStore::open(&path, StoreOptions::default())
        .await
        .unwrap();
    store.close().await.unwrap();
    let conn = Connection::open(&path).unwrap();
    for condition in [
        format!(
            "{} AND user_id = 'u'",
            super::identity_index::events_of("'u'")
        ),
        format!(
            "{} AND anonymous_id = 'a'",
            super::identity_index::events_of("'a'")
        ),
        "seq IN (SELECT seq FROM message_ids WHERE message_id = 'm')".to_owned(),
    ] {
        let sql = format!(
            "EXPLAIN QUERY PLAN SELECT seq FROM events WHERE {condition} ORDER BY seq DESC LIMIT 10"
        );
        let plan: Vec<String> = conn
            .prepare(&sql)
            .unwrap()
            .query_map([], |row| row.get::<_, String>(3))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        let plan = plan.join(" | ");
        for table in ["events", "message_ids", "identity_index"] {
            assert!(
                !plan.contains(&format!("SCAN {table}")),
                "{condition}: {plan}"
            );
        }
    }
}

fn index_progress(path: &std::path::Path) -> (i64, i64) {
    let conn = Connection::open(path).unwrap();
    conn.query_row(
        "SELECT (SELECT upto FROM index_progress), (SELECT coalesce(max(seq), 0) FROM events)",
        [],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )
    .unwrap()
}

async fn wait_until_indexed(path: &std::path::Path) {
    for _ in 0..500 {
        let (upto, last) = index_progress(path);
        if upto == last {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!(
        "the identity index did not catch up: {:?}",
        index_progress(path)
    );
}

/// Lookups by id and de-duplication are exact whether the indexes (identity, messageId) have
/// caught up or not, including while they are being rebuilt after a restart.
#[tokio::test]
async fn id_lookups_are_exact_with_or_without_the_index() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("lag.db");
    let mut store = SqliteStore::open(&path, StoreOptions::default())
        .await
        .unwrap();
    let messages: Vec<_> = (0..5000)
        .map(|i| {
            json!({"type": "track", "event": "E", "userId": format!("u{}", i % 50),
                        "anonymousId": format!("a{}", i % 7), "messageId": format!("m{i}")})
        })
        .collect();
    for chunk in messages.chunks(1000) {
        store
            .append(batch("web", at(0), json!(chunk)))
            .await
            .unwrap();
    }
    async fn lookups(store: &SqliteStore) -> Vec<Vec<i64>> {
        let mut found = Vec::new();
        for query in [
            EventQuery {
                user_id: Some("u7".into()),
                limit: Some(1000),
                ..Default::default()
            },
            EventQuery {
                anonymous_id: Some("a3".into()),
                limit: Some(1000),
                ..Default::default()
            },
            EventQuery {
                user_id: Some("a3".into()),
                ..Default::default()
            },
        ] {
            let page = store.events(query).await.unwrap();
            found.push(page.items.iter().map(|e| e.seq).collect::<Vec<_>>());
        }
        for message_id in ["m17", "m4321"] {
            let query = EventQuery {
                message_id: Some(message_id.into()),
                ..Default::default()
            };
            let page = store.events(query).await.unwrap();
            found.push(page.items.iter().map(|e| e.seq).collect::<Vec<_>>());
        }
        found.push(
            store
                .identity_events("u7", 2500, 1000)
                .await
                .unwrap()
                .iter()
                .map(|e| e.seq)
                .collect(),
        );
        found
    }
    wait_until_indexed(&path).await;
    let indexed = lookups(&store).await;
    assert_eq!(indexed[0].len(), 100);
    assert_eq!(indexed[1].len(), 714); // i % 7 == 3 for i < 5000
    assert!(indexed[2].is_empty());
    assert_eq!((indexed[3].len(), indexed[4].len()), (1, 1), "by messageId");
    assert_eq!(indexed[5].len(), 50);
    assert!(indexed[5].windows(2).all(|w| w[0] < w[1]), "oldest first");

    // Roll the index back while the store is down, as if indexing had stopped at 1234, then as
    // if it had never run: answers are the same while it catches up, and after.
    for upto in [1234, 0] {
        store.close().await.unwrap();
        drop(store);
        let conn = Connection::open(&path).unwrap();
        conn.execute("DELETE FROM identity_index WHERE seq > ?1", [upto])
            .unwrap();
        conn.execute("DELETE FROM message_ids WHERE seq > ?1", [upto])
            .unwrap();
        conn.execute("UPDATE index_progress SET upto = ?1", [upto])
            .unwrap();
        drop(conn);
        store = SqliteStore::open(&path, StoreOptions::default())
            .await
            .unwrap();
        assert_eq!(
            lookups(&store).await,
            indexed,
            "index rolled back to {upto}"
        );
        let again = store
            .append(batch("web", at(1), json!(messages[..2000])))
            .await
            .unwrap();
        assert_eq!(
            again.duplicates(),
            2000,
            "duplicates caught, index rolled back to {upto}"
        );
        wait_until_indexed(&path).await;
        assert_eq!(lookups(&store).await, indexed, "index rebuilt from {upto}");
        let again = store
            .append(batch("web", at(2), json!(messages[3000..])))
            .await
            .unwrap();
        assert_eq!(
            again.duplicates(),
            2000,
            "duplicates caught, index rebuilt from {upto}"
        );
    }
}

#[tokio::test]
async fn the_identity_map_remembers_per_workspace_and_survives_restarts() {
    use crate::IdentityKey::{AnonymousId, Email, UserId};
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir).await;
    let keys = [
        UserId("u1".into()),
        AnonymousId("a1".into()),
        Email("Ann@Example.com".into()),
    ];
    store.identity_remember("ws1", &keys, "c1").await.unwrap();
    assert_eq!(
        store
            .identity_lookup("ws1", &UserId("u1".into()))
            .await
            .unwrap()
            .as_deref(),
        Some("c1")
    );
    assert_eq!(
        store
            .identity_lookup("ws1", &Email("ann@example.COM".into()))
            .await
            .unwrap()
            .as_deref(),
        Some("c1")
    );
    assert_eq!(
        store
            .identity_lookup("ws2", &UserId("u1".into()))
            .await
            .unwrap(),
        None
    );
    // A later mapping replaces an earlier one (a lead that became another contact).
    store
        .identity_remember("ws1", &[AnonymousId("a1".into())], "c2")
        .await
        .unwrap();
    assert_eq!(
        store
            .identity_lookup("ws1", &AnonymousId("a1".into()))
            .await
            .unwrap()
            .as_deref(),
        Some("c2")
    );
    store.identity_forget("ws1", "c1").await.unwrap();
    assert_eq!(
        store
            .identity_lookup("ws1", &UserId("u1".into()))
            .await
            .unwrap(),
        None
    );
    store.close().await.unwrap();
    drop(store);
    let reopened = open(&dir).await;
    assert_eq!(
        reopened
            .identity_lookup("ws1", &AnonymousId("a1".into()))
            .await
            .unwrap()
            .as_deref(),
        Some("c2")
    );
}

#[tokio::test]
async fn concurrent_writes_each_commit_or_undo_alone() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(open(&dir).await);
    store
        .write(Box::new(|tx| {
            tx.execute_batch("CREATE TABLE written (n INTEGER PRIMARY KEY)")?;
            Ok(())
        }))
        .await
        .unwrap();
    // Queued at once; every seventh writes its row and then refuses, as a fenced or
    // conflicting write does.
    let writes: Vec<_> = (0..300i64)
        .map(|n| {
            let store = store.clone();
            tokio::spawn(async move {
                let job: writer::Job = Box::new(move |tx| {
                    tx.execute("INSERT INTO written (n) VALUES (?1)", [n])?;
                    if n % 7 == 0 {
                        return Err(StoreError::Conflict(format!("row {n}")));
                    }
                    Ok(())
                });
                if n % 2 == 0 {
                    store.write(job).await
                } else {
                    store.write_transient(job).await
                }
            })
        })
        .collect();
    for (n, write) in writes.into_iter().enumerate() {
        let result = write.await.unwrap();
        assert_eq!(result.is_err(), n % 7 == 0, "write {n}: {result:?}");
    }
    let rows: Vec<i64> = store
        .read(|conn| {
            let mut query = conn.prepare("SELECT n FROM written ORDER BY n")?;
            let rows = query.query_map([], |r| r.get(0))?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
        .await
        .unwrap();
    let expected: Vec<i64> = (0..300).filter(|n| n % 7 != 0).collect();
    assert_eq!(rows, expected);
    // And they are on disk: a reopened store reads the same.
    store.close().await.unwrap();
    drop(store);
    let store = open(&dir).await;
    let count: i64 = store
        .read(|conn| Ok(conn.query_row("SELECT count(*) FROM written", [], |r| r.get(0))?))
        .await
        .unwrap();
    assert_eq!(count, expected.len() as i64);
}
