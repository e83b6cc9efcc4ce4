//! `POST /events`: data events, addressed by `user_id` (a user's external_id), `id` or `email`,
//! with Intercom's metadata rules (at most 10 keys, keys past the tenth silently ignored; no
//! nesting except rich links `{url, value}` and money `{amount, currency}`). Answers 202 with an
//! empty body. `GET /events?type=user&intercom_user_id=…` lists what a contact received.

use crate::Emulator;
use crate::error::IntercomError;
use crate::workspace::DataEvent;
use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::{Map, Value, json};

const MAX_METADATA_KEYS: usize = 10;

pub async fn submit(
    State(emulator): State<Emulator>,
    body: Result<Json<Value>, JsonRejection>,
) -> Result<StatusCode, IntercomError> {
    let body = match body {
        Ok(Json(Value::Object(body))) => body,
        Ok(_) => {
            return Err(IntercomError::invalid(
                "the request body must be a JSON object",
            ));
        }
        Err(e) => return Err(IntercomError::invalid(e.body_text())),
    };
    let event_name = body
        .get("event_name")
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
        .ok_or_else(|| IntercomError::invalid("event_name is required"))?
        .to_owned();
    let created_at = body
        .get("created_at")
        .and_then(Value::as_i64)
        .ok_or_else(|| IntercomError::invalid("created_at is required (Unix seconds)"))?;
    let metadata = match body.get("metadata") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(metadata)) => checked_metadata(metadata)?,
        Some(_) => return Err(IntercomError::invalid("metadata must be an object")),
    };
    let text = |field: &str| body.get(field).and_then(Value::as_str);
    let mut workspace = emulator.workspace.lock().expect("workspace lock");
    let contact = workspace.contacts.values().find(|c| {
        !c.deleted
            && match (text("id"), text("user_id"), text("email")) {
                (Some(id), _, _) => c.id == id,
                (None, Some(user_id), _) => {
                    c.role == "user" && c.external_id.as_deref() == Some(user_id)
                }
                (None, None, Some(email)) => c.email.as_deref() == Some(email),
                (None, None, None) => false,
            }
    });
    let Some(contact) = contact else {
        if text("id").or(text("user_id")).or(text("email")).is_none() {
            return Err(IntercomError::invalid(
                "one of user_id, id or email is required",
            ));
        }
        return Err(IntercomError::not_found("User Not Found"));
    };
    let event = DataEvent {
        contact_id: contact.id.clone(),
        event_name,
        created_at,
        metadata,
    };
    // Intercom de-duplicates on contact, event name and created_at.
    let duplicate = workspace.events.iter().any(|e| {
        e.contact_id == event.contact_id
            && e.event_name == event.event_name
            && e.created_at == event.created_at
    });
    if !duplicate {
        workspace.events.push(event);
    }
    Ok(StatusCode::ACCEPTED)
}

/// Keeps the first ten keys and refuses nested values other than rich links and money.
fn checked_metadata(metadata: &Map<String, Value>) -> Result<Map<String, Value>, IntercomError> {
    let mut kept = Map::new();
    for (key, value) in metadata.iter().take(MAX_METADATA_KEYS) {
        if let Value::Object(object) = value
            && object.len() == 2
            && object.get("currency").is_some_and(Value::is_string)
            && let Some(amount) = object.get("amount")
            && !amount.is_i64()
        {
            return Err(IntercomError::invalid(format!(
                "metadata '{key}' is money: its amount must be an integer number of cents (the smallest currency unit), not {amount}"
            )));
        }
        let allowed = match value {
            Value::Object(object) => {
                let keys: Vec<&str> = object.keys().map(String::as_str).collect();
                matches!(keys.as_slice(), ["url", "value"] | ["value", "url"])
                    || (object.get("amount").is_some_and(Value::is_i64)
                        && object.get("currency").is_some_and(Value::is_string)
                        && object.len() == 2)
            }
            Value::Array(_) => false,
            _ => true,
        };
        if !allowed {
            return Err(IntercomError::invalid(format!(
                "metadata '{key}' is a nested value; only rich links {{url, value}} and money {{amount, currency}} may be objects"
            )));
        }
        kept.insert(key.clone(), value.clone());
    }
    Ok(kept)
}

#[derive(Deserialize)]
pub struct EventsQuery {
    intercom_user_id: Option<String>,
}

pub async fn list(
    State(emulator): State<Emulator>,
    Query(query): Query<EventsQuery>,
) -> Result<Json<Value>, IntercomError> {
    let contact_id = query
        .intercom_user_id
        .ok_or_else(|| IntercomError::invalid("intercom_user_id is required"))?;
    let workspace = emulator.workspace.lock().expect("workspace lock");
    let events: Vec<Value> = workspace
        .events
        .iter()
        .filter(|e| e.contact_id == contact_id)
        .map(|e| {
            json!({"type": "event", "event_name": e.event_name, "created_at": e.created_at,
                        "intercom_user_id": e.contact_id, "metadata": e.metadata})
        })
        .collect();
    Ok(Json(
        json!({"type": "event.list", "events": events, "pages": {}}),
    ))
}
