//! Planning: one event (or one due timer) and the user's profile in, a [`Plan`] out — the
//! actions to deliver, the timers to start or cancel — and the profile brought up to date.
//! Pure and deterministic: the clock is the event's own timestamp (or the timer's due time),
//! so the same event and profile always give the same plan.

use crate::action::{Action, HELD_SUFFIX, MessageChannel, OnError, PlannedAction, TimerPlan, Who};
use crate::compile::{ErrorBranch, ScoreRule, Step, StepKind, WaitFor, Workflow};
use crate::duration::Span;
use crate::expr::{EvalError, ValueTemplate, from_json};
use crate::journey::{Cap, JourneyRules, LONGEST_CAP};
use crate::profile::{PendingTimer, Profile, RECENT_EVENTS, RecentEvent, ScoreState, SentMessage};
use minijinja::Value;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value as Json, json};
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
        let matching: Vec<&Workflow> = self
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
                        run.finish(Some(format!("when: {error}")), false);
                        continue;
                    }
                }
            }
            let entered = profile.entered.get(&workflow.name).copied();
            if !workflow.reentry.allows(entered, event.timestamp_ms) {
                continue;
            }
            profile
                .entered
                .insert(workflow.name.clone(), event.timestamp_ms);
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
                    run.finish(Some(format!("when: {error}")), false);
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
            match timer
                .resume_at
                .checked_sub(1)
                .and_then(|i| workflow.steps.get(i))
            {
                Some(
                    step @ Step {
                        kind: StepKind::WaitUntil { on_timeout, .. },
                        ..
                    },
                ) => {
                    let prefix = format!("{}.on_timeout", step.id);
                    match run.steps(on_timeout, &prefix, None, profile) {
                        Ok(()) => Outcome::Done,
                        Err(error) => Outcome::Failed(error),
                    }
                }
                // The workflow changed under the wait: nothing is known to run on its timeout.
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
            let Some(StepKind::WaitUntil {
                events, condition, ..
            }) = workflow.steps.get(step).map(|s| &s.kind)
            else {
                continue;
            };
            let awaited =
                event.kind == "track" && name.is_some_and(|n| events.iter().any(|e| e == n));
            let mut holds = || {
                let Some(condition) = condition else {
                    return false;
                };
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
            };
            if awaited || holds() {
                let timer = &mut profile.timers[index];
                timer.matched_at = Some(event.timestamp_ms);
                plan.rescheduled_timers
                    .push((timer.id.clone(), event.timestamp_ms));
            }
        }
    }
}

/// Which cap, if any, one more message of `workflow` to this person would go over at `now_ms`:
/// the workspace's (all workflows' messages) or the workflow's own.
fn cap_reached(
    rules: &JourneyRules,
    workflow: &Workflow,
    now_ms: i64,
    profile: &Profile,
) -> Option<String> {
    let zone = rules.zone_of(profile);
    let over = |cap: Cap, only: Option<&str>| {
        let sent = profile
            .messages
            .iter()
            .filter(|m| only.is_none_or(|w| m.workflow == w))
            .map(|m| m.at);
        cap.counted(sent, now_ms, zone) >= cap.limit as usize
    };
    if let Some(cap) = rules.cap
        && over(cap, None)
    {
        return Some(format!("workspace cap {cap} reached"));
    }
    if let Some(cap) = workflow.cap
        && over(cap, Some(&workflow.name))
    {
        return Some(format!("workflow cap {cap} reached"));
    }
    None
}

/// Counts a message against the person's caps.
fn count_message(profile: &mut Profile, workflow: &str, now_ms: i64) {
    profile.messages.push(SentMessage {
        at: now_ms,
        workflow: workflow.to_owned(),
    });
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
fn event_name(kind: &str, body: &Json) -> Option<String> {
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

enum Outcome {
    Done,
    Paused,
    Failed(String),
}

/// One workflow's run over one event.
struct Run<'a> {
    workflow: &'a Workflow,
    event: EventInput<'a>,
    event_value: Value,
    vars: Map<String, Json>,
    now_ms: i64,
    who: Option<Who>,
    /// The expression context, rebuilt after a step changes what it shows.
    context: Option<Value>,
    /// For group calls: the company's traits before and after this event.
    company: Option<(Value, Value)>,
    globals: &'a mut Globals,
    plan: &'a mut Plan,
    first_action: usize,
    rules: &'a JourneyRules,
    /// Messages this run holds through quiet hours.
    held: usize,
}

impl<'a> Run<'a> {
    fn new(
        workflow: &'a Workflow,
        event: EventInput<'a>,
        event_value: Value,
        vars: Map<String, Json>,
        globals: &'a mut Globals,
        plan: &'a mut Plan,
        rules: &'a JourneyRules,
    ) -> Self {
        let first_action = plan.actions.len();
        Run {
            workflow,
            event,
            event_value,
            vars,
            // The event's own time is the planner's clock (a resumed run's: when it resumes).
            now_ms: event.timestamp_ms,
            who: None,
            context: None,
            company: None,
            globals,
            plan,
            first_action,
            rules,
            held: 0,
        }
    }

    fn run_id(&self) -> String {
        format!("{}/{}", self.event.message_id, self.workflow.name)
    }

    fn finish(&mut self, error: Option<String>, paused: bool) {
        let summary = RunSummary {
            run: self.run_id(),
            workflow: self.workflow.name.clone(),
            actions: self.plan.actions.len() - self.first_action,
            // A message held through quiet hours leaves the run waiting too.
            paused: paused || self.held > 0,
            error,
        };
        self.plan.runs.push(summary);
    }

    fn finish_with(&mut self, outcome: Outcome) {
        match outcome {
            Outcome::Done => self.finish(None, false),
            Outcome::Paused => self.finish(None, true),
            Outcome::Failed(error) => self.finish(Some(error), false),
        }
    }

    fn context(&mut self, profile: &Profile) -> Value {
        if let Some(context) = &self.context {
            return context.clone();
        }
        // Only what the workflow's expressions read: building the profile view, say, costs
        // more than a whole profile-sync plan.
        let uses = &self.workflow.uses;
        let wanted = |name: &str| uses.contains(name);
        let mut context: BTreeMap<&str, Value> = BTreeMap::new();
        if wanted("event") {
            context.insert("event", self.event_value.clone());
        }
        if wanted("traits") {
            context.insert("traits", from_json(&Json::Object(profile.traits.clone())));
        }
        if wanted("profile") {
            context.insert("profile", from_json(&profile.view(self.now_ms)));
        }
        if wanted("vars") {
            context.insert("vars", from_json(&Json::Object(self.vars.clone())));
        }
        if wanted("now") {
            context.insert("now", Value::from(self.now_ms / 1000));
        }
        if wanted("segment_profile") {
            let profile_value = match self.event.segment_profile {
                Some(fetched) => from_json(fetched),
                None => {
                    let view = profile.view(self.now_ms);
                    let mut events: Vec<Json> =
                        view["recent"].as_array().cloned().unwrap_or_default();
                    events.reverse();
                    from_json(&json!({"traits": profile.traits, "events": events}))
                }
            };
            context.insert("segment_profile", profile_value);
        }
        if wanted("item") {
            // An Intercom notification's subject (the contact, the conversation).
            let item = self
                .event_value
                .get_attr("data")
                .and_then(|d| d.get_attr("item"));
            context.insert("item", item.unwrap_or_default());
        }
        if let Some((before, after)) = &self.company {
            context.insert("previous_company", before.clone());
            context.insert("company", after.clone());
        }
        let context = Value::from(context);
        self.context = Some(context.clone());
        context
    }

    fn who(&mut self, profile: &Profile) -> Who {
        self.who
            .get_or_insert_with(|| Who {
                user_id: self.event.body["userId"]
                    .as_str()
                    .map(str::to_owned)
                    .or_else(|| profile.user_id.clone()),
                anonymous_id: self.event.body["anonymousId"]
                    .as_str()
                    .map(str::to_owned)
                    .or_else(|| profile.anonymous_id.clone()),
                email: profile
                    .email
                    .clone()
                    .or_else(|| event_email(self.event.body, self.event.kind)),
                dead_letter_unmatched: self.workflow.dead_letter_unmatched,
            })
            .clone()
    }

    fn top_level(&mut self, profile: &mut Profile, from: usize) -> Outcome {
        let steps = &self.workflow.steps;
        for (index, step) in steps.iter().enumerate().skip(from) {
            match &step.kind {
                StepKind::Wait {
                    duration,
                    cancel_on,
                } => {
                    return match self.span(duration, profile, &step.id, "for") {
                        Ok(span) => self.pause(step, index, span, cancel_on, false, profile),
                        Err(error) => Outcome::Failed(error),
                    };
                }
                StepKind::WaitUntil {
                    condition, timeout, ..
                } => {
                    if let Some(condition) = condition {
                        let context = self.context(profile);
                        match condition.test(&context) {
                            // Already so: nothing to wait for.
                            Ok(true) => continue,
                            Ok(false) => {}
                            Err(error) => {
                                return Outcome::Failed(format!(
                                    "step {} until.when: {error}",
                                    step.id
                                ));
                            }
                        }
                    }
                    return match self.span(timeout, profile, &step.id, "timeout") {
                        Ok(span) => self.pause(step, index, span, &[], true, profile),
                        Err(error) => Outcome::Failed(error),
                    };
                }
                _ => {}
            }
            if let Err(error) = self.step(step, &step.id, None, profile) {
                return Outcome::Failed(error);
            }
        }
        Outcome::Done
    }

    /// How long a wait lasts.
    fn span(
        &mut self,
        wait: &WaitFor,
        profile: &Profile,
        path: &str,
        field: &str,
    ) -> Result<Span, String> {
        match wait {
            WaitFor::Fixed(span) => Ok(*span),
            WaitFor::Computed(template) => self
                .text(template, profile, path, field)?
                .parse::<Span>()
                .map_err(|error| format!("step {path} {field}: {error}")),
        }
    }

    /// Pauses the run at top-level step `index` for `span`: a durable timer resumes it at the
    /// next step (or, for a `wait: {until: …}` that times out, at its `on_timeout` steps).
    fn pause(
        &mut self,
        step: &Step,
        index: usize,
        span: Span,
        cancel_on: &[String],
        until: bool,
        profile: &mut Profile,
    ) -> Outcome {
        let id = format!("{}/{}", self.run_id(), step.id);
        profile.timers.push(PendingTimer {
            id: id.clone(),
            cancel_on: cancel_on.to_vec(),
            until: until.then(|| (self.workflow.name.clone(), index)),
            matched_at: None,
        });
        self.plan.timers.push(TimerPlan {
            id,
            identity: self.event.identity.to_owned(),
            workflow: self.workflow.name.clone(),
            resume_at: index + 1,
            fire_at_ms: self.now_ms + span.millis(),
            cancel_on: cancel_on.to_vec(),
            event: self.event.body.clone(),
            message_id: self.event.message_id.to_owned(),
            vars: self.vars.clone(),
            release: None,
        });
        Outcome::Paused
    }

    fn steps(
        &mut self,
        steps: &[Step],
        prefix: &str,
        standby_for: Option<&str>,
        profile: &mut Profile,
    ) -> Result<(), String> {
        for step in steps {
            let path = format!("{prefix}.{}", step.id);
            self.step(step, &path, standby_for, profile)?;
        }
        Ok(())
    }

    fn render(
        &mut self,
        template: &ValueTemplate,
        profile: &Profile,
        path: &str,
        field: &str,
    ) -> Result<Json, String> {
        let context = self.context(profile);
        template
            .render(&context)
            .map_err(|e: EvalError| format!("step {path} {field}: {e}"))
    }

    fn text(
        &mut self,
        template: &ValueTemplate,
        profile: &Profile,
        path: &str,
        field: &str,
    ) -> Result<String, String> {
        Ok(match self.render(template, profile, path, field)? {
            Json::String(s) => s,
            Json::Null => String::new(),
            other => other.to_string(),
        })
    }

    fn required(
        &mut self,
        template: &ValueTemplate,
        profile: &Profile,
        path: &str,
        field: &str,
    ) -> Result<String, String> {
        let text = self.text(template, profile, path, field)?;
        if text.trim().is_empty() {
            return Err(format!("step {path} {field}: rendered empty"));
        }
        Ok(text)
    }

    fn optional(
        &mut self,
        template: &Option<ValueTemplate>,
        profile: &Profile,
        path: &str,
        field: &str,
    ) -> Result<Option<String>, String> {
        match template {
            None => Ok(None),
            Some(t) => {
                Ok(Some(self.text(t, profile, path, field)?).filter(|s| !s.trim().is_empty()))
            }
        }
    }

    fn object(
        &mut self,
        template: &ValueTemplate,
        profile: &Profile,
        path: &str,
        field: &str,
    ) -> Result<Map<String, Json>, String> {
        match self.render(template, profile, path, field)? {
            Json::Object(map) => Ok(map),
            Json::Null => Ok(Map::new()),
            other => Err(format!(
                "step {path} {field}: expected an object, got {other}"
            )),
        }
    }

    fn push(
        &mut self,
        step: &Step,
        path: &str,
        standby_for: Option<&str>,
        action: Action,
        profile: &mut Profile,
    ) -> Result<(), String> {
        let id = self.push_part(step, path, standby_for, action, profile);
        self.plan_error_branch(step, path, &id, profile)
    }

    /// Plans a step's `on_error` steps as standbys for its action `id`.
    fn plan_error_branch(
        &mut self,
        step: &Step,
        path: &str,
        id: &str,
        profile: &mut Profile,
    ) -> Result<(), String> {
        if let ErrorBranch::Steps(fallback) = &step.on_error {
            self.steps(fallback, &format!("{path}.on_error"), Some(id), profile)?;
        }
        Ok(())
    }

    /// Plans one of a step's actions (a step may make several: a contact and its companies)
    /// at `path`; its id.
    fn push_part(
        &mut self,
        step: &Step,
        path: &str,
        standby_for: Option<&str>,
        action: Action,
        profile: &mut Profile,
    ) -> String {
        let id = format!("{}/{path}", self.run_id());
        let on_error = match &step.on_error {
            ErrorBranch::Stop => OnError::Stop,
            ErrorBranch::Continue => OnError::Continue,
            ErrorBranch::Steps(_) => OnError::Fallback,
        };
        let who = self.who(profile);
        let mut planned = PlannedAction {
            id: id.clone(),
            run: self.run_id(),
            workflow: self.workflow.name.clone(),
            step: path.to_owned(),
            identity: self.event.identity.to_owned(),
            who,
            action,
            on_error,
            standby_for: standby_for.map(str::to_owned),
            capped: None,
        };
        // Caps and quiet hours guard what reaches the person, except transactional messages
        // and error branches (which stand in for an action already planned).
        let considerate = planned.action.reaches_the_person()
            && standby_for.is_none()
            && !step.transactional
            && !self.workflow.transactional;
        if considerate {
            let quiet = self.workflow.quiet_hours.or(self.rules.quiet_hours);
            let zone = self.rules.zone_of(profile);
            if let Some(release_at) = quiet.and_then(|q| q.release_at(self.now_ms, zone)) {
                self.hold(planned, release_at, profile);
                return id;
            }
            planned.capped = cap_reached(self.rules, self.workflow, self.now_ms, profile);
            if planned.capped.is_none() {
                count_message(profile, &self.workflow.name, self.now_ms);
            }
        }
        self.plan.actions.push(planned);
        id
    }

    /// Holds a message through quiet hours: a durable timer releases it at `release_at`.
    fn hold(&mut self, planned: PlannedAction, release_at: i64, profile: &mut Profile) {
        let id = format!("{}{HELD_SUFFIX}", planned.id);
        profile.timers.push(PendingTimer {
            id: id.clone(),
            cancel_on: Vec::new(),
            until: None,
            matched_at: None,
        });
        self.plan.timers.push(TimerPlan {
            id,
            identity: self.event.identity.to_owned(),
            workflow: self.workflow.name.clone(),
            resume_at: 0,
            fire_at_ms: release_at,
            cancel_on: Vec::new(),
            // Everything the release needs is in the planned message.
            event: Json::Null,
            message_id: self.event.message_id.to_owned(),
            vars: Map::new(),
            release: Some(Box::new(planned)),
        });
        self.held += 1;
    }

    fn step(
        &mut self,
        step: &Step,
        path: &str,
        standby_for: Option<&str>,
        profile: &mut Profile,
    ) -> Result<(), String> {
        match &step.kind {
            StepKind::Contact { traits, fields } => {
                let mut traits = self.object(traits, profile, path, "traits")?;
                let companies = take_companies(&mut traits);
                let mut rendered = Map::new();
                for (name, value) in fields {
                    let value = self.render(value, profile, path, name)?;
                    if !value.is_null() {
                        rendered.insert(name.clone(), value);
                    }
                }
                // The contact first, then its companies: attaching needs the contact.
                let contact = Action::Contact {
                    traits,
                    fields: rendered,
                };
                if companies.is_empty() {
                    return self.push(step, path, standby_for, contact, profile);
                }
                let id = self.push_part(step, path, standby_for, contact, profile);
                for (n, company) in companies.into_iter().enumerate() {
                    let path = format!("{path}.company{n}");
                    self.push_part(step, &path, standby_for, company, profile);
                }
                self.plan_error_branch(step, path, &id, profile)
            }
            StepKind::Company {
                company_id,
                traits,
                attach,
            } => {
                let company_id = self.required(company_id, profile, path, "company_id")?;
                let traits = self.object(traits, profile, path, "traits")?;
                let fields = company_fields(&traits);
                // As Segment's destination: a group from an anonymous visitor upserts the
                // company but attaches nobody (attaching would create a lead for them), unless
                // it names an email: then the contact with that email is attached (or, as the
                // workflow's `unmatched` says, a lead with it).
                let known_user = self.event.body["userId"]
                    .as_str()
                    .is_some_and(|id| !id.is_empty())
                    || profile.user_id.is_some()
                    || self.who(profile).email.is_some();
                self.push(
                    step,
                    path,
                    standby_for,
                    Action::Company {
                        company_id,
                        fields,
                        attach: *attach && known_user,
                    },
                    profile,
                )
            }
            StepKind::Tag(name) => {
                let name = self.required(name, profile, path, "tag")?;
                self.push(step, path, standby_for, Action::Tag { name }, profile)
            }
            StepKind::Untag(name) => {
                let name = self.required(name, profile, path, "tag")?;
                self.push(step, path, standby_for, Action::Untag { name }, profile)
            }
            StepKind::Event {
                name,
                created_at,
                metadata,
            } => {
                let name = self.required(name, profile, path, "name")?;
                let created_at = match created_at {
                    Some(template) => match self.render(template, profile, path, "created_at")? {
                        Json::Number(n) => n.as_i64().unwrap_or(self.now_ms / 1000),
                        _ => {
                            return Err(format!(
                                "step {path} created_at: expected Unix seconds (use `| unix`)"
                            ));
                        }
                    },
                    None => self.event.timestamp_ms / 1000,
                };
                let metadata = event_metadata(self.object(metadata, profile, path, "metadata")?);
                self.push(
                    step,
                    path,
                    standby_for,
                    Action::Event {
                        name,
                        created_at,
                        metadata,
                    },
                    profile,
                )
            }
            StepKind::Message {
                from,
                email,
                subject,
                body,
                open_conversation,
            } => {
                let action = Action::Message {
                    from: self.required(from, profile, path, "from")?,
                    channel: if *email {
                        MessageChannel::Email
                    } else {
                        MessageChannel::Inapp
                    },
                    subject: self.optional(subject, profile, path, "subject")?,
                    body: self.required(body, profile, path, "body")?,
                    open_conversation: *open_conversation,
                };
                self.push(step, path, standby_for, action, profile)
            }
            StepKind::Conversation {
                body,
                assign_admin,
                assign_team,
                admin,
                note,
            } => {
                let action = Action::Conversation {
                    body: self.required(body, profile, path, "body")?,
                    assign_admin: self.optional(assign_admin, profile, path, "assign_to.admin")?,
                    assign_team: self.optional(assign_team, profile, path, "assign_to.team")?,
                    admin: self.optional(admin, profile, path, "admin")?,
                    note: self.optional(note, profile, path, "note")?,
                };
                self.push(step, path, standby_for, action, profile)
            }
            StepKind::Note { admin, body } => {
                let action = Action::Note {
                    admin: self.required(admin, profile, path, "admin")?,
                    body: self.required(body, profile, path, "body")?,
                };
                self.push(step, path, standby_for, action, profile)
            }
            StepKind::Assign {
                admin,
                round_robin,
                set_owner,
            } => {
                let chosen = match admin {
                    Some(admin) => self.required(admin, profile, path, "admin")?,
                    None => {
                        let admins: Vec<String> = match round_robin {
                            Some(list) => match self.render(list, profile, path, "round_robin")? {
                                Json::Array(items) => items
                                    .iter()
                                    .map(|i| {
                                        i.as_str().map_or_else(|| i.to_string(), str::to_owned)
                                    })
                                    .collect(),
                                other => {
                                    return Err(format!(
                                        "step {path} round_robin: expected a list of admin ids, got {other}"
                                    ));
                                }
                            },
                            None => Vec::new(),
                        };
                        if admins.is_empty() {
                            return Err(format!(
                                "step {path} round_robin: no admins to choose from"
                            ));
                        }
                        let key = format!("{}/{path}", self.workflow.name);
                        let turn = self.globals.round_robin.entry(key).or_insert(0);
                        let chosen = admins[(*turn % admins.len() as u64) as usize].clone();
                        *turn += 1;
                        chosen
                    }
                };
                self.vars
                    .insert("assignee".into(), Json::String(chosen.clone()));
                self.context = None;
                if *set_owner {
                    self.push(
                        step,
                        path,
                        standby_for,
                        Action::Owner { admin: chosen },
                        profile,
                    )?;
                }
                Ok(())
            }
            StepKind::Http {
                method,
                url,
                headers,
                body,
            } => {
                let url = self.required(url, profile, path, "url")?;
                let mut rendered = BTreeMap::new();
                for (name, value) in headers {
                    rendered.insert(name.clone(), self.text(value, profile, path, name)?);
                }
                let body = match body {
                    Some(body) => Some(self.render(body, profile, path, "body")?),
                    None => None,
                };
                self.push(
                    step,
                    path,
                    standby_for,
                    Action::Http {
                        method: method.clone(),
                        url,
                        headers: rendered,
                        body,
                    },
                    profile,
                )
            }
            StepKind::Segment { call, fields } => {
                // Null or empty values are left out, at the top and inside traits and properties:
                // Segment would store a null trait as a value.
                let blank =
                    |v: &Json| v.is_null() || v.as_str().is_some_and(|s| s.trim().is_empty());
                let mut message = Map::new();
                for (name, value) in fields {
                    match self.render(value, profile, path, name)? {
                        Json::Object(mut members) => {
                            members.retain(|_, v| !blank(v));
                            message.insert(name.clone(), Json::Object(members));
                        }
                        value if blank(&value) => {}
                        value => {
                            message.insert(name.clone(), value);
                        }
                    }
                }
                if !message.contains_key("userId") && !message.contains_key("anonymousId") {
                    return Err(format!(
                        "step {path}: both userId and anonymousId rendered empty"
                    ));
                }
                for required in ["event", "groupId"] {
                    if fields.iter().any(|(n, _)| n == required) && !message.contains_key(required)
                    {
                        return Err(format!("step {path} {required}: rendered empty"));
                    }
                }
                let action = Action::Segment {
                    call: (*call).to_owned(),
                    message,
                };
                self.push(step, path, standby_for, action, profile)
            }
            StepKind::If {
                condition,
                then,
                otherwise,
            } => {
                let context = self.context(profile);
                let holds = condition
                    .test(&context)
                    .map_err(|e| format!("step {path} if: {e}"))?;
                if holds {
                    self.steps(then, &format!("{path}.then"), standby_for, profile)
                } else {
                    self.steps(otherwise, &format!("{path}.else"), standby_for, profile)
                }
            }
            StepKind::Set(values) | StepKind::Remember(values) => {
                let remember = matches!(step.kind, StepKind::Remember(_));
                for (name, value) in values {
                    let value = self.render(value, profile, path, name)?;
                    // `set` lasts for the run, `remember` on the user's profile.
                    let target = if remember {
                        &mut profile.memory
                    } else {
                        &mut self.vars
                    };
                    target.insert(name.clone(), value);
                    self.context = None;
                }
                Ok(())
            }
            StepKind::Milestone(name) => {
                let name = self.required(name, profile, path, "milestone")?;
                let new = !profile.milestones.contains(&name);
                if new {
                    profile.milestones.push(name);
                }
                self.vars.insert("milestone_new".into(), Json::Bool(new));
                self.context = None;
                Ok(())
            }
            StepKind::Score {
                name,
                rules,
                window,
                half_life,
                threshold,
                hysteresis,
                crossed,
            } => {
                let points = self.points(rules, profile, path)?;
                let now = self.now_ms;
                let score = profile.scores.entry(name.clone()).or_insert(ScoreState {
                    value: 0.0,
                    armed: true,
                    at_ms: now,
                    points: Vec::new(),
                });
                if let Some(window) = window {
                    if points != 0.0 {
                        score.points.push((now, points));
                    }
                    score.points.retain(|(at, _)| *at > now - window.millis());
                    score.value = score.points.iter().map(|(_, p)| p).sum();
                } else if let Some(half_life) = half_life {
                    let elapsed = (now - score.at_ms).max(0) as f64;
                    score.value =
                        score.value * 0.5_f64.powf(elapsed / half_life.millis() as f64) + points;
                } else {
                    score.value += points;
                }
                score.at_ms = now.max(score.at_ms);
                let fire = score.armed && score.value >= *threshold;
                if fire {
                    score.armed = false;
                } else if !score.armed && score.value < threshold - hysteresis {
                    score.armed = true;
                }
                self.context = None;
                if fire {
                    self.steps(crossed, &format!("{path}.crossed"), standby_for, profile)?;
                }
                Ok(())
            }
            StepKind::Count { name, window } => {
                let now = self.now_ms;
                let count = profile.counts.entry(name.clone()).or_default();
                count.window_ms = window.millis();
                count.times.push(now);
                count.times.retain(|t| *t > now - 2 * window.millis());
                self.context = None;
                Ok(())
            }
            StepKind::Wait { .. } | StepKind::WaitUntil { .. } => Err(format!(
                "step {path}: `wait` is only allowed at the top level"
            )),
        }
    }

    /// The points the first matching rule gives this event.
    fn points(
        &mut self,
        rules: &[ScoreRule],
        profile: &Profile,
        path: &str,
    ) -> Result<f64, String> {
        let name = event_name(self.event.kind, self.event.body);
        for rule in rules {
            if let Some(kinds) = &rule.kinds
                && !kinds.iter().any(|k| k == self.event.kind)
            {
                continue;
            }
            if let Some(events) = &rule.events
                && !name.as_ref().is_some_and(|n| events.iter().any(|e| e == n))
            {
                continue;
            }
            if let Some(when) = &rule.when {
                let context = self.context(profile);
                if !when
                    .test(&context)
                    .map_err(|e| format!("step {path} rules.when: {e}"))?
                {
                    continue;
                }
            }
            return Ok(rule.points);
        }
        Ok(0.0)
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

/// Takes an identify's `company` (an object or a name) and `companies` (a list of either) out
/// of its traits, as Segment's Intercom destination reads them: each becomes a company upsert
/// with the contact attached, or, with `remove: true`, a detach. A company's `company_id` is its
/// `id` (or `company_id`); one given only by name gets the id Segment's classic destination
/// derived from the name ([`company_id_from_name`]), so the same company is found again.
fn take_companies(traits: &mut Map<String, Json>) -> Vec<Action> {
    let mut given = Vec::new();
    match traits.remove("company") {
        Some(Json::Array(list)) => given.extend(list),
        Some(one) => given.push(one),
        None => {}
    }
    if let Some(Json::Array(list)) = traits.remove("companies") {
        given.extend(list);
    }
    given
        .into_iter()
        .filter_map(|company| {
            let mut object = match company {
                Json::String(name) if !name.trim().is_empty() => {
                    let mut object = Map::new();
                    object.insert("name".into(), Json::String(name));
                    object
                }
                Json::Object(object) => object,
                _ => return None,
            };
            let remove = object
                .remove("remove")
                .is_some_and(|r| r == Json::Bool(true));
            let company_id = ["id", "company_id"]
                .iter()
                .find_map(|key| match object.get(*key) {
                    Some(Json::String(id)) if !id.trim().is_empty() => Some(id.clone()),
                    Some(Json::Number(id)) => Some(id.to_string()),
                    _ => None,
                })
                .or_else(|| {
                    object
                        .get("name")
                        .and_then(Json::as_str)
                        .filter(|name| !name.trim().is_empty())
                        .map(company_id_from_name)
                })?;
            Some(if remove {
                Action::Detach { company_id }
            } else {
                Action::Company {
                    fields: company_fields(&object),
                    company_id,
                    attach: true,
                }
            })
        })
        .collect()
}

/// The `company_id` of a company known only by its name: the `string-hash` of the name (a
/// djb2 variant over UTF-16 code units, last to first), as a decimal number — what Segment's
/// classic Intercom destination used, so that companies it created are the same companies.
pub fn company_id_from_name(name: &str) -> String {
    let units: Vec<u16> = name.encode_utf16().collect();
    let mut hash: i32 = 5381;
    for unit in units.iter().rev() {
        hash = hash.wrapping_mul(33) ^ i32::from(*unit);
    }
    (hash as u32).to_string()
}

/// The email an event names for its person, where Segment's destination looks: a track's
/// `properties.email`, a group's `traits.email`, any call's `context.traits.email`.
fn event_email(body: &Json, kind: &str) -> Option<String> {
    let own = match kind {
        "track" => &body["properties"]["email"],
        "group" | "identify" => &body["traits"]["email"],
        _ => &Json::Null,
    };
    own.as_str()
        .or_else(|| body["context"]["traits"]["email"].as_str())
        .map(str::trim)
        .filter(|email| !email.is_empty())
        .map(str::to_owned)
}

/// Intercom data event metadata from Segment properties, the way Segment's own destination
/// does it and then within Intercom's rules (scalars only, except rich links `{url, value}` and
/// money `{amount, currency}`; at most 10 keys):
///
/// - `revenue` (+ `currency`, default USD) becomes `price` in integer cents; `email` is left out
///   (it identifies the contact instead); nulls are dropped;
/// - nested objects are flattened to dotted keys (`plan: {tier: "pro"}` → `plan.tier`), as
///   Segment's classic destination did;
/// - arrays are sent as JSON text (Intercom refuses them; an array of objects has no useful
///   dotted form);
/// - which keys win when there are more than 10: `price` first, then the rest by name (dotted
///   keys sort with their parent's name). Keys past the tenth are dropped, as Intercom would
///   drop them silently.
pub fn event_metadata(mut properties: Map<String, Json>) -> Map<String, Json> {
    properties.remove("email");
    let currency = properties.remove("currency");
    let revenue = properties.remove("revenue");
    let mut flat = std::collections::BTreeMap::new();
    flatten_metadata(String::new(), properties, &mut flat);
    let mut metadata = Map::new();
    if let Some(revenue) = revenue.as_ref().and_then(Json::as_f64) {
        let currency = currency.as_ref().and_then(Json::as_str).unwrap_or("USD");
        metadata.insert(
            "price".into(),
            json!({"amount": (revenue * 100.0).round() as i64, "currency": currency}),
        );
    }
    for (key, value) in flat {
        if metadata.len() >= MAX_EVENT_METADATA_KEYS {
            break;
        }
        metadata.entry(key).or_insert(value);
    }
    metadata
}

/// Adds `object`'s values to `flat` under `prefix`-dotted keys: scalars as they are, rich links
/// and money whole, other objects one level down, arrays as JSON text; nulls left out.
fn flatten_metadata(
    prefix: String,
    object: Map<String, Json>,
    flat: &mut std::collections::BTreeMap<String, Json>,
) {
    for (key, value) in object {
        let key = if prefix.is_empty() {
            key
        } else {
            format!("{prefix}.{key}")
        };
        match value {
            Json::Null => {}
            Json::Object(object) if is_rich_link_or_money(&object) => {
                flat.insert(key, Json::Object(object));
            }
            Json::Object(object) => flatten_metadata(key, object, flat),
            Json::Array(_) => {
                flat.insert(key, Json::String(value.to_string()));
            }
            scalar => {
                flat.insert(key, scalar);
            }
        }
    }
}

/// The two object shapes Intercom accepts as metadata values.
fn is_rich_link_or_money(object: &Map<String, Json>) -> bool {
    object.len() == 2
        && ((object.contains_key("url") && object.contains_key("value"))
            || (object.get("amount").is_some_and(Json::is_i64)
                && object.get("currency").is_some_and(Json::is_string)))
}

/// Intercom keeps at most ten metadata keys per data event (and silently drops the rest).
pub const MAX_EVENT_METADATA_KEYS: usize = 10;

/// Intercom company fields from Segment group traits, as Segment's destination maps them
/// (`employees` → `size`, `createdAt` → `remote_created_at` in Unix seconds), other traits as
/// custom attributes (nested ones as JSON text).
pub fn company_fields(traits: &Map<String, Json>) -> Map<String, Json> {
    let mut fields = Map::new();
    let mut custom = Map::new();
    for (key, value) in traits {
        if value.is_null() {
            continue;
        }
        match key.as_str() {
            "name" | "plan" | "industry" | "website" => {
                if let Some(text) = value.as_str() {
                    fields.insert(key.clone(), text.into());
                } else {
                    fields.insert(key.clone(), value.to_string().into());
                }
            }
            "employees" | "size" => {
                if let Some(n) = value
                    .as_f64()
                    .or_else(|| value.as_str().and_then(|s| s.parse().ok()))
                {
                    fields.insert("size".into(), json!(n as i64));
                }
            }
            "monthly_spend" | "monthlySpend" => {
                // A number keeps its type (1200 stays 1200, not 1200.0); text is read as one.
                let number = match value {
                    Json::Number(_) => Some(value.clone()),
                    Json::String(text) => serde_json::from_str::<serde_json::Number>(text.trim())
                        .ok()
                        .map(Json::Number),
                    _ => None,
                };
                if let Some(number) = number {
                    fields.insert("monthly_spend".into(), number);
                }
            }
            "createdAt" | "created_at" => {
                let seconds = value
                    .as_str()
                    .and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok())
                    .map(|t| t.timestamp())
                    .or_else(|| value.as_i64());
                if let Some(seconds) = seconds {
                    fields.insert("remote_created_at".into(), json!(seconds));
                }
            }
            "id" | "email" | "company_id" => {}
            _ => {
                let value = match value {
                    Json::Object(_) | Json::Array(_) => Json::String(value.to_string()),
                    scalar => scalar.clone(),
                };
                custom.insert(key.clone(), value);
            }
        }
    }
    if !custom.is_empty() {
        fields.insert("custom_attributes".into(), Json::Object(custom));
    }
    fields
}
