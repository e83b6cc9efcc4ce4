//! `POST /hooks/intercom`: Intercom's webhook notifications, signed with the app's client
//! secret (`X-Hub-Signature: sha1=<hex HMAC-SHA1 of the raw body>`); `HEAD` answers Intercom's
//! endpoint check, a `ping` is acknowledged and not kept. A notification is committed before the
//! 200 (Intercom waits 5 seconds) and de-duplicated by its id.
//!
//! `POST /hooks/segment`: Segment's Webhooks destination (classic or Actions) and Destination
//! Functions posting the Segment message itself, one object or a JSON array (batch mode).
//! Nothing is stored unless the request proves where it came from, and every stored element is
//! covered by that proof:
//! - `Authorization: Basic base64(<write key>:)` with one of `segment.write_keys` (Webhooks
//!   (Actions) sends any header a mapping sets) authenticates the whole request;
//! - otherwise `X-Signature`, the hex HMAC-SHA1 with `segment.shared_secret`: of the whole body,
//!   or, as Segment signs a batch, of the array's *first element only*. That covers a batch of
//!   one; a longer batch signed that way is refused (401), because its other elements would ride
//!   in unauthenticated — such senders add the Authorization header.
//! - with neither configured, the endpoint refuses everything.

use crate::body::{self, Limit};
use crate::error::ApiError;
use crate::ingest::{store_batch, store_single};
use crate::{AppState, auth, signature};
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
    authenticate_segment_webhook(&state, &headers, &bytes)?;
    let envelope = parse_webhook(&bytes, received_at)?;
    let is_array = bytes.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'[');
    if is_array {
        store_batch(&state, WEBHOOK_SOURCE.into(), received_at, envelope).await
    } else {
        store_single(&state, WEBHOOK_SOURCE.into(), received_at, envelope).await
    }
}

/// Checks that the request proves its origin for every element it carries (see the module's
/// documentation).
fn authenticate_segment_webhook(
    state: &AppState,
    headers: &HeaderMap,
    bytes: &[u8],
) -> Result<(), ApiError> {
    if let Some(key) = auth::basic_write_key(headers)? {
        if !state.inner.write_keys.is_configured() {
            return Err(ApiError::unauthorized(
                "no segment.write_keys are configured, so no write key can authenticate a webhook",
            ));
        }
        state.inner.write_keys.authorize(Some(&key))?;
        return Ok(());
    }
    let Some(secret) = &state.inner.shared_secret else {
        return Err(ApiError::unauthorized(
            "authenticate with Authorization: Basic <write key> (a header in the Webhooks mapping), or sign with X-Signature using segment.shared_secret",
        ));
    };
    let presented = headers
        .get("x-signature")
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| {
            ApiError::unauthorized("missing X-Signature header (or Authorization with a write key)")
        })?;
    if signature::verify(secret.as_bytes(), bytes, presented) {
        return Ok(());
    }
    let Some((first, count)) = first_array_element(bytes) else {
        return Err(ApiError::unauthorized(
            "X-Signature does not match the body (hex HMAC-SHA1 with segment.shared_secret)",
        ));
    };
    if !signature::verify(secret.as_bytes(), first.as_bytes(), presented) {
        return Err(ApiError::unauthorized(
            "X-Signature does not match the body or its first element (hex HMAC-SHA1 with segment.shared_secret)",
        ));
    }
    if count > 1 {
        return Err(ApiError::unauthorized(format!(
            "X-Signature covers only the first of the batch's {count} events (that is what Segment signs); add Authorization: Basic <write key> to the Webhooks mapping's headers to send batches"
        )));
    }
    Ok(())
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
