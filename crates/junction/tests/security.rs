//! Hostile input against the real binary (issue 11): ids that try to address someone else's
//! contact, unauthenticated webhooks, refusals as JSON, secrets kept out of the logs.

mod common;

use common::scenario::Scenario;
use serde_json::{Value, json};

/// Segment userIds that, formatted into a URL, would address another resource.
fn hostile_ids(alice_intercom_id: &str) -> Vec<String> {
    vec![
        "alice?x=1".into(),
        "alice#f".into(),
        format!("../{alice_intercom_id}"),
        "alice/../bob".into(),
        "%2e%2e".into(),
    ]
}

#[tokio::test]
async fn ids_in_urls_never_reach_another_users_contact() {
    let s = Scenario::start("  - template: profile-sync\n  - template: track-events\n").await;
    s.identify(
        "alice",
        json!({"email": "alice@example.com", "name": "Alice"}),
    )
    .await;
    s.track("alice", "Signed In", json!({"plan": "pro"})).await;
    s.until("alice's contact and event", |s| {
        !s.calls_at("POST", "/events").is_empty()
    })
    .await;
    let alice = s
        .contacts()
        .await
        .into_iter()
        .find(|c| c["external_id"] == "alice")
        .expect("alice's contact");
    let alice_id = alice["id"].as_str().unwrap().to_owned();
    let journal_before = s.emulator.journal_entries().len();
    let alice_events_before = s
        .get(&format!("/events?type=user&intercom_user_id={alice_id}"))
        .await;

    let ids = hostile_ids(&alice_id);
    for id in &ids {
        s.identify(
            id,
            json!({"name": "Mallory", "email": format!("m{}@evil.test", id.len())}),
        )
        .await;
        s.track(id, "Hijacked", json!({"by": id})).await;
    }
    s.until("a data event for every hostile user", |s| {
        s.calls_at("POST", "/events").len() == 1 + ids.len()
    })
    .await;
    s.quiet().await;

    // Each hostile id got a contact of its own, with exactly that external_id …
    let contacts = s.contacts().await;
    for id in &ids {
        let own: Vec<&Value> = contacts
            .iter()
            .filter(|c| c["external_id"] == id.as_str())
            .collect();
        assert_eq!(own.len(), 1, "{id}: {contacts:#?}");
        assert_eq!(own[0]["name"], "Mallory");
    }
    // … and Alice's contact is exactly as it was, with only her own data event.
    let alice_after = s
        .contacts()
        .await
        .into_iter()
        .find(|c| c["id"] == alice_id.as_str())
        .unwrap();
    assert_eq!(alice_after, alice, "Alice's contact changed");
    assert_eq!(
        s.get(&format!("/events?type=user&intercom_user_id={alice_id}"))
            .await,
        alice_events_before
    );
    // No request after hers addressed her contact or carried her id.
    for entry in &s.emulator.journal_entries()[journal_before..] {
        assert!(
            !entry.path.split('/').any(|segment| segment == alice_id),
            "{} {} addressed Alice",
            entry.method,
            entry.path
        );
        assert!(
            !entry.body.to_string().contains(&format!("\"{alice_id}\"")),
            "{} {} carried Alice's id: {}",
            entry.method,
            entry.path,
            entry.body
        );
    }
}

/// Through the real listener (hyper in front of Junction's router), refusals that axum or
/// Junction's limits produce are JSON naming a code.
#[tokio::test]
async fn refusals_through_the_real_listener_are_json() {
    let dir = tempfile::tempdir().unwrap();
    let server = common::Server::start(dir.path()).await;
    let http = common::http();
    let long = server.url(&format!("/v1/track?pad={}", "x".repeat(20_000)));
    let mut many = http.get(server.url("/healthz"));
    for n in 0..80 {
        many = many.header(format!("x-h{n}"), "v");
    }
    let cases = [
        (http.get(server.url("/v1/batch")), 405, "method_not_allowed"),
        (
            http.delete(server.url("/hooks/segment")),
            405,
            "method_not_allowed",
        ),
        (http.get(server.url("/no/such/page")), 404, "not_found"),
        (http.post(long), 414, "uri_too_long"),
        (many, 431, "headers_too_large"),
        (
            http.post(server.url("/hooks/segment")).json(&json!([])),
            401,
            "unauthorized",
        ),
    ];
    for (request, status, code) in cases {
        let response = request.send().await.unwrap();
        assert_eq!(response.status().as_u16(), status, "{code}");
        assert!(
            response.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("application/json")
        );
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["code"], code, "{body}");
        assert!(body["message"].as_str().is_some_and(|m| !m.is_empty()));
    }
}

/// Workflow files built to crash or hang the loader: `validate` answers each with a located
/// error and exit 2 (never a stack overflow), and warns about loops that will run out of fuel.
#[test]
fn hostile_workflow_files_get_located_errors_not_aborts() {
    let dir = tempfile::tempdir().unwrap();
    let head = "name: h\ntrigger:\n  on: segment.identify\n";
    let sum = vec!["1"; 200_000].join(" + ");
    let nested_if = {
        let mut text = format!("{head}steps:\n");
        for depth in 0..10_000 {
            let pad = "  ".repeat(depth + 1);
            text.push_str(&format!("{pad}- if: true\n{pad}  then:\n"));
        }
        text
    };
    let cases = [
        (
            "sum.yaml",
            format!("{head}when: \"{sum} > 0\"\nsteps:\n  - intercom.tag: x\n"),
            "4:7: when: an expression of",
        ),
        (
            "parens.yaml",
            format!(
                "{head}when: \"{}1{}\"\nsteps:\n  - intercom.tag: x\n",
                "(".repeat(10_000),
                ")".repeat(10_000)
            ),
            "4:7: when: an expression of",
        ),
        (
            "flow.yaml",
            format!(
                "{head}steps:\n  - intercom.contact:\n      traits: {}1{}\n",
                "[".repeat(10_000),
                "]".repeat(10_000)
            ),
            "nested too deeply",
        ),
        ("block.yaml", nested_if, "nested more than"),
    ];
    for (name, text, expected) in cases {
        std::fs::write(dir.path().join(name), text).unwrap();
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_junction"))
            .args(["validate", name])
            .current_dir(dir.path())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{name}: {stderr}");
        assert!(
            stderr.starts_with(&format!("error: {name}:")),
            "{name}: {stderr}"
        );
        assert!(stderr.contains(expected), "{name}: {stderr}");
    }
    let looping = format!(
        "{head}steps:\n  - intercom.contact:\n      traits:\n        x: \"{{% for a in range(100000) %}}{{% for b in range(100000) %}}x{{% endfor %}}{{% endfor %}}\"\n"
    );
    std::fs::write(dir.path().join("loop.yaml"), looping).unwrap();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_junction"))
        .args(["validate", "loop.yaml"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(stderr.contains("warning: loop.yaml:7:"), "{stderr}");
    assert!(stderr.contains("a loop inside a loop"), "{stderr}");
    // Planned for a real event, the loop stops with a clear error instead of hanging.
    std::fs::write(
        dir.path().join("identify.json"),
        r#"{"type": "identify", "userId": "u1", "traits": {"email": "a@example.com"}}"#,
    )
    .unwrap();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_junction"))
        .args(["test", "loop.yaml", "--event", "identify.json"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(all.contains("units of fuel"), "{all}");
}

/// SIGTERM with 100,000 actions waiting out Intercom's rate limit: Junction exits within
/// `shutdown_timeout`, and everything it acknowledged is still there when it starts again.
#[tokio::test]
async fn shutdown_is_bounded_with_a_rate_limited_backlog() {
    use junction_emulator::faults::Faults;
    use std::time::{Duration, Instant};
    let mut s = Scenario::start_config(
        "shutdown_timeout: 3s\nworkflows:\n  - template: profile-sync\n",
        Some(common::scenario::TOKEN),
    )
    .await;
    // Intercom answers 429 to everything for the next ten minutes.
    s.emulator.set_faults(Faults {
        storm_seconds: 600,
        ..Faults::default()
    });
    const USERS: usize = 100_000;
    for chunk in 0..USERS / 2_500 {
        let batch: Vec<Value> = (0..2_500)
            .map(|n| json!({"type": "identify", "userId": format!("u{}", chunk * 2_500 + n), "traits": {"plan": "pro"}}))
            .collect();
        s.send("batch", json!({ "batch": batch })).await;
    }
    let planned = Instant::now() + Duration::from_secs(240);
    loop {
        let status = s.admin("/api/delivery").await;
        if status["actions"]["pending"].as_u64() >= Some(USERS as u64 - 100) {
            break;
        }
        assert!(Instant::now() < planned, "not planned: {status}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let stopping = Instant::now();
    let status = s.server.terminate();
    let took = stopping.elapsed();
    // The bound itself is the contract (3 s), with room for process start-up noise.
    assert!(
        took < Duration::from_secs(6),
        "took {took:?} ({status}); log:\n{}",
        s.server.log()
    );
    eprintln!(
        "SIGTERM with {USERS} actions waiting out a 429 storm: stopped in {took:?} ({status})"
    );
    s.emulator.set_faults(Faults::default());
    s.server.spawn().await;
    let events = s.admin("/api/events?limit=1").await;
    assert_eq!(
        events["items"][0]["seq"].as_u64(),
        Some(USERS as u64),
        "every acknowledged event is kept"
    );
}

type Alerts = std::sync::Arc<std::sync::Mutex<Vec<Value>>>;

/// Junction with profile-sync, its alerts going to a recording webhook sink.
async fn profile_sync_with_alerts() -> (Scenario, Alerts) {
    let (sink, alerts) = common::scenario::alert_sink().await;
    let config = format!(
        "alerts:\n  sinks: [{{ url: \"{sink}\", format: webhook }}]\nworkflows:\n  - template: profile-sync\n"
    );
    let s = Scenario::start_config(&config, Some(common::scenario::TOKEN)).await;
    (s, alerts)
}

/// Waits until an alert of this kind reached the sink.
async fn alert_of_kind(s: &Scenario, alerts: &Alerts, kind: &str) {
    s.until(&format!("a {kind} alert"), |_| {
        alerts.lock().unwrap().iter().any(|a| a["kind"] == kind)
    })
    .await;
}

/// Runs SQL against a stopped server's database (to damage stored state as a bad disk, a
/// botched manual edit or a newer version would).
fn damage(s: &Scenario, sql: &str) {
    let db = rusqlite::Connection::open(s.dir.path().join("data/junction.db")).unwrap();
    db.execute_batch(sql).unwrap();
}

/// A user's stored profile that cannot be read: that user's events are held in quarantine
/// (reported, visible, never planned against an empty profile) while everyone else's flow;
/// releasing them with a reset profile plans them.
#[tokio::test]
async fn an_unreadable_profile_holds_only_that_users_events() {
    let (mut s, alerts) = profile_sync_with_alerts().await;
    s.identify("bob", json!({"email": "bob@example.com", "plan": "free"}))
        .await;
    s.until("bob's contact", |s| {
        s.calls_at("POST", "/contacts").len() == 1
    })
    .await;
    s.server.kill();
    damage(
        &s,
        r#"UPDATE profiles SET body = '{"milestones": "not a list"' WHERE identity = 'bob';"#,
    );
    s.server.spawn().await;
    s.identify("bob", json!({"plan": "pro"})).await;
    s.identify("carol", json!({"email": "carol@example.com"}))
        .await;
    s.until("carol's contact", |s| {
        s.calls_at("POST", "/contacts").len() == 2
    })
    .await;
    let held = loop {
        let held = s.admin("/api/quarantine").await;
        if held["items"].as_array().is_some_and(|i| !i.is_empty()) {
            break held;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    assert_eq!(held["items"][0]["identity"], "bob", "{held}");
    assert!(
        held["items"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("stored profile of \"bob\""),
        "{held}"
    );
    let runs = s.admin("/api/runs?user=bob").await;
    assert!(runs.to_string().contains("held, not planned"), "{runs}");
    alert_of_kind(&s, &alerts, "unreadable_state").await;
    assert!(
        s.calls()
            .iter()
            .all(|c| c.body["custom_attributes"]["plan"] != "pro"),
        "bob's held event was delivered"
    );

    let output = s.cli(&["quarantine", "release", "bob", "--reset-profile"]);
    assert!(output.status.success(), "{output:?}");
    s.until("bob's held identify delivered", |s| {
        s.calls()
            .iter()
            .any(|c| c.body["custom_attributes"]["plan"] == "pro")
    })
    .await;
    let held = s.admin("/api/quarantine").await;
    assert_eq!(held["items"], json!([]), "{held}");
}

/// Shared planner state that cannot be read stops the engine, not Junction: `/readyz` names
/// the part and why, an alert fires, and ingest keeps committing every event it acknowledges.
#[tokio::test]
async fn unreadable_shared_state_stops_the_engine_visibly_while_ingest_goes_on() {
    let (mut s, alerts) = profile_sync_with_alerts().await;
    s.server.kill();
    damage(
        &s,
        r#"INSERT OR REPLACE INTO shared_state (key, value, version) VALUES ('round_robin/x', '{"v": 7, "value": 1}', 1);"#,
    );
    s.server.spawn_until("/healthz").await;
    let http = common::http();
    let ready = loop {
        let response = http.get(s.server.url("/readyz")).send().await.unwrap();
        if response.status() == 503 {
            break response.json::<Value>().await.unwrap();
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    assert_eq!(ready["status"], "degraded", "{ready}");
    assert_eq!(ready["stopped"][0]["part"], "engine", "{ready}");
    assert!(
        ready["stopped"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("format v7, newer than this Junction reads"),
        "{ready}"
    );
    s.identify("dave", json!({"email": "dave@example.com"}))
        .await;
    let events = s.admin("/api/events?limit=5").await;
    assert_eq!(events["items"][0]["userId"], "dave", "{events}");
    alert_of_kind(&s, &alerts, "task_stopped").await;
    let metrics = http
        .get(s.server.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains(r#"junction_task_restarts_total{task="engine"}"#),
        "{metrics}"
    );
    assert!(
        s.calls_at("POST", "/contacts").is_empty(),
        "nothing was planned from a default state"
    );
}

/// Poison is recognised at once: an answer Junction cannot interpret dead-letters the action
/// after one attempt (not hours of retries), ids that cannot be sent exactly are refused at
/// ingest, and large integers keep their exact digits in the log.
#[tokio::test]
async fn poison_is_recognised_at_once() {
    use junction_emulator::faults::Faults;
    let s = Scenario::start("  - template: profile-sync\n").await;
    s.emulator.set_faults(Faults {
        garbage_rate: 1.0,
        ..Faults::default()
    });
    s.identify("pat", json!({"email": "pat@example.com"})).await;
    let dead = loop {
        let dead = s.admin("/api/dlq").await;
        if dead["items"].as_array().is_some_and(|i| !i.is_empty()) {
            break dead;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    let letter = &dead["items"][0];
    assert_eq!(letter["code"], "junction_unexpected_response", "{dead}");
    assert_eq!(letter["attempts"], 1, "{dead}");
    assert!(
        letter["error"].as_str().unwrap().contains("not JSON"),
        "{dead}"
    );
    s.emulator.set_faults(Faults::default());

    // A numeric userId beyond 2^53 has no exact value: refused, naming the field.
    let http = common::http();
    let response = http
        .post(s.server.url("/v1/identify"))
        .basic_auth(common::WRITE_KEY, Some(""))
        .header("content-type", "application/json")
        .body(r#"{"userId": 9007199254740993, "traits": {}}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let refusal: Value = response.json().await.unwrap();
    assert_eq!(refusal["field"], "userId", "{refusal}");
    assert!(
        refusal["message"].as_str().unwrap().contains("2^53"),
        "{refusal}"
    );

    // A 25-digit order id is kept digit for digit in the log.
    let response = http
        .post(s.server.url("/v1/track"))
        .basic_auth(common::WRITE_KEY, Some(""))
        .header("content-type", "application/json")
        .body(r#"{"userId": "pat", "event": "Order Completed", "properties": {"order_id": 1234567890123456789012345, "total": 0.100000000000000000001}}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let db = rusqlite::Connection::open(s.dir.path().join("data/junction.db")).unwrap();
    let body: String = db
        .query_row(
            "SELECT body FROM events WHERE event = 'Order Completed'",
            [],
            |row| row.get(0),
        )
        .unwrap();
    assert!(body.contains("1234567890123456789012345"), "{body}");
    assert!(body.contains("0.100000000000000000001"), "{body}");
}
