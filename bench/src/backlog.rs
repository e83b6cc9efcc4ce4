//! `junction-bench backlog`: what a large delivery backlog costs. For each backlog size it
//! builds a store with that many pending actions (through the store's own API, as the engine
//! writes them), then measures
//! - a delivery wake-up (`ready_heads` for 64 users plus `next_due_ms`, what the executor does
//!   each time it looks for work), averaged over many wake-ups, and
//! - the resident memory of a real `junction serve` on that store while delivery runs against
//!   an Intercom emulator in a 429 storm (so the backlog stays), after it has settled.

use junction_store::{EngineCommit, NewAction, Store, StoreOptions};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

#[derive(clap::Args)]
pub struct BacklogArgs {
    /// The junction binary to measure.
    #[arg(long, default_value = "target/release/junction")]
    junction: PathBuf,
    /// Backlog sizes (pending actions).
    #[arg(long, value_delimiter = ',', default_value = "1000,1000000")]
    sizes: Vec<usize>,
    /// Users the actions are spread over (at most one user per action), the same for every
    /// size, so that a wake-up finds as many users with work whatever the backlog.
    #[arg(long, default_value_t = 10_000)]
    users: usize,
    /// Seconds `junction serve` runs against the backlog before its memory is read.
    #[arg(long, default_value_t = 20)]
    settle: u64,
    /// Measure on PostgreSQL (a database of its own on the server this admin URL points at)
    /// instead of SQLite.
    #[arg(long)]
    postgres: Option<String>,
    /// Replace the backlog section of this Markdown file with the results.
    #[arg(long)]
    write: Option<PathBuf>,
}

struct Measured {
    size: usize,
    users: usize,
    fill_seconds: f64,
    wake_up_us: f64,
    rss_mb: f64,
    peak_mb: f64,
}

pub async fn backlog(args: BacklogArgs) -> anyhow::Result<()> {
    let mut results = Vec::new();
    for &size in &args.sizes {
        let dir = tempfile::tempdir()?;
        let url = match &args.postgres {
            Some(admin) => {
                junction_store::postgres::create_scratch_database(admin, "junction_bench").await?
            }
            None => format!("sqlite://{}", dir.path().join("junction.db").display()),
        };
        let store = junction_store::open(&url, StoreOptions::default()).await?;
        let started = Instant::now();
        let users = fill(store.as_ref(), size, args.users).await?;
        let fill_seconds = started.elapsed().as_secs_f64();
        let wake_up_us = wake_up(store.as_ref()).await?;
        store.close().await?;
        drop(store);
        let (rss_mb, peak_mb) = serve_memory(&args.junction, dir.path(), &url, args.settle).await?;
        let measured = Measured {
            size,
            users,
            fill_seconds,
            wake_up_us,
            rss_mb,
            peak_mb,
        };
        println!(
            "{size} pending actions ({users} users): wake-up {wake_up_us:.0} µs; junction serve RSS {rss_mb:.0} MB (peak {peak_mb:.0} MB); filled in {fill_seconds:.1} s"
        );
        results.push(measured);
    }
    let report = report(&results, args.postgres.is_some());
    print!("{report}");
    if let Some(path) = &args.write {
        let section = if args.postgres.is_some() {
            "backlog-postgres"
        } else {
            "backlog"
        };
        crate::replace_marked(path, section, &report)?;
    }
    Ok(())
}

/// `size` pending actions spread over `users` users, committed as the engine does (in batches).
async fn fill(store: &dyn Store, size: usize, users: usize) -> anyhow::Result<usize> {
    let users = users.clamp(1, size.max(1));
    let mut batch = Vec::with_capacity(10_000);
    for n in 0..size {
        let user = n % users;
        batch.push(NewAction {
            id: format!("m{n}/profile-sync/0"),
            identity: format!("user-{user}"),
            run: format!("m{n}/profile-sync"),
            seq: n as i64 + 1,
            lane: if n % 50 == 0 { 0 } else { 1 },
            standby_for: None,
            capped: None,
            body: format!(
                r#"{{"id":"m{n}/profile-sync/0","workflow":"profile-sync","identity":"user-{user}","who":{{"user_id":"user-{user}"}},"action":{{"kind":"contact","traits":{{"plan":"pro","seats":{n}}}}}}}"#
            ),
        });
        if batch.len() == 10_000 {
            store
                .engine_commit(EngineCommit {
                    actions: std::mem::take(&mut batch),
                    ..EngineCommit::default()
                })
                .await?;
        }
    }
    if !batch.is_empty() {
        store
            .engine_commit(EngineCommit {
                actions: batch,
                ..EngineCommit::default()
            })
            .await?;
    }
    Ok(users)
}

/// Mean time of one delivery wake-up (claiming 64 users and asking when the next head is due,
/// what the executor does each time it looks for work), over enough of them to be stable. The
/// claims are released after each round, outside the timed part, as workers would.
async fn wake_up(store: &dyn Store) -> anyhow::Result<f64> {
    let now = chrono::Utc::now().timestamp_millis();
    let mut timed = Duration::ZERO;
    let rounds = 300;
    for round in 0..rounds + 20 {
        let started = Instant::now();
        let claims = store.claim_users("bench", now, 60_000, 64).await?;
        std::hint::black_box(store.next_due_ms().await?);
        if round >= 20 {
            timed += started.elapsed();
        }
        for claim in &claims {
            store.release_claim(claim).await?;
        }
    }
    Ok(timed.as_secs_f64() * 1e6 / rounds as f64)
}

/// RSS and peak RSS (MB) of `junction serve` on this store, delivering into a 429 storm.
async fn serve_memory(
    junction: &Path,
    dir: &Path,
    store: &str,
    settle: u64,
) -> anyhow::Result<(f64, f64)> {
    let emulator_port = crate::free_port()?;
    let mut emulator = Command::new(junction)
        .args(["emulate", "intercom", "--listen"])
        .arg(format!("127.0.0.1:{emulator_port}"))
        .args(["--token", "bench-token"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    let http = reqwest::Client::new();
    let emulator_url = format!("http://127.0.0.1:{emulator_port}");
    let port = crate::free_port()?;
    let config = dir.join("junction.yaml");
    std::fs::write(
        &config,
        format!(
            "store: {store}\nintercom:\n  base_url: http://127.0.0.1:{emulator_port}\n  token: bench-token\nworkflows:\n  - template: profile-sync\n"
        ),
    )?;
    let mut serve = crate::spawn_serve(junction, &config, port)?;
    let ready = format!("http://127.0.0.1:{port}/readyz");
    crate::wait_until_up(&http, &ready, Duration::from_secs(60)).await?;
    // Once Junction has checked its credentials (GET /me), Intercom answers everything with 429:
    // delivery keeps working through the backlog and nothing drains.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let journal: serde_json::Value = http
            .get(format!("{emulator_url}/_emulator/requests"))
            .send()
            .await?
            .json()
            .await?;
        let checked = journal
            .as_array()
            .or_else(|| journal["requests"].as_array())
            .is_some_and(|entries| entries.iter().any(|e| e["path"] == "/me"));
        if checked {
            break;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "junction never checked its credentials"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    http.put(format!("{emulator_url}/_emulator/config"))
        .json(&serde_json::json!({"storm_seconds": 3600}))
        .send()
        .await?;
    tokio::time::sleep(Duration::from_secs(settle)).await;
    let memory = memory_of(&serve);
    stop(&mut serve);
    stop(&mut emulator);
    memory
}

/// VmRSS and VmHWM of a process, in MB.
fn memory_of(child: &Child) -> anyhow::Result<(f64, f64)> {
    let status = std::fs::read_to_string(format!("/proc/{}/status", child.id()))?;
    let field = |name: &str| -> f64 {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<f64>().ok())
            .map_or(0.0, |kb| kb / 1024.0)
    };
    Ok((field("VmRSS:"), field("VmHWM:")))
}

fn stop(child: &mut Child) {
    // SAFETY: kill(2) with a pid this process spawned; no memory is touched.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
    let _ = child.wait();
}

fn report(results: &[Measured], postgres: bool) -> String {
    let (title, command) = if postgres {
        (
            "## Delivery backlog on PostgreSQL",
            "target/release/junction-bench backlog --postgres postgres://postgres@127.0.0.1:5432/postgres --write BENCHMARKS.md",
        )
    } else {
        (
            "## Delivery backlog",
            "target/release/junction-bench backlog --write BENCHMARKS.md",
        )
    };
    let mut text = format!(
        "{title}\n\n`cargo build --release -p junction -p junction-bench && {command}`\n\n"
    );
    text.push_str(
        "\
         Pending actions built through the store's API, spread over up to 10,000 users (one in fifty urgent); a \
         wake-up is what delivery does each time it looks for work (`claim_users` for 64 users \
         and `next_due_ms`), averaged over 300; memory is `junction serve`'s resident set after \
         it has run against the backlog while Intercom (the emulator) answers every call with \
         429, so nothing drains. Wake-ups read one row per user with work from `user_heads` (migration 7); before it, each wake-up grouped every pending action by user, and RSS reached 550–620 MB with 1,000,000 actions backlogged (issue 12's measurement).\n\n\
         | pending actions | users | wake-up | RSS | peak RSS | store filled in |\n\
         |---:|---:|---:|---:|---:|---:|\n",
    );
    for r in results {
        text.push_str(&format!(
            "| {} | {} | {:.0} µs | {:.0} MB | {:.0} MB | {:.1} s |\n",
            r.size, r.users, r.wake_up_us, r.rss_mb, r.peak_mb, r.fill_seconds
        ));
    }
    if let [small, .., large] = results {
        text.push_str(&format!(
            "\nWake-up with {} pending ÷ with {} pending: **{:.2}**.\n",
            large.size,
            small.size,
            large.wake_up_us / small.wake_up_us
        ));
    }
    text
}
