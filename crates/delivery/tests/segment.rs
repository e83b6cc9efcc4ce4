//! The Segment Tracking API client against a Segment-compatible receiver on loopback: batches
//! stay within Segment's limits, a 500 is retried and the batch arrives once, a 400 is reported
//! and not retried, an oversized message is refused before sending.

use junction_delivery::{FailureClass, SegmentClient, SegmentSettings};
use serde_json::{Value, json};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Default)]
struct Receiver {
    /// Answer these statuses first, in order, then 200.
    script: Mutex<Vec<u16>>,
    /// (messages, bytes, status) of every request.
    requests: Mutex<Vec<(usize, usize, u16)>>,
    authorized: AtomicUsize,
}

async fn receiver(script: Vec<u16>) -> (String, Arc<Receiver>) {
    let state = Arc::new(Receiver {
        script: Mutex::new(script),
        ..Default::default()
    });
    let shared = Arc::clone(&state);
    let app = axum::Router::new().route(
        "/v1/batch",
        axum::routing::post(
            move |headers: axum::http::HeaderMap, body: axum::body::Bytes| {
                let state = Arc::clone(&shared);
                async move {
                    if headers.get("authorization").and_then(|v| v.to_str().ok())
                        == Some("Basic d2stdGVzdDo=")
                    {
                        state.authorized.fetch_add(1, Ordering::SeqCst);
                    }
                    let parsed: Value = serde_json::from_slice(&body).unwrap();
                    let status = {
                        let mut script = state.script.lock().unwrap();
                        if script.is_empty() {
                            200
                        } else {
                            script.remove(0)
                        }
                    };
                    let count = parsed["batch"].as_array().map_or(0, Vec::len);
                    state
                        .requests
                        .lock()
                        .unwrap()
                        .push((count, body.len(), status));
                    (axum::http::StatusCode::from_u16(status).unwrap(), "{}")
                }
            },
        ),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}"), state)
}

fn client(host: &str) -> SegmentClient {
    let mut settings = SegmentSettings::new(host, "wk-test");
    settings.flush_interval = Duration::from_millis(100);
    SegmentClient::start(settings)
}

fn message(n: usize, padding: usize) -> Value {
    json!({"type": "track", "userId": format!("u{n}"), "event": "E", "messageId": format!("m{n}"), "properties": {"pad": "x".repeat(padding)}})
}

#[tokio::test]
async fn batches_stay_within_segments_limits() {
    let (host, state) = receiver(vec![]).await;
    let segment = client(&host);
    // 3,000 small messages: more than one batch may hold.
    let sends: Vec<_> = (0..3_000)
        .map(|n| {
            let segment = segment.clone();
            tokio::spawn(async move { segment.send(message(n, 10)).await })
        })
        .collect();
    for send in sends {
        send.await.unwrap().unwrap();
    }
    // 60 messages of 20 KB: more than 500 KB in all.
    let sends: Vec<_> = (0..60)
        .map(|n| {
            let segment = segment.clone();
            tokio::spawn(async move { segment.send(message(10_000 + n, 20_000)).await })
        })
        .collect();
    for send in sends {
        send.await.unwrap().unwrap();
    }
    let requests = state.requests.lock().unwrap().clone();
    assert_eq!(
        requests.iter().map(|r| r.0).sum::<usize>(),
        3_060,
        "every message sent once"
    );
    assert!(
        requests
            .iter()
            .all(|(n, bytes, _)| *n <= 2_500 && *bytes <= 500 * 1024),
        "{requests:?}"
    );
    assert!(
        requests.len() >= 4,
        "split into several batches: {requests:?}"
    );
    assert_eq!(
        state.authorized.load(Ordering::SeqCst),
        requests.len(),
        "the write key as the Basic user"
    );
}

#[tokio::test]
async fn a_500_is_retried_and_the_batch_arrives_once() {
    let (host, state) = receiver(vec![500]).await;
    client(&host).send(message(1, 0)).await.unwrap();
    let requests = state.requests.lock().unwrap().clone();
    assert_eq!(requests.iter().map(|r| r.2).collect::<Vec<_>>(), [500, 200]);
    assert_eq!(requests.iter().filter(|r| r.2 == 200).count(), 1);
}

#[tokio::test]
async fn a_400_is_reported_not_retried() {
    let (host, state) = receiver(vec![400]).await;
    let failure = client(&host).send(message(1, 0)).await.unwrap_err();
    assert_eq!(
        (failure.class, failure.code.as_str()),
        (FailureClass::Permanent, "segment_400")
    );
    assert_eq!(state.requests.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn an_oversized_message_is_refused_before_sending() {
    let (host, state) = receiver(vec![]).await;
    let failure = client(&host).send(message(1, 40_000)).await.unwrap_err();
    assert_eq!(failure.code, "message_too_large");
    assert!(state.requests.lock().unwrap().is_empty());
}
