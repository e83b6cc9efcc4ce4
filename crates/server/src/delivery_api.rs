//! The admin API of delivery: the dead-letter queue (list, show, replay, discard) and the
//! execution log (runs). Behind `admin.token` like the rest of `/api`.

use crate::AppState;
use crate::auth::require_admin;
use crate::error::ApiError;
use axum::Json;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use junction_delivery::inspect;
use junction_store::{DeadLetterQuery, RunQuery};
use serde::Deserialize;
use serde_json::{Value, json};

const DEFAULT_LIMIT: usize = 100;
const MAX_LIMIT: usize = 1_000;

/// Filters shared by listing, replaying and discarding dead letters.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeadLetterFilter {
    pub workflow: Option<String>,
    pub code: Option<String>,
    pub user: Option<String>,
    /// A date-time, or a span back from now (`2h`).
    pub since: Option<String>,
    pub until: Option<String>,
    pub limit: Option<usize>,
    /// Explicit ids (replay and discard).
    #[serde(default)]
    pub ids: Vec<String>,
    /// The messages a frequency cap kept back instead of the failed actions.
    #[serde(default)]
    pub capped: bool,
}

impl DeadLetterFilter {
    fn query(&self) -> Result<DeadLetterQuery, ApiError> {
        let now = chrono::Utc::now().timestamp_millis();
        let time = |field: &str, value: &Option<String>| time_filter(field, value.as_deref(), now);
        let limit = page_limit(self.limit)?;
        Ok(DeadLetterQuery {
            workflow: self.workflow.clone(),
            code: self.code.clone(),
            identity: self.user.clone(),
            since_ms: time("since", &self.since)?,
            until_ms: time("until", &self.until)?,
            limit,
            capped: self.capped,
        })
    }
}

/// `limit`: the default when absent, else 1 to [`MAX_LIMIT`].
fn page_limit(limit: Option<usize>) -> Result<usize, ApiError> {
    let limit = limit.unwrap_or(DEFAULT_LIMIT);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(ApiError::bad_request(
            "invalid_query",
            "limit",
            format!("limit must be 1 to {MAX_LIMIT}"),
        ));
    }
    Ok(limit)
}

/// A time filter: a date-time or a span back from `now_ms`.
fn time_filter(field: &str, value: Option<&str>, now_ms: i64) -> Result<Option<i64>, ApiError> {
    value
        .map(|v| {
            inspect::parse_time(v, now_ms)
                .map_err(|e| ApiError::bad_request("invalid_query", field, e))
        })
        .transpose()
}

fn bad_query(rejection: QueryRejection) -> ApiError {
    ApiError::new(
        StatusCode::BAD_REQUEST,
        "invalid_query",
        rejection.body_text(),
    )
}

fn bad_body(rejection: JsonRejection) -> ApiError {
    ApiError::new(
        StatusCode::BAD_REQUEST,
        "invalid_body",
        rejection.body_text(),
    )
}

pub async fn list_dead_letters(
    State(state): State<AppState>,
    headers: HeaderMap,
    query: Result<Query<DeadLetterFilter>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    require_admin(state.inner.admin_token.as_deref(), &headers)?;
    let Query(filter) = query.map_err(bad_query)?;
    let items = inspect::dead_letters(state.store().as_ref(), filter.query()?).await?;
    Ok(Json(json!({ "items": items })))
}

pub async fn show_action(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    require_admin(state.inner.admin_token.as_deref(), &headers)?;
    inspect::action_detail(state.store().as_ref(), &id)
        .await?
        .map(Json)
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "not_found",
                format!("no action {id}"),
            )
        })
}

/// The ids a replay or discard applies to: the explicit ones, else every match of the filter.
async fn selected(state: &AppState, filter: &DeadLetterFilter) -> Result<Vec<String>, ApiError> {
    if !filter.ids.is_empty() {
        return Ok(filter.ids.clone());
    }
    let mut query = filter.query()?;
    query.limit = filter.limit.unwrap_or(MAX_LIMIT);
    Ok(state
        .store()
        .dead_letters(query)
        .await?
        .into_iter()
        .map(|a| a.id)
        .collect())
}

pub async fn replay(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Json<DeadLetterFilter>, JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    require_admin(state.inner.admin_token.as_deref(), &headers)?;
    let Json(filter) = body.map_err(bad_body)?;
    let Some(planner) = state.inner.planner.as_ref().map(|live| live.current()) else {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "no_workflows",
            "this server has no workflows loaded",
        ));
    };
    let ids = selected(&state, &filter).await?;
    let (mut replayed, mut actions, mut errors) = (0, 0, Vec::new());
    for id in &ids {
        match junction_delivery::replay::replay(state.store().as_ref(), &planner, id).await {
            Ok(n) => {
                replayed += 1;
                actions += n;
            }
            Err(error) => errors.push(json!({"id": id, "error": error.to_string()})),
        }
    }
    state.events_committed();
    Ok(Json(
        json!({"replayed": replayed, "actions": actions, "errors": errors}),
    ))
}

/// Sends capped messages after all: those named, else every capped one the filter matches.
pub async fn release(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Json<DeadLetterFilter>, JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    require_admin(state.inner.admin_token.as_deref(), &headers)?;
    let Json(mut filter) = body.map_err(bad_body)?;
    filter.capped = true;
    let ids = selected(&state, &filter).await?;
    let released = state.store().release_capped(ids).await?;
    state.events_committed();
    Ok(Json(json!({ "released": released })))
}

pub async fn discard(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Json<DeadLetterFilter>, JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    require_admin(state.inner.admin_token.as_deref(), &headers)?;
    let Json(filter) = body.map_err(bad_body)?;
    let ids = selected(&state, &filter).await?;
    let discarded = state.store().discard(ids).await?;
    Ok(Json(json!({ "discarded": discarded })))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunFilter {
    pub workflow: Option<String>,
    pub user: Option<String>,
    pub status: Option<String>,
    /// Runs planned before this date-time (or span back from now): the next page.
    pub before: Option<String>,
    pub limit: Option<usize>,
}

pub async fn list_runs(
    State(state): State<AppState>,
    headers: HeaderMap,
    query: Result<Query<RunFilter>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    require_admin(state.inner.admin_token.as_deref(), &headers)?;
    let Query(filter) = query.map_err(bad_query)?;
    let limit = page_limit(filter.limit)?;
    let now = chrono::Utc::now().timestamp_millis();
    let before_ms = time_filter("before", filter.before.as_deref(), now)?;
    let query = RunQuery {
        workflow: filter.workflow,
        identity: filter.user,
        status: filter.status,
        before_ms,
        limit,
    };
    let items = inspect::runs(state.store().as_ref(), query).await?;
    Ok(Json(json!({ "items": items })))
}

pub async fn show_run(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    require_admin(state.inner.admin_token.as_deref(), &headers)?;
    inspect::run_detail(state.store().as_ref(), &id)
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, "not_found", format!("no run {id}")))
}

/// `GET /api/delivery`: actions by state, timers waiting, and the backlog's age per lane.
pub async fn status(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    require_admin(state.inner.admin_token.as_deref(), &headers)?;
    let counts = state.store().outbox_counts().await?;
    Ok(Json(json!({
        "actions": {
            "pending": counts.pending,
            "standby": counts.standby,
            "done": counts.done,
            "failed": counts.failed,
            "skipped": counts.skipped,
            "discarded": counts.discarded,
            "replayed": counts.replayed,
            "capped": counts.capped,
        },
        "timersPending": counts.timers_pending,
        "oldestPendingSeconds": {
            "urgent": counts.oldest_pending_ms[0].map(|ms| ms as f64 / 1000.0),
            "bulk": counts.oldest_pending_ms[1].map(|ms| ms as f64 / 1000.0),
            "backfill": counts.oldest_pending_ms[2].map(|ms| ms as f64 / 1000.0),
        },
    })))
}

/// `GET /api/cluster`: the nodes sharing the store, the leases, and planning's lag.
pub async fn cluster(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    require_admin(state.inner.admin_token.as_deref(), &headers)?;
    let now = chrono::Utc::now().timestamp_millis();
    Ok(Json(
        junction_delivery::inspect::cluster(state.store().as_ref(), now).await?,
    ))
}

/// `GET /api/quarantine`: events and timers held because their user's state was unreadable.
pub async fn list_quarantine(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    require_admin(state.inner.admin_token.as_deref(), &headers)?;
    let items = state.store().quarantine_list(MAX_LIMIT).await?;
    Ok(Json(json!({ "items": items })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReleaseRequest {
    pub user: String,
    #[serde(default)]
    pub reset_profile: bool,
}

/// `POST /api/quarantine/release {user, reset_profile?}`: plans that user's held entries again.
pub async fn release_quarantine(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Json<ReleaseRequest>, JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    require_admin(state.inner.admin_token.as_deref(), &headers)?;
    let Json(request) = body.map_err(bad_body)?;
    let released = state
        .store()
        .quarantine_release(&request.user, request.reset_profile)
        .await?;
    state.events_committed();
    Ok(Json(json!({ "released": released })))
}
