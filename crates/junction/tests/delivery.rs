//! Delivery you can trust, end to end against the Intercom emulator: a failing user is isolated
//! and replayed in order, refused credentials pause delivery with one alert and lose nothing,
//! queued updates coalesce, and the dead-letter queue and execution log are readable and
//! actionable through the CLI and the admin API.

mod common;

use common::scenario::{Scenario, TOKEN, alert_sink};
use serde_json::{Value, json};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A webhook that fails (500) for one user while `broken` is set, and records what it accepted.
struct Hook {
    url: String,
    broken: Arc<AtomicBool>,
    accepted: Arc<Mutex<Vec<(String, i64, Instant)>>>,
}

async fn hook() -> Hook {
    let broken = Arc::new(AtomicBool::new(true));
    let accepted: Arc<Mutex<Vec<(String, i64, Instant)>>> = Arc::default();
    let (flag, log) = (Arc::clone(&broken), Arc::clone(&accepted));
    let app = axum::Router::new().route(
        "/notify",
        axum::routing::post(move |axum::Json(body): axum::Json<Value>| {
            let (flag, log) = (Arc::clone(&flag), Arc::clone(&log));
            async move {
                let user = body["user"].as_str().unwrap_or_default().to_owned();
                if user == "poison" && flag.load(Ordering::SeqCst) {
                    return axum::http::StatusCode::INTERNAL_SERVER_ERROR;
                }
                log.lock()
                    .unwrap()
                    .push((user, body["n"].as_i64().unwrap_or(-1), Instant::now()));
                axum::http::StatusCode::OK
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    Hook {
        url: format!("http://{addr}/notify"),
        broken,
        accepted,
    }
}

const NOTIFY: &str = r#"
name: notify
trigger:
  on: segment.track
steps:
  - http.request:
      url: "{{ vars.hook }}"
      body: { user: "{{ event.userId }}", n: "{{ event.properties.n }}" }
"#;

#[tokio::test]
async fn a_failing_user_is_set_aside_dead_lettered_and_replayed_in_order() {
    let hook = hook().await;
    let dir_workflow = tempfile::tempdir().unwrap();
    let workflow = dir_workflow.path().join("notify.yaml");
    std::fs::write(&workflow, NOTIFY).unwrap();
    let s = Scenario::start_config(
        &format!(
            "delivery: {{ retry_window: 1s, min_attempts: 2 }}\nworkflows:\n  - file: {}\n    vars: {{ hook: \"{}\" }}\n",
            workflow.display(),
            hook.url
        ),
        Some(TOKEN),
    )
    .await;
    for n in 0..3 {
        s.track("poison", "Clicked", json!({"n": n})).await;
    }
    let users = 50;
    for n in 0..2 {
        for u in 0..users {
            s.track(&format!("user{u}"), "Clicked", json!({"n": n}))
                .await;
        }
    }
    let sent = Instant::now();
    s.until("every other user's notifications", |_| {
        hook.accepted.lock().unwrap().len() == users * 2
    })
    .await;
    let others_done = sent.elapsed();
    // The poison user's retries (several seconds of them) held back nobody else.
    assert!(
        others_done < Duration::from_secs(3),
        "others waited {others_done:?} behind a failing user"
    );
    {
        let accepted = hook.accepted.lock().unwrap();
        for u in 0..users {
            let ns: Vec<i64> = accepted
                .iter()
                .filter(|(user, ..)| *user == format!("user{u}"))
                .map(|(_, n, _)| *n)
                .collect();
            assert_eq!(ns, [0, 1], "user{u} in order");
        }
    }
    // The poison user's three actions end in the dead-letter queue, each with its attempts.
    let deadline = Instant::now() + Duration::from_secs(30);
    let letters = loop {
        let letters = s.admin("/api/dlq?workflow=notify").await["items"]
            .as_array()
            .unwrap()
            .clone();
        if letters.len() == 3 {
            break letters;
        }
        assert!(
            Instant::now() < deadline,
            "dead letters: {letters:#?}\n{}",
            s.server.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(
        letters.iter().all(|l| l["user"] == "poison"
            && l["code"] == "http_500"
            && l["attempts"].as_i64() >= Some(2)),
        "{letters:#?}"
    );
    let list = s.cli(&["dlq", "list", "--user", "poison"]);
    assert!(
        String::from_utf8_lossy(&list.stdout).contains("3 dead letter(s)"),
        "{}",
        String::from_utf8_lossy(&list.stderr)
    );

    // Fixed: replay delivers them, in their original order.
    hook.broken.store(false, Ordering::SeqCst);
    let replay = s.cli(&["dlq", "replay", "--workflow", "notify"]);
    assert!(
        replay.status.success(),
        "{}",
        String::from_utf8_lossy(&replay.stderr)
    );
    assert!(String::from_utf8_lossy(&replay.stdout).contains("replayed 3 dead letter(s)"));
    s.until("the replayed notifications", |_| {
        hook.accepted
            .lock()
            .unwrap()
            .iter()
            .filter(|(u, ..)| u == "poison")
            .count()
            == 3
    })
    .await;
    let poison: Vec<i64> = hook
        .accepted
        .lock()
        .unwrap()
        .iter()
        .filter(|(u, ..)| u == "poison")
        .map(|(_, n, _)| *n)
        .collect();
    assert_eq!(poison, [0, 1, 2]);
    assert!(
        s.admin("/api/dlq").await["items"]
            .as_array()
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn refused_credentials_pause_delivery_alert_once_and_lose_nothing() {
    let (sink, alerts) = alert_sink().await;
    let config = format!(
        "delivery: {{ probe_every: 1s }}\nalerts:\n  sinks: [{{ url: \"{sink}\", format: slack }}]\nworkflows:\n  - template: profile-sync\n"
    );
    let s = Scenario::start_config(&config, Some(TOKEN)).await;
    s.identify("u0", json!({"email": "u0@example.com"})).await;
    s.until("the first contact", |s| {
        s.calls_at("POST", "/contacts").len() == 1
    })
    .await;

    // The token is revoked: delivery pauses instead of burning attempts, and says so once.
    s.emulator.set_token(Some("rotated".into()));
    for n in 1..=5 {
        s.identify(
            &format!("u{n}"),
            json!({"email": format!("u{n}@example.com")}),
        )
        .await;
    }
    // Paused: the calls already under way are refused, then one probe a second (probe_every).
    let refused = |s: &Scenario| {
        s.emulator
            .journal_entries()
            .iter()
            .filter(|e| e.status == 401)
            .count()
    };
    s.until("two probes after the pause", |s| refused(s) >= 3)
        .await;
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while alerts.lock().unwrap().is_empty() {
        assert!(std::time::Instant::now() < deadline, "no alert");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let refused = refused(&s);
    assert!(
        (3..=8).contains(&refused),
        "{refused} refused calls: delivery must pause and probe, not retry everything"
    );
    assert_eq!(
        alerts.lock().unwrap().len(),
        1,
        "one alert: {:?}",
        alerts.lock().unwrap()
    );
    assert!(
        alerts.lock().unwrap()[0]["text"]
            .as_str()
            .unwrap()
            .contains("credentials")
    );
    let pending = s.admin("/api/runs?workflow=profile-sync").await["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["status"] == "delivering")
        .count();
    assert_eq!(pending, 5, "the actions wait");

    // Fixed: delivery resumes by itself and everything arrives.
    s.emulator.set_token(Some(TOKEN.into()));
    s.until("all six contacts", |s| {
        s.calls_at("POST", "/contacts").len() == 6
    })
    .await;
    assert!(
        s.admin("/api/dlq").await["items"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    assert_eq!(alerts.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn a_hundred_queued_identifies_become_one_contact_write() {
    // Delivery paused (no Intercom configured yet) while 100 identifies queue up.
    let mut s = Scenario::start_config("workflows:\n  - template: profile-sync\n", None).await;
    for n in 0..100 {
        s.identify("u1", json!({"email": "u1@example.com", "n": n, "plan": if n < 50 { "trial" } else { "pro" }})).await;
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while s.admin("/api/runs?limit=1000").await["items"]
        .as_array()
        .unwrap()
        .len()
        < 100
    {
        assert!(Instant::now() < deadline, "not planned");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    s.restart_with("workflows:\n  - template: profile-sync\n", Some(TOKEN))
        .await;
    s.until("the contact", |s| {
        s.calls_at("POST", "/contacts").len() == 1
    })
    .await;
    s.quiet().await;
    let writes: Vec<_> = s
        .calls()
        .into_iter()
        .filter(|e| (e.method == "POST" && e.path == "/contacts") || e.method == "PUT")
        .collect();
    assert_eq!(writes.len(), 1, "{writes:#?}");
    assert_eq!(writes[0].body["custom_attributes"]["n"], 99);
    assert_eq!(writes[0].body["custom_attributes"]["plan"], "pro");
    let contact = &s.contacts().await[0];
    assert_eq!(contact["custom_attributes"]["n"], 99);
}

#[tokio::test]
async fn dead_letters_and_runs_are_shown_and_acted_on_through_cli_and_api() {
    // A note from an admin the workspace does not have: Intercom refuses it for good.
    let workflow = r#"
name: greet
trigger:
  on: segment.identify
steps:
  - intercom.contact: {}
  - intercom.note:
      admin: "999"
      body: "Welcome {{ traits.name }}"
  - intercom.tag: greeted
"#;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("greet.yaml"), workflow).unwrap();
    let s = Scenario::start_config(
        &format!(
            "workflows:\n  - file: {}\n",
            dir.path().join("greet.yaml").display()
        ),
        Some(TOKEN),
    )
    .await;
    s.send(
        "identify",
        json!({"userId": "ann", "messageId": "m-ann-1", "traits": {"name": "Ann"}}),
    )
    .await;
    let deadline = Instant::now() + Duration::from_secs(15);
    while s.admin("/api/dlq").await["items"]
        .as_array()
        .unwrap()
        .is_empty()
    {
        assert!(
            Instant::now() < deadline,
            "no dead letter; log: {}",
            s.server.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // API: the dead letter with its event, step, attempts, calls and reason.
    let letter = &s.admin("/api/dlq").await["items"][0];
    assert_eq!(
        (letter["id"].as_str(), letter["code"].as_str()),
        (Some("m-ann-1/greet/1"), Some("not_found"))
    );
    let detail = s.admin("/api/actions/m-ann-1/greet/1").await;
    assert_eq!(detail["event"]["messageId"], "m-ann-1");
    assert_eq!(detail["status"], "failed");
    let calls = detail["attempts"][0]["calls"].as_array().unwrap();
    assert!(
        calls
            .iter()
            .any(|c| c["path"].as_str().unwrap().ends_with("/notes") && c["status"] == 404),
        "{calls:#?}"
    );
    // The run shows each step: the contact delivered, the note failed, the tag skipped.
    let run = s.admin("/api/runs/m-ann-1/greet").await;
    let statuses: Vec<&str> = run["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|st| st["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, ["done", "failed", "skipped"]);
    assert_eq!(run["status"], "partial");

    // CLI: the same, as text for people.
    let scrub = |bytes: &[u8]| {
        let text = String::from_utf8_lossy(bytes).into_owned();
        let text = replace(&text, r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z", "<time>");
        let text = replace(&text, r"\b\d+ ms\b", "<n> ms");
        replace(&text, r"6762f0dd1bb69f9f[0-9a-f]{8}", "<contact>")
    };
    insta::assert_snapshot!("dlq_list", scrub(&s.cli(&["dlq", "list"]).stdout));
    insta::assert_snapshot!(
        "runs_show",
        scrub(&s.cli(&["runs", "show", "m-ann-1/greet"]).stdout)
    );
    let shown: Value =
        serde_json::from_slice(&s.cli(&["dlq", "show", "m-ann-1/greet/1"]).stdout).unwrap();
    assert_eq!(shown["reason"], detail["reason"]);

    // Discard through the API: out of the queue, kept in the log.
    let discarded = s
        .admin_post("/api/dlq/discard", json!({"ids": ["m-ann-1/greet/1"]}))
        .await;
    assert_eq!(discarded["discarded"], 1);
    assert!(
        s.admin("/api/dlq").await["items"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        s.admin("/api/actions/m-ann-1/greet/1").await["status"],
        "discarded"
    );
}

/// Replaces every match of `pattern` (scrubs times and ids out of snapshots).
fn replace(text: &str, pattern: &str, with: &str) -> String {
    regex::Regex::new(pattern)
        .unwrap()
        .replace_all(text, with)
        .into_owned()
}

#[tokio::test]
async fn urgent_actions_overtake_a_backlog_of_syncs() {
    // A backlog of 150 users' profile syncs builds up while delivery waits for Intercom; then
    // one user's payment fails. With one user delivered at a time, the conversation (urgent
    // lane) goes out before the syncs queued ahead of it.
    let workflows = "workflows:\n  - template: profile-sync\n  - template: churn-risk\n";
    let mut s = Scenario::start_config(workflows, None).await;
    let batch: Vec<Value> = (0..150)
        .map(|n| json!({"type": "identify", "userId": format!("bulk{n:03}"), "traits": {"plan": "pro"}}))
        .chain(std::iter::once(json!({"type": "track", "userId": "late", "event": "Payment Failed"})))
        .collect();
    s.send("batch", json!({ "batch": batch })).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    // 150 syncs, and for the late user a tag, an attribute update and a conversation.
    while s.admin("/api/delivery").await["actions"]["pending"] != 153 {
        assert!(
            Instant::now() < deadline,
            "{}",
            s.admin("/api/delivery").await
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    s.restart_with(
        &format!("delivery: {{ users_in_parallel: 1 }}\n{workflows}"),
        Some(TOKEN),
    )
    .await;
    s.until("the conversation", |s| {
        s.calls_at("POST", "/conversations").len() == 1
    })
    .await;
    let journal = s.emulator.journal_entries();
    let conversation_at = journal
        .iter()
        .position(|e| e.path == "/conversations")
        .unwrap();
    let syncs_before = journal[..conversation_at]
        .iter()
        .filter(|e| {
            e.method == "POST"
                && e.path == "/contacts"
                && e.body["external_id"]
                    .as_str()
                    .is_some_and(|id| id.starts_with("bulk"))
        })
        .count();
    assert!(
        syncs_before < 10,
        "{syncs_before} of 150 earlier syncs went first"
    );
}

#[tokio::test]
async fn sustained_errors_and_an_aging_backlog_raise_grouped_alerts() {
    let (sink, alerts) = alert_sink().await;
    let config = format!(
        "delivery: {{ health_every: 1s }}\nalerts:\n  sinks: [{{ url: \"{sink}\", format: webhook }}]\n  backlog_age: 1s\n  error_rate: 0.5\nworkflows:\n  - template: profile-sync\n"
    );
    let s = Scenario::start_config(&config, Some(TOKEN)).await;
    // Delivery is up (it checks the credentials first), then Intercom starts failing.
    s.identify("first", json!({"plan": "pro"})).await;
    s.until("the first contact", |s| {
        s.calls_at("POST", "/contacts").len() == 1
    })
    .await;
    s.emulator.set_faults(junction_emulator::faults::Faults {
        error_rates: std::collections::BTreeMap::from([(500, 1.0)]),
        ..Default::default()
    });
    let batch: Vec<Value> = (0..25)
        .map(|n| json!({"type": "identify", "userId": format!("u{n}"), "traits": {"plan": "pro"}}))
        .collect();
    s.send("batch", json!({ "batch": batch })).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    let kinds = loop {
        let kinds: std::collections::BTreeSet<String> = alerts
            .lock()
            .unwrap()
            .iter()
            .filter_map(|a| a["kind"].as_str().map(str::to_owned))
            .collect();
        if kinds.contains("error_rate") && kinds.contains("backlog") {
            break kinds;
        }
        assert!(
            Instant::now() < deadline,
            "alerts so far: {:?}",
            alerts.lock().unwrap()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let all = alerts.lock().unwrap().clone();
    let error_rate = all.iter().find(|a| a["kind"] == "error_rate").unwrap();
    assert!(
        error_rate["examples"][0]
            .as_str()
            .unwrap()
            .contains("attempts failed"),
        "{error_rate}"
    );
    // Rate-limited: one message per kind within the cooldown, however many checks fired.
    for kind in &kinds {
        assert_eq!(
            all.iter().filter(|a| a["kind"] == kind.as_str()).count(),
            1,
            "{kind}: {all:#?}"
        );
    }
}
