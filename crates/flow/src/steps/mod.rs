//! Step kinds, one module each. A module holds everything about its kind: its part of the
//! workflow file format (whose doc comments become the JSON Schema), its compilation (with the
//! variables its expressions read), its outline for people, and its planning — as mini-redis
//! keeps a command's parsing and applying together. Delivering the actions a kind plans is
//! delivery's business (`junction-delivery`, one place per action).
//!
//! [`step_kinds!`] below is the registry: the one table that names every kind, its key in
//! workflow files and its definition. Adding a kind is a module implementing [`Compile`] and
//! [`Kind`], and a row in the table.

mod assign;
mod branch;
mod company;
mod contact;
mod conversation;
mod count;
mod event;
mod http;
mod memory;
mod message;
mod milestone;
mod note;
mod score;
mod segment;
mod tag;
mod wait;

pub use assign::AssignDef;
pub use company::{CompanyDef, company_fields};
pub use contact::{ContactDef, company_id_from_name};
pub use conversation::{AssigneeDef, ConversationDef};
pub use count::CountDef;
pub use event::{EventDef, MAX_EVENT_METADATA_KEYS, event_metadata};
pub use http::HttpDef;
pub use message::{MessageDef, MessageType};
pub use note::NoteDef;
pub use score::{ScoreDef, ScoreRuleDef};
pub use wait::{UnlessDef, UntilDef, WaitDef, WaitFor};

use crate::definition::{Located, OnErrorDef};
use crate::error::PlanError;
use crate::expr::{CompileError, Condition, ValueTemplate};
use crate::profile::Profile;
use crate::run::Run;
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::Value as Json;
use std::collections::{BTreeMap, HashSet};

/// A compiled step.
#[derive(Debug)]
pub struct Step {
    /// The step's segment of the path (`2`, or its `id`).
    pub id: String,
    pub on_error: ErrorBranch,
    /// A transactional message: exempt from caps and quiet hours.
    pub transactional: bool,
    pub kind: StepKind,
}

/// What happens when a step's action fails for good.
#[derive(Debug)]
pub enum ErrorBranch {
    Stop,
    Continue,
    Steps(Vec<Step>),
}

/// What a step kind does, once compiled.
pub(crate) trait Kind: std::fmt::Debug {
    /// Plans the step at `at` into the run.
    fn plan(&self, run: &mut Run<'_>, at: &At<'_>, profile: &mut Profile) -> Result<(), PlanError>;
    /// The step as people read it.
    fn outline(&self) -> Outline;
    /// Adds the top-level names its expressions read (and those of the steps inside it).
    fn variables(&self, names: &mut Variables<'_>);
}

/// How a kind is built from its part of a step in the file.
pub(crate) trait Compile<Def>: Sized {
    fn compile(def: &Def, cx: &Compiler<'_>) -> Result<Self, crate::LoadError>;
}

/// The step being planned: which, where in the workflow, and whose error branch it is part of.
pub(crate) struct At<'s> {
    pub step: &'s Step,
    /// `2`, `1.then.0`, …: the action id's last segment.
    pub path: &'s str,
    /// The action this step stands by for (inside an error branch).
    pub standby_for: Option<&'s str>,
}

/// A step as people read it (the console draws these): a one-line label, and the steps under
/// each of its branches (`then`, `else`, `crossed`, `timeout`).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Outline {
    pub label: String,
    pub branches: Vec<(String, Vec<Outline>)>,
}

impl Outline {
    pub(crate) fn leaf(label: impl Into<String>) -> Outline {
        Outline {
            label: label.into(),
            branches: Vec::new(),
        }
    }
}

/// Collects the top-level names expressions read (`event`, `traits`, `profile`, …).
pub(crate) struct Variables<'a>(pub &'a mut HashSet<String>);

impl Variables<'_> {
    pub fn template(&mut self, template: &ValueTemplate) {
        self.0.extend(template.variables());
    }
    pub fn optional(&mut self, template: &Option<ValueTemplate>) {
        if let Some(template) = template {
            self.template(template);
        }
    }
    pub fn pairs(&mut self, pairs: &[(String, ValueTemplate)]) {
        for (_, template) in pairs {
            self.template(template);
        }
    }
    pub fn condition(&mut self, condition: &Condition) {
        self.0.extend(condition.variables());
    }
    pub fn steps(&mut self, steps: &[Step]) {
        for step in steps {
            step.variables(self.0);
        }
    }
}

/// What compiling a step's kind needs: where it is (for located errors) and the whole step (an
/// `if` reads its `then` and `else`).
pub(crate) struct Compiler<'a> {
    pub def: &'a StepDef,
    pub index: usize,
    pub kind: &'static str,
    pub line: u32,
    pub column: u32,
    pub top_level: bool,
}

impl Compiler<'_> {
    /// An error at the step: `step 2 (intercom.tag): …`.
    pub fn error(&self, message: impl std::fmt::Display) -> crate::LoadError {
        crate::compile::at(
            self.line,
            self.column,
            format!("step {} ({}): {message}", self.index, self.kind),
        )
    }

    pub fn template(&self, value: &Json, field: &str) -> Result<ValueTemplate, crate::LoadError> {
        ValueTemplate::compile(value)
            .map_err(|e: CompileError| self.error(format!("{field}: {}", e.message)))
    }

    /// A template, or the default written as it would be in the file.
    pub fn template_or(
        &self,
        value: &Option<Json>,
        default: &str,
        field: &str,
    ) -> Result<ValueTemplate, crate::LoadError> {
        match value {
            Some(value) => self.template(value, field),
            None => self.template(&Json::String(default.to_owned()), field),
        }
    }

    pub fn optional(
        &self,
        value: &Option<Json>,
        field: &str,
    ) -> Result<Option<ValueTemplate>, crate::LoadError> {
        value.as_ref().map(|v| self.template(v, field)).transpose()
    }

    pub fn pairs(
        &self,
        map: &BTreeMap<String, Json>,
        field: &str,
    ) -> Result<Vec<(String, ValueTemplate)>, crate::LoadError> {
        map.iter()
            .map(|(k, v)| Ok((k.clone(), self.template(v, &format!("{field}.{k}"))?)))
            .collect()
    }

    pub fn condition(
        &self,
        source: &Located<String>,
        what: &str,
    ) -> Result<Condition, crate::LoadError> {
        crate::compile::condition(source, what)
    }

    /// Steps nested in this one (never top-level).
    pub fn steps(&self, list: &[Located<StepDef>]) -> Result<Vec<Step>, crate::LoadError> {
        steps(list, false)
    }
}

/// The registry: for each kind, its doc (the schema's description), its key in workflow files,
/// the field of [`StepDef`] holding its definition, and the variant of [`StepKind`] it compiles
/// to. Generates [`StepDef`], [`StepKind`] and the dispatch between them.
macro_rules! step_kinds {
    ($( $(#[doc = $doc:literal])* $key:literal => $field:ident: $def:ty => $variant:ident($kind:ty), )*) => {
        /// One step: exactly one of the kind keys, plus optional `id`, `on_error` and
        /// `transactional` (an `if` also takes `then` and `else`).
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
            $(
                $(#[doc = $doc])*
                #[serde(default, rename = $key)]
                pub $field: Option<$def>,
            )*
            /// An `if`'s steps when the condition holds.
            #[serde(default)]
            pub then: Option<Vec<Located<StepDef>>>,
            /// An `if`'s steps when it does not.
            #[serde(default, rename = "else")]
            pub otherwise: Option<Vec<Located<StepDef>>>,
        }

        /// A compiled step's kind.
        // Steps are built once at load and few; boxing the large variants would buy nothing.
        #[allow(clippy::large_enum_variant)]
        #[derive(Debug)]
        pub enum StepKind {
            $( $variant($kind), )*
        }

        /// Every kind key, in the registry's order.
        pub const STEP_KINDS: &[&str] = &[$( $key ),*];

        impl StepDef {
            /// The kind keys this step has.
            fn kinds(&self) -> Vec<&'static str> {
                let mut present = Vec::new();
                $( if self.$field.is_some() { present.push($key); } )*
                present
            }
        }

        /// Compiles the one kind the step has (`cx.kind`).
        fn compile_kind(def: &StepDef, cx: &Compiler<'_>) -> Result<StepKind, crate::LoadError> {
            $(
                if let Some(kind_def) = &def.$field {
                    return <$kind as Compile<$def>>::compile(kind_def, cx).map(StepKind::$variant);
                }
            )*
            unreachable!("kinds() found exactly one kind")
        }

        impl StepKind {
            pub(crate) fn behaviour(&self) -> &dyn Kind {
                match self {
                    $( StepKind::$variant(kind) => kind, )*
                }
            }
        }
    };
}

step_kinds! {
    /// Create or update the event's contact (never twice: see contact resolution).
    "intercom.contact" => contact: ContactDef => Contact(contact::Contact),
    /// Create or update a company by company_id and attach the contact.
    "intercom.company" => company: CompanyDef => Company(company::Company),
    /// Tag the contact (the tag is created when missing).
    "intercom.tag" => tag: Json => Tag(tag::Tag),
    /// Remove a tag from the contact.
    "intercom.untag" => untag: Json => Untag(tag::Untag),
    /// Submit a data event for the contact.
    "intercom.event" => data_event: EventDef => Event(event::DataEvent),
    /// An admin-initiated message (in-app or email).
    "intercom.message" => message: MessageDef => Message(message::Message),
    /// A conversation started for the contact, optionally assigned and noted.
    "intercom.conversation" => conversation: ConversationDef => Conversation(conversation::Conversation),
    /// A note on the contact.
    "intercom.note" => note: NoteDef => Note(note::Note),
    /// Choose an admin (fixed or round-robin), make them the contact's owner, and expose the
    /// choice as `vars.assignee` to later steps.
    "intercom.assign" => assign: AssignDef => Assign(assign::Assign),
    /// An HTTP request (alerts: generic or Slack-compatible webhooks).
    "http.request" => http: HttpDef => Http(http::Http),
    /// A Segment identify sent through the Tracking API (`userId` or `anonymousId`, `traits`,
    /// and any other Segment field). Null or empty values are left out.
    "segment.identify" => segment_identify: BTreeMap<String, Json> => SegmentIdentify(segment::Identify),
    /// A Segment track (`event`, `properties`, and the ids).
    "segment.track" => segment_track: BTreeMap<String, Json> => SegmentTrack(segment::Track),
    /// A Segment group (`groupId`, `traits`, and the ids).
    "segment.group" => segment_group: BTreeMap<String, Json> => SegmentGroup(segment::Group),
    /// A condition; `then` runs when it holds, `else` otherwise.
    "if" => condition: Located<String> => If(branch::If),
    /// Set run variables (`vars.NAME`) for the steps that follow.
    "set" => set: BTreeMap<String, Json> => Set(memory::Set),
    /// Keep values on the user's profile (`profile.memory.NAME`) for later events.
    "remember" => remember: BTreeMap<String, Json> => Remember(memory::Remember),
    /// Mark a milestone reached (`profile.milestones`); a milestone is reached once.
    "milestone" => milestone: Json => Milestone(milestone::Milestone),
    /// A per-user score with a threshold.
    "score" => score: ScoreDef => Score(score::Score),
    /// Count the user's events in this window and the one before (`profile.counts.NAME`).
    "count" => count: CountDef => Count(count::Count),
    /// Pause the run (durably): `for` a time (unless a cancelling event arrives first), or
    /// `until` an event arrives or a condition holds, with a `timeout`. Only at the top level
    /// of `steps`.
    "wait" => wait: WaitDef => Wait(wait::Wait),
}

impl Step {
    /// The step as people read it.
    pub fn outline(&self) -> Outline {
        self.kind.behaviour().outline()
    }

    /// Adds the top-level names this step (and the steps inside it) read.
    pub(crate) fn variables(&self, names: &mut HashSet<String>) {
        let mut variables = Variables(names);
        self.kind.behaviour().variables(&mut variables);
        if let ErrorBranch::Steps(branch) = &self.on_error {
            variables.steps(branch);
        }
    }
}

/// Compiles a list of steps.
pub(crate) fn steps(
    list: &[Located<StepDef>],
    top_level: bool,
) -> Result<Vec<Step>, crate::LoadError> {
    list.iter()
        .enumerate()
        .map(|(index, step)| compile_step(index, step, top_level))
        .collect()
}

fn compile_step(
    index: usize,
    located: &Located<StepDef>,
    top_level: bool,
) -> Result<Step, crate::LoadError> {
    let def = &located.value;
    let (line, column) = (located.line, located.column);
    let at = |message: String| crate::compile::at(line, column, message);
    let kind = match def.kinds().as_slice() {
        [one] => *one,
        [] => {
            return Err(at(format!(
                "step {index}: expected one of {}",
                STEP_KINDS.join(", ")
            )));
        }
        many => {
            return Err(at(format!(
                "step {index}: one kind per step, found {}; split it into several steps",
                many.join(" and ")
            )));
        }
    };
    if kind != "if" && (def.then.is_some() || def.otherwise.is_some()) {
        return Err(at(format!(
            "step {index}: `then`/`else` belong to an `if` step"
        )));
    }
    let cx = Compiler {
        def,
        index,
        kind,
        line,
        column,
        top_level,
    };
    let compiled = compile_kind(def, &cx)?;
    let on_error = match &def.on_error {
        None => ErrorBranch::Stop,
        Some(OnErrorDef::Keyword(word)) => match word.as_str() {
            "stop" => ErrorBranch::Stop,
            "continue" => ErrorBranch::Continue,
            other => {
                return Err(cx.error(format!(
                    "on_error: `{other}`: expected stop, continue or a list of steps"
                )));
            }
        },
        Some(OnErrorDef::Steps(list)) => ErrorBranch::Steps(steps(list, false)?),
    };
    Ok(Step {
        id: def.id.clone().unwrap_or_else(|| index.to_string()),
        on_error,
        transactional: def.transactional,
        kind: compiled,
    })
}
