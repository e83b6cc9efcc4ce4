//! Intercom webhook notifications as Junction keeps them: one message per notification, keyed
//! by its id (Intercom may deliver one twice), timed by its `created_at`, and ordered under the
//! Intercom contact it is about.
//!
//! ```json
//! {"type": "notification_event", "topic": "contact.lead.created", "id": "notif_…",
//!  "created_at": 1700000000, "app_id": "…", "data": {"type": "notification_event_data",
//!  "item": {"type": "contact", "id": "…", …}}}
//! ```

use crate::limits::MAX_MESSAGE_BYTES;
use crate::message::{Message, MessageType};
use crate::parse::RequestError;
use chrono::{DateTime, Utc};
use serde_json::{Map, Value};

/// Intercom's notification sent when a webhook subscription is saved or tested.
pub const PING_TOPIC: &str = "ping";

/// A notification, or `None` for a ping (nothing to keep).
pub fn parse_notification(
    body: &[u8],
    received_at: DateTime<Utc>,
) -> Result<Option<Message>, RequestError> {
    if body.len() > MAX_MESSAGE_BYTES * 4 {
        return Err(RequestError::TooLarge {
            field: "notification",
            limit: MAX_MESSAGE_BYTES * 4,
            what: "notification",
        });
    }
    let value: Value = serde_json::from_slice(body).map_err(|e| RequestError::MalformedJson {
        line: e.line(),
        column: e.column(),
        detail: e.to_string(),
    })?;
    let Value::Object(mut object) = value else {
        return Err(invalid("notification", "must be a JSON object"));
    };
    let text = |object: &Map<String, Value>, field: &'static str| {
        object
            .get(field)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .ok_or_else(|| invalid(field, "must be a non-empty string"))
    };
    let topic = text(&object, "topic")?;
    if topic == PING_TOPIC {
        return Ok(None);
    }
    if object.get("type").and_then(Value::as_str) != Some("notification_event") {
        return Err(invalid("type", "must be \"notification_event\""));
    }
    let id = text(&object, "id")?;
    let created_at = object
        .get("created_at")
        .and_then(Value::as_i64)
        .ok_or_else(|| invalid("created_at", "must be Unix seconds"))?;
    let item = object
        .get("data")
        .and_then(|d| d.get("item"))
        .filter(|i| i.is_object())
        .ok_or_else(|| invalid("data.item", "must be an object"))?;
    let contact =
        contact_of(&topic, item).ok_or_else(|| invalid("data.item", "names no contact"))?;
    object.insert("receivedAt".into(), received_at.to_rfc3339().into());
    Ok(Some(Message {
        kind: MessageType::Intercom,
        message_id: id,
        user_id: None,
        // The Intercom contact the notification is about: what its events are ordered by.
        anonymous_id: Some(contact),
        event: Some(topic),
        timestamp: DateTime::from_timestamp(created_at, 0).unwrap_or(received_at),
        received_at,
        body: object,
        exact: Vec::new(),
    }))
}

/// The Intercom contact a notification is about: the item itself for contact topics, the
/// conversation's author or first contact for conversation topics.
fn contact_of(topic: &str, item: &Value) -> Option<String> {
    let id = |v: &Value| v.as_str().filter(|s| !s.is_empty()).map(str::to_owned);
    if topic.starts_with("conversation") {
        let author = &item["source"]["author"];
        if matches!(author["type"].as_str(), Some("user" | "lead" | "contact")) {
            return id(&author["id"]);
        }
        return id(&item["contacts"]["contacts"][0]["id"]);
    }
    id(&item["id"])
}

fn invalid(field: &'static str, rule: &str) -> RequestError {
    RequestError::InvalidBody {
        field,
        rule: rule.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(value: Value) -> Result<Option<Message>, RequestError> {
        parse_notification(value.to_string().as_bytes(), Utc::now())
    }

    #[test]
    fn contact_and_conversation_notifications() {
        let lead = parse(json!({"type": "notification_event", "topic": "contact.lead.created", "id": "notif_1",
            "created_at": 1_700_000_000, "data": {"item": {"type": "contact", "id": "c1", "role": "lead"}}})).unwrap().unwrap();
        assert_eq!(
            (
                lead.kind,
                lead.identity(),
                lead.event.as_deref(),
                lead.message_id.as_str()
            ),
            (
                MessageType::Intercom,
                "c1",
                Some("contact.lead.created"),
                "notif_1"
            )
        );
        assert_eq!(lead.timestamp.timestamp(), 1_700_000_000);
        let conversation = parse(json!({"type": "notification_event", "topic": "conversation.user.created", "id": "notif_2",
            "created_at": 1_700_000_001, "data": {"item": {"type": "conversation", "id": "conv1",
            "source": {"author": {"type": "lead", "id": "c2"}}}}})).unwrap().unwrap();
        assert_eq!(conversation.identity(), "c2");
    }

    #[test]
    fn pings_are_acknowledged_and_nonsense_is_refused() {
        assert!(parse(json!({"type": "notification_event", "topic": "ping", "id": "p", "data": {"item": {}}})).unwrap().is_none());
        for (bad, field) in [
            (json!([1]), "notification"),
            (
                json!({"type": "notification_event", "id": "x", "created_at": 1, "data": {"item": {"id": "c"}}}),
                "topic",
            ),
            (
                json!({"type": "notification_event", "topic": "contact.user.updated", "created_at": 1, "data": {"item": {"id": "c"}}}),
                "id",
            ),
            (
                json!({"type": "notification_event", "topic": "contact.user.updated", "id": "x", "data": {"item": {"id": "c"}}}),
                "created_at",
            ),
            (
                json!({"type": "notification_event", "topic": "contact.user.updated", "id": "x", "created_at": 1}),
                "data.item",
            ),
        ] {
            let error = parse(bad.clone()).unwrap_err();
            assert_eq!(error.field(), field, "{bad}");
        }
    }
}
