//! `junction-bench console`: how long the console's pages take with real volumes. Builds a
//! SQLite store with 1,000,000 events and 1,000,000 actions (each with its run and attempt,
//! about one in a hundred users with a dead letter) through the store's own API, then starts the
//! real `junction serve` on it, signs in, and times each page over HTTP: p50, p99 and the
//! slowest of 20 requests.

use junction_store::{
    ActionOutcome, AppendBatch, Attempt, EngineCommit, NewAction, NewRun, Store, StoreOptions,
};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(clap::Args)]
pub struct ConsoleArgs {
    /// The junction binary to measure.
    #[arg(long, default_value = "target/release/junction")]
    junction: PathBuf,
    /// Events in the store (one action each).
    #[arg(long, default_value_t = 1_000_000)]
    events: usize,
    /// Users the events are spread over.
    #[arg(long, default_value_t = 20_000)]
    users: usize,
    /// Requests per page.
    #[arg(long, default_value_t = 20)]
    requests: usize,
    /// Replace the console section of this Markdown file with the results.
    #[arg(long)]
    write: Option<PathBuf>,
}

const ADMIN_TOKEN: &str = "bench-admin-token";

pub async fn console(args: ConsoleArgs) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let url = format!("sqlite://{}", dir.path().join("junction.db").display());
    let store = junction_store::open(&url, StoreOptions::default()).await?;
    let started = Instant::now();
    let (seqs, letters) = fill(Arc::clone(&store), args.events, args.users).await?;
    let fill_seconds = started.elapsed().as_secs_f64();
    println!(
        "filled {} events and actions over {} users ({letters} dead letters) in {fill_seconds:.0} s",
        args.events, args.users
    );
    store.close().await?;
    drop(store);

    let port = crate::free_port()?;
    let config = dir.path().join("junction.yaml");
    std::fs::write(
        &config,
        format!(
            "store: {url}\nadmin:\n  token: {ADMIN_TOKEN}\nworkflows:\n  - template: profile-sync\n  - template: track-events\n"
        ),
    )?;
    let mut serve = crate::spawn_serve(&args.junction, &config, port)?;
    let result = measure(port, &seqs, args.requests).await;
    let _ = serve.kill();
    let _ = serve.wait();
    let rows = result?;
    let report = report(&args, fill_seconds, &rows);
    print!("{report}");
    if let Some(path) = &args.write {
        crate::replace_marked(path, "console", &report)?;
    }
    Ok(())
}

/// Appends the events, commits one action and one run per event, and records every action
/// done (with an attempt and its call) except the last action of every hundredth user, which
/// fails: the dead-letter queue. Returns a sample of event numbers and the dead letters.
async fn fill(
    store: Arc<dyn Store>,
    events: usize,
    users: usize,
) -> anyhow::Result<(Vec<i64>, usize)> {
    let base = chrono::Utc::now() - chrono::Duration::hours(1);
    let per_batch = 1_000;
    let mut appended = 0;
    while appended < events {
        let count = per_batch.min(events - appended);
        let messages: Vec<serde_json::Value> = (appended..appended + count)
            .map(|n| {
                let user = format!("user-{}", n % users);
                let at = (base + chrono::Duration::milliseconds(n as i64)).to_rfc3339();
                if n < users {
                    serde_json::json!({"type": "identify", "userId": user, "messageId": format!("c{n}"), "timestamp": at,
                        "traits": {"email": format!("{user}@example.com"), "plan": "pro"}})
                } else {
                    serde_json::json!({"type": "track", "userId": user, "messageId": format!("c{n}"), "timestamp": at,
                        "event": if n % 7 == 0 { "Order Completed" } else { "Page Viewed" }, "properties": {"n": n}})
                }
            })
            .collect();
        let received = chrono::Utc::now();
        let envelope = junction_model::parse_batch(
            serde_json::json!({ "batch": messages })
                .to_string()
                .as_bytes(),
            received,
        )?;
        store
            .append(AppendBatch::new(
                "bench",
                received,
                envelope.messages,
                envelope.rejected,
            ))
            .await?;
        appended += count;
    }

    // One action and one run per event, in the log's order, as the engine commits them.
    let mut seqs = Vec::new();
    let mut after = 0;
    loop {
        let page = store.events_after(0, after, 10_000).await?;
        let Some(last) = page.last() else { break };
        after = last.seq;
        let mut commit = EngineCommit::default();
        for event in &page {
            let workflow = if event.kind == "identify" {
                "profile-sync"
            } else {
                "track-events"
            };
            let run = format!("{}/{workflow}", event.message_id);
            commit.actions.push(NewAction {
                id: format!("{run}/0"),
                identity: event.identity.clone(),
                run: run.clone(),
                seq: event.seq,
                lane: 1,
                standby_for: None,
                capped: None,
                body: serde_json::json!({"id": format!("{run}/0"), "run": run, "workflow": workflow, "step": "0",
                    "identity": event.identity, "who": {"user_id": event.identity},
                    "action": {"kind": if workflow == "profile-sync" { "contact" } else { "event" }}}).to_string(),
            });
            commit.runs.push(NewRun {
                run,
                seq: event.seq,
                workflow: workflow.into(),
                identity: event.identity.clone(),
                actions: 1,
                paused: false,
                error: None,
            });
            if event.seq % 50_000 == 0 {
                seqs.push(event.seq);
            }
        }
        store.engine_commit(commit).await?;
    }
    if seqs.is_empty() {
        seqs.push(after);
    }

    // Every user's actions recorded at once under one claim, 64 users at a time.
    let mut letters = 0;
    loop {
        let now = chrono::Utc::now().timestamp_millis();
        let claims = store.claim_users("bench", now, 600_000, 64).await?;
        if claims.is_empty() {
            break;
        }
        let mut tasks = tokio::task::JoinSet::new();
        for claim in claims {
            let store = Arc::clone(&store);
            tasks.spawn(async move {
                let pending = store.pending_of(&claim.identity, 1_000).await?;
                let fails = claim
                    .identity
                    .trim_start_matches("user-")
                    .parse::<usize>()
                    .is_ok_and(|n| n % 100 == 0);
                let last = pending.len().saturating_sub(1);
                let outcomes: Vec<ActionOutcome> = pending
                    .iter()
                    .enumerate()
                    .map(|(i, action)| {
                        let attempt = Attempt {
                            number: 1,
                            at_ms: now,
                            duration_ms: 42,
                            outcome: "done".into(),
                            error: None,
                            calls: serde_json::json!([{"method": "POST", "path": "/events", "status": 202, "ms": 41,
                                "request": "{\"event_name\":\"Page Viewed\"}"}]),
                        };
                        if fails && i == last {
                            ActionOutcome::Failed {
                                id: action.id.clone(),
                                error: "Intercom refused it".into(),
                                code: "parameter_invalid".into(),
                                attempt: Attempt {
                                    outcome: "failed".into(),
                                    ..attempt
                                },
                                skip_rest_of_run: false,
                            }
                        } else {
                            ActionOutcome::Done {
                                id: action.id.clone(),
                                result: Some("event for contact 42".into()),
                                attempt,
                                merged: Vec::new(),
                            }
                        }
                    })
                    .collect();
                store.action_outcomes(&claim, outcomes).await?;
                store.release_claim(&claim).await?;
                anyhow::Ok(usize::from(fails))
            });
        }
        while let Some(done) = tasks.join_next().await {
            letters += done??;
        }
    }
    Ok((seqs, letters))
}

/// Each page's times, in milliseconds: (page, p50, p99, max).
async fn measure(
    port: u16,
    seqs: &[i64],
    requests: usize,
) -> anyhow::Result<Vec<(String, f64, f64, f64)>> {
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()?;
    crate::wait_until_up(&http, &format!("{base}/readyz"), Duration::from_secs(120)).await?;
    let signed_in = http
        .post(format!("{base}/console/login"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("token={ADMIN_TOKEN}"))
        .send()
        .await?;
    let cookie = signed_in
        .headers()
        .get("set-cookie")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .ok_or_else(|| anyhow::anyhow!("no session cookie"))?
        .to_owned();
    let seq = seqs[seqs.len() / 2];
    let run = format!("c{}/track-events", seq - 1);
    let pages = [
        ("Overview", "/console".to_owned()),
        ("Events", "/console/events".to_owned()),
        (
            "Events, type=identify",
            "/console/events?type=identify".to_owned(),
        ),
        (
            "Events, userId",
            "/console/events?userId=user-4242".to_owned(),
        ),
        (
            "Events, an older page",
            format!("/console/events?cursor={seq}"),
        ),
        ("An event and its runs", format!("/console/events/{seq}")),
        ("Runs", "/console/runs".to_owned()),
        (
            "Runs, workflow=profile-sync",
            "/console/runs?workflow=profile-sync".to_owned(),
        ),
        ("A run", format!("/console/runs/{run}")),
        ("Dead letters", "/console/dlq".to_owned()),
        (
            "People, by userId",
            "/console/people?q=user-4242".to_owned(),
        ),
        (
            "People, by email",
            "/console/people?q=user-4242%40example.com".to_owned(),
        ),
        ("Workflows", "/console/workflows".to_owned()),
        ("A workflow", "/console/workflows/profile-sync".to_owned()),
    ];
    let mut rows = Vec::new();
    for (name, path) in pages {
        let mut times = Vec::with_capacity(requests);
        for round in 0..requests + 2 {
            let started = Instant::now();
            let response = http
                .get(format!("{base}{path}"))
                .header("cookie", &cookie)
                .send()
                .await?;
            let status = response.status();
            let body = response.text().await?;
            let elapsed = started.elapsed().as_secs_f64() * 1000.0;
            anyhow::ensure!(
                status.is_success() || status.as_u16() == 404,
                "{path}: {status}: {body}"
            );
            if round >= 2 {
                times.push(elapsed);
            }
        }
        times.sort_by(f64::total_cmp);
        let at =
            |q: f64| times[((times.len() as f64 * q).ceil() as usize).clamp(1, times.len()) - 1];
        let row = (
            name.to_owned(),
            at(0.5),
            at(0.99),
            *times.last().unwrap_or(&0.0),
        );
        println!(
            "{}: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
            row.0, row.1, row.2, row.3
        );
        rows.push(row);
    }
    Ok(rows)
}

fn report(args: &ConsoleArgs, fill_seconds: f64, rows: &[(String, f64, f64, f64)]) -> String {
    let mut out = String::from("## Console pages with a million events and actions\n\n");
    out.push_str(&format!(
        "`cargo build --release -p junction -p junction-bench && target/release/junction-bench console --write BENCHMARKS.md`\n\n\
         A SQLite store with {} events from {} users, one action and one run per event, each action done with an attempt (one user in a hundred ends with a dead letter), filled through the store's API in {fill_seconds:.0} s; the real `junction serve` on it; each page requested {} times over HTTP with a signed-in session, after two warm-ups (the time includes the HTTP round trip on loopback).\n\n",
        args.events, args.users, args.requests
    ));
    out.push_str("| page | p50 | p99 | max |\n|---|---:|---:|---:|\n");
    for (name, p50, p99, max) in rows {
        out.push_str(&format!(
            "| {name} | {p50:.1} ms | {p99:.1} ms | {max:.1} ms |\n"
        ));
    }
    out
}
