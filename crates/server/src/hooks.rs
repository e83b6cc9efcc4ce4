//! `POST /hooks/intercom`: Intercom's webhook notifications, signed with the app's client
//! secret (`X-Hub-Signature: sha1=<hex HMAC-SHA1 of the raw body>`); `HEAD` answers Intercom's
//! endpoint check, a `ping` is acknowledged and not kept. A notification is committed before the
//! 200 (Intercom waits 5 seconds) and de-duplicated by its id.
//!
//! `POST /hooks/segment`: Segment's Webhooks destination (classic or Actions) and Destination
//! Functions posting the Segment message itself, one object or a JSON array (batch mode).
//!
//! With `segment.shared_secret` set, `X-Signature` must be the hex HMAC-SHA1 of the body, or, for
//! an array, of its first element (that is what Segment signs). Note what this means: in batch
//! mode only the first event is authenticated by the signature, a limit of Segment's scheme.

use crate::body::{self, Limit};
use crate::error::ApiError;
use crate::ingest::{store_batch, store_single};
use crate::{AppState, signature};
use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::HeaderMap;
use chrono::Utc;
use junction_model::{Envelope, first_array_element, parse_webhook};
use serde_json::Value;

/// Events from the webhook endpoint are de-duplicated among themselves under this source.
pub const WEBHOOK_SOURCE: &str = "segment-webhook";

pub async fn segment(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    let received_at = Utc::now();
    let bytes = body::read(&headers, body, Limit::WEBHOOK).await?;
    if let Some(secret) = &state.inner.shared_secret {
        let presented = headers
            .get("x-signature")
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| ApiError::unauthorized("missing X-Signature header"))?;
        let signed = first_array_element(&bytes).map_or(&bytes[..], str::as_bytes);
        if !signature::verify(secret.as_bytes(), signed, presented) {
            return Err(ApiError::unauthorized(
                "X-Signature does not match the body (hex HMAC-SHA1 with segment.shared_secret)",
            ));
        }
    }
    let envelope = parse_webhook(&bytes, received_at)?;
    let is_array = bytes.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'[');
    if is_array {
        store_batch(&state, WEBHOOK_SOURCE.into(), received_at, envelope).await
    } else {
        store_single(&state, WEBHOOK_SOURCE.into(), received_at, envelope).await
    }
}

/// Intercom notifications are de-duplicated among themselves under this source.
pub const INTERCOM_SOURCE: &str = "intercom";

pub async fn intercom(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    let received_at = Utc::now();
    let bytes = body::read(&headers, body, Limit::WEBHOOK).await?;
    let Some(secret) = &state.inner.intercom_secret else {
        return Err(ApiError::unauthorized(
            "intercom.client_secret is not configured: Intercom webhooks are refused",
        ));
    };
    let presented = headers
        .get("x-hub-signature")
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| ApiError::unauthorized("missing X-Hub-Signature header"))?;
    let hex = presented.strip_prefix("sha1=").unwrap_or(presented);
    if !signature::verify(secret.as_bytes(), &bytes, hex) {
        return Err(ApiError::unauthorized(
            "X-Hub-Signature does not match the body (sha1= hex HMAC-SHA1 with intercom.client_secret)",
        ));
    }
    match junction_model::intercom::parse_notification(&bytes, received_at)? {
        None => Ok(Json(
            serde_json::json!({ "success": true, "topic": "ping" }),
        )),
        Some(notification) => {
            let envelope = Envelope {
                write_key: None,
                messages: vec![notification],
                rejected: Vec::new(),
            };
            store_single(&state, INTERCOM_SOURCE.into(), received_at, envelope).await
        }
    }
}

/// `HEAD /hooks/intercom`: Intercom checks that the endpoint answers before saving it.
pub async fn intercom_check() -> axum::http::StatusCode {
    axum::http::StatusCode::OK
}
