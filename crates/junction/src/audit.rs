//! `junction audit USER`: one person's timeline from the CLI — the console's People page as
//! text. Found by any id Junction knows them by (userId, anonymousId, email, Intercom contact
//! id): their Intercom contact and ids, their profile (traits, milestones, scores, what they
//! wait for), then, oldest first, each event that came in with the workflow runs it caused,
//! each action's outcome and the Intercom calls it made.

use crate::Failure;
use crate::cli::ConfigArg;
use crate::config::Config;
use crate::read::{open, print_json, query_failure};
use junction_delivery::inspect;
use serde_json::Value;
use std::fmt::Write;
use std::path::Path;

type Loader = fn(Option<&Path>) -> Result<Config, Failure>;

pub async fn run(
    config: ConfigArg,
    who: &str,
    runs: usize,
    events: usize,
    json: bool,
    load: Loader,
) -> Result<(), Failure> {
    let store = open(&config, load).await?;
    let person = inspect::person(store.as_ref(), who, runs, events)
        .await
        .map_err(query_failure)?;
    if json {
        return print_json(&person);
    }
    if person["found"] != Value::Bool(true) {
        return Err(Failure::Input(format!(
            "nobody is known as {who:?} (a userId, anonymousId, email or Intercom contact id)"
        )));
    }
    print!("{}", timeline(who, &person));
    Ok(())
}

fn text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}

/// The person as text.
fn timeline(who: &str, person: &serde_json::Map<String, Value>) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "{who}");
    let entries = person["entries"].as_array().cloned().unwrap_or_default();
    let mut contacts: Vec<String> = entries.iter().map(|e| text(&e["contactId"])).collect();
    contacts.dedup();
    for contact in contacts {
        let ids: Vec<String> = entries
            .iter()
            .filter(|e| text(&e["contactId"]) == contact)
            .map(|e| format!("{} {}", text(&e["kind"]), text(&e["value"])))
            .collect();
        let _ = writeln!(out, "  Intercom contact {contact} ({})", ids.join("; "));
    }
    for profile in person["profiles"].as_array().into_iter().flatten() {
        let _ = writeln!(out, "  profile of {}", text(&profile["identity"]));
        for field in [
            "traits",
            "milestones",
            "scores",
            "counts",
            "memory",
            "timers",
        ] {
            let value = &profile[field];
            let empty = value.is_null()
                || value.as_object().is_some_and(|o| o.is_empty())
                || value.as_array().is_some_and(|a| a.is_empty());
            if !empty {
                let _ = writeln!(out, "    {field}: {value}");
            }
        }
    }
    let mut events = person["events"].as_array().cloned().unwrap_or_default();
    events.sort_by_key(|e| e["seq"].as_i64());
    let runs = person["runs"].as_array().cloned().unwrap_or_default();
    let _ = writeln!(out, "timeline, oldest first");
    let mut shown_runs = std::collections::HashSet::new();
    for event in &events {
        let seq = event["seq"].as_i64();
        let name = event["event"]
            .as_str()
            .map(|n| format!(" {n:?}"))
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "  {}  #{} {}{name}",
            text(&event["receivedAt"]),
            text(&event["seq"]),
            text(&event["type"])
        );
        for (index, run) in runs.iter().enumerate() {
            if run["event"].as_i64() == seq {
                shown_runs.insert(index);
                write_run(&mut out, run);
            }
        }
    }
    let older: Vec<&Value> = runs
        .iter()
        .enumerate()
        .filter(|(index, _)| !shown_runs.contains(index))
        .map(|(_, run)| run)
        .collect();
    if !older.is_empty() {
        let _ = writeln!(out, "  runs of events not listed above");
        for run in older {
            write_run(&mut out, run);
        }
    }
    out
}

fn write_run(out: &mut String, run: &Value) {
    let error = run["error"]
        .as_str()
        .map(|e| format!(" ({e})"))
        .unwrap_or_default();
    let _ = writeln!(
        out,
        "      run {}: {}{error}",
        text(&run["workflow"]),
        text(&run["status"])
    );
    for step in run["steps"].as_array().into_iter().flatten() {
        let result = step["result"]
            .as_str()
            .map(|r| format!(": {r}"))
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "        {} [{}] {}{result}",
            text(&step["kind"]),
            text(&step["step"]),
            text(&step["status"])
        );
        for attempt in step["attempts"].as_array().into_iter().flatten() {
            for call in attempt["calls"].as_array().into_iter().flatten() {
                let _ = writeln!(
                    out,
                    "          {} {} {} ({} ms)",
                    text(&call["method"]),
                    text(&call["path"]),
                    text(&call["status"]),
                    text(&call["ms"])
                );
            }
        }
    }
}
