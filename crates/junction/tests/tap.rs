//! `junction tap` against a running server: an event and the calls it causes appear within a
//! second, filters apply, and Ctrl-C ends it cleanly.

mod common;

use common::scenario::Scenario;
use serde_json::json;
use std::io::BufRead;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Reads a child's output line by line on a thread.
fn lines(output: impl std::io::Read + Send + 'static) -> mpsc::Receiver<String> {
    let (sender, received) = mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(output)
            .lines()
            .map_while(Result::ok)
        {
            if sender.send(line).is_err() {
                break;
            }
        }
    });
    received
}

/// Waits for a line containing `wanted`, returning it and when it came.
fn wait_for(lines: &mpsc::Receiver<String>, wanted: &str, seen: &mut Vec<String>) -> Instant {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match lines.recv_timeout(left) {
            Ok(line) => {
                let found = line.contains(wanted);
                seen.push(line);
                if found {
                    return Instant::now();
                }
            }
            Err(_) => panic!("no line with {wanted:?}; seen:\n{}", seen.join("\n")),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tap_shows_an_event_and_its_calls_within_a_second_and_stops_on_ctrl_c() {
    let s = Scenario::start_on(common::Backend::Sqlite, "  - template: profile-sync\n").await;
    let mut tap = Command::new(env!("CARGO_BIN_EXE_junction"))
        .args([
            "tap",
            "--calls",
            "--user",
            "ann",
            "--url",
            &s.server.url(""),
        ])
        .arg("--config")
        .arg(&s.server.config)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let out = lines(tap.stdout.take().unwrap());
    let err = lines(tap.stderr.take().unwrap());
    let mut seen = Vec::new();
    wait_for(&err, "tapping", &mut seen);

    // Someone else first: filtered out.
    s.identify("bo", json!({"email": "bo@example.com"})).await;
    s.until("bo's contact", |s| {
        s.calls_at("POST", "/contacts").len() == 1
    })
    .await;
    let sent = Instant::now();
    s.identify("ann", json!({"email": "ann@example.com"})).await;
    let event = wait_for(&out, "event    identify  user ann", &mut seen);
    wait_for(
        &out,
        "planned  contact by profile-sync  user ann",
        &mut seen,
    );
    let call = wait_for(&out, "call     POST /contacts 200", &mut seen);
    println!(
        "tap: the event after {} ms, its call after {} ms",
        (event - sent).as_millis(),
        (call - sent).as_millis()
    );
    assert!(event - sent < Duration::from_secs(1), "{seen:?}");
    assert!(call - sent < Duration::from_secs(1), "{seen:?}");
    assert!(
        seen.iter().all(|line| !line.contains("user bo")),
        "the filter let bo through: {seen:?}"
    );

    // Ctrl-C: a clean end.
    // SAFETY: kill(2) with a pid we own; no memory is touched.
    unsafe { libc::kill(tap.id() as libc::pid_t, libc::SIGINT) };
    wait_for(&err, "entries shown", &mut seen);
    let status = tap.wait().unwrap();
    assert!(status.success(), "{status:?}");
}
