//! `POST /api/backfill`: historical Segment messages (`junction backfill` sends them), as
//! `{"batch": [...], "workflows": ["profile-sync", …]}` behind the admin token. They go through
//! the same validation as `/v1/batch` and are stored under the source `backfill` — so a
//! backfill sent again after an interruption finds its messageIds already stored and changes
//! nothing — each marked `context.backfill` (with the workflows it may run), which the planner
//! honours and delivery puts in the bulk lane, so live traffic keeps its latency.

use crate::AppState;
use crate::auth::require_admin;
use crate::body::{self, Limit};
use crate::error::ApiError;
use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use chrono::Utc;
use serde_json::{Map, Value, json};

/// The source backfilled events are stored (and de-duplicated) under.
pub const BACKFILL_SOURCE: &str = "backfill";

pub async fn backfill(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    require_admin(state.inner.admin_token.as_deref(), &headers)?;
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
