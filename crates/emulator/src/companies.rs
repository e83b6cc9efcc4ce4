//! `/companies` (upsert by company_id, get, lookup by company_id or name) and attaching
//! contacts to companies (`/contacts/{id}/companies`).

use crate::Emulator;
use crate::error::IntercomError;
use crate::workspace::{Company, unix_now};
use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::{Map, Value, json};

/// A contact can belong to at most this many companies.
const MAX_COMPANIES_PER_CONTACT: usize = 1_000;
const FIELDS: [&str; 9] = [
    "company_id",
    "name",
    "plan",
    "size",
    "website",
    "industry",
    "monthly_spend",
    "remote_created_at",
    "custom_attributes",
];

type Reply = Result<Json<Value>, IntercomError>;

fn company_not_found() -> IntercomError {
    IntercomError::new(
        StatusCode::NOT_FOUND,
        "company_not_found",
        "Company Not Found",
    )
}

pub async fn upsert(
    State(emulator): State<Emulator>,
    body: Result<Json<Value>, JsonRejection>,
) -> Reply {
    let body = match body {
        Ok(Json(Value::Object(body))) => body,
        Ok(_) => {
            return Err(IntercomError::invalid(
                "the request body must be a JSON object",
            ));
        }
        Err(e) => return Err(IntercomError::invalid(e.body_text())),
    };
    if let Some(unknown) = body.keys().find(|k| !FIELDS.contains(&k.as_str())) {
        return Err(IntercomError::new(
            StatusCode::BAD_REQUEST,
            "bad_request",
            format!("bad '{unknown}' parameter"),
        ));
    }
    let text = |field: &str| body.get(field).and_then(Value::as_str).map(str::to_owned);
    // Intercom truncates floats here.
    let integer = |field: &str| {
        body.get(field)
            .and_then(|v| v.as_i64().or_else(|| v.as_f64().map(|f| f as i64)))
    };
    let company_id =
        text("company_id").ok_or_else(|| IntercomError::invalid("company_id is required"))?;
    let mut workspace = emulator.workspace.lock().expect("workspace lock");
    let now = unix_now();
    let existing = workspace
        .companies
        .values()
        .find(|c| c.company_id == company_id)
        .map(|c| c.id.clone());
    let id = match existing {
        Some(id) => id,
        None => {
            let id = workspace.new_id();
            workspace.companies.insert(
                id.clone(),
                Company {
                    id: id.clone(),
                    company_id,
                    name: None,
                    plan: None,
                    size: None,
                    website: None,
                    industry: None,
                    monthly_spend: None,
                    remote_created_at: None,
                    created_at: now,
                    updated_at: now,
                    custom_attributes: Map::new(),
                    user_count: 0,
                },
            );
            id
        }
    };
    let company = workspace
        .companies
        .get_mut(&id)
        .expect("just found or inserted");
    for (field, slot) in [
        ("name", &mut company.name),
        ("plan", &mut company.plan),
        ("website", &mut company.website),
        ("industry", &mut company.industry),
    ] {
        if let Some(value) = text(field) {
            *slot = Some(value);
        }
    }
    for (field, slot) in [
        ("size", &mut company.size),
        ("monthly_spend", &mut company.monthly_spend),
        ("remote_created_at", &mut company.remote_created_at),
    ] {
        if let Some(value) = integer(field) {
            *slot = Some(value);
        }
    }
    if let Some(Value::Object(attributes)) = body.get("custom_attributes") {
        for (name, value) in attributes {
            if value.is_object() || value.is_array() {
                return Err(IntercomError::invalid(format!(
                    "Custom attribute '{name}' must be a string, number or boolean"
                )));
            }
            company
                .custom_attributes
                .insert(name.clone(), value.clone());
        }
    }
    company.updated_at = now;
    Ok(Json(company.to_json()))
}

pub async fn show(State(emulator): State<Emulator>, Path(id): Path<String>) -> Reply {
    let workspace = emulator.workspace.lock().expect("workspace lock");
    workspace
        .companies
        .get(&id)
        .map(|c| Json(c.to_json()))
        .ok_or_else(company_not_found)
}

#[derive(Deserialize)]
pub struct Lookup {
    company_id: Option<String>,
    name: Option<String>,
}

/// `GET /companies?company_id=` or `?name=`; without either, the list of companies.
pub async fn lookup(State(emulator): State<Emulator>, Query(lookup): Query<Lookup>) -> Reply {
    let workspace = emulator.workspace.lock().expect("workspace lock");
    if lookup.company_id.is_none() && lookup.name.is_none() {
        let data: Vec<Value> = workspace.companies.values().map(Company::to_json).collect();
        return Ok(Json(
            json!({"type": "list", "data": data, "total_count": data.len(),
                              "pages": {"type": "pages", "page": 1, "per_page": data.len().max(1), "total_pages": 1}}),
        ));
    }
    workspace
        .companies
        .values()
        .find(|c| {
            Some(&c.company_id) == lookup.company_id.as_ref()
                || (lookup.name.is_some() && c.name == lookup.name)
        })
        .map(|c| Json(c.to_json()))
        .ok_or_else(company_not_found)
}

pub async fn attach(
    State(emulator): State<Emulator>,
    Path(contact_id): Path<String>,
    body: Result<Json<Value>, JsonRejection>,
) -> Reply {
    let company_id = body
        .ok()
        .and_then(|Json(body)| body.get("id").and_then(Value::as_str).map(str::to_owned))
        .ok_or_else(|| {
            IntercomError::new(
                StatusCode::BAD_REQUEST,
                "parameter_not_found",
                "company not specified",
            )
        })?;
    let mut workspace = emulator.workspace.lock().expect("workspace lock");
    if !workspace.companies.contains_key(&company_id) {
        return Err(company_not_found());
    }
    let contact = workspace.live_contact(&contact_id)?;
    if !contact.company_ids.contains(&company_id) {
        if contact.company_ids.len() >= MAX_COMPANIES_PER_CONTACT {
            return Err(IntercomError::new(
                StatusCode::BAD_REQUEST,
                "contact_company_limit_exceeded",
                "A contact can belong to at most 1000 companies",
            ));
        }
        contact.company_ids.push(company_id.clone());
        let company = workspace
            .companies
            .get_mut(&company_id)
            .expect("checked above");
        company.user_count += 1;
    }
    Ok(Json(workspace.companies[&company_id].to_json()))
}

pub async fn detach(
    State(emulator): State<Emulator>,
    Path((contact_id, company_id)): Path<(String, String)>,
) -> Reply {
    let mut workspace = emulator.workspace.lock().expect("workspace lock");
    if !workspace.companies.contains_key(&company_id) {
        return Err(company_not_found());
    }
    let contact = workspace.live_contact(&contact_id)?;
    let before = contact.company_ids.len();
    contact.company_ids.retain(|id| id != &company_id);
    let detached = contact.company_ids.len() < before;
    let company = workspace
        .companies
        .get_mut(&company_id)
        .expect("checked above");
    if detached {
        company.user_count -= 1;
    }
    Ok(Json(company.to_json()))
}

pub async fn of_contact(State(emulator): State<Emulator>, Path(contact_id): Path<String>) -> Reply {
    let mut workspace = emulator.workspace.lock().expect("workspace lock");
    let ids = workspace.live_contact(&contact_id)?.company_ids.clone();
    let data: Vec<Value> = ids
        .iter()
        .filter_map(|id| workspace.companies.get(id))
        .map(Company::to_json)
        .collect();
    Ok(Json(
        json!({"type": "list", "data": data, "total_count": data.len(),
                   "pages": {"type": "pages", "page": 1, "per_page": 50, "total_pages": 1}}),
    ))
}
