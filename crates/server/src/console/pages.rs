//! The console's pages, one handler each. Filters come from the query string (empty fields
//! mean no filter); lists are pages of the store's own cursors.

use super::{
    csrf_refused, error_page, field, form_fields, render, render_text, signed_in, to_sign_in,
};
use crate::AppState;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use bytes::Bytes;
use junction_delivery::inspect;
use junction_store::{DeadLetterQuery, EventQuery, RunQuery, StoreError};
use serde_json::{Value, json};
use std::collections::HashMap;

/// Rows on a list page.
const PAGE_ROWS: usize = 100;
/// How often the live tail looks for events committed by other nodes (this node's own commits
/// wake it at once).
const LIVE_POLL: std::time::Duration = std::time::Duration::from_secs(1);

type Filter = Query<HashMap<String, String>>;

/// A filter's value, `None` when absent or blank.
fn given(filter: &HashMap<String, String>, name: &str) -> Option<String> {
    filter
        .get(name)
        .map(|v| v.trim())
        .filter(|v| !v.is_empty())
        .map(str::to_owned)
}

/// The events page's filters, as they name the log's fields.
const EVENT_FILTERS: [&str; 4] = ["type", "userId", "anonymousId", "messageId"];

/// The log query a page of events (or the live tail) reads.
fn event_query(filter: &HashMap<String, String>, cursor: Option<String>) -> EventQuery {
    EventQuery {
        kind: given(filter, "type"),
        user_id: given(filter, "userId"),
        anonymous_id: given(filter, "anonymousId"),
        message_id: given(filter, "messageId"),
        cursor,
        limit: Some(PAGE_ROWS),
    }
}

/// `path` with the same event filters and one more parameter (a cursor, where the tail starts).
fn events_link(
    path: &str,
    filter: &HashMap<String, String>,
    (name, value): (&str, &str),
) -> String {
    let mut link = form_urlencoded::Serializer::new(String::new());
    for filter_name in EVENT_FILTERS {
        if let Some(filter_value) = given(filter, filter_name) {
            link.append_pair(filter_name, &filter_value);
        }
    }
    link.append_pair(name, value);
    format!("{path}?{}", link.finish())
}

fn store_failed(error: StoreError, csrf: &str) -> Response {
    tracing::error!(%error, "console page: the store failed");
    error_page(
        StatusCode::SERVICE_UNAVAILABLE,
        "The store did not answer",
        &format!("Junction could not read its store: {error}"),
        Some(csrf),
    )
}

fn not_found(what: &str, csrf: &str) -> Response {
    error_page(StatusCode::NOT_FOUND, "Not found", what, Some(csrf))
}

fn seconds(ms: Option<i64>) -> Value {
    match ms {
        Some(ms) if ms >= 120_000 => json!(format!("{} min", ms / 60_000)),
        Some(ms) => json!(format!("{} s", ms / 1000)),
        None => Value::Null,
    }
}

pub async fn overview(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let Some(session) = signed_in(&state, &headers) else {
        return to_sign_in();
    };
    let store = state.store().as_ref();
    let now = chrono::Utc::now().timestamp_millis();
    let read = async {
        let figures = figures(&state, now).await?;
        let cluster = inspect::cluster(store, now).await?;
        let latest = store
            .events(EventQuery {
                limit: Some(10),
                ..EventQuery::default()
            })
            .await?;
        Ok::<_, StoreError>((figures, cluster, latest))
    };
    let (figures, cluster, latest) = match read.await {
        Ok(read) => read,
        Err(error) => return store_failed(error, &session.csrf),
    };
    let mut context = json!({
        "signed_in": true, "csrf": session.csrf, "page": "overview",
        "cluster": cluster,
        "events": latest.items,
    });
    for (key, value) in figures {
        context[key] = value;
    }
    render("overview.html", context)
}

/// `GET /console/overview/figures`: the overview's figures and charts alone (htmx refreshes
/// them every few seconds).
pub async fn overview_figures(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let Some(session) = signed_in(&state, &headers) else {
        return StatusCode::UNAUTHORIZED.into_response();
    };
    let now = chrono::Utc::now().timestamp_millis();
    match figures(&state, now).await {
        Ok(figures) => render("overview_figures.html", Value::Object(figures)),
        Err(error) => store_failed(error, &session.csrf),
    }
}

/// The backlog now, planning's lag, and the last hour's charts.
async fn figures(state: &AppState, now: i64) -> Result<serde_json::Map<String, Value>, StoreError> {
    let store = state.store().as_ref();
    let backlog = store.backlog().await?;
    state.inner.activity.record_backlog(now, &backlog);
    let lag: i64 = store
        .partition_states()
        .await?
        .iter()
        .map(|p| p.behind)
        .sum();
    let hour = state.inner.activity.last_hour(now);
    // The hour's 60 minutes, now at the right edge (minutes before this node started: none).
    let series = |pick: fn(&super::activity::Minute) -> Option<f64>| -> Vec<Option<f64>> {
        let unknown = super::activity::MINUTES.saturating_sub(hour.len());
        std::iter::repeat_n(None, unknown)
            .chain(hour.iter().map(pick))
            .collect()
    };
    let mut figures = serde_json::Map::new();
    figures.insert(
        "delivery".into(),
        json!({
            "pending": backlog.pending,
            "failed": backlog.failed,
            "timers": backlog.timers_pending,
            "oldest_urgent": seconds(backlog.oldest_pending_ms[0]),
            "oldest_bulk": seconds(backlog.oldest_pending_ms[1]),
        }),
    );
    figures.insert("planning_lag".into(), json!(lag));
    figures.insert(
        "alerts".into(),
        json!(
            state
                .inner
                .alerts
                .as_ref()
                .map(|a| a.recent())
                .unwrap_or_default()
        ),
    );
    figures.insert(
        "charts".into(),
        json!({
            "events": super::activity::sparkline("Events in per minute", &series(|m| Some(m.events as f64))),
            "pending": super::activity::sparkline("Pending actions", &series(|m| m.pending.map(|v| v as f64))),
            "failed": super::activity::sparkline("Dead letters", &series(|m| m.failed.map(|v| v as f64))),
            "oldest": super::activity::sparkline("Oldest bulk action in seconds", &series(|m| m.oldest_bulk_s.map(|v| v as f64))),
            "intercom": super::activity::sparkline("Intercom requests budgeted per minute", &series(|m| m.intercom.map(|v| v as f64))),
            "rate_limited": super::activity::sparkline("Intercom 429s per minute", &series(|m| Some(m.rate_limited as f64))),
        }),
    );
    Ok(figures)
}

pub async fn events(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(filter): Filter,
) -> Response {
    let Some(session) = signed_in(&state, &headers) else {
        return to_sign_in();
    };
    let query = event_query(&filter, given(&filter, "cursor"));
    let page = match state.store().events(query).await {
        Ok(page) => page,
        Err(StoreError::InvalidQuery(reason)) => {
            return error_page(
                StatusCode::BAD_REQUEST,
                "Bad filter",
                &reason,
                Some(&session.csrf),
            );
        }
        Err(error) => return store_failed(error, &session.csrf),
    };
    let next = page
        .next_cursor
        .as_ref()
        .map(|cursor| events_link("/console/events", &filter, ("cursor", cursor)));
    // The first page follows the log live (new rows on top); older pages stay still.
    let live = given(&filter, "cursor").is_none().then(|| {
        let newest = page.items.first().map_or(0, |e| e.seq).to_string();
        events_link("/console/events/live", &filter, ("after", &newest))
    });
    let kinds: Vec<&str> = junction_model::MessageType::ALL
        .iter()
        .map(|kind| kind.as_str())
        .chain(["intercom"])
        .collect();
    render(
        "events.html",
        json!({
            "signed_in": true, "csrf": session.csrf, "page": "events",
            "events": page.items, "next": next, "filter": filter, "kinds": kinds, "live": live,
        }),
    )
}

/// `GET /console/events/live?after=SEQ&…filters`: server-sent events, each a batch of new rows
/// (newest first) for the events page's table. Ends when the server starts shutting down.
pub async fn events_live(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(filter): Filter,
) -> Response {
    if signed_in(&state, &headers).is_none() {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    let after: i64 = given(&filter, "after")
        .and_then(|a| a.parse().ok())
        .unwrap_or(0);
    let query = event_query(&filter, None);
    let commits = state.inner.commits.subscribe();
    let rows = futures_util::stream::unfold(
        (state, commits, after, query),
        |(state, mut commits, after, query)| async move {
            loop {
                if state.draining() {
                    return None;
                }
                let _ = tokio::time::timeout(LIVE_POLL, commits.changed()).await;
                let page = match state.store().events(query.clone()).await {
                    Ok(page) => page,
                    Err(error) => {
                        tracing::warn!(%error, "console live tail: cannot read the log");
                        continue;
                    }
                };
                let fresh: Vec<_> = page.items.into_iter().filter(|e| e.seq > after).collect();
                let Some(newest) = fresh.first().map(|e| e.seq) else {
                    continue;
                };
                let mut html = String::new();
                for event in &fresh {
                    match render_text("event_row.html", &json!({ "event": event })) {
                        Ok(row) => html.push_str(&row.replace('\n', "")),
                        Err(error) => tracing::error!(%error, "console live tail: a row failed"),
                    }
                }
                let message = axum::response::sse::Event::default()
                    .event("rows")
                    .data(html);
                return Some((
                    Ok::<_, std::convert::Infallible>(message),
                    (state, commits, newest, query),
                ));
            }
        },
    );
    axum::response::sse::Sse::new(rows)
        .keep_alive(axum::response::sse::KeepAlive::default())
        .into_response()
}

pub async fn event(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(seq): Path<String>,
) -> Response {
    let Some(session) = signed_in(&state, &headers) else {
        return to_sign_in();
    };
    let Ok(seq) = seq.parse::<i64>() else {
        return not_found("There is no such event.", &session.csrf);
    };
    let store = state.store().as_ref();
    let event = match store.event(seq).await {
        Ok(Some(event)) => event,
        Ok(None) => return not_found(&format!("There is no event {seq}."), &session.csrf),
        Err(error) => return store_failed(error, &session.csrf),
    };
    let runs = inspect::runs(
        store,
        RunQuery {
            identity: Some(event.identity.clone()),
            limit: 1_000,
            ..RunQuery::default()
        },
    )
    .await;
    let runs: Vec<Value> = match runs {
        Ok(runs) => runs.into_iter().filter(|r| r["event"] == seq).collect(),
        Err(error) => return store_failed(error, &session.csrf),
    };
    let body = serde_json::to_string_pretty(&event.body).unwrap_or_default();
    render(
        "event.html",
        json!({
            "signed_in": true, "csrf": session.csrf, "page": "events",
            "event": event, "body": body, "runs": runs,
        }),
    )
}

pub async fn runs(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(filter): Filter,
) -> Response {
    let Some(session) = signed_in(&state, &headers) else {
        return to_sign_in();
    };
    let query = RunQuery {
        workflow: given(&filter, "workflow"),
        identity: given(&filter, "user"),
        limit: PAGE_ROWS,
        ..RunQuery::default()
    };
    match inspect::runs(state.store().as_ref(), query).await {
        Ok(runs) => render(
            "runs.html",
            json!({
                "signed_in": true, "csrf": session.csrf, "page": "runs",
                "runs": runs, "filter": filter,
            }),
        ),
        Err(error) => store_failed(error, &session.csrf),
    }
}

pub async fn run(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let Some(session) = signed_in(&state, &headers) else {
        return to_sign_in();
    };
    match inspect::run_detail(state.store().as_ref(), &id).await {
        Ok(Some(run)) => render(
            "run.html",
            json!({"signed_in": true, "csrf": session.csrf, "page": "runs", "run": run}),
        ),
        Ok(None) => not_found("There is no such run.", &session.csrf),
        Err(error) => store_failed(error, &session.csrf),
    }
}

pub async fn dead_letters(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(filter): Filter,
) -> Response {
    let Some(session) = signed_in(&state, &headers) else {
        return to_sign_in();
    };
    let query = DeadLetterQuery {
        workflow: given(&filter, "workflow"),
        code: given(&filter, "code"),
        identity: given(&filter, "user"),
        since_ms: None,
        until_ms: None,
        limit: PAGE_ROWS,
        // The messages a frequency cap kept back are listed the same way, and released.
        capped: given(&filter, "capped").is_some(),
    };
    let capped = query.capped;
    match inspect::dead_letters(state.store().as_ref(), query).await {
        Ok(letters) => render(
            "dlq.html",
            json!({
                "signed_in": true, "csrf": session.csrf, "page": "dlq", "capped": capped,
                "letters": letters, "filter": filter, "notice": given(&filter, "notice"),
                "job": given(&filter, "job")
                    .and_then(|id| id.parse().ok())
                    .and_then(|id| state.inner.replays.get(id)),
            }),
        ),
        Err(error) => store_failed(error, &session.csrf),
    }
}

/// `POST /console/dlq`: replay or discard the selected dead letters, then back to the list
/// with what happened.
pub async fn dead_letter_action(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some(session) = signed_in(&state, &headers) else {
        return to_sign_in();
    };
    let fields = form_fields(&body);
    if !session.accepts(field(&fields, "csrf")) {
        return csrf_refused(&session);
    }
    let wanted = field(&fields, "do");
    let field = if wanted == Some("replay-shown") {
        "shown"
    } else {
        "id"
    };
    let ids: Vec<String> = fields
        .iter()
        .filter(|(k, _)| k == field)
        .map(|(_, v)| v.clone())
        .collect();
    let notice = match (wanted, ids.is_empty()) {
        (_, true) => "Nothing was selected.".to_owned(),
        (Some("discard"), false) => match state.store().discard(ids).await {
            Ok(n) => format!("Discarded {n} dead letter(s)."),
            Err(error) => return store_failed(error, &session.csrf),
        },
        (Some("release"), false) => match state.store().release_capped(ids).await {
            Ok(n) => {
                state.events_committed();
                let query = form_urlencoded::Serializer::new(String::new())
                    .append_pair("capped", "1")
                    .append_pair("notice", &format!("Released {n} capped message(s)."))
                    .finish();
                return Redirect::to(&format!("/console/dlq?{query}")).into_response();
            }
            Err(error) => return store_failed(error, &session.csrf),
        },
        (Some("replay" | "replay-shown"), false) => {
            let Some(planner) = state.inner.planner.as_ref().map(|live| live.current()) else {
                return error_page(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "Cannot replay",
                    "This server has no workflows loaded.",
                    Some(&session.csrf),
                );
            };
            // Replays run in the background; the page follows their progress.
            let job = state.inner.replays.start(ids.len());
            let worker = state.clone();
            tokio::spawn(async move {
                for id in &ids {
                    let outcome =
                        junction_delivery::replay::replay(worker.store().as_ref(), &planner, id)
                            .await;
                    worker.inner.replays.update(job, |progress| match outcome {
                        Ok(_) => progress.replayed += 1,
                        Err(error) => progress.failed.push(format!("{id}: {error}")),
                    });
                    worker.events_committed();
                }
                worker
                    .inner
                    .replays
                    .update(job, |progress| progress.finished = true);
            });
            return Redirect::to(&format!("/console/dlq?job={job}")).into_response();
        }
        (other, false) => {
            return error_page(
                StatusCode::BAD_REQUEST,
                "Unknown action",
                &format!(
                    "`do` must be replay, replay-shown, discard or release, not {:?}",
                    other.unwrap_or("")
                ),
                Some(&session.csrf),
            );
        }
    };
    let query = form_urlencoded::Serializer::new(String::new())
        .append_pair("notice", &notice)
        .finish();
    Redirect::to(&format!("/console/dlq?{query}")).into_response()
}

/// `GET /console/dlq/jobs/{id}`: a replay job's progress (htmx polls it until it is done).
pub async fn replay_progress(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<u64>,
) -> Response {
    if signed_in(&state, &headers).is_none() {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    match state.inner.replays.get(id) {
        Some(job) => render("replay_progress.html", json!({ "job": job })),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}
