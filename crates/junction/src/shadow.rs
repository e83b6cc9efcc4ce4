//! `junction shadow report`: what shadow delivery recorded instead of sending — the requests
//! by route (method and path, ids replaced by `{id}`) and by workflow, with a sample request
//! for each route — so a team running Junction beside its current integration can compare.

use crate::Failure;
use crate::cli::ConfigArg;
use crate::config::Config;
use crate::read::{open, print_json, query_failure, table};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::path::Path;

type Loader = fn(Option<&Path>) -> Result<Config, Failure>;

/// A path with its ids replaced: `/contacts/6762f0dd1bb6/tags` → `/contacts/{id}/tags`.
pub fn route(method: &str, path: &str) -> String {
    let shape: Vec<&str> = path
        .split('/')
        .map(|segment| {
            let id_like = segment.len() >= 6
                && segment.chars().any(|c| c.is_ascii_digit())
                && segment
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
            if id_like { "{id}" } else { segment }
        })
        .collect();
    format!("{method} {}", shape.join("/"))
}

pub async fn report(
    config: ConfigArg,
    limit: usize,
    json: bool,
    load: Loader,
) -> Result<(), Failure> {
    let store = open(&config, load).await?;
    let recorded = store.shadow_calls(limit).await.map_err(query_failure)?;
    let mut by_route: BTreeMap<String, (usize, Value)> = BTreeMap::new();
    let mut by_workflow: BTreeMap<String, usize> = BTreeMap::new();
    let mut requests = 0;
    for action in &recorded {
        *by_workflow.entry(action.workflow.clone()).or_default() += 1;
        for call in action.calls.as_array().into_iter().flatten() {
            requests += 1;
            let route = route(
                call["method"].as_str().unwrap_or("?"),
                call["path"].as_str().unwrap_or("?"),
            );
            let entry = by_route
                .entry(route)
                .or_insert_with(|| (0, call["request"].clone()));
            entry.0 += 1;
        }
    }
    if json {
        return print_json(&json!({
            "actions": recorded.len(),
            "requests": requests,
            "routes": by_route.iter().map(|(route, (count, sample))| {
                json!({"route": route, "requests": count, "sample": sample})
            }).collect::<Vec<_>>(),
            "workflows": by_workflow,
        }));
    }
    println!(
        "{} action(s) delivered in shadow (newest {limit} read), {requests} request(s) recorded, none sent",
        recorded.len()
    );
    let rows = by_route
        .iter()
        .map(|(route, (count, sample))| {
            let sample = match sample {
                Value::String(text) => text.clone(),
                Value::Null => String::new(),
                other => other.to_string(),
            };
            vec![route.clone(), count.to_string(), clip(&sample, 80)]
        })
        .collect();
    print!("{}", table(&["ROUTE", "REQUESTS", "SAMPLE"], rows));
    let rows = by_workflow
        .iter()
        .map(|(workflow, count)| vec![workflow.clone(), count.to_string()])
        .collect();
    print!("{}", table(&["WORKFLOW", "ACTIONS"], rows));
    Ok(())
}

fn clip(text: &str, width: usize) -> String {
    if text.chars().count() > width {
        format!("{}…", text.chars().take(width - 1).collect::<String>())
    } else {
        text.to_owned()
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn routes_hide_ids_not_names() {
        assert_eq!(
            super::route("POST", "/contacts/6762f0dd1bb69f9f00000001/tags"),
            "POST /contacts/{id}/tags"
        );
        assert_eq!(super::route("POST", "/contacts"), "POST /contacts");
        assert_eq!(
            super::route("GET", "/data_attributes"),
            "GET /data_attributes"
        );
    }
}
