//! The soak test of issue 5: 20,000 events for 500 users through profile-sync and churn-risk,
//! while the Intercom emulator fails 5 % of requests with 500, drops 2 % of connections and
//! throws a 429 storm, and Junction is killed with SIGKILL five times and restarted. Afterwards
//! every acknowledged event has its effects in Intercom, no contact exists twice, duplicated
//! conversations stay within 0.1 %, and nothing is left pending outside the dead-letter queue.

mod common;

use common::scenario::{Scenario, TOKEN};
use junction_emulator::faults::Faults;
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

const USERS: usize = 500;
const EVENTS_PER_USER: usize = 40;
const KILLS: usize = 5;

/// User `u`'s `i`-th event: 30 identifies (trait `n` counting up), 9 logins, and one failed
/// payment near the end.
fn event(u: usize, i: usize) -> Value {
    let user = format!("soak-{u:03}");
    let message_id = format!("soak-{u:03}-{i:02}");
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_thousand_events_through_faults_storms_and_kills() {
    let mut s = Scenario::start_config(
        "workflows:\n  - template: profile-sync\n  - template: churn-risk\n",
        Some(TOKEN),
    )
    .await;
    s.emulator.set_faults(Faults {
        error_rates: BTreeMap::from([(500, 0.05)]),
        reset_rate: 0.02,
        ..Faults::default()
    });
    let started = Instant::now();
    // Interleaved: every user's first event, then every user's second, … in batches of 100.
    let all: Vec<Value> = (0..EVENTS_PER_USER)
        .flat_map(|i| (0..USERS).map(move |u| event(u, i)))
        .collect();
    let batches: Vec<&[Value]> = all.chunks(100).collect();
    // Two kills while events arrive, the other three while the backlog drains.
    let kill_every = batches.len() / 3;
    let mut kills = 0;
    for (index, batch) in batches.iter().enumerate() {
        if index > 0 && index % kill_every == 0 && kills < 2 {
            // Killed in the middle of delivery, restarted on the same data.
            s.server.kill();
            kills += 1;
            s.server.spawn().await;
        }
        if index == batches.len() / 2 {
            s.emulator.set_faults(Faults {
                error_rates: BTreeMap::from([(500, 0.05)]),
                reset_rate: 0.02,
                storm_seconds: 5,
                ..Faults::default()
            });
        }
        s.send("batch", json!({ "batch": batch })).await;
    }
    let sent = started.elapsed();
    while kills < KILLS {
        tokio::time::sleep(Duration::from_millis(1_500)).await;
        s.server.kill();
        kills += 1;
        s.server.spawn().await;
    }

    // Drain: nothing pending, no timers.
    let deadline = Instant::now() + Duration::from_secs(300);
    let status = loop {
        let status = s.admin("/api/delivery").await;
        if status["actions"]["pending"] == 0 && status["actions"]["standby"] == 0 {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "delivery did not drain: {status}\n{}",
            s.server.log()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let drained = started.elapsed();
    s.emulator.set_faults(Faults::default());

    // Every dead letter (there should be none: the faults are momentary) has its reason.
    let letters = s.admin("/api/dlq?limit=1000").await["items"]
        .as_array()
        .unwrap()
        .clone();
    assert!(
        letters.iter().all(|l| l["error"].is_string()),
        "{letters:#?}"
    );
    assert!(
        letters.is_empty(),
        "momentary faults must not dead-letter anything: {letters:#?}"
    );

    // Effects: one contact per user with the final traits, tagged and flagged; one
    // conversation per user (duplicates counted, within 0.1 %).
    let mut contacts: Vec<Value> = Vec::new();
    let mut starting_after: Option<String> = None;
    loop {
        let mut path = "/contacts?per_page=150".to_owned();
        if let Some(cursor) = &starting_after {
            path.push_str(&format!("&starting_after={cursor}"));
        }
        let page = s.get(&path).await;
        contacts.extend(page["data"].as_array().unwrap().iter().cloned());
        match page["pages"]["next"]["starting_after"].as_str() {
            Some(next) => starting_after = Some(next.to_owned()),
            None => break,
        }
    }
    let mut by_user: HashMap<String, Vec<&Value>> = HashMap::new();
    for contact in &contacts {
        by_user
            .entry(contact["external_id"].as_str().unwrap_or("?").to_owned())
            .or_default()
            .push(contact);
    }
    assert_eq!(
        contacts.len(),
        USERS,
        "zero duplicate contacts ({} contacts for {} users)",
        contacts.len(),
        by_user.len()
    );
    for u in 0..USERS {
        let user = format!("soak-{u:03}");
        let contact = by_user
            .get(&user)
            .unwrap_or_else(|| panic!("{user} has no contact"))[0];
        assert_eq!(
            contact["custom_attributes"]["n"], 37,
            "{user}'s last identify wins: {contact}"
        );
        assert_eq!(
            contact["custom_attributes"]["churn_risk"], true,
            "{user}: {contact}"
        );
        assert_eq!(
            contact["tags"]["data"].as_array().map(Vec::len),
            Some(1),
            "{user}: {contact}"
        );
    }
    let conversations = s.get("/conversations").await["conversations"]
        .as_array()
        .unwrap()
        .clone();
    let mut per_contact: HashMap<String, usize> = HashMap::new();
    for conversation in &conversations {
        *per_contact
            .entry(
                conversation["source"]["author"]["id"]
                    .as_str()
                    .unwrap_or("?")
                    .to_owned(),
            )
            .or_default() += 1;
    }
    let duplicates: usize = per_contact.values().map(|n| n.saturating_sub(1)).sum();
    assert_eq!(per_contact.len(), USERS, "every user's conversation exists");
    assert!(
        duplicates * 1000 <= USERS,
        "{duplicates} duplicated conversations of {USERS}"
    );
    let journal = s.emulator.journal_entries();
    let refused: usize = journal.iter().filter(|e| e.status == 429).count();
    println!(
        "soak: {} events, {KILLS} kills, sent in {sent:.1?}, drained in {drained:.1?}; {} Intercom requests ({} answered 429), {duplicates} duplicate conversations; delivery {status}",
        all.len(),
        journal.len(),
        refused
    );
}
