//! `wait`: pause the run durably. `for` a time (cancelled by `unless` events), or `until` an
//! awaited event or condition with a `timeout` and `on_timeout` steps. Only at the top level:
//! the run's walk (`Run::top_level`) asks the wait to [`Wait::start`]; the planner resumes it
//! from the timer (`Planner::plan_timer`) or ends it early when the awaited event comes
//! (`Planner::match_waits`).

use super::{At, Compile, Compiler, Kind, Outline, Step, Variables};
use crate::definition::{Located, OneOrMany};
use crate::duration::Span;
use crate::error::PlanError;
use crate::expr::{Condition, ValueTemplate};
use crate::profile::Profile;
use crate::run::{Outcome, Run};
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::Value as Json;

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UnlessDef {
    /// Event names (track) that cancel the wait.
    pub event: OneOrMany<String>,
}

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WaitDef {
    /// A duration (`7d`), or an expression giving one (`{{ vars.delay }}`).
    #[serde(default, rename = "for")]
    pub duration: Option<Json>,
    /// With `for`: events that cancel the wait (the run ends).
    #[serde(default)]
    pub unless: Option<UnlessDef>,
    /// Instead of `for`: hold the person here until one of these events arrives, or this
    /// condition holds on a later event (or already holds: then there is no wait).
    #[serde(default)]
    pub until: Option<UntilDef>,
    /// With `until`: how long to hold at most (a duration or an expression giving one).
    #[serde(default)]
    pub timeout: Option<Json>,
    /// With `until`: the steps run when the timeout passes first (then the run ends).
    #[serde(default)]
    pub on_timeout: Option<Vec<Located<crate::steps::StepDef>>>,
}

/// What ends a `wait: {until: …}`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UntilDef {
    /// Event names (track) that end the wait.
    #[serde(default)]
    pub event: Option<OneOrMany<String>>,
    /// A condition, tested when the wait starts and on each later event of the person
    /// (`traits.plan == "pro"`); it sees that event, the profile and the workflow's `vars`.
    #[serde(default)]
    pub when: Option<Located<String>>,
}

/// How long a wait lasts: known at load, or computed when the run pauses.
#[derive(Debug)]
pub enum WaitFor {
    Fixed(Span),
    Computed(ValueTemplate),
}

impl WaitFor {
    /// How it was written, for people.
    pub fn written(&self) -> String {
        match self {
            WaitFor::Fixed(span) => span.to_string(),
            WaitFor::Computed(template) => template.written(),
        }
    }
}

#[derive(Debug)]
pub enum Wait {
    /// `wait: {for: …, unless: …}`.
    For {
        duration: WaitFor,
        cancel_on: Vec<String>,
    },
    /// `wait: {until: …, timeout: …, on_timeout: …}`.
    Until {
        events: Vec<String>,
        condition: Option<Condition>,
        timeout: WaitFor,
        on_timeout: Vec<Step>,
    },
}

impl Compile<WaitDef> for Wait {
    fn compile(def: &WaitDef, cx: &Compiler<'_>) -> Result<Self, crate::LoadError> {
        if !cx.top_level {
            return Err(cx.error("`wait` may only appear in a workflow's top-level steps"));
        }
        let span = |value: &Json, field: &str| match value {
            Json::String(text) if !text.contains("{{") => Ok(WaitFor::Fixed(
                text.parse()
                    .map_err(|e: crate::duration::SpanError| cx.error(format!("{field}: {e}")))?,
            )),
            other @ Json::String(_) => Ok(WaitFor::Computed(cx.template(other, field)?)),
            other => Err(cx.error(format!(
                "{field}: {other} is not a duration; expected text like 7d"
            ))),
        };
        match (&def.duration, &def.until) {
            (Some(duration), None) => {
                if def.timeout.is_some() || def.on_timeout.is_some() {
                    return Err(cx.error("`timeout` and `on_timeout` belong to `wait: {until: …}`"));
                }
                Ok(Wait::For {
                    duration: span(duration, "for")?,
                    cancel_on: def
                        .unless
                        .as_ref()
                        .map(|u| u.event.to_vec())
                        .unwrap_or_default(),
                })
            }
            (None, Some(until)) => {
                if def.unless.is_some() {
                    return Err(cx.error(
                        "`unless` belongs to `wait: {for: …}`; with `until`, list the events under `until.event`",
                    ));
                }
                let Some(timeout) = &def.timeout else {
                    return Err(
                        cx.error("`until` needs a `timeout` (how long to hold at most, like 3d)")
                    );
                };
                if until.event.is_none() && until.when.is_none() {
                    return Err(cx.error("until: expected `event`, `when` or both"));
                }
                Ok(Wait::Until {
                    events: until
                        .event
                        .as_ref()
                        .map(OneOrMany::to_vec)
                        .unwrap_or_default(),
                    condition: until
                        .when
                        .as_ref()
                        .map(|w| cx.condition(w, "until.when"))
                        .transpose()?,
                    timeout: span(timeout, "timeout")?,
                    on_timeout: cx.steps(def.on_timeout.as_deref().unwrap_or_default())?,
                })
            }
            (Some(_), Some(_)) => Err(cx.error("use `for` or `until`, not both")),
            (None, None) => {
                Err(cx.error("expected `for` (a duration) or `until` (events or a condition)"))
            }
        }
    }
}

impl Wait {
    /// Starts the wait at top-level step `index`: `None` when there is nothing to wait for (an
    /// `until` condition already true), else the run's pause.
    pub(crate) fn start(
        &self,
        run: &mut Run<'_>,
        step: &Step,
        index: usize,
        profile: &mut Profile,
    ) -> Result<Option<Outcome>, PlanError> {
        match self {
            Wait::For {
                duration,
                cancel_on,
            } => {
                let span = run.span(duration, profile, &step.id, "for")?;
                Ok(Some(
                    run.pause(step, index, span, cancel_on, false, profile),
                ))
            }
            Wait::Until {
                condition, timeout, ..
            } => {
                if let Some(condition) = condition
                    && run.test(condition, profile, &step.id, "until.when")?
                {
                    return Ok(None);
                }
                let span = run.span(timeout, profile, &step.id, "timeout")?;
                Ok(Some(run.pause(step, index, span, &[], true, profile)))
            }
        }
    }

    /// Whether this event (its name, or the condition it makes true) ends an `until` wait.
    pub(crate) fn awaits(
        &self,
        name: Option<&str>,
        kind: &str,
        holds: impl FnOnce(&Condition) -> bool,
    ) -> bool {
        let Wait::Until {
            events, condition, ..
        } = self
        else {
            return false;
        };
        let awaited = kind == "track" && name.is_some_and(|n| events.iter().any(|e| e == n));
        awaited || condition.as_ref().is_some_and(holds)
    }

    /// The steps run when an `until` wait times out (none for a `for` wait).
    pub(crate) fn on_timeout(&self) -> &[Step] {
        match self {
            Wait::Until { on_timeout, .. } => on_timeout,
            Wait::For { .. } => &[],
        }
    }
}

impl Kind for Wait {
    fn plan(&self, _: &mut Run<'_>, at: &At<'_>, _: &mut Profile) -> Result<(), PlanError> {
        // Compilation keeps waits at the top level, where the walk starts them itself.
        Err(PlanError::step(
            at.path,
            "`wait` is only allowed at the top level",
        ))
    }

    fn outline(&self) -> Outline {
        match self {
            Wait::For {
                duration,
                cancel_on,
            } => {
                let duration = duration.written();
                Outline::leaf(if cancel_on.is_empty() {
                    format!("wait {duration}")
                } else {
                    format!("wait {duration} unless {}", cancel_on.join(", "))
                })
            }
            Wait::Until {
                events,
                condition,
                timeout,
                on_timeout,
            } => {
                let mut what: Vec<String> = events.clone();
                if let Some(condition) = condition {
                    what.push(condition.source().trim().to_owned());
                }
                Outline {
                    label: format!(
                        "wait until {} (at most {})",
                        what.join(" or "),
                        timeout.written()
                    ),
                    branches: if on_timeout.is_empty() {
                        Vec::new()
                    } else {
                        vec![(
                            "timeout".to_owned(),
                            on_timeout.iter().map(Step::outline).collect(),
                        )]
                    },
                }
            }
        }
    }

    fn variables(&self, names: &mut Variables<'_>) {
        match self {
            Wait::For { duration, .. } => {
                if let WaitFor::Computed(template) = duration {
                    names.template(template);
                }
            }
            Wait::Until {
                condition,
                timeout,
                on_timeout,
                ..
            } => {
                if let WaitFor::Computed(template) = timeout {
                    names.template(template);
                }
                if let Some(condition) = condition {
                    names.condition(condition);
                }
                names.steps(on_timeout);
            }
        }
    }
}
