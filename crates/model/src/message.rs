//! A validated Segment message: the six Spec calls, the identity they belong to, and the body
//! exactly as it was sent (plus `messageId` when missing and `receivedAt`).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::fmt;
use std::str::FromStr;

/// The Segment Spec call types, and Intercom's webhook notifications (which Junction keeps in
/// the same log, so that they are planned in order like everything else).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MessageType {
    Identify,
    Track,
    Page,
    Screen,
    Group,
    Alias,
    /// A deletion request (Segment's user deletion, as a Destination Function's `onDelete`
    /// receives it): the user's Intercom contact is deleted and what Junction keeps of them
    /// redacted.
    Delete,
    /// An Intercom webhook notification (`POST /hooks/intercom`); never a Segment call.
    Intercom,
}

impl MessageType {
    /// The Segment calls (not [`MessageType::Intercom`]).
    pub const ALL: [MessageType; 7] = [
        MessageType::Identify,
        MessageType::Track,
        MessageType::Page,
        MessageType::Screen,
        MessageType::Group,
        MessageType::Alias,
        MessageType::Delete,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            MessageType::Identify => "identify",
            MessageType::Track => "track",
            MessageType::Page => "page",
            MessageType::Screen => "screen",
            MessageType::Group => "group",
            MessageType::Alias => "alias",
            MessageType::Delete => "delete",
            MessageType::Intercom => "intercom",
        }
    }

    /// The type named by a Tracking API path segment: the full name or analytics.js's short
    /// form (`/v1/t` for track, …).
    pub fn from_path(segment: &str) -> Option<MessageType> {
        match segment {
            "identify" | "i" => Some(MessageType::Identify),
            "track" | "t" => Some(MessageType::Track),
            "page" | "p" => Some(MessageType::Page),
            "screen" | "s" => Some(MessageType::Screen),
            "group" | "g" => Some(MessageType::Group),
            "alias" | "a" => Some(MessageType::Alias),
            // Not a Segment endpoint: where a Destination Function's `onDelete` forwards.
            "delete" => Some(MessageType::Delete),
            _ => None,
        }
    }
}

impl fmt::Display for MessageType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for MessageType {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        MessageType::ALL
            .into_iter()
            .find(|t| t.as_str() == s)
            .ok_or_else(|| {
                format!("unknown message type {s:?} (expected identify, track, page, screen, group, alias or delete)")
            })
    }
}

/// A message that passed validation. `body` is what the sender sent, with a batch's shared
/// `context`/`integrations`/`sentAt` merged in, `writeKey` removed (it is a secret), and
/// `messageId`/`receivedAt` filled in. The other fields are indexes into it for the store.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    pub kind: MessageType,
    pub message_id: String,
    pub user_id: Option<String>,
    pub anonymous_id: Option<String>,
    /// The `event` of a track call.
    pub event: Option<String>,
    /// When it happened: `timestamp`, else `originalTimestamp`, else `receivedAt`.
    pub timestamp: DateTime<Utc>,
    pub received_at: DateTime<Utc>,
    pub body: Map<String, Value>,
    /// Top-level fields holding numbers a double cannot carry, with their text as sent: the
    /// stored body keeps that text ([`crate::exact`]).
    pub exact: Vec<(String, String)>,
}

impl Message {
    /// The body as stored: JSON text, numbers exactly as sent.
    pub fn body_text(&self) -> String {
        crate::exact::body_text(&self.body, &self.exact)
    }

    /// The key that orders a user's events: `userId` when known, else `anonymousId`.
    /// Validation guarantees one of them is present.
    pub fn identity(&self) -> &str {
        self.user_id
            .as_deref()
            .or(self.anonymous_id.as_deref())
            .unwrap_or_default()
    }
}
