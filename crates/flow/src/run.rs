//! One workflow's run over one event (or a resumed one over a due timer): the walk through its
//! steps, the expression context they see, and how a step's action joins the plan — with its
//! id, its person, its error branch, and the journey guards (quiet hours, caps) for messages.
//! Each step kind's own planning is in its module under `steps/`.

use crate::action::{Action, HELD_SUFFIX, OnError, PlannedAction, TimerPlan, Who};
use crate::compile::Workflow;
use crate::duration::Span;
use crate::error::PlanError;
use crate::expr::{EvalError, ValueTemplate, from_json};
use crate::journey::{Cap, JourneyRules};
use crate::plan::{EventInput, Globals, Plan, RunSummary};
use crate::profile::{PendingTimer, Profile, SentMessage};
use crate::steps::{At, ErrorBranch, Step, StepKind};
use minijinja::Value;
use serde_json::{Map, Value as Json, json};
use std::collections::BTreeMap;

pub(crate) enum Outcome {
    Done,
    Paused,
    Failed(PlanError),
}

/// One workflow's run over one event.
pub(crate) struct Run<'a> {
    pub workflow: &'a Workflow,
    pub event: EventInput<'a>,
    event_value: Value,
    /// Run variables (`vars.NAME`): the workflow's, then what `set` and `intercom.assign` add.
    vars: Map<String, Json>,
    /// The planner's clock: the event's time (a resumed run's: when it resumes).
    pub now_ms: i64,
    who: Option<Who>,
    /// The expression context, rebuilt after a step changes what it shows.
    context: Option<Value>,
    /// For group calls: the company's traits before and after this event.
    pub company: Option<(Value, Value)>,
    pub globals: &'a mut Globals,
    plan: &'a mut Plan,
    first_action: usize,
    rules: &'a JourneyRules,
    /// Messages this run holds through quiet hours.
    held: usize,
}

impl<'a> Run<'a> {
    pub fn new(
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

    pub fn run_id(&self) -> String {
        format!("{}/{}", self.event.message_id, self.workflow.name)
    }

    pub fn finish(&mut self, error: Option<String>, paused: bool) {
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

    pub fn finish_with(&mut self, outcome: Outcome) {
        match outcome {
            Outcome::Done => self.finish(None, false),
            Outcome::Paused => self.finish(None, true),
            Outcome::Failed(error) => self.finish(Some(error.to_string()), false),
        }
    }

    /// Sets a run variable for the steps that follow.
    pub fn set_var(&mut self, name: &str, value: Json) {
        self.vars.insert(name.to_owned(), value);
        self.changed();
    }

    /// Something expressions see changed (a profile field, a variable): rebuild the context.
    pub fn changed(&mut self) {
        self.context = None;
    }

    /// The expression context: only what the workflow's expressions read.
    pub fn context(&mut self, profile: &Profile) -> Value {
        if let Some(context) = &self.context {
            return context.clone();
        }
        // Building the profile view, say, costs more than a whole profile-sync plan.
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

    /// The person the run's actions are about.
    pub fn who(&mut self, profile: &Profile) -> Who {
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

    /// Walks the top-level steps from `from`; a `wait` ends the walk (paused) unless there is
    /// nothing to wait for.
    pub fn top_level(&mut self, profile: &mut Profile, from: usize) -> Outcome {
        let steps = &self.workflow.steps;
        for (index, step) in steps.iter().enumerate().skip(from) {
            if let StepKind::Wait(wait) = &step.kind {
                match wait.start(self, step, index, profile) {
                    Ok(None) => continue,
                    Ok(Some(outcome)) => return outcome,
                    Err(error) => return Outcome::Failed(error),
                }
            }
            let at = At {
                step,
                path: &step.id,
                standby_for: None,
            };
            if let Err(error) = step.kind.behaviour().plan(self, &at, profile) {
                return Outcome::Failed(error);
            }
        }
        Outcome::Done
    }

    /// Plans nested steps under `prefix` (`2.then`, `0.on_error`, …).
    pub fn steps(
        &mut self,
        steps: &[Step],
        prefix: &str,
        standby_for: Option<&str>,
        profile: &mut Profile,
    ) -> Result<(), PlanError> {
        for step in steps {
            let path = format!("{prefix}.{}", step.id);
            let at = At {
                step,
                path: &path,
                standby_for,
            };
            step.kind.behaviour().plan(self, &at, profile)?;
        }
        Ok(())
    }

    pub fn render(
        &mut self,
        template: &ValueTemplate,
        profile: &Profile,
        path: &str,
        field: &str,
    ) -> Result<Json, PlanError> {
        let context = self.context(profile);
        template
            .render(&context)
            .map_err(|e: EvalError| PlanError::Expression {
                path: path.to_owned(),
                field: field.to_owned(),
                message: e.to_string(),
            })
    }

    /// A condition's verdict.
    pub fn test(
        &mut self,
        condition: &crate::expr::Condition,
        profile: &Profile,
        path: &str,
        field: &str,
    ) -> Result<bool, PlanError> {
        let context = self.context(profile);
        condition.test(&context).map_err(|e| PlanError::Expression {
            path: path.to_owned(),
            field: field.to_owned(),
            message: e.to_string(),
        })
    }

    /// A template rendered as text (null is empty; other values as JSON).
    pub fn text(
        &mut self,
        template: &ValueTemplate,
        profile: &Profile,
        path: &str,
        field: &str,
    ) -> Result<String, PlanError> {
        Ok(match self.render(template, profile, path, field)? {
            Json::String(s) => s,
            Json::Null => String::new(),
            other => other.to_string(),
        })
    }

    /// Text that must not be empty.
    pub fn required(
        &mut self,
        template: &ValueTemplate,
        profile: &Profile,
        path: &str,
        field: &str,
    ) -> Result<String, PlanError> {
        let text = self.text(template, profile, path, field)?;
        if text.trim().is_empty() {
            return Err(PlanError::Empty {
                path: path.to_owned(),
                field: field.to_owned(),
            });
        }
        Ok(text)
    }

    /// Text, or `None` when absent or empty.
    pub fn optional(
        &mut self,
        template: &Option<ValueTemplate>,
        profile: &Profile,
        path: &str,
        field: &str,
    ) -> Result<Option<String>, PlanError> {
        match template {
            None => Ok(None),
            Some(t) => {
                Ok(Some(self.text(t, profile, path, field)?).filter(|s| !s.trim().is_empty()))
            }
        }
    }

    /// An object (null is empty).
    pub fn object(
        &mut self,
        template: &ValueTemplate,
        profile: &Profile,
        path: &str,
        field: &str,
    ) -> Result<Map<String, Json>, PlanError> {
        match self.render(template, profile, path, field)? {
            Json::Object(map) => Ok(map),
            Json::Null => Ok(Map::new()),
            other => Err(PlanError::Shape {
                path: path.to_owned(),
                field: field.to_owned(),
                expected: "an object",
                got: other.to_string(),
            }),
        }
    }

    /// How long a wait lasts.
    pub fn span(
        &mut self,
        wait: &crate::steps::WaitFor,
        profile: &Profile,
        path: &str,
        field: &str,
    ) -> Result<Span, PlanError> {
        match wait {
            crate::steps::WaitFor::Fixed(span) => Ok(*span),
            crate::steps::WaitFor::Computed(template) => self
                .text(template, profile, path, field)?
                .parse::<Span>()
                .map_err(|error| PlanError::invalid(path, field, error.to_string())),
        }
    }

    /// Pauses the run at top-level step `index` for `span`: a durable timer resumes it at the
    /// next step (or, for a `wait: {until: …}` that times out, at its `on_timeout` steps).
    pub fn pause(
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

    /// Plans the step's action, and its error branch.
    pub fn push(
        &mut self,
        at: &At<'_>,
        action: Action,
        profile: &mut Profile,
    ) -> Result<(), PlanError> {
        let id = self.push_part(at, at.path, action, profile);
        self.error_branch(at, &id, profile)
    }

    /// Plans a step's `on_error` steps as standbys for its action `id`.
    pub fn error_branch(
        &mut self,
        at: &At<'_>,
        id: &str,
        profile: &mut Profile,
    ) -> Result<(), PlanError> {
        if let ErrorBranch::Steps(fallback) = &at.step.on_error {
            self.steps(
                fallback,
                &format!("{}.on_error", at.path),
                Some(id),
                profile,
            )?;
        }
        Ok(())
    }

    /// Plans one of a step's actions (a step may make several: a contact and its companies)
    /// at `path`; its id. A message first passes the journey guards: held through the
    /// contact's quiet hours, or marked capped.
    pub fn push_part(
        &mut self,
        at: &At<'_>,
        path: &str,
        action: Action,
        profile: &mut Profile,
    ) -> String {
        let id = format!("{}/{path}", self.run_id());
        let on_error = match &at.step.on_error {
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
            standby_for: at.standby_for.map(str::to_owned),
            capped: None,
            bulk: crate::action::backfill_of(self.event.body).is_some(),
        };
        // Caps and quiet hours guard what reaches the person, except transactional messages
        // and error branches (which stand in for an action already planned).
        let considerate = planned.action.reaches_the_person()
            && at.standby_for.is_none()
            && !at.step.transactional
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
}

/// Which cap, if any, one more message of `workflow` to this person would go over at `now_ms`:
/// the workspace's (all workflows' messages) or the workflow's own.
pub(crate) fn cap_reached(
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
pub(crate) fn count_message(profile: &mut Profile, workflow: &str, now_ms: i64) {
    profile.messages.push(SentMessage {
        at: now_ms,
        workflow: workflow.to_owned(),
    });
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
