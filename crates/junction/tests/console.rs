//! The console in a real browser: Debian's chromium, driven by playwright-core
//! (`tests/clients/console.mjs`), against the real `junction` binary after a short run of
//! events delivered to the emulator, twelve of them dead-lettered. Signs in, reads every page,
//! watches a new event arrive in the live tail, replays the dead letter, releases a message a
//! frequency cap kept back, is refused without the CSRF token, signs out. Screenshots of each
//! page land in `$CARGO_TARGET_TMPDIR/console-screenshots`.

mod common;

use common::scenario::Scenario;
use common::{ADMIN_TOKEN, WRITE_KEY};
use serde_json::{Value, json};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// A webhook that answers 400 (a permanent failure: dead-lettered at once) until told to work.
async fn flaky_hook() -> (String, Arc<AtomicBool>, Arc<AtomicUsize>) {
    let working = Arc::new(AtomicBool::new(false));
    let delivered = Arc::new(AtomicUsize::new(0));
    let (flag, count) = (Arc::clone(&working), Arc::clone(&delivered));
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move || {
            let (flag, count) = (Arc::clone(&flag), Arc::clone(&count));
            async move {
                if !flag.load(Ordering::SeqCst) {
                    return axum::http::StatusCode::BAD_REQUEST;
                }
                count.fetch_add(1, Ordering::SeqCst);
                axum::http::StatusCode::OK
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}/hook"), working, delivered)
}

#[tokio::test]
async fn the_console_in_a_browser_shows_real_data_replays_and_signs_out() {
    let (hook, working, delivered) = flaky_hook().await;
    let workflows = tempfile::tempdir().unwrap();
    let notify = workflows.path().join("notify.yaml");
    std::fs::write(
        &notify,
        format!(
            "name: notify\ntrigger:\n  on: segment.track\n  event: Trial Ending\nsteps:\n  - http.request:\n      url: \"{hook}\"\n      body: {{ user: \"{{{{ event.userId }}}}\" }}\n"
        ),
    )
    .unwrap();
    // One message per contact a day: Ann's second nudge is capped (and released below).
    let s = Scenario::start_config_on(
        common::Backend::Sqlite,
        &format!(
            "journeys:\n  caps: {{ messages: 1 per 1d }}\nworkflows:\n  - template: profile-sync\n  - template: track-events\n  - template: churn-risk\n  - template: event-message\n  - file: {}\n",
            notify.display()
        ),
        Some(common::scenario::TOKEN),
    )
    .await;
    s.identify("ann", json!({"email": "ann@example.com", "plan": "pro"}))
        .await;
    s.track("ann", "Order Completed", json!({"revenue": 19.99}))
        .await;
    for feature in ["Reports", "Exports"] {
        s.track("ann", "Feature Abandoned", json!({"feature": feature}))
            .await;
    }
    // Twelve trials end while the hook is broken: twelve dead letters, replayed together.
    for n in 0..12 {
        s.track(&format!("trial-{n}"), "Trial Ending", json!({}))
            .await;
    }
    // Bo churns: a payment fails, and churn-risk opens a conversation for the CSM.
    s.identify("bo", json!({"email": "bo@example.com"})).await;
    s.track("bo", "Payment Failed", json!({})).await;
    s.until("bo's conversation", |s| {
        !s.calls_to("POST", "/conversations").is_empty()
    })
    .await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while s.admin("/api/dlq").await["items"].as_array().unwrap().len() < 12 {
        assert!(Instant::now() < deadline, "no dead letter");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    working.store(true, Ordering::SeqCst);

    let shots = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("console-screenshots");
    let clients = common::repo_root().join("tests/clients");
    let base = s.server.url("");
    let base = base.trim_end_matches('/').to_owned();
    let output = tokio::task::spawn_blocking(move || {
        Command::new("node")
            .arg(clients.join("console.mjs"))
            .args([
                base.as_str(),
                ADMIN_TOKEN,
                shots.to_str().unwrap(),
                WRITE_KEY,
                "bo",
            ])
            .current_dir(&clients)
            .output()
            .expect("node runs")
    })
    .await
    .unwrap();
    assert!(
        output.status.success(),
        "console.mjs failed ({}); is chromium installed and tests/clients installed? run scripts/test.sh.\nstderr: {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    let report: Value = serde_json::from_slice(&output.stdout).expect("a JSON report");
    let page = |name: &str| &report["pages"][name];
    let text = |name: &str| page(name)["text"].as_str().unwrap_or_default().to_owned();

    assert_eq!(report["signInUrl"], "/console/login");
    assert_eq!(page("overview")["h1"], "Overview");
    assert_eq!(report["overviewCharts"], 6, "{report:#}");
    assert_eq!(report["overviewRefreshed"], true);
    assert!(text("overview").contains("Dead letters"), "{report:#}");
    assert!(
        text("overview").contains("actions failed for good and are in the dead-letter queue"),
        "the dead letter's alert is listed: {}",
        text("overview")
    );
    assert!(text("events").contains("Order Completed") && text("events").contains("Trial Ending"));
    assert!(page("event")["h1"].as_str().unwrap().starts_with("Event "));
    assert!(text("runs").contains("profile-sync") && text("runs").contains("notify"));
    assert!(page("run")["h1"].as_str().unwrap().starts_with("Run of "));
    assert!(text("run").contains("Attempt 1"), "{}", text("run"));
    assert!(
        text("dead-letters").contains("http_400"),
        "{}",
        text("dead-letters")
    );
    assert_eq!(report["withoutCsrf"], 403);
    // The live tail: the new event was on the page within a second of being sent.
    assert_eq!(report["liveSendStatus"], 200);
    let live_ms = report["liveTailMs"].as_u64().unwrap();
    println!("live tail: the new event was on the page {live_ms} ms after it was sent");
    assert!(live_ms < 1_000, "the live tail took {live_ms} ms");
    assert!(
        report["replayNotice"]
            .as_str()
            .unwrap()
            .starts_with("Replayed 12 of 12 dead letter(s)"),
        "{report:#}"
    );
    assert!(text("dead-letters-replayed").contains("The dead-letter queue is empty."));
    // Ann's capped nudge was listed apart, and sent when released.
    assert!(
        text("capped").contains("workspace cap 1 per 1d reached"),
        "{}",
        text("capped")
    );
    assert_eq!(report["releaseNotice"], "Released 1 capped message(s).");
    s.until("the released nudge", |s| {
        s.calls_to("POST", "/messages").len() == 2
    })
    .await;
    // Bo's page says what happened to them and why: the churn-risk run, the event that caused
    // it, and the conversation it opened.
    let bo = text("people");
    assert_eq!(page("people")["h1"], "People");
    for expected in [
        "bo@example.com",
        "churn-risk",
        "Payment Failed",
        "conversation",
        "tag churn-risk",
    ] {
        assert!(
            bo.contains(expected),
            "{expected:?} missing from bo's page:\n{bo}"
        );
    }
    // A workflow's page draws it, and "try it" shows the exact requests.
    assert_eq!(report["diagrams"], 1);
    let tried = report["tryOutput"].as_str().unwrap_or_default();
    assert!(
        tried.contains("POST /contacts") && tried.contains("-> 200"),
        "{tried}"
    );
    let notify = report["notifyPage"].as_str().unwrap_or_default();
    assert!(
        notify.contains("url: \"http://127.0.0.1:") && !notify.contains("/hook"),
        "the webhook's path is not shown: {notify}"
    );
    assert_eq!(report["afterSignOutUrl"], "/console/login");
    assert_eq!(
        report["consoleErrors"],
        json!([]),
        "the browser reported errors"
    );

    // Intercom's answers are counted by class for Prometheus (the overview charts the 429s).
    let metrics = reqwest::get(s.server.url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains(r#"junction_intercom_responses_total{status="2xx"}"#),
        "{metrics}"
    );

    // The replayed action was delivered.
    let deadline = Instant::now() + Duration::from_secs(30);
    while delivered.load(Ordering::SeqCst) < 12 {
        assert!(Instant::now() < deadline, "the replay was not delivered");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
