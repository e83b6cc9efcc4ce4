//! Conversations and messages: contact-initiated conversations (`POST /conversations`), admin
//! replies and notes (`/conversations/{id}/reply`), assignment, close and open
//! (`/conversations/{id}/parts`), admin-initiated messages (`POST /messages`, which, like
//! Intercom, refuses a contact created moments ago), and notes on contacts.

use crate::Emulator;
use crate::error::IntercomError;
use crate::tags::ADMIN_ID;
use crate::workspace::{Conversation, Note, Part, Workspace, unix_now};
use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde_json::{Map, Value, json};
use std::time::Instant;

type Reply = Result<Json<Value>, IntercomError>;

fn object(body: Result<Json<Value>, JsonRejection>) -> Result<Map<String, Value>, IntercomError> {
    match body {
        Ok(Json(Value::Object(o))) => Ok(o),
        Ok(_) => Err(IntercomError::invalid(
            "the request body must be a JSON object",
        )),
        Err(e) => Err(IntercomError::invalid(e.body_text())),
    }
}

fn text<'a>(body: &'a Map<String, Value>, field: &str) -> Option<&'a str> {
    body.get(field)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
}

fn check_admin(id: &str) -> Result<(), IntercomError> {
    if crate::admins::is_admin(id) {
        Ok(())
    } else {
        Err(IntercomError::not_found("Resource Not Found"))
    }
}

/// The `id` of an `{type, id}` reference, as a string (admin ids may come as numbers).
fn id_of(value: Option<&Value>) -> Option<String> {
    let id = value?.get("id")?;
    id.as_str()
        .map(str::to_owned)
        .or_else(|| id.as_i64().map(|n| n.to_string()))
}

pub async fn create(
    State(emulator): State<Emulator>,
    body: Result<Json<Value>, JsonRejection>,
) -> Reply {
    let body = object(body)?;
    let from = id_of(body.get("from")).ok_or_else(|| IntercomError::invalid("from is required"))?;
    let message = text(&body, "body")
        .ok_or_else(|| IntercomError::invalid("Body is required"))?
        .to_owned();
    let mut workspace = emulator.workspace.lock().expect("workspace lock");
    let role = workspace.live_contact(&from)?.role.clone();
    let now = unix_now();
    let id = workspace.new_id();
    workspace.conversations.insert(
        id.clone(),
        Conversation {
            id: id.clone(),
            contact_id: from.clone(),
            created_at: now,
            updated_at: now,
            delivered_as: "customer_initiated".into(),
            source_body: message.clone(),
            source_author: (role, from),
            subject: text(&body, "subject").map(str::to_owned),
            admin_assignee_id: None,
            team_assignee_id: None,
            open: true,
            parts: Vec::new(),
        },
    );
    let item = workspace.conversations[&id].to_json();
    drop(workspace);
    crate::webhooks::notify(&emulator, "conversation.user.created", item);
    Ok(Json(
        json!({"type": "user_message", "id": format!("{id}-source"), "created_at": now, "body": message,
                   "message_type": "inapp", "conversation_id": id}),
    ))
}

/// `POST /conversations/search`: the subset of Intercom's query language Junction uses — a
/// single condition or an AND of conditions on `contact_ids` (`=`) and `created_at`
/// (`>`, `<`, `=`); anything else is refused as Intercom refuses an unknown field.
pub async fn search(
    State(emulator): State<Emulator>,
    body: Result<Json<Value>, JsonRejection>,
) -> Reply {
    let body = object(body)?;
    let query = body
        .get("query")
        .ok_or_else(|| IntercomError::invalid("query is required"))?;
    let conditions: Vec<&Value> = match query.get("value") {
        Some(Value::Array(list))
            if query.get("operator").and_then(Value::as_str) == Some("AND") =>
        {
            list.iter().collect()
        }
        _ => vec![query],
    };
    let workspace = emulator.workspace.lock().expect("workspace lock");
    let mut found: Vec<&Conversation> = workspace.conversations.values().collect();
    for condition in conditions {
        let field = condition
            .get("field")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let operator = condition
            .get("operator")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let value = condition.get("value");
        match (field, operator) {
            ("contact_ids", "=") => {
                let id = value.and_then(Value::as_str).unwrap_or_default();
                found.retain(|c| c.contact_id == id);
            }
            ("created_at", op @ (">" | "<" | "=")) => {
                let at = value
                    .and_then(|v| v.as_i64().or_else(|| v.as_str()?.parse().ok()))
                    .unwrap_or(0);
                found.retain(|c| match op {
                    ">" => c.created_at > at,
                    "<" => c.created_at < at,
                    _ => c.created_at == at,
                });
            }
            _ => {
                return Err(IntercomError::invalid(format!(
                    "{field} is not a searchable field with {operator}"
                )));
            }
        }
    }
    found.sort_by_key(|c| (c.created_at, c.id.clone()));
    let data: Vec<Value> = found.into_iter().map(Conversation::to_json).collect();
    Ok(Json(
        json!({"type": "conversation.list", "conversations": data, "total_count": data.len(),
                "pages": {"type": "pages", "page": 1, "per_page": data.len().max(1), "total_pages": 1}}),
    ))
}

fn conversation<'a>(
    workspace: &'a mut Workspace,
    id: &str,
) -> Result<&'a mut Conversation, IntercomError> {
    let id = if id == "last" {
        workspace
            .conversations
            .values()
            .max_by_key(|c| (c.updated_at, c.id.clone()))
            .map(|c| c.id.clone())
            .ok_or_else(|| IntercomError::not_found("Resource Not Found"))?
    } else {
        id.to_owned()
    };
    workspace
        .conversations
        .get_mut(&id)
        .ok_or_else(|| IntercomError::not_found("Resource Not Found"))
}

pub async fn show(State(emulator): State<Emulator>, Path(id): Path<String>) -> Reply {
    let mut workspace = emulator.workspace.lock().expect("workspace lock");
    Ok(Json(conversation(&mut workspace, &id)?.to_json()))
}

pub async fn list(State(emulator): State<Emulator>) -> Json<Value> {
    let workspace = emulator.workspace.lock().expect("workspace lock");
    let data: Vec<Value> = workspace
        .conversations
        .values()
        .map(Conversation::to_json)
        .collect();
    Json(
        json!({"type": "conversation.list", "conversations": data, "total_count": data.len(),
                "pages": {"type": "pages", "page": 1, "per_page": 20, "total_pages": 1}}),
    )
}

pub async fn reply(
    State(emulator): State<Emulator>,
    Path(id): Path<String>,
    body: Result<Json<Value>, JsonRejection>,
) -> Reply {
    let body = object(body)?;
    let message_type = text(&body, "message_type").unwrap_or("comment").to_owned();
    let message = text(&body, "body").map(str::to_owned);
    let author = match text(&body, "type") {
        Some("admin") => {
            let admin = text(&body, "admin_id")
                .ok_or_else(|| IntercomError::invalid("admin_id is required"))?;
            check_admin(admin)?;
            if !matches!(message_type.as_str(), "comment" | "note" | "quick_reply") {
                return Err(IntercomError::invalid(
                    "message_type must be comment, note or quick_reply",
                ));
            }
            ("admin".to_owned(), admin.to_owned())
        }
        Some("user") => {
            let who = text(&body, "intercom_user_id").ok_or_else(|| {
                IntercomError::invalid("intercom_user_id, email or user_id is required")
            })?;
            ("user".to_owned(), who.to_owned())
        }
        _ => return Err(IntercomError::invalid("type must be admin or user")),
    };
    if message.is_none() && message_type != "quick_reply" {
        return Err(IntercomError::invalid("Body is required"));
    }
    let mut workspace = emulator.workspace.lock().expect("workspace lock");
    let part_id = workspace.new_id();
    let conversation = conversation(&mut workspace, &id)?;
    let now = unix_now();
    conversation.parts.push(Part {
        id: part_id,
        part_type: message_type,
        body: message,
        author,
        created_at: now,
    });
    conversation.updated_at = now;
    Ok(Json(conversation.to_json()))
}

pub async fn parts(
    State(emulator): State<Emulator>,
    Path(id): Path<String>,
    body: Result<Json<Value>, JsonRejection>,
) -> Reply {
    let body = object(body)?;
    let admin = text(&body, "admin_id")
        .ok_or_else(|| IntercomError::invalid("admin_id is required"))?
        .to_owned();
    check_admin(&admin)?;
    let message_type = text(&body, "message_type")
        .ok_or_else(|| IntercomError::invalid("message_type is required"))?
        .to_owned();
    let mut workspace = emulator.workspace.lock().expect("workspace lock");
    let part_id = workspace.new_id();
    let conversation = conversation(&mut workspace, &id)?;
    match message_type.as_str() {
        "assignment" => {
            let assignee = text(&body, "assignee_id")
                .ok_or_else(|| IntercomError::invalid("assignee_id is required"))?;
            let unassign = assignee == "0";
            match text(&body, "type") {
                Some("admin") => {
                    conversation.admin_assignee_id = (!unassign).then(|| assignee.to_owned())
                }
                Some("team") => {
                    conversation.team_assignee_id = (!unassign).then(|| assignee.to_owned())
                }
                _ => return Err(IntercomError::invalid("type must be admin or team")),
            }
        }
        "close" => conversation.open = false,
        "open" => conversation.open = true,
        other => {
            return Err(IntercomError::invalid(format!(
                "message_type {other:?} is not supported"
            )));
        }
    }
    let now = unix_now();
    conversation.parts.push(Part {
        id: part_id,
        part_type: message_type,
        body: text(&body, "body").map(str::to_owned),
        author: ("admin".into(), admin),
        created_at: now,
    });
    conversation.updated_at = now;
    Ok(Json(conversation.to_json()))
}

/// `POST /messages`: admin-initiated in-app or email messages.
pub async fn message(
    State(emulator): State<Emulator>,
    body: Result<Json<Value>, JsonRejection>,
) -> Reply {
    let body = object(body)?;
    let message_type = text(&body, "message_type")
        .ok_or_else(|| IntercomError::invalid("message_type is required"))?
        .to_owned();
    if !matches!(message_type.as_str(), "inapp" | "email") {
        return Err(IntercomError::invalid(
            "message_type must be inapp or email",
        ));
    }
    let message = text(&body, "body")
        .ok_or_else(|| IntercomError::invalid("Body is required"))?
        .to_owned();
    if message_type == "email" {
        if text(&body, "subject").is_none() {
            return Err(IntercomError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "parameter_not_found",
                "No subject supplied for email message",
            ));
        }
        if text(&body, "template").is_none() {
            return Err(IntercomError::invalid(
                "template is required for email messages",
            ));
        }
    }
    let from = id_of(body.get("from")).ok_or_else(|| IntercomError::invalid("from is required"))?;
    check_admin(&from)?;
    let to = id_of(body.get("to")).ok_or_else(|| IntercomError::invalid("to is required"))?;
    let lag = emulator.config.lock().expect("config lock").search_lag;
    let mut workspace = emulator.workspace.lock().expect("workspace lock");
    let recipient = workspace.live_contact(&to)?;
    // Intercom: a contact created moments ago cannot be messaged yet.
    if recipient.searchable_after > Instant::now() && !lag.is_zero() {
        return Err(IntercomError::not_found("User Not Found"));
    }
    let now = unix_now();
    let id = workspace.new_id();
    // Intercom files every admin-initiated message under a conversation; it shows in the inbox
    // (open) at once only when asked, otherwise once the contact replies.
    let open_now = body
        .get("create_conversation_without_contact_reply")
        .and_then(Value::as_bool)
        == Some(true);
    let conversation_id = workspace.new_id();
    workspace.conversations.insert(
        conversation_id.clone(),
        Conversation {
            id: conversation_id.clone(),
            contact_id: to.clone(),
            created_at: now,
            updated_at: now,
            delivered_as: "admin_initiated".into(),
            source_body: message.clone(),
            source_author: ("admin".into(), from.clone()),
            subject: text(&body, "subject").map(str::to_owned),
            admin_assignee_id: None,
            team_assignee_id: None,
            open: open_now,
            parts: Vec::new(),
        },
    );
    workspace.messages.push(Value::Object(body.clone()));
    let mut sent = json!({"type": "admin_message", "id": id, "created_at": now,
        "subject": text(&body, "subject").unwrap_or(""), "body": message, "message_type": message_type,
        "owner": {"type": "admin", "id": ADMIN_ID, "name": "Emulator Admin", "email": "admin@emulator.invalid"}});
    sent["conversation_id"] = conversation_id.into();
    Ok(Json(sent))
}

/// `POST /contacts/{id}/notes`.
pub async fn note(
    State(emulator): State<Emulator>,
    Path(contact_id): Path<String>,
    body: Result<Json<Value>, JsonRejection>,
) -> Reply {
    let body = object(body)?;
    let message = text(&body, "body")
        .ok_or_else(|| IntercomError::invalid("Body is required"))?
        .to_owned();
    let admin = body
        .get("admin_id")
        .and_then(|v| {
            v.as_str()
                .map(str::to_owned)
                .or_else(|| v.as_i64().map(|n| n.to_string()))
        })
        .unwrap_or_else(|| ADMIN_ID.to_owned());
    check_admin(&admin)?;
    let mut workspace = emulator.workspace.lock().expect("workspace lock");
    workspace.live_contact(&contact_id)?;
    let now = unix_now();
    let id = workspace.new_id();
    let html = format!("<p>{message}</p>");
    workspace.notes.push(Note {
        id: id.clone(),
        contact_id: contact_id.clone(),
        body: html.clone(),
        created_at: now,
    });
    Ok(Json(
        json!({"type": "note", "id": id, "created_at": now, "contact": {"type": "contact", "id": contact_id},
                   "author": crate::admins::admin(), "body": html}),
    ))
}

/// `GET /contacts/{id}/notes`.
pub async fn notes(State(emulator): State<Emulator>, Path(contact_id): Path<String>) -> Reply {
    let mut workspace = emulator.workspace.lock().expect("workspace lock");
    workspace.live_contact(&contact_id)?;
    let data: Vec<Value> = workspace
        .notes
        .iter()
        .filter(|n| n.contact_id == contact_id)
        .map(|n| {
            json!({"type": "note", "id": n.id, "created_at": n.created_at,
                        "contact": {"type": "contact", "id": n.contact_id}, "body": n.body,
                        "author": crate::admins::admin()})
        })
        .collect();
    Ok(Json(
        json!({"type": "list", "data": data, "total_count": data.len(),
                   "pages": {"type": "pages", "page": 1, "per_page": 50, "total_pages": 1}}),
    ))
}
