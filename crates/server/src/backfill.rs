//! `POST /api/backfill`: historical Segment messages (`junction backfill` sends them), as
//! `{"batch": [...], "workflows": ["profile-sync", …]}` behind the admin token. They go through
//! the same validation as `/v1/batch` and are stored under the source `backfill` — so a
//! backfill sent again after an interruption finds its messageIds already stored and changes
//! nothing — each marked `context.backfill` (with the workflows it may run), which the planner
//! honours and delivery puts in the backfill lane, behind live traffic.
//!
//! A backfill goes no faster than delivery: a batch is refused with 429 `backfill_ahead`
//! while planning is behind or the backfill lane holds more than a few seconds of Intercom's
//! budget, and `junction backfill` sends it again a moment later. So live events never queue
//! behind a backfill's in planning, the outbox holds a bounded part of it, and the progress
//! `GET /api/backfill` reports (events not yet planned, backfilled events not yet delivered)
//! follows delivery.

use crate::AppState;
use crate::auth::require_admin;
use crate::body::{self, Limit};
use crate::error::ApiError;
use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use chrono::Utc;
use junction_store::lane;
use serde_json::{Map, Value, json};

/// The source backfilled events are stored (and de-duplicated) under.
pub const BACKFILL_SOURCE: &str = "backfill";

/// A batch waits while planning has more than this many events to catch up on (a live
/// event logged behind them waits for their planning).
const MAX_PLANNING_LAG: i64 = 500;
/// A batch waits while the backfill lane holds more than this many actions: about fifteen
/// seconds of a backfill's share of Intercom's default limit, enough to keep delivery busy.
const MAX_BACKFILL_PENDING: i64 = 2_000;

/// How far behind planning and delivery are: what a batch waits for, and a backfill's
/// progress.
struct Behind {
    /// Events logged and not yet planned (live ones included).
    unplanned: i64,
    /// Actions pending in the backfill lane.
    actions: i64,
    /// Backfilled events with an action pending.
    events: i64,
}

async fn behind(state: &AppState) -> Result<Behind, ApiError> {
    let store = state.store();
    let unplanned = store
        .partition_states()
        .await?
        .iter()
        .map(|p| p.behind)
        .sum();
    let backlog = store.backlog().await?;
    Ok(Behind {
        unplanned,
        actions: backlog.pending_by_lane[lane::BACKFILL as usize],
        events: backlog.backfill_events_pending,
    })
}

/// `GET /api/backfill`: events not yet planned, and the backfill lane's pending actions and
/// the events they belong to (what `junction backfill` shows as not yet delivered).
pub async fn progress(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    require_admin(state.inner.admin_token.as_deref(), &headers)?;
    let behind = behind(&state).await?;
    Ok(Json(json!({
        "unplannedEvents": behind.unplanned,
        "pendingActions": behind.actions,
        "undeliveredEvents": behind.events,
    })))
}

pub async fn backfill(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    require_admin(state.inner.admin_token.as_deref(), &headers)?;
    let behind = behind(&state).await?;
    if behind.unplanned > MAX_PLANNING_LAG || behind.actions > MAX_BACKFILL_PENDING {
        return Err(ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "backfill_ahead",
            format!(
                "the backfill is ahead of delivery ({} events to plan, {} backfill actions to deliver); send this batch again in a moment",
                behind.unplanned, behind.actions
            ),
        ));
    }
    let received_at = Utc::now();
    let bytes = body::read(&headers, body, Limit::BATCH).await?;
    let invalid = |field: &str, message: &str| {
        ApiError::bad_request("invalid_body", field, message.to_owned())
    };
    let mut request: Value =
        serde_json::from_slice(&bytes).map_err(|e| invalid("body", &format!("not JSON: {e}")))?;
    let workflows = match request.get("workflows") {
        None | Some(Value::Null) => Value::Null,
        Some(Value::Array(names)) if names.iter().all(Value::is_string) => {
            Value::Array(names.clone())
        }
        Some(_) => return Err(invalid("workflows", "expected a list of workflow names")),
    };
    let Some(batch) = request.get_mut("batch").and_then(Value::as_array_mut) else {
        return Err(invalid("batch", "expected a list of Segment messages"));
    };
    for message in batch.iter_mut() {
        let Some(message) = message.as_object_mut() else {
            continue; // refused by the validation below, with its index
        };
        let context = message
            .entry("context")
            .or_insert_with(|| Value::Object(Map::new()));
        if !context.is_object() {
            *context = Value::Object(Map::new());
        }
        // Whatever the archive says, this is a backfill with these workflows.
        context["backfill"] = json!({ "workflows": workflows });
    }
    let marked = serde_json::to_vec(&json!({ "batch": batch }))
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))?;
    let envelope = junction_model::parse_batch(&marked, received_at)?;
    crate::ingest::store_batch(&state, BACKFILL_SOURCE.to_owned(), received_at, envelope).await
}
