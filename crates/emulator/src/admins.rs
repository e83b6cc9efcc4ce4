//! `/me` and `/admins`: the one admin the emulated workspace has, the one its token belongs to.

use crate::tags::ADMIN_ID;
use crate::workspace::WORKSPACE_ID;
use axum::Json;
use serde_json::{Value, json};

/// The workspace's one admin, as Intercom renders an `admin`.
pub(crate) fn admin() -> Value {
    json!({
        "type": "admin",
        "id": ADMIN_ID,
        "name": "Emulator Admin",
        "email": "admin@emulator.invalid",
        "job_title": "Support",
        "away_mode_enabled": false,
        "away_mode_reassign": false,
        "has_inbox_seat": true,
        "team_ids": [],
    })
}

pub async fn me() -> Json<Value> {
    let mut me = admin();
    me["email_verified"] = true.into();
    me["app"] = json!({"type": "app", "id_code": WORKSPACE_ID, "name": "Junction emulator", "region": "US",
                       "timezone": "UTC", "created_at": 1_700_000_000, "identity_verification": false});
    Json(me)
}

pub async fn list() -> Json<Value> {
    Json(json!({"type": "admin.list", "admins": [admin()]}))
}
