//! Junction's workflows, pure: no I/O, no clock, no runtime.
//!
//! - [`definition`]: the YAML format (and its JSON Schema);
//! - [`compile`]: a file → a [`Workflow`] with every expression compiled, errors located;
//! - [`steps`]: the step kinds, one module each (format, compilation, outline, planning), and
//!   the registry that names them;
//! - [`expr`]: the expression and template dialect (minijinja);
//! - [`profile`]: the per-user state kept between events;
//! - [`plan`]: an event (or a due timer) + profile → a [`Plan`] of actions and timers (a run's
//!   walk through its steps is `run`'s; why it can stop, [`error`]);
//! - [`journey`]: caps, quiet hours, time zones and re-entry;
//! - [`action`]: the planned actions and timers delivery receives;
//! - [`templates`]: the ready-made workflows embedded in the binary.

pub mod action;
pub mod compile;
pub mod definition;
pub mod duration;
pub mod error;
pub mod expr;
pub mod journey;
pub mod plan;
pub mod profile;
mod run;
pub mod steps;
pub mod stored;
pub mod templates;

pub use action::{Action, OnError, PlannedAction, TimerPlan, Who};
pub use compile::{LoadError, Workflow, load};
pub use error::PlanError;
pub use plan::{EventInput, Globals, Plan, Planner, RunSummary, event_metadata};
pub use profile::Profile;

/// The JSON Schema of workflow files (`junction schema`).
pub fn schema() -> serde_json::Value {
    serde_json::to_value(schemars::schema_for!(definition::WorkflowFile)).expect("a schema is JSON")
}
