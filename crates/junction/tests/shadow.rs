//! Shadow mode: with `delivery.mode: shadow`, Junction plans and records the exact requests
//! it would send — the ones `junction test` predicts — and sends none (the Intercom emulator's
//! journal stays empty); `junction shadow report` counts them by route and workflow.

mod common;

use common::scenario::{Scenario, TOKEN};
use serde_json::{Value, json};

/// Each request `junction test` printed: `METHOD PATH` and its JSON body.
fn predicted(output: &str) -> Vec<(String, Value)> {
    output
        .lines()
        .filter_map(|line| {
            let line = line.trim();
            let (request, _) = line.rsplit_once(" -> ")?;
            let mut parts = request.splitn(3, ' ');
            let (method, path) = (parts.next()?, parts.next()?);
            let body = parts
                .next()
                .and_then(|b| serde_json::from_str(b).ok())
                .unwrap_or(Value::Null);
            ["GET", "POST", "PUT", "DELETE"]
                .contains(&method)
                .then(|| (format!("{method} {path}"), body))
        })
        .collect()
}

/// The routes `junction shadow report --json` lists.
fn routes(report: &Value) -> Vec<String> {
    report["routes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["route"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn shadow_mode_records_what_junction_test_predicts_and_sends_nothing() {
    let s = Scenario::start_config_on(
        common::Backend::Sqlite,
        "delivery:\n  mode: shadow\nworkflows:\n  - template: profile-sync\n",
        Some(TOKEN),
    )
    .await;
    let identify = json!({"type": "identify", "userId": "u1", "messageId": "shadow-1",
                          "timestamp": "2026-12-01T10:00:00Z",
                          "traits": {"email": "ann@example.com", "name": "Ann", "plan": "pro"}});
    s.send("identify", identify.clone()).await;
    s.quiet().await;
    assert!(
        s.emulator.journal_entries().is_empty(),
        "nothing reaches Intercom in shadow: {:?}",
        s.emulator.journal_entries()
    );

    // What was recorded for the run is what `junction test` predicts for the same event.
    let runs = s.admin("/api/runs?workflow=profile-sync").await;
    let run_id = runs["items"][0]["run"].as_str().unwrap().to_owned();
    let run = s.admin(&format!("/api/runs/{run_id}")).await;
    // The emulator's journal, which `junction test` prints, leaves query strings out.
    let recorded: Vec<(String, Value)> = run["steps"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|step| {
            step["attempts"][0]["calls"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        })
        .map(|call: Value| {
            let path = call["path"].as_str().unwrap();
            let path = path.split('?').next().unwrap();
            let body = call["request"]
                .as_str()
                .and_then(|b| serde_json::from_str(b).ok())
                .unwrap_or(Value::Null);
            (format!("{} {path}", call["method"].as_str().unwrap()), body)
        })
        .collect();
    assert!(
        run["steps"][0]["result"]
            .as_str()
            .unwrap()
            .starts_with("shadow: "),
        "{run}"
    );
    let event = s.dir.path().join("identify.json");
    std::fs::write(&event, identify.to_string()).unwrap();
    let test = std::process::Command::new(env!("CARGO_BIN_EXE_junction"))
        .args(["test", "profile-sync", "--event"])
        .arg(&event)
        .output()
        .unwrap();
    let output = String::from_utf8_lossy(&test.stdout);
    assert!(test.status.success(), "{output}");
    assert!(!recorded.is_empty());
    assert_eq!(
        recorded,
        predicted(&output),
        "junction test printed:\n{output}"
    );

    // The report: counts by route and workflow, with samples.
    let report = s.cli(&["shadow", "report", "--json"]);
    let report: Value = serde_json::from_slice(&report.stdout).unwrap();
    assert_eq!(report["actions"], 1);
    assert_eq!(report["requests"], recorded.len());
    assert_eq!(report["workflows"]["profile-sync"], 1);
    let routes = routes(&report);
    assert!(routes.iter().any(|r| r == "POST /contacts"), "{report}");
}

/// One workflow in shadow beside live ones: its requests are recorded, the others are sent.
#[tokio::test]
async fn a_workflow_in_shadow_beside_live_ones() {
    let s = Scenario::start_config_on(
        common::Backend::Sqlite,
        "workflows:\n  - template: profile-sync\n  - template: track-events\n    mode: shadow\n",
        Some(TOKEN),
    )
    .await;
    s.identify("u1", json!({"email": "ann@example.com"})).await;
    s.track("u1", "Order Completed", json!({"revenue": 10}))
        .await;
    s.until("the live contact", |s| {
        s.calls_at("POST", "/contacts").len() == 1
    })
    .await;
    s.quiet().await;
    assert!(
        s.calls_to("POST", "/events").is_empty(),
        "the shadowed event is not sent"
    );
    let report = s.cli(&["shadow", "report", "--json"]);
    let report: Value = serde_json::from_slice(&report.stdout).unwrap();
    assert_eq!(report["workflows"], json!({"track-events": 1}), "{report}");
    let routes = routes(&report);
    assert!(routes.iter().any(|r| r == "POST /events"), "{report}");
}
