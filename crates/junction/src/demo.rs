//! `junction demo`: Junction end to end on one machine in a few seconds. It starts the Intercom
//! emulator and Junction (embedded SQLite store, every template loaded), sends a realistic day
//! of Segment events through Junction's own HTTP API, waits until everything planned has been
//! delivered, and prints what happened in Intercom — and what the journey rules kept back: a
//! message over the daily cap, and one held for a contact for whom it is the middle of the night.

use crate::Failure;
use crate::config::{Config, StoreUrl, WorkflowEntry};
use junction_emulator::{Emulator, EmulatorConfig};
use serde_json::{Map, Value, json};
use std::path::PathBuf;
use std::time::{Duration, Instant};

const TOKEN: &str = "demo-token";
const WRITE_KEY: &str = "demo-write-key";

pub async fn run(data: Option<PathBuf>, keep_running: bool) -> Result<(), Failure> {
    demo(data, keep_running).await.map_err(Failure::Runtime)
}

fn workflows() -> Vec<WorkflowEntry> {
    let entry = |name: &str, vars: Value| WorkflowEntry {
        template: Some(name.into()),
        file: None,
        vars: vars.as_object().cloned().unwrap_or_default(),
        unmatched: None,
        mode: None,
    };
    vec![
        entry("profile-sync", json!({})),
        entry("track-events", json!({})),
        entry("company-sync", json!({"account_manager": "991267004"})),
        entry("event-message", json!({})),
        entry("lead-score", json!({})),
        entry("churn-risk", json!({})),
        entry("onboarding", json!({})),
        entry("inactivity", json!({"delay": "3s"})),
        entry("intercom-lead-to-segment", json!({})),
    ]
}

/// The journey rules the demo runs with: two messages per contact per day, none between 22:00
/// and 07:00 in the contact's time. Contacts without a time zone are placed where it is the
/// afternoon, so that whenever the demo runs only Eve's message waits.
fn journeys() -> junction_flow::journey::JourneyRules {
    let afternoon = zone_at_hour(chrono::Utc::now(), 14);
    junction_flow::journey::JourneyRules {
        timezone: Some(afternoon.parse().expect("an Etc/GMT zone")),
        cap: Some("2 per 1d".parse().expect("a cap")),
        quiet_hours: Some(junction_flow::journey::QuietHours {
            from: chrono::NaiveTime::from_hms_opt(22, 0, 0).expect("a time"),
            to: chrono::NaiveTime::from_hms_opt(7, 0, 0).expect("a time"),
        }),
    }
}

/// A time zone where the hour is `hour` now (an `Etc/GMT` zone: their signs are inverted, and
/// they run from UTC−12 to UTC+14).
fn zone_at_hour(now: chrono::DateTime<chrono::Utc>, hour: i32) -> String {
    use chrono::Timelike;
    let mut offset = (hour - now.hour() as i32).rem_euclid(24);
    if offset > 14 {
        offset -= 24;
    }
    match offset {
        0 => "Etc/GMT".into(),
        east if east > 0 => format!("Etc/GMT-{east}"),
        west => format!("Etc/GMT+{}", -west),
    }
}

/// A morning of product usage, in order.
fn stream() -> Vec<(&'static str, Value)> {
    vec![
        // An anonymous visitor browses, then signs up and identifies.
        (
            "page",
            json!({"anonymousId": "anon-7f3", "name": "Pricing", "properties": {"path": "/pricing"}}),
        ),
        (
            "page",
            json!({"anonymousId": "anon-7f3", "name": "Integrations"}),
        ),
        (
            "identify",
            json!({"userId": "ann", "anonymousId": "anon-7f3", "traits": {"email": "ann@acme.test", "name": "Ann Archer", "plan": "trial", "industry": "retail", "mrr": 0, "createdAt": "2026-11-29T08:00:00Z"}}),
        ),
        (
            "group",
            json!({"userId": "ann", "groupId": "acme", "traits": {"name": "Acme Corp", "employees": 120, "plan": "growth", "monthly_spend": 2400, "industry": "retail", "website": "https://acme.test", "health_score": 82}}),
        ),
        (
            "track",
            json!({"userId": "ann", "event": "Signed Up", "properties": {"source": "pricing"}}),
        ),
        (
            "track",
            json!({"userId": "ann", "event": "Profile Completed"}),
        ),
        ("track", json!({"userId": "ann", "event": "Pricing Viewed"})),
        (
            "track",
            json!({"userId": "ann", "event": "Demo Requested", "properties": {"team_size": 12}}),
        ),
        (
            "track",
            json!({"userId": "ann", "event": "Feature Used", "properties": {"feature": "Reports"}}),
        ),
        (
            "track",
            json!({"userId": "ann", "event": "Teammate Invited", "properties": {"invitee": "bo@acme.test"}}),
        ),
        // Ann's third message today: over the workspace's daily cap of two.
        (
            "track",
            json!({"userId": "ann", "event": "Integration Connected", "properties": {"integration": "Slack"}}),
        ),
        // A user for whom it is the middle of the night: her message waits for the morning.
        (
            "identify",
            json!({"userId": "eve", "traits": {"email": "eve@umbrella.test", "name": "Eve Ito", "timezone": zone_at_hour(chrono::Utc::now(), 2)}}),
        ),
        (
            "track",
            json!({"userId": "eve", "event": "Feature Abandoned", "properties": {"feature": "Dashboards"}}),
        ),
        // A second user who signs up and never comes back (the inactivity nudge fires).
        (
            "identify",
            json!({"userId": "cy", "traits": {"email": "cy@globex.test", "name": "Cy Chen", "plan": "trial"}}),
        ),
        ("track", json!({"userId": "cy", "event": "Signed Up"})),
        (
            "track",
            json!({"userId": "cy", "event": "Feature Abandoned", "properties": {"feature": "CSV import"}}),
        ),
        // A paying customer whose card fails, at a company whose health drops.
        (
            "identify",
            json!({"userId": "dee", "traits": {"email": "dee@initech.test", "name": "Dee Diaz", "plan": "pro", "mrr": 499}}),
        ),
        (
            "group",
            json!({"userId": "dee", "groupId": "initech", "traits": {"name": "Initech", "employees": 40, "plan": "pro", "health_score": 71}}),
        ),
        (
            "track",
            json!({"userId": "dee", "event": "Order Completed", "properties": {"order_id": "o-1001", "revenue": 499.0, "currency": "USD"}}),
        ),
        (
            "track",
            json!({"userId": "dee", "event": "Payment Failed", "properties": {"amount": 499, "reason": "card_declined"}}),
        ),
        (
            "group",
            json!({"userId": "dee", "groupId": "initech", "traits": {"health_score": 38}}),
        ),
        (
            "track",
            json!({"userId": "dee", "event": "Trial Expiring Soon", "properties": {"ends_on": "Friday"}}),
        ),
    ]
}

async fn demo(data: Option<PathBuf>, keep_running: bool) -> anyhow::Result<()> {
    let emulator = Emulator::new(EmulatorConfig {
        token: Some(TOKEN.into()),
        rate_limit: 1_666,
        search_lag: Duration::from_millis(200),
    });
    let emulator_addr = emulator
        .clone()
        .spawn(tokio::net::TcpListener::bind("127.0.0.1:0").await?)
        .await?;
    let scratch = tempfile::tempdir()?;
    let data = data.unwrap_or_else(|| scratch.path().to_path_buf());
    let mut config = Config {
        store: StoreUrl(format!("sqlite://{}", data.join("junction.db").display())),
        workflows: Some(workflows()),
        journey_rules: journeys(),
        ..Config::default()
    };
    config.segment.write_keys = vec![crate::config::WriteKeyEntry::Key(WRITE_KEY.into())];
    config.segment.shared_secret = Some(format!("demo-{}", std::process::id()));
    config.intercom.base_url = Some(format!("http://{emulator_addr}"));
    config.intercom.token = Some(TOKEN.into());
    let store_url = config.store.0.clone();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let junction = listener.local_addr()?;
    // The other direction: the emulator signs webhooks to Junction, which sends Segment calls
    // to a Segment-compatible endpoint — itself, here (what it sends is marked and triggers
    // nothing when it comes back).
    let client_secret = format!("demo-secret-{}", std::process::id());
    config.intercom.client_secret = Some(client_secret.clone());
    config.segment.outbound = Some(crate::config::SegmentOutbound {
        write_key: WRITE_KEY.into(),
        host: format!("http://{junction}"),
    });
    emulator.set_webhook(Some(junction_emulator::webhooks::Webhook {
        url: format!("http://{junction}/hooks/intercom"),
        secret: client_secret,
    }));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(crate::serve::run_on(
        config,
        listener,
        async {
            let _ = stopped.await;
        },
        None,
    ));
    println!("Junction demo");
    println!("  Intercom emulator  http://{emulator_addr}  (token {TOKEN})");
    println!("  Junction           http://{junction}  (write key {WRITE_KEY}, store {store_url})");
    println!(
        "  workflows          {}",
        workflows()
            .iter()
            .filter_map(|w| w.template.clone())
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!();

    let http = reqwest::Client::new();
    let started = Instant::now();
    let events = stream();
    for (call, body) in &events {
        let response = http
            .post(format!("http://{junction}/v1/{call}"))
            .basic_auth(WRITE_KEY, Some(""))
            .json(body)
            .send()
            .await?;
        anyhow::ensure!(
            response.status().is_success(),
            "Junction refused a demo event: {}",
            response.text().await?
        );
    }
    // Meanwhile in Intercom: a visitor opens the Messenger, leaves an email and writes.
    let intercom = format!("http://{emulator_addr}");
    let lead: Value = http
        .post(format!("{intercom}/contacts"))
        .bearer_auth(TOKEN)
        .json(&json!({"role": "lead", "email": "visitor@initech.test", "name": "Val Visitor"}))
        .send()
        .await?
        .json()
        .await?;
    http.post(format!("{intercom}/conversations"))
        .bearer_auth(TOKEN)
        .json(&json!({"from": {"type": "lead", "id": lead["id"]}, "body": "Hi! Does the Growth plan include SSO?"}))
        .send()
        .await?;
    println!(
        "sent {} Segment events in {:.0?}, and a visitor started a conversation in Intercom; waiting for delivery (and the 3-second inactivity timer)…",
        events.len(),
        started.elapsed()
    );

    let store = junction_store::open(&store_url, Default::default()).await?;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let counts = store.outbox_counts().await?;
        // Done when nothing waits but Eve's held message, Ann's capped one is kept, and the
        // inactivity nudge (a 3-second wait-until) has gone out.
        let nudged = emulator
            .journal_entries()
            .iter()
            .any(|e| e.path == "/messages" && e.body.to_string().contains("two-minute tour"));
        if counts.pending == 0 && counts.timers_pending == 1 && counts.capped == 1 && nudged {
            println!(
                "all {} planned actions delivered in {:.1?} ({} failed)\n",
                counts.done + counts.failed,
                started.elapsed(),
                counts.failed
            );
            break;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "delivery did not finish within a minute: {counts:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    print_intercom(&http, &format!("http://{emulator_addr}"), &emulator).await?;
    print_kept_back(store.as_ref()).await?;
    print_segment(store.as_ref()).await?;

    if keep_running {
        println!(
            "\nstill running; Ctrl-C to stop. Try: junction events list --config … or curl the emulator."
        );
        crate::serve::shutdown_signal().await;
    }
    let _ = stop.send(());
    server.await??;
    Ok(())
}

async fn print_intercom(
    http: &reqwest::Client,
    base: &str,
    emulator: &Emulator,
) -> anyhow::Result<()> {
    let get = |path: String| {
        let request = http.get(format!("{base}{path}")).bearer_auth(TOKEN);
        async move { request.send().await?.json::<Value>().await }
    };
    let contacts = get("/contacts?per_page=150".into()).await?;
    let tag_names: std::collections::HashMap<String, String> = get("/tags".into()).await?["data"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|t| Some((t["id"].as_str()?.to_owned(), t["name"].as_str()?.to_owned())))
        .collect();
    println!("Intercom contacts");
    for contact in contacts["data"].as_array().into_iter().flatten() {
        let tags: Vec<&str> = contact["tags"]["data"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|t| tag_names.get(t["id"].as_str()?).map(String::as_str))
            .collect();
        let custom = contact["custom_attributes"]
            .as_object()
            .cloned()
            .unwrap_or_default();
        println!(
            "  {:<5} {:<6} {:<22} owner {:<10} tags {:?}\n        {}",
            contact["role"].as_str().unwrap_or(""),
            // A lead's external_id is Intercom's own UUID, not a Segment id.
            match contact["role"].as_str() {
                Some("user") => contact["external_id"].as_str().unwrap_or("-"),
                _ => "-",
            },
            contact["email"].as_str().unwrap_or("-"),
            contact["owner_id"]
                .as_i64()
                .map_or("-".into(), |o| o.to_string()),
            tags,
            compact(&custom)
        );
    }
    let companies = get("/companies".into()).await?;
    println!("Intercom companies");
    for company in companies["data"].as_array().into_iter().flatten() {
        println!(
            "  {:<8} {:<10} size {:<4} spend {:<6} {}",
            company["company_id"].as_str().unwrap_or(""),
            company["name"].as_str().unwrap_or(""),
            company["size"]
                .as_i64()
                .map_or("-".into(), |n| n.to_string()),
            company["monthly_spend"]
                .as_f64()
                .map_or("-".into(), |n| n.to_string()),
            compact(
                &company["custom_attributes"]
                    .as_object()
                    .cloned()
                    .unwrap_or_default()
            )
        );
    }
    let journal = emulator.journal_entries();
    let ok = |method: &str, path: &dyn Fn(&str) -> bool| {
        journal
            .iter()
            .filter(move |e| (200..300).contains(&e.status) && e.method == method && path(&e.path))
            .collect::<Vec<_>>()
    };
    println!("Messages");
    for message in ok("POST", &|p| p == "/messages") {
        println!(
            "  {:<6} to {}: {}",
            message.body["message_type"].as_str().unwrap_or(""),
            message.body["to"]["id"].as_str().unwrap_or(""),
            clip(message.body["body"].as_str().unwrap_or(""))
        );
    }
    println!("Conversations");
    for conversation in ok("POST", &|p| p == "/conversations") {
        println!(
            "  from {}: {}",
            conversation.body["from"]["id"].as_str().unwrap_or(""),
            clip(conversation.body["body"].as_str().unwrap_or(""))
        );
    }
    for part in ok("POST", &|p| p.ends_with("/parts")) {
        println!(
            "    assigned to admin {}",
            part.body["assignee_id"].as_str().unwrap_or("")
        );
    }
    println!("Notes");
    for note in ok("POST", &|p| p.ends_with("/notes")) {
        println!(
            "  by admin {}: {}",
            note.body["admin_id"].as_str().unwrap_or(""),
            clip(note.body["body"].as_str().unwrap_or(""))
        );
    }
    let events = ok("POST", &|p| p == "/events");
    println!(
        "Data events: {}",
        events
            .iter()
            .filter_map(|e| e.body["event_name"].as_str())
            .collect::<Vec<_>>()
            .join(", ")
    );
    let calls = journal.len();
    let refused = journal.iter().filter(|e| e.status == 429).count();
    println!("\n{calls} requests to Intercom, {refused} refused for rate limiting.");
    Ok(())
}

/// What the journey rules kept back: capped messages and runs waiting (quiet hours).
async fn print_kept_back(store: &dyn junction_store::Store) -> anyhow::Result<()> {
    println!(
        "\nKept back by the journey rules (2 messages per contact per day; quiet 22:00–07:00 their time)"
    );
    let capped = store
        .dead_letters(junction_store::DeadLetterQuery {
            capped: true,
            limit: 10,
            ..Default::default()
        })
        .await?;
    for message in &capped {
        println!(
            "  capped  {:<5} {:<14} {}  (send it anyway: junction dlq release {})",
            message.identity,
            message.body["workflow"].as_str().unwrap_or(""),
            message.result.as_deref().unwrap_or(""),
            message.id
        );
    }
    let waiting = store
        .runs(junction_store::RunQuery {
            status: Some("paused".into()),
            limit: 10,
            ..Default::default()
        })
        .await?;
    for run in &waiting {
        println!(
            "  held    {:<5} {:<14} a message waits for the end of the contact's quiet hours",
            run.identity, run.workflow
        );
    }
    Ok(())
}

/// What Junction sent to Segment (it came back to Junction's own ingest in the demo).
async fn print_segment(store: &dyn junction_store::Store) -> anyhow::Result<()> {
    let page = store
        .events(junction_store::EventQuery {
            limit: Some(1000),
            ..Default::default()
        })
        .await?;
    let sent: Vec<_> = page
        .items
        .iter()
        .rev()
        .filter(|e| junction_flow::plan::produced_by_junction(&e.body))
        .collect();
    println!(
        "\nSegment calls from Intercom (intercom-lead-to-segment; they came back marked and triggered nothing)"
    );
    for event in sent {
        let what = match event.kind.as_str() {
            "track" => format!("track {:?}", event.event.as_deref().unwrap_or("")),
            other => other.to_owned(),
        };
        let traits = event.body["traits"]
            .as_object()
            .or(event.body["properties"].as_object())
            .cloned()
            .unwrap_or_default();
        println!("  {what:<38} {}  {}", event.identity, compact(&traits));
    }
    Ok(())
}

fn compact(map: &Map<String, Value>) -> String {
    map.iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(" ")
}

fn clip(text: &str) -> String {
    let plain: String = text
        .replace("<p>", "")
        .replace("</p>", " ")
        .replace("<ul>", "")
        .replace("</ul>", "")
        .replace("<li>", "")
        .replace("</li>", "; ");
    let plain = plain.split_whitespace().collect::<Vec<_>>().join(" ");
    if plain.chars().count() > 110 {
        format!("{}…", plain.chars().take(110).collect::<String>())
    } else {
        plain
    }
}
