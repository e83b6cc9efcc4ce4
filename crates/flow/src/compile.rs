//! From a workflow file to a [`Workflow`] ready to plan with: YAML parsed with line numbers,
//! every expression and template compiled once, and the rules serde cannot express checked
//! (one kind per step, `wait` only at the top level, …). Errors carry the line and column.

use crate::definition::{
    AssignDef, Located, MessageType, OnErrorDef, OneOrMany, StepDef, WorkflowFile,
};
use crate::duration::Span;
use crate::expr::{CompileError, Condition, ValueTemplate};
use crate::journey::{self, Cap, QuietHours, Reentry, RuleError};
use serde_json::{Map, Value as Json, json};
use std::collections::HashSet;
use std::fmt;

/// A workflow ready to plan with.
#[derive(Debug)]
pub struct Workflow {
    pub name: String,
    /// The YAML it was loaded from (empty when compiled from a parsed file).
    pub source: String,
    pub description: Option<String>,
    pub vars: Map<String, Json>,
    /// Segment message types that trigger it (`identify`, `track`, …).
    pub on: Vec<String>,
    /// Event (or page/screen) names it is limited to.
    pub events: Option<Vec<String>>,
    /// Intercom notification topics it takes (`contact.lead.created`, …).
    pub topics: Vec<String>,
    pub when: Option<Condition>,
    /// An email that matches no single contact: create a lead, or dead-letter the action.
    pub dead_letter_unmatched: bool,
    /// Whether a person may start it again.
    pub reentry: Reentry,
    /// Its own cap on messages per contact (the workspace's applies as well).
    pub cap: Option<Cap>,
    /// Its quiet hours (instead of the workspace's).
    pub quiet_hours: Option<QuietHours>,
    /// Its messages are exempt from caps and quiet hours.
    pub transactional: bool,
    pub steps: Vec<Step>,
    /// The top-level names its expressions read (`event`, `traits`, `profile`, `vars`, …): the
    /// planner builds only those parts of the context.
    pub uses: HashSet<String>,
}

#[derive(Debug)]
pub struct Step {
    /// The step's segment of the path (`2`, or its `id`).
    pub id: String,
    pub on_error: ErrorBranch,
    /// A transactional message: exempt from caps and quiet hours.
    pub transactional: bool,
    pub kind: StepKind,
}

#[derive(Debug)]
pub enum ErrorBranch {
    Stop,
    Continue,
    Steps(Vec<Step>),
}

#[derive(Debug)]
pub struct ScoreRule {
    pub events: Option<Vec<String>>,
    pub kinds: Option<Vec<String>>,
    pub when: Option<Condition>,
    pub points: f64,
}

// Steps are built once at load and few; boxing the large variants would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum StepKind {
    Contact {
        traits: ValueTemplate,
        fields: Vec<(String, ValueTemplate)>,
    },
    Company {
        company_id: ValueTemplate,
        traits: ValueTemplate,
        attach: bool,
    },
    Tag(ValueTemplate),
    Untag(ValueTemplate),
    Event {
        name: ValueTemplate,
        created_at: Option<ValueTemplate>,
        metadata: ValueTemplate,
    },
    Message {
        from: ValueTemplate,
        email: bool,
        subject: Option<ValueTemplate>,
        body: ValueTemplate,
        open_conversation: bool,
    },
    Conversation {
        body: ValueTemplate,
        assign_admin: Option<ValueTemplate>,
        assign_team: Option<ValueTemplate>,
        admin: Option<ValueTemplate>,
        note: Option<ValueTemplate>,
    },
    Note {
        admin: ValueTemplate,
        body: ValueTemplate,
    },
    Assign {
        admin: Option<ValueTemplate>,
        round_robin: Option<ValueTemplate>,
        set_owner: bool,
    },
    Http {
        method: String,
        url: ValueTemplate,
        headers: Vec<(String, ValueTemplate)>,
        body: Option<ValueTemplate>,
    },
    /// A Segment call: `identify`, `track` or `group`, with its fields.
    Segment {
        call: &'static str,
        fields: Vec<(String, ValueTemplate)>,
    },
    If {
        condition: Condition,
        then: Vec<Step>,
        otherwise: Vec<Step>,
    },
    Set(Vec<(String, ValueTemplate)>),
    Remember(Vec<(String, ValueTemplate)>),
    Milestone(ValueTemplate),
    Score {
        name: String,
        rules: Vec<ScoreRule>,
        window: Option<Span>,
        half_life: Option<Span>,
        threshold: f64,
        hysteresis: f64,
        crossed: Vec<Step>,
    },
    Count {
        name: String,
        window: Span,
    },
    Wait {
        duration: WaitFor,
        cancel_on: Vec<String>,
    },
    /// Hold until one of `events` arrives or `condition` holds, at most `timeout`.
    WaitUntil {
        events: Vec<String>,
        condition: Option<Condition>,
        timeout: WaitFor,
        on_timeout: Vec<Step>,
    },
}

/// How long a `wait` lasts: known at load, or computed when the run pauses.
#[derive(Debug)]
pub enum WaitFor {
    Fixed(Span),
    Computed(ValueTemplate),
}

impl WaitFor {
    /// How it was written, for people.
    pub fn written(&self) -> String {
        match self {
            WaitFor::Fixed(span) => span.to_string(),
            WaitFor::Computed(template) => template.written(),
        }
    }
}

/// A problem in a workflow file, with where it is.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub struct LoadError {
    pub line: Option<u32>,
    pub column: Option<u32>,
    pub message: String,
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.line, self.column) {
            (Some(line), Some(column)) => write!(f, "{line}:{column}: {}", self.message),
            (Some(line), None) => write!(f, "{line}: {}", self.message),
            _ => f.write_str(&self.message),
        }
    }
}

fn at(line: u32, column: u32, message: impl Into<String>) -> LoadError {
    LoadError {
        line: Some(line),
        column: Some(column),
        message: message.into(),
    }
}

/// Parses a workflow file's text.
pub fn parse(text: &str) -> Result<WorkflowFile, LoadError> {
    serde_saphyr::from_str(text).map_err(|error| {
        let location = error.location();
        LoadError {
            line: location.map(|l| l.line() as u32),
            column: location.map(|l| l.column() as u32),
            message: yaml_error_reason(&error.to_string()),
        }
    })
}

/// The reason in a serde-saphyr error message: its first line, without the `error: line L
/// column C: ` prefix (the location is reported separately).
pub fn yaml_error_reason(message: &str) -> String {
    let first = message.lines().next().unwrap_or(message).trim();
    let first = first.strip_prefix("error: ").unwrap_or(first);
    match first
        .strip_prefix("line ")
        .and_then(|rest| rest.split_once(": "))
    {
        Some((position, reason)) if position.contains("column") => plain_reason(reason),
        _ => plain_reason(first),
    }
}

/// serde-saphyr's resource limits, in words: they are what a hostile or broken file meets.
fn plain_reason(reason: &str) -> String {
    if let Some(rest) = reason.strip_prefix("budget breached: ") {
        if let Some(depth) = rest
            .strip_prefix("Depth { depth: ")
            .and_then(|d| d.strip_suffix(" }"))
        {
            return format!("nested more than {depth} levels deep");
        }
        return format!("the YAML is too large or too complex ({rest})");
    }
    if reason.starts_with("recursion limit exceeded") {
        return "nested too deeply (flow collections inside each other)".to_owned();
    }
    reason.to_owned()
}

/// Parses and compiles a workflow file; `overrides` replace the file's `vars` defaults.
pub fn load(text: &str, overrides: &Map<String, Json>) -> Result<Workflow, LoadError> {
    let mut workflow = compile(&parse(text)?, overrides)?;
    workflow.source = text.to_owned();
    Ok(workflow)
}

const SEGMENT_TYPES: [&str; 6] = ["identify", "track", "group", "page", "screen", "alias"];

/// Compiles a parsed file.
pub fn compile(file: &WorkflowFile, overrides: &Map<String, Json>) -> Result<Workflow, LoadError> {
    let top = |message: String| LoadError {
        line: None,
        column: None,
        message,
    };
    if file.name.trim().is_empty() || file.name.contains('/') {
        return Err(top(format!(
            "name: `{}` must be non-empty and free of `/` (it is part of action ids)",
            file.name
        )));
    }
    let mut on = Vec::new();
    let mut topics = Vec::new();
    let (line, column) = (file.trigger.on.line, file.trigger.on.column);
    for trigger in file.trigger.on.value.to_vec() {
        match trigger.strip_prefix("segment.") {
            Some(kind) if SEGMENT_TYPES.contains(&kind) => on.push(kind.to_owned()),
            _ if trigger.starts_with("intercom.") && trigger.len() > "intercom.".len() => {
                topics.push(trigger["intercom.".len()..].to_owned());
                if !on.iter().any(|k| k == "intercom") {
                    on.push("intercom".to_owned());
                }
            }
            _ => {
                return Err(at(
                    line,
                    column,
                    format!(
                        "trigger.on: `{trigger}` is not a trigger; expected one of segment.identify, segment.track, segment.group, segment.page, segment.screen, segment.alias, or intercom.<topic>"
                    ),
                ));
            }
        }
    }
    let mut vars = file.vars.clone().into_iter().collect::<Map<_, _>>();
    for (name, value) in overrides {
        vars.insert(name.clone(), value.clone());
    }
    let when = file
        .when
        .as_ref()
        .map(|when| condition(when, "when"))
        .transpose()?;
    let rule = |error: RuleError| at(error.line, error.column, error.message);
    let reentry = match &file.reentry {
        Some(text) => text
            .value
            .parse()
            .map_err(|e: String| at(text.line, text.column, format!("reentry: {e}")))?,
        None => Reentry::Always,
    };
    let cap = file
        .caps
        .as_ref()
        .map(journey::caps)
        .transpose()
        .map_err(rule)?;
    let quiet_hours = file
        .quiet_hours
        .as_ref()
        .map(journey::quiet_hours)
        .transpose()
        .map_err(rule)?;
    let steps = steps(&file.steps, true)?;
    let mut uses: HashSet<String> = when.as_ref().map(Condition::variables).unwrap_or_default();
    for step in &steps {
        step.variables(&mut uses);
    }
    Ok(Workflow {
        name: file.name.clone(),
        source: String::new(),
        description: file.description.clone(),
        vars,
        on,
        events: file.trigger.event.as_ref().map(OneOrMany::to_vec),
        topics,
        when,
        dead_letter_unmatched: file.unmatched == crate::definition::Unmatched::DeadLetter,
        reentry,
        cap,
        quiet_hours,
        transactional: file.transactional,
        steps,
        uses,
    })
}

/// A step as people read it (the console draws these): a one-line label, and the steps under
/// each of its branches (`then`, `else`, `crossed`).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Outline {
    pub label: String,
    pub branches: Vec<(String, Vec<Outline>)>,
}

impl Workflow {
    /// The steps as an outline.
    pub fn outline(&self) -> Vec<Outline> {
        self.steps.iter().map(Step::outline).collect()
    }
}

fn names(pairs: &[(String, ValueTemplate)]) -> String {
    pairs
        .iter()
        .map(|(name, _)| name.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

impl Step {
    fn outline(&self) -> Outline {
        let leaf = |label: String| Outline {
            label,
            branches: Vec::new(),
        };
        let list = |steps: &[Step]| steps.iter().map(Step::outline).collect::<Vec<_>>();
        match &self.kind {
            StepKind::Contact { .. } => leaf("intercom.contact".into()),
            StepKind::Company { company_id, .. } => {
                leaf(format!("intercom.company {}", company_id.written()))
            }
            StepKind::Tag(name) => leaf(format!("intercom.tag {}", name.written())),
            StepKind::Untag(name) => leaf(format!("intercom.untag {}", name.written())),
            StepKind::Event { name, .. } => leaf(format!("intercom.event {}", name.written())),
            StepKind::Message { email, .. } => leaf(format!(
                "intercom.message ({})",
                if *email { "email" } else { "in-app" }
            )),
            StepKind::Conversation { .. } => leaf("intercom.conversation".into()),
            StepKind::Note { .. } => leaf("intercom.note".into()),
            StepKind::Assign { round_robin, .. } => leaf(if round_robin.is_some() {
                "intercom.assign (round-robin)".into()
            } else {
                "intercom.assign".into()
            }),
            StepKind::Http { method, .. } => leaf(format!("http.request {method}")),
            StepKind::Segment { call, .. } => leaf(format!("segment.{call}")),
            StepKind::If {
                condition,
                then,
                otherwise,
            } => {
                let mut branches = vec![("then".to_owned(), list(then))];
                if !otherwise.is_empty() {
                    branches.push(("else".to_owned(), list(otherwise)));
                }
                Outline {
                    label: format!("if {}", condition.source().trim()),
                    branches,
                }
            }
            StepKind::Set(pairs) => leaf(format!("set {}", names(pairs))),
            StepKind::Remember(pairs) => leaf(format!("remember {}", names(pairs))),
            StepKind::Milestone(name) => leaf(format!("milestone {}", name.written())),
            StepKind::Score {
                name,
                threshold,
                crossed,
                ..
            } => Outline {
                label: format!("score {name}"),
                branches: if crossed.is_empty() {
                    Vec::new()
                } else {
                    vec![(format!("crossed {threshold}"), list(crossed))]
                },
            },
            StepKind::Count { name, window } => leaf(format!("count {name} over {window}")),
            StepKind::Wait {
                duration,
                cancel_on,
            } => {
                let duration = duration.written();
                leaf(if cancel_on.is_empty() {
                    format!("wait {duration}")
                } else {
                    format!("wait {duration} unless {}", cancel_on.join(", "))
                })
            }
            StepKind::WaitUntil {
                events,
                condition,
                timeout,
                on_timeout,
            } => {
                let mut what: Vec<String> = events.clone();
                if let Some(condition) = condition {
                    what.push(condition.source().trim().to_owned());
                }
                Outline {
                    label: format!(
                        "wait until {} (at most {})",
                        what.join(" or "),
                        timeout.written()
                    ),
                    branches: if on_timeout.is_empty() {
                        Vec::new()
                    } else {
                        vec![("timeout".to_owned(), list(on_timeout))]
                    },
                }
            }
        }
    }

    /// Adds the top-level names this step (and the steps inside it) read.
    fn variables(&self, names: &mut HashSet<String>) {
        let mut add = |template: &ValueTemplate| names.extend(template.variables());
        let optional = |template: &Option<ValueTemplate>, add: &mut dyn FnMut(&ValueTemplate)| {
            if let Some(template) = template {
                add(template);
            }
        };
        let mut nested: Vec<&Step> = Vec::new();
        match &self.kind {
            StepKind::Contact { traits, fields } => {
                add(traits);
                fields.iter().for_each(|(_, f)| add(f));
            }
            StepKind::Company {
                company_id, traits, ..
            } => {
                add(company_id);
                add(traits);
            }
            StepKind::Tag(t) | StepKind::Untag(t) | StepKind::Milestone(t) => add(t),
            StepKind::Event {
                name,
                created_at,
                metadata,
            } => {
                add(name);
                optional(created_at, &mut add);
                add(metadata);
            }
            StepKind::Message {
                from,
                subject,
                body,
                ..
            } => {
                add(from);
                optional(subject, &mut add);
                add(body);
            }
            StepKind::Conversation {
                body,
                assign_admin,
                assign_team,
                admin,
                note,
            } => {
                add(body);
                for t in [assign_admin, assign_team, admin, note] {
                    optional(t, &mut add);
                }
            }
            StepKind::Note { admin, body } => {
                add(admin);
                add(body);
            }
            StepKind::Assign {
                admin, round_robin, ..
            } => {
                optional(admin, &mut add);
                optional(round_robin, &mut add);
            }
            StepKind::Segment { fields, .. } => fields.iter().for_each(|(_, f)| add(f)),
            StepKind::Http {
                url, headers, body, ..
            } => {
                add(url);
                headers.iter().for_each(|(_, h)| add(h));
                optional(body, &mut add);
            }
            StepKind::If {
                condition,
                then,
                otherwise,
            } => {
                names.extend(condition.variables());
                nested.extend(then.iter().chain(otherwise));
            }
            StepKind::Set(values) | StepKind::Remember(values) => {
                values.iter().for_each(|(_, v)| add(v))
            }
            StepKind::Score { rules, crossed, .. } => {
                for rule in rules {
                    if let Some(when) = &rule.when {
                        names.extend(when.variables());
                    }
                }
                nested.extend(crossed);
            }
            StepKind::Count { .. } => {}
            StepKind::Wait { duration, .. } => {
                if let WaitFor::Computed(template) = duration {
                    add(template);
                }
            }
            StepKind::WaitUntil {
                condition,
                timeout,
                on_timeout,
                ..
            } => {
                if let WaitFor::Computed(template) = timeout {
                    add(template);
                }
                if let Some(condition) = condition {
                    names.extend(condition.variables());
                }
                nested.extend(on_timeout);
            }
        }
        if let ErrorBranch::Steps(branch) = &self.on_error {
            nested.extend(branch);
        }
        for step in nested {
            step.variables(names);
        }
    }
}

fn condition(source: &Located<String>, what: &str) -> Result<Condition, LoadError> {
    Condition::compile(&source.value)
        .map_err(|e| at(source.line, source.column, format!("{what}: {}", e.message)))
}

fn steps(list: &[Located<StepDef>], top_level: bool) -> Result<Vec<Step>, LoadError> {
    list.iter()
        .enumerate()
        .map(|(index, step)| compile_step(index, step, top_level))
        .collect()
}

/// The kind keys a step has, in the file's vocabulary.
fn kinds(def: &StepDef) -> Vec<&'static str> {
    let present = [
        ("intercom.contact", def.contact.is_some()),
        ("intercom.company", def.company.is_some()),
        ("intercom.tag", def.tag.is_some()),
        ("intercom.untag", def.untag.is_some()),
        ("intercom.event", def.data_event.is_some()),
        ("intercom.message", def.message.is_some()),
        ("intercom.conversation", def.conversation.is_some()),
        ("intercom.note", def.note.is_some()),
        ("intercom.assign", def.assign.is_some()),
        ("http.request", def.http.is_some()),
        ("segment.identify", def.segment_identify.is_some()),
        ("segment.track", def.segment_track.is_some()),
        ("segment.group", def.segment_group.is_some()),
        ("if", def.condition.is_some()),
        ("set", def.set.is_some()),
        ("remember", def.remember.is_some()),
        ("milestone", def.milestone.is_some()),
        ("score", def.score.is_some()),
        ("count", def.count.is_some()),
        ("wait", def.wait.is_some()),
    ];
    present
        .into_iter()
        .filter_map(|(name, present)| present.then_some(name))
        .collect()
}

const STEP_KINDS: &str = "intercom.contact, intercom.company, intercom.tag, intercom.untag, intercom.event, intercom.message, intercom.conversation, intercom.note, intercom.assign, http.request, segment.identify, segment.track, segment.group, if, set, remember, milestone, score, count or wait";

fn compile_step(
    index: usize,
    located: &Located<StepDef>,
    top_level: bool,
) -> Result<Step, LoadError> {
    let def = &located.value;
    let (line, column) = (located.line, located.column);
    let kinds = kinds(def);
    let kind_name = match kinds.as_slice() {
        [one] => *one,
        [] => {
            return Err(at(
                line,
                column,
                format!("step {index}: expected one of {STEP_KINDS}"),
            ));
        }
        many => {
            return Err(at(
                line,
                column,
                format!(
                    "step {index}: one kind per step, found {}; split it into several steps",
                    many.join(" and ")
                ),
            ));
        }
    };
    if kind_name != "if" && (def.then.is_some() || def.otherwise.is_some()) {
        return Err(at(
            line,
            column,
            format!("step {index}: `then`/`else` belong to an `if` step"),
        ));
    }
    let here = |message: String| {
        at(
            line,
            column,
            format!("step {index} ({kind_name}): {message}"),
        )
    };
    let template = |value: &Json, field: &str| {
        ValueTemplate::compile(value)
            .map_err(|e: CompileError| here(format!("{field}: {}", e.message)))
    };
    let optional =
        |value: &Option<Json>, field: &str| value.as_ref().map(|v| template(v, field)).transpose();
    let pairs = |map: &std::collections::BTreeMap<String, Json>, field: &str| {
        map.iter()
            .map(|(k, v)| Ok((k.clone(), template(v, &format!("{field}.{k}"))?)))
            .collect::<Result<Vec<_>, LoadError>>()
    };
    let kind = if let Some(contact) = &def.contact {
        StepKind::Contact {
            traits: template(
                contact
                    .traits
                    .as_ref()
                    .unwrap_or(&json!("{{ event.traits }}")),
                "traits",
            )?,
            fields: pairs(&contact.fields, "fields")?,
        }
    } else if let Some(company) = &def.company {
        StepKind::Company {
            company_id: template(
                company
                    .company_id
                    .as_ref()
                    .unwrap_or(&json!("{{ event.groupId }}")),
                "company_id",
            )?,
            traits: template(
                company
                    .traits
                    .as_ref()
                    .unwrap_or(&json!("{{ event.traits }}")),
                "traits",
            )?,
            attach: company.attach.unwrap_or(true),
        }
    } else if let Some(tag) = &def.tag {
        StepKind::Tag(template(tag, "tag")?)
    } else if let Some(tag) = &def.untag {
        StepKind::Untag(template(tag, "tag")?)
    } else if let Some(event) = &def.data_event {
        StepKind::Event {
            name: template(
                event.name.as_ref().unwrap_or(&json!("{{ event.event }}")),
                "name",
            )?,
            created_at: optional(&event.created_at, "created_at")?,
            metadata: template(
                event
                    .metadata
                    .as_ref()
                    .unwrap_or(&json!("{{ event.properties }}")),
                "metadata",
            )?,
        }
    } else if let Some(message) = &def.message {
        let email = matches!(message.kind, MessageType::Email);
        if email && message.subject.is_none() {
            return Err(here("an email needs a `subject`".into()));
        }
        StepKind::Message {
            from: template(&message.from, "from")?,
            email,
            subject: optional(&message.subject, "subject")?,
            body: template(&message.body, "body")?,
            open_conversation: message.open_conversation,
        }
    } else if let Some(conversation) = &def.conversation {
        let assign = conversation.assign_to.clone().unwrap_or_default();
        StepKind::Conversation {
            body: template(&conversation.body, "body")?,
            assign_admin: optional(&assign.admin, "assign_to.admin")?,
            assign_team: optional(&assign.team, "assign_to.team")?,
            admin: optional(&conversation.admin, "admin")?,
            note: optional(&conversation.note, "note")?,
        }
    } else if let Some(note) = &def.note {
        StepKind::Note {
            admin: template(&note.admin, "admin")?,
            body: template(&note.body, "body")?,
        }
    } else if let Some(AssignDef {
        admin,
        round_robin,
        set_owner,
    }) = &def.assign
    {
        if admin.is_some() == round_robin.is_some() {
            return Err(here(
                "expected either `admin` or a `round_robin` list".into(),
            ));
        }
        if let Some(Json::Array(list)) = round_robin
            && list.is_empty()
        {
            return Err(here("round_robin: the list is empty".into()));
        }
        StepKind::Assign {
            admin: optional(admin, "admin")?,
            round_robin: optional(round_robin, "round_robin")?,
            set_owner: set_owner.unwrap_or(true),
        }
    } else if let Some(http) = &def.http {
        let method = http
            .method
            .clone()
            .unwrap_or_else(|| "POST".into())
            .to_ascii_uppercase();
        if !["GET", "POST", "PUT", "PATCH", "DELETE"].contains(&method.as_str()) {
            return Err(here(format!(
                "method `{method}`: expected GET, POST, PUT, PATCH or DELETE"
            )));
        }
        StepKind::Http {
            method,
            url: template(&http.url, "url")?,
            headers: pairs(&http.headers, "headers")?,
            body: optional(&http.body, "body")?,
        }
    } else if let Some((call, fields)) = def
        .segment_identify
        .as_ref()
        .map(|f| ("identify", f))
        .or_else(|| def.segment_track.as_ref().map(|f| ("track", f)))
        .or_else(|| def.segment_group.as_ref().map(|f| ("group", f)))
    {
        let required = match call {
            "track" => Some("event"),
            "group" => Some("groupId"),
            _ => None,
        };
        if let Some(field) = required
            && !fields.contains_key(field)
        {
            return Err(here(format!("a Segment {call} needs `{field}`")));
        }
        if !fields.contains_key("userId") && !fields.contains_key("anonymousId") {
            return Err(here("needs `userId` or `anonymousId`".into()));
        }
        StepKind::Segment {
            call,
            fields: pairs(fields, "fields")?,
        }
    } else if let Some(source) = &def.condition {
        let Some(then) = &def.then else {
            return Err(here("an `if` needs `then` steps".into()));
        };
        StepKind::If {
            condition: condition(source, "if")?,
            then: steps(then, false)?,
            otherwise: def
                .otherwise
                .as_deref()
                .map(|s| steps(s, false))
                .transpose()?
                .unwrap_or_default(),
        }
    } else if let Some(set) = &def.set {
        StepKind::Set(pairs(set, "set")?)
    } else if let Some(remember) = &def.remember {
        StepKind::Remember(pairs(remember, "remember")?)
    } else if let Some(milestone) = &def.milestone {
        StepKind::Milestone(template(milestone, "milestone")?)
    } else if let Some(score) = &def.score {
        if score.rules.is_empty() {
            return Err(here("a score needs at least one rule".into()));
        }
        if score.window.is_some() && score.half_life.is_some() {
            return Err(here("use `window` or `half_life`, not both".into()));
        }
        let rules = score
            .rules
            .iter()
            .map(|rule| {
                Ok(ScoreRule {
                    events: rule.event.as_ref().map(OneOrMany::to_vec),
                    kinds: rule.kind.as_ref().map(OneOrMany::to_vec),
                    when: rule
                        .when
                        .as_ref()
                        .map(|w| condition(w, "rules.when"))
                        .transpose()?,
                    points: rule.points,
                })
            })
            .collect::<Result<_, LoadError>>()?;
        StepKind::Score {
            name: score.name.clone(),
            rules,
            window: score.window,
            half_life: score.half_life,
            threshold: score.threshold,
            hysteresis: score.hysteresis.max(0.0),
            crossed: steps(&score.crossed, false)?,
        }
    } else if let Some(count) = &def.count {
        StepKind::Count {
            name: count.name.clone(),
            window: count.window,
        }
    } else if let Some(wait) = &def.wait {
        if !top_level {
            return Err(here(
                "`wait` may only appear in a workflow's top-level steps".into(),
            ));
        }
        let span = |value: &Json, field: &str| match value {
            Json::String(text) if !text.contains("{{") => Ok(WaitFor::Fixed(
                text.parse()
                    .map_err(|e: crate::duration::SpanError| here(format!("{field}: {e}")))?,
            )),
            other @ Json::String(_) => Ok(WaitFor::Computed(template(other, field)?)),
            other => Err(here(format!(
                "{field}: {other} is not a duration; expected text like 7d"
            ))),
        };
        match (&wait.duration, &wait.until) {
            (Some(duration), None) => {
                if wait.timeout.is_some() || wait.on_timeout.is_some() {
                    return Err(here(
                        "`timeout` and `on_timeout` belong to `wait: {until: …}`".into(),
                    ));
                }
                StepKind::Wait {
                    duration: span(duration, "for")?,
                    cancel_on: wait
                        .unless
                        .as_ref()
                        .map(|u| u.event.to_vec())
                        .unwrap_or_default(),
                }
            }
            (None, Some(until)) => {
                if wait.unless.is_some() {
                    return Err(here(
                        "`unless` belongs to `wait: {for: …}`; with `until`, list the events under `until.event`".into(),
                    ));
                }
                let Some(timeout) = &wait.timeout else {
                    return Err(here(
                        "`until` needs a `timeout` (how long to hold at most, like 3d)".into(),
                    ));
                };
                if until.event.is_none() && until.when.is_none() {
                    return Err(here("until: expected `event`, `when` or both".into()));
                }
                StepKind::WaitUntil {
                    events: until
                        .event
                        .as_ref()
                        .map(OneOrMany::to_vec)
                        .unwrap_or_default(),
                    condition: until
                        .when
                        .as_ref()
                        .map(|w| condition(w, "until.when"))
                        .transpose()?,
                    timeout: span(timeout, "timeout")?,
                    on_timeout: steps(wait.on_timeout.as_deref().unwrap_or_default(), false)?,
                }
            }
            (Some(_), Some(_)) => {
                return Err(here("use `for` or `until`, not both".into()));
            }
            (None, None) => {
                return Err(here(
                    "expected `for` (a duration) or `until` (events or a condition)".into(),
                ));
            }
        }
    } else {
        unreachable!("kinds() found exactly one kind")
    };
    let on_error = match &def.on_error {
        None => ErrorBranch::Stop,
        Some(OnErrorDef::Keyword(word)) => match word.as_str() {
            "stop" => ErrorBranch::Stop,
            "continue" => ErrorBranch::Continue,
            other => {
                return Err(here(format!(
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
        kind,
    })
}
