//! Loading workflows for `serve`, `test` and `validate`: embedded templates or files, with
//! variable overrides from the configuration, each error reported as `FILE:LINE:COL: …`.

use crate::config::{Config, WorkflowEntry};
use junction_flow::definition::Unmatched;
use junction_flow::{Planner, Workflow, templates};
use serde_json::{Map, Value};
use std::path::{Path, PathBuf};

/// The workflows a configuration without a `workflows` key runs: the mappings of Segment's own
/// Intercom destination.
pub const DEFAULT_TEMPLATES: [&str; 3] = ["profile-sync", "company-sync", "track-events"];

/// Where a workflow came from, for error messages.
pub fn origin(entry: &WorkflowEntry, base: &Path) -> String {
    match (&entry.template, &entry.file) {
        (Some(name), _) => format!("template:{name}"),
        (None, Some(file)) => resolve(base, file).display().to_string(),
        (None, None) => "workflows entry".into(),
    }
}

fn resolve(base: &Path, file: &Path) -> PathBuf {
    if file.is_absolute() {
        file.to_path_buf()
    } else {
        base.join(file)
    }
}

/// Loads one workflow from text, naming `origin` in errors.
pub fn load_text(origin: &str, text: &str, vars: &Map<String, Value>) -> Result<Workflow, String> {
    junction_flow::load(text, vars).map_err(|e| match e.line {
        Some(_) => format!("{origin}:{e}"),
        None => format!("{origin}: {e}"),
    })
}

fn load_entry(entry: &WorkflowEntry, base: &Path) -> Result<Workflow, String> {
    let mut workflow = load_source(entry, base)?;
    if let Some(unmatched) = entry.unmatched {
        workflow.dead_letter_unmatched = unmatched == Unmatched::DeadLetter;
    }
    Ok(workflow)
}

fn load_source(entry: &WorkflowEntry, base: &Path) -> Result<Workflow, String> {
    let origin = origin(entry, base);
    match (&entry.template, &entry.file) {
        (Some(name), None) => {
            let template = templates::find(name).ok_or_else(|| {
                let names: Vec<&str> = templates::TEMPLATES.iter().map(|t| t.name).collect();
                format!(
                    "workflows: no template named `{name}`; the templates are {}",
                    names.join(", ")
                )
            })?;
            load_text(&origin, template.source, &entry.vars)
        }
        (None, Some(file)) => {
            let path = resolve(base, file);
            let text = std::fs::read_to_string(&path)
                .map_err(|e| format!("{}: cannot read the workflow file: {e}", path.display()))?;
            load_text(&origin, &text, &entry.vars)
        }
        _ => Err("workflows: each entry needs exactly one of `template` or `file`".into()),
    }
}

/// One of the configuration's workflows, loaded again by name.
pub fn load_named(config: &Config, name: &str) -> Result<Workflow, String> {
    for entry in entries(config) {
        let workflow = load_entry(&entry, &config.base_dir)?;
        if workflow.name == name {
            return Ok(workflow);
        }
    }
    Err(format!("no loaded workflow is named `{name}`"))
}

/// The configuration's workflow entries (the default templates without a `workflows` key).
fn entries(config: &Config) -> Vec<WorkflowEntry> {
    match &config.workflows {
        Some(entries) => entries.clone(),
        None => DEFAULT_TEMPLATES
            .iter()
            .map(|name| WorkflowEntry {
                template: Some((*name).into()),
                file: None,
                vars: Map::new(),
                unmatched: None,
                mode: None,
            })
            .collect(),
    }
}

/// The planner for a configuration.
pub fn planner(config: &Config) -> Result<Planner, String> {
    let entries = entries(config);
    let workflows = entries
        .iter()
        .map(|entry| load_entry(entry, &config.base_dir))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Planner::new(workflows)
        .map_err(|e| format!("workflows: {e}"))?
        .with_rules(config.journey_rules.clone()))
}

/// The workflows delivered in shadow: all (`None`) with `delivery.mode: shadow`, else those
/// whose entry says `mode: shadow` (empty: none).
pub fn shadowed(config: &Config) -> Result<Option<std::collections::HashSet<String>>, String> {
    use crate::config::DeliveryMode;
    if config.delivery.mode == DeliveryMode::Shadow {
        return Ok(None);
    }
    let mut names = std::collections::HashSet::new();
    for entry in entries(config) {
        if entry.mode == Some(DeliveryMode::Shadow) {
            names.insert(load_entry(&entry, &config.base_dir)?.name);
        }
    }
    Ok(Some(names))
}
