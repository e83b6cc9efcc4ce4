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
use serde_json::json;
use std::collections::HashMap;

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
        match inspect::person(state.store().as_ref(), q, RUNS_SHOWN, EVENTS_SHOWN).await {
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
