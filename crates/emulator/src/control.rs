//! `GET|PUT /_emulator/config`: read and change a running emulator's behaviour (token, rate
//! limit, search lag, faults), so a test can turn a fault on mid-run.

use crate::Emulator;
use crate::error::IntercomError;
use crate::faults::Faults;
use axum::Json;
use axum::extract::State;
use axum::extract::rejection::JsonRejection;
use serde::{Deserialize, Serialize};
use std::time::Duration;

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ControlSettings {
    /// `null` accepts any token. Absent from a PUT: unchanged.
    #[serde(default, skip_serializing)]
    token: Option<Option<String>>,
    rate_limit: Option<u32>,
    search_lag_ms: Option<u64>,
    faults: Option<Faults>,
}

fn current(emulator: &Emulator) -> ControlSettings {
    let config = emulator.config.lock().expect("config lock");
    ControlSettings {
        token: None,
        rate_limit: Some(config.rate_limit),
        search_lag_ms: Some(config.search_lag.as_millis() as u64),
        faults: Some(emulator.faults.get()),
    }
}

pub async fn show(State(emulator): State<Emulator>) -> Json<ControlSettings> {
    Json(current(&emulator))
}

pub async fn change(
    State(emulator): State<Emulator>,
    body: Result<Json<ControlSettings>, JsonRejection>,
) -> Result<Json<ControlSettings>, IntercomError> {
    let Json(change) = body.map_err(|e| IntercomError::invalid(e.body_text()))?;
    {
        let mut config = emulator.config.lock().expect("config lock");
        if let Some(token) = change.token {
            config.token = token;
        }
        if let Some(limit) = change.rate_limit {
            config.rate_limit = limit;
            emulator.limiter.set_limit(limit);
        }
        if let Some(lag) = change.search_lag_ms {
            config.search_lag = Duration::from_millis(lag);
        }
    }
    if let Some(faults) = change.faults {
        emulator.faults.set(faults);
    }
    Ok(Json(current(&emulator)))
}
