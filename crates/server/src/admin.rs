//! The admin read API: the event log and the rejected-message log, newest first, with cursor
//! pagination. Behind `admin.token` when one is configured.

use crate::AppState;
use crate::auth::require_admin;
use crate::error::ApiError;
use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use junction_store::{EventQuery, Page, RejectedQuery, RejectedRecord, StoredEvent};

pub async fn list_events(
    State(state): State<AppState>,
    headers: HeaderMap,
    query: Result<Query<EventQuery>, QueryRejection>,
) -> Result<Json<Page<StoredEvent>>, ApiError> {
    require_admin(state.inner.admin_token.as_deref(), &headers)?;
    let Query(query) = query.map_err(bad_query)?;
    Ok(Json(state.store().events(query).await?))
}

pub async fn show_event(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(seq): Path<String>,
) -> Result<Json<StoredEvent>, ApiError> {
    require_admin(state.inner.admin_token.as_deref(), &headers)?;
    let seq: i64 = seq.parse().map_err(|_| {
        ApiError::bad_request(
            "invalid_query",
            "seq",
            format!("{seq:?} is not an event number"),
        )
    })?;
    state.store().event(seq).await?.map(Json).ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no event {seq}"),
        )
    })
}

pub async fn list_rejected(
    State(state): State<AppState>,
    headers: HeaderMap,
    query: Result<Query<RejectedQuery>, QueryRejection>,
) -> Result<Json<Page<RejectedRecord>>, ApiError> {
    require_admin(state.inner.admin_token.as_deref(), &headers)?;
    let Query(query) = query.map_err(bad_query)?;
    Ok(Json(state.store().rejected(query).await?))
}

fn bad_query(rejection: QueryRejection) -> ApiError {
    ApiError::new(
        StatusCode::BAD_REQUEST,
        "invalid_query",
        rejection.body_text(),
    )
}
