//! `junction test WORKFLOW --event EVENT.json`: plans the events with the workflow and prints
//! each planned action and the exact Intercom requests it makes — sent to a built-in Intercom
//! emulator inside this process, so nothing reaches Intercom (or any webhook: HTTP actions are
//! printed, not sent).

use crate::Failure;
use junction_delivery::{Deliverer, IntercomTarget};
use junction_emulator::{Emulator, EmulatorConfig};
use junction_flow::action::Action;
use junction_flow::{EventInput, Globals, Planner, Profile};
use junction_intercom::attributes::{AttributeCatalog, AttributePolicy};
use junction_intercom::{ContactResolver, IntercomClient, IntercomConfig};
use junction_model::MessageType;
use serde_json::{Map, Value};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// The workflow: a file, or a template's name.
fn load_workflow(
    workflow: &str,
    vars: &Map<String, Value>,
) -> Result<junction_flow::Workflow, Failure> {
    if let Some(template) = junction_flow::templates::find(workflow) {
        return crate::workflows::load_text(&format!("template:{workflow}"), template.source, vars)
            .map_err(Failure::Input);
    }
    let path = Path::new(workflow);
    let text = std::fs::read_to_string(path).map_err(|e| {
        Failure::Input(format!(
            "{workflow}: not a template name, and cannot read it as a file: {e}"
        ))
    })?;
    crate::workflows::load_text(workflow, &text, vars).map_err(Failure::Input)
}

/// `NAME=VALUE` (VALUE as JSON when it parses, else as text).
pub fn parse_var(text: &str) -> Result<(String, Value), String> {
    let (name, value) = text
        .split_once('=')
        .ok_or_else(|| format!("expected NAME=VALUE, found {text:?}"))?;
    let value = serde_json::from_str(value).unwrap_or_else(|_| Value::String(value.to_owned()));
    Ok((name.trim().to_owned(), value))
}

struct Event {
    kind: String,
    message_id: String,
    identity: String,
    timestamp_ms: i64,
    body: Value,
}

fn read_event(path: &Path) -> Result<Event, Failure> {
    let bytes = std::fs::read(path)
        .map_err(|e| Failure::Input(format!("{}: cannot read: {e}", path.display())))?;
    parse_event(&path.display().to_string(), &bytes).map_err(Failure::Input)
}

/// One Segment message, validated as ingest validates it; errors name `origin`.
fn parse_event(origin: &str, bytes: &[u8]) -> Result<Event, String> {
    let value: Value = serde_json::from_slice(bytes)
        .map_err(|e| format!("{origin}:{}:{}: not JSON: {e}", e.line(), e.column()))?;
    let kind: MessageType = value["type"]
        .as_str()
        .ok_or_else(|| {
            format!(
                "{origin}: type: expected identify, track, page, screen, group, alias or delete"
            )
        })?
        .parse()
        .map_err(|e| format!("{origin}: type: {e}"))?;
    // Without a timestamp the event happened now; give one for repeatable output.
    let received_at = value["timestamp"]
        .as_str()
        .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
        .map_or_else(chrono::Utc::now, |t| t.with_timezone(&chrono::Utc));
    let envelope = junction_model::parse_single(bytes, kind, received_at)
        .map_err(|e| format!("{origin}: {e}"))?;
    let Some(message) = envelope.messages.into_iter().next() else {
        let reason = envelope
            .rejected
            .first()
            .map(|r| format!("{}: {}", r.error.field, r.error.rule))
            .unwrap_or_default();
        return Err(format!("{origin}: {reason}"));
    };
    let mut body = Value::Object(message.body.clone());
    body["timestamp"] = message
        .timestamp
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
        .into();
    body["messageId"] = message.message_id.clone().into();
    Ok(Event {
        kind: message.kind.to_string(),
        message_id: message.message_id.clone(),
        identity: message.identity().to_owned(),
        timestamp_ms: message.timestamp.timestamp_millis(),
        body,
    })
}

pub async fn run(
    workflow: &str,
    events: &[PathBuf],
    vars: &[(String, Value)],
) -> Result<(), Failure> {
    let vars: Map<String, Value> = vars.iter().cloned().collect();
    let planner = Planner::new(vec![load_workflow(workflow, &vars)?])
        .map_err(|e| Failure::Input(e.to_string()))?;
    let events = events
        .iter()
        .map(|p| read_event(p))
        .collect::<Result<Vec<_>, _>>()?;
    let output = dry_run(&planner, &events).await.map_err(Failure::Runtime)?;
    print!("{output}");
    Ok(())
}

/// The console's "try it": one event (JSON text) through the loaded workflow `name`, as
/// `junction test` would print it. Errors are for people: the event's problem, or why the
/// workflow cannot be loaded.
pub async fn try_event(
    config: &crate::config::Config,
    name: &str,
    event: &[u8],
) -> Result<String, String> {
    let workflow = crate::workflows::load_named(config, name)?;
    let planner = Planner::new(vec![workflow])
        .map_err(|e| e.to_string())?
        .with_rules(config.journey_rules.clone());
    let event = parse_event("event", event)?;
    dry_run(&planner, &[event])
        .await
        .map_err(|e| format!("the dry run failed: {e}"))
}

async fn dry_run(planner: &Planner, events: &[Event]) -> anyhow::Result<String> {
    let emulator = Emulator::new(EmulatorConfig {
        token: Some("dry-run".into()),
        rate_limit: 1_000_000,
        search_lag: Duration::ZERO,
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = emulator.clone().spawn(listener).await?;
    let scratch = tempfile::tempdir()?;
    let store = junction_store::open(
        &format!("sqlite://{}", scratch.path().join("dry-run.db").display()),
        Default::default(),
    )
    .await?;
    let mut settings = IntercomConfig::new(format!("http://{addr}"), "dry-run");
    settings.retry.attempts = 1;
    let client = IntercomClient::new(settings)?;
    let deliverer = Deliverer::new(Some(IntercomTarget {
        resolver: ContactResolver::new(client.clone(), Arc::clone(&store), "dry-run"),
        catalog: AttributeCatalog::new(client.clone()),
        policy: AttributePolicy::default(),
        deletion: junction_delivery::Deletion::default(),
        client,
    }));
    let mut profiles: std::collections::HashMap<String, Profile> = Default::default();
    let mut globals = Globals::default();
    let mut out = String::new();
    for event in events {
        let profile = profiles.entry(event.identity.clone()).or_default();
        let plan = planner.plan_event(
            EventInput {
                message_id: &event.message_id,
                kind: &event.kind,
                identity: &event.identity,
                body: &event.body,
                timestamp_ms: event.timestamp_ms,
                segment_profile: None,
            },
            profile,
            &mut globals,
        );
        let name = event.body["event"]
            .as_str()
            .or(event.body["name"].as_str())
            .map(|n| format!(" {n:?}"))
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "event {} ({}{name}, {})",
            event.message_id, event.kind, event.identity
        );
        for run in &plan.runs {
            let status = match (&run.error, run.paused) {
                (Some(error), _) => format!("stopped: {error}"),
                (None, true) => "paused (a wait, or a message held through quiet hours)".into(),
                (None, false) => "done".into(),
            };
            let _ = writeln!(
                out,
                "  run {}: {} action(s), {status}",
                run.workflow, run.actions
            );
        }
        for timer in &plan.timers {
            let at = chrono::DateTime::from_timestamp_millis(timer.fire_at_ms)
                .map(|t| t.to_rfc3339())
                .unwrap_or_default();
            let _ = match &timer.release {
                Some(held) => writeln!(
                    out,
                    "  {} [{}] held through the contact's quiet hours until {at} (not sent now)",
                    held.action.kind(),
                    held.id
                ),
                None if timer.cancel_on.is_empty() => writeln!(
                    out,
                    "  timer {} fires at {at}; then resumes at step {}",
                    timer.id, timer.resume_at
                ),
                None => writeln!(
                    out,
                    "  timer {} fires at {at} unless {:?}; then resumes at step {}",
                    timer.id, timer.cancel_on, timer.resume_at
                ),
            };
        }
        for (id, at) in &plan.rescheduled_timers {
            let at = chrono::DateTime::from_timestamp_millis(*at)
                .map(|t| t.to_rfc3339())
                .unwrap_or_default();
            let _ = writeln!(
                out,
                "  timer {id} brought forward to {at}: the wait is over"
            );
        }
        for id in &plan.cancelled_timers {
            let _ = writeln!(out, "  timer {id} cancelled");
        }
        for (index, action) in plan.actions.iter().enumerate() {
            let standby = action
                .standby_for
                .as_ref()
                .map(|p| format!(" (only if {p} fails)"))
                .unwrap_or_default();
            let _ = writeln!(
                out,
                "  {}. {} [{}]{standby}",
                index + 1,
                action.action.kind(),
                action.id
            );
            if let Some(reason) = &action.capped {
                let _ = writeln!(out, "     capped ({reason}): kept, not sent");
                continue;
            }
            if let Action::Http {
                method, url, body, ..
            } = &action.action
            {
                // The host only: a webhook's path is its secret (Slack's, for one), and this
                // output is shown in the console too.
                let _ = writeln!(
                    out,
                    "     {method} {} {} (not sent)",
                    junction_server::console_redact::url_host_only(url),
                    body.as_ref().map(Value::to_string).unwrap_or_default()
                );
                continue;
            }
            let before = emulator.journal_entries().len();
            let result = deliverer.deliver(action, None).await;
            for call in &emulator.journal_entries()[before..] {
                let body = if call.body.is_null() {
                    String::new()
                } else {
                    format!(" {}", call.body)
                };
                let _ = writeln!(
                    out,
                    "     {} {}{body} -> {}",
                    call.method, call.path, call.status
                );
            }
            if let Err(failure) = result {
                let _ = writeln!(out, "     fails: {failure:?}");
            }
        }
    }
    Ok(out)
}
