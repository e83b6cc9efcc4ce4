//! Junction on PostgreSQL, one node against three (issue 12):
//!
//! - **Ingest**: batches of 100 (time-ordered ids, then uuid4-like random ids) from 16
//!   connections, closed loop, to one `junction serve` and then to three sharing one database
//!   (connections spread round-robin), with PostgreSQL's `synchronous_commit` on (its default):
//!   an acknowledged batch is on disk.
//! - **Planning**: a burst of events for many users, with three templates, planned by one node
//!   and then by three (each planning its share of the partitions): events per second from the
//!   first send until no partition trails the log.
//! - **Delivery at the rate limit**: a backlog of contact updates delivered by three nodes to
//!   the Intercom emulator with a small limit per 10-second window: how much of each full
//!   window the nodes used together, and how many requests Intercom refused.
//!
//! ```text
//! cargo build --release -p junction -p junction-bench
//! target/release/junction-bench cluster --postgres postgres://postgres@127.0.0.1:5432/postgres --write BENCHMARKS.md
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

#[derive(clap::Args)]
pub struct ClusterArgs {
    /// The junction binary to measure.
    #[arg(long, default_value = "target/release/junction")]
    junction: PathBuf,
    /// A PostgreSQL server's admin URL; each run gets a database of its own there.
    #[arg(long, env = "JUNCTION_TEST_POSTGRES")]
    postgres: String,
    /// Measured seconds per ingest run (after a one-second warm-up).
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Concurrent connections sending batches.
    #[arg(long, default_value_t = 16)]
    connections: usize,
    /// The emulator's limit per 10-second window in the delivery run.
    #[arg(long, default_value_t = 300)]
    rate_limit: u32,
    /// Users with one pending contact update each in the delivery run.
    #[arg(long, default_value_t = 1_500)]
    users: usize,
    /// Replace the cluster section of this Markdown file with the results.
    #[arg(long)]
    write: Option<PathBuf>,
}

const WRITE_KEY: &str = "bench-write-key";
const BATCH: usize = 100;

/// Server processes stopped (SIGTERM, then waited for) when dropped.
struct Nodes(Vec<Child>);

impl Drop for Nodes {
    fn drop(&mut self) {
        for child in &mut self.0 {
            // SAFETY: kill(2) with a pid this process spawned; no memory is touched.
            unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
        }
        for child in &mut self.0 {
            let _ = child.wait();
        }
    }
}

struct IngestRow {
    nodes: usize,
    random_ids: bool,
    events_per_second: f64,
    errors: u64,
}

struct PlanningRow {
    nodes: usize,
    events: usize,
    seconds: f64,
}

struct DeliveryRow {
    calls: usize,
    refused: usize,
    full_windows: usize,
    used_share: f64,
    seconds: f64,
}

pub async fn cluster(args: ClusterArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.junction.exists(),
        "{} not found: build it first with `cargo build --release -p junction`",
        args.junction.display()
    );
    let mut ingest = Vec::new();
    for random_ids in [false, true] {
        for nodes in [1, 3] {
            let row = ingest_run(&args, nodes, random_ids).await?;
            println!(
                "ingest, {nodes} node(s), {} ids: {:.0} events/s ({} errors)",
                if random_ids { "random" } else { "time-ordered" },
                row.events_per_second,
                row.errors
            );
            ingest.push(row);
        }
    }
    let mut planning = Vec::new();
    for nodes in [1, 3] {
        let row = planning_run(&args, nodes).await?;
        println!(
            "planning, {nodes} node(s): {} events in {:.1} s ({:.0} events/s)",
            row.events,
            row.seconds,
            row.events as f64 / row.seconds
        );
        planning.push(row);
    }
    let delivery = delivery_run(&args).await?;
    println!(
        "delivery, 3 nodes: {} calls, {} answered 429, {:.3} of each full window used",
        delivery.calls, delivery.refused, delivery.used_share
    );
    let report = report(&args, &ingest, &planning, &delivery);
    print!("{report}");
    if let Some(path) = &args.write {
        crate::replace_marked(path, "cluster", &report)?;
    }
    Ok(())
}

/// Starts `count` nodes on `store` with `extra` configuration; returns them and their ports.
async fn start_nodes(
    junction: &Path,
    dir: &Path,
    store: &str,
    extra: &str,
    count: usize,
) -> anyhow::Result<(Nodes, Vec<u16>)> {
    let http = reqwest::Client::new();
    let mut children = Nodes(Vec::new());
    let mut ports = Vec::new();
    for n in 0..count {
        let port = crate::free_port()?;
        let config = dir.join(format!("node-{n}.yaml"));
        std::fs::write(
            &config,
            format!(
                "store: {store}\nsegment:\n  write_keys: [{WRITE_KEY}]\ncluster:\n  node: bench-{n}\n  lease: 5s\n{extra}"
            ),
        )?;
        let child = crate::spawn_serve(junction, &config, port)?;
        children.0.push(child);
        ports.push(port);
    }
    for &port in &ports {
        let ready = format!("http://127.0.0.1:{port}/readyz");
        crate::wait_until_up(&http, &ready, Duration::from_secs(60)).await?;
    }
    Ok((children, ports))
}

async fn ingest_run(
    args: &ClusterArgs,
    count: usize,
    random_ids: bool,
) -> anyhow::Result<IngestRow> {
    let dir = tempfile::tempdir()?;
    let store =
        junction_store::postgres::create_scratch_database(&args.postgres, "junction_bench").await?;
    // Nothing to plan: this measures ingest alone.
    let (_nodes, ports) =
        start_nodes(&args.junction, dir.path(), &store, "workflows: []\n", count).await?;
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(256)
        .tcp_nodelay(true)
        .build()?;
    let events = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let measuring = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let next_id = Arc::new(AtomicU64::new(0));
    let run = chrono::Utc::now().timestamp_micros();
    let senders: Vec<_> = (0..args.connections)
        .map(|c| {
            let url = format!("http://127.0.0.1:{}/v1/batch", ports[c % ports.len()]);
            let (client, events, errors, measuring, stop, next_id) = (
                client.clone(),
                Arc::clone(&events),
                Arc::clone(&errors),
                Arc::clone(&measuring),
                Arc::clone(&stop),
                Arc::clone(&next_id),
            );
            tokio::spawn(async move {
                let mut random = 0x9e37_79b9_7f4a_7c15u64 ^ (c as u64 + 1);
                while !stop.load(Ordering::Relaxed) {
                    let batch: Vec<serde_json::Value> = (0..BATCH)
                        .map(|_| {
                            let n = next_id.fetch_add(1, Ordering::Relaxed);
                            let id = if random_ids {
                                random ^= random << 13;
                                random ^= random >> 7;
                                random ^= random << 17;
                                format!("{random:016x}-{n:x}")
                            } else {
                                format!("{run}-{n:012}")
                            };
                            serde_json::json!({"type": "track", "userId": format!("user-{}", n % 10_000), "event": "Bench", "messageId": id, "properties": {"n": n}})
                        })
                        .collect();
                    let ok = client
                        .post(&url)
                        .basic_auth(WRITE_KEY, Some(""))
                        .json(&serde_json::json!({ "batch": batch }))
                        .send()
                        .await
                        .is_ok_and(|r| r.status().is_success());
                    if measuring.load(Ordering::Relaxed) {
                        if ok {
                            events.fetch_add(BATCH as u64, Ordering::Relaxed);
                        } else {
                            errors.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(1)).await;
    measuring.store(true, Ordering::Relaxed);
    let started = Instant::now();
    tokio::time::sleep(Duration::from_secs(args.seconds)).await;
    measuring.store(false, Ordering::Relaxed);
    let elapsed = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    for sender in senders {
        let _ = sender.await;
    }
    Ok(IngestRow {
        nodes: count,
        random_ids,
        events_per_second: events.load(Ordering::Relaxed) as f64 / elapsed.as_secs_f64(),
        errors: errors.load(Ordering::Relaxed),
    })
}

/// Events planned by the planning run: 40 per user, identifies and tracks interleaved.
const PLANNING_USERS: usize = 1_000;
const PLANNING_EVENTS_PER_USER: usize = 40;

async fn planning_run(args: &ClusterArgs, count: usize) -> anyhow::Result<PlanningRow> {
    let dir = tempfile::tempdir()?;
    let store =
        junction_store::postgres::create_scratch_database(&args.postgres, "junction_bench").await?;
    // No Intercom: actions are planned and kept, so this measures planning alone.
    let extra = "workflows:\n  - template: profile-sync\n  - template: track-events\n  - template: churn-risk\n";
    let (_nodes, ports) = start_nodes(&args.junction, dir.path(), &store, extra, count).await?;
    let http = reqwest::Client::new();
    // Wait until the partitions are shared out, so the run measures planning, not handover.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let cluster = cluster_view(&http, ports[0]).await?;
        let planners: std::collections::HashSet<&str> = cluster["partitions"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|p| p["node"].as_str())
            .collect();
        let all_held = cluster["partitions"]
            .as_array()
            .is_some_and(|p| p.iter().all(|p| p["node"].is_string()));
        if all_held && planners.len() == count {
            break;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "partitions not shared out: {cluster}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let messages: Vec<serde_json::Value> = (0..PLANNING_EVENTS_PER_USER)
        .flat_map(|i| {
            (0..PLANNING_USERS).map(move |u| {
                let user = format!("user-{u}");
                if i % 2 == 0 {
                    serde_json::json!({"type": "identify", "userId": user, "traits": {"email": format!("{user}@example.com"), "n": i}})
                } else {
                    serde_json::json!({"type": "track", "userId": user, "event": "Logged In", "properties": {"n": i}})
                }
            })
        })
        .collect();
    let started = Instant::now();
    // Eight requests at a time, as an SDK's flush queue would.
    let mut sending = tokio::task::JoinSet::new();
    for (n, batch) in messages.chunks(BATCH).enumerate() {
        if sending.len() == 8 {
            sending.join_next().await.expect("a send in flight")??;
        }
        let request = http
            .post(format!(
                "http://127.0.0.1:{}/v1/batch",
                ports[n % ports.len()]
            ))
            .basic_auth(WRITE_KEY, Some(""))
            .json(&serde_json::json!({ "batch": batch }));
        sending.spawn(async move { request.send().await?.error_for_status().map(drop) });
    }
    while let Some(sent) = sending.join_next().await {
        sent??;
    }
    let deadline = Instant::now() + Duration::from_secs(1_800);
    loop {
        let cluster = cluster_view(&http, ports[0]).await?;
        if cluster["lagEvents"] == 0 {
            break;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "planning did not catch up: {cluster}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(PlanningRow {
        nodes: count,
        events: messages.len(),
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// A node's `/api/cluster`.
async fn cluster_view(http: &reqwest::Client, port: u16) -> anyhow::Result<serde_json::Value> {
    Ok(http
        .get(format!("http://127.0.0.1:{port}/api/cluster"))
        .send()
        .await?
        .json()
        .await?)
}

async fn delivery_run(args: &ClusterArgs) -> anyhow::Result<DeliveryRow> {
    let dir = tempfile::tempdir()?;
    let store =
        junction_store::postgres::create_scratch_database(&args.postgres, "junction_bench").await?;
    let emulator_port = crate::free_port()?;
    let _emulator = Nodes(vec![
        Command::new(&args.junction)
            .args(["emulate", "intercom", "--listen"])
            .arg(format!("127.0.0.1:{emulator_port}"))
            .args(["--token", "bench-token", "--search-lag-ms", "0"])
            .args(["--rate-limit", &args.rate_limit.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?,
    ]);
    let emulator = format!("http://127.0.0.1:{emulator_port}");
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while http
        .get(format!("{emulator}/_emulator/requests"))
        .send()
        .await
        .is_err()
    {
        anyhow::ensure!(Instant::now() < deadline, "the emulator did not start");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let extra = format!(
        "intercom:\n  base_url: {emulator}\n  token: bench-token\nworkflows:\n  - template: profile-sync\n"
    );
    let (_nodes, ports) = start_nodes(&args.junction, dir.path(), &store, &extra, 3).await?;
    let started = Instant::now();
    let messages: Vec<serde_json::Value> = (0..args.users)
        .map(|u| serde_json::json!({"type": "identify", "userId": format!("user-{u}"), "traits": {"plan": "pro", "seats": u}}))
        .collect();
    for (n, batch) in messages.chunks(BATCH).enumerate() {
        http.post(format!(
            "http://127.0.0.1:{}/v1/batch",
            ports[n % ports.len()]
        ))
        .basic_auth(WRITE_KEY, Some(""))
        .json(&serde_json::json!({ "batch": batch }))
        .send()
        .await?
        .error_for_status()?;
    }
    // Done when every user's contact exists and nothing is pending.
    let deadline = Instant::now() + Duration::from_secs(1_800);
    loop {
        let status: serde_json::Value = http
            .get(format!("http://127.0.0.1:{}/api/delivery", ports[0]))
            .send()
            .await?
            .json()
            .await?;
        if status["actions"]["pending"] == 0
            && status["actions"]["done"].as_u64() >= Some(args.users as u64)
        {
            break;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "delivery did not drain: {status}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let seconds = started.elapsed().as_secs_f64();
    let journal: serde_json::Value = http
        .get(format!("{emulator}/_emulator/requests"))
        .send()
        .await?
        .json()
        .await?;
    let entries = journal
        .as_array()
        .or_else(|| journal["requests"].as_array())
        .cloned()
        .unwrap_or_default();
    let mut per_window: BTreeMap<u64, usize> = BTreeMap::new();
    let mut refused = 0;
    for entry in &entries {
        if entry["status"] == 429 {
            refused += 1;
            continue;
        }
        let received = entry["received_ms"].as_u64().unwrap_or(0);
        *per_window.entry(received / 10_000).or_default() += 1;
    }
    let (full_windows, used_share) = crate::full_window_share(&per_window, args.rate_limit);
    Ok(DeliveryRow {
        calls: entries.len(),
        refused,
        full_windows,
        used_share,
        seconds,
    })
}

fn report(
    args: &ClusterArgs,
    ingest: &[IngestRow],
    planning: &[PlanningRow],
    delivery: &DeliveryRow,
) -> String {
    let mut text = String::from(
        "## Several nodes on PostgreSQL\n\n\
         `cargo build --release -p junction -p junction-bench && target/release/junction-bench cluster --postgres postgres://postgres@127.0.0.1:5432/postgres --write BENCHMARKS.md`\n\n",
    );
    text.push_str(&format!(
        "Ingest: batches of {BATCH} from {} connections (closed loop, spread round-robin over the nodes), {} s per run after a 1 s warm-up, each run on a fresh database of the local PostgreSQL 15 with `synchronous_commit` on (an acknowledged batch is on disk). No workflows, so no actions; the planner still follows the log beside ingest (it keeps each user's profile). Every node, the client and PostgreSQL share this machine's 2 cores, so three nodes measure what coordination costs, not what three machines would add.\n\n\
         | nodes | messageIds | events/s | errors |\n|---:|---|---:|---:|\n",
        args.connections, args.seconds
    ));
    for row in ingest {
        text.push_str(&format!(
            "| {} | {} | {:.0} | {} |\n",
            row.nodes,
            if row.random_ids {
                "random (uuid4-like)"
            } else {
                "time-ordered"
            },
            row.events_per_second,
            row.errors
        ));
    }
    text.push_str(&format!(
        "\nPlanning: {PLANNING_USERS} users × {PLANNING_EVENTS_PER_USER} events (identifies and tracks interleaved, batches of {BATCH}, 8 requests in flight, spread over the nodes) with profile-sync, track-events and churn-risk, no Intercom (actions are planned and kept); from the first send until no partition trails the log. {} planning partitions, shared out among the nodes.\n\n\
         | nodes | events | seconds | events/s |\n|---:|---:|---:|---:|\n",
        junction_store::DEFAULT_PARTITIONS
    ));
    for row in planning {
        text.push_str(&format!(
            "| {} | {} | {:.1} | {:.0} |\n",
            row.nodes,
            row.events,
            row.seconds,
            row.events as f64 / row.seconds
        ));
    }
    text.push_str(&format!(
        "\nDelivery at the rate limit: {} users with one contact update each, sent to three nodes, delivered to the emulator allowing {} requests per 10-second window, all nodes spending one shared budget. {} Intercom requests in {:.0} s; {} answered 429; over the {} full windows the nodes together used {:.1} % of the limit.\n",
        args.users,
        args.rate_limit,
        delivery.calls,
        delivery.seconds,
        delivery.refused,
        delivery.full_windows,
        delivery.used_share * 100.0
    ));
    text
}
