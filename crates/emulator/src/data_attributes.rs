//! `GET /data_attributes` and `POST /data_attributes`: the workspace's custom attributes, which
//! must exist before a contact can carry them (Intercom refuses unknown ones with 400).

use crate::Emulator;
use crate::error::IntercomError;
use crate::workspace::{DataAttribute, unix_now};
use axum::Json;
use axum::extract::{Query, State};
use serde::Deserialize;
use serde_json::{Value, json};

/// Intercom's limit on custom data attributes per workspace (archived ones count too).
pub const MAX_CUSTOM_ATTRIBUTES: usize = 250;
const DATA_TYPES: [&str; 6] = ["string", "integer", "float", "boolean", "date", "datetime"];

#[derive(Deserialize)]
pub struct ListQuery {
    model: Option<String>,
}

pub async fn list(State(emulator): State<Emulator>, Query(query): Query<ListQuery>) -> Json<Value> {
    let workspace = emulator.workspace.lock().expect("workspace lock");
    let data: Vec<Value> = workspace
        .data_attributes
        .iter()
        .filter(|a| query.model.as_deref().is_none_or(|m| m == a.model))
        .map(DataAttribute::to_json)
        .collect();
    Json(json!({"type": "list", "data": data}))
}

pub async fn create(
    State(emulator): State<Emulator>,
    body: Result<Json<Value>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<Value>, IntercomError> {
    let Json(body) = body.map_err(|e| IntercomError::invalid(e.body_text()))?;
    let text = |field: &str| body.get(field).and_then(Value::as_str).map(str::to_owned);
    let (Some(name), Some(model), Some(data_type)) =
        (text("name"), text("model"), text("data_type"))
    else {
        return Err(IntercomError::invalid(
            "name, model and data_type are required",
        ));
    };
    if !matches!(model.as_str(), "contact" | "company") {
        return Err(IntercomError::invalid(
            "model must be one of contact, company",
        ));
    }
    if !DATA_TYPES.contains(&data_type.as_str()) {
        return Err(IntercomError::invalid("Data Type isn't an option"));
    }
    let valid_name = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_alphanumeric() || c == '-' || c == '_' || c == ' ');
    if !valid_name {
        return Err(IntercomError::invalid(
            "Your name for this attribute must only contain alphanumeric characters, currency symbols, and hyphens",
        ));
    }
    let mut workspace = emulator.workspace.lock().expect("workspace lock");
    if workspace.data_attributes.iter().any(|a| a.name == name) {
        return Err(IntercomError::invalid(format!(
            "You already have '{name}' in your {model} data. To save this as new people data, use a different name."
        )));
    }
    if workspace
        .data_attributes
        .iter()
        .filter(|a| a.custom)
        .count()
        >= MAX_CUSTOM_ATTRIBUTES
    {
        return Err(IntercomError::invalid(format!(
            "You have reached the limit of {MAX_CUSTOM_ATTRIBUTES} custom data attributes"
        )));
    }
    let attribute = DataAttribute {
        id: workspace.data_attributes.len() as i64 + 1,
        name,
        model,
        data_type: if data_type == "datetime" {
            "date".into()
        } else {
            data_type
        },
        description: text("description").unwrap_or_default(),
        custom: true,
        created_at: unix_now(),
    };
    let rendered = attribute.to_json();
    workspace.data_attributes.push(attribute);
    Ok(Json(rendered))
}
