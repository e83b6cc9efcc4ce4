//! The real Segment SDKs (segment-analytics-python 2.4 from PyPI, @segment/analytics-node 3.1
//! from npm), pointed at a running `junction serve` on loopback, send every call type; every
//! message they put on the wire must be in the store exactly once with its fields intact.
//! The SDKs are installed by scripts/test.sh (and so by CI) from tests/clients/.

mod common;

use common::{Server, WRITE_KEY, repo_root};
use serde_json::Value;
use std::collections::HashMap;
use std::process::Command;

const ROUNDS: &str = "6";

fn run_client(program: &str, script: &str, host: &str, extra: &[&str]) -> Vec<Value> {
    let clients = repo_root().join("tests/clients");
    let output = Command::new(program)
        .arg(clients.join(script))
        .args([host, WRITE_KEY, ROUNDS])
        .args(extra)
        .current_dir(&clients)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    assert!(
        output.status.success(),
        "{script} failed ({}); are the SDKs installed? run scripts/test.sh, which installs tests/clients.\nstderr: {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("the client prints the messages it sent")
}

/// Each sent message is stored once, and every field the SDK sent is stored as sent.
fn assert_stored_exactly_once(sent: &[Value], stored: &[Value]) {
    let mut by_id: HashMap<&str, Vec<&Value>> = HashMap::new();
    for event in stored {
        by_id
            .entry(event["messageId"].as_str().unwrap())
            .or_default()
            .push(event);
    }
    assert_eq!(
        stored.len(),
        sent.len(),
        "stored {} events for {} sent",
        stored.len(),
        sent.len()
    );
    for message in sent {
        let id = message["messageId"]
            .as_str()
            .expect("the SDK sets messageId");
        let copies = by_id.get(id).map(Vec::as_slice).unwrap_or_default();
        assert_eq!(
            copies.len(),
            1,
            "message {id} stored {} times",
            copies.len()
        );
        let event = copies[0];
        assert_eq!(event["type"], message["type"], "{id}");
        for (field, value) in message.as_object().unwrap() {
            assert_eq!(&event["body"][field], value, "{id}: field {field}");
        }
        assert!(event["body"]["receivedAt"].is_string(), "{id}");
        assert!(
            event["body"]["sentAt"].is_string(),
            "{id}: the batch's sentAt is kept"
        );
    }
    let kinds: std::collections::BTreeSet<_> =
        stored.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(
        kinds.into_iter().collect::<Vec<_>>(),
        ["alias", "group", "identify", "page", "screen", "track"]
    );
}

#[tokio::test]
async fn analytics_python_messages_are_stored_exactly_once_and_intact() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path()).await;
    let sent = run_client("python3", "send.py", &server.url(""), &[]);
    assert_eq!(sent.len(), 42);
    assert_stored_exactly_once(&sent, &server.all_events().await);
}

#[tokio::test]
async fn analytics_python_gzip_bodies_are_stored_exactly_once_and_intact() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path()).await;
    let sent = run_client("python3", "send.py", &server.url(""), &["gzip"]);
    assert_stored_exactly_once(&sent, &server.all_events().await);
}

#[tokio::test]
async fn analytics_node_messages_are_stored_exactly_once_and_intact() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path()).await;
    let sent = run_client("node", "send.mjs", &server.url(""), &[]);
    assert_eq!(sent.len(), 42);
    assert_stored_exactly_once(&sent, &server.all_events().await);
}
