//! The rate limit at the scale the product promises: a queue of calls drains at the rate
//! Intercom allows without a single 429, and a 429 storm is ridden out with one probe per window.
//!
//! They run in real time against the emulator, with its windows (and the client's) set to two
//! seconds instead of Intercom's ten: the same gate over a dozen windows in about 25 seconds
//! rather than three and a half minutes. (The gate's own decisions are tested in paused time in
//! `src/rate.rs`.)

use junction_emulator::faults::Faults;
use junction_emulator::journal::JournalEntry;
use junction_emulator::{Emulator, EmulatorConfig};
use junction_intercom::{IntercomClient, IntercomConfig};
use std::collections::BTreeMap;
use std::time::Duration;

const LIMIT: u32 = 50;
const WINDOW_SECONDS: u64 = 2;
const WINDOW_MS: u64 = WINDOW_SECONDS * 1000;
/// Calls queued at once: a dozen windows' worth.
const CALLS: usize = 600;

/// A client for the emulator, with its windows.
fn client(base: &str) -> IntercomClient {
    let mut config = IntercomConfig::new(base, "secret-token");
    config.rate_window_seconds = WINDOW_SECONDS;
    IntercomClient::new(config).unwrap()
}

async fn limited_emulator() -> (String, Emulator) {
    let emulator = Emulator::new(EmulatorConfig {
        token: Some("secret-token".into()),
        rate_limit: LIMIT,
        search_lag: Duration::ZERO,
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = emulator.clone().spawn(listener).await.unwrap();
    emulator.set_rate_window(WINDOW_SECONDS);
    (format!("http://{addr}"), emulator)
}

/// Requests per emulator window (windows are aligned to the Unix clock), by status.
fn per_window(journal: &[JournalEntry], status: u16) -> BTreeMap<u64, usize> {
    let mut windows = BTreeMap::new();
    for entry in journal.iter().filter(|entry| entry.status == status) {
        *windows.entry(entry.received_ms / WINDOW_MS).or_default() += 1;
    }
    windows
}

async fn run_calls(intercom: &IntercomClient, calls: usize) {
    let tasks: Vec<_> = (0..calls)
        .map(|_| {
            let intercom = intercom.clone();
            tokio::spawn(async move {
                intercom
                    .call(
                        reqwest::Method::GET,
                        &junction_intercom::ApiPath::fixed("admins"),
                        None,
                    )
                    .await
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap().expect("every call succeeds");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_calls_drain_at_the_allowed_rate_without_a_429() {
    let (base, emulator) = limited_emulator().await;
    let intercom = client(&base);
    run_calls(&intercom, CALLS).await;

    let journal = emulator.journal_entries();
    assert_eq!(journal.len(), CALLS, "one request per call, no retries");
    assert!(
        per_window(&journal, 429).is_empty(),
        "Intercom answered 429: {:?}",
        per_window(&journal, 429)
    );
    let sent = per_window(&journal, 200);
    // The queue starts and ends inside a window: the rate is what the whole windows between
    // carried.
    let whole: Vec<usize> = sent.values().copied().skip(1).collect();
    let whole = &whole[..whole.len().saturating_sub(1)];
    let throughput = whole.iter().sum::<usize>() as f64 / (whole.len() as f64 * f64::from(LIMIT));
    println!(
        "{CALLS} calls over {} windows of {LIMIT}: {throughput:.3} of the allowed rate",
        sent.len()
    );
    assert!(
        whole.len() >= 8 && throughput >= 0.9,
        "{throughput:.3} of the allowed rate: {sent:?}"
    );
    assert!(sent.values().all(|&n| n <= LIMIT as usize));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_429_storm_is_ridden_out_with_one_probe_per_window() {
    let (base, emulator) = limited_emulator().await;
    let intercom = client(&base);
    // The gate knows the window before the storm starts, as it would in steady state.
    run_calls(&intercom, 1).await;
    emulator.set_faults(Faults {
        storm_seconds: 5,
        ..Faults::default()
    });
    run_calls(&intercom, 60).await;

    let journal = emulator.journal_entries();
    let refused = per_window(&journal, 429);
    let served = per_window(&journal, 200);
    assert_eq!(served.values().sum::<usize>(), 61, "every call succeeds");
    let (&storm_began, &in_first) = refused.iter().next().expect("the storm was met");
    // Requests already in flight when the storm began meet it: at most the in-flight limit.
    assert!(
        in_first <= 8,
        "{in_first} refused in the storm's first window"
    );
    let probes: Vec<_> = refused.range(storm_began + 1..).collect();
    assert!(
        probes.iter().all(|&(_, &n)| n == 1),
        "more than one probe in a storm window: {refused:?}"
    );
    assert!(
        probes.len() >= 2,
        "a 5-second storm spans at least two more windows: {refused:?}"
    );
    println!("429s per window: {refused:?}; served per window: {served:?}");
}

/// Three nodes calling one workspace share its budget through the store: together they stay
/// inside each window (no 429 but the nodes' first probes), and still use most of it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_sharing_the_store_budget_stay_inside_each_window() {
    let (base, emulator) = limited_emulator().await;
    let dir = tempfile::tempdir().unwrap();
    let store = junction_store::open(
        &format!("sqlite://{}", dir.path().join("j.db").display()),
        junction_store::StoreOptions::default(),
    )
    .await
    .unwrap();
    let nodes: Vec<IntercomClient> = (0..3)
        .map(|_| {
            let node = client(&base);
            let budget: std::sync::Arc<dyn junction_store::RateBudget> = store.clone();
            node.rate_gate().share_budget(budget, "workspace-1");
            node
        })
        .collect();
    let calls = 100;
    let runs: Vec<_> = nodes
        .iter()
        .cloned()
        .map(|node| tokio::spawn(async move { run_calls(&node, calls).await }))
        .collect();
    for run in runs {
        run.await.unwrap();
    }

    let journal = emulator.journal_entries();
    let refused = per_window(&journal, 429);
    assert!(
        refused.values().sum::<usize>() <= nodes.len(),
        "429s beyond the nodes' first probes: {refused:?}"
    );
    assert_eq!(
        journal.iter().filter(|e| e.status == 200).count(),
        calls * nodes.len()
    );
    for (window, sent) in per_window(&journal, 200) {
        assert!(sent <= LIMIT as usize, "window {window}: {sent} requests");
    }
}
