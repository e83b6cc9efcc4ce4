//! Planning split into partitions: a user's first event under a userId inherits what was
//! kept under the anonymousId it came with, even when that anonymousId is planned in another
//! partition (on another node, possibly behind): the event waits until that partition has
//! planned everything logged before it.

use junction_delivery::engine::Engine;
use junction_flow::{Planner, Profile, stored};
use junction_store::{AppendBatch, Store, StoreOptions, partition_of};
use serde_json::json;
use std::sync::Arc;
use tokio::sync::{Notify, watch};

#[tokio::test]
async fn a_first_identify_waits_for_its_anonymous_history_planned_in_another_partition() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("j.db").display());
    let store: Arc<dyn Store> = junction_store::open(&url, StoreOptions::default())
        .await
        .unwrap();
    let now = chrono::Utc::now().timestamp_millis();
    store.repartition(2, "test", now).await.unwrap();
    let (anonymous, user) = (0..)
        .map(|n| (format!("anon-{n}"), format!("user-{n}")))
        .find(|(a, u)| partition_of(a, 2) != partition_of(u, 2))
        .unwrap();
    let mut messages: Vec<_> = ["Pricing Viewed", "Docs Read", "Signup Started"]
        .iter()
        .enumerate()
        .map(|(n, name)| {
            json!({"type": "track", "anonymousId": anonymous, "event": name, "messageId": format!("t{n}")})
        })
        .collect();
    messages.push(
        json!({"type": "identify", "userId": user, "anonymousId": anonymous,
                         "traits": {"email": "a@example.com"}, "messageId": "i1"}),
    );
    let received = chrono::Utc::now();
    let parsed = junction_model::parse_batch(
        json!({ "batch": messages }).to_string().as_bytes(),
        received,
    )
    .unwrap();
    store
        .append(AppendBatch::new(
            "web",
            received,
            parsed.messages,
            parsed.rejected,
        ))
        .await
        .unwrap();

    let planner = Arc::new(Planner::new(Vec::new()).unwrap());
    let (_bell, rung) = watch::channel(0u64);
    let engine = |partition| {
        Engine::new(
            Arc::clone(&store),
            Arc::clone(&planner),
            partition,
            rung.clone(),
            Arc::new(Notify::new()),
        )
    };
    let mut users = engine(partition_of(&user, 2)).await.unwrap();
    let mut anonymous_ones = engine(partition_of(&anonymous, 2)).await.unwrap();

    assert!(
        !users.step(now).await.unwrap(),
        "the identify waits: its anonymous history is not planned yet"
    );
    assert_eq!(store.cursor(partition_of(&user, 2)).await.unwrap(), 0);
    assert!(anonymous_ones.step(now).await.unwrap());
    assert!(users.step(now).await.unwrap(), "now it is planned");

    let stored = store.profiles(vec![user.clone()]).await.unwrap();
    let profile: Profile = stored::decode(&stored[&user]).unwrap();
    let names: Vec<Option<&str>> = profile.recent.iter().map(|e| e.name.as_deref()).collect();
    assert_eq!(
        names,
        [
            Some("Pricing Viewed"),
            Some("Docs Read"),
            Some("Signup Started"),
            None
        ],
        "the user's profile carries the anonymous history"
    );
}
