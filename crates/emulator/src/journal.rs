//! Every request the emulator received, in order, for tests to inspect
//! (`GET /_emulator/requests`) and reset (`DELETE /_emulator/requests`). The Authorization
//! header is not kept.

use crate::Emulator;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;
use serde::Serialize;
use std::sync::Mutex;

#[derive(Debug, Clone, Serialize)]
pub struct JournalEntry {
    /// When the request arrived, Unix milliseconds (tests bucket it into rate-limit windows).
    pub received_ms: u64,
    pub method: String,
    pub path: String,
    pub query: Option<String>,
    pub intercom_version: Option<String>,
    pub status: u16,
    /// The request body, parsed when it is JSON.
    pub body: serde_json::Value,
    /// The response body, parsed when it is JSON (`null` when empty or cut off).
    pub response: serde_json::Value,
}

#[derive(Default)]
pub struct Journal {
    entries: Mutex<Vec<JournalEntry>>,
}

impl Journal {
    pub fn entries(&self) -> Vec<JournalEntry> {
        self.entries.lock().expect("journal lock").clone()
    }
}

/// Bodies above this are not kept whole.
const MAX_KEPT_BODY: usize = 1024 * 1024;

pub async fn record(State(emulator): State<Emulator>, request: Request, next: Next) -> Response {
    if request.uri().path().starts_with("/_emulator") {
        return next.run(request).await;
    }
    let (parts, body) = request.into_parts();
    let bytes = axum::body::to_bytes(body, MAX_KEPT_BODY)
        .await
        .unwrap_or_else(|_| Bytes::new());
    let parsed = if bytes.is_empty() {
        serde_json::Value::Null
    } else {
        serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| serde_json::Value::String(String::from_utf8_lossy(&bytes).into()))
    };
    let received_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let mut entry = JournalEntry {
        received_ms,
        method: parts.method.to_string(),
        path: parts.uri.path().to_owned(),
        query: parts.uri.query().map(str::to_owned),
        intercom_version: parts
            .headers
            .get("intercom-version")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
        status: 0,
        body: parsed,
        response: serde_json::Value::Null,
    };
    let response = next
        .run(Request::from_parts(parts, Body::from(bytes)))
        .await;
    entry.status = response.status().as_u16();
    let (head, body) = response.into_parts();
    let response = match axum::body::to_bytes(body, MAX_KEPT_BODY).await {
        Ok(bytes) => {
            entry.response = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
            Response::from_parts(head, Body::from(bytes))
        }
        // An injected dropped connection: keep dropping it.
        Err(_) => {
            let cut = futures_util::stream::once(async {
                Err::<Bytes, _>(std::io::Error::other("injected connection reset"))
            });
            Response::from_parts(head, Body::from_stream(cut))
        }
    };
    emulator
        .journal
        .entries
        .lock()
        .expect("journal lock")
        .push(entry);
    response
}

pub async fn list(State(emulator): State<Emulator>) -> axum::Json<Vec<JournalEntry>> {
    axum::Json(emulator.journal.entries())
}

pub async fn clear(State(emulator): State<Emulator>) -> axum::http::StatusCode {
    emulator
        .journal
        .entries
        .lock()
        .expect("journal lock")
        .clear();
    axum::http::StatusCode::NO_CONTENT
}
