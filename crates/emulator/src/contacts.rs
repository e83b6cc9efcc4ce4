//! `/contacts`: create (with Intercom's 409 on an existing external_id or user email), get,
//! update, find by external_id (users only), search (blind to contacts younger than the
//! configured lag), list, archive, unarchive and delete.

use crate::Emulator;
use crate::data_attributes::MAX_CUSTOM_ATTRIBUTES;
use crate::error::IntercomError;
use crate::search;
use crate::workspace::{Contact, Workspace, unix_now};
use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::{Map, Value, json};
use std::time::Instant;

const DEFAULT_PAGE: usize = 50;
const MAX_PAGE: usize = 150;

type Reply = Result<Json<Value>, IntercomError>;

fn body_object(
    body: Result<Json<Value>, JsonRejection>,
) -> Result<Map<String, Value>, IntercomError> {
    match body {
        Ok(Json(Value::Object(object))) => Ok(object),
        Ok(_) => Err(IntercomError::invalid(
            "the request body must be a JSON object",
        )),
        Err(rejection) => Err(IntercomError::invalid(rejection.body_text())),
    }
}

/// Fields a create or update may set, checked for type.
struct ContactFields(Map<String, Value>);

impl ContactFields {
    fn string(&self, field: &str) -> Result<Option<Option<String>>, IntercomError> {
        match self.0.get(field) {
            None => Ok(None),
            Some(Value::Null) => Ok(Some(None)),
            Some(Value::String(s)) => Ok(Some(Some(s.clone()))),
            Some(_) => Err(IntercomError::invalid(format!("{field} must be a string"))),
        }
    }

    fn integer(&self, field: &str) -> Result<Option<Option<i64>>, IntercomError> {
        match self.0.get(field) {
            None => Ok(None),
            Some(Value::Null) => Ok(Some(None)),
            Some(Value::Number(n)) if n.is_i64() => Ok(Some(n.as_i64())),
            Some(_) => Err(IntercomError::invalid(format!(
                "{field} must be an integer"
            ))),
        }
    }
}

/// Checks custom attributes against the workspace's data attributes: each must exist and
/// carry a value of its declared type (or null, which clears it).
fn check_custom_attributes(
    workspace: &Workspace,
    fields: &ContactFields,
) -> Result<Map<String, Value>, IntercomError> {
    let attributes = match fields.0.get("custom_attributes") {
        None | Some(Value::Null) => return Ok(Map::new()),
        Some(Value::Object(attributes)) => attributes,
        Some(_) => {
            return Err(IntercomError::invalid(
                "custom_attributes must be an object",
            ));
        }
    };
    for (name, value) in attributes {
        let Some(attribute) = workspace.custom_attribute("contact", name) else {
            return Err(IntercomError::invalid(format!(
                "Custom attribute '{name}' does not exist"
            )));
        };
        let fits = match (attribute.data_type.as_str(), value) {
            (_, Value::Null) => true,
            ("string", Value::String(_)) => true,
            ("integer" | "date", Value::Number(n)) => n.is_i64(),
            ("float", Value::Number(_)) => true,
            ("boolean", Value::Bool(_)) => true,
            _ => false,
        };
        if !fits {
            return Err(IntercomError::invalid(format!(
                "Custom attribute '{name}' is of type {}, not {}",
                attribute.data_type,
                json_type(value)
            )));
        }
    }
    Ok(attributes.clone())
}

fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn conflict(existing: &Contact) -> IntercomError {
    let message = if existing.archived || existing.deleted {
        format!(
            "An archived contact matching those details already exists with id={}",
            existing.id
        )
    } else {
        format!(
            "A contact matching those details already exists with id={}",
            existing.id
        )
    };
    IntercomError::new(StatusCode::CONFLICT, "conflict", message)
}

/// The contact that a new user with this external_id or email would collide with.
fn clash<'a>(
    workspace: &'a Workspace,
    role: &str,
    external_id: Option<&str>,
    email: Option<&str>,
    except: Option<&str>,
) -> Option<&'a Contact> {
    workspace.contacts.values().find(|c| {
        Some(c.id.as_str()) != except
            && c.merged_into.is_none()
            && ((external_id.is_some() && c.external_id.as_deref() == external_id)
                || (role == "user"
                    && c.role == "user"
                    && email.is_some()
                    && c.email.as_deref().map(str::to_lowercase) == email.map(str::to_lowercase)))
    })
}

pub async fn create(
    State(emulator): State<Emulator>,
    body: Result<Json<Value>, JsonRejection>,
) -> Reply {
    let fields = ContactFields(body_object(body)?);
    let role = fields.string("role")?.flatten();
    let external_id = fields.string("external_id")?.flatten();
    let email = fields.string("email")?.flatten();
    if role.is_none() && external_id.is_none() && email.is_none() {
        return Err(IntercomError::invalid(
            "A contact must have an email, external_id or role",
        ));
    }
    let role = role.unwrap_or_else(|| "user".into());
    if !matches!(role.as_str(), "user" | "lead") {
        return Err(IntercomError::invalid("role must be one of user, lead"));
    }
    let lag = emulator.config.lock().expect("config lock").search_lag;
    let mut workspace = emulator.workspace.lock().expect("workspace lock");
    // Leads do not take a supplied external_id: Intercom keeps one of its own.
    let external_id = if role == "lead" {
        Some(uuid::Uuid::new_v4().to_string())
    } else {
        external_id
    };
    if let Some(existing) = clash(
        &workspace,
        &role,
        external_id.as_deref(),
        email.as_deref(),
        None,
    ) {
        return Err(conflict(existing));
    }
    let custom_attributes = check_custom_attributes(&workspace, &fields)?;
    let now = unix_now();
    let contact = Contact {
        id: workspace.new_id(),
        role,
        external_id,
        email,
        phone: fields.string("phone")?.flatten(),
        name: fields.string("name")?.flatten(),
        avatar: fields.string("avatar")?.flatten(),
        owner_id: fields.integer("owner_id")?.flatten(),
        unsubscribed_from_emails: fields
            .0
            .get("unsubscribed_from_emails")
            .and_then(Value::as_bool)
            .unwrap_or(false),
        created_at: now,
        updated_at: now,
        signed_up_at: fields.integer("signed_up_at")?.flatten(),
        last_seen_at: fields.integer("last_seen_at")?.flatten(),
        custom_attributes: custom_attributes
            .into_iter()
            .filter(|(_, v)| !v.is_null())
            .collect(),
        archived: false,
        company_ids: Vec::new(),
        tag_ids: Vec::new(),
        merged_into: None,
        deleted: false,
        searchable_after: Instant::now() + lag,
    };
    let rendered = contact.to_json();
    let topic = format!("contact.{}.created", contact.role);
    workspace.contacts.insert(contact.id.clone(), contact);
    drop(workspace);
    crate::webhooks::notify(&emulator, &topic, rendered.clone());
    Ok(Json(rendered))
}

pub async fn show(State(emulator): State<Emulator>, Path(id): Path<String>) -> Reply {
    let mut workspace = emulator.workspace.lock().expect("workspace lock");
    Ok(Json(workspace.live_contact(&id)?.to_json()))
}

pub async fn update(
    State(emulator): State<Emulator>,
    Path(id): Path<String>,
    body: Result<Json<Value>, JsonRejection>,
) -> Reply {
    let fields = ContactFields(body_object(body)?);
    let mut workspace = emulator.workspace.lock().expect("workspace lock");
    let current = workspace.live_contact(&id)?.clone();
    let role = fields
        .string("role")?
        .flatten()
        .unwrap_or_else(|| current.role.clone());
    if current.role == "user" && role == "lead" {
        return Err(IntercomError::invalid(
            "user role can't be converted to a lead",
        ));
    }
    if !matches!(role.as_str(), "user" | "lead") {
        return Err(IntercomError::invalid("role must be one of user, lead"));
    }
    let external_id = fields
        .string("external_id")?
        .unwrap_or(current.external_id.clone());
    let email = fields.string("email")?.unwrap_or(current.email.clone());
    if let Some(existing) = clash(
        &workspace,
        &role,
        external_id.as_deref(),
        email.as_deref(),
        Some(&id),
    ) {
        return Err(conflict(existing));
    }
    let custom_attributes = check_custom_attributes(&workspace, &fields)?;
    let contact = workspace.live_contact(&id)?;
    contact.role = role;
    contact.external_id = external_id;
    contact.email = email;
    for (field, slot) in [
        ("phone", &mut contact.phone),
        ("name", &mut contact.name),
        ("avatar", &mut contact.avatar),
    ] {
        if let Some(value) = fields.string(field)? {
            *slot = value;
        }
    }
    for (field, slot) in [
        ("signed_up_at", &mut contact.signed_up_at),
        ("last_seen_at", &mut contact.last_seen_at),
        ("owner_id", &mut contact.owner_id),
    ] {
        if let Some(value) = fields.integer(field)? {
            *slot = value;
        }
    }
    if let Some(flag) = fields
        .0
        .get("unsubscribed_from_emails")
        .and_then(Value::as_bool)
    {
        contact.unsubscribed_from_emails = flag;
    }
    for (name, value) in custom_attributes {
        if value.is_null() {
            contact.custom_attributes.remove(&name);
        } else {
            contact.custom_attributes.insert(name, value);
        }
    }
    if contact.custom_attributes.len() > MAX_CUSTOM_ATTRIBUTES {
        return Err(IntercomError::invalid("too many custom attributes"));
    }
    contact.updated_at = unix_now();
    Ok(Json(contact.to_json()))
}

pub async fn find_by_external_id(
    State(emulator): State<Emulator>,
    Path(external_id): Path<String>,
) -> Reply {
    let workspace = emulator.workspace.lock().expect("workspace lock");
    workspace
        .contacts
        .values()
        .find(|c| {
            c.role == "user"
                && !c.deleted
                && !c.archived
                && c.external_id.as_deref() == Some(&external_id)
        })
        .map(|c| Json(c.to_json()))
        .ok_or_else(|| IntercomError::not_found("User Not Found"))
}

#[derive(Deserialize)]
pub struct Paging {
    per_page: Option<usize>,
    starting_after: Option<String>,
}

/// A page of contacts in id order, with Intercom's cursor `pages` object.
fn page(matching: Vec<&Contact>, paging: &Paging) -> Result<Value, IntercomError> {
    let per_page = paging.per_page.unwrap_or(DEFAULT_PAGE);
    if !(1..=MAX_PAGE).contains(&per_page) {
        return Err(IntercomError::invalid(format!(
            "per_page must be between 1 and {MAX_PAGE}"
        )));
    }
    let total = matching.len();
    let start = match &paging.starting_after {
        Some(cursor) => matching
            .iter()
            .position(|c| &c.id == cursor)
            .map_or(total, |i| i + 1),
        None => 0,
    };
    let data: Vec<Value> = matching
        .iter()
        .skip(start)
        .take(per_page)
        .map(|c| c.to_json())
        .collect();
    let mut pages = json!({
        "type": "pages",
        "page": start / per_page + 1,
        "per_page": per_page,
        "total_pages": total.div_ceil(per_page).max(1),
    });
    if start + per_page < total {
        let last = &matching[start + per_page - 1].id;
        pages["next"] = json!({"per_page": per_page, "starting_after": last});
    }
    Ok(json!({"type": "list", "data": data, "total_count": total, "pages": pages}))
}

pub async fn list(State(emulator): State<Emulator>, Query(paging): Query<Paging>) -> Reply {
    let workspace = emulator.workspace.lock().expect("workspace lock");
    let contacts: Vec<&Contact> = workspace
        .contacts
        .values()
        .filter(|c| !c.deleted && c.merged_into.is_none())
        .collect();
    page(contacts, &paging).map(Json)
}

pub async fn search(
    State(emulator): State<Emulator>,
    body: Result<Json<Value>, JsonRejection>,
) -> Reply {
    let body = body_object(body)?;
    let query = body
        .get("query")
        .ok_or_else(|| IntercomError::invalid("query is required"))?;
    let paging: Paging = match body.get("pagination") {
        Some(p) => serde_json::from_value(p.clone())
            .map_err(|e| IntercomError::invalid(format!("pagination: {e}")))?,
        None => Paging {
            per_page: None,
            starting_after: None,
        },
    };
    let now = Instant::now();
    let workspace = emulator.workspace.lock().expect("workspace lock");
    let mut matching = Vec::new();
    for contact in workspace.contacts.values() {
        // The index is eventually consistent: new contacts appear only after the lag.
        if contact.deleted
            || contact.archived
            || contact.merged_into.is_some()
            || contact.searchable_after > now
        {
            continue;
        }
        if search::matches(query, &contact.to_json()).map_err(IntercomError::invalid)? {
            matching.push(contact);
        }
    }
    page(matching, &paging).map(Json)
}

fn set_archived(emulator: &Emulator, id: &str, archived: bool) -> Reply {
    let mut workspace = emulator.workspace.lock().expect("workspace lock");
    let contact = workspace.live_contact(id)?;
    contact.archived = archived;
    Ok(Json(
        json!({"type": "contact", "id": contact.id, "external_id": contact.external_id, "archived": archived}),
    ))
}

pub async fn archive(State(emulator): State<Emulator>, Path(id): Path<String>) -> Reply {
    set_archived(&emulator, &id, true)
}

pub async fn unarchive(State(emulator): State<Emulator>, Path(id): Path<String>) -> Reply {
    set_archived(&emulator, &id, false)
}

pub async fn delete(State(emulator): State<Emulator>, Path(id): Path<String>) -> Reply {
    let mut workspace = emulator.workspace.lock().expect("workspace lock");
    let contact = workspace.live_contact(&id)?;
    contact.deleted = true;
    Ok(Json(
        json!({"type": "contact", "id": contact.id, "external_id": contact.external_id, "deleted": true}),
    ))
}

/// `POST /contacts/merge {from: lead, into: user}`: the lead disappears into the user; its
/// custom attributes fill the user's gaps.
pub async fn merge(
    State(emulator): State<Emulator>,
    body: Result<Json<Value>, JsonRejection>,
) -> Reply {
    let body = body_object(body)?;
    let (Some(from), Some(into)) = (
        body.get("from").and_then(Value::as_str).map(str::to_owned),
        body.get("into").and_then(Value::as_str).map(str::to_owned),
    ) else {
        return Err(IntercomError::invalid("from and into are required"));
    };
    let mut workspace = emulator.workspace.lock().expect("workspace lock");
    let lead = workspace.live_contact(&from)?.clone();
    if lead.role != "lead" {
        return Err(IntercomError::invalid("from must be a lead"));
    }
    let user = workspace.live_contact(&into)?;
    if user.role != "user" {
        return Err(IntercomError::invalid("into must be a user"));
    }
    for (name, value) in lead.custom_attributes {
        user.custom_attributes.entry(name).or_insert(value);
    }
    if user.email.is_none() {
        user.email = lead.email;
    }
    user.updated_at = unix_now();
    let rendered = user.to_json();
    let merged = workspace.contacts.get_mut(&from).expect("checked above");
    merged.merged_into = Some(into);
    Ok(Json(rendered))
}
