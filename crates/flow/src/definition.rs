//! The workflow file format, as written in YAML: what `junction schema` publishes and
//! `junction validate` checks. Doc comments here become the JSON Schema's descriptions.
//!
//! A step is a map with exactly one kind key (`intercom.tag: vip`, `if: …`, `score: …`), plus
//! optional `id`, `on_error` and `transactional`; [`StepDef`] and each kind's definition live
//! with the kind (`steps/`). Every expression or template keeps the line and column it was
//! written at, so a compile error points at it.

use crate::duration::Span;
pub use crate::steps::{
    AssignDef, AssigneeDef, CompanyDef, ContactDef, ConversationDef, CountDef, EventDef, HttpDef,
    MessageDef, MessageType, NoteDef, ScoreDef, ScoreRuleDef, StepDef, UnlessDef, UntilDef,
    WaitDef,
};
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
