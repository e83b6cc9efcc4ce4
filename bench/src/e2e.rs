//! `junction-bench e2e`: the whole path. Segment events go over HTTP into `junction serve`
//! (SQLite, the default templates profile-sync, company-sync and track-events), which
//! delivers them to the Intercom emulator; the emulator's journal then says what each event
//! cost in Intercom requests (by route) and how long after its acknowledgement its first
//! Intercom call came.
//!
//! The stream is the one issue 13 compared with Segment's own Intercom destination: per user
//! one identify and four tracks, and one group per ten users. Each event is recognised in the
//! journal by something it alone carries: an identify by the new contact's `external_id`, a
//! group by the company's `company_id`, a track by its `n` metadata.

use crate::{Process, free_port, spawn_serve, wait_until_up};
use anyhow::Context;
use hdrhistogram::Histogram;
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

#[derive(clap::Args)]
pub struct E2eArgs {
    /// The junction binary to measure.
    #[arg(long, default_value = "target/release/junction")]
    junction: PathBuf,
    /// Users in the stream (each: one identify, four tracks; one group per ten users).
    #[arg(long, default_value_t = 500)]
    users: usize,
    /// Users in the run at Intercom's rate limit: enough requests for several full 10-second
    /// windows.
    #[arg(long, default_value_t = 2_000)]
    budget_users: usize,
    /// Pace of the paced run, in events per second (Intercom's default limit is 166 requests
    /// per second).
    #[arg(long, default_value_t = 100)]
    events_per_second: u64,
    /// Events per request in the paced runs (unpaced, a request carries ten users' events).
    #[arg(long, default_value_t = 10)]
    batch: usize,
    /// Run one scenario with this latency added to every emulator answer, in milliseconds,
    /// instead of the standard scenarios.
    #[arg(long)]
    latency_ms: Option<u64>,
    /// The emulator's limit per 10-second window for that one scenario (absent: no limit).
    #[arg(long)]
    rate_limit: Option<u32>,
    /// Send that one scenario's events as fast as Junction takes them instead of paced.
    #[arg(long)]
    unpaced: bool,
    /// Write the emulator's journal of the last run here (JSON), to see each request.
    #[arg(long)]
    journal: Option<PathBuf>,
    /// Replace the e2e section of this Markdown file with the results.
    #[arg(long)]
    write: Option<PathBuf>,
}

const WRITE_KEY: &str = "bench-write-key";
const TOKEN: &str = "bench-token";
/// Intercom's default limit for a private app: 10,000 per minute, enforced per 10 seconds.
const INTERCOM_DEFAULT_LIMIT: u32 = 1_666;

#[derive(Clone)]
struct Scenario {
    users: usize,
    latency_ms: u64,
    /// Requests per 10-second window; `None`: no limit.
    rate_limit: Option<u32>,
    /// Events per second; `None`: as fast as Junction acknowledges them.
    paced: Option<u64>,
}

impl Scenario {
    fn describe(&self) -> String {
        let limit = match self.rate_limit {
            Some(limit) => format!("limit {limit} per 10 s"),
            None => "no rate limit".to_owned(),
        };
        let pace = match self.paced {
            Some(rate) => format!("paced at {rate} events/s"),
            None => "sent as fast as acknowledged".to_owned(),
        };
        format!(
            "{} users, {} ms latency, {limit}, {pace}",
            self.users, self.latency_ms
        )
    }
}

struct Outcome {
    scenario: Scenario,
    events: usize,
    requests: usize,
    refused: usize,
    by_route: BTreeMap<String, usize>,
    seconds: f64,
    latency: Histogram<u64>,
    unmatched: usize,
    full_windows: usize,
    used_share: f64,
}

pub async fn e2e(args: E2eArgs) -> anyhow::Result<()> {
    let scenarios = if args.latency_ms.is_some() || args.rate_limit.is_some() || args.unpaced {
        vec![Scenario {
            users: args.users,
            latency_ms: args.latency_ms.unwrap_or(0),
            rate_limit: args.rate_limit,
            paced: (!args.unpaced).then_some(args.events_per_second),
        }]
    } else {
        vec![
            Scenario {
                users: args.users,
                latency_ms: 0,
                rate_limit: None,
                paced: Some(args.events_per_second),
            },
            Scenario {
                users: args.users,
                latency_ms: 0,
                rate_limit: None,
                paced: None,
            },
            Scenario {
                users: args.budget_users,
                latency_ms: 80,
                rate_limit: Some(INTERCOM_DEFAULT_LIMIT),
                paced: None,
            },
        ]
    };
    let mut outcomes = Vec::new();
    for scenario in scenarios {
        let outcome = run(&args, scenario).await?;
        println!("{}", summary(&outcome));
        for (route, count) in &outcome.by_route {
            println!("  {route}: {count}");
        }
        outcomes.push(outcome);
    }
    if let Some(path) = &args.write {
        crate::replace_marked(path, "e2e", &report(&args, &outcomes))?;
    }
    Ok(())
}

/// One event of the stream and how the journal recognises its first call.
struct Planned {
    message: serde_json::Value,
    key: String,
}

impl Outcome {
    fn requests_per_event(&self) -> f64 {
        self.requests as f64 / self.events as f64
    }

    fn events_per_second(&self) -> f64 {
        self.events as f64 / self.seconds
    }
}

/// Per ten users: their identifies, one group, then four rounds of their tracks (one inner
/// vector per ten users).
fn stream(users: usize) -> Vec<Vec<Planned>> {
    let mut chunks = Vec::new();
    let mut n = 0u64;
    for chunk in (0..users).collect::<Vec<_>>().chunks(10) {
        let mut events = Vec::new();
        for &u in chunk {
            events.push(Planned {
                message: serde_json::json!({
                    "type": "identify", "userId": format!("user-{u}"),
                    "traits": {"email": format!("user-{u}@example.com"), "name": format!("User {u}"), "plan": "pro"}
                }),
                key: format!("contact:user-{u}"),
            });
        }
        let company = format!("company-{}", chunk[0] / 10);
        events.push(Planned {
            message: serde_json::json!({
                "type": "group", "userId": format!("user-{}", chunk[0]), "groupId": company,
                "traits": {"name": format!("Company {}", chunk[0] / 10), "employees": 42}
            }),
            key: format!("company:{company}"),
        });
        for round in 0..4 {
            for &u in chunk {
                n += 1;
                let name = ["Signed In", "Viewed Page", "Added Seat", "Exported Report"][round];
                events.push(Planned {
                    message: serde_json::json!({
                        "type": "track", "userId": format!("user-{u}"),
                        "event": name,
                        "properties": {"n": n}
                    }),
                    key: format!("event:{n}"),
                });
            }
        }
        chunks.push(events);
    }
    chunks
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

async fn run(args: &E2eArgs, scenario: Scenario) -> anyhow::Result<Outcome> {
    let dir = tempfile::tempdir()?;
    let http = reqwest::Client::builder().tcp_nodelay(true).build()?;

    let emulator_port = free_port()?;
    let limit = scenario.rate_limit.unwrap_or(u32::MAX);
    let _emulator = Process(
        Command::new(&args.junction)
            .args(["emulate", "intercom", "--listen"])
            .arg(format!("127.0.0.1:{emulator_port}"))
            .args(["--token", TOKEN, "--rate-limit", &limit.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting the emulator")?,
    );
    let emulator = format!("http://127.0.0.1:{emulator_port}");
    wait_until_up(&http, &format!("{emulator}/_emulator/config"), UP_PATIENCE).await?;
    http.put(format!("{emulator}/_emulator/config"))
        .json(&serde_json::json!({"faults": {"latency_ms": scenario.latency_ms}}))
        .send()
        .await?
        .error_for_status()?;

    let port = free_port()?;
    let config = dir.path().join("junction.yaml");
    std::fs::write(
        &config,
        format!(
            "store: sqlite://{}\nsegment:\n  write_keys: [{WRITE_KEY}]\nintercom:\n  base_url: {emulator}\n  token: {TOKEN}\nworkflows:\n  - template: profile-sync\n  - template: company-sync\n  - template: track-events\n",
            dir.path().join("junction.db").display()
        ),
    )?;
    let _junction = Process(spawn_serve(&args.junction, &config, port)?);
    let base = format!("http://127.0.0.1:{port}");
    wait_until_up(&http, &format!("{base}/readyz"), UP_PATIENCE).await?;

    let chunks = stream(scenario.users);
    let events = chunks.iter().map(Vec::len).sum();
    let acks: Arc<Mutex<HashMap<String, u64>>> = Arc::default();
    let started = Instant::now();
    let started_ms = now_ms();
    // Paced, batches of `--batch` leave one after another, far enough apart that each is
    // stored before the next. Unpaced, several requests are in flight, and one request could
    // overtake another: so each batch holds ten users' whole stream (51 events) and a user's
    // events arrive in order, as one SDK's would.
    let batches: Vec<Vec<&Planned>> = if scenario.paced.is_some() {
        chunks
            .iter()
            .flatten()
            .collect::<Vec<_>>()
            .chunks(args.batch)
            .map(<[_]>::to_vec)
            .collect()
    } else {
        chunks.iter().map(|chunk| chunk.iter().collect()).collect()
    };
    let mut sends = tokio::task::JoinSet::new();
    let interval = scenario
        .paced
        .map(|rate| Duration::from_secs_f64(args.batch as f64 / rate as f64));
    for (i, batch) in batches.into_iter().enumerate() {
        if let Some(interval) = interval {
            // Paced: each batch leaves on its own schedule, whatever the earlier ones wait for.
            tokio::time::sleep_until((started + interval * i as u32).into()).await;
        } else if sends.len() >= 8 {
            // As fast as acknowledged: at most 8 requests in flight.
            if let Some(sent) = sends.join_next().await {
                sent??;
            }
        }
        let messages: Vec<_> = batch.iter().map(|p| p.message.clone()).collect();
        let keys: Vec<_> = batch.iter().map(|p| p.key.clone()).collect();
        let (http, acks, url) = (http.clone(), Arc::clone(&acks), format!("{base}/v1/batch"));
        sends.spawn(async move {
            http.post(url)
                .basic_auth(WRITE_KEY, Some(""))
                .json(&serde_json::json!({ "batch": messages }))
                .send()
                .await?
                .error_for_status()?;
            let at = now_ms();
            let mut acks = acks.lock().expect("acks lock");
            for key in keys {
                acks.insert(key, at);
            }
            anyhow::Ok(())
        });
    }
    while let Some(sent) = sends.join_next().await {
        sent??;
    }
    wait_until_delivered(&http, &base).await?;
    let journal: Vec<serde_json::Value> = http
        .get(format!("{emulator}/_emulator/requests"))
        .send()
        .await?
        .json()
        .await?;
    if let Some(path) = &args.journal {
        std::fs::write(path, serde_json::to_vec_pretty(&journal)?)?;
    }

    let mut by_route = BTreeMap::new();
    let mut first_call: HashMap<String, u64> = HashMap::new();
    let (mut requests, mut refused) = (0, 0);
    let mut per_window: BTreeMap<u64, usize> = BTreeMap::new();
    let mut last_ms = started_ms;
    for entry in &journal {
        let method = entry["method"].as_str().unwrap_or("");
        let path = entry["path"].as_str().unwrap_or("");
        if path.starts_with("/_emulator") {
            continue;
        }
        requests += 1;
        let received = entry["received_ms"].as_u64().unwrap_or(0);
        last_ms = last_ms.max(received);
        *by_route
            .entry(format!("{method} {}", route(path)))
            .or_default() += 1;
        if entry["status"] == 429 {
            refused += 1;
        } else {
            *per_window.entry(received / 10_000).or_default() += 1;
        }
        let body = &entry["body"];
        let key = match (method, path) {
            ("POST", "/contacts") => body["external_id"]
                .as_str()
                .map(|id| format!("contact:{id}")),
            ("POST", "/companies") => body["company_id"]
                .as_str()
                .map(|id| format!("company:{id}")),
            ("POST", "/events") => body["metadata"]["n"].as_u64().map(|n| format!("event:{n}")),
            _ => None,
        };
        if let Some(key) = key {
            first_call.entry(key).or_insert(received);
        }
    }
    let acks = acks.lock().expect("acks lock");
    let mut latency = Histogram::<u64>::new(3)?;
    let mut unmatched = 0;
    for (key, ack) in acks.iter() {
        match first_call.get(key) {
            Some(call) => latency.record(call.saturating_sub(*ack))?,
            None => unmatched += 1,
        }
    }
    let (full_windows, used_share) = scenario.rate_limit.map_or((0, 0.0), |limit| {
        crate::full_window_share(&per_window, limit)
    });
    Ok(Outcome {
        scenario,
        events,
        requests,
        refused,
        by_route,
        seconds: (last_ms.saturating_sub(started_ms)) as f64 / 1000.0,
        latency,
        unmatched,
        full_windows,
        used_share,
    })
}

/// A path with its ids replaced by `{id}`: Intercom's routes have lower-case words only.
fn route(path: &str) -> String {
    path.split('/')
        .map(|segment| {
            if segment.chars().all(|c| c.is_ascii_lowercase() || c == '_') {
                segment.to_owned()
            } else {
                "{id}".to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("/")
}

/// Waits until planning has caught up with the log and no action is waiting or running.
pub(crate) async fn wait_until_delivered(http: &reqwest::Client, base: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(1_800);
    loop {
        let cluster: serde_json::Value = http
            .get(format!("{base}/api/cluster"))
            .send()
            .await?
            .json()
            .await?;
        let delivery: serde_json::Value = http
            .get(format!("{base}/api/delivery"))
            .send()
            .await?
            .json()
            .await?;
        if cluster["lagEvents"] == 0
            && delivery["actions"]["pending"] == 0
            && delivery["actions"]["standby"] == 0
        {
            return Ok(());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "delivery did not drain: {delivery}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

impl Outcome {
    /// With a rate limit: the share of it used (%) and over how many full windows.
    fn limit_share(&self) -> Option<(f64, usize)> {
        self.scenario
            .rate_limit
            .map(|_| (self.used_share * 100.0, self.full_windows))
    }
}

/// How long a process started here may take to answer.
const UP_PATIENCE: Duration = Duration::from_secs(60);

fn summary(o: &Outcome) -> String {
    format!(
        "{}: {} events, {} requests ({:.3}/event, {} answered 429), {:.0} events/s end to end, ack → first call p50 {} ms p99 {} ms max {} ms{}",
        o.scenario.describe(),
        o.events,
        o.requests,
        o.requests_per_event(),
        o.refused,
        o.events_per_second(),
        o.latency.value_at_quantile(0.5),
        o.latency.value_at_quantile(0.99),
        o.latency.max(),
        o.limit_share()
            .map(|(share, windows)| format!(
                ", {share:.1} % of the limit used over {windows} full windows"
            ))
            .unwrap_or_default()
    )
}

fn report(args: &E2eArgs, outcomes: &[Outcome]) -> String {
    let mut text = format!(
        "## End to end: Segment events in, Intercom requests out\n\n\
         `cargo build --release -p junction -p junction-bench && target/release/junction-bench e2e --write BENCHMARKS.md`\n\n\
         Per user one identify and four tracks, one group per ten users (51 events per ten users), to `/v1/batch`: paced in batches of {} one after another, unpaced as fast as acknowledged with up to 8 requests in flight, each carrying ten users' 51 events (so no request overtakes a user's earlier events); `junction serve` on SQLite with the templates profile-sync, company-sync and track-events, delivering to the emulator (`junction emulate intercom`, 1 s search lag). Requests per event count every request Junction sent, 429s included. Latency: from the bench receiving a batch's 200 to the emulator receiving that event's first call (the identify's `POST /contacts`, the group's `POST /companies`, the track's `POST /events`). Everything shares this machine's 2 cores.\n\n\
         | scenario | events | requests/event | 429s | events/s end to end | ack → first call p50 | p99 | max | share of the limit used |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|---:|\n",
        args.batch
    );
    for o in outcomes {
        text.push_str(&format!(
            "| {} | {} | {:.3} | {} | {:.0} | {} ms | {} ms | {} ms | {} |\n",
            o.scenario.describe(),
            o.events,
            o.requests_per_event(),
            o.refused,
            o.events_per_second(),
            o.latency.value_at_quantile(0.5),
            o.latency.value_at_quantile(0.99),
            o.latency.max(),
            o.limit_share().map_or_else(
                || "—".to_owned(),
                |(share, windows)| format!("{share:.1} % ({windows} full windows)")
            )
        ));
    }
    if let Some(o) = outcomes.first() {
        text.push_str(&format!(
            "\nRequests by route in the first run ({} events; events without a matched first call: {}):\n\n| route | requests | per event |\n|---|---:|---:|\n",
            o.events, o.unmatched
        ));
        for (route, count) in &o.by_route {
            text.push_str(&format!(
                "| `{route}` | {count} | {:.3} |\n",
                *count as f64 / o.events as f64
            ));
        }
    }
    text
}
