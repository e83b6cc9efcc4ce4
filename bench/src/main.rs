//! Junction's load harness. In one run it measures durable ingest through a real
//! `junction serve` (release build, SQLite with `synchronous=FULL`) and the same client against
//! a do-nothing axum server (the ceiling: what this machine's HTTP stack and this client can do
//! at all), then writes the figures and their ratio into BENCHMARKS.md.
//!
//! Both servers run as separate processes on loopback, so they compete with the client for
//! the same cores in the same way; the ratio is what carries over to other machines.
//!
//! ```text
//! cargo build --release -p junction -p junction-bench
//! target/release/junction-bench ingest --write BENCHMARKS.md
//! ```

use anyhow::{Context, bail};
mod backfill;
mod backlog;
mod cluster;
mod console;
mod e2e;

use clap::{Parser, Subcommand};
use hdrhistogram::Histogram;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

const WRITE_KEY: &str = "bench-write-key";

#[derive(Parser)]
#[command(about = "Junction load harness")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Measure ingest against Junction and the ceiling, and report.
    Ingest(IngestArgs),
    /// Measure what a large delivery backlog costs (wake-ups, memory), and report.
    Backlog(backlog::BacklogArgs),
    /// Measure Junction on PostgreSQL, one node against three: ingest, planning, and delivery
    /// at the rate limit.
    Cluster(cluster::ClusterArgs),
    /// Measure the whole path, Segment events in and Intercom requests out: requests per
    /// event by route, events/s, and the time from acknowledgement to the first Intercom call.
    E2e(e2e::E2eArgs),
    /// Time the console's pages on a store with a million events and a million actions.
    Console(console::ConsoleArgs),
    /// Load a Segment archive with `junction backfill`, interrupted halfway and started again,
    /// beside a live stream: each effect once, and live latency against an idle run.
    Backfill(backfill::BackfillArgs),
    /// Serve the do-nothing ceiling endpoints (started by `ingest`).
    Ceiling {
        #[arg(long)]
        listen: SocketAddr,
    },
}

#[derive(clap::Args)]
struct IngestArgs {
    /// The junction binary to measure.
    #[arg(long, default_value = "target/release/junction")]
    junction: PathBuf,
    /// Measured seconds per scenario and target (after a one-second warm-up).
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Concurrent connections for the batch scenario.
    #[arg(long, default_value_t = 16)]
    batch_connections: usize,
    /// Messages per batch request.
    #[arg(long, default_value_t = 100)]
    batch_size: usize,
    /// Concurrent connections for the single-event webhook scenario.
    #[arg(long, default_value_t = 64)]
    single_connections: usize,
    /// Offered loads for the fixed-rate latency runs of the batch scenario, in requests/s.
    #[arg(long, value_delimiter = ',', default_value = "100,250")]
    batch_rates: Vec<u64>,
    /// Offered loads for the fixed-rate latency runs of the single-event scenario, in
    /// requests/s (1,000/s is the most Segment recommends sending from one workspace).
    #[arg(long, value_delimiter = ',', default_value = "1000,5000")]
    single_rates: Vec<u64>,
    /// Random messageIds (as analytics-python's uuid4 ids) instead of time-ordered ones (as
    /// analytics-node's): every de-duplication record then lands on a random page.
    #[arg(long)]
    random_ids: bool,
    /// Measure ingest alone: Junction runs no workflows (by default it runs its default
    /// workflows, so planning shares the store's writer with ingest).
    #[arg(long)]
    no_workflows: bool,
    /// Run only this scenario (batch or single); both by default.
    #[arg(long)]
    only: Option<String>,
    /// Replace the ingest section of this Markdown file with the results.
    #[arg(long)]
    write: Option<PathBuf>,
}

fn main() -> anyhow::Result<()> {
    junction_intercom::install_tls_provider();
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    match cli.command {
        Cmd::Ceiling { listen } => runtime.block_on(ceiling(listen)),
        Cmd::Ingest(args) => runtime.block_on(ingest(args)),
        Cmd::Backlog(args) => runtime.block_on(backlog::backlog(args)),
        Cmd::Cluster(args) => runtime.block_on(cluster::cluster(args)),
        Cmd::E2e(args) => runtime.block_on(e2e::e2e(args)),
        Cmd::Console(args) => runtime.block_on(console::console(args)),
        Cmd::Backfill(args) => runtime.block_on(backfill::backfill(args)),
    }
}

/// Reads each body whole and answers as Junction does, without parsing or storing anything.
async fn ceiling(listen: SocketAddr) -> anyhow::Result<()> {
    use axum::routing::post;
    async fn accept(body: axum::body::Bytes) -> axum::Json<serde_json::Value> {
        std::hint::black_box(&body);
        axum::Json(serde_json::json!({ "success": true }))
    }
    let app = axum::Router::new()
        .route("/v1/batch", post(accept))
        .route("/hooks/segment", post(accept))
        .route("/healthz", axum::routing::get(|| async { "ok" }))
        .layer(axum::extract::DefaultBodyLimit::max(1024 * 1024));
    let listener = tokio::net::TcpListener::bind(listen).await?;
    axum::serve(listener, app).await?;
    Ok(())
}

/// A server process that is stopped when dropped.
struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Load {
    /// This many connections, each sending its next request when the previous one is answered.
    Closed(usize),
    /// Requests started at this fixed rate per second whatever the answers; latency counts from
    /// the moment each request was due, so a stalled server cannot hide its queue.
    Rate(u64),
}

struct Row {
    scenario: Scenario,
    connections: usize,
    size: usize,
    rates: Vec<u64>,
    /// Ceiling, then Junction.
    saturated: Vec<Measurement>,
    /// Ceiling, then Junction; one measurement per rate.
    fixed_rate: Vec<Vec<Measurement>>,
}

#[derive(Clone, Copy, PartialEq)]
enum Scenario {
    /// `POST /v1/batch`, N messages per request.
    Batch,
    /// `POST /hooks/segment`, one event per request.
    Single,
}

impl Scenario {
    fn name(self) -> &'static str {
        match self {
            Scenario::Batch => "batch",
            Scenario::Single => "single",
        }
    }
}

struct Measurement {
    requests: u64,
    events: u64,
    errors: u64,
    elapsed: Duration,
    latency_us: Histogram<u64>,
}

impl Measurement {
    fn events_per_second(&self) -> f64 {
        self.events as f64 / self.elapsed.as_secs_f64()
    }
    fn requests_per_second(&self) -> f64 {
        self.requests as f64 / self.elapsed.as_secs_f64()
    }
    fn ms(&self, quantile: f64) -> f64 {
        self.latency_us.value_at_quantile(quantile) as f64 / 1000.0
    }
}

async fn ingest(args: IngestArgs) -> anyhow::Result<()> {
    if !args.junction.exists() {
        bail!(
            "{} not found: build it first with `cargo build --release -p junction`",
            args.junction.display()
        );
    }
    let data = tempfile::tempdir()?;
    let ceiling_port = free_port()?;
    let junction_port = free_port()?;
    let _ceiling = Process(
        Command::new(std::env::current_exe()?)
            .args(["ceiling", "--listen", &format!("127.0.0.1:{ceiling_port}")])
            .stdout(Stdio::null())
            .spawn()
            .context("starting the ceiling server")?,
    );
    let config = data.path().join("junction.yaml");
    std::fs::write(
        &config,
        format!(
            "store: sqlite://{}\nsegment:\n  write_keys: [{WRITE_KEY}]\n{}",
            data.path().join("bench.db").display(),
            if args.no_workflows {
                "workflows: []\n"
            } else {
                ""
            }
        ),
    )?;
    let _junction = Process(
        Command::new(&args.junction)
            .args(["serve", "--config"])
            .arg(&config)
            .args(["--listen", &format!("127.0.0.1:{junction_port}")])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()
            .context("starting junction")?,
    );
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(256)
        .tcp_nodelay(true)
        .build()?;
    for port in [ceiling_port, junction_port] {
        wait_ready(&client, port).await?;
    }

    let scenarios = [
        (
            Scenario::Batch,
            args.batch_connections,
            args.batch_size,
            &args.batch_rates,
        ),
        (
            Scenario::Single,
            args.single_connections,
            1,
            &args.single_rates,
        ),
    ];
    let mut rows = Vec::new();
    let mut index_note = None;
    for (scenario, connections, size, rates) in scenarios {
        if args
            .only
            .as_deref()
            .is_some_and(|only| only != scenario.name())
        {
            continue;
        }
        let mut row = Row {
            scenario,
            connections,
            size,
            rates: rates.clone(),
            saturated: Vec::new(),
            fixed_rate: Vec::new(),
        };
        let ids = if args.random_ids {
            Ids::Random
        } else {
            Ids::Ordered
        };
        for (target, port) in [("ceiling", ceiling_port), ("junction", junction_port)] {
            let saturated = run(
                &client,
                port,
                scenario,
                Load::Closed(connections),
                size,
                ids,
                args.seconds,
            )
            .await;
            report(target, scenario, "saturated", &saturated);
            if scenario == Scenario::Batch && target == "junction" {
                index_note = Some(index_catch_up(&client, port).await?);
            }
            let mut errors = saturated.errors;
            let mut fixed_rate = Vec::new();
            for &rate in rates {
                let fixed = run(
                    &client,
                    port,
                    scenario,
                    Load::Rate(rate),
                    size,
                    ids,
                    args.seconds,
                )
                .await;
                report(target, scenario, &format!("{rate} req/s"), &fixed);
                errors += fixed.errors;
                fixed_rate.push(fixed);
            }
            if target == "junction" && errors > 0 {
                bail!("junction refused {errors} requests during the run");
            }
            row.saturated.push(saturated);
            row.fixed_rate.push(fixed_rate);
        }
        rows.push(row);
    }
    let stored = count_stored(&data.path().join("bench.db"))?;
    let markdown = render(&args, &rows, stored, index_note.as_deref());
    println!("\n{markdown}");
    if let Some(path) = &args.write {
        write_section(path, &markdown)?;
        println!("wrote {}", path.display());
    }
    Ok(())
}

async fn run(
    client: &reqwest::Client,
    port: u16,
    scenario: Scenario,
    load: Load,
    size: usize,
    ids: Ids,
    seconds: u64,
) -> Measurement {
    let url = match scenario {
        Scenario::Batch => format!("http://127.0.0.1:{port}/v1/batch"),
        Scenario::Single => format!("http://127.0.0.1:{port}/hooks/segment"),
    };
    let sender = Sender {
        client: client.clone(),
        url,
        scenario,
        size,
        id_style: ids,
        ids: Arc::new(AtomicU64::new(0)),
        run_id: format!("{port}-{}", chrono::Utc::now().timestamp_micros()),
        measuring: Arc::new(AtomicBool::new(false)),
    };
    let stop = Arc::new(AtomicBool::new(false));
    let workers: Vec<tokio::task::JoinHandle<Tally>> = match load {
        Load::Closed(connections) => (0..connections)
            .map(|_| {
                let (sender, stop) = (sender.clone(), stop.clone());
                tokio::spawn(async move {
                    let mut tally = Tally::new();
                    while !stop.load(Ordering::Relaxed) {
                        sender.send(Instant::now(), &mut tally).await;
                    }
                    tally
                })
            })
            .collect(),
        Load::Rate(rate) => {
            let (sender, stop) = (sender.clone(), stop.clone());
            vec![tokio::spawn(async move {
                let mut ticks = tokio::time::interval(Duration::from_secs_f64(1.0 / rate as f64));
                ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
                let mut in_flight = tokio::task::JoinSet::new();
                let mut total = Tally::new();
                while !stop.load(Ordering::Relaxed) {
                    let due = ticks.tick().await.into_std();
                    let sender = sender.clone();
                    in_flight.spawn(async move {
                        let mut tally = Tally::new();
                        sender.send(due, &mut tally).await;
                        tally
                    });
                    while let Some(Ok(done)) = in_flight.try_join_next() {
                        total.merge(done);
                    }
                }
                while let Some(Ok(done)) = in_flight.join_next().await {
                    total.merge(done);
                }
                total
            })]
        }
    };
    tokio::time::sleep(Duration::from_secs(1)).await; // warm-up: connections, caches
    sender.measuring.store(true, Ordering::Relaxed);
    let started = Instant::now();
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    sender.measuring.store(false, Ordering::Relaxed);
    let elapsed = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    let mut total = Tally::new();
    for worker in workers {
        total.merge(worker.await.expect("worker"));
    }
    Measurement {
        requests: total.requests,
        events: (total.requests - total.errors) * size as u64,
        errors: total.errors,
        elapsed,
        latency_us: total.latency_us,
    }
}

#[derive(Clone)]
struct Sender {
    client: reqwest::Client,
    url: String,
    scenario: Scenario,
    size: usize,
    id_style: Ids,
    ids: Arc<AtomicU64>,
    run_id: String,
    measuring: Arc<AtomicBool>,
}

impl Sender {
    /// Sends one request; counts it when it started inside the measured window.
    async fn send(&self, due: Instant, tally: &mut Tally) {
        let first = self.ids.fetch_add(self.size as u64, Ordering::Relaxed);
        let body = request_body(self.scenario, self.id_style, &self.run_id, first, self.size);
        let counted = self.measuring.load(Ordering::Relaxed);
        let sent = self
            .client
            .post(&self.url)
            .basic_auth(WRITE_KEY, Some(""))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await;
        let ok = match sent {
            Ok(response) => {
                let ok = response.status().is_success();
                let _ = response.bytes().await;
                ok
            }
            Err(_) => false,
        };
        if counted {
            tally
                .latency_us
                .saturating_record(due.elapsed().as_micros() as u64);
            tally.requests += 1;
            tally.errors += u64::from(!ok);
        }
    }
}

struct Tally {
    requests: u64,
    errors: u64,
    latency_us: Histogram<u64>,
}

impl Tally {
    fn new() -> Self {
        Tally {
            requests: 0,
            errors: 0,
            latency_us: Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid bounds"),
        }
    }

    fn merge(&mut self, other: Tally) {
        self.requests += other.requests;
        self.errors += other.errors;
        self.latency_us.add(other.latency_us).expect("same bounds");
    }
}

/// Reads how far the identity index trails after the saturated batch run, and how long it
/// takes to catch up once the load stops.
async fn index_catch_up(client: &reqwest::Client, port: u16) -> anyhow::Result<String> {
    let lag = || async {
        let text = client
            .get(format!("http://127.0.0.1:{port}/metrics"))
            .send()
            .await?
            .text()
            .await?;
        Ok::<f64, anyhow::Error>(
            text.lines()
                .find_map(|l| l.strip_prefix("junction_store_index_lag_events "))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0.0),
        )
    };
    let started = Instant::now();
    let behind = lag().await?;
    while lag().await? > 0.0 {
        if started.elapsed() > Duration::from_secs(300) {
            bail!("the identity index did not catch up within 5 minutes");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let took = started.elapsed().as_secs_f64();
    eprintln!(
        "identity index: {behind:.0} events behind after the saturated batch run, caught up in {took:.1} s"
    );
    Ok(format!(
        "After the saturated batch run the identity index trailed the log by {behind:.0} events and caught up {took:.1} s after the load stopped ({:.0} events/s of indexing while idle).",
        behind / took.max(0.001)
    ))
}

/// How benchmark messageIds are shaped.
#[derive(Clone, Copy, PartialEq)]
enum Ids {
    /// `bench-<run>-<n>`: increasing, like analytics-node's time-prefixed ids.
    Ordered,
    /// 32 hex digits spread uniformly, like analytics-python's uuid4 ids.
    Random,
}

/// splitmix64: a fixed, well-spread permutation, so random ids stay unique.
fn spread(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// Realistic messages (the shape analytics-node sends), each with a unique messageId so that
/// de-duplication never spares the store any work.
fn request_body(scenario: Scenario, ids: Ids, run_id: &str, first: u64, size: usize) -> String {
    let message = |n: u64| {
        let message_id = match ids {
            Ids::Ordered => format!("bench-{run_id}-{n}"),
            Ids::Random => format!(
                "{:016x}{:016x}",
                spread(n),
                spread(n ^ run_id.len() as u64 ^ 0x5bd1_e995)
            ),
        };
        format!(
            r#"{{"type":"track","userId":"user-{user}","event":"Feature Used","properties":{{"feature":"reports","plan":"pro","seats":{seats},"revenue":9.99}},"context":{{"library":{{"name":"@segment/analytics-node","version":"3.1.0"}},"ip":"203.0.113.7"}},"timestamp":"2026-11-29T06:29:22.324Z","integrations":{{}},"messageId":"{message_id}"}}"#,
            user = n % 5000,
            seats = n % 50,
        )
    };
    match scenario {
        Scenario::Single => message(first),
        Scenario::Batch => {
            let mut body = String::with_capacity(size * 330 + 64);
            body.push_str(r#"{"batch":["#);
            for i in 0..size as u64 {
                if i > 0 {
                    body.push(',');
                }
                body.push_str(&message(first + i));
            }
            body.push_str(r#"],"sentAt":"2026-11-29T06:29:22.329Z"}"#);
            body
        }
    }
}

fn report(target: &str, scenario: Scenario, load: &str, m: &Measurement) {
    eprintln!(
        "{:>6} {target:>8} {load:>12}: {:>9.0} events/s {:>8.0} req/s  p50 {:.2} ms  p99 {:.2} ms  errors {}",
        scenario.name(),
        m.events_per_second(),
        m.requests_per_second(),
        m.ms(0.5),
        m.ms(0.99),
        m.errors
    );
}

/// `junction serve --config CONFIG --listen 127.0.0.1:PORT`, with errors-only logs and no output.
fn spawn_serve(junction: &Path, config: &Path, port: u16) -> anyhow::Result<Child> {
    Command::new(junction)
        .args(["serve", "--config"])
        .arg(config)
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .env("RUST_LOG", "error")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting junction")
}

/// Waits until `url` answers 2xx, for at most `patience`.
async fn wait_until_up(
    http: &reqwest::Client,
    url: &str,
    patience: Duration,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + patience;
    while !http
        .get(url)
        .send()
        .await
        .is_ok_and(|r| r.status().is_success())
    {
        anyhow::ensure!(Instant::now() < deadline, "{url} did not answer");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

async fn wait_ready(client: &reqwest::Client, port: u16) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if let Ok(response) = client
            .get(format!("http://127.0.0.1:{port}/healthz"))
            .send()
            .await
            && response.status().is_success()
        {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bail!("server on port {port} did not become ready")
}

/// Requests per 10-second window (counted by window number) → how many windows were full
/// and the share of `limit` they used on average. The first and last windows are partial
/// (work arriving, work running out), so they are left out.
fn full_window_share(
    per_window: &std::collections::BTreeMap<u64, usize>,
    limit: u32,
) -> (usize, f64) {
    let full: Vec<usize> = per_window
        .values()
        .copied()
        .skip(1)
        .take(per_window.len().saturating_sub(2))
        .collect();
    if full.is_empty() {
        return (0, 0.0);
    }
    let share = full.iter().sum::<usize>() as f64 / (full.len() as f64 * f64::from(limit));
    (full.len(), share)
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// Events in the benchmark's store, read with the sqlite3 command when available: proof that
/// what was acknowledged was stored.
fn count_stored(db: &Path) -> anyhow::Result<Option<u64>> {
    let output = Command::new("sqlite3")
        .arg(db)
        .arg("SELECT count(*) FROM events")
        .output();
    Ok(output
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok()))
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|s| s.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let memory_gib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| m.lines().next().map(str::to_owned))
        .and_then(|l| {
            l.split_whitespace()
                .nth(1)
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0 / 1024.0);
    format!("{cores} cores ({cpu}), {memory_gib:.0} GiB")
}

const BEGIN: &str = "<!-- ingest:begin (written by junction-bench ingest) -->";
const END: &str = "<!-- ingest:end -->";

fn render(
    args: &IngestArgs,
    rows: &[Row],
    stored: Option<u64>,
    index_note: Option<&str>,
) -> String {
    let mut out = String::new();
    out.push_str(&format!("{BEGIN}\n"));
    out.push_str(&format!(
        "Measured {} on {}; {} s per run after a 1 s warm-up; the client, the ceiling and Junction share the machine.\n\n",
        chrono::Utc::now().format("%Y-%m-%d %H:%M UTC"),
        machine(),
        args.seconds
    ));
    out.push_str("**Throughput at saturation** (closed loop: each connection sends its next request when the last is answered)\n\n");
    out.push_str(
        "| scenario | target | events/s | requests/s | p50 | p99 | Junction / ceiling |\n",
    );
    out.push_str("|---|---|---:|---:|---:|---:|---:|\n");
    for row in rows {
        let name = match row.scenario {
            Scenario::Batch => format!(
                "`POST /v1/batch`, {} messages/request, {} connections",
                row.size, row.connections
            ),
            Scenario::Single => format!(
                "`POST /hooks/segment`, 1 event/request, {} connections",
                row.connections
            ),
        };
        let (ceiling, junction) = (&row.saturated[0], &row.saturated[1]);
        for (target, m, ratio) in [
            ("do-nothing axum (ceiling)", ceiling, String::new()),
            (
                "junction (durable)",
                junction,
                format!(
                    "{:.2}",
                    junction.events_per_second() / ceiling.events_per_second()
                ),
            ),
        ] {
            out.push_str(&format!(
                "| {name} | {target} | {:.0} | {:.0} | {:.2} ms | {:.2} ms | {ratio} |\n",
                m.events_per_second(),
                m.requests_per_second(),
                m.ms(0.5),
                m.ms(0.99),
            ));
        }
    }
    out.push_str("\n**Latency at a fixed offered load** (open loop: requests start on schedule whatever the answers; latency counts from when each was due)\n\n");
    out.push_str(
        "| scenario | offered load | target | achieved requests/s | p50 | p99 | p99.9 |\n",
    );
    out.push_str("|---|---|---|---:|---:|---:|---:|\n");
    for row in rows {
        for (i, rate) in row.rates.iter().enumerate() {
            let (name, offered) = match row.scenario {
                Scenario::Batch => (
                    "`POST /v1/batch`",
                    format!("{rate} req/s = {} events/s", rate * row.size as u64),
                ),
                Scenario::Single => ("`POST /hooks/segment`", format!("{rate} req/s")),
            };
            for (target, m) in [
                ("ceiling", &row.fixed_rate[0][i]),
                ("junction", &row.fixed_rate[1][i]),
            ] {
                out.push_str(&format!(
                    "| {name} | {offered} | {target} | {:.0} | {:.2} ms | {:.2} ms | {:.2} ms |\n",
                    m.requests_per_second(),
                    m.ms(0.5),
                    m.ms(0.99),
                    m.ms(0.999),
                ));
            }
        }
    }
    if let Some(note) = index_note {
        out.push_str(&format!("\n{note}\n"));
    }
    if let Some(stored) = stored {
        out.push_str(&format!(
            "\nEvents in Junction's store after the run (warm-ups included): {stored}.\n"
        ));
    }
    out.push_str(END);
    out.push('\n');
    out
}

/// Replaces the text between `<!-- name:begin -->` and `<!-- name:end -->` in a Markdown file
/// (markers included), or appends it with its markers.
fn replace_marked(path: &Path, name: &str, body: &str) -> anyhow::Result<()> {
    let (begin, end) = (
        format!("<!-- {name}:begin -->"),
        format!("<!-- {name}:end -->"),
    );
    let section = format!("{begin}\n{body}{end}\n");
    let existing = std::fs::read_to_string(path).unwrap_or_default();
    let updated = match (existing.find(&begin), existing.find(&end)) {
        (Some(b), Some(e)) if e > b => format!(
            "{}{section}{}",
            &existing[..b],
            existing[e + end.len()..].trim_start_matches('\n')
        ),
        _ => format!("{}\n\n{section}", existing.trim_end()),
    };
    std::fs::write(path, updated)?;
    Ok(())
}

/// Replaces the ingest section of a Markdown file, or appends it.
fn write_section(path: &Path, section: &str) -> anyhow::Result<()> {
    let existing = std::fs::read_to_string(path).unwrap_or_default();
    let updated = match (existing.find(BEGIN), existing.find(END)) {
        (Some(begin), Some(end)) if end > begin => {
            format!(
                "{}{}{}",
                &existing[..begin],
                section,
                &existing[end + END.len()..].trim_start_matches('\n')
            )
        }
        _ => format!("{existing}\n{section}"),
    };
    std::fs::write(path, updated)?;
    Ok(())
}
