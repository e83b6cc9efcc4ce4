//! Several nodes on one PostgreSQL (issue 12's kill test): three `junction serve` processes
//! share a store and the Intercom emulator, which fails 5 % of requests with 500, drops 2 % of
//! connections and throws a 429 storm. 20,000 events from 500 users go to the three nodes
//! round-robin; one node is SIGKILLed mid-delivery and restarted, and another is SIGTERMed for
//! good. The nodes share planning out by partition, so the kill and the stop each take
//! partitions away from planning: the others take them over.
//! Afterwards: every acknowledged event is stored, no contact or conversation exists twice,
//! each contact's updates reached Intercom in the order of its user's events, and all nodes
//! together stayed inside the emulator's rate limit (429s only for probes).

mod common;

use common::scenario::TOKEN;
use common::{Backend, Server, WRITE_KEY};
use junction_emulator::faults::Faults;
use junction_emulator::{Emulator, EmulatorConfig};
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant};

const NODES: usize = 3;
const USERS: usize = 500;
const EVENTS_PER_USER: usize = 40;
/// Intercom's default app limit: 10,000 a minute, about 1,666 per 10-second window.
const RATE_LIMIT: u32 = 1_666;
const STORM_SECONDS: u64 = 5;

/// User `u`'s `i`-th event: identifies whose trait `n` counts up (the order every contact's
/// updates must keep), logins, and one failed payment (a conversation) near the end.
fn event(u: usize, i: usize) -> Value {
    let user = format!("node-user-{u:03}");
    let message_id = format!("cluster-{u:03}-{i:02}");
    match i {
        38 => {
            json!({"type": "track", "userId": user, "messageId": message_id, "event": "Payment Failed", "properties": {"amount": 49}})
        }
        i if i % 4 == 3 => {
            json!({"type": "track", "userId": user, "messageId": message_id, "event": "Logged In"})
        }
        i => {
            json!({"type": "identify", "userId": user, "messageId": message_id, "traits": {"email": format!("{user}@example.com"), "n": i, "plan": "pro"}})
        }
    }
}

/// Sends a batch to node `first`, or to the next node up when that one does not answer.
/// True when a node acknowledged it.
async fn send(http: &reqwest::Client, nodes: &[Server], first: usize, batch: &[Value]) -> bool {
    for k in 0..nodes.len() {
        let node = &nodes[(first + k) % nodes.len()];
        let response = http
            .post(node.url("/v1/batch"))
            .basic_auth(WRITE_KEY, Some(""))
            .json(&json!({ "batch": batch }))
            .timeout(Duration::from_secs(10))
            .send()
            .await;
        if response.is_ok_and(|r| r.status() == 200) {
            return true;
        }
    }
    false
}

async fn admin(http: &reqwest::Client, node: &Server, path: &str) -> Value {
    http.get(node.url(path))
        .bearer_auth(common::ADMIN_TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_survive_a_kill_and_a_stop_without_losing_or_repeating_anything() {
    let emulator = Emulator::new(EmulatorConfig {
        token: Some(TOKEN.into()),
        rate_limit: RATE_LIMIT,
        search_lag: Duration::from_millis(300),
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let intercom = format!("http://{}", emulator.clone().spawn(listener).await.unwrap());
    let dirs: Vec<tempfile::TempDir> = (0..NODES).map(|_| tempfile::tempdir().unwrap()).collect();
    let store = Backend::Postgres.fresh_store(dirs[0].path()).await;
    let mut nodes = Vec::new();
    for (n, dir) in dirs.iter().enumerate() {
        // Short leases, so that the killed node's users move within seconds.
        let extra = format!(
            "intercom:\n  base_url: {intercom}\n  token: {TOKEN}\n\
             workflows:\n  - template: profile-sync\n  - template: churn-risk\n\
             cluster:\n  node: node-{n}\n  lease: 3s\n"
        );
        nodes.push(Server::start_on(dir.path(), store.clone(), &extra).await);
    }
    emulator.set_faults(Faults {
        error_rates: BTreeMap::from([(500, 0.05)]),
        reset_rate: 0.02,
        ..Faults::default()
    });
    let http = common::http();
    let started = Instant::now();

    // Interleaved (every user's first event, then every user's second, …) in batches of 100,
    // round-robin over the nodes.
    let all: Vec<Value> = (0..EVENTS_PER_USER)
        .flat_map(|i| (0..USERS).map(move |u| event(u, i)))
        .collect();
    let batches: Vec<&[Value]> = all.chunks(100).collect();
    let mut acknowledged: HashSet<String> = HashSet::new();
    for (index, batch) in batches.iter().enumerate() {
        if index == batches.len() / 3 {
            // Node 1 dies mid-delivery (SIGKILL) and comes back on the same store.
            nodes[1].kill();
        }
        if index == batches.len() / 3 + 10 {
            nodes[1].spawn().await;
        }
        if index == batches.len() / 2 {
            emulator.set_faults(Faults {
                error_rates: BTreeMap::from([(500, 0.05)]),
                reset_rate: 0.02,
                storm_seconds: STORM_SECONDS,
                ..Faults::default()
            });
        }
        if index == batches.len() * 3 / 4 {
            // Planning is spread over the nodes by now; node 0 is stopped for good (SIGTERM):
            // its partitions and its users move to the others.
            let cluster = admin(&http, &nodes[0], "/api/cluster").await;
            let planners: HashSet<&str> = cluster["partitions"]
                .as_array()
                .unwrap()
                .iter()
                .filter_map(|p| p["node"].as_str())
                .collect();
            assert!(planners.len() >= 2, "planning is shared out: {cluster}");
            assert!(planners.contains("node-0"), "{cluster}");
            let status = nodes[0].terminate();
            assert!(status.success(), "node 0 stopped with {status}");
        }
        if send(&http, &nodes, index, batch).await {
            acknowledged.extend(
                batch
                    .iter()
                    .map(|m| m["messageId"].as_str().unwrap().to_owned()),
            );
        }
    }
    let sent = started.elapsed();
    assert_eq!(
        acknowledged.len(),
        all.len(),
        "a live node took every batch"
    );

    // Drain: nothing pending anywhere (asked of node 1, back since its kill).
    let deadline = Instant::now() + Duration::from_secs(420);
    let status = loop {
        let status = admin(&http, &nodes[1], "/api/delivery").await;
        let planning = admin(&http, &nodes[1], "/api/cluster").await;
        if planning["lagEvents"] == 0
            && status["actions"]["pending"] == 0
            && status["actions"]["standby"] == 0
        {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "the cluster did not drain: {status} {planning}\nnode 1: {}\nnode 2: {}",
            nodes[1].log(),
            nodes[2].log()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let drained = started.elapsed();
    emulator.set_faults(Faults::default());
    let cluster = admin(&http, &nodes[1], "/api/cluster").await;
    for partition in cluster["partitions"].as_array().unwrap() {
        let planner = partition["node"].as_str().unwrap_or("nobody");
        assert!(
            planner == "node-1" || planner == "node-2",
            "every partition's planning moved off the stopped node: {cluster}"
        );
    }
    let stopped = &cluster["nodes"][0];
    assert_eq!(
        (stopped["name"].as_str(), stopped["alive"].as_bool()),
        (Some("node-0"), Some(false)),
        "{cluster}"
    );

    // 0 acknowledged events lost (and none stored twice).
    let stored: Vec<String> = nodes[1]
        .all_events()
        .await
        .iter()
        .map(|e| e["messageId"].as_str().unwrap().to_owned())
        .collect();
    let distinct: HashSet<&String> = stored.iter().collect();
    assert_eq!(distinct.len(), stored.len(), "an event stored twice");
    let missing: Vec<&String> = acknowledged
        .iter()
        .filter(|id| !distinct.contains(id))
        .collect();
    assert!(missing.is_empty(), "acknowledged but lost: {missing:?}");
    let letters = admin(&http, &nodes[1], "/api/dlq?limit=1000").await;
    assert_eq!(
        letters["items"].as_array().map(Vec::len),
        Some(0),
        "momentary faults must not dead-letter anything: {letters}"
    );

    // 0 duplicate contacts, each with its user's last identify.
    let mut contacts: Vec<Value> = Vec::new();
    let mut starting_after: Option<String> = None;
    loop {
        let mut url = format!("{intercom}/contacts?per_page=150");
        if let Some(cursor) = &starting_after {
            url.push_str(&format!("&starting_after={cursor}"));
        }
        let page: Value = http
            .get(url)
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        contacts.extend(page["data"].as_array().unwrap().iter().cloned());
        match page["pages"]["next"]["starting_after"].as_str() {
            Some(next) => starting_after = Some(next.to_owned()),
            None => break,
        }
    }
    let users: HashSet<&str> = contacts
        .iter()
        .map(|c| c["external_id"].as_str().unwrap_or("?"))
        .collect();
    assert_eq!(
        (contacts.len(), users.len()),
        (USERS, USERS),
        "zero duplicate contacts"
    );
    for contact in &contacts {
        assert_eq!(contact["custom_attributes"]["n"], 37, "{contact}");
    }

    // 0 duplicate conversations: one per user.
    let conversations: Value = http
        .get(format!("{intercom}/conversations"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mut per_contact: HashMap<String, usize> = HashMap::new();
    for conversation in conversations["conversations"].as_array().unwrap() {
        *per_contact
            .entry(
                conversation["source"]["author"]["id"]
                    .as_str()
                    .unwrap_or("?")
                    .to_owned(),
            )
            .or_default() += 1;
    }
    assert_eq!(per_contact.len(), USERS, "every user's conversation exists");
    let duplicates: usize = per_contact.values().map(|n| n - 1).sum();
    assert_eq!(duplicates, 0, "duplicate conversations");

    // Each contact's updates in its events' order: `n` never goes back, whichever node sent.
    let journal = emulator.journal_entries();
    let mut last_n: HashMap<String, i64> = HashMap::new();
    for entry in journal.iter().filter(|e| {
        (200..300).contains(&e.status) && e.method == "PUT" && e.path.starts_with("/contacts/")
    }) {
        let Some(n) = entry.body["custom_attributes"]["n"].as_i64() else {
            continue;
        };
        let before = last_n.insert(entry.path.clone(), n).unwrap_or(-1);
        assert!(
            n >= before,
            "{} got n={n} after n={before}: out of its events' order",
            entry.path
        );
    }

    // Inside the rate limit: a 429 only ever answers a probe (one request per node when a
    // window is unknown: after a start, and once per window of the storm).
    let refused = journal.iter().filter(|e| e.status == 429).count();
    let storm_windows = STORM_SECONDS.div_ceil(10) as usize + 1;
    let probes = NODES * (storm_windows + 2);
    assert!(
        refused <= probes,
        "{refused} requests answered 429 (at most {probes} probes expected)"
    );
    println!(
        "cluster: {} events over {NODES} nodes (one killed and restarted, one stopped), sent in {sent:.1?}, drained in {drained:.1?}; {} Intercom requests, {refused} answered 429; delivery {status}; cluster {cluster}",
        all.len(),
        journal.len()
    );
}
