//! Time you can control: timers fall due by the pipeline's clock (`DeliverySettings::clock`),
//! so a test moves a week forward by hand instead of waiting for it.

use junction_delivery::alerts::{AlertSettings, Alerter};
use junction_delivery::deliver::{Deliverer, IntercomTarget};
use junction_delivery::{DeliverySettings, Oversight, Pipeline};
use junction_emulator::{Emulator, EmulatorConfig};
use junction_flow::{Planner, templates};
use junction_intercom::attributes::{AttributeCatalog, AttributePolicy};
use junction_intercom::{ContactResolver, IntercomClient, IntercomConfig};
use junction_store::{AppendBatch, ManualClock, Store, StoreOptions};
use serde_json::{Map, json};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Notify;

/// Polls `done` until it holds (failing after 20 s of wall time).
async fn until<F: std::future::Future<Output = bool>>(what: &str, mut done: impl FnMut() -> F) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !done().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_seven_day_wait_fires_when_the_clock_says_seven_days_have_passed() {
    let emulator = Emulator::new(EmulatorConfig {
        token: Some("t".into()),
        search_lag: Duration::ZERO,
        ..EmulatorConfig::default()
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = emulator.clone().spawn(listener).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("j.db").display());
    let store: Arc<dyn Store> = junction_store::open(&url, StoreOptions::default())
        .await
        .unwrap();

    // The inactivity template as shipped: a 7-day wait-until.
    let workflow =
        junction_flow::load(templates::find("inactivity").unwrap().source, &Map::new()).unwrap();
    let planner = Arc::new(junction_delivery::LivePlanner::new(Arc::new(
        Planner::new(vec![workflow]).unwrap(),
    )));
    let client = IntercomClient::new(IntercomConfig::new(format!("http://{addr}"), "t")).unwrap();
    let deliverer = Deliverer::new(Some(IntercomTarget {
        resolver: ContactResolver::new(client.clone(), Arc::clone(&store), "w"),
        catalog: AttributeCatalog::new(client.clone()),
        policy: AttributePolicy::default(),
        deletion: Default::default(),
        client,
    }));
    let now = chrono::Utc::now();
    let clock = Arc::new(ManualClock::new(now.timestamp_millis()));
    let bell = Arc::new(Notify::new());
    let pipeline = Pipeline::start(
        Arc::clone(&store),
        planner,
        async move { Some(deliverer) },
        Arc::clone(&bell),
        DeliverySettings {
            clock: clock.clone(),
            ..DeliverySettings::default()
        },
        None,
        Oversight {
            alerts: Alerter::start(AlertSettings::default()),
            health: Arc::default(),
        },
    );

    let signed_up = json!({"batch": [
        {"type": "track", "userId": "idle", "event": "Signed Up", "messageId": "m1",
         "timestamp": now.to_rfc3339()},
    ]});
    let parsed = junction_model::parse_batch(signed_up.to_string().as_bytes(), now).unwrap();
    store
        .append(AppendBatch::new(
            "web",
            now,
            parsed.messages,
            parsed.rejected,
        ))
        .await
        .unwrap();
    bell.notify_waiters();
    until("the wait's timer", || async {
        store.outbox_counts().await.unwrap().timers_pending == 1
    })
    .await;
    let messages = || {
        emulator
            .journal_entries()
            .into_iter()
            .filter(|e| e.method == "POST" && e.path == "/messages")
            .count()
    };
    assert_eq!(messages(), 0, "nothing is sent before the week is over");

    clock.advance(Duration::from_secs(7 * 86_400 + 1));
    until("the nudge", || async { messages() == 1 }).await;
    assert_eq!(store.outbox_counts().await.unwrap().timers_pending, 0);
    pipeline
        .stop(tokio::time::Instant::now() + Duration::from_secs(5))
        .await;
}
