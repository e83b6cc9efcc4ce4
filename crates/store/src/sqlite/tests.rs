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
    AppendBatch {
        source: source.into(),
        received_at,
        events: envelope.messages,
        rejected: envelope.rejected,
    }
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
    let err = crate::open("postgres://u:pw@localhost/db", StoreOptions::default())
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("PostgreSQL") && !err.contains("pw"), "{err}");
    assert!(
        crate::open("mysql://x", StoreOptions::default())
            .await
            .is_err()
    );
}
