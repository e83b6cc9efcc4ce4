//! Planning throughput (no I/O): events per second through the shipped templates, on one core.
//! Issue 4's target: ≥ 100,000 events/s for profile-sync.
//!
//! `cargo bench -p junction-flow --bench planning`

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use junction_flow::{EventInput, Globals, Planner, Profile, templates};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::hint::black_box;

fn planner(names: &[&str]) -> Planner {
    let workflows = names
        .iter()
        .map(|n| {
            junction_flow::load(templates::find(n).unwrap().source, &Default::default()).unwrap()
        })
        .collect();
    Planner::new(workflows).unwrap()
}

/// Realistic identify and track bodies for 1,000 users, as the store hands them to the engine.
fn events(kind: &str) -> Vec<(String, Value)> {
    (0..1_000)
        .map(|n| {
            let user = format!("user-{n}");
            let body = match kind {
                "identify" => json!({
                    "type": "identify", "userId": user, "messageId": format!("m-{n}"),
                    "timestamp": "2026-11-29T10:00:00.000Z",
                    "context": {"library": {"name": "analytics-node", "version": "3.1.0"}, "ip": "203.0.113.7"},
                    "traits": {"email": format!("{user}@example.com"), "name": "Ann Archer", "plan": "pro",
                               "industry": "retail", "mrr": 99.5, "seats": 12, "createdAt": "2026-01-02T03:04:05Z"}
                }),
                _ => json!({
                    "type": "track", "userId": user, "messageId": format!("m-{n}"),
                    "timestamp": "2026-11-29T10:00:00.000Z", "event": "Pricing Viewed",
                    "properties": {"plan": "pro", "revenue": 19.99, "currency": "EUR", "path": "/pricing"}
                }),
            };
            (user, body)
        })
        .collect()
}

fn bench(c: &mut Criterion, name: &str, workflows: &[&str], kind: &str) {
    let planner = planner(workflows);
    let events = events(kind);
    let mut profiles: HashMap<String, Profile> = HashMap::new();
    let mut globals = Globals::default();
    let mut next = 0;
    let mut group = c.benchmark_group("planning");
    group.throughput(Throughput::Elements(1));
    group.bench_function(name, |b| {
        b.iter(|| {
            let (user, body) = &events[next % events.len()];
            next += 1;
            let profile = profiles.entry(user.clone()).or_default();
            let plan = planner.plan_event(
                EventInput {
                    message_id: "m",
                    kind,
                    identity: user,
                    body,
                    timestamp_ms: 1_795_946_400_000,
                    segment_profile: None,
                },
                profile,
                &mut globals,
            );
            black_box(plan)
        })
    });
    group.finish();
}

fn planning(c: &mut Criterion) {
    bench(c, "profile-sync identify", &["profile-sync"], "identify");
    bench(c, "track-events track", &["track-events"], "track");
    bench(c, "lead-score track", &["lead-score"], "track");
    bench(
        c,
        "all 8 templates, identify",
        &templates::TEMPLATES
            .iter()
            .map(|t| t.name)
            .collect::<Vec<_>>(),
        "identify",
    );
    bench(
        c,
        "all 8 templates, track",
        &templates::TEMPLATES
            .iter()
            .map(|t| t.name)
            .collect::<Vec<_>>(),
        "track",
    );
}

criterion_group!(benches, planning);
criterion_main!(benches);
