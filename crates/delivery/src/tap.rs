//! The live tail: what this node does as it does it — events ingested, actions planned,
//! Intercom calls made — for `GET /api/tap` and `junction tap`.
//!
//! A broadcast channel with a bounded buffer: a reader that falls behind loses the oldest
//! entries and is told how many (it never holds the node back), and nothing is built while
//! nobody listens. Each node taps its own work: with several nodes, tap each.

use serde::Serialize;
use std::sync::Arc;
use tokio::sync::broadcast;

/// How many entries a reader may fall behind before it loses some.
pub const TAP_BUFFER: usize = 4_096;

/// One thing this node did.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "what", rename_all = "snake_case")]
pub enum TapEntry {
    /// An event ingest stored.
    Event {
        at: String,
        #[serde(rename = "messageId")]
        message_id: String,
        #[serde(rename = "type")]
        kind: String,
        user: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        name: Option<String>,
    },
    /// An action planned (committed to the outbox) for an event.
    Planned {
        at: String,
        action: String,
        workflow: String,
        kind: String,
        user: String,
        /// The type of the event it was planned for.
        #[serde(rename = "eventType")]
        event_type: String,
    },
    /// A call delivery made (to Intercom, or a webhook's host).
    Call {
        at: String,
        action: String,
        workflow: String,
        user: String,
        method: String,
        path: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        status: Option<u16>,
        ms: u64,
    },
}

impl TapEntry {
    pub fn user(&self) -> &str {
        match self {
            TapEntry::Event { user, .. }
            | TapEntry::Planned { user, .. }
            | TapEntry::Call { user, .. } => user,
        }
    }

    /// What a reader asked for: each given filter must match the field it names (an event
    /// has no workflow, a call no event type: they pass those filters only when not given).
    pub fn matches(&self, filter: &TapFilter) -> bool {
        if filter.user.as_deref().is_some_and(|u| u != self.user()) {
            return false;
        }
        match self {
            TapEntry::Event { kind, .. } => {
                filter.workflow.is_none() && filter.kind.as_deref().is_none_or(|k| k == kind)
            }
            TapEntry::Planned {
                workflow,
                event_type,
                ..
            } => {
                filter.workflow.as_deref().is_none_or(|w| w == workflow)
                    && filter.kind.as_deref().is_none_or(|k| k == event_type)
            }
            TapEntry::Call { workflow, .. } => {
                filter.calls
                    && filter.kind.is_none()
                    && filter.workflow.as_deref().is_none_or(|w| w == workflow)
            }
        }
    }
}

#[cfg(test)]
impl TapEntry {
    fn at(&self) -> &str {
        match self {
            TapEntry::Event { at, .. }
            | TapEntry::Planned { at, .. }
            | TapEntry::Call { at, .. } => at,
        }
    }

    fn with_at(mut self, when: &str) -> Self {
        match &mut self {
            TapEntry::Event { at, .. }
            | TapEntry::Planned { at, .. }
            | TapEntry::Call { at, .. } => *at = when.to_owned(),
        }
        self
    }
}

/// What a reader of the tap wants.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TapFilter {
    pub user: Option<String>,
    pub workflow: Option<String>,
    #[serde(rename = "type")]
    pub kind: Option<String>,
    /// Include the calls delivery makes.
    #[serde(default)]
    pub calls: bool,
}

/// This node's tap.
#[derive(Debug, Clone)]
pub struct Tap {
    sender: broadcast::Sender<Arc<TapEntry>>,
}

impl Default for Tap {
    fn default() -> Self {
        Tap {
            sender: broadcast::Sender::new(TAP_BUFFER),
        }
    }
}

impl Tap {
    /// Whether anyone reads: producers build entries only then.
    pub fn listening(&self) -> bool {
        self.sender.receiver_count() > 0
    }

    pub fn publish(&self, entry: TapEntry) {
        // Nobody listening is not an error.
        let _ = self.sender.send(Arc::new(entry));
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Arc<TapEntry>> {
        self.sender.subscribe()
    }
}

/// Now, as tap entries say it.
pub fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(n: usize) -> TapEntry {
        TapEntry::Event {
            at: now(),
            message_id: format!("m{n}"),
            kind: "track".into(),
            user: format!("u{}", n % 2),
            name: None,
        }
    }

    /// A reader that does not keep up costs a bounded buffer, and learns how much it lost.
    #[tokio::test]
    async fn a_slow_reader_loses_the_oldest_entries_and_is_told_how_many() {
        let tap = Tap::default();
        assert!(!tap.listening());
        let mut reader = tap.subscribe();
        assert!(tap.listening());
        for n in 0..TAP_BUFFER + 100 {
            tap.publish(event(n));
        }
        assert!(matches!(
            reader.recv().await,
            Err(broadcast::error::RecvError::Lagged(100))
        ));
        let next = reader.recv().await.unwrap();
        assert_eq!(*next, event(100).with_at(next.at()));
    }

    #[test]
    fn filters_apply_to_the_fields_an_entry_has() {
        let planned = TapEntry::Planned {
            at: now(),
            action: "m1/w/0".into(),
            workflow: "w".into(),
            kind: "tag".into(),
            user: "u1".into(),
            event_type: "track".into(),
        };
        let filter = |user: Option<&str>, workflow: Option<&str>, kind: Option<&str>| TapFilter {
            user: user.map(Into::into),
            workflow: workflow.map(Into::into),
            kind: kind.map(Into::into),
            calls: false,
        };
        assert!(planned.matches(&filter(Some("u1"), Some("w"), Some("track"))));
        assert!(!planned.matches(&filter(Some("u2"), None, None)));
        assert!(!planned.matches(&filter(None, Some("other"), None)));
        assert!(
            !event(1).matches(&filter(None, Some("w"), None)),
            "an event has no workflow"
        );
        assert!(event(1).matches(&filter(Some("u1"), None, Some("track"))));
    }
}
