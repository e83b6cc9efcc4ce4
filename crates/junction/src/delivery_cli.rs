//! `junction dlq …`, `junction runs …` and `junction quarantine …`: the dead-letter queue, the
//! execution log and what is held for unreadable state, read and acted on straight from the store (safe while the server runs; a running server picks up
//! replayed actions within a second).

use crate::Failure;
use crate::cli::{ConfigArg, DlqCommand, DlqFilter, QuarantineCommand, RunsCommand};
use crate::config::Config;
use crate::read::{open, print_json, query_failure, table};
use junction_delivery::inspect;
use junction_store::{DeadLetterQuery, RunQuery, Store};
use serde_json::Value;
use std::path::Path;

type Loader = fn(Option<&Path>) -> Result<Config, Failure>;

fn query(filter: &DlqFilter, limit: usize) -> Result<DeadLetterQuery, Failure> {
    let now = chrono::Utc::now().timestamp_millis();
    let time = |flag: &str, value: &Option<String>| {
        value
            .as_deref()
            .map(|v| {
                inspect::parse_time(v, now).map_err(|e| Failure::Input(format!("--{flag}: {e}")))
            })
            .transpose()
    };
    Ok(DeadLetterQuery {
        workflow: filter.workflow.clone(),
        code: filter.code.clone(),
        identity: filter.user.clone(),
        since_ms: time("since", &filter.since)?,
        until_ms: time("until", &filter.until)?,
        limit,
        capped: filter.capped,
    })
}

fn text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}

fn clip(text: String, width: usize) -> String {
    if text.chars().count() > width {
        format!("{}…", text.chars().take(width - 1).collect::<String>())
    } else {
        text
    }
}

pub async fn dlq(command: DlqCommand, load: Loader) -> Result<(), Failure> {
    match command {
        DlqCommand::List {
            config,
            filter,
            limit,
            json,
        } => {
            let store = open(&config, load).await?;
            let items = inspect::dead_letters(store.as_ref(), query(&filter, limit)?)
                .await
                .map_err(query_failure)?;
            if json {
                return print_json(&items);
            }
            let rows = items
                .iter()
                .map(|d| {
                    vec![
                        text(&d["failedAt"]),
                        text(&d["workflow"]),
                        text(&d["step"]),
                        text(&d["kind"]),
                        text(&d["user"]),
                        text(&d["code"]),
                        text(&d["attempts"]),
                        clip(text(&d["error"]), 60),
                        text(&d["id"]),
                    ]
                })
                .collect();
            print!(
                "{}",
                table(
                    &[
                        "FAILED", "WORKFLOW", "STEP", "KIND", "USER", "CODE", "TRIES", "REASON",
                        "ID"
                    ],
                    rows
                )
            );
            if filter.capped {
                println!("{} capped message(s)", items.len());
            } else {
                println!("{} dead letter(s)", items.len());
            }
            Ok(())
        }
        DlqCommand::Show { config, id } => {
            let store = open(&config, load).await?;
            match inspect::action_detail(store.as_ref(), &id)
                .await
                .map_err(query_failure)?
            {
                Some(detail) => print_json(&detail),
                None => Err(Failure::Input(format!("no action {id}"))),
            }
        }
        DlqCommand::Replay {
            config,
            ids,
            filter,
        } => {
            let settings = load(config.config.as_deref())?;
            let planner = crate::workflows::planner(&settings).map_err(Failure::Input)?;
            let store = open(&config, load).await?;
            let ids = selected(store.as_ref(), ids, &filter).await?;
            let bar = indicatif::ProgressBar::new(ids.len() as u64);
            bar.set_style(
                indicatif::ProgressStyle::with_template("replaying {bar:30} {pos}/{len} {msg}")
                    .expect("a valid template"),
            );
            let (mut replayed, mut actions, mut errors) = (0, 0, Vec::new());
            for id in &ids {
                match junction_delivery::replay::replay(store.as_ref(), &planner, id).await {
                    Ok(n) => {
                        replayed += 1;
                        actions += n;
                    }
                    Err(error) => errors.push(format!("{id}: {error}")),
                }
                bar.inc(1);
            }
            bar.finish_and_clear();
            println!(
                "replayed {replayed} dead letter(s) as {actions} new action(s); delivery picks them up"
            );
            for error in &errors {
                eprintln!("not replayed: {error}");
            }
            if errors.is_empty() {
                Ok(())
            } else {
                Err(Failure::Input(format!(
                    "{} dead letter(s) not replayed",
                    errors.len()
                )))
            }
        }
        DlqCommand::Release {
            config,
            ids,
            mut filter,
            all_matching,
        } => {
            if ids.is_empty() && !all_matching {
                return Err(Failure::Input("name capped messages by id, or pass --all-matching to release every one the filters match".into()));
            }
            filter.capped = true;
            let store = open(&config, load).await?;
            let ids = selected(store.as_ref(), ids, &filter).await?;
            let released = store.release_capped(ids).await.map_err(query_failure)?;
            println!("released {released} capped message(s); delivery sends them");
            Ok(())
        }
        DlqCommand::Discard {
            config,
            ids,
            filter,
            all_matching,
        } => {
            if ids.is_empty() && !all_matching {
                return Err(Failure::Input("name dead letters by id, or pass --all-matching to discard every one the filters match".into()));
            }
            let store = open(&config, load).await?;
            let ids = selected(store.as_ref(), ids, &filter).await?;
            let discarded = store.discard(ids).await.map_err(query_failure)?;
            println!("discarded {discarded} dead letter(s)");
            Ok(())
        }
    }
}

/// Explicit ids, else every dead letter the filters match.
async fn selected(
    store: &dyn Store,
    ids: Vec<String>,
    filter: &DlqFilter,
) -> Result<Vec<String>, Failure> {
    if !ids.is_empty() {
        return Ok(ids);
    }
    let letters = store
        .dead_letters(query(filter, 100_000)?)
        .await
        .map_err(query_failure)?;
    Ok(letters.into_iter().map(|a| a.id).collect())
}

pub async fn runs(command: RunsCommand, load: Loader) -> Result<(), Failure> {
    match command {
        RunsCommand::List {
            config,
            workflow,
            user,
            status,
            limit,
            json,
        } => {
            let store = open(&config, load).await?;
            let items = inspect::runs(
                store.as_ref(),
                RunQuery {
                    workflow,
                    identity: user,
                    status,
                    before_ms: None,
                    limit,
                },
            )
            .await
            .map_err(query_failure)?;
            if json {
                return print_json(&items);
            }
            let rows = items
                .iter()
                .map(|r| {
                    vec![
                        text(&r["plannedAt"]),
                        text(&r["workflow"]),
                        text(&r["user"]),
                        text(&r["status"]),
                        text(&r["actions"]),
                        text(&r["run"]),
                    ]
                })
                .collect();
            print!(
                "{}",
                table(
                    &["PLANNED", "WORKFLOW", "USER", "STATUS", "ACTIONS", "RUN"],
                    rows
                )
            );
            Ok(())
        }
        RunsCommand::Show { config, run, json } => {
            let store = open(&config, load).await?;
            let Some(detail) = inspect::run_detail(store.as_ref(), &run)
                .await
                .map_err(query_failure)?
            else {
                return Err(Failure::Input(format!("no run {run}")));
            };
            if json {
                return print_json(&detail);
            }
            print!("{}", run_text(&detail));
            Ok(())
        }
    }
}

pub async fn quarantine(command: QuarantineCommand, load: Loader) -> Result<(), Failure> {
    match command {
        QuarantineCommand::List {
            config,
            limit,
            json,
        } => {
            let store = open(&config, load).await?;
            let items = store.quarantine_list(limit).await.map_err(query_failure)?;
            if json {
                return print_json(&items);
            }
            let rows = items
                .iter()
                .map(|q| {
                    vec![
                        inspect::time_text(q.at_ms),
                        q.identity.clone(),
                        if q.timer { "timer" } else { "event" }.to_owned(),
                        q.seq.to_string(),
                        if q.released { "released" } else { "held" }.to_owned(),
                        clip(q.reason.clone(), 80),
                    ]
                })
                .collect();
            print!(
                "{}",
                table(&["AT", "USER", "KIND", "SEQ", "STATE", "REASON"], rows)
            );
            Ok(())
        }
        QuarantineCommand::Release {
            config,
            user,
            reset_profile,
        } => {
            let store = open(&config, load).await?;
            let released = store
                .quarantine_release(&user, reset_profile)
                .await
                .map_err(query_failure)?;
            if released == 0 {
                return Err(Failure::Input(format!("nothing of {user} is held")));
            }
            println!(
                "released {released} held event(s) or timer(s) of {user}{}; the server plans them within a second",
                if reset_profile {
                    " (profile reset)"
                } else {
                    ""
                }
            );
            Ok(())
        }
    }
}

/// A run for reading: header, then each step with its attempts and calls.
pub fn run_text(detail: &Value) -> String {
    let mut out = format!(
        "run {}\n  workflow {}  user {}  event {}  status {}  planned {}\n",
        text(&detail["run"]),
        text(&detail["workflow"]),
        text(&detail["user"]),
        text(&detail["event"]),
        text(&detail["status"]),
        text(&detail["plannedAt"]),
    );
    if let Some(error) = detail["error"].as_str() {
        out.push_str(&format!("  stopped while planning: {error}\n"));
    }
    for step in detail["steps"].as_array().into_iter().flatten() {
        out.push_str(&format!(
            "  step {} {}: {}{}\n",
            text(&step["step"]),
            text(&step["kind"]),
            text(&step["status"]),
            step["result"]
                .as_str()
                .map(|r| format!(" — {r}"))
                .unwrap_or_default()
        ));
        for attempt in step["attempts"].as_array().into_iter().flatten() {
            out.push_str(&format!(
                "    attempt {} {} {} ms\n",
                text(&attempt["number"]),
                text(&attempt["outcome"]),
                text(&attempt["ms"])
            ));
            for call in attempt["calls"].as_array().into_iter().flatten() {
                out.push_str(&format!(
                    "      {} {} -> {}\n",
                    text(&call["method"]),
                    text(&call["path"]),
                    text(&call["status"])
                ));
            }
        }
    }
    out
}

/// `junction cluster`: the nodes, and each planning partition with its planner and lag.
pub async fn cluster(config: ConfigArg, json: bool, load: Loader) -> Result<(), Failure> {
    let store = open(&config, load).await?;
    let now = chrono::Utc::now().timestamp_millis();
    let view = inspect::cluster(store.as_ref(), now)
        .await
        .map_err(query_failure)?;
    if json {
        return print_json(&view);
    }
    let text = |v: &Value| match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".to_owned(),
        other => other.to_string(),
    };
    let rows = view["nodes"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|node| {
            let plans: Vec<String> = node["plans"]
                .as_array()
                .into_iter()
                .flatten()
                .map(text)
                .collect();
            vec![
                text(&node["name"]),
                if node["alive"] == true {
                    "alive"
                } else {
                    "gone"
                }
                .to_owned(),
                text(&node["seenAt"]),
                if plans.is_empty() {
                    "-".to_owned()
                } else {
                    plans.join(",")
                },
                text(&node["claimedUsers"]),
            ]
        })
        .collect();
    print!(
        "{}",
        table(
            &["NODE", "STATE", "SEEN", "PLANS PARTITIONS", "USERS"],
            rows
        )
    );
    let partitions = view["partitions"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| {
            vec![
                text(&p["partition"]),
                text(&p["node"]),
                text(&p["cursor"]),
                text(&p["lagEvents"]),
            ]
        })
        .collect();
    print!(
        "\n{}",
        table(
            &["PARTITION", "PLANNED BY", "CURSOR", "EVENTS BEHIND"],
            partitions
        )
    );
    Ok(())
}
