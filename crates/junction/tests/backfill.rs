//! `junction backfill` with the layout Segment's S3 destination writes
//! (`segment-logs/{source-id}/{received-day}/{file}.gz`, gzipped JSON lines; a fixture in
//! `tests/fixtures/segment-logs/`): validated like live traffic, planned only by the workflows
//! asked for, delivered in the bulk lane, and loaded again without a second effect.

mod common;

use common::scenario::{Scenario, TOKEN};

fn archive() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/segment-logs")
}

fn backfill(s: &Scenario, workflows: &str) -> String {
    let run = s.cli(&[
        "backfill",
        archive().to_str().unwrap(),
        "--workflows",
        workflows,
        "--url",
        &s.server.url(""),
    ]);
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
    let first = backfill(&s, "profile-sync,event-message");
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
    // Everything planned for backfilled events waits in the bulk lane, the message too.
    let db = rusqlite::Connection::open(s.dir.path().join("data/junction.db")).unwrap();
    let urgent: i64 = db
        .query_row("SELECT count(*) FROM actions WHERE lane = 0", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(urgent, 0);

    // Loaded again (as after an interruption): recognised, nothing happens twice.
    let again = backfill(&s, "profile-sync,event-message");
    assert!(again.contains("0 new, 9 already loaded"), "{again}");
    s.quiet().await;
    assert_eq!(s.calls_at("POST", "/contacts").len(), 4);
    assert_eq!(s.calls_to("POST", "/messages").len(), 1);
}
