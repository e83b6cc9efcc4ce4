//! `junction backfill` with the layout Segment's S3 destination writes
//! (`segment-logs/{source-id}/{received-day}/{file}.gz`, gzipped JSON lines; a fixture in
//! `tests/fixtures/segment-logs/`): validated like live traffic, planned only by the workflows
//! asked for, delivered in the backfill lane behind live traffic, and loaded again without a
//! second effect.

mod common;

use common::scenario::{Scenario, TOKEN};

fn archive() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/segment-logs")
}

/// Runs `junction backfill` off the test's runtime, which the emulator answering the
/// deliveries it waits for runs on.
async fn backfill(s: &Scenario, workflows: &str) -> String {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_junction"));
    command
        .args([
            "backfill",
            "--workflows",
            workflows,
            "--url",
            &s.server.url(""),
        ])
        .arg(archive())
        .arg("--config")
        .arg(&s.server.config);
    let run = tokio::task::spawn_blocking(move || command.output().unwrap())
        .await
        .unwrap();
    let err = String::from_utf8_lossy(&run.stderr).into_owned();
    assert!(run.status.success(), "{err}");
    err
}

#[tokio::test]
async fn a_segment_archive_is_backfilled_by_the_chosen_workflows_once() {
    let s = Scenario::start_config_on(
        common::Backend::Sqlite,
        "workflows:\n  - template: profile-sync\n  - template: track-events\n  - template: event-message\n",
        Some(TOKEN),
    )
    .await;
    let first = backfill(&s, "profile-sync,event-message").await;
    assert!(first.contains("9 event(s) in 1 file(s)"), "{first}");
    assert!(
        first.contains("9 new, 0 already loaded, 0 refused"),
        "{first}"
    );
    s.until("four contacts and the message", |s| {
        s.calls_at("POST", "/contacts").len() == 4 && s.calls_to("POST", "/messages").len() == 1
    })
    .await;
    s.quiet().await;
    assert!(
        s.calls_to("POST", "/events").is_empty(),
        "track-events was not asked to run on the old events"
    );
    // Everything planned for backfilled events waits in the backfill lane, the message too.
    let db = rusqlite::Connection::open(s.dir.path().join("data/junction.db")).unwrap();
    let lanes: Vec<i64> = db
        .prepare("SELECT DISTINCT lane FROM actions")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(lanes, [2]);

    // Loaded again (as after an interruption): recognised, nothing happens twice.
    let again = backfill(&s, "profile-sync,event-message").await;
    assert!(again.contains("0 new, 9 already loaded"), "{again}");
    s.quiet().await;
    assert_eq!(s.calls_at("POST", "/contacts").len(), 4);
    assert_eq!(s.calls_to("POST", "/messages").len(), 1);
}

/// Interrupted halfway (SIGKILL) and started again: every event stored once, every data event
/// sent to Intercom once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_backfill_started_again_has_each_effect_once() {
    const EVENTS: usize = 3_000;
    let s = Scenario::start_config_on(
        common::Backend::Sqlite,
        "workflows:\n  - template: track-events\n",
        Some(TOKEN),
    )
    .await;
    // An archive: two days of one source, gzipped JSON lines.
    let archive = tempfile::tempdir().unwrap();
    for (day, range) in [(0, 0..EVENTS / 2), (1, EVENTS / 2..EVENTS)] {
        let folder = archive.path().join(format!(
            "segment-logs/src_1/{}",
            1_764_806_400_000u64 + day * 86_400_000
        ));
        std::fs::create_dir_all(&folder).unwrap();
        let file = std::fs::File::create(folder.join("part.gz")).unwrap();
        let mut gz = flate2::write::GzEncoder::new(file, flate2::Compression::fast());
        for n in range {
            let line = serde_json::json!({"type": "track", "userId": format!("u{}", n % 100),
                "event": "Viewed", "messageId": format!("hist-{n}"),
                "timestamp": "2025-12-04T10:00:00Z", "properties": {"n": n}});
            std::io::Write::write_all(&mut gz, format!("{line}\n").as_bytes()).unwrap();
        }
        gz.finish().unwrap();
    }
    let db = s.dir.path().join("data/junction.db");
    let stored = || {
        rusqlite::Connection::open(&db)
            .unwrap()
            .query_row(
                "SELECT count(*) FROM events WHERE source = 'backfill'",
                [],
                |r| r.get::<_, i64>(0),
            )
            .unwrap()
    };
    let args = |s: &Scenario| {
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_junction"));
        command
            .args([
                "backfill",
                "--batch-events",
                "100",
                "--url",
                &s.server.url(""),
            ])
            .arg(archive.path())
            .arg("--config")
            .arg(&s.server.config)
            .stderr(std::process::Stdio::piped());
        command
    };
    let mut first = args(&s).spawn().unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while stored() < (EVENTS / 3) as i64 {
        assert!(
            std::time::Instant::now() < deadline,
            "the backfill did not start"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    first.kill().unwrap();
    first.wait().unwrap();
    let halfway = stored();
    assert!(
        halfway < EVENTS as i64,
        "interrupted before the end ({halfway})"
    );

    let again = args(&s).output().unwrap();
    let err = String::from_utf8_lossy(&again.stderr);
    assert!(again.status.success(), "{err}");
    assert_eq!(stored(), EVENTS as i64, "every event stored once");
    s.until("every data event", |s| {
        s.calls_to("POST", "/events").len() >= EVENTS
    })
    .await;
    s.quiet().await;
    let sent = s.calls_to("POST", "/events");
    let mut seen: Vec<i64> = sent
        .iter()
        .map(|call| call.body["metadata"]["n"].as_i64().unwrap())
        .collect();
    seen.sort();
    seen.dedup();
    assert_eq!(sent.len(), EVENTS, "no data event sent twice");
    assert_eq!(seen.len(), EVENTS);
    println!(
        "interrupted at {halfway} of {EVENTS} events; the second run sent the rest, each once"
    );
}

/// A backfill running at Intercom's limit takes at most four fifths of each window and leaves
/// the rest, and free workers and connections, to live traffic: a live user's contact is
/// created in the window it was sent in, while the backfill is far from delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_events_go_ahead_of_a_backfill_at_the_limit() {
    const EVENTS: usize = 400;
    const LIMIT: usize = 50;
    let s = Scenario::start_config_on(
        common::Backend::Sqlite,
        "workflows:\n  - template: profile-sync\n  - template: track-events\n",
        Some(TOKEN),
    )
    .await;
    s.emulator.set_rate_limit(LIMIT as u32);
    let archive = tempfile::tempdir().unwrap();
    let lines: String = (0..EVENTS)
        .map(|n| {
            let line = serde_json::json!({"type": "track", "userId": format!("old-{}", n % 40),
                "event": "Viewed", "messageId": format!("hist-{n}"),
                "timestamp": "2025-12-04T10:00:00Z", "properties": {"n": n}});
            format!("{line}\n")
        })
        .collect();
    std::fs::write(archive.path().join("events.jsonl"), lines).unwrap();
    let mut backfill = std::process::Command::new(env!("CARGO_BIN_EXE_junction"))
        .args(["backfill", "--url", &s.server.url("")])
        .arg(archive.path())
        .arg("--config")
        .arg(&s.server.config)
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // A window (Intercom's are 10 s, aligned to the Unix clock) in which the backfill is
    // delivering at its pace, with time left in it.
    let window_of = |ms: u64| ms / 10_000;
    let now_ms = || chrono::Utc::now().timestamp_millis() as u64;
    s.until("the backfill delivering in a window", |s| {
        let now = now_ms();
        let spent = s
            .calls()
            .iter()
            .filter(|call| window_of(call.received_ms) == window_of(now))
            .count();
        spent >= 5 && now % 10_000 < 7_000
    })
    .await;
    let window = window_of(now_ms());
    s.identify(
        "live-user",
        serde_json::json!({"email": "live@example.com"}),
    )
    .await;
    s.until("the live user's contact", |s| {
        s.calls_at("POST", "/contacts")
            .iter()
            .any(|call| call.body["external_id"] == "live-user")
    })
    .await;
    let live = s
        .calls_at("POST", "/contacts")
        .into_iter()
        .find(|call| call.body["external_id"] == "live-user")
        .unwrap();
    assert_eq!(
        window_of(live.received_ms),
        window,
        "the live call waited for the next window"
    );
    let backfilled = s.calls_to("POST", "/events");
    backfill.kill().unwrap();
    backfill.wait().unwrap();
    assert!(
        backfilled.len() < EVENTS / 2,
        "the live contact waited for {} backfill calls",
        backfilled.len()
    );
    let mut per_window = std::collections::BTreeMap::<u64, usize>::new();
    for call in &backfilled {
        *per_window.entry(call.received_ms / 10_000).or_default() += 1;
    }
    assert!(
        per_window.values().all(|&n| n <= LIMIT * 4 / 5),
        "the backfill took more than four fifths of a window: {per_window:?}"
    );
}
