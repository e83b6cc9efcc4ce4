//! `/tags` (create or find by name, case-insensitively; list) and tagging one contact
//! (`/contacts/{id}/tags`).

use crate::Emulator;
use crate::error::IntercomError;
use crate::workspace::{Tag, Workspace, unix_now};
use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use serde_json::{Value, json};

type Reply = Result<Json<Value>, IntercomError>;

/// The admin the emulator acts as (see admins.rs).
pub const ADMIN_ID: &str = "991267001";

fn tag_by_id(workspace: &Workspace, id: &str) -> Result<Tag, IntercomError> {
    workspace
        .tags
        .iter()
        .find(|t| t.id == id)
        .cloned()
        .ok_or_else(|| IntercomError::not_found("Resource Not Found"))
}

fn render(tag: &Tag) -> Value {
    json!({"type": "tag", "id": tag.id, "name": tag.name})
}

pub async fn create(
    State(emulator): State<Emulator>,
    body: Result<Json<Value>, JsonRejection>,
) -> Reply {
    let name = body
        .ok()
        .and_then(|Json(b)| b.get("name").and_then(Value::as_str).map(str::to_owned))
        .filter(|n| !n.trim().is_empty())
        .ok_or_else(|| IntercomError::invalid("name is required"))?;
    let mut workspace = emulator.workspace.lock().expect("workspace lock");
    if let Some(tag) = workspace
        .tags
        .iter()
        .find(|t| t.name.eq_ignore_ascii_case(&name))
    {
        return Ok(Json(render(tag)));
    }
    let tag = Tag {
        id: (workspace.tags.len() + 1).to_string(),
        name,
    };
    let rendered = render(&tag);
    workspace.tags.push(tag);
    Ok(Json(rendered))
}

pub async fn list(State(emulator): State<Emulator>) -> Json<Value> {
    let workspace = emulator.workspace.lock().expect("workspace lock");
    let data: Vec<Value> = workspace.tags.iter().map(render).collect();
    Json(json!({"type": "list", "data": data}))
}

pub async fn tag_contact(
    State(emulator): State<Emulator>,
    Path(contact_id): Path<String>,
    body: Result<Json<Value>, JsonRejection>,
) -> Reply {
    let tag_id = body
        .ok()
        .and_then(|Json(b)| {
            b.get("id").and_then(|v| {
                v.as_str()
                    .map(str::to_owned)
                    .or_else(|| v.as_i64().map(|n| n.to_string()))
            })
        })
        .ok_or_else(|| IntercomError::invalid("id is required"))?;
    let mut workspace = emulator.workspace.lock().expect("workspace lock");
    let tag = tag_by_id(&workspace, &tag_id)?;
    let contact = workspace.live_contact(&contact_id)?;
    if !contact.tag_ids.contains(&tag.id) {
        contact.tag_ids.push(tag.id.clone());
    }
    let mut rendered = render(&tag);
    rendered["applied_at"] = unix_now().into();
    rendered["applied_by"] = json!({"type": "admin", "id": ADMIN_ID});
    Ok(Json(rendered))
}

pub async fn untag_contact(
    State(emulator): State<Emulator>,
    Path((contact_id, tag_id)): Path<(String, String)>,
) -> Reply {
    let mut workspace = emulator.workspace.lock().expect("workspace lock");
    let tag = tag_by_id(&workspace, &tag_id)?;
    let contact = workspace.live_contact(&contact_id)?;
    contact.tag_ids.retain(|id| id != &tag.id);
    Ok(Json(render(&tag)))
}
