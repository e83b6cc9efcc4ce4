//! The binary as an operator meets it: graceful shutdown on SIGTERM, configuration errors with
//! exit code 2, and the `events` / `rejected` commands reading the same store.

mod common;

use common::{Server, WRITE_KEY};
use serde_json::{Value, json};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

fn junction(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_junction"))
        .args(args)
        .env("RUST_LOG", "error")
        .output()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_finishes_in_flight_requests_and_keeps_every_acknowledged_event() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(dir.path()).await;
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(AtomicUsize::new(0));
    let senders: Vec<_> = (0..8)
        .map(|client| {
            let (url, stop, acked) = (server.url("/v1/track"), stop.clone(), acked.clone());
            tokio::spawn(async move {
                let http = common::http();
                let mut ids = Vec::new();
                for n in 0.. {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let id = format!("term-{client}-{n}");
                    let sent = http
                        .post(&url)
                        .basic_auth(WRITE_KEY, None::<&str>)
                        .json(&json!({"userId": "u", "event": "E", "messageId": id}))
                        .send()
                        .await;
                    match sent {
                        Ok(r) if r.status().is_success() => {
                            acked.fetch_add(1, Ordering::Relaxed);
                            ids.push(id)
                        }
                        Ok(r) => assert_eq!(r.status(), 503, "only 'shutting down' may refuse"),
                        Err(_) => break, // the listener is closed
                    }
                }
                ids
            })
        })
        .collect();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while acked.load(Ordering::Relaxed) < 200 {
        assert!(
            std::time::Instant::now() < deadline,
            "traffic did not build up"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let status = server.terminate();
    assert!(
        status.success(),
        "junction exits cleanly on SIGTERM: {status}"
    );
    stop.store(true, Ordering::Relaxed);
    let mut acknowledged = Vec::new();
    for sender in senders {
        acknowledged.extend(sender.await.unwrap());
    }
    assert!(
        acknowledged.len() > 50,
        "too little traffic: {}",
        acknowledged.len()
    );

    server.spawn().await;
    let stored: Vec<String> = server
        .all_events()
        .await
        .iter()
        .map(|e| e["messageId"].as_str().unwrap().to_owned())
        .collect();
    for id in &acknowledged {
        assert!(
            stored.contains(id),
            "acknowledged {id} is missing after shutdown"
        );
    }
}

#[test]
fn configuration_errors_exit_2_naming_file_line_and_expectation() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("bad.yaml");
    std::fs::write(
        &config,
        "listen: 127.0.0.1:8080\nsegment:\n  write_keys: [a]\n  shared_secrt: x\n",
    )
    .unwrap();
    let output = junction(&["serve", "--config", config.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(&format!(
            "{}:4:3: segment.shared_secrt: unknown field",
            config.display()
        )),
        "{stderr}"
    );
    assert!(
        stderr.contains("expected one of write_keys, shared_secret, dedupe_window"),
        "{stderr}"
    );

    let output = junction(&["serve", "--config", "/nonexistent/junction.yaml"]);
    assert_eq!(output.status.code(), Some(2));
    let output = junction(&["serve", "--store", "mysql://db/x"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&output.stderr)
            .contains("expected sqlite://PATH or postgres://USER@HOST/DATABASE")
    );
    let output = junction(&["serve", "--store", "postgres://app:s3cret@db:port/x"]);
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("not a PostgreSQL connection URL"),
        "{stderr}"
    );
    assert!(!stderr.contains("s3cret"), "{stderr}");
    let output = junction(&["serve", "--listen", "nowhere"]);
    assert_eq!(output.status.code(), Some(2));
}

#[tokio::test]
async fn the_cli_reads_the_events_and_rejections_the_server_stored() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path()).await;
    let reply: Value = common::http()
        .post(server.url("/v1/batch"))
        .basic_auth(WRITE_KEY, Some(""))
        .json(&json!({"batch": [
            {"type": "identify", "userId": "cli-user", "messageId": "cli-1", "traits": {"plan": "pro"}},
            {"type": "track", "userId": "cli-user", "event": "Report Run", "messageId": "cli-2"},
            {"type": "track", "userId": "cli-user", "messageId": "cli-bad"}
        ]}))
        .send().await.unwrap().json().await.unwrap();
    assert_eq!(
        (reply["accepted"].as_u64(), reply["rejected"].as_u64()),
        (Some(2), Some(1))
    );

    let config = server.config.to_str().unwrap();
    let list = junction(&["events", "list", "--config", config]);
    assert!(list.status.success());
    let table = String::from_utf8(list.stdout).unwrap();
    let lines: Vec<&str> = table.lines().collect();
    assert!(lines[0].starts_with("SEQ  RECEIVED"), "{table}");
    assert!(
        lines[1].contains("track") && lines[1].contains("Report Run") && lines[1].contains("cli-2"),
        "{table}"
    );
    assert!(
        lines[2].contains("identify") && lines[2].contains("cli-1"),
        "{table}"
    );

    let json_list = junction(&[
        "events", "list", "--config", config, "--type", "identify", "--json",
    ]);
    let page: Value = serde_json::from_slice(&json_list.stdout).unwrap();
    assert_eq!(page["items"].as_array().unwrap().len(), 1);
    let seq = page["items"][0]["seq"].as_i64().unwrap().to_string();
    let show = junction(&["events", "show", "--config", config, &seq]);
    let event: Value = serde_json::from_slice(&show.stdout).unwrap();
    assert_eq!(event["body"]["traits"]["plan"], "pro");
    assert_eq!(
        junction(&["events", "show", "--config", config, "9999"])
            .status
            .code(),
        Some(2)
    );
    assert_eq!(
        junction(&["events", "list", "--config", config, "--limit", "0"])
            .status
            .code(),
        Some(2)
    );

    let rejected = junction(&["rejected", "list", "--config", config]);
    let text = String::from_utf8(rejected.stdout).unwrap();
    assert!(
        text.contains("cli-bad") && text.contains("event: required for a track call"),
        "{text}"
    );
}

#[tokio::test]
async fn json_logs_are_structured_and_never_show_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("junction.yaml");
    std::fs::write(
        &config,
        format!(
            "store: sqlite://{}\nsegment:\n  write_keys: [wk-secret-123]\n  shared_secret: hook-secret-456\nadmin:\n  token: admin-secret-789\n",
            dir.path().join("j.db").display()
        ),
    )
    .unwrap();
    let (child, port) = common::spawn_json_logged(&config, "debug").await;
    let http = common::http();
    let url = |path: &str| format!("http://127.0.0.1:{port}{path}");
    // A good key, a wrong key, a bad signature, a wrong admin token: none may be echoed.
    let body = json!({"batch": [{"type": "track", "userId": "u", "event": "E"}]});
    http.post(url("/v1/batch"))
        .basic_auth("wk-secret-123", Some(""))
        .json(&body)
        .send()
        .await
        .unwrap();
    http.post(url("/v1/batch"))
        .basic_auth("wk-wrong-000", Some(""))
        .json(&body)
        .send()
        .await
        .unwrap();
    http.post(url("/hooks/segment"))
        .header("X-Signature", "00")
        .json(&body)
        .send()
        .await
        .unwrap();
    http.get(url("/api/events"))
        .bearer_auth("admin-secret-789")
        .send()
        .await
        .unwrap();
    http.get(url("/api/events"))
        .bearer_auth("admin-wrong-000")
        .send()
        .await
        .unwrap();
    // Credentials in query strings, which some senders use, are redacted from request logs.
    http.get(url(
        "/api/events?limit=1&token=qs-secret-111&access_token=qs-secret-222",
    ))
    .send()
    .await
    .unwrap();
    http.post(url(
        "/v1/batch?writeKey=qs-secret-333&api_key=qs-secret-444",
    ))
    .json(&body)
    .send()
    .await
    .unwrap();
    let logs = common::stop_and_collect_logs(child);
    assert!(logs.lines().count() > 3, "{logs}");
    for line in logs.lines() {
        let entry: Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(
            entry["level"].is_string() && entry["timestamp"].is_string(),
            "{line}"
        );
    }
    assert!(logs.contains("listening"), "{logs}");
    assert!(
        logs.contains("token=[redacted]"),
        "request targets are logged: {logs}"
    );
    for secret in [
        "wk-secret-123",
        "hook-secret-456",
        "admin-secret-789",
        "wk-wrong-000",
        "admin-wrong-000",
        "qs-secret-111",
        "qs-secret-222",
        "qs-secret-333",
        "qs-secret-444",
    ] {
        assert!(!logs.contains(secret), "{secret} appears in the logs");
    }
}

#[tokio::test]
async fn the_intercom_emulator_runs_from_the_command_line() {
    let port = common::free_port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_junction"))
        .args([
            "emulate",
            "intercom",
            "--listen",
            &format!("127.0.0.1:{port}"),
        ])
        .args(["--token", "emu-token", "--search-lag-ms", "0"])
        .env("RUST_LOG", "error")
        .spawn()
        .unwrap();
    let http = common::http();
    let url = format!("http://127.0.0.1:{port}/contacts");
    let mut created = None;
    for _ in 0..200 {
        if let Ok(response) = http
            .post(&url)
            .bearer_auth("emu-token")
            .json(&json!({"external_id": "cli-1"}))
            .send()
            .await
        {
            created = Some(response);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let created = created.expect("the emulator answers");
    assert_eq!(created.status(), 200);
    let again = http
        .post(&url)
        .bearer_auth("emu-token")
        .json(&json!({"external_id": "cli-1"}))
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 409);
    let refused = http.get(&url).bearer_auth("other").send().await.unwrap();
    assert_eq!(refused.status(), 401);
    // SAFETY: kill(2) with a pid we own.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
    let status = child.wait().unwrap();
    assert!(status.success(), "{status:?}");
}

/// `serve` checks the Intercom token at start-up and says so, without printing it.
#[tokio::test]
async fn intercom_credentials_are_checked_at_start_up() {
    use junction_emulator::{Emulator, EmulatorConfig};
    let emulator = Emulator::new(EmulatorConfig {
        token: Some("right-token-123".into()),
        ..EmulatorConfig::default()
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let intercom = emulator.spawn(listener).await.unwrap();
    for (token, expected) in [
        ("right-token-123", "Intercom credentials accepted"),
        ("wrong-token-456", "Intercom credentials check failed"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("junction.yaml");
        std::fs::write(
            &config,
            format!(
                "store: sqlite://{}\nintercom:\n  base_url: http://{intercom}\n  token: {token}\n",
                dir.path().join("j.db").display()
            ),
        )
        .unwrap();
        let (mut child, _) = common::spawn_json_logged(&config, "info").await;
        // The check runs beside start-up: read the log as it is written until it says so.
        let lines = std::io::BufReader::new(child.stderr.take().unwrap());
        let (sender, received) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in lines.lines().map_while(Result::ok) {
                if sender.send(line).is_err() {
                    break;
                }
            }
        });
        // Waited for off the runtime: the emulator answering the check runs on it.
        let (mut logs, received) = tokio::task::spawn_blocking(move || {
            let mut logs = String::new();
            let deadline = Instant::now() + Duration::from_secs(20);
            while !logs.contains(expected) {
                let left = deadline.saturating_duration_since(Instant::now());
                match received.recv_timeout(left) {
                    Ok(line) => logs.push_str(&(line + "\n")),
                    Err(_) => break,
                }
            }
            (logs, received)
        })
        .await
        .unwrap();
        if !logs.contains(expected) {
            // SAFETY: kill(2) with a pid we own.
            unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGKILL) };
            panic!("`{expected}` never logged:\n{logs}");
        }
        // SAFETY: kill(2) with a pid we own.
        unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
        child.wait().unwrap();
        logs.extend(received.try_iter().map(|line| line + "\n"));
        assert!(!logs.contains(token), "the token appears in the logs");
    }
}

/// `junction migrate` creates a store's schema before any node starts (and says so), leaves a
/// current one alone; `junction cluster` then shows a node that ran on it planning every
/// partition, and after its clean stop, shows it gone. The partitions change only with every
/// node stopped. On PostgreSQL, where several nodes share a store.
#[tokio::test]
async fn migrate_and_cluster_on_postgres() {
    let dir = tempfile::tempdir().unwrap();
    let store = common::Backend::Postgres.fresh_store(dir.path()).await;
    let first = junction(&["migrate", "--store", &store]);
    assert!(first.status.success(), "{first:?}");
    let said = String::from_utf8_lossy(&first.stdout);
    assert!(said.contains("schema version 0 → "), "{said}");
    let again = junction(&["migrate", "--store", &store]);
    assert!(String::from_utf8_lossy(&again.stdout).contains("up to date"));

    let mut server =
        Server::start_on(dir.path(), store.clone(), "cluster:\n  node: only-node\n").await;
    let config = server.config.to_str().unwrap().to_owned();
    let cluster = junction(&["cluster", "--config", &config, "--json"]);
    let view: serde_json::Value = serde_json::from_slice(&cluster.stdout).unwrap();
    assert_eq!(view["nodes"][0]["name"], "only-node", "{view}");
    assert_eq!(view["nodes"][0]["alive"], true, "{view}");
    assert_eq!(
        view["partitions"].as_array().map(Vec::len),
        Some(8),
        "{view}"
    );
    let refused = junction(&["migrate", "--store", &store, "--partitions", "4"]);
    assert_eq!(refused.status.code(), Some(2), "{refused:?}");
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(
        said.contains("only-node") && said.contains("stop every node"),
        "{said}"
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let planning = loop {
        let cluster = junction(&["cluster", "--config", &config, "--json"]);
        let view: serde_json::Value = serde_json::from_slice(&cluster.stdout).unwrap();
        if view["nodes"][0]["plans"].as_array().map(Vec::len) == Some(8) {
            break view;
        }
        assert!(std::time::Instant::now() < deadline, "{view}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        planning["partitions"]
            .as_array()
            .unwrap()
            .iter()
            .all(|p| p["node"] == "only-node"),
        "one node plans every partition: {planning}"
    );
    assert!(server.terminate().success());
    let cluster = junction(&["cluster", "--config", &config]);
    let table = String::from_utf8_lossy(&cluster.stdout);
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("only-node") && l.contains("gone")),
        "{table}"
    );
    let changed = junction(&["migrate", "--store", &store, "--partitions", "4"]);
    assert!(changed.status.success(), "{changed:?}");
    assert!(String::from_utf8_lossy(&changed.stdout).contains("planning partitions 8 → 4"));
    let cluster = junction(&["cluster", "--config", &config, "--json"]);
    let view: serde_json::Value = serde_json::from_slice(&cluster.stdout).unwrap();
    assert_eq!(
        view["partitions"].as_array().map(Vec::len),
        Some(4),
        "{view}"
    );
}

/// `junction migrate --from sqlite://… --to postgres://…` moves a stopped store, says what it
/// copied, and refuses (exit 2, with the reason) to move into a database that holds data.
#[tokio::test]
async fn a_store_moves_from_sqlite_to_postgres_from_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(dir.path()).await;
    let sent = common::http()
        .post(server.url("/v1/track"))
        .basic_auth(WRITE_KEY, Some(""))
        .json(&json!({"userId": "u1", "event": "Moved", "messageId": "move-1"}))
        .send()
        .await
        .unwrap();
    assert_eq!(sent.status(), 200);
    assert!(server.terminate().success());
    let from = server.store.clone();
    let to = common::Backend::Postgres.fresh_store(dir.path()).await;
    let moved = junction(&["migrate", "--from", &from, "--to", &to]);
    let said = String::from_utf8_lossy(&moved.stdout);
    assert!(moved.status.success(), "{moved:?}");
    assert!(said.contains("events: 1 rows"), "{said}");
    let again = junction(&["migrate", "--from", &from, "--to", &to]);
    assert_eq!(again.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&again.stderr).contains("empty database"));
    // A node on the new store serves what was moved.
    let node = Server::start_on(dir.path(), to, "").await;
    let events = node.all_events().await;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["messageId"], "move-1");
}

/// `admin.listen`: the admin API and the console move to their own address, and the address
/// Segment and Intercom reach serves neither (it still takes events and answers health checks).
#[tokio::test]
async fn the_admin_api_and_the_console_can_have_an_address_of_their_own() {
    let dir = tempfile::tempdir().unwrap();
    let admin_port = common::free_port();
    let server =
        Server::start_with(dir.path(), &format!("  listen: 127.0.0.1:{admin_port}\n")).await;
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let admin = |path: &str| format!("http://127.0.0.1:{admin_port}{path}");
    let status = |response: reqwest::Response| response.status().as_u16();

    let sent = http
        .post(server.url("/v1/track"))
        .basic_auth(WRITE_KEY, Some(""))
        .json(&json!({"userId": "u1", "event": "Signed Up", "messageId": "m-admin"}))
        .send()
        .await
        .unwrap();
    assert_eq!(status(sent), 200);
    for path in ["/console/login", "/api/events"] {
        let public = http
            .get(server.url(path))
            .bearer_auth(common::ADMIN_TOKEN)
            .send()
            .await
            .unwrap();
        assert_eq!(status(public), 404, "{path} on the public address");
    }
    assert_eq!(
        status(http.get(server.url("/readyz")).send().await.unwrap()),
        200
    );

    let login = http.get(admin("/console/login")).send().await.unwrap();
    assert_eq!(status(login), 200);
    let events: Value = http
        .get(admin("/api/events"))
        .bearer_auth(common::ADMIN_TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(events["items"][0]["messageId"], "m-admin");
    let ingest = http
        .post(admin("/v1/track"))
        .basic_auth(WRITE_KEY, Some(""))
        .json(&json!({"userId": "u1", "event": "Signed Up"}))
        .send()
        .await
        .unwrap();
    assert_eq!(status(ingest), 404, "no ingest on the admin address");
}
