//! Which calls an action made. Delivery runs each attempt inside [`record`]; the client notes
//! every request it sends there (method, path, status, short excerpts of both bodies, time), so
//! the dead-letter queue and the execution log can show what was sent and what came back.
//! Outside [`record`] nothing is kept.

use serde::Serialize;
use std::future::Future;
use std::sync::{Arc, Mutex};

tokio::task_local! {
    static CALLS: Arc<Mutex<Vec<CallRecord>>>;
}

/// How much of a body is kept.
pub const EXCERPT: usize = 600;

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CallRecord {
    pub method: String,
    /// The path (and never the host's credentials or a webhook's secret path).
    pub path: String,
    /// `None` when no response came (time-out, connection dropped).
    pub status: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub response: Option<String>,
    pub ms: u64,
}

/// Runs `work`, returning its output and the calls it made.
pub async fn record<F: Future>(work: F) -> (F::Output, Vec<CallRecord>) {
    let calls = Arc::new(Mutex::new(Vec::new()));
    let output = CALLS.scope(Arc::clone(&calls), work).await;
    let calls = std::mem::take(&mut *calls.lock().expect("call record lock"));
    (output, calls)
}

/// Notes a call, when inside [`record`].
pub fn note(call: CallRecord) {
    let _ = CALLS.try_with(|calls| calls.lock().expect("call record lock").push(call));
}

/// The start of a body, as text.
pub fn excerpt(bytes: &[u8]) -> Option<String> {
    if bytes.is_empty() {
        return None;
    }
    let text = String::from_utf8_lossy(bytes);
    Some(match text.char_indices().nth(EXCERPT) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.into_owned(),
    })
}
