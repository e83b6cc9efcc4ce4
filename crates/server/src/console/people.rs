//! The People page: one person found by any id Junction knows them by (userId, anonymousId,
//! email, Intercom contact id), with everything Junction knows and did for them — their ids
//! and Intercom contact, their profile (traits, scores, counts, milestones, what they wait
//! for), each workflow run with the event that caused it and what each action did, and the
//! events that came in. It answers "why did this customer get that message?" on one page.

use super::{error_page, render, signed_in, to_sign_in};
use crate::AppState;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use junction_delivery::inspect;
use junction_store::{EventQuery, IdentityKey, IdentitySearch, RunQuery, Store, StoreError};
use serde_json::{Value, json};
use std::collections::{BTreeSet, HashMap};

/// Runs shown with their actions, newest first.
const RUNS_SHOWN: usize = 25;
/// Events shown per id.
const EVENTS_SHOWN: usize = 50;

pub async fn page(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let Some(session) = signed_in(&state, &headers) else {
        return to_sign_in();
    };
    let q = query
        .get("q")
        .map(|q| q.trim().to_owned())
        .filter(|q| !q.is_empty());
    let mut context = json!({"signed_in": true, "csrf": session.csrf, "page": "people", "q": q});
    if let Some(q) = &q {
        match person(state.store().as_ref(), q).await {
            Ok(found) => {
                for (key, value) in found {
                    context[key] = value;
                }
            }
            Err(error) => {
                tracing::error!(%error, "console People page: the store failed");
                return error_page(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "The store did not answer",
                    &format!("Junction could not read its store: {error}"),
                    Some(&session.csrf),
                );
            }
        }
    }
    render("people.html", context)
}

/// Everything known of the person `q` names.
async fn person(store: &dyn Store, q: &str) -> Result<serde_json::Map<String, Value>, StoreError> {
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
                limit: Some(EVENTS_SHOWN),
                ..EventQuery::default()
            },
            EventQuery {
                anonymous_id: Some(id.clone()),
                limit: Some(EVENTS_SHOWN),
                ..EventQuery::default()
            },
        ] {
            events.extend(store.events(query).await?.items);
        }
    }
    events.sort_by_key(|e| std::cmp::Reverse(e.seq));
    events.dedup_by_key(|e| e.seq);

    let mut runs = Vec::new();
    for id in &ids {
        let query = RunQuery {
            identity: Some(id.clone()),
            limit: RUNS_SHOWN,
            ..RunQuery::default()
        };
        runs.extend(inspect::runs(store, query).await?);
    }
    // Newest first: by the event that caused them, then by when they were planned.
    runs.sort_by(|a, b| {
        (b["event"].as_i64(), b["plannedAt"].as_str())
            .cmp(&(a["event"].as_i64(), a["plannedAt"].as_str()))
    });
    runs.truncate(RUNS_SHOWN);
    let mut detailed = Vec::new();
    for run in &runs {
        let Some(id) = run["run"].as_str() else {
            continue;
        };
        let Some(mut detail) = inspect::run_detail(store, id).await? else {
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
