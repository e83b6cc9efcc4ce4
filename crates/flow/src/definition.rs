//! The workflow file format, as written in YAML: what `junction schema` publishes and
//! `junction validate` checks. Doc comments here become the JSON Schema's descriptions.
//!
//! A step is a map with exactly one kind key (`intercom.tag: vip`, `if: …`, `score: …`), plus
//! optional `id` and `on_error`. Every expression or template keeps the line and column it was
//! written at, so a compile error points at it.

use crate::duration::Span;
use schemars::{JsonSchema, Schema, SchemaGenerator};
use serde::{Deserialize, Deserializer};
use serde_json::Value as Json;
use std::borrow::Cow;
use std::collections::BTreeMap;

/// A value and where it was written (1-based line and column).
#[derive(Debug, Clone)]
pub struct Located<T> {
    pub value: T,
    pub line: u32,
    pub column: u32,
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Located<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let spanned = serde_saphyr::Spanned::<T>::deserialize(deserializer)?;
        Ok(Located {
            value: spanned.value,
            line: spanned.referenced.line() as u32,
            column: spanned.referenced.column() as u32,
        })
    }
}

impl<T: JsonSchema> JsonSchema for Located<T> {
    fn inline_schema() -> bool {
        T::inline_schema()
    }
    fn schema_name() -> Cow<'static, str> {
        T::schema_name()
    }
    fn schema_id() -> Cow<'static, str> {
        T::schema_id()
    }
    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        T::json_schema(generator)
    }
}

/// One value or a list of them.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum OneOrMany<T> {
    One(T),
    Many(Vec<T>),
}

impl<T: Clone> OneOrMany<T> {
    pub fn to_vec(&self) -> Vec<T> {
        match self {
            OneOrMany::One(one) => vec![one.clone()],
            OneOrMany::Many(many) => many.clone(),
        }
    }
}

impl<'de> Deserialize<'de> for Span {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

impl JsonSchema for Span {
    fn schema_name() -> Cow<'static, str> {
        "Duration".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        schemars::json_schema!({
            "type": "string",
            "pattern": "^[0-9]+(\\.[0-9]+)?(ms|s|m|min|h|d|w)$",
            "description": "A duration: 500ms, 30s, 15m, 2h, 7d, 2w."
        })
    }
}

/// A workflow: which events it takes, an optional condition, and the steps to run.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WorkflowFile {
    /// Unique among the loaded workflows; action ids and the execution log carry it.
    pub name: String,
    #[serde(default)]
    pub description: Option<String>,
    /// Values the steps read as `vars.NAME`; the configuration may override each.
    #[serde(default)]
    pub vars: BTreeMap<String, Json>,
    pub trigger: Trigger,
    /// What Intercom actions do for an event without a userId whose email (`properties.email`,
    /// `context.traits.email`, or a group's `traits.email`) matches no single contact:
    /// `create_lead` (the default: a lead with that email) or `dead_letter` (the action fails
    /// for good, as Segment's destination fails it).
    #[serde(default)]
    pub unmatched: Unmatched,
    /// Only events for which this expression is true run the steps.
    #[serde(default)]
    pub when: Option<Located<String>>,
    /// Whether a person may start this workflow again: `always` (the default), `once`, or
    /// `after 7d` (only that long after their last start).
    #[serde(default)]
    pub reentry: Option<Located<String>>,
    /// This workflow's own limit on messages per contact, on top of the workspace's
    /// (`journeys.caps`).
    #[serde(default)]
    pub caps: Option<CapsDef>,
    /// Hours in the contact's local time when this workflow's messages are held until the
    /// window ends (instead of the workspace's `journeys.quiet_hours`).
    #[serde(default)]
    pub quiet_hours: Option<QuietHoursDef>,
    /// Transactional messages (receipts, password resets): exempt from caps and quiet hours.
    #[serde(default)]
    pub transactional: bool,
    pub steps: Vec<Located<StepDef>>,
}

/// Limits on how many messages a contact gets.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CapsDef {
    /// In-app and email messages and conversations Junction starts, per contact: `2 per 1d`
    /// (calendar days in the contact's time zone) or `1 per 4h` (a rolling window). A capped
    /// message is kept as `capped` (listed with `junction dlq list --capped`, sent with
    /// `junction dlq release`).
    pub messages: Located<String>,
}

/// A daily window in the contact's local time when messages wait.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct QuietHoursDef {
    /// Start, `HH:MM` (`21:00`).
    pub from: Located<String>,
    /// End, `HH:MM` (`08:00`); before `from`, the window spans midnight.
    pub to: Located<String>,
}

/// The configuration's `journeys:`: rules every workflow's messages follow.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct JourneysDef {
    /// The time zone of contacts whose own is unknown (their `timezone` trait, else the
    /// `context.timezone` of their events); default UTC.
    #[serde(default)]
    pub timezone: Option<Located<String>>,
    #[serde(default)]
    pub caps: Option<CapsDef>,
    #[serde(default)]
    pub quiet_hours: Option<QuietHoursDef>,
}

/// What happens when an event without a userId names an email no single contact has.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Unmatched {
    /// Create a lead with that email.
    #[default]
    CreateLead,
    /// Fail the action for good (the dead-letter queue says why).
    DeadLetter,
}

/// What starts a run.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Trigger {
    /// `segment.identify`, `segment.track`, `segment.group`, `segment.page`, `segment.screen`,
    /// `segment.alias`, or a list of them. (`intercom.<topic>` is reserved for Intercom
    /// webhooks.)
    pub on: Located<OneOrMany<String>>,
    /// Only these event names (`track`) or page/screen names.
    #[serde(default)]
    pub event: Option<OneOrMany<String>>,
}

/// What to do when a step's action fails for good.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum OnErrorDef {
    /// `stop` (the default: the run's later actions are skipped) or `continue`.
    Keyword(String),
    /// Steps to run instead (an error branch).
    Steps(Vec<Located<StepDef>>),
}

/// One step: exactly one of the kind keys, plus optional `id` and `on_error`.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StepDef {
    /// Names the step in action ids and the execution log (default: its position).
    #[serde(default)]
    pub id: Option<String>,
    #[serde(default)]
    pub on_error: Option<OnErrorDef>,
    /// A transactional message: exempt from caps and quiet hours.
    #[serde(default)]
    pub transactional: bool,

    /// Create or update the event's contact (never twice: see contact resolution).
    #[serde(default, rename = "intercom.contact")]
    pub contact: Option<ContactDef>,
    /// Create or update a company by company_id and attach the contact.
    #[serde(default, rename = "intercom.company")]
    pub company: Option<CompanyDef>,
    /// Tag the contact (the tag is created when missing).
    #[serde(default, rename = "intercom.tag")]
    pub tag: Option<Json>,
    /// Remove a tag from the contact.
    #[serde(default, rename = "intercom.untag")]
    pub untag: Option<Json>,
    /// Submit a data event for the contact.
    #[serde(default, rename = "intercom.event")]
    pub data_event: Option<EventDef>,
    /// An admin-initiated message (in-app or email).
    #[serde(default, rename = "intercom.message")]
    pub message: Option<MessageDef>,
    /// A conversation started for the contact, optionally assigned and noted.
    #[serde(default, rename = "intercom.conversation")]
    pub conversation: Option<ConversationDef>,
    /// A note on the contact.
    #[serde(default, rename = "intercom.note")]
    pub note: Option<NoteDef>,
    /// Choose an admin (fixed or round-robin), make them the contact's owner, and expose the
    /// choice as `vars.assignee` to later steps.
    #[serde(default, rename = "intercom.assign")]
    pub assign: Option<AssignDef>,
    /// An HTTP request (alerts: generic or Slack-compatible webhooks).
    #[serde(default, rename = "http.request")]
    pub http: Option<HttpDef>,
    /// A Segment identify sent through the Tracking API (`userId` or `anonymousId`, `traits`,
    /// and any other Segment field). Null or empty values are left out.
    #[serde(default, rename = "segment.identify")]
    pub segment_identify: Option<BTreeMap<String, Json>>,
    /// A Segment track (`event`, `properties`, and the ids).
    #[serde(default, rename = "segment.track")]
    pub segment_track: Option<BTreeMap<String, Json>>,
    /// A Segment group (`groupId`, `traits`, and the ids).
    #[serde(default, rename = "segment.group")]
    pub segment_group: Option<BTreeMap<String, Json>>,

    /// A condition; `then` runs when it holds, `else` otherwise.
    #[serde(default, rename = "if")]
    pub condition: Option<Located<String>>,
    #[serde(default)]
    pub then: Option<Vec<Located<StepDef>>>,
    #[serde(default, rename = "else")]
    pub otherwise: Option<Vec<Located<StepDef>>>,
    /// Set run variables (`vars.NAME`) for the steps that follow.
    #[serde(default)]
    pub set: Option<BTreeMap<String, Json>>,
    /// Keep values on the user's profile (`profile.memory.NAME`) for later events.
    #[serde(default)]
    pub remember: Option<BTreeMap<String, Json>>,
    /// Mark a milestone reached (`profile.milestones`); a milestone is reached once.
    #[serde(default)]
    pub milestone: Option<Json>,
    /// A per-user score with a threshold.
    #[serde(default)]
    pub score: Option<ScoreDef>,
    /// Count the user's events in this window and the one before (`profile.counts.NAME`).
    #[serde(default)]
    pub count: Option<CountDef>,
    /// Pause the run (durably): `for` a time (unless a cancelling event arrives first), or
    /// `until` an event arrives or a condition holds, with a `timeout`. Only at the top level
    /// of `steps`.
    #[serde(default)]
    pub wait: Option<WaitDef>,
}

#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ContactDef {
    /// Segment-style traits to write (default `{{ event.traits }}`); reserved traits go to
    /// Intercom's standard fields, the rest to custom attributes (typed and created safely).
    #[serde(default)]
    pub traits: Option<Json>,
    /// Intercom standard fields set as given (`last_seen_at`, `owner_id`, …).
    #[serde(default)]
    pub fields: BTreeMap<String, Json>,
}

#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CompanyDef {
    /// Default `{{ event.groupId }}`.
    #[serde(default)]
    pub company_id: Option<Json>,
    /// Segment group traits (default `{{ event.traits }}`): `name`, `plan`, `employees` → size,
    /// `monthly_spend`, `industry`, `website`, `createdAt`; others become custom attributes.
    #[serde(default)]
    pub traits: Option<Json>,
    /// Attach the event's contact to the company (default true).
    #[serde(default)]
    pub attach: Option<bool>,
}

#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EventDef {
    /// Default `{{ event.event }}`.
    #[serde(default)]
    pub name: Option<Json>,
    /// Default the event's timestamp.
    #[serde(default)]
    pub created_at: Option<Json>,
    /// Default `{{ event.properties }}`; `revenue` (+ `currency`) becomes `price` in cents; at
    /// most 10 keys are sent, nested objects are dropped (except rich links and money).
    #[serde(default)]
    pub metadata: Option<Json>,
}

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum MessageType {
    Inapp,
    Email,
}

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MessageDef {
    /// The sending admin's id.
    pub from: Json,
    #[serde(rename = "type")]
    pub kind: MessageType,
    /// Email only.
    #[serde(default)]
    pub subject: Option<Json>,
    pub body: Json,
    /// Open an inbox conversation at once rather than on the contact's reply.
    #[serde(default)]
    pub open_conversation: bool,
}

#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AssigneeDef {
    #[serde(default)]
    pub admin: Option<Json>,
    #[serde(default)]
    pub team: Option<Json>,
}

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ConversationDef {
    /// The opening message, as the contact.
    pub body: Json,
    #[serde(default)]
    pub assign_to: Option<AssigneeDef>,
    /// The admin who assigns and writes the note (default: the assignee admin).
    #[serde(default)]
    pub admin: Option<Json>,
    /// An internal note added to the conversation.
    #[serde(default)]
    pub note: Option<Json>,
}

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NoteDef {
    /// The authoring admin's id.
    pub admin: Json,
    pub body: Json,
}

#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AssignDef {
    /// One admin.
    #[serde(default)]
    pub admin: Option<Json>,
    /// Admins taken in turn, across all users of this workflow: a list of ids, or an
    /// expression giving one (`{{ vars.sales_reps }}`).
    #[serde(default)]
    pub round_robin: Option<Json>,
    /// Also make the admin the contact's owner (default true).
    #[serde(default)]
    pub set_owner: Option<bool>,
}

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HttpDef {
    pub url: Json,
    /// Default POST.
    #[serde(default)]
    pub method: Option<String>,
    #[serde(default)]
    pub headers: BTreeMap<String, Json>,
    /// Sent as JSON (a Slack incoming webhook takes `{text: …}`).
    #[serde(default)]
    pub body: Option<Json>,
}

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ScoreRuleDef {
    /// Event names (track) or page/screen names this rule scores.
    #[serde(default)]
    pub event: Option<OneOrMany<String>>,
    /// Message types this rule scores (`page`, `track`, …).
    #[serde(default, rename = "type")]
    pub kind: Option<OneOrMany<String>>,
    /// A further condition.
    #[serde(default)]
    pub when: Option<Located<String>>,
    pub points: f64,
}

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ScoreDef {
    /// The score's name (`profile.scores.NAME`).
    pub name: String,
    /// Points per event; the first matching rule counts.
    pub rules: Vec<ScoreRuleDef>,
    /// Only points earned within this window count.
    #[serde(default)]
    pub window: Option<Span>,
    /// Or: points fade, halving over this span.
    #[serde(default)]
    pub half_life: Option<Span>,
    /// Crossing it upwards runs `crossed` once.
    pub threshold: f64,
    /// The score must fall this far below the threshold before another crossing counts.
    #[serde(default)]
    pub hysteresis: f64,
    #[serde(default)]
    pub crossed: Vec<Located<StepDef>>,
}

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CountDef {
    pub name: String,
    pub window: Span,
}

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UnlessDef {
    /// Event names (track) that cancel the wait.
    pub event: OneOrMany<String>,
}

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WaitDef {
    /// A duration (`7d`), or an expression giving one (`{{ vars.delay }}`).
    #[serde(default, rename = "for")]
    pub duration: Option<Json>,
    /// With `for`: events that cancel the wait (the run ends).
    #[serde(default)]
    pub unless: Option<UnlessDef>,
    /// Instead of `for`: hold the person here until one of these events arrives, or this
    /// condition holds on a later event (or already holds: then there is no wait).
    #[serde(default)]
    pub until: Option<UntilDef>,
    /// With `until`: how long to hold at most (a duration or an expression giving one).
    #[serde(default)]
    pub timeout: Option<Json>,
    /// With `until`: the steps run when the timeout passes first (then the run ends).
    #[serde(default)]
    pub on_timeout: Option<Vec<Located<StepDef>>>,
}

/// What ends a `wait: {until: …}`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UntilDef {
    /// Event names (track) that end the wait.
    #[serde(default)]
    pub event: Option<OneOrMany<String>>,
    /// A condition, tested when the wait starts and on each later event of the person
    /// (`traits.plan == "pro"`); it sees that event, the profile and the workflow's `vars`.
    #[serde(default)]
    pub when: Option<Located<String>>,
}
