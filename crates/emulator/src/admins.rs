//! `/me` and `/admins`: the emulated workspace's team. The token belongs to the first admin;
//! the others are teammates that workflows assign to (two sales reps and a success manager).

use crate::tags::ADMIN_ID;
use crate::workspace::WORKSPACE_ID;
use axum::Json;
use serde_json::{Value, json};

/// The team: id, name, email, job title.
pub(crate) const TEAM: [(&str, &str, &str, &str); 4] = [
    (
        ADMIN_ID,
        "Emulator Admin",
        "admin@emulator.invalid",
        "Support",
    ),
    (
        "991267002",
        "Ada Sales",
        "ada@emulator.invalid",
        "Account Executive",
    ),
    (
        "991267003",
        "Bo Sales",
        "bo@emulator.invalid",
        "Account Executive",
    ),
    (
        "991267004",
        "Cy Success",
        "cy@emulator.invalid",
        "Customer Success Manager",
    ),
];

/// Whether the id is one of the workspace's admins.
pub(crate) fn is_admin(id: &str) -> bool {
    TEAM.iter().any(|(admin, ..)| *admin == id)
}

/// The admin whose token the emulator accepts, as Intercom renders an `admin`.
pub(crate) fn admin() -> Value {
    teammate(TEAM[0])
}

fn teammate((id, name, email, job_title): (&str, &str, &str, &str)) -> Value {
    json!({
        "type": "admin",
        "id": id,
        "name": name,
        "email": email,
        "job_title": job_title,
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
    let admins: Vec<Value> = TEAM.into_iter().map(teammate).collect();
    Json(json!({"type": "admin.list", "admins": admins}))
}
