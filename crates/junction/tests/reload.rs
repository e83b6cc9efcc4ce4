//! Hot reload of a running `junction serve` (SIGHUP): a workflow edited while 5,000 events
//! stream in takes effect from a batch boundary, with every event planned exactly once; a
//! broken edit is refused with its file, line and column, alerted once, and the workflow in
//! force keeps running; a setting only a restart can apply is refused by name.

mod common;

use common::scenario::{Scenario, alert_sink};
use common::{Backend, WRITE_KEY};
use serde_json::{Value, json};
use std::time::{Duration, Instant};

const EVENTS: usize = 5_000;
const BATCH: usize = 100;

fn workflow(tag: &str) -> String {
    format!("name: label\ntrigger: {{ on: segment.track }}\nsteps:\n  - intercom.tag: {tag}\n")
}

async fn until_config(s: &Scenario, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    common::eventually(
        || format!("log:\n{}", s.server.log()),
        async || {
            let status = s.admin("/api/config").await;
            if done(&status) {
                Ok(status)
            } else {
                Err(format!("{what}: {status}"))
            }
        },
    )
    .await
}

/// Waits until every event sent is planned (no Intercom here: actions are planned and kept).
async fn planned(s: &Scenario) {
    common::eventually(String::new, async || {
        match s.admin("/api/cluster").await["lagEvents"].as_i64() {
            Some(0) => Ok(()),
            lag => Err(format!("planning did not catch up (lag {lag:?})")),
        }
    })
    .await
}

/// The tag each event's action names, in log order.
fn tags_by_event(s: &Scenario) -> Vec<(i64, String)> {
    let db = rusqlite::Connection::open(s.dir.path().join("data/junction.db")).unwrap();
    let mut statement = db
        .prepare("SELECT seq, json_extract(body, '$.action.name') FROM actions ORDER BY seq")
        .unwrap();
    statement
        .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_workflow_edited_under_load_takes_effect_at_a_batch_boundary_and_a_broken_one_is_refused()
{
    let (sink, alerts) = alert_sink().await;
    let files = tempfile::tempdir().unwrap();
    let file = files.path().join("label.yaml");
    std::fs::write(&file, workflow("v1")).unwrap();
    let extra = format!(
        "alerts:\n  sinks: [{{ url: \"{sink}\", format: webhook }}]\n  cooldown: 1s\nworkflows:\n  - file: {}\n",
        file.display()
    );
    let s = Scenario::start_config_on(Backend::Sqlite, &extra, None).await;
    let first = s.admin("/api/config").await;
    assert_eq!(first["workflows"], json!(["label"]));
    assert_eq!(first["reloads"], 0);

    // 5,000 events in batches; halfway, the workflow changes and the server is told.
    let http = common::http();
    let url = s.server.url("/v1/batch");
    for batch in 0..EVENTS / BATCH {
        let messages: Vec<Value> = (0..BATCH)
            .map(|n| {
                let n = batch * BATCH + n;
                json!({"type": "track", "userId": format!("user-{}", n % 250),
                       "event": "Clicked", "messageId": format!("m-{n}")})
            })
            .collect();
        let response = http
            .post(&url)
            .basic_auth(WRITE_KEY, Some(""))
            .json(&json!({ "batch": messages }))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        if batch == EVENTS / BATCH / 2 {
            std::fs::write(&file, workflow("v2")).unwrap();
            s.server.hangup();
        }
    }
    let reloaded = until_config(&s, "the reload", |c| c["reloads"] == 1).await;
    assert_ne!(reloaded["version"], first["version"]);
    planned(&s).await;

    // Every event planned exactly once; the first ones by v1, from some batch on all by v2.
    let tags = tags_by_event(&s);
    assert_eq!(tags.len(), EVENTS, "one action per event");
    let mut seqs: Vec<i64> = tags.iter().map(|(seq, _)| *seq).collect();
    seqs.dedup();
    assert_eq!(seqs.len(), EVENTS, "no event planned twice");
    let switch = tags
        .iter()
        .position(|(_, tag)| tag == "v2")
        .expect("v2 took effect");
    assert!(switch > 0, "v1 planned the first events");
    assert!(
        tags[switch..].iter().all(|(_, tag)| tag == "v2"),
        "after the switch, only v2 plans"
    );
    println!("the reload took effect at event {switch} of {EVENTS}");

    // A broken edit: refused with its file, line and column; v2 keeps running; one alert.
    std::fs::write(
        &file,
        "name: label\ntrigger: { on: segment.track }\nsteps:\n  - intercom.tagg: v3\n",
    )
    .unwrap();
    s.server.hangup();
    let refused = until_config(&s, "the refusal", |c| c["lastRefused"].is_object()).await;
    let error = refused["lastRefused"]["error"].as_str().unwrap().to_owned();
    assert!(
        error.contains(&format!("{}:4:5:", file.display())) && error.contains("intercom.tagg"),
        "{error}"
    );
    assert_eq!(refused["version"], reloaded["version"], "v2 stays in force");
    assert!(s.server.log().contains("configuration reload refused"));
    s.track("late", "Clicked", json!({})).await;
    planned(&s).await;
    assert_eq!(tags_by_event(&s).last().unwrap().1, "v2");
    let deadline = Instant::now() + Duration::from_secs(20);
    while alerts.lock().unwrap().is_empty() {
        assert!(Instant::now() < deadline, "no alert");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let alerts_now: Vec<Value> = alerts.lock().unwrap().clone();
    assert_eq!(alerts_now.len(), 1, "{alerts_now:?}");
    assert_eq!(alerts_now[0]["kind"], "config_refused");

    // A setting only a restart can apply: refused by name, nothing reloaded.
    std::fs::write(&file, workflow("v4")).unwrap();
    let config = std::fs::read_to_string(&s.server.config).unwrap();
    std::fs::write(
        &s.server.config,
        format!("{config}delivery:\n  retry_window: 1h\n"),
    )
    .unwrap();
    s.server.hangup();
    let refused = until_config(&s, "the restart-only refusal", |c| {
        c["lastRefused"]["error"]
            .as_str()
            .is_some_and(|e| e.contains("delivery cannot change without a restart"))
    })
    .await;
    assert_eq!(refused["version"], reloaded["version"]);

    // `junction status` asks the running server.
    std::fs::write(&s.server.config, &config).unwrap();
    let status = s.cli(&["status", "--url", &s.server.url("")]);
    let out = String::from_utf8_lossy(&status.stdout);
    assert!(
        status.status.success(),
        "{out}{}",
        String::from_utf8_lossy(&status.stderr)
    );
    assert!(
        out.contains(&format!(
            "version {}",
            reloaded["version"].as_str().unwrap()
        )) && out.contains("workflows label")
            && out.contains("last refused reload"),
        "{out}"
    );
}

/// `serve --watch`: saving the workflow file is enough.
#[tokio::test]
async fn with_watch_saving_a_workflow_file_reloads_it() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("label.yaml");
    std::fs::write(&file, workflow("v1")).unwrap();
    let config = dir.path().join("junction.yaml");
    std::fs::write(
        &config,
        common::config_text(
            &dir.path().join("j.db"),
            &format!("workflows:\n  - file: {}\n", file.display()),
        ),
    )
    .unwrap();
    let port = common::free_port();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_junction"))
        .args(["serve", "--watch", "--config"])
        .arg(&config)
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let http = common::http();
    let status = || {
        let http = http.clone();
        async move {
            let response = http
                .get(format!("http://127.0.0.1:{port}/api/config"))
                .bearer_auth(common::ADMIN_TOKEN)
                .send()
                .await
                .ok()?;
            response.json::<Value>().await.ok()
        }
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    let first = loop {
        if let Some(first) = status().await {
            break first;
        }
        assert!(Instant::now() < deadline, "the server did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    std::fs::write(&file, workflow("v2")).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let now = status().await.unwrap();
        if now["reloads"] == 1 {
            assert_ne!(now["version"], first["version"]);
            break;
        }
        assert!(Instant::now() < deadline, "not reloaded: {now}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    child.kill().unwrap();
    child.wait().unwrap();
}
