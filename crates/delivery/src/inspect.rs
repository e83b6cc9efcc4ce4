//! Read views of delivery for people: dead letters and runs as the admin API serves them and
//! the CLI prints them (one shape for both), and the time filters both accept.

use junction_store::{
    ActionRecord, Attempt, DeadLetterQuery, EventQuery, IdentityKey, IdentitySearch, RunQuery,
    Store, StoreError,
};
use serde_json::{Value, json};
use std::collections::BTreeSet;

/// `2026-11-29T10:00:00Z`, or a span back from now: `90s`, `30m`, `2h`, `7d`.
pub fn parse_time(text: &str, now_ms: i64) -> Result<i64, String> {
    if let Ok(at) = chrono::DateTime::parse_from_rfc3339(text.trim()) {
        return Ok(at.timestamp_millis());
    }
    let span: junction_flow::duration::Span = text
        .parse()
        .map_err(|_| format!("{text:?} is neither a date-time (2026-11-29T10:00:00Z) nor a span back from now (30m, 2h, 7d)"))?;
    Ok(now_ms - span.millis())
}

/// A time for tables: RFC 3339 with milliseconds, or `-`.
pub fn time_text(ms: i64) -> String {
    iso(ms).unwrap_or_else(|| "-".to_owned())
}

fn iso(ms: i64) -> Option<String> {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
}

/// One attempt with the calls it made.
fn attempt(a: &Attempt) -> Value {
    json!({
        "number": a.number,
        "at": iso(a.at_ms),
        "ms": a.duration_ms,
        "outcome": a.outcome,
        "error": a.error,
        "calls": a.calls,
    })
}

/// One dead letter, as listed.
pub fn dead_letter(record: &ActionRecord) -> Value {
    json!({
        "id": record.id,
        "workflow": record.body["workflow"],
        "step": record.body["step"],
        "kind": record.body["action"]["kind"],
        "user": record.identity,
        "event": record.seq,
        "code": record.error_code,
        "error": record.result,
        "attempts": record.attempts,
        "failedAt": iso(record.updated_ms),
        "plannedAt": iso(record.created_ms),
    })
}

/// One action with every attempt and the event it came from.
pub async fn action_detail(store: &dyn Store, id: &str) -> Result<Option<Value>, StoreError> {
    let Some(record) = store.action(id).await? else {
        return Ok(None);
    };
    let attempts = store.attempts(id).await?;
    let event = store.event(record.seq).await?;
    Ok(Some(json!({
        "id": record.id,
        "status": record.status,
        "run": record.run,
        "workflow": record.body["workflow"],
        "step": record.body["step"],
        "user": record.identity,
        "code": record.error_code,
        "reason": record.result,
        "action": record.body["action"],
        "onError": record.body["on_error"],
        "plannedAt": iso(record.created_ms),
        "updatedAt": iso(record.updated_ms),
        "attempts": attempts.iter().map(attempt).collect::<Vec<_>>(),
        "event": event.map(|e| json!({"seq": e.seq, "type": e.kind, "messageId": e.message_id, "timestamp": e.timestamp, "body": e.body})),
    })))
}

pub async fn dead_letters(
    store: &dyn Store,
    query: DeadLetterQuery,
) -> Result<Vec<Value>, StoreError> {
    Ok(store
        .dead_letters(query)
        .await?
        .iter()
        .map(dead_letter)
        .collect())
}

/// Runs, newest first.
pub async fn runs(store: &dyn Store, query: RunQuery) -> Result<Vec<Value>, StoreError> {
    Ok(store
        .runs(query)
        .await?
        .into_iter()
        .map(|r| {
            json!({
                "run": r.run,
                "workflow": r.workflow,
                "user": r.identity,
                "event": r.seq,
                "status": r.status,
                "actions": r.actions,
                "plannedAt": iso(r.planned_ms),
                "error": r.error,
            })
        })
        .collect())
}

/// One run: its steps' actions in order, each with its attempts and calls.
pub async fn run_detail(store: &dyn Store, id: &str) -> Result<Option<Value>, StoreError> {
    let Some((run, actions)) = store.run(id).await? else {
        return Ok(None);
    };
    let mut steps = Vec::new();
    for action in &actions {
        let attempts = store.attempts(&action.id).await?;
        steps.push(json!({
            "id": action.id,
            "step": action.body["step"],
            "kind": action.body["action"]["kind"],
            "status": action.status,
            "result": action.result,
            "code": action.error_code,
            "attempts": attempts.iter().map(attempt).collect::<Vec<_>>(),
        }));
    }
    Ok(Some(json!({
        "run": run.run,
        "workflow": run.workflow,
        "user": run.identity,
        "event": run.seq,
        "status": run.status,
        "plannedAt": iso(run.planned_ms),
        "error": run.error,
        "paused": run.paused,
        "steps": steps,
    })))
}

/// The cluster as `/api/cluster` serves it and `junction cluster` prints it: each node seen
/// (alive or silent, the partitions it plans, the users it delivers to), each lease, and each
/// planning partition with its planner and how far it trails the log.
pub async fn cluster(store: &dyn Store, now_ms: i64) -> Result<Value, StoreError> {
    let view = store.cluster().await?;
    let partitions = store.partition_states().await?;
    let nodes: Vec<Value> = view
        .nodes
        .iter()
        .map(|node| {
            let claims = view.claims.iter().filter(|c| c.node == node.name).count();
            let leases: Vec<&str> = view
                .leases
                .iter()
                .filter(|l| l.node == node.name && l.expires_ms > now_ms)
                .map(|l| l.name.as_str())
                .collect();
            let planning: Vec<u32> = leases
                .iter()
                .filter_map(|l| l.strip_prefix("planner/")?.parse().ok())
                .collect();
            json!({
                "name": node.name,
                "alive": node.expires_ms > now_ms,
                "startedAt": iso(node.started_ms),
                "seenAt": iso(node.seen_ms),
                "leases": leases,
                "plans": planning,
                "claimedUsers": claims,
            })
        })
        .collect();
    let leases: Vec<Value> = view
        .leases
        .iter()
        .map(|l| {
            json!({
                "name": l.name,
                "node": l.node,
                "token": l.token,
                "expiresAt": iso(l.expires_ms),
                "live": l.expires_ms > now_ms,
            })
        })
        .collect();
    let planner_of = |partition: u32| {
        let name = crate::engine::partition_lease(partition);
        (view.leases.iter())
            .find(|l| l.name == name && l.expires_ms > now_ms)
            .map(|l| l.node.clone())
    };
    let planning: Vec<Value> = partitions
        .iter()
        .map(|p| {
            json!({
                "partition": p.partition,
                "node": planner_of(p.partition),
                "cursor": p.cursor,
                "lagEvents": p.behind,
            })
        })
        .collect();
    Ok(json!({
        "nodes": nodes,
        "leases": leases,
        "claims": view.claims.len(),
        "partitions": planning,
        "lagEvents": partitions.iter().map(|p| p.behind).sum::<i64>(),
    }))
}

/// Everything known of the person `q` names (any id: userId, anonymousId, email, Intercom
/// contact id): their identity map entries, profiles, the `runs` newest runs with each action's
/// attempts and calls and the event that caused it, and the `events` newest events per id.
/// The console's People page and `junction audit` show it.
pub async fn person(
    store: &dyn Store,
    q: &str,
    runs_shown: usize,
    events_shown: usize,
) -> Result<serde_json::Map<String, Value>, StoreError> {
    // Their identity map entries, whichever id `q` is.
    let mut entries = Vec::new();
    for search in [
        IdentitySearch::Key(IdentityKey::UserId(q.to_owned())),
        IdentitySearch::Key(IdentityKey::AnonymousId(q.to_owned())),
        IdentitySearch::Key(IdentityKey::Email(q.to_owned())),
        IdentitySearch::Contact(q.to_owned()),
    ] {
        for entry in store.identity_entries(&search).await? {
            if !entries.contains(&entry) {
                entries.push(entry);
            }
        }
    }
    entries.retain(|e| e.kind != "company_attachment");
    // The Segment ids their events and runs are filed under: those entries', and `q` itself.
    let mut ids: BTreeSet<String> = entries
        .iter()
        .filter(|e| e.kind == "user_id" || e.kind == "anonymous_id")
        .map(|e| e.value.clone())
        .collect();
    ids.insert(q.to_owned());

    let mut events = Vec::new();
    for id in &ids {
        for query in [
            EventQuery {
                user_id: Some(id.clone()),
                limit: Some(events_shown),
                ..EventQuery::default()
            },
            EventQuery {
                anonymous_id: Some(id.clone()),
                limit: Some(events_shown),
                ..EventQuery::default()
            },
        ] {
            events.extend(store.events(query).await?.items);
        }
    }
    events.sort_by_key(|e| std::cmp::Reverse(e.seq));
    events.dedup_by_key(|e| e.seq);

    let mut listed = Vec::new();
    for id in &ids {
        let query = RunQuery {
            identity: Some(id.clone()),
            limit: runs_shown,
            ..RunQuery::default()
        };
        listed.extend(runs(store, query).await?);
    }
    // Newest first: by the event that caused them, then by when they were planned.
    listed.sort_by(|a, b| {
        (b["event"].as_i64(), b["plannedAt"].as_str())
            .cmp(&(a["event"].as_i64(), a["plannedAt"].as_str()))
    });
    listed.truncate(runs_shown);
    let mut detailed = Vec::new();
    for run in &listed {
        let Some(id) = run["run"].as_str() else {
            continue;
        };
        let Some(mut detail) = run_detail(store, id).await? else {
            continue;
        };
        if let Some(seq) = detail["event"].as_i64()
            && let Some(event) = store.event(seq).await?
        {
            detail["cause"] = json!({
                "type": event.kind,
                "event": event.event,
                "timestamp": event.timestamp,
            });
        }
        detailed.push(detail);
    }

    let now = chrono::Utc::now().timestamp_millis();
    let stored = store.profiles(ids.iter().cloned().collect()).await?;
    let mut profiles = Vec::new();
    for (identity, body) in stored {
        // An unreadable profile is shown as such (the quarantine page says more).
        let view = match junction_flow::stored::decode::<junction_flow::Profile>(&body) {
            Ok(profile) => {
                let mut view = profile.view(now);
                view["traits"] = Value::Object(profile.traits.clone());
                view["timers"] = serde_json::to_value(&profile.timers).unwrap_or_default();
                view
            }
            Err(error) => json!({"traits": {"(unreadable)": error.to_string()}}),
        };
        let mut view = view;
        view["identity"] = json!(identity);
        profiles.push(view);
    }

    let found = !entries.is_empty() || !events.is_empty() || !detailed.is_empty();
    let mut context = serde_json::Map::new();
    context.insert("found".into(), json!(found));
    context.insert("entries".into(), json!(entries));
    context.insert("profiles".into(), json!(profiles));
    context.insert("runs".into(), json!(detailed));
    context.insert("events".into(), json!(events));
    Ok(context)
}
