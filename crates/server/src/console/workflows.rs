//! The Workflows pages: each loaded workflow's YAML, a diagram of its steps, and "try it" —
//! an event planned with that workflow alone and delivered to an Intercom emulator inside the
//! process, showing the plan and the exact requests (what `junction test` prints). Nothing
//! reaches Intercom or any webhook.

use super::{csrf_refused, error_page, field, form_fields, render, signed_in, to_sign_in};
use crate::AppState;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use bytes::Bytes;
use junction_flow::Workflow;
use junction_flow::compile::Outline;
use serde_json::{Value, json};

/// Longest label drawn in a diagram box.
const LABEL_CHARS: usize = 80;
const ROW: usize = 34;
const INDENT: usize = 28;

pub async fn list(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let Some(session) = signed_in(&state, &headers) else {
        return to_sign_in();
    };
    let workflows: Vec<Value> = state
        .inner
        .planner
        .as_ref()
        .map(|live| live.current().workflows().iter().map(summary).collect())
        .unwrap_or_default();
    render(
        "workflows.html",
        json!({"signed_in": true, "csrf": session.csrf, "page": "workflows", "workflows": workflows}),
    )
}

fn summary(workflow: &Workflow) -> Value {
    json!({
        "name": workflow.name,
        "description": workflow.description,
        "trigger": trigger(workflow),
    })
}

/// What starts it, as written: `segment.track (Signed Up, Feature Used)`.
fn trigger(workflow: &Workflow) -> String {
    let mut on: Vec<String> = workflow
        .on
        .iter()
        .filter(|kind| *kind != "intercom")
        .map(|kind| format!("segment.{kind}"))
        .collect();
    on.extend(
        workflow
            .topics
            .iter()
            .map(|topic| format!("intercom.{topic}")),
    );
    let mut text = on.join(", ");
    if let Some(events) = &workflow.events {
        text.push_str(&format!(" ({})", events.join(", ")));
    }
    text
}

pub async fn show(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Response {
    let Some(session) = signed_in(&state, &headers) else {
        return to_sign_in();
    };
    workflow_page(&state, &session.csrf, &name, None, None)
}

/// `POST /console/workflows/{name}/try`: the event in the form through this workflow.
pub async fn try_it(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(name): Path<String>,
    body: Bytes,
) -> Response {
    let Some(session) = signed_in(&state, &headers) else {
        return to_sign_in();
    };
    let fields = form_fields(&body);
    if !session.accepts(field(&fields, "csrf")) {
        return csrf_refused(&session);
    }
    let event = field(&fields, "event").unwrap_or_default().to_owned();
    let Some(try_event) = state.inner.try_it.clone() else {
        return error_page(
            StatusCode::SERVICE_UNAVAILABLE,
            "Cannot try workflows here",
            "This server was started without the dry run.",
            Some(&session.csrf),
        );
    };
    let outcome = try_event(name.clone(), event.clone().into_bytes()).await;
    workflow_page(&state, &session.csrf, &name, Some(&event), Some(outcome))
}

fn workflow_page(
    state: &AppState,
    csrf: &str,
    name: &str,
    event: Option<&str>,
    outcome: Option<Result<String, String>>,
) -> Response {
    let planner = state.inner.planner.as_ref().map(|live| live.current());
    let Some(workflow) = planner
        .as_ref()
        .and_then(|planner| planner.workflows().iter().find(|w| w.name == name))
    else {
        return error_page(
            StatusCode::NOT_FOUND,
            "Not found",
            "No loaded workflow has that name.",
            Some(csrf),
        );
    };
    let event = event.map_or_else(|| sample_event(workflow), str::to_owned);
    let (output, problem) = match outcome {
        Some(Ok(output)) => (Some(output), None),
        Some(Err(problem)) => (None, Some(problem)),
        None => (None, None),
    };
    render(
        "workflow.html",
        json!({
            "signed_in": true, "csrf": csrf, "page": "workflows",
            "workflow": summary(workflow),
            "when": workflow.when.as_ref().map(|w| w.source().trim().to_owned()),
            "source": super::redact::urls_in_text(&workflow.source),
            "diagram": diagram(workflow),
            "event": event,
            "output": output,
            "problem": problem,
        }),
    )
}

/// An event the workflow takes, to start "try it" from.
fn sample_event(workflow: &Workflow) -> String {
    let kind = workflow
        .on
        .first()
        .map(String::as_str)
        .unwrap_or("identify");
    let event = match kind {
        "track" => json!({
            "type": "track", "userId": "try-user",
            "event": workflow.events.as_ref().and_then(|e| e.first()).map_or("Signed Up", String::as_str),
            "properties": {"plan": "pro"},
        }),
        "group" => json!({
            "type": "group", "userId": "try-user", "groupId": "acme",
            "traits": {"name": "Acme", "employees": 40, "plan": "pro"},
        }),
        "page" | "screen" => json!({"type": kind, "userId": "try-user", "name": "Pricing"}),
        "alias" => json!({"type": "alias", "userId": "try-user", "previousId": "try-visitor"}),
        _ => json!({
            "type": "identify", "userId": "try-user",
            "traits": {"email": "try-user@example.com", "name": "Try User", "plan": "pro"},
        }),
    };
    serde_json::to_string_pretty(&event).unwrap_or_default()
}

/// The workflow as an SVG diagram: the trigger, then each step in order, branches indented
/// under their label. Every label is escaped (it is the workflow's own text).
pub fn diagram(workflow: &Workflow) -> String {
    let mut rows: Vec<(usize, String, bool)> = vec![(0, format!("on {}", trigger(workflow)), true)];
    if let Some(when) = &workflow.when {
        rows.push((0, format!("when {}", when.source().trim()), true));
    }
    fn walk(steps: &[Outline], depth: usize, rows: &mut Vec<(usize, String, bool)>) {
        for step in steps {
            rows.push((depth, step.label.clone(), false));
            for (branch, inner) in &step.branches {
                rows.push((depth + 1, branch.clone(), true));
                walk(inner, depth + 2, rows);
            }
        }
    }
    walk(&workflow.outline(), 0, &mut rows);
    let width = 900;
    let height = rows.len() * ROW + 10;
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" class=\"diagram\" role=\"img\" \
         aria-labelledby=\"diagram-title\" viewBox=\"0 0 {width} {height}\" width=\"{width}\" height=\"{height}\">\
         <title id=\"diagram-title\">Steps of {}</title>",
        escape(&workflow.name)
    );
    for (index, (depth, label, is_marker)) in rows.iter().enumerate() {
        let x = 10 + depth * INDENT;
        let y = 5 + index * ROW;
        let label = truncate(label);
        if *is_marker {
            svg.push_str(&format!(
                "<text x=\"{x}\" y=\"{}\" font-size=\"13\" font-style=\"italic\" fill=\"#5b6475\">{}</text>",
                y + 20,
                escape(&label)
            ));
        } else {
            let box_width = (label.chars().count() * 8 + 24).min(width - x - 10);
            svg.push_str(&format!(
                "<rect x=\"{x}\" y=\"{y}\" width=\"{box_width}\" height=\"{}\" rx=\"4\" fill=\"#eef3fb\" stroke=\"#1f5fbf\"/>\
                 <text x=\"{}\" y=\"{}\" font-size=\"13\" font-family=\"monospace\" fill=\"#1d2330\">{}</text>",
                ROW - 8,
                x + 10,
                y + 17,
                escape(&label)
            ));
        }
    }
    svg.push_str("</svg>");
    svg
}

fn truncate(label: &str) -> String {
    let label = label.split_whitespace().collect::<Vec<_>>().join(" ");
    if label.chars().count() <= LABEL_CHARS {
        return label;
    }
    let mut cut: String = label.chars().take(LABEL_CHARS - 1).collect();
    cut.push('…');
    cut
}

/// Text for SVG (XML) content and attributes.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_diagram_draws_every_step_and_branch_and_escapes_labels() {
        let workflow = junction_flow::load(
            r#"
name: vip
trigger: { on: segment.identify }
when: traits.mrr is present
steps:
  - if: (traits.mrr | float) >= 100 and traits.name != "<b>"
    then:
      - intercom.tag: vip
    else:
      - intercom.untag: vip
  - wait: { for: 2d, unless: { event: [Paid] } }
"#,
            &Default::default(),
        )
        .unwrap();
        let svg = diagram(&workflow);
        for expected in [
            "on segment.identify",
            "when traits.mrr is present",
            "then",
            "intercom.tag vip",
            "else",
            "intercom.untag vip",
            "wait 2d unless Paid",
            "&lt;b&gt;",
        ] {
            assert!(svg.contains(expected), "{expected:?} not in {svg}");
        }
        assert!(!svg.contains("\"<b>\""));
        assert_eq!(svg.matches("<rect").count(), 4, "if, tag, untag, wait");
    }
}
