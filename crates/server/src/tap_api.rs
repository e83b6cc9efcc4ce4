//! `GET /api/tap`: this node's live tail as server-sent events — events as ingest stores them,
//! the actions planned for them, and (with `calls=true`) the calls delivery makes — filtered
//! by `user`, `workflow` and `type`. Each entry is one `entry` message (JSON); a reader that
//! falls behind gets a `dropped` message saying how many entries it lost. The stream ends when
//! the server drains.

use crate::AppState;
use crate::auth::require_admin;
use crate::error::ApiError;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use junction_delivery::TapFilter;
use std::convert::Infallible;
use std::time::Duration;
use tokio::sync::broadcast::error::RecvError;

/// How often a quiet stream looks whether the server is draining.
const DRAIN_CHECK: Duration = Duration::from_millis(500);

pub async fn stream(
    State(state): State<AppState>,
    headers: HeaderMap,
    query: Result<Query<TapFilter>, QueryRejection>,
) -> Result<Response, ApiError> {
    require_admin(state.inner.admin_token.as_deref(), &headers)?;
    let Query(filter) = query.map_err(|rejection| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_query",
            rejection.body_text(),
        )
    })?;
    let Some(tap) = state.inner.tap.clone() else {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "no_tap",
            "this server has no live tail",
        ));
    };
    let entries = tap.subscribe();
    let messages = futures_util::stream::unfold(
        (state, entries, filter),
        |(state, mut entries, filter)| async move {
            loop {
                if state.draining() {
                    return None;
                }
                let message = match tokio::time::timeout(DRAIN_CHECK, entries.recv()).await {
                    Err(_) => continue,
                    Ok(Ok(entry)) if entry.matches(&filter) => Event::default()
                        .event("entry")
                        .data(serde_json::to_string(&*entry).unwrap_or_default()),
                    Ok(Ok(_)) => continue,
                    Ok(Err(RecvError::Lagged(lost))) => {
                        Event::default().event("dropped").data(lost.to_string())
                    }
                    Ok(Err(RecvError::Closed)) => return None,
                };
                return Some((Ok::<_, Infallible>(message), (state, entries, filter)));
            }
        },
    );
    Ok(Sse::new(messages)
        .keep_alive(KeepAlive::default())
        .into_response())
}
