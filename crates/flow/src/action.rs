//! What a plan asks delivery to do: fully rendered actions with deterministic ids, and the
//! durable timers that resume a paused run. Plain data, serialised into the outbox.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value as Json};
use std::collections::BTreeMap;

/// The Segment ids of the person an action is about; delivery resolves them to one Intercom
/// contact.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Who {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub anonymous_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// Without a userId: when the email matches no single contact, fail for good instead of
    /// creating a lead with it (the workflow's `unmatched: dead_letter`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub dead_letter_unmatched: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MessageChannel {
    Inapp,
    Email,
}

/// One call (or a short fixed sequence of calls) to make.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Action {
    /// Find or create the contact, then write these traits (through attribute safety) and
    /// standard fields.
    Contact {
        traits: Map<String, Json>,
        #[serde(default, skip_serializing_if = "Map::is_empty")]
        fields: Map<String, Json>,
    },
    /// `POST /companies` (upsert by company_id), then attach the contact.
    Company {
        company_id: String,
        fields: Map<String, Json>,
        attach: bool,
    },
    /// Delete the user's contact (or archive it, as `intercom.deletion` says) and forget it: a
    /// deletion request. A contact that is already gone is success.
    DeleteContact,
    /// Detach the contact from the company with this company_id (an identify's
    /// `company: {remove: true}`); a company that does not exist is nothing to detach.
    Detach {
        company_id: String,
    },
    Tag {
        name: String,
    },
    Untag {
        name: String,
    },
    /// A data event; metadata already within Intercom's rules.
    Event {
        name: String,
        created_at: i64,
        metadata: Map<String, Json>,
    },
    Message {
        from: String,
        channel: MessageChannel,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        subject: Option<String>,
        body: String,
        open_conversation: bool,
    },
    Conversation {
        body: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        assign_admin: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        assign_team: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        admin: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        note: Option<String>,
    },
    Note {
        admin: String,
        body: String,
    },
    /// Makes the admin the contact's owner.
    Owner {
        admin: String,
    },
    /// A Segment Tracking API call (`identify`, `track`, `group`); delivery adds the
    /// `messageId` (the action's id, so Segment de-duplicates a replay) and Junction's mark.
    Segment {
        call: String,
        message: Map<String, Json>,
    },
    Http {
        method: String,
        url: String,
        #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
        headers: BTreeMap<String, String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        body: Option<Json>,
    },
}

impl Action {
    pub fn kind(&self) -> &'static str {
        match self {
            Action::Contact { .. } => "contact",
            Action::Company { .. } => "company",
            Action::Detach { .. } => "detach",
            Action::DeleteContact => "delete_contact",
            Action::Tag { .. } => "tag",
            Action::Untag { .. } => "untag",
            Action::Event { .. } => "event",
            Action::Message { .. } => "message",
            Action::Conversation { .. } => "conversation",
            Action::Note { .. } => "note",
            Action::Owner { .. } => "owner",
            Action::Http { .. } => "http",
            Action::Segment { .. } => "segment",
        }
    }

    /// Whether it goes in the urgent lane: what a person or a team is waiting for (messages,
    /// conversations, notes, owners, alerts, Segment calls), delivered before bulk syncs.
    pub fn urgent(&self) -> bool {
        matches!(
            self,
            Action::Message { .. }
                | Action::Conversation { .. }
                | Action::Note { .. }
                | Action::Owner { .. }
                | Action::Http { .. }
                | Action::Segment { .. }
        )
    }

    /// What frequency caps and quiet hours apply to: messages and the conversations Junction
    /// starts.
    pub fn reaches_the_person(&self) -> bool {
        matches!(self, Action::Message { .. } | Action::Conversation { .. })
    }

    /// Calls that must not be repeated blindly (each run would make another one).
    pub fn creates_something(&self) -> bool {
        matches!(
            self,
            Action::Message { .. } | Action::Conversation { .. } | Action::Note { .. }
        )
    }
}

/// What happens to the rest of a run when an action fails for good.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnError {
    /// Skip the run's later actions.
    #[default]
    Stop,
    /// Go on with the run's later actions.
    Continue,
    /// Run the actions planned as this one's error branch, then go on.
    Fallback,
}

/// An action with its place: which event, workflow and step made it, for whom, and in what
/// order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlannedAction {
    /// `messageId/workflow/step`: the same event, workflow and step always give the same id.
    pub id: String,
    /// `messageId/workflow`: the run this action belongs to.
    pub run: String,
    pub workflow: String,
    pub step: String,
    /// The identity key whose queue this action waits in (userId, else anonymousId).
    pub identity: String,
    pub who: Who,
    pub action: Action,
    pub on_error: OnError,
    /// Set on an error-branch action: it runs only if that action fails for good.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub standby_for: Option<String>,
    /// A message over a frequency cap (which one): kept as `capped`, not sent unless released.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capped: Option<String>,
    /// Planned for a backfilled event: delivered in the bulk lane, whatever its kind, so live
    /// traffic keeps its latency.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub bulk: bool,
}

/// Where a backfilled event carries its backfill: `context.backfill`, with the workflows it
/// may run (`workflows`, or all when absent). Set by the server's `/api/backfill`.
pub fn backfill_of(body: &Json) -> Option<&Json> {
    body.get("context")
        .and_then(|c| c.get("backfill"))
        .filter(|b| b.is_object())
}

/// How the id of a timer holding a message through quiet hours ends (after the message's id).
pub const HELD_SUFFIX: &str = "/held";

/// A paused run: the steps after a `wait` resume at `fire_at_ms` unless cancelled.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TimerPlan {
    /// `messageId/workflow/step`.
    pub id: String,
    pub identity: String,
    pub workflow: String,
    /// Index of the top-level step to resume at.
    pub resume_at: usize,
    pub fire_at_ms: i64,
    /// Track event names that cancel it.
    pub cancel_on: Vec<String>,
    /// The event that started the run (its body).
    pub event: Json,
    pub message_id: String,
    /// Run variables at the pause.
    pub vars: Map<String, Json>,
    /// A message held by quiet hours: planned already, released when the timer fires (the
    /// timer resumes no steps).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub release: Option<Box<PlannedAction>>,
}
