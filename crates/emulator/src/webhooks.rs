//! Webhook notifications, as an Intercom app sends them: when a contact or a conversation is
//! created in the emulator, a `notification_event` is POSTed to the configured URL, signed with
//! `X-Hub-Signature: sha1=<hex HMAC-SHA1 of the body with the client secret>`. This makes the
//! Intercom → Junction → Segment round trip testable on one machine.

use crate::Emulator;
use crate::workspace::WORKSPACE_ID;
use hmac::{Hmac, KeyInit, Mac};
use serde_json::{Value, json};
use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Debug, Clone)]
pub struct Webhook {
    pub url: String,
    /// The app's client secret.
    pub secret: String,
}

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// The signature Intercom puts in `X-Hub-Signature` for this body.
pub fn signature(secret: &str, body: &[u8]) -> String {
    let mut mac =
        Hmac::<sha1::Sha1>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key");
    mac.update(body);
    format!("sha1={}", hex::encode(mac.finalize().into_bytes()))
}

/// Sends a notification of `topic` about `item`, when a webhook is configured (in the
/// background: the API answer does not wait for it).
pub fn notify(emulator: &Emulator, topic: &str, item: Value) {
    let Some(webhook) = emulator.webhook.lock().expect("webhook lock").clone() else {
        return;
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let notification = json!({
        "type": "notification_event",
        "app_id": WORKSPACE_ID,
        "id": format!("notif_{:08}", NEXT_ID.fetch_add(1, Ordering::SeqCst)),
        "topic": topic,
        "delivery_status": "pending",
        "delivery_attempts": 1,
        "created_at": now,
        "data": {"type": "notification_event_data", "item": item},
    });
    let body = notification.to_string();
    let signature = signature(&webhook.secret, body.as_bytes());
    emulator
        .webhooks_sent
        .lock()
        .expect("webhook log lock")
        .push((body.clone(), signature.clone()));
    tokio::spawn(async move {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = reqwest::Client::new();
        let sent = client
            .post(&webhook.url)
            .header("content-type", "application/json")
            .header("x-hub-signature", signature)
            .body(body)
            .send()
            .await;
        if let Err(error) = sent {
            tracing::warn!(%error, "the webhook could not be delivered");
        }
    });
}
