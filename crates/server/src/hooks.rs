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
use junction_model::{first_array_element, parse_webhook};
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
