//! The store conformance suite: what every backend must do, written once against the `Store`
//! traits and run unchanged for each backend (the `backends!` list at the bottom). A new backend
//! is added by naming how to open a fresh, empty one there.

use chrono::{DateTime, Utc};
use junction_model::parse_batch;
use junction_store::{
    ActionOutcome, ActionStatus, AppendBatch, Appended, Attempt, DeadLetterQuery, EngineCommit,
    Erasure, EventQuery, IdentityKey, NewAction, NewQuarantine, NewRun, NewTimer, RejectedQuery,
    SharedWrite, Store, StoreError, lane, partition_of,
};
use serde_json::json;
use std::sync::Arc;

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

fn track(user: &str, message_id: &str) -> serde_json::Value {
    json!({"type": "track", "userId": user, "event": "E", "messageId": message_id})
}

fn action(id: &str, identity: &str, seq: i64, lane: i64) -> NewAction {
    NewAction {
        id: id.into(),
        identity: identity.into(),
        run: format!("run-{id}"),
        seq,
        lane,
        standby_for: None,
        capped: None,
        body: json!({"id": id, "workflow": "w"}).to_string(),
    }
}

fn attempt(number: i64, outcome: &str) -> Attempt {
    Attempt {
        number,
        at_ms: 1_000,
        duration_ms: 5,
        outcome: outcome.into(),
        error: None,
        calls: json!([{"method": "PUT", "path": "/contacts/x", "status": 200}]),
    }
}

fn done(id: &str) -> ActionOutcome {
    ActionOutcome::Done {
        id: id.into(),
        result: Some("ok".into()),
        attempt: attempt(1, "done"),
        merged: Vec::new(),
    }
}

/// Records outcomes the way delivery does: under a claim on their user (then released).
async fn record(store: &dyn Store, identity: &str, outcomes: Vec<ActionOutcome>) {
    let now = chrono::Utc::now().timestamp_millis();
    let claims = store
        .claim_users("test-node", now, 60_000, 1_000)
        .await
        .unwrap();
    let claim = claims
        .iter()
        .find(|c| c.identity == identity)
        .unwrap_or_else(|| panic!("{identity} has no due head to claim: {claims:?}"));
    store.action_outcomes(claim, outcomes).await.unwrap();
    for claim in &claims {
        store.release_claim(claim).await.unwrap();
    }
}

async fn heads(store: &dyn Store, now_ms: i64) -> Vec<String> {
    store
        .ready_heads(now_ms, 100)
        .await
        .unwrap()
        .into_iter()
        .map(|a| a.id)
        .collect()
}

/// Appends are numbered in arrival order; a messageId is stored once per source; refusals
/// are kept with their reason.
async fn appends_are_ordered_and_deduplicated_per_source(store: Arc<dyn Store>) {
    let first = store
        .append(batch(
            "web",
            at(0),
            json!([track("u1", "m1"), track("u2", "m2"), {"type": "track"}]),
        ))
        .await
        .unwrap();
    let again = store
        .append(batch(
            "web",
            at(1),
            json!([track("u1", "m2"), track("u1", "m3")]),
        ))
        .await
        .unwrap();
    let other_source = store
        .append(batch("ios", at(2), json!([track("u1", "m1")])))
        .await
        .unwrap();
    let seqs = |receipt: &junction_store::AppendReceipt| -> Vec<i64> {
        receipt
            .events
            .iter()
            .filter_map(|a| match a {
                Appended::Stored(seq) => Some(*seq),
                Appended::Duplicate => None,
            })
            .collect()
    };
    assert_eq!(first.stored(), 2);
    assert_eq!((again.stored(), again.duplicates()), (1, 1));
    assert_eq!(other_source.stored(), 1, "de-duplication is per source");
    let all: Vec<i64> = [seqs(&first), seqs(&again), seqs(&other_source)].concat();
    assert!(all.windows(2).all(|w| w[0] < w[1]), "{all:?}");
    let page = store.events(EventQuery::default()).await.unwrap();
    let listed: Vec<&str> = page.items.iter().map(|e| e.message_id.as_str()).collect();
    assert_eq!(listed, ["m1", "m3", "m2", "m1"], "newest first");
    let rejected = store.rejected(RejectedQuery::default()).await.unwrap();
    assert_eq!(rejected.items.len(), 1);
    assert_eq!(rejected.items[0].field, "userId");
}

/// Each identity reads its events in log order; the planner reads everything after a cursor.
async fn events_are_read_per_identity_and_after_a_cursor(store: Arc<dyn Store>) {
    let messages: Vec<_> = (0..10)
        .map(|n| track(if n % 2 == 0 { "even" } else { "odd" }, &format!("m{n}")))
        .collect();
    store
        .append(batch("web", at(0), json!(messages)))
        .await
        .unwrap();
    let even = store.identity_events("even", 0, 100).await.unwrap();
    let ids: Vec<&str> = even.iter().map(|e| e.message_id.as_str()).collect();
    assert_eq!(ids, ["m0", "m2", "m4", "m6", "m8"]);
    let after = store.identity_events("even", even[1].seq, 2).await.unwrap();
    assert_eq!(after[0].message_id, "m4");
    let planner = store.events_after(0, even[2].seq, 3).await.unwrap();
    let ids: Vec<&str> = planner.iter().map(|e| e.message_id.as_str()).collect();
    assert_eq!(ids, ["m5", "m6", "m7"]);
    let one = store.event(planner[0].seq).await.unwrap().unwrap();
    assert_eq!(one.body["messageId"], "m5");
}

/// An engine commit is all or nothing, and committing the same plan again (a batch planned
/// twice after a crash) adds nothing.
async fn engine_commits_are_idempotent(store: Arc<dyn Store>) {
    let commit = EngineCommit {
        cursor: Some(7),
        profiles: vec![("u1".into(), r#"{"v":1,"milestones":["a"]}"#.into())],
        actions: vec![action("a1", "u1", 7, 1), action("a2", "u1", 7, 1)],
        timers: vec![NewTimer {
            id: "t1".into(),
            identity: "u1".into(),
            fire_at_ms: 500,
            body: "{}".into(),
        }],
        timers_done: Vec::new(),
        runs: vec![NewRun {
            run: "m1/w".into(),
            seq: 7,
            workflow: "w".into(),
            identity: "u1".into(),
            actions: 2,
            paused: false,
            error: None,
        }],
        ..EngineCommit::default()
    };
    store.engine_commit(commit.clone()).await.unwrap();
    store.engine_commit(commit).await.unwrap();
    assert_eq!(store.cursor(0).await.unwrap(), 7);
    let profiles = store
        .profiles(vec!["u1".into(), "u2".into()])
        .await
        .unwrap();
    assert_eq!(profiles.len(), 1);
    let pending = store.pending_of("u1", 10).await.unwrap();
    let ids: Vec<&str> = pending.iter().map(|a| a.id.as_str()).collect();
    assert_eq!(ids, ["a1", "a2"], "planned once, in order");
    assert_eq!(store.due_timers(0, 499, 10).await.unwrap().len(), 0);
    assert_eq!(store.due_timers(0, 500, 10).await.unwrap().len(), 1);
    assert_eq!(store.next_timer_ms(0).await.unwrap(), Some(500));
    store
        .engine_commit(EngineCommit {
            timers_done: vec!["t1".into()],
            ..EngineCommit::default()
        })
        .await
        .unwrap();
    assert_eq!(store.next_timer_ms(0).await.unwrap(), None);
}

/// Journeys: a wait whose event came is brought forward (only while pending), and a capped
/// message is kept out of delivery, listed apart from dead letters, and released by hand.
async fn capped_messages_wait_for_release_and_timers_move(store: Arc<dyn Store>) {
    let timer = |id: &str, at: i64| NewTimer {
        id: id.into(),
        identity: "u1".into(),
        fire_at_ms: at,
        body: "{}".into(),
    };
    let mut capped = action("m2", "u1", 3, 0);
    capped.capped = Some("workspace cap 2 per 1d reached".into());
    store
        .engine_commit(EngineCommit {
            actions: vec![action("m1", "u1", 3, 0), capped],
            timers: vec![timer("wait", 10_000), timer("done", 20_000)],
            ..EngineCommit::default()
        })
        .await
        .unwrap();
    store
        .engine_commit(EngineCommit {
            timers_done: vec!["done".into()],
            timers_rescheduled: vec![("wait".into(), 700), ("done".into(), 600)],
            ..EngineCommit::default()
        })
        .await
        .unwrap();
    assert_eq!(
        store.next_timer_ms(0).await.unwrap(),
        Some(700),
        "the pending wait moved; the finished timer did not come back"
    );
    let pending: Vec<String> = store
        .pending_of("u1", 10)
        .await
        .unwrap()
        .into_iter()
        .map(|a| a.id)
        .collect();
    assert_eq!(pending, ["m1"], "a capped message is not delivered");
    let listed = |capped: bool| {
        let store = store.clone();
        async move {
            store
                .dead_letters(DeadLetterQuery {
                    capped,
                    limit: 10,
                    ..DeadLetterQuery::default()
                })
                .await
                .unwrap()
        }
    };
    assert!(listed(false).await.is_empty(), "capped is not failed");
    let held = listed(true).await;
    assert_eq!(held.len(), 1);
    assert_eq!(held[0].status, ActionStatus::Capped);
    assert_eq!(held[0].error_code.as_deref(), Some("capped"));
    assert_eq!(
        held[0].result.as_deref(),
        Some("workspace cap 2 per 1d reached")
    );
    assert_eq!(store.outbox_counts().await.unwrap().capped, 1);
    assert_eq!(
        store
            .release_capped(vec!["m2".into(), "m1".into(), "nope".into()])
            .await
            .unwrap(),
        1,
        "only capped messages are released"
    );
    let pending: Vec<String> = store
        .pending_of("u1", 10)
        .await
        .unwrap()
        .into_iter()
        .map(|a| a.id)
        .collect();
    assert_eq!(pending, ["m1", "m2"]);
    assert!(listed(true).await.is_empty());
}

/// Shadow delivery's record: the actions whose result says shadow, newest first, with the
/// calls each would have made; actions delivered for real are not listed.
async fn shadow_calls_list_what_would_have_been_sent(store: Arc<dyn Store>) {
    store
        .engine_commit(EngineCommit {
            actions: vec![
                action("s1", "u1", 1, 1),
                action("s2", "u1", 1, 1),
                action("r1", "u1", 1, 1),
            ],
            ..EngineCommit::default()
        })
        .await
        .unwrap();
    let shadow = |id: &str| ActionOutcome::Done {
        id: id.into(),
        result: Some(format!("{}contact x", junction_store::SHADOW_RESULT_PREFIX)),
        attempt: attempt(1, "done"),
        merged: Vec::new(),
    };
    record(store.as_ref(), "u1", vec![shadow("s1")]).await;
    record(store.as_ref(), "u1", vec![shadow("s2")]).await;
    record(store.as_ref(), "u1", vec![done("r1")]).await;
    let listed = store.shadow_calls(10).await.unwrap();
    let ids: Vec<&str> = listed.iter().map(|s| s.action.as_str()).collect();
    assert_eq!(ids, ["s2", "s1"]);
    assert_eq!(listed[0].workflow, "w");
    assert_eq!(listed[0].calls[0]["path"], "/contacts/x");
    assert_eq!(store.shadow_calls(1).await.unwrap().len(), 1);
}

/// Planning partitions: each identity's events, timers and released entries belong to one
/// partition, each partition has its own cursor, and the partitions share state through
/// conditional writes that refuse a commit made on state changed since it was read.
async fn partitions_split_planning_and_share_state_safely(store: Arc<dyn Store>) {
    let now = chrono::Utc::now().timestamp_millis();
    assert_eq!(
        store.partitions().await.unwrap(),
        1,
        "a new schema starts with one partition"
    );
    store.repartition(4, "node-a", now).await.unwrap();
    assert_eq!(store.partitions().await.unwrap(), 4);
    let users: Vec<String> = (0..20).map(|n| format!("user-{n}")).collect();
    let messages: Vec<_> = (0..60)
        .map(|n| track(&users[n % 20], &format!("m{n}")))
        .collect();
    store
        .append(batch("web", at(0), json!(messages)))
        .await
        .unwrap();
    let mut seen = 0;
    for partition in 0..4 {
        let events = store.events_after(partition, 0, 100).await.unwrap();
        assert!(
            events
                .iter()
                .all(|e| partition_of(&e.identity, 4) == partition),
            "partition {partition} reads only its identities"
        );
        assert!(
            events.windows(2).all(|w| w[0].seq < w[1].seq),
            "in log order"
        );
        seen += events.len();
    }
    assert_eq!(seen, 60, "every event is in exactly one partition");

    // Cursors move independently.
    let first = store.events_after(1, 0, 100).await.unwrap();
    let last = first.last().unwrap().seq;
    store
        .engine_commit(EngineCommit {
            partition: 1,
            cursor: Some(last),
            timers: vec![NewTimer {
                id: "t-1".into(),
                identity: first[0].identity.clone(),
                fire_at_ms: 10,
                body: "{}".into(),
            }],
            ..EngineCommit::default()
        })
        .await
        .unwrap();
    assert_eq!(store.cursor(1).await.unwrap(), last);
    assert_eq!(store.cursor(2).await.unwrap(), 0);
    let states = store.partition_states().await.unwrap();
    assert_eq!(states[1].behind, 0);
    assert_eq!(
        states.iter().map(|p| p.behind).sum::<i64>(),
        60 - first.len() as i64
    );
    assert_eq!(store.due_timers(1, 10, 10).await.unwrap().len(), 1);
    assert!(
        store.due_timers(2, 10, 10).await.unwrap().is_empty(),
        "a timer is its partition's"
    );
    assert_eq!(store.next_timer_ms(1).await.unwrap(), Some(10));

    let refused = store.repartition(2, "node-a", now).await;
    assert!(
        matches!(&refused, Err(StoreError::Refused(reason)) if reason.contains("not planned yet")),
        "{refused:?}"
    );

    // Shared state: written only if unchanged since read; a refused commit writes nothing.
    let turn = |value: &str, expected: i64| SharedWrite {
        key: "round_robin/w/assign".into(),
        value: value.into(),
        expected,
    };
    store
        .engine_commit(EngineCommit {
            partition: 2,
            shared: vec![turn("1", 0)],
            ..EngineCommit::default()
        })
        .await
        .unwrap();
    let lost = store
        .engine_commit(EngineCommit {
            partition: 3,
            cursor: Some(1_000),
            profiles: vec![("late".into(), "{}".into())],
            shared: vec![turn("1", 0)],
            ..EngineCommit::default()
        })
        .await;
    assert!(matches!(lost, Err(StoreError::Conflict(_))), "{lost:?}");
    assert!(
        store
            .profiles(vec!["late".into()])
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        store.cursor(3).await.unwrap(),
        0,
        "nothing of a refused commit is kept"
    );
    store
        .engine_commit(EngineCommit {
            partition: 3,
            shared: vec![turn("2", 1)],
            ..EngineCommit::default()
        })
        .await
        .unwrap();
    let shared = store
        .shared_state(vec!["company/none".into()], vec!["round_robin/".into()])
        .await
        .unwrap();
    assert_eq!(shared.len(), 1, "{shared:?}");
    let entry = &shared["round_robin/w/assign"];
    assert_eq!((entry.value.as_str(), entry.version), ("2", 2));

    // Caught up everywhere, but another node is alive: refused too; then allowed.
    for partition in 0..4 {
        let head = store.events_after(partition, 0, 100).await.unwrap();
        store
            .engine_commit(EngineCommit {
                partition,
                cursor: head.last().map(|e| e.seq),
                ..EngineCommit::default()
            })
            .await
            .unwrap();
    }
    store
        .heartbeat("node-b", now, now, now + 60_000)
        .await
        .unwrap();
    let refused = store.repartition(2, "node-a", now).await;
    assert!(
        matches!(&refused, Err(StoreError::Refused(reason)) if reason.contains("node-b")),
        "{refused:?}"
    );
    store.heartbeat("node-b", now, now, now).await.unwrap();
    store.repartition(2, "node-a", now + 1).await.unwrap();
    assert_eq!(store.partitions().await.unwrap(), 2);
    let timer_partition = partition_of(&first[0].identity, 2);
    assert_eq!(
        store.next_timer_ms(timer_partition).await.unwrap(),
        Some(10),
        "timers follow"
    );
    for partition in 0..2 {
        assert!(
            store
                .events_after(partition, store.cursor(partition).await.unwrap(), 10)
                .await
                .unwrap()
                .is_empty()
        );
    }
    let more = store
        .append(batch("web", at(1), json!([track("user-3", "m-new")])))
        .await
        .unwrap();
    let Appended::Stored(seq) = more.events[0] else {
        panic!("{more:?}")
    };
    let partition = partition_of("user-3", 2);
    let after = store
        .events_after(partition, store.cursor(partition).await.unwrap(), 10)
        .await
        .unwrap();
    assert_eq!(
        after.iter().map(|e| e.seq).collect::<Vec<_>>(),
        [seq],
        "new events go to the new split"
    );
}

/// Delivery works through users' heads: one action per user at a time, urgent users first;
/// outcomes move heads on, failures become dead letters that can be replayed or discarded.
async fn the_queue_serves_heads_and_records_outcomes(store: Arc<dyn Store>) {
    store
        .engine_commit(EngineCommit {
            actions: vec![
                action("a1", "bulk-user", 1, 1),
                action("a2", "bulk-user", 1, 1),
                action("b1", "urgent-user", 2, 0),
                action("c1", "failing-user", 3, 1),
            ],
            ..EngineCommit::default()
        })
        .await
        .unwrap();
    let now = chrono::Utc::now().timestamp_millis();
    assert_eq!(heads(store.as_ref(), now).await, ["b1", "a1", "c1"]);
    record(store.as_ref(), "bulk-user", vec![done("a1")]).await;
    record(store.as_ref(), "urgent-user", vec![done("b1")]).await;
    let retry = ActionOutcome::Retry {
        id: "c1".into(),
        next_at_ms: now + 60_000,
        error: "500".into(),
        code: "server_error".into(),
        attempt: attempt(1, "retry"),
        counts: true,
    };
    record(store.as_ref(), "failing-user", vec![retry]).await;
    assert_eq!(
        heads(store.as_ref(), now).await,
        ["a2"],
        "c1 waits for its retry"
    );
    record(store.as_ref(), "bulk-user", vec![done("a2")]).await;
    assert!(heads(store.as_ref(), now).await.is_empty());
    assert_eq!(store.next_due_ms().await.unwrap(), Some(now + 60_000));
    // Delivery only claims a due head; an operator's or a test's outcome may come under a
    // claim taken later (here: once the retry is due).
    let claims = store
        .claim_users("test-node", now + 60_000, 60_000, 10)
        .await
        .unwrap();
    store
        .action_outcomes(
            &claims[0],
            vec![ActionOutcome::Failed {
                id: "c1".into(),
                error: "404".into(),
                code: "not_found".into(),
                attempt: attempt(2, "failed"),
                skip_rest_of_run: false,
            }],
        )
        .await
        .unwrap();
    let dead = store
        .dead_letters(DeadLetterQuery {
            limit: 10,
            ..DeadLetterQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(
        (dead[0].id.as_str(), dead[0].status, dead[0].attempts),
        ("c1", ActionStatus::Failed, 2)
    );
    assert_eq!(store.attempts("c1").await.unwrap().len(), 2);
    assert!(
        store
            .replay("c1", vec![action("c1/replay", "failing-user", 3, 1)])
            .await
            .unwrap()
    );
    assert!(!store.replay("c1", Vec::new()).await.unwrap(), "only once");
    assert_eq!(
        store.action("c1").await.unwrap().unwrap().status,
        ActionStatus::Replayed
    );
    assert_eq!(heads(store.as_ref(), now).await, ["c1/replay"]);
    let counts = store.outbox_counts().await.unwrap();
    assert_eq!(
        (counts.pending, counts.done, counts.replayed),
        (1, 3, 1),
        "{counts:?}"
    );
    // The backlog, read through the indexes, agrees with the full count.
    let backlog = store.backlog().await.unwrap();
    assert_eq!(
        (
            backlog.pending,
            backlog.failed,
            backlog.timers_pending,
            backlog.oldest_pending_ms.map(|age| age.is_some())
        ),
        (
            counts.pending,
            counts.failed,
            counts.timers_pending,
            counts.oldest_pending_ms.map(|age| age.is_some())
        )
    );
    let a1 = store.action("a1").await.unwrap().unwrap();
    assert_eq!(
        (a1.status, a1.result.as_deref()),
        (ActionStatus::Done, Some("ok"))
    );
}

/// Heads follow every change: an error branch activated by a failure becomes its user's head,
/// and a user who gets something urgent moves ahead of users with only bulk work.
async fn heads_follow_error_branches_and_urgency(store: Arc<dyn Store>) {
    let mut fallback = action("x1/fallback", "u1", 1, 0);
    fallback.standby_for = Some("x1".into());
    store
        .engine_commit(EngineCommit {
            actions: vec![action("x1", "u1", 1, 1), fallback, action("y1", "u2", 2, 1)],
            ..EngineCommit::default()
        })
        .await
        .unwrap();
    let now = chrono::Utc::now().timestamp_millis();
    assert_eq!(heads(store.as_ref(), now).await, ["x1", "y1"]);
    let failed = ActionOutcome::Failed {
        id: "x1".into(),
        error: "400".into(),
        code: "bad".into(),
        attempt: attempt(1, "failed"),
        skip_rest_of_run: true,
    };
    record(store.as_ref(), "u1", vec![failed]).await;
    assert_eq!(
        heads(store.as_ref(), now).await,
        ["x1/fallback", "y1"],
        "the activated branch is u1's head, and urgent"
    );
    store
        .engine_commit(EngineCommit {
            actions: vec![action("y2", "u2", 3, 0)],
            ..EngineCommit::default()
        })
        .await
        .unwrap();
    record(store.as_ref(), "u1", vec![done("x1/fallback")]).await;
    assert_eq!(heads(store.as_ref(), now).await, ["y1"]);
    assert!(store.pending_of("u1", 10).await.unwrap().is_empty());
}

/// Users are served in lane order, urgent, bulk, then backfill, whatever their planning order;
/// claims can be restricted to lanes; a backfill user who gets a live action moves to its lane;
/// the backlog counts each lane and the backfilled events still to deliver.
async fn users_are_served_in_lane_order(store: Arc<dyn Store>) {
    store
        .engine_commit(EngineCommit {
            actions: vec![
                action("old-1", "backfilled", 1, lane::BACKFILL),
                action("old-2", "backfilled", 1, lane::BACKFILL),
                action("old-3", "backfilled", 2, lane::BACKFILL),
                action("sync", "live", 3, lane::BULK),
                action("message", "waiting", 4, lane::URGENT),
            ],
            ..EngineCommit::default()
        })
        .await
        .unwrap();
    let now = chrono::Utc::now().timestamp_millis();
    assert_eq!(
        heads(store.as_ref(), now).await,
        ["message", "sync", "old-1"]
    );
    let backlog = store.backlog().await.unwrap();
    assert_eq!(
        (backlog.pending_by_lane, backlog.backfill_events_pending),
        ([1, 1, 3], 2)
    );
    let claimed = |claims: Vec<junction_store::Claim>| {
        claims.into_iter().map(|c| c.identity).collect::<Vec<_>>()
    };
    let live = store
        .claim_users_in("n", now, 60_000, 10, lane::URGENT..=lane::BULK)
        .await
        .unwrap();
    assert_eq!(claimed(live), ["waiting", "live"]);
    let backfill = store
        .claim_users_in("n", now, 60_000, 10, lane::BACKFILL..=lane::BACKFILL)
        .await
        .unwrap();
    assert_eq!(claimed(backfill), ["backfilled"]);
    // A live event of the backfilled user: their head stays first in their order, and they
    // are served as a live user.
    store
        .engine_commit(EngineCommit {
            actions: vec![action("fresh", "backfilled", 5, lane::BULK)],
            ..EngineCommit::default()
        })
        .await
        .unwrap();
    store.release_claims_of("n").await.unwrap();
    let backfill = store
        .claim_users_in("n", now, 60_000, 10, lane::BACKFILL..=lane::BACKFILL)
        .await
        .unwrap();
    assert!(backfill.is_empty(), "{backfill:?}");
    assert_eq!(
        heads(store.as_ref(), now).await,
        ["message", "old-1", "sync"],
        "the backfilled user now comes in the bulk lane, by planning order"
    );
}

/// A user is delivered to by one node at a time: a claim excludes every other node until it
/// lapses; whoever takes over gets a larger token, and the old holder's writes are refused.
async fn claims_are_exclusive_and_fenced(store: Arc<dyn Store>) {
    store
        .engine_commit(EngineCommit {
            actions: vec![action("u1-a", "u1", 1, 1), action("u2-a", "u2", 2, 0)],
            ..EngineCommit::default()
        })
        .await
        .unwrap();
    let now = chrono::Utc::now().timestamp_millis();
    let a = store.claim_users("node-a", now, 1_000, 10).await.unwrap();
    let ids: Vec<&str> = a.iter().map(|c| c.identity.as_str()).collect();
    assert_eq!(ids, ["u2", "u1"], "urgent first");
    assert!(a.iter().all(|c| c.expires_ms == now + 1_000));
    assert!(
        store
            .claim_users("node-b", now + 500, 1_000, 10)
            .await
            .unwrap()
            .is_empty(),
        "live claims exclude other nodes"
    );
    let renewed = store
        .renew_claims(vec![a[0].clone()], now + 500, 1_000)
        .await
        .unwrap();
    assert_eq!(renewed[0].expires_ms, now + 1_500);
    // u1's claim lapses (node A stalled); node B takes u1 over.
    let b = store
        .claim_users("node-b", now + 1_200, 1_000, 10)
        .await
        .unwrap();
    assert_eq!(b.len(), 1);
    assert_eq!(b[0].identity, "u1");
    assert!(b[0].token > a[1].token, "tokens only grow");
    // Node A wakes up: it can neither start a call nor record an outcome for u1.
    let fenced = |result: Result<(), junction_store::StoreError>| {
        matches!(result, Err(junction_store::StoreError::Fenced { .. }))
    };
    assert!(fenced(store.mark_started(&a[1], "u1-a", now + 1_300).await));
    assert!(fenced(
        store.action_outcomes(&a[1], vec![done("u1-a")]).await
    ));
    assert!(
        store
            .renew_claims(vec![a[1].clone()], now + 1_300, 1_000)
            .await
            .unwrap()
            .is_empty(),
        "a renewal tells node A it lost u1"
    );
    assert_eq!(
        store.action("u1-a").await.unwrap().unwrap().status,
        ActionStatus::Pending,
        "the fenced outcome changed nothing"
    );
    // An expired claim still held (nobody took it) cannot start a call either.
    assert!(fenced(
        store.mark_started(&renewed[0], "u2-a", now + 1_600).await
    ));
    store
        .action_outcomes(&b[0], vec![done("u1-a")])
        .await
        .unwrap();
    store.release_claim(&b[0]).await.unwrap();
    store
        .engine_commit(EngineCommit {
            actions: vec![action("u1-b", "u1", 3, 1)],
            ..EngineCommit::default()
        })
        .await
        .unwrap();
    let again = store
        .claim_users("node-a", now + 1_300, 1_000, 10)
        .await
        .unwrap();
    assert_eq!(
        again.len(),
        1,
        "a released user can be claimed at once: {again:?}"
    );
    assert!(again[0].token > b[0].token);
}

/// A named lease has one holder at a time; commits made under a lease that was taken over are
/// refused, so a stalled planner that wakes up cannot write over the new one.
async fn leases_have_one_holder_and_fence_commits(store: Arc<dyn Store>) {
    let now = chrono::Utc::now().timestamp_millis();
    let a = store
        .acquire_lease("planner", "node-a", now, 1_000)
        .await
        .unwrap()
        .expect("a free lease is granted");
    assert!(
        store
            .acquire_lease("planner", "node-b", now + 500, 1_000)
            .await
            .unwrap()
            .is_none(),
        "held by node-a"
    );
    let a = store
        .renew_lease(&a, now + 500, 1_000)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(a.expires_ms, now + 1_500);
    let commit = |lease: &junction_store::Lease, cursor: i64| EngineCommit {
        cursor: Some(cursor),
        lease: Some(lease.clone()),
        ..EngineCommit::default()
    };
    store.engine_commit(commit(&a, 10)).await.unwrap();
    // node-a stalls past its lease; node-b takes over.
    let b = store
        .acquire_lease("planner", "node-b", now + 1_600, 1_000)
        .await
        .unwrap()
        .expect("a lapsed lease is granted");
    assert!(b.token > a.token);
    let refused = store.engine_commit(commit(&a, 99)).await;
    assert!(
        matches!(refused, Err(junction_store::StoreError::Fenced { .. })),
        "{refused:?}"
    );
    assert!(
        store
            .renew_lease(&a, now + 1_700, 1_000)
            .await
            .unwrap()
            .is_none()
    );
    store.engine_commit(commit(&b, 20)).await.unwrap();
    assert_eq!(
        store.cursor(0).await.unwrap(),
        20,
        "node-a's late commit changed nothing"
    );
    store
        .heartbeat("node-b", now - 5_000, now + 1_650, now + 3_650)
        .await
        .unwrap();
    let cluster = store.cluster().await.unwrap();
    assert_eq!(cluster.leases.len(), 1);
    assert_eq!(cluster.leases[0].node, "node-b");
    assert_eq!(cluster.nodes.len(), 1);
    assert_eq!(
        (cluster.nodes[0].started_ms, cluster.nodes[0].seen_ms),
        (now - 5_000, now + 1_650)
    );
    store.release_lease(&b).await.unwrap();
    let c = store
        .acquire_lease("planner", "node-c", now + 1_700, 1_000)
        .await
        .unwrap()
        .expect("a released lease is granted at once");
    assert!(c.token > b.token);
}

/// Intercom's budget per window is handed out in slices until it is spent, whoever asks; each
/// workspace and window has its own.
async fn the_rate_budget_is_shared_out_once(store: Arc<dyn Store>) {
    let takers: Vec<_> = (0..4)
        .map(|_| {
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                let mut got = 0;
                loop {
                    let grant = store.take_budget("ws", 100, 50, 7).await.unwrap();
                    if grant == 0 {
                        return got;
                    }
                    assert!(grant <= 7);
                    got += grant;
                }
            })
        })
        .collect();
    let mut total = 0;
    for taker in takers {
        total += taker.await.unwrap();
    }
    assert_eq!(total, 50, "exactly the window's limit");
    assert_eq!(
        store.take_budget("ws", 101, 50, 7).await.unwrap(),
        7,
        "a new window"
    );
    assert_eq!(
        store.take_budget("other", 100, 50, 7).await.unwrap(),
        7,
        "another workspace"
    );
    // What all nodes took for a window, summed over workspaces; nothing for an unused window.
    assert_eq!(
        store.budget_taken(100).await.unwrap(),
        57,
        "50 in ws, 7 in other"
    );
    assert_eq!(store.budget_taken(101).await.unwrap(), 7);
    assert_eq!(store.budget_taken(999_999).await.unwrap(), 0);
}

/// Nodes claiming at the same moment share the users out: each user goes to exactly one.
async fn concurrent_claims_never_overlap(store: Arc<dyn Store>) {
    let actions: Vec<_> = (0..200)
        .map(|n| action(&format!("a{n}"), &format!("user{n}"), n, 1))
        .collect();
    store
        .engine_commit(EngineCommit {
            actions,
            ..EngineCommit::default()
        })
        .await
        .unwrap();
    let now = chrono::Utc::now().timestamp_millis();
    let claimers: Vec<_> = (0..4)
        .map(|node| {
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                let mut mine = Vec::new();
                loop {
                    let got = store
                        .claim_users(&format!("node-{node}"), now, 60_000, 7)
                        .await
                        .unwrap();
                    if got.is_empty() {
                        return mine;
                    }
                    mine.extend(got.into_iter().map(|c| c.identity));
                }
            })
        })
        .collect();
    let mut all = Vec::new();
    for claimer in claimers {
        all.extend(claimer.await.unwrap());
    }
    let distinct: std::collections::HashSet<_> = all.iter().collect();
    assert_eq!((all.len(), distinct.len()), (200, 200));
}

/// A call that must not repeat is marked in flight, under a live claim, before it is made; a
/// node that takes the user over after a crash finds the mark on the head.
async fn in_flight_marks_survive_for_the_next_claim(store: Arc<dyn Store>) {
    store
        .engine_commit(EngineCommit {
            actions: vec![action("m1", "u1", 1, 0)],
            ..EngineCommit::default()
        })
        .await
        .unwrap();
    let now = chrono::Utc::now().timestamp_millis();
    let first = store.claim_users("node-a", now, 1_000, 1).await.unwrap();
    store.mark_started(&first[0], "m1", now + 10).await.unwrap();
    // node-a dies mid-call.
    let next = store
        .claim_users("node-b", now + 2_000, 1_000, 1)
        .await
        .unwrap();
    let head = store.pending_of("u1", 1).await.unwrap();
    assert_eq!(head[0].started_ms, Some(now + 10));
    store
        .action_outcomes(&next[0], vec![done("m1")])
        .await
        .unwrap();
    assert_eq!(store.action("m1").await.unwrap().unwrap().started_ms, None);
}

/// The identity map is per workspace; forgetting a contact forgets every id pointing at it.
async fn the_identity_map_is_per_workspace(store: Arc<dyn Store>) {
    let keys = [
        IdentityKey::UserId("u1".into()),
        IdentityKey::Email("Ann@Example.com".into()),
    ];
    store.identity_remember("ws1", &keys, "c1").await.unwrap();
    assert_eq!(
        store
            .identity_lookup("ws1", &IdentityKey::Email("ann@example.COM".into()))
            .await
            .unwrap()
            .as_deref(),
        Some("c1")
    );
    assert_eq!(store.identity_lookup("ws2", &keys[0]).await.unwrap(), None);
    // Searched by any of its ids or by the contact, a contact comes with all its ids.
    let entries = |found: Vec<junction_store::IdentityEntry>| -> Vec<(String, String, String)> {
        found
            .into_iter()
            .map(|e| (e.workspace, e.kind, e.value))
            .collect()
    };
    let all = vec![
        (
            "ws1".to_owned(),
            "email".to_owned(),
            "ann@example.com".to_owned(),
        ),
        ("ws1".to_owned(), "user_id".to_owned(), "u1".to_owned()),
    ];
    for search in [
        junction_store::IdentitySearch::Key(IdentityKey::Email("ANN@example.com".into())),
        junction_store::IdentitySearch::Key(keys[0].clone()),
        junction_store::IdentitySearch::Contact("c1".into()),
    ] {
        assert_eq!(
            entries(store.identity_entries(&search).await.unwrap()),
            all,
            "{search:?}"
        );
    }
    assert!(
        store
            .identity_entries(&junction_store::IdentitySearch::Contact("c9".into()))
            .await
            .unwrap()
            .is_empty()
    );
    let attached = IdentityKey::CompanyAttachment {
        contact_id: "c1".into(),
        company_id: "co9".into(),
    };
    store
        .identity_remember("ws1", std::slice::from_ref(&attached), "c1")
        .await
        .unwrap();
    assert_eq!(
        store
            .identity_lookup("ws1", &attached)
            .await
            .unwrap()
            .as_deref(),
        Some("c1")
    );
    store.identity_unlink("ws1", &attached).await.unwrap();
    assert_eq!(store.identity_lookup("ws1", &attached).await.unwrap(), None);
    assert_eq!(
        store
            .identity_lookup("ws1", &keys[0])
            .await
            .unwrap()
            .as_deref(),
        Some("c1"),
        "unlinking one key leaves the others"
    );
    store
        .identity_remember("ws1", std::slice::from_ref(&attached), "c1")
        .await
        .unwrap();
    store.identity_forget("ws1", "c1").await.unwrap();
    assert_eq!(store.identity_lookup("ws1", &keys[0]).await.unwrap(), None);
    assert_eq!(
        store.identity_lookup("ws1", &attached).await.unwrap(),
        None,
        "a gone contact's attachments are forgotten with it"
    );
    store.remember_made("conversation", "9").await.unwrap();
    let made = store
        .made_by_junction("conversation", vec!["9".into(), "10".into()])
        .await
        .unwrap();
    assert_eq!(made.into_iter().collect::<Vec<_>>(), ["9"]);
}

/// A user's deletion request redacts what is stored of them before it: their events (under
/// the userId and the anonymousId they had), finished actions and their attempts' calls, and
/// drops their pending timers. The deletion itself, pending actions and other users stay whole.
async fn an_erasure_redacts_the_users_payloads(store: Arc<dyn Store>) {
    let messages = json!([
        {"type": "page", "anonymousId": "anon-1", "messageId": "m0", "properties": {"path": "/secret"}},
        {"type": "identify", "userId": "u1", "anonymousId": "anon-1", "messageId": "m1", "traits": {"email": "ann@example.com"}},
        track("u2", "m2"),
        {"type": "delete", "userId": "u1", "messageId": "m3"},
    ]);
    store.append(batch("web", at(0), messages)).await.unwrap();
    let all = store.events_after(0, 0, 10).await.unwrap();
    let seq_of = |id: &str| all.iter().find(|e| e.message_id == id).unwrap().seq;
    let deletion = seq_of("m3");
    store
        .engine_commit(EngineCommit {
            actions: vec![
                action("done-1", "u1", seq_of("m1"), 1),
                action("pending-1", "u1", deletion, 1),
                action("done-2", "u2", seq_of("m2"), 1),
            ],
            timers: vec![NewTimer {
                id: "t1".into(),
                identity: "u1".into(),
                fire_at_ms: 1,
                body: "{}".into(),
            }],
            ..EngineCommit::default()
        })
        .await
        .unwrap();
    record(store.as_ref(), "u1", vec![done("done-1")]).await;
    record(store.as_ref(), "u2", vec![done("done-2")]).await;
    store
        .engine_commit(EngineCommit {
            erasures: vec![Erasure {
                ids: vec!["anon-1".into(), "u1".into()],
                before_seq: deletion,
            }],
            ..EngineCommit::default()
        })
        .await
        .unwrap();

    for id in ["m0", "m1"] {
        let event = store.event(seq_of(id)).await.unwrap().unwrap();
        assert_eq!(
            event.body,
            json!({"type": event.kind, "messageId": id, "redacted": junction_store::REDACTED}),
            "{id}"
        );
    }
    assert_eq!(
        store.event(deletion).await.unwrap().unwrap().body["userId"],
        "u1"
    );
    assert_eq!(
        store.event(seq_of("m2")).await.unwrap().unwrap().body["userId"],
        "u2"
    );
    let redacted = store.action("done-1").await.unwrap().unwrap();
    assert_eq!(
        redacted.body["action"]["redacted"],
        junction_store::REDACTED
    );
    assert_eq!(redacted.body["workflow"], "w", "where it came from stays");
    assert_eq!(store.attempts("done-1").await.unwrap()[0].calls, json!([]));
    assert_eq!(
        store.action("pending-1").await.unwrap().unwrap().body,
        json!({"id": "pending-1", "workflow": "w"}),
        "pending work is left to run"
    );
    assert!(
        store.attempts("done-2").await.unwrap()[0]
            .calls
            .as_array()
            .unwrap()
            .len()
            == 1
    );
    assert_eq!(
        store.next_timer_ms(0).await.unwrap(),
        None,
        "the user's timers are dropped"
    );
}

/// Retention removes what is finished and old, never dead letters or pending work.
async fn cleanup_keeps_dead_letters_and_pending_work(store: Arc<dyn Store>) {
    store
        .engine_commit(EngineCommit {
            actions: vec![
                action("old-done", "u1", 1, 1),
                action("old-dead", "u2", 1, 1),
                action("pending", "u3", 1, 1),
            ],
            ..EngineCommit::default()
        })
        .await
        .unwrap();
    record(store.as_ref(), "u1", vec![done("old-done")]).await;
    let dead = ActionOutcome::Failed {
        id: "old-dead".into(),
        error: "400".into(),
        code: "bad".into(),
        attempt: attempt(1, "failed"),
        skip_rest_of_run: false,
    };
    record(store.as_ref(), "u2", vec![dead]).await;
    let future = chrono::Utc::now().timestamp_millis() + 60_000;
    assert!(store.cleanup(future).await.unwrap() >= 1);
    assert!(store.action("old-done").await.unwrap().is_none());
    assert!(store.action("old-dead").await.unwrap().is_some());
    assert!(store.action("pending").await.unwrap().is_some());
}

/// Held entries stay out of planning until released; a release with a reset forgets the
/// unreadable profile.
async fn quarantine_holds_until_released(store: Arc<dyn Store>) {
    store
        .engine_commit(EngineCommit {
            profiles: vec![("bob".into(), "{damaged".into())],
            quarantine: vec![
                NewQuarantine {
                    identity: "bob".into(),
                    seq: 4,
                    timer: None,
                    reason: "unreadable".into(),
                },
                NewQuarantine {
                    identity: "bob".into(),
                    seq: 2,
                    timer: Some("{}".into()),
                    reason: "unreadable".into(),
                },
            ],
            ..EngineCommit::default()
        })
        .await
        .unwrap();
    assert_eq!(store.quarantine_list(10).await.unwrap().len(), 2);
    assert!(store.quarantine_released(0, 10).await.unwrap().is_empty());
    assert_eq!(store.quarantine_release("nobody", false).await.unwrap(), 0);
    assert_eq!(store.quarantine_release("bob", true).await.unwrap(), 2);
    assert!(store.profiles(vec!["bob".into()]).await.unwrap().is_empty());
    let released = store.quarantine_released(0, 10).await.unwrap();
    let seqs: Vec<i64> = released.iter().map(|r| r.seq).collect();
    assert_eq!(seqs, [2, 4], "in log order");
    store
        .engine_commit(EngineCommit {
            released_done: released.iter().map(|r| r.id).collect(),
            ..EngineCommit::default()
        })
        .await
        .unwrap();
    assert!(store.quarantine_list(10).await.unwrap().is_empty());
}

/// Instantiates every conformance test for each backend.
macro_rules! backends {
    ($($backend:ident => $open:ident;)*) => {$(
        mod $backend {
            use super::*;

            async fn fresh() -> (Arc<dyn Store>, tempfile::TempDir) {
                let dir = tempfile::tempdir().unwrap();
                (super::$open(dir.path()).await, dir)
            }

            backends!(@tests
                appends_are_ordered_and_deduplicated_per_source,
                events_are_read_per_identity_and_after_a_cursor,
                engine_commits_are_idempotent,
                capped_messages_wait_for_release_and_timers_move,
                shadow_calls_list_what_would_have_been_sent,
                partitions_split_planning_and_share_state_safely,
                the_queue_serves_heads_and_records_outcomes,
                heads_follow_error_branches_and_urgency,
                users_are_served_in_lane_order,
                claims_are_exclusive_and_fenced,
                concurrent_claims_never_overlap,
                leases_have_one_holder_and_fence_commits,
                the_rate_budget_is_shared_out_once,
                in_flight_marks_survive_for_the_next_claim,
                the_identity_map_is_per_workspace,
                cleanup_keeps_dead_letters_and_pending_work,
                quarantine_holds_until_released,
                an_erasure_redacts_the_users_payloads,
            );
        }
    )*};
    (@tests $($test:ident,)*) => {$(
        #[tokio::test]
        async fn $test() {
            let (store, _dir) = fresh().await;
            super::$test(store).await;
        }
    )*};
}

async fn open_sqlite(dir: &std::path::Path) -> Arc<dyn Store> {
    let url = format!("sqlite://{}", dir.join("junction.db").display());
    junction_store::open(&url, junction_store::StoreOptions::default())
        .await
        .unwrap()
}

/// The test PostgreSQL server's admin URL.
fn test_server() -> String {
    std::env::var("JUNCTION_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// A new database on the test server (`JUNCTION_TEST_POSTGRES`, which `scripts/test.sh` sets;
/// by default the local server on 127.0.0.1:5432).
async fn open_postgres(_dir: &std::path::Path) -> Arc<dyn Store> {
    let admin = test_server();
    let url = junction_store::postgres::create_scratch_database(&admin, "junction_test")
        .await
        .unwrap_or_else(|e| {
            panic!("no PostgreSQL for the tests at {admin} ({e}): run scripts/test.sh")
        });
    junction_store::open(&url, junction_store::StoreOptions::default())
        .await
        .unwrap()
}

backends! {
    sqlite => open_sqlite;
    postgres => open_postgres;
}

/// `junction migrate`: an empty store gets the whole schema, a current one is left as it is,
/// on both backends.
#[tokio::test]
async fn migrate_creates_then_leaves_the_schema() {
    let dir = tempfile::tempdir().unwrap();
    let admin = test_server();
    let urls = [
        format!("sqlite://{}", dir.path().join("m.db").display()),
        junction_store::postgres::create_scratch_database(&admin, "junction_test")
            .await
            .unwrap(),
    ];
    for url in urls {
        let (found, latest) = junction_store::migrate(&url).await.unwrap();
        assert_eq!(found, 0, "{url}");
        assert!(latest > 0);
        assert_eq!(
            junction_store::migrate(&url).await.unwrap(),
            (latest, latest),
            "{url}"
        );
        // A store opened after it works.
        let store = junction_store::open(&url, junction_store::StoreOptions::default())
            .await
            .unwrap();
        store.check().await.unwrap();
    }
}

/// `junction migrate --from sqlite://… --to postgres://…`: what the SQLite store held is in
/// PostgreSQL afterwards, and PostgreSQL carries on from it (numbering, de-duplication, the
/// queue's order); a target that already holds data is refused.
#[tokio::test]
async fn a_sqlite_store_moves_to_postgres_whole() {
    let dir = tempfile::tempdir().unwrap();
    let from = format!("sqlite://{}", dir.path().join("old.db").display());
    let sqlite = junction_store::open(&from, junction_store::StoreOptions::default())
        .await
        .unwrap();
    let tab_and_newline = json!({"type": "track", "userId": "u1", "event": "Tab\there\nnewline \\ backslash", "messageId": "m-special"});
    sqlite
        .append(batch(
            "web",
            at(0),
            json!([track("u1", "m1"), track("u2", "m2"), tab_and_newline, {"type": "track"}]),
        ))
        .await
        .unwrap();
    let mut fallback = action("a1/fallback", "u1", 1, 0);
    fallback.standby_for = Some("a1".into());
    sqlite
        .engine_commit(EngineCommit {
            cursor: Some(3),
            profiles: vec![("u1".into(), r#"{"v":1}"#.into())],
            shared: vec![SharedWrite {
                key: "round_robin/w/1".into(),
                value: r#"{"v":1,"value":2}"#.into(),
                expected: 0,
            }],
            actions: vec![
                action("a1", "u1", 1, 1),
                fallback,
                action("a2", "u1", 1, 1),
                action("b1", "u2", 2, 0),
            ],
            timers: vec![NewTimer {
                id: "t1".into(),
                identity: "u1".into(),
                fire_at_ms: 5,
                body: "{}".into(),
            }],
            runs: vec![NewRun {
                run: "m1/w".into(),
                seq: 1,
                workflow: "w".into(),
                identity: "u1".into(),
                actions: 3,
                paused: true,
                error: None,
            }],
            quarantine: vec![NewQuarantine {
                identity: "u3".into(),
                seq: 2,
                timer: None,
                reason: "unreadable".into(),
            }],
            ..EngineCommit::default()
        })
        .await
        .unwrap();
    let dead = ActionOutcome::Failed {
        id: "b1".into(),
        error: "400".into(),
        code: "bad".into(),
        attempt: attempt(1, "failed"),
        skip_rest_of_run: false,
    };
    record(sqlite.as_ref(), "u2", vec![dead]).await;
    sqlite
        .identity_remember("ws", &[IdentityKey::UserId("u1".into())], "c-1")
        .await
        .unwrap();
    sqlite.close().await.unwrap();
    drop(sqlite);

    let admin = test_server();
    let to = junction_store::postgres::create_scratch_database(&admin, "junction_test")
        .await
        .unwrap();
    let copied = junction_store::copy(&from, &to).await.unwrap();
    let rows = |table: &str| copied.iter().find(|(t, _)| *t == table).unwrap().1;
    assert_eq!(
        (rows("events"), rows("actions"), rows("rejected")),
        (3, 4, 1)
    );

    let pg = junction_store::open(&to, junction_store::StoreOptions::default())
        .await
        .unwrap();
    let events = pg.events(EventQuery::default()).await.unwrap().items;
    assert_eq!(events.len(), 3);
    assert_eq!(events[0].body["event"], "Tab\there\nnewline \\ backslash");
    assert_eq!(pg.cursor(0).await.unwrap(), 3);
    assert_eq!(
        pg.partitions().await.unwrap(),
        1,
        "the source's partitions came across"
    );
    let shared = pg
        .shared_state(vec!["round_robin/w/1".into()], vec![])
        .await
        .unwrap();
    assert_eq!(shared["round_robin/w/1"].value, r#"{"v":1,"value":2}"#);
    assert_eq!(pg.profiles(vec!["u1".into()]).await.unwrap().len(), 1);
    assert_eq!(
        pg.identity_lookup("ws", &IdentityKey::UserId("u1".into()))
            .await
            .unwrap(),
        Some("c-1".into())
    );
    assert_eq!(
        pg.dead_letters(DeadLetterQuery {
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap()[0]
            .id,
        "b1"
    );
    assert_eq!(pg.quarantine_list(10).await.unwrap().len(), 1);
    assert_eq!(
        pg.runs(junction_store::RunQuery {
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap()[0]
            .status,
        "paused",
        "the run's flags came across"
    );
    assert_eq!(pg.next_timer_ms(0).await.unwrap(), Some(5));
    // PostgreSQL carries on: duplicates still caught, numbering and the queue continue.
    let again = pg
        .append(batch(
            "web",
            at(1),
            json!([track("u1", "m1"), track("u1", "m9")]),
        ))
        .await
        .unwrap();
    assert_eq!(again.events[0], Appended::Duplicate);
    assert_eq!(again.events[1], Appended::Stored(events[0].seq + 1));
    pg.engine_commit(EngineCommit {
        actions: vec![action("a3", "u1", 4, 1)],
        ..EngineCommit::default()
    })
    .await
    .unwrap();
    let ids: Vec<String> = pg
        .pending_of("u1", 10)
        .await
        .unwrap()
        .into_iter()
        .map(|a| a.id)
        .collect();
    assert_eq!(
        ids,
        ["a1", "a2", "a3"],
        "copied actions first, in their order"
    );
    assert_eq!(
        heads(pg.as_ref(), chrono::Utc::now().timestamp_millis()).await,
        ["a1"]
    );
    let refused = junction_store::copy(&from, &to).await;
    assert!(
        matches!(&refused, Err(junction_store::StoreError::Unsupported { reason, .. }) if reason.contains("empty database")),
        "{refused:?}"
    );
}

/// A store opened before another process changed the number of partitions (the
/// `junction migrate --partitions` command, or a node splitting a new store) numbers its new
/// events into the new split, never the one it saw at open; splitting again into the same
/// number changes nothing, even with other nodes alive.
async fn a_repartition_reaches_every_open_store(url: &str) {
    let options = junction_store::StoreOptions::default;
    let running = junction_store::open(url, options()).await.unwrap();
    let other = junction_store::open(url, options()).await.unwrap();
    let now = chrono::Utc::now().timestamp_millis();
    other.repartition(4, "other", now).await.unwrap();
    assert_eq!(running.partitions().await.unwrap(), 4);
    let users: Vec<String> = (0..12).map(|n| format!("user-{n}")).collect();
    let messages: Vec<_> = users.iter().map(|u| track(u, &format!("m-{u}"))).collect();
    running
        .append(batch("web", at(0), json!(messages)))
        .await
        .unwrap();
    for user in &users {
        let partition = partition_of(user, 4);
        let events = running.events_after(partition, 0, 100).await.unwrap();
        assert!(
            events.iter().any(|e| &e.identity == user),
            "{user}'s event is in partition {partition}"
        );
    }
    running
        .heartbeat("running", now, now, now + 60_000)
        .await
        .unwrap();
    other.repartition(4, "other", now).await.unwrap();
    assert_eq!(other.cursor(0).await.unwrap(), 0, "nothing moved");
}

#[tokio::test]
async fn a_repartition_reaches_every_open_sqlite_store() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("junction.db").display());
    a_repartition_reaches_every_open_store(&url).await;
}

#[tokio::test]
async fn a_repartition_reaches_every_open_postgres_store() {
    let url = junction_store::postgres::create_scratch_database(&test_server(), "junction_test")
        .await
        .unwrap();
    a_repartition_reaches_every_open_store(&url).await;
}
