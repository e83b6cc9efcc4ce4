//! `junction-bench backfill`: a Segment archive of `--events` events (Segment's S3 layout,
//! gzipped JSON lines) loaded with `junction backfill` into `junction serve` (SQLite,
//! profile-sync and track-events) delivering to the Intercom emulator at its rate limit,
//! interrupted (SIGKILL) once half the events are stored and started again, while live
//! identifies arrive at a steady pace. It measures:
//!
//! - each effect once: every archived user's contact created once, every archived track sent
//!   once as an Intercom event (the emulator's journal);
//! - the live identifies' latency, from the bench receiving the 200 to the emulator receiving
//!   the contact's `POST /contacts`, during the backfill against the same stream on the idle
//!   server before and after;
//! - the backfill's pace and its share of each window.

use crate::{Process, free_port, spawn_serve, wait_until_up};
use anyhow::Context;
use hdrhistogram::Histogram;
use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

#[derive(clap::Args)]
pub struct BackfillArgs {
    /// The junction binary to measure.
    #[arg(long, default_value = "target/release/junction")]
    junction: PathBuf,
    /// Archived events: one identify per user, the rest tracks.
    #[arg(long, default_value_t = 100_000)]
    events: usize,
    /// Archived users.
    #[arg(long, default_value_t = 2_000)]
    users: usize,
    /// The emulator's limit per 10-second window (Intercom's default: 1,666).
    #[arg(long, default_value_t = 1_666)]
    rate_limit: u32,
    /// Live identifies per second, during the idle run and the backfill.
    #[arg(long, default_value_t = 10)]
    live_per_second: u64,
    /// Length of each idle run (before the backfill and after it), in seconds.
    #[arg(long, default_value_t = 30)]
    idle_seconds: u64,
    /// Events per request of `junction backfill` (absent: its default).
    #[arg(long)]
    batch_events: Option<usize>,
    /// Replace the backfill section of this Markdown file with the results.
    #[arg(long)]
    write: Option<PathBuf>,
}

const WRITE_KEY: &str = "bench-write-key";
const TOKEN: &str = "bench-token";
const UP_PATIENCE: Duration = Duration::from_secs(60);

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Writes the archive: `segment-logs/src_bench/{day}/{part}.gz`, 10,000 events a file, each
/// user's identify before their tracks. Returns the number of tracks.
fn write_archive(root: &Path, events: usize, users: usize) -> anyhow::Result<usize> {
    let per_file = 10_000;
    let mut tracks = 0;
    let mut writer: Option<flate2::write::GzEncoder<std::fs::File>> = None;
    for n in 0..events {
        if n % per_file == 0 {
            if let Some(done) = writer.take() {
                done.finish()?;
            }
            let day = 1_764_806_400_000u64 + (n / (per_file * 3)) as u64 * 86_400_000;
            let folder = root.join(format!("segment-logs/src_bench/{day}"));
            std::fs::create_dir_all(&folder)?;
            let file = std::fs::File::create(folder.join(format!("part-{:05}.gz", n / per_file)))?;
            writer = Some(flate2::write::GzEncoder::new(
                file,
                flate2::Compression::fast(),
            ));
        }
        let line = if n < users.min(events) {
            serde_json::json!({"type": "identify", "userId": format!("old-{n}"),
                "messageId": format!("hist-{n}"), "timestamp": "2025-12-04T10:00:00Z",
                "traits": {"email": format!("old-{n}@example.com"), "plan": "pro"}})
        } else {
            tracks += 1;
            serde_json::json!({"type": "track", "userId": format!("old-{}", n % users),
                "event": "Viewed Page", "messageId": format!("hist-{n}"),
                "timestamp": "2025-12-04T10:00:00Z", "properties": {"n": n}})
        };
        writeln!(writer.as_mut().expect("a file is open"), "{line}")?;
    }
    if let Some(done) = writer.take() {
        done.finish()?;
    }
    Ok(tracks)
}

/// Live identifies sent at a steady pace until `stop` turns true; the time each 200 came back,
/// by the user's id.
async fn live_stream(
    http: reqwest::Client,
    base: String,
    prefix: &'static str,
    per_second: u64,
    stop: tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<HashMap<String, u64>> {
    let acks: Arc<Mutex<HashMap<String, u64>>> = Arc::default();
    let mut sends = tokio::task::JoinSet::new();
    let interval = Duration::from_secs_f64(1.0 / per_second as f64);
    let started = Instant::now();
    let mut n = 0u32;
    while !*stop.borrow() {
        tokio::time::sleep_until((started + interval * n).into()).await;
        let user = format!("{prefix}-{n}");
        n += 1;
        let (http, url, acks) = (http.clone(), format!("{base}/v1/identify"), acks.clone());
        sends.spawn(async move {
            http.post(url)
                .basic_auth(WRITE_KEY, Some(""))
                .json(&serde_json::json!({"userId": user, "traits": {"email": format!("{user}@example.com")}}))
                .send()
                .await?
                .error_for_status()?;
            acks.lock().expect("acks").insert(user, now_ms());
            anyhow::Ok(())
        });
    }
    while let Some(sent) = sends.join_next().await {
        sent??;
    }
    let acks = acks.lock().expect("acks").clone();
    Ok(acks)
}

/// The live stream alone for `--idle-seconds`: when each identify was acknowledged.
async fn idle_run(
    http: &reqwest::Client,
    base: &str,
    prefix: &'static str,
    args: &BackfillArgs,
) -> anyhow::Result<HashMap<String, u64>> {
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let stream = tokio::spawn(live_stream(
        http.clone(),
        base.to_owned(),
        prefix,
        args.live_per_second,
        stopped,
    ));
    tokio::time::sleep(Duration::from_secs(args.idle_seconds)).await;
    stop.send(true)?;
    stream.await?
}

struct Journal {
    entries: Vec<serde_json::Value>,
}

impl Journal {
    async fn fetch(http: &reqwest::Client, emulator: &str) -> anyhow::Result<Journal> {
        let entries = http
            .get(format!("{emulator}/_emulator/requests"))
            .send()
            .await?
            .json()
            .await?;
        Ok(Journal { entries })
    }

    fn calls(&self) -> impl Iterator<Item = &serde_json::Value> {
        self.entries
            .iter()
            .filter(|e| !e["path"].as_str().unwrap_or("").starts_with("/_emulator"))
    }

    /// When each contact was first created, by external_id.
    fn contacts_created(&self) -> HashMap<String, (u64, usize)> {
        let mut created: HashMap<String, (u64, usize)> = HashMap::new();
        for entry in self.calls() {
            if entry["method"] == "POST"
                && entry["path"] == "/contacts"
                && entry["status"].as_u64().is_some_and(|s| s < 300)
                && let Some(id) = entry["body"]["external_id"].as_str()
            {
                let at = entry["received_ms"].as_u64().unwrap_or(0);
                let seen = created.entry(id.to_owned()).or_insert((at, 0));
                seen.1 += 1;
            }
        }
        created
    }
}

fn latency(
    acks: &HashMap<String, u64>,
    created: &HashMap<String, (u64, usize)>,
) -> anyhow::Result<(Histogram<u64>, usize)> {
    let mut histogram = Histogram::<u64>::new(3)?;
    let mut missing = 0;
    for (user, ack) in acks {
        match created.get(user) {
            Some((at, _)) => histogram.record(at.saturating_sub(*ack))?,
            None => missing += 1,
        }
    }
    Ok((histogram, missing))
}

/// Where a live identify's time went, read from the store: acknowledged → planned (the
/// planner's wait and work), planned → first attempt (waiting to be claimed), first attempt →
/// the emulator (rate gate, connection slot, the call).
struct Stages {
    planned: Histogram<u64>,
    claimed: Histogram<u64>,
    called: Histogram<u64>,
}

impl Stages {
    fn read(
        db: &Path,
        acks: &HashMap<String, u64>,
        created: &HashMap<String, (u64, usize)>,
    ) -> anyhow::Result<Stages> {
        let conn =
            rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)?;
        let mut query = conn.prepare(
            "SELECT min(a.created_ms), min(t.at_ms) FROM actions a
             JOIN attempts t ON t.action_id = a.id AND t.number = 1
             WHERE a.identity = ?1",
        )?;
        let mut stages = Stages {
            planned: Histogram::new(3)?,
            claimed: Histogram::new(3)?,
            called: Histogram::new(3)?,
        };
        for (user, ack) in acks {
            let Some((at, _)) = created.get(user) else {
                continue;
            };
            let (planned, attempted): (Option<i64>, Option<i64>) =
                query.query_row([user], |r| Ok((r.get(0)?, r.get(1)?)))?;
            let (Some(planned), Some(attempted)) = (planned, attempted) else {
                continue;
            };
            let (ack, at) = (*ack as i64, *at as i64);
            stages.planned.record((planned - ack).max(0) as u64)?;
            stages.claimed.record((attempted - planned).max(0) as u64)?;
            stages.called.record((at - attempted).max(0) as u64)?;
        }
        Ok(stages)
    }

    fn summary(&self) -> String {
        let q = |h: &Histogram<u64>| {
            format!(
                "p50 {} p99 {} max {}",
                h.value_at_quantile(0.5),
                h.value_at_quantile(0.99),
                h.max()
            )
        };
        format!(
            "to planned {}; planned to first attempt {}; attempt to the emulator {} (ms)",
            q(&self.planned),
            q(&self.claimed),
            q(&self.called)
        )
    }
}

/// The store's write timings from the server's `/metrics` (Prometheus histograms): for each
/// series, how many, and the bucket bounds its median and 99th percentile fall under.
fn store_timings(metrics: &str) -> Vec<String> {
    let mut series: BTreeMap<String, Vec<(f64, f64)>> = BTreeMap::new();
    for line in metrics.lines() {
        let Some(rest) = line.strip_prefix("junction_store_") else {
            continue;
        };
        let Some((name, rest)) = rest.split_once("_seconds_bucket{") else {
            continue;
        };
        let Some((labels, count)) = rest.rsplit_once("} ") else {
            continue;
        };
        let (others, le) = match labels.rsplit_once("le=\"") {
            Some((others, le)) => (others.trim_end_matches(','), le.trim_end_matches('"')),
            None => continue,
        };
        let (Ok(le), Ok(count)) = (le.parse::<f64>(), count.trim().parse::<f64>()) else {
            continue;
        };
        series
            .entry(format!("{name}{{{others}}}"))
            .or_default()
            .push((le, count));
    }
    series
        .into_iter()
        .map(|(name, mut buckets)| {
            buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
            let total = buckets.last().map_or(0.0, |b| b.1);
            let under = |q: f64| {
                buckets
                    .iter()
                    .find(|(_, count)| *count >= q * total)
                    .map_or(f64::INFINITY, |(le, _)| *le * 1000.0)
            };
            format!(
                "{name}: {total} writes, p50 ≤ {} ms, p99 ≤ {} ms",
                under(0.5),
                under(0.99)
            )
        })
        .collect()
}

fn backfilled_stored(db: &Path) -> u64 {
    rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
        .and_then(|conn| {
            conn.query_row(
                "SELECT count(*) FROM events WHERE source = 'backfill'",
                [],
                |r| r.get::<_, i64>(0),
            )
        })
        .map(|n| n.max(0) as u64)
        .unwrap_or(0)
}

fn backfill_command(args: &BackfillArgs, config: &Path, base: &str, archive: &Path) -> Command {
    let mut command = Command::new(&args.junction);
    command
        .args(["backfill", "--url", base, "--config"])
        .arg(config)
        .arg(archive)
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    if let Some(batch) = args.batch_events {
        command.args(["--batch-events", &batch.to_string()]);
    }
    command
}

pub async fn backfill(args: BackfillArgs) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let http = reqwest::Client::builder().tcp_nodelay(true).build()?;
    let archive = dir.path().join("archive");
    let tracks = write_archive(&archive, args.events, args.users)?;
    let archived_users = args.users.min(args.events);

    let emulator_port = free_port()?;
    let _emulator = Process(
        Command::new(&args.junction)
            .args(["emulate", "intercom", "--listen"])
            .arg(format!("127.0.0.1:{emulator_port}"))
            .args([
                "--token",
                TOKEN,
                "--rate-limit",
                &args.rate_limit.to_string(),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting the emulator")?,
    );
    let emulator = format!("http://127.0.0.1:{emulator_port}");
    wait_until_up(&http, &format!("{emulator}/_emulator/config"), UP_PATIENCE).await?;

    let port = free_port()?;
    let config = dir.path().join("junction.yaml");
    let db = dir.path().join("junction.db");
    std::fs::write(
        &config,
        format!(
            "store: sqlite://{}\nsegment:\n  write_keys: [{WRITE_KEY}]\nintercom:\n  base_url: {emulator}\n  token: {TOKEN}\nworkflows:\n  - template: profile-sync\n  - template: track-events\n",
            db.display()
        ),
    )?;
    let _junction = Process(spawn_serve(&args.junction, &config, port)?);
    let base = format!("http://127.0.0.1:{port}");
    wait_until_up(&http, &format!("{base}/readyz"), UP_PATIENCE).await?;

    // Idle: the live stream alone.
    let mut idle_acks = idle_run(&http, &base, "idle", &args).await?;
    println!("idle run: {} live identifies", idle_acks.len());

    // The backfill, interrupted halfway and started again, with the live stream going on.
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let during = tokio::spawn(live_stream(
        http.clone(),
        base.clone(),
        "live",
        args.live_per_second,
        stopped,
    ));
    let started = Instant::now();
    let started_ms = now_ms();
    let mut first = backfill_command(&args, &config, &base, &archive)
        .spawn()
        .context("starting junction backfill")?;
    let half = (args.events / 2) as u64;
    loop {
        let stored = backfilled_stored(&db);
        if stored >= half {
            break;
        }
        anyhow::ensure!(
            first.try_wait()?.is_none(),
            "junction backfill ended before half the events were stored"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    first.kill()?;
    first.wait()?;
    let interrupted_at = backfilled_stored(&db);
    let interrupted_after = started.elapsed();
    println!(
        "interrupted after {:.0} s with {interrupted_at} events stored",
        interrupted_after.as_secs_f64()
    );
    let second = backfill_command(&args, &config, &base, &archive)
        .spawn()
        .context("starting junction backfill again")?;
    let output = tokio::task::spawn_blocking(move || second.wait_with_output()).await??;
    let said = String::from_utf8_lossy(&output.stderr).into_owned();
    anyhow::ensure!(output.status.success(), "junction backfill failed: {said}");
    let seconds = started.elapsed().as_secs_f64();
    stop.send(true)?;
    let during_acks = during.await??;
    crate::e2e::wait_until_delivered(&http, &base).await?;
    let delivered_ms = now_ms();

    // Idle again, on the store as the backfill left it: pooled with the first idle run, a
    // baseline of twice the samples that is not flattered by small tables.
    let after_acks = idle_run(&http, &base, "after", &args).await?;
    crate::e2e::wait_until_delivered(&http, &base).await?;
    println!(
        "idle run after the backfill: {} live identifies",
        after_acks.len()
    );

    let journal = Journal::fetch(&http, &emulator).await?;
    let created = journal.contacts_created();
    let mut sent_events: BTreeMap<u64, usize> = BTreeMap::new();
    let mut per_window: BTreeMap<u64, usize> = BTreeMap::new();
    let mut backfill_per_window: BTreeMap<u64, usize> = BTreeMap::new();
    let mut refused = 0;
    for entry in journal.calls() {
        let received = entry["received_ms"].as_u64().unwrap_or(0);
        if entry["status"] == 429 {
            refused += 1;
            continue;
        }
        if (started_ms..delivered_ms).contains(&received) {
            *per_window.entry(received / 10_000).or_default() += 1;
        }
        let backfilled = entry["path"] == "/events"
            || entry["body"]["external_id"]
                .as_str()
                .is_some_and(|id| id.starts_with("old-"));
        if backfilled {
            *backfill_per_window.entry(received / 10_000).or_default() += 1;
        }
        if entry["method"] == "POST"
            && entry["path"] == "/events"
            && let Some(n) = entry["body"]["metadata"]["n"].as_u64()
        {
            *sent_events.entry(n).or_default() += 1;
        }
    }
    // The slowest live identifies during the backfill, and when they came: to see whether they
    // gather at a window's start, at the interruption, or nowhere in particular.
    let mut slowest: Vec<(u64, u64)> = during_acks
        .iter()
        .filter_map(|(user, ack)| {
            created
                .get(user)
                .map(|(at, _)| (at.saturating_sub(*ack), *ack))
        })
        .collect();
    slowest.sort_unstable_by(|a, b| b.cmp(a));
    for (ms, ack) in slowest.iter().take(12) {
        println!(
            "  slow live identify: {ms} ms, acknowledged {:.1} s into the backfill ({:.1} s into its 10-s window)",
            ack.saturating_sub(started_ms) as f64 / 1000.0,
            (ack % 10_000) as f64 / 1000.0
        );
    }
    let (before, after) = (
        latency(&idle_acks, &created)?.0,
        latency(&after_acks, &created)?.0,
    );
    println!(
        "  idle p50 / p99: {} / {} ms before the backfill, {} / {} ms after",
        before.value_at_quantile(0.5),
        before.value_at_quantile(0.99),
        after.value_at_quantile(0.5),
        after.value_at_quantile(0.99)
    );
    idle_acks.extend(after_acks);
    let idle_stages = Stages::read(&db, &idle_acks, &created)?;
    let during_stages = Stages::read(&db, &during_acks, &created)?;
    println!("  idle stages: {}", idle_stages.summary());
    println!("  stages during the backfill: {}", during_stages.summary());
    let metrics = http
        .get(format!("{base}/metrics"))
        .send()
        .await?
        .text()
        .await?;
    for line in store_timings(&metrics) {
        println!("  store {line}");
    }
    let old_contacts: Vec<usize> = created
        .iter()
        .filter(|(id, _)| id.starts_with("old-"))
        .map(|(_, (_, times))| *times)
        .collect();
    let outcome = Outcome {
        events: args.events,
        tracks,
        users: archived_users,
        interrupted_at,
        interrupted_after: interrupted_after.as_secs_f64(),
        seconds,
        events_sent: sent_events.len(),
        events_sent_twice: sent_events.values().filter(|&&n| n > 1).count(),
        contacts: old_contacts.len(),
        contacts_twice: old_contacts.iter().filter(|&&n| n > 1).count(),
        refused,
        backfill_share: crate::full_window_share(&backfill_per_window, args.rate_limit),
        total_share: crate::full_window_share(&per_window, args.rate_limit),
        idle: latency(&idle_acks, &created)?,
        during: latency(&during_acks, &created)?,
        said: said.lines().last().unwrap_or("").to_owned(),
        stages: (idle_stages, during_stages),
    };
    println!("{}", outcome.summary(&args));
    anyhow::ensure!(
        outcome.events_sent == tracks && outcome.events_sent_twice == 0,
        "archived tracks: {tracks}, sent: {}, twice: {}",
        outcome.events_sent,
        outcome.events_sent_twice
    );
    anyhow::ensure!(
        outcome.contacts == archived_users && outcome.contacts_twice == 0,
        "archived users: {archived_users}, contacts created: {}, twice: {}",
        outcome.contacts,
        outcome.contacts_twice
    );
    if let Some(path) = &args.write {
        crate::replace_marked(path, "backfill", &outcome.report(&args))?;
    }
    Ok(())
}

struct Outcome {
    events: usize,
    tracks: usize,
    users: usize,
    interrupted_at: u64,
    interrupted_after: f64,
    seconds: f64,
    events_sent: usize,
    events_sent_twice: usize,
    contacts: usize,
    contacts_twice: usize,
    refused: usize,
    backfill_share: (usize, f64),
    total_share: (usize, f64),
    idle: (Histogram<u64>, usize),
    during: (Histogram<u64>, usize),
    said: String,
    /// Where the live identifies' time went: idle, during the backfill.
    stages: (Stages, Stages),
}

impl Outcome {
    fn ratio(&self, quantile: f64) -> f64 {
        self.during.0.value_at_quantile(quantile).max(1) as f64
            / self.idle.0.value_at_quantile(quantile).max(1) as f64
    }

    fn summary(&self, args: &BackfillArgs) -> String {
        format!(
            "{} archived events ({} users, {} tracks) at a limit of {} per 10 s: interrupted after {:.0} s with {} stored, delivered in {:.0} s ({:.0} events/s); tracks sent {} (twice: {}), contacts created {} (twice: {}), 429s {}; backfill share of the limit {:.1} % over {} full windows, all traffic {:.1} %; live identify → contact p50 {} ms p99 {} ms max {} ms idle ({} missing), {} / {} / {} ms during ({} missing); ratio p50 {:.2}, p99 {:.2}; the CLI said: {}",
            self.events,
            self.users,
            self.tracks,
            args.rate_limit,
            self.interrupted_after,
            self.interrupted_at,
            self.seconds,
            self.events as f64 / self.seconds,
            self.events_sent,
            self.events_sent_twice,
            self.contacts,
            self.contacts_twice,
            self.refused,
            self.backfill_share.1 * 100.0,
            self.backfill_share.0,
            self.total_share.1 * 100.0,
            self.idle.0.value_at_quantile(0.5),
            self.idle.0.value_at_quantile(0.99),
            self.idle.0.max(),
            self.idle.1,
            self.during.0.value_at_quantile(0.5),
            self.during.0.value_at_quantile(0.99),
            self.during.0.max(),
            self.during.1,
            self.ratio(0.5),
            self.ratio(0.99),
            self.said
        )
    }

    fn report(&self, args: &BackfillArgs) -> String {
        format!(
            "## Backfill beside live traffic\n\n\
             `cargo build --release -p junction -p junction-bench && target/release/junction-bench backfill --write BENCHMARKS.md`\n\n\
             A Segment archive in the S3 destination's layout (gzipped JSON lines, {} files) of {} events: one identify for each of {} users, then {} tracks; `junction serve` on SQLite with profile-sync and track-events, delivering to the emulator (`junction emulate intercom`) limited to {} requests per 10 s. `junction backfill` is killed (SIGKILL) once half the events are stored and started again. Meanwhile live identifies of new users arrive at {} a second; their latency is from the bench receiving the 200 to the emulator receiving the contact's `POST /contacts`, compared with the same stream on the idle server for {} s before and {} s after. Everything shares this machine's 2 cores.\n\n\
             | measure | result |\n|---|---:|\n\
             | interrupted | after {:.0} s, {} events stored |\n\
             | archive delivered in | {:.0} s ({:.0} events/s) |\n\
             | archived tracks sent to Intercom | {} of {} (sent twice: {}) |\n\
             | archived users' contacts created | {} of {} (twice: {}) |\n\
             | 429s | {} |\n\
             | backfill's share of the limit in full windows | {:.1} % over {} windows (its cap: 80 %) |\n\
             | all traffic's share of the limit | {:.1} % |\n\
             | live identify → contact, idle: p50 / p99 / max | {} / {} / {} ms |\n\
             | live identify → contact, during the backfill: p50 / p99 / max | {} / {} / {} ms |\n\
             | during ÷ idle | p50 {:.2}, p99 {:.2} |\n\n\
             Where a live identify's time went, idle and then during the backfill (from the store's timestamps: acknowledged → planned → first attempt → the emulator):\n\n\
             - idle: {}\n\
             - during: {}\n",
            args.events.div_ceil(10_000),
            self.events,
            self.users,
            self.tracks,
            args.rate_limit,
            args.live_per_second,
            args.idle_seconds,
            args.idle_seconds,
            self.interrupted_after,
            self.interrupted_at,
            self.seconds,
            self.events as f64 / self.seconds,
            self.events_sent,
            self.tracks,
            self.events_sent_twice,
            self.contacts,
            self.users,
            self.contacts_twice,
            self.refused,
            self.backfill_share.1 * 100.0,
            self.backfill_share.0,
            self.total_share.1 * 100.0,
            self.idle.0.value_at_quantile(0.5),
            self.idle.0.value_at_quantile(0.99),
            self.idle.0.max(),
            self.during.0.value_at_quantile(0.5),
            self.during.0.value_at_quantile(0.99),
            self.during.0.max(),
            self.ratio(0.5),
            self.ratio(0.99),
            self.stages.0.summary(),
            self.stages.1.summary(),
        )
    }
}
