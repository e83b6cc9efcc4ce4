//! Planning as data: each file in `tests/plans/` is a case — a workflow, optionally the
//! workspace's `journeys` rules and a starting profile, and a sequence of timestamped events —
//! and its expected plan is a snapshot in `tests/snapshots/plans__<case>.snap`. Add a case by
//! adding a file (`cargo insta review` accepts its first snapshot).
//!
//! The runner plays the events in order as the engine would: before each event, the timers due
//! by its time fire (earliest first); timers a plan starts, cancels or brings forward are kept
//! as the store keeps them. After the last event, timers due by `until` fire.

use junction_flow::definition::JourneysDef;
use junction_flow::journey::JourneyRules;
use junction_flow::{EventInput, Globals, Plan, Planner, Profile, TimerPlan};
use serde::Deserialize;
use serde_json::{Map, Value, json};
use std::collections::HashMap;
use std::fmt::Write;
use std::path::Path;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    /// What the case shows, for people reading it.
    #[allow(dead_code)]
    why: String,
    /// The workflow file, as text.
    workflow: String,
    #[serde(default)]
    journeys: Option<JourneysDef>,
    /// Each person's profile before the first event, by identity.
    #[serde(default)]
    profiles: HashMap<String, Value>,
    /// Segment messages with an `at` (RFC 3339): their timestamp and the planner's clock.
    events: Vec<Value>,
    /// Fire the timers due by this time after the last event.
    #[serde(default)]
    until: Option<String>,
}

fn millis(text: &str) -> i64 {
    chrono::DateTime::parse_from_rfc3339(text)
        .unwrap_or_else(|e| panic!("`{text}` is not an RFC 3339 time: {e}"))
        .timestamp_millis()
}

fn time(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap()
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

struct Replay {
    planner: Planner,
    profiles: HashMap<String, Profile>,
    globals: Globals,
    /// Pending timers by id, as the store holds them (the fire time may have been moved).
    timers: Vec<TimerPlan>,
    out: String,
}

impl Replay {
    fn apply(&mut self, plan: Plan) {
        for run in &plan.runs {
            let state = match (&run.error, run.paused) {
                (Some(error), _) => format!("stopped: {error}"),
                (None, true) => "paused".into(),
                (None, false) => "done".into(),
            };
            writeln!(
                self.out,
                "  run {} ({} actions): {state}",
                run.run, run.actions
            )
            .unwrap();
        }
        for action in &plan.actions {
            let mut body = serde_json::to_value(&action.action).unwrap();
            let kind = body["kind"].as_str().unwrap_or_default().to_owned();
            body.as_object_mut().unwrap().remove("kind");
            let mut line = format!("  + {} {kind} {body}", action.id);
            if let Some(standby_for) = &action.standby_for {
                write!(line, " (standby for {standby_for})").unwrap();
            }
            if let Some(reason) = &action.capped {
                write!(line, " [capped: {reason}]").unwrap();
            }
            writeln!(self.out, "{line}").unwrap();
        }
        for timer in &plan.timers {
            let what = match &timer.release {
                Some(held) => format!("releases {}", held.id),
                None => format!("resumes at step {}", timer.resume_at),
            };
            writeln!(
                self.out,
                "  timer {} at {}: {what}",
                timer.id,
                time(timer.fire_at_ms)
            )
            .unwrap();
        }
        for id in &plan.cancelled_timers {
            writeln!(self.out, "  timer {id} cancelled").unwrap();
        }
        for (id, at) in &plan.rescheduled_timers {
            writeln!(self.out, "  timer {id} brought forward to {}", time(*at)).unwrap();
        }
        self.timers
            .retain(|t| !plan.cancelled_timers.contains(&t.id));
        for (id, at) in &plan.rescheduled_timers {
            for timer in self.timers.iter_mut().filter(|t| &t.id == id) {
                timer.fire_at_ms = *at;
            }
        }
        self.timers.extend(plan.timers);
    }

    /// Fires the timers due by `now_ms`, earliest first.
    fn fire_due(&mut self, now_ms: i64) {
        loop {
            self.timers
                .sort_by(|a, b| (a.fire_at_ms, &a.id).cmp(&(b.fire_at_ms, &b.id)));
            if self.timers.first().is_none_or(|t| t.fire_at_ms > now_ms) {
                return;
            }
            let timer = self.timers.remove(0);
            writeln!(self.out, "{} timer {}", time(timer.fire_at_ms), timer.id).unwrap();
            let profile = self.profiles.entry(timer.identity.clone()).or_default();
            let plan = self.planner.plan_timer(&timer, profile, &mut self.globals);
            self.apply(plan);
        }
    }

    fn event(&mut self, number: usize, mut body: Value) {
        let at = body
            .as_object_mut()
            .and_then(|b| b.remove("at"))
            .and_then(|at| at.as_str().map(millis))
            .unwrap_or_else(|| panic!("event {number} needs an `at` time"));
        self.fire_due(at);
        body["timestamp"] = json!(time(at));
        if body.get("messageId").is_none() {
            body["messageId"] = json!(format!("m{number}"));
        }
        let kind = body["type"]
            .as_str()
            .expect("an event has a type")
            .to_owned();
        let identity = body["userId"]
            .as_str()
            .or(body["anonymousId"].as_str())
            .expect("an event has a userId or anonymousId")
            .to_owned();
        let message_id = body["messageId"].as_str().unwrap().to_owned();
        let name = body["event"]
            .as_str()
            .map(|n| format!(" {n:?}"))
            .unwrap_or_default();
        writeln!(self.out, "{} {kind}{name} from {identity}", time(at)).unwrap();
        let profile = self.profiles.entry(identity.clone()).or_default();
        let plan = self.planner.plan_event(
            EventInput {
                message_id: &message_id,
                kind: &kind,
                identity: &identity,
                body: &body,
                timestamp_ms: at,
                segment_profile: None,
            },
            profile,
            &mut self.globals,
        );
        self.apply(plan);
    }
}

fn play(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap();
    let case: Case = serde_saphyr::from_str(&text)
        .unwrap_or_else(|e| panic!("{}: not a case: {e}", path.display()));
    let workflow = junction_flow::load(&case.workflow, &Map::new())
        .unwrap_or_else(|e| panic!("{}: the workflow does not load: {e}", path.display()));
    let rules = case
        .journeys
        .as_ref()
        .map(|def| JourneyRules::from_def(def).unwrap())
        .unwrap_or_default();
    let profiles = case
        .profiles
        .into_iter()
        .map(|(identity, profile)| (identity, serde_json::from_value(profile).unwrap()))
        .collect();
    let mut replay = Replay {
        planner: Planner::new(vec![workflow]).unwrap().with_rules(rules),
        profiles,
        globals: Globals::default(),
        timers: Vec::new(),
        out: String::new(),
    };
    for (index, event) in case.events.into_iter().enumerate() {
        replay.event(index + 1, event);
    }
    if let Some(until) = &case.until {
        replay.fire_due(millis(until));
    }
    if !replay.timers.is_empty() {
        writeln!(replay.out, "pending:").unwrap();
        for timer in &replay.timers {
            writeln!(
                replay.out,
                "  timer {} at {}",
                timer.id,
                time(timer.fire_at_ms)
            )
            .unwrap();
        }
    }
    replay.out
}

#[test]
fn every_case_plans_as_its_snapshot_says() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/plans");
    let mut paths: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|e| e == "yaml"))
        .collect();
    paths.sort();
    assert!(
        paths.len() >= 10,
        "cases are missing from {}",
        dir.display()
    );
    for path in paths {
        let name = path.file_stem().unwrap().to_string_lossy().into_owned();
        let mut settings = insta::Settings::clone_current();
        settings.set_input_file(&path);
        settings.set_prepend_module_to_snapshot(false);
        settings.bind(|| insta::assert_snapshot!(format!("plans__{name}"), play(&path)));
    }
}
