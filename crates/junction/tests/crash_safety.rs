//! Nothing acknowledged is lost: several clients send batches while the server is killed with
//! SIGKILL (twice); after each restart every message that got a 200 is in the store, and no
//! message is stored twice, even when clients resend what was not acknowledged.

mod common;

use common::{Server, WRITE_KEY};
use serde_json::json;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::sync::Mutex;

const CLIENTS: usize = 6;
const BATCH: usize = 20;

/// What one client saw: the batches acknowledged with 200, and those that failed.
#[derive(Default)]
struct Outcome {
    acked: Vec<String>,
    unacked_batches: Vec<Vec<String>>,
}

async fn send_until_stopped(
    url: String,
    client_id: usize,
    round: usize,
    stop: Arc<AtomicBool>,
    outcome: Arc<Mutex<Outcome>>,
) {
    let http = common::http();
    let mut n = 0;
    while !stop.load(Ordering::Relaxed) {
        let ids: Vec<String> = (0..BATCH)
            .map(|i| format!("r{round}-c{client_id}-b{n}-{i}"))
            .collect();
        n += 1;
        let result = post_batch(&http, &url, &ids).await;
        let mut outcome = outcome.lock().await;
        match result {
            Ok(()) => outcome.acked.extend(ids),
            Err(()) => {
                outcome.unacked_batches.push(ids);
                // The server is gone; don't spin.
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
}

async fn post_batch(http: &reqwest::Client, url: &str, ids: &[String]) -> Result<(), ()> {
    let batch: Vec<_> = ids
        .iter()
        .map(|id| json!({"type": "track", "userId": format!("user-{}", id.len() % 7), "event": "Crash Tested", "messageId": id}))
        .collect();
    let response = http
        .post(url)
        .basic_auth(WRITE_KEY, Some(""))
        .json(&json!({ "batch": batch }))
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .map_err(|_| ())?;
    if response.status().is_success() {
        Ok(())
    } else {
        Err(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_loses_no_acknowledged_message_and_stores_none_twice() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(dir.path()).await;
    let outcome = Arc::new(Mutex::new(Outcome::default()));

    for round in 0..2 {
        let stop = Arc::new(AtomicBool::new(false));
        let clients: Vec<_> = (0..CLIENTS)
            .map(|c| {
                tokio::spawn(send_until_stopped(
                    server.url("/v1/batch"),
                    c,
                    round,
                    stop.clone(),
                    outcome.clone(),
                ))
            })
            .collect();
        // Let traffic build up, then pull the plug mid-stream.
        let target = outcome.lock().await.acked.len() + 20 * BATCH * CLIENTS;
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while outcome.lock().await.acked.len() < target {
            assert!(
                std::time::Instant::now() < deadline,
                "round {round}: traffic did not build up"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        server.kill();
        tokio::time::sleep(Duration::from_millis(100)).await;
        stop.store(true, Ordering::Relaxed);
        for client in clients {
            client.await.unwrap();
        }
        server.spawn().await;

        let stored = server.all_events().await;
        let mut counts: HashMap<String, usize> = HashMap::new();
        for event in &stored {
            *counts
                .entry(event["messageId"].as_str().unwrap().to_owned())
                .or_default() += 1;
        }
        let outcome = outcome.lock().await;
        assert!(
            outcome.acked.len() >= BATCH * CLIENTS,
            "round {round}: too little traffic to test ({} acked)",
            outcome.acked.len()
        );
        let missing: Vec<_> = outcome
            .acked
            .iter()
            .filter(|id| !counts.contains_key(*id))
            .collect();
        assert!(
            missing.is_empty(),
            "round {round}: {} acknowledged messages lost, e.g. {:?}",
            missing.len(),
            &missing[..missing.len().min(5)]
        );
        let twice: Vec<_> = counts.iter().filter(|(_, n)| **n > 1).collect();
        assert!(twice.is_empty(), "round {round}: stored twice: {twice:?}");
        eprintln!(
            "round {round}: {} acknowledged, {} stored, {} batches unacknowledged",
            outcome.acked.len(),
            stored.len(),
            outcome.unacked_batches.len()
        );
    }

    // Clients retry what was never acknowledged (as the SDKs do); whatever the server had
    // already committed before dying is recognised by messageId and not stored again.
    let http = common::http();
    let unacked: Vec<Vec<String>> = outcome.lock().await.unacked_batches.drain(..).collect();
    for ids in &unacked {
        post_batch(&http, &server.url("/v1/batch"), ids)
            .await
            .expect("resend accepted");
    }
    let stored = server.all_events().await;
    let ids: Vec<&str> = stored
        .iter()
        .map(|e| e["messageId"].as_str().unwrap())
        .collect();
    let unique: HashSet<&str> = ids.iter().copied().collect();
    assert_eq!(
        unique.len(),
        ids.len(),
        "no message stored twice after resending"
    );
    let expected: HashSet<String> = outcome
        .lock()
        .await
        .acked
        .iter()
        .cloned()
        .chain(unacked.into_iter().flatten())
        .collect();
    assert_eq!(unique.len(), expected.len());
    assert!(expected.iter().all(|id| unique.contains(id.as_str())));
}
