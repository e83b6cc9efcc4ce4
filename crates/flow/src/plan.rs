//! Planning: one event (or one due timer) and the user's profile in, a [`Plan`] out — the
//! actions to deliver, the timers to start or cancel — and the profile brought up to date.
//! Pure and deterministic: the clock is the event's own timestamp (or the timer's due time),
//! so the same event and profile always give the same plan.

use crate::action::{Action, OnError, PlannedAction, TimerPlan, Who};
use crate::compile::Workflow;
use crate::error::PlanError;
use crate::expr::from_json;
use crate::journey::{JourneyRules, LONGEST_CAP, Reentry};
use crate::profile::{Profile, RECENT_EVENTS, RecentEvent};
use crate::run::{Outcome, Run, cap_reached, count_message};
use crate::steps::StepKind;
pub use crate::steps::{
    MAX_EVENT_METADATA_KEYS, company_fields, company_id_from_name, event_metadata,
};
use minijinja::Value;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value as Json};
use std::collections::BTreeMap;

/// An event as the planner needs it.
#[derive(Debug, Clone, Copy)]
pub struct EventInput<'a> {
    pub message_id: &'a str,
    /// `identify`, `track`, …
    pub kind: &'a str,
    /// userId, else anonymousId: whose queue and profile.
    pub identity: &'a str,
    /// The message as stored.
    pub body: &'a Json,
    /// The event's `timestamp`, Unix ms: the planner's clock.
    pub timestamp_ms: i64,
    /// The user's profile from Segment's Profile API (`{traits, events}`), when fetched;
    /// otherwise expressions see Junction's own history as `segment_profile`.
    pub segment_profile: Option<&'a Json>,
}

/// State shared by all users: round-robin positions and what group calls said of each
/// company (merged traits), so a workflow can see a company attribute change.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Globals {
    #[serde(default)]
    pub round_robin: BTreeMap<String, u64>,
    #[serde(default)]
    pub companies: BTreeMap<String, Map<String, Json>>,
}

/// What one event (or timer) asks for.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Plan {
    pub actions: Vec<PlannedAction>,
    pub timers: Vec<TimerPlan>,
    pub cancelled_timers: Vec<String>,
    /// Timers brought forward to a time (Unix ms): a `wait: {until: …}` whose event came.
    pub rescheduled_timers: Vec<(String, i64)>,
    pub runs: Vec<RunSummary>,
    /// A deletion request: every id the user is stored under, whose stored payloads are to be
    /// redacted.
    pub erase: Option<Vec<String>>,
}

/// The name deletion runs and actions are recorded under (no workflow plans them).
pub const DELETION_WORKFLOW: &str = "junction.delete";

/// One workflow's run for the event, for the execution log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunSummary {
    pub run: String,
    pub workflow: String,
    pub actions: usize,
    /// The run paused at a `wait`.
    pub paused: bool,
    /// Why planning stopped early (an expression failed), with the step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Debug, thiserror::Error)]
#[error("two workflows are named `{0}`; names must be unique")]
pub struct DuplicateWorkflow(pub String);

/// The loaded workflows.
#[derive(Debug, Default)]
pub struct Planner {
    workflows: Vec<Workflow>,
    rules: JourneyRules,
}

impl Planner {
    pub fn new(workflows: Vec<Workflow>) -> Result<Planner, DuplicateWorkflow> {
        let mut names = std::collections::HashSet::new();
        for workflow in &workflows {
            if !names.insert(workflow.name.clone()) {
                return Err(DuplicateWorkflow(workflow.name.clone()));
            }
        }
        Ok(Planner {
            workflows,
            rules: JourneyRules::default(),
        })
    }

    /// The workspace's journey rules (caps, quiet hours, default time zone).
    pub fn with_rules(mut self, rules: JourneyRules) -> Self {
        self.rules = rules;
        self
    }

    pub fn workflows(&self) -> &[Workflow] {
        &self.workflows
    }

    pub fn rules(&self) -> &JourneyRules {
        &self.rules
    }

    /// Plans one event, updating the user's profile.
    pub fn plan_event(
        &self,
        event: EventInput<'_>,
        profile: &mut Profile,
        globals: &mut Globals,
    ) -> Plan {
        let mut plan = Plan::default();
        if event.kind == "delete" {
            plan_deletion(event, profile, &mut plan);
            return plan;
        }
        let name = event_name(event.kind, event.body);
        absorb(profile, event, name.as_deref(), &mut plan);
        // What Junction itself sent to Segment, come back through Segment: it describes what
        // Junction already acted on, so it triggers nothing (no loops).
        if produced_by_junction(event.body) {
            return plan;
        }
        if event.kind == "intercom"
            && let Some(topic) = &name
        {
            let seen = profile
                .intercom_seen
                .entry(topic.clone())
                .or_insert(i64::MIN);
            if event.timestamp_ms < *seen {
                // Older than a notification of the same topic already planned: superseded.
                return plan;
            }
            *seen = event.timestamp_ms;
        }
        self.match_waits(event, name.as_deref(), profile, globals, &mut plan);
        let mut matching: Vec<&Workflow> = self
            .workflows
            .iter()
            .filter(|w| w.on.iter().any(|on| on == event.kind))
            .filter(|w| match (event.kind, &w.events, &name) {
                ("intercom", _, Some(topic)) => w.topics.iter().any(|t| t == topic),
                ("intercom", _, None) => false,
                (_, None, _) => true,
                (_, Some(events), Some(name)) => events.iter().any(|e| e == name),
                (_, Some(_), None) => false,
            })
            .collect();
        // A backfilled event runs only the workflows its backfill names (all when it names
        // none).
        if let Some(only) = crate::action::backfill_of(event.body)
            .and_then(|b| b.get("workflows"))
            .and_then(Json::as_array)
        {
            matching.retain(|w| only.iter().any(|name| name.as_str() == Some(&w.name)));
        }
        if matching.is_empty() {
            return plan;
        }
        let event_value = from_json(event.body);
        let company = company_change(event, globals);
        for workflow in matching {
            let mut run = Run::new(
                workflow,
                event,
                event_value.clone(),
                workflow.vars.clone(),
                globals,
                &mut plan,
                &self.rules,
            );
            run.company = company.clone();
            if let Some(when) = &workflow.when {
                match when.test(&run.context(profile)) {
                    Ok(true) => {}
                    Ok(false) => continue,
                    Err(error) => {
                        run.finish_with(Outcome::Failed(PlanError::When(error.to_string())));
                        continue;
                    }
                }
            }
            // Entries are kept for workflows with a re-entry rule only: the rest (most) cost
            // nothing per event.
            if workflow.reentry != Reentry::Always {
                let entered = profile.entered.get(&workflow.name).copied();
                if !workflow.reentry.allows(entered, event.timestamp_ms) {
                    continue;
                }
                profile
                    .entered
                    .insert(workflow.name.clone(), event.timestamp_ms);
            }
            let outcome = run.top_level(profile, 0);
            run.finish_with(outcome);
        }
        plan
    }

    /// Plans the event for one workflow only (replaying a dead letter): `None` when no loaded
    /// workflow has that name. Applies whether or not the trigger matches now.
    pub fn plan_run(
        &self,
        event: EventInput<'_>,
        workflow: &str,
        profile: &mut Profile,
        globals: &mut Globals,
    ) -> Option<Plan> {
        let workflow = self.workflows.iter().find(|w| w.name == workflow)?;
        let mut plan = Plan::default();
        let company = company_change(event, globals);
        let mut run = Run::new(
            workflow,
            event,
            from_json(event.body),
            workflow.vars.clone(),
            globals,
            &mut plan,
            &self.rules,
        );
        run.company = company;
        if let Some(when) = &workflow.when {
            match when.test(&run.context(profile)) {
                Ok(true) => {}
                Ok(false) => {
                    run.finish(None, false);
                    return Some(plan);
                }
                Err(error) => {
                    run.finish_with(Outcome::Failed(PlanError::When(error.to_string())));
                    return Some(plan);
                }
            }
        }
        let outcome = run.top_level(profile, 0);
        run.finish_with(outcome);
        Some(plan)
    }

    /// Resumes the run a due timer paused, or releases the message it held through quiet
    /// hours. A timer that was cancelled meanwhile (it is no longer on the profile) plans
    /// nothing. A `wait: {until: …}` whose event came goes on from that event's time; one that
    /// timed out runs its `on_timeout` steps and ends.
    pub fn plan_timer(
        &self,
        timer: &TimerPlan,
        profile: &mut Profile,
        globals: &mut Globals,
    ) -> Plan {
        let mut plan = Plan::default();
        let Some(position) = profile.timers.iter().position(|t| t.id == timer.id) else {
            return plan;
        };
        let pending = profile.timers.remove(position);
        let Some(workflow) = self.workflows.iter().find(|w| w.name == timer.workflow) else {
            plan.runs.push(RunSummary {
                run: format!("{}/{}", timer.message_id, timer.workflow),
                workflow: timer.workflow.clone(),
                actions: 0,
                paused: false,
                error: Some("the workflow is no longer loaded".into()),
            });
            return plan;
        };
        if let Some(held) = &timer.release {
            self.release_held(held, workflow, timer.fire_at_ms, profile, &mut plan);
            return plan;
        }
        let now_ms = pending.matched_at.unwrap_or(timer.fire_at_ms);
        let kind = timer.event["type"].as_str().unwrap_or("track");
        let event = EventInput {
            message_id: &timer.message_id,
            kind,
            identity: &timer.identity,
            body: &timer.event,
            timestamp_ms: now_ms,
            segment_profile: None,
        };
        let mut run = Run::new(
            workflow,
            event,
            from_json(&timer.event),
            timer.vars.clone(),
            globals,
            &mut plan,
            &self.rules,
        );
        let timed_out = pending.until.is_some() && pending.matched_at.is_none();
        let outcome = if timed_out {
            // The timeout came first: the wait's `on_timeout` steps, then the run ends. (A
            // workflow changed under the wait has none to run.)
            let wait = timer
                .resume_at
                .checked_sub(1)
                .and_then(|i| workflow.steps.get(i));
            match wait {
                Some(
                    step @ crate::steps::Step {
                        kind: StepKind::Wait(wait),
                        ..
                    },
                ) => {
                    let prefix = format!("{}.on_timeout", step.id);
                    match run.steps(wait.on_timeout(), &prefix, None, profile) {
                        Ok(()) => Outcome::Done,
                        Err(error) => Outcome::Failed(error),
                    }
                }
                _ => Outcome::Done,
            }
        } else {
            run.top_level(profile, timer.resume_at)
        };
        run.finish_with(outcome);
        plan
    }

    /// A message held through quiet hours goes out now, unless a cap was reached meanwhile
    /// (counted on the day it is sent).
    fn release_held(
        &self,
        held: &PlannedAction,
        workflow: &Workflow,
        now_ms: i64,
        profile: &mut Profile,
        plan: &mut Plan,
    ) {
        let mut action = held.clone();
        action.capped = cap_reached(&self.rules, workflow, now_ms, profile);
        if action.capped.is_none() {
            count_message(profile, &workflow.name, now_ms);
        }
        plan.runs.push(RunSummary {
            run: action.run.clone(),
            workflow: workflow.name.clone(),
            actions: 1,
            paused: false,
            error: None,
        });
        plan.actions.push(action);
    }

    /// Ends the `wait: {until: …}` holds this event satisfies: its event name is awaited, or
    /// the condition holds now (seeing this event, the profile and the workflow's `vars`). The
    /// wait's timer is brought forward to the event's time; the run goes on when it fires.
    fn match_waits(
        &self,
        event: EventInput<'_>,
        name: Option<&str>,
        profile: &mut Profile,
        globals: &mut Globals,
        plan: &mut Plan,
    ) {
        let waiting: Vec<(usize, String, usize)> = profile
            .timers
            .iter()
            .enumerate()
            .filter(|(_, timer)| timer.matched_at.is_none())
            .filter_map(|(index, timer)| {
                let (workflow, step) = timer.until.clone()?;
                Some((index, workflow, step))
            })
            .collect();
        for (index, workflow, step) in waiting {
            let Some(workflow) = self.workflows.iter().find(|w| w.name == workflow) else {
                continue;
            };
            let Some(StepKind::Wait(wait)) = workflow.steps.get(step).map(|s| &s.kind) else {
                continue;
            };
            let matched = wait.awaits(name, event.kind, |condition| {
                let mut scratch = Plan::default();
                let mut run = Run::new(
                    workflow,
                    event,
                    from_json(event.body),
                    workflow.vars.clone(),
                    globals,
                    &mut scratch,
                    &self.rules,
                );
                let context = run.context(profile);
                // A condition that fails to evaluate is not met; the timeout still ends the wait.
                condition.test(&context).unwrap_or(false)
            });
            if matched {
                let timer = &mut profile.timers[index];
                timer.matched_at = Some(event.timestamp_ms);
                plan.rescheduled_timers
                    .push((timer.id.clone(), event.timestamp_ms));
            }
        }
    }
}

/// For a group call: the company's traits before and after it (merged into `globals`).
fn company_change(event: EventInput<'_>, globals: &mut Globals) -> Option<(Value, Value)> {
    if event.kind != "group" {
        return None;
    }
    let group_id = event.body["groupId"].as_str()?;
    let known = globals.companies.entry(group_id.to_owned()).or_default();
    let before = from_json(&Json::Object(known.clone()));
    if let Some(traits) = event.body["traits"].as_object() {
        for (key, value) in traits {
            known.insert(key.clone(), value.clone());
        }
    }
    Some((before, from_json(&Json::Object(known.clone()))))
}

/// Whether a message carries the mark Junction puts on what it sends to Segment.
pub fn produced_by_junction(body: &Json) -> bool {
    body["context"]["junction"].is_object()
}

/// `event` for track, `name` for page and screen, the topic for Intercom notifications.
pub(crate) fn event_name(kind: &str, body: &Json) -> Option<String> {
    let field = match kind {
        "track" => "event",
        "page" | "screen" => "name",
        "intercom" => "topic",
        _ => return None,
    };
    body[field].as_str().map(str::to_owned)
}

/// Folds the event into the profile: ids, traits, recent activity; cancels waits it ends.
fn absorb(profile: &mut Profile, event: EventInput<'_>, name: Option<&str>, plan: &mut Plan) {
    let body = event.body;
    if let Some(user_id) = body["userId"].as_str() {
        profile.user_id = Some(user_id.to_owned());
    }
    if let Some(anonymous_id) = body["anonymousId"].as_str() {
        profile
            .anonymous_id
            .get_or_insert_with(|| anonymous_id.to_owned());
    }
    if event.kind == "identify"
        && let Some(traits) = body["traits"].as_object()
    {
        for (key, value) in traits {
            profile.traits.insert(key.clone(), value.clone());
        }
    }
    let email = body["traits"]["email"]
        .as_str()
        .or_else(|| body["context"]["traits"]["email"].as_str())
        .filter(|_| event.kind == "identify" || event.kind == "track" || event.kind == "alias")
        .filter(|e| !e.is_empty());
    if let Some(email) = email.or_else(|| profile.traits.get("email").and_then(Json::as_str)) {
        profile.email = Some(email.to_owned());
    }
    if let Some(zone) = body["context"]["timezone"]
        .as_str()
        .filter(|z| !z.is_empty())
    {
        profile.timezone = Some(zone.to_owned());
    }
    profile
        .messages
        .retain(|m| m.at > event.timestamp_ms - LONGEST_CAP.millis());
    profile.recent.push_back(RecentEvent {
        kind: event.kind.to_owned(),
        name: name.map(str::to_owned),
        at: event.timestamp_ms,
    });
    while profile.recent.len() > RECENT_EVENTS {
        profile.recent.pop_front();
    }
    if event.kind == "track"
        && let Some(name) = name
    {
        profile.timers.retain(|timer| {
            let cancelled = timer.cancel_on.iter().any(|c| c == name);
            if cancelled {
                plan.cancelled_timers.push(timer.id.clone());
            }
            !cancelled
        });
    }
}

/// A deletion request, whatever the workflows: the user's Intercom contact is deleted (or
/// archived, as configured), their profile forgotten, and their stored payloads redacted.
/// Workflows triggered by `segment.delete` do not run: nothing of the user is to be acted on.
fn plan_deletion(event: EventInput<'_>, profile: &mut Profile, plan: &mut Plan) {
    let user_id = event.body["userId"].as_str().map(str::to_owned);
    let anonymous_id = profile
        .anonymous_id
        .clone()
        .or_else(|| event.body["anonymousId"].as_str().map(str::to_owned));
    let run = format!("{}/{DELETION_WORKFLOW}", event.message_id);
    plan.actions.push(PlannedAction {
        id: format!("{run}/delete"),
        run: run.clone(),
        workflow: DELETION_WORKFLOW.into(),
        step: "delete".into(),
        identity: event.identity.to_owned(),
        who: Who {
            user_id: user_id.clone(),
            anonymous_id: anonymous_id.clone(),
            // Only to look the contact up in the identity map: a deletion never searches.
            email: profile.email.clone(),
            dead_letter_unmatched: false,
        },
        action: Action::DeleteContact,
        on_error: OnError::Stop,
        standby_for: None,
        capped: None,
        bulk: false,
    });
    plan.runs.push(RunSummary {
        run,
        workflow: DELETION_WORKFLOW.into(),
        actions: 1,
        paused: false,
        error: None,
    });
    let mut ids: Vec<String> = [Some(event.identity.to_owned()), user_id, anonymous_id]
        .into_iter()
        .flatten()
        .collect();
    ids.sort();
    ids.dedup();
    plan.erase = Some(ids);
    *profile = Profile::default();
}
