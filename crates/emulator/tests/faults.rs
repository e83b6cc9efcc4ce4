//! Injected faults and the control endpoint that turns them on and off while running.

use junction_emulator::faults::Faults;
use junction_emulator::{Emulator, EmulatorConfig};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::time::Duration;

async fn start() -> (String, Emulator) {
    let emulator = Emulator::new(EmulatorConfig {
        rate_limit: 100_000,
        ..EmulatorConfig::default()
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = emulator.clone().spawn(listener).await.unwrap();
    (format!("http://{addr}"), emulator)
}

async fn list(http: &reqwest::Client, base: &str) -> Result<(u16, Value), reqwest::Error> {
    let response = http
        .get(format!("{base}/contacts"))
        .bearer_auth("t")
        .send()
        .await?;
    let status = response.status().as_u16();
    let body = response.json::<Value>().await?;
    Ok((status, body))
}

#[tokio::test]
async fn error_rates_are_honoured_with_intercom_error_bodies() {
    let (base, emulator) = start().await;
    let http = http();
    emulator.set_faults(Faults {
        error_rates: BTreeMap::from([(500, 0.10), (503, 0.05)]),
        ..Faults::default()
    });
    let mut counts = BTreeMap::new();
    for _ in 0..1000 {
        let (status, body) = list(&http, &base).await.unwrap();
        if status != 200 {
            assert_eq!(body["type"], "error.list");
        }
        *counts.entry(status).or_insert(0) += 1;
    }
    let (e500, e503) = (
        counts.get(&500).copied().unwrap_or(0),
        counts.get(&503).copied().unwrap_or(0),
    );
    assert!((60..=140).contains(&e500), "{counts:?}");
    assert!((20..=80).contains(&e503), "{counts:?}");
    emulator.set_faults(Faults::default());
    assert_eq!(list(&http, &base).await.unwrap().0, 200);
}

#[tokio::test]
async fn dropped_connections_fail_the_request_mid_reply() {
    let (base, emulator) = start().await;
    let http = http();
    emulator.set_faults(Faults {
        reset_rate: 1.0,
        ..Faults::default()
    });
    for _ in 0..5 {
        assert!(list(&http, &base).await.is_err());
    }
    emulator.set_faults(Faults::default());
    assert!(list(&http, &base).await.is_ok());
}

#[tokio::test]
async fn the_control_endpoint_starts_a_429_storm_and_changes_limits() {
    let (base, _) = start().await;
    let http = http();
    let changed: Value = http
        .put(format!("{base}/_emulator/config"))
        .json(&json!({"rate_limit": 7, "search_lag_ms": 0, "faults": {"storm_seconds": 1, "latency_ms": 5}}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        (
            changed["rate_limit"].as_u64(),
            changed["search_lag_ms"].as_u64()
        ),
        (Some(7), Some(0))
    );
    let response = http
        .get(format!("{base}/contacts"))
        .bearer_auth("t")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 429);
    assert_eq!(response.headers()["x-ratelimit-limit"], "7");
    // Lift the limit so the requests below cannot spend the window; the storm then ends by
    // itself after its second (waited for as a state: the first answer that is not a 429).
    http.put(format!("{base}/_emulator/config"))
        .json(&json!({"rate_limit": 1000}))
        .send()
        .await
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let status = loop {
        let status = http
            .get(format!("{base}/contacts"))
            .bearer_auth("t")
            .send()
            .await
            .unwrap()
            .status();
        if status != 429 {
            break status;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the storm never ended"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(status, 200);
    let refused = http
        .put(format!("{base}/_emulator/config"))
        .json(&json!({"colour": "red"}))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 400);
}

#[tokio::test]
async fn injected_latency_delays_every_answer() {
    let (base, emulator) = start().await;
    let http = http();
    emulator.set_faults(Faults {
        latency_ms: 120,
        ..Faults::default()
    });
    let started = std::time::Instant::now();
    assert_eq!(list(&http, &base).await.unwrap().0, 200);
    // A lower bound only: the emulator sleeps at least this long before answering.
    assert!(started.elapsed() >= Duration::from_millis(120));
}

/// reqwest is built with `rustls-no-provider` in this workspace: install one before building a client.
fn http() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::new()
}
