//! `GET /api/config`: the configuration in force (a version hash, when it was loaded, its
//! workflows) and the last reload that was refused, with why. The binary keeps it up to date
//! as it loads and reloads (`junction serve`, SIGHUP or `--watch`).

use crate::AppState;
use crate::auth::require_admin;
use crate::error::ApiError;
use axum::Json;
use axum::extract::State;
use axum::http::HeaderMap;
use serde::Serialize;

/// The configuration in force, and the last refused reload.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ConfigStatus {
    /// A hash of the configuration file and every workflow's source, as loaded.
    pub version: String,
    /// When it was loaded (RFC 3339).
    pub loaded_at: String,
    pub workflows: Vec<String>,
    /// How many reloads have been put in force since the start.
    pub reloads: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_refused: Option<RefusedReload>,
}

/// A reload that was refused: the configuration in force stayed.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RefusedReload {
    pub at: String,
    /// What was wrong, with the file, line and column where it is known.
    pub error: String,
}

pub type SharedConfigStatus = std::sync::Arc<std::sync::RwLock<ConfigStatus>>;

pub async fn show(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<ConfigStatus>, ApiError> {
    require_admin(state.inner.admin_token.as_deref(), &headers)?;
    let status = state
        .inner
        .config_status
        .as_ref()
        .map(|status| status.read().expect("config status lock").clone())
        .unwrap_or_default();
    Ok(Json(status))
}
