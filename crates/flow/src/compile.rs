//! From a workflow file to a [`Workflow`] ready to plan with: YAML parsed with line numbers,
//! the workflow's own keys checked (trigger, journey rules) and its steps compiled by their
//! kinds (`steps/`), every expression and template once. Errors carry the line and column.

use crate::definition::{Located, OneOrMany, WorkflowFile};
use crate::expr::Condition;
use crate::journey::{self, Cap, QuietHours, Reentry, RuleError};
use crate::steps::steps;
pub use crate::steps::{ErrorBranch, Outline, Step, StepKind};
use serde_json::{Map, Value as Json};
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

pub(crate) fn at(line: u32, column: u32, message: impl Into<String>) -> LoadError {
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

impl Workflow {
    /// The steps as an outline.
    pub fn outline(&self) -> Vec<Outline> {
        self.steps.iter().map(Step::outline).collect()
    }
}

pub(crate) fn condition(source: &Located<String>, what: &str) -> Result<Condition, LoadError> {
    Condition::compile(&source.value)
        .map_err(|e| at(source.line, source.column, format!("{what}: {}", e.message)))
}
