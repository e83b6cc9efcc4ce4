//! `milestone`: a milestone reached, once (`profile.milestones`); `vars.milestone_new` says
//! whether this event reached it first.

use super::{At, Compile, Compiler, Kind, Outline, Variables};
use crate::error::PlanError;
use crate::expr::ValueTemplate;
use crate::profile::Profile;
use crate::run::Run;
use serde_json::Value as Json;

#[derive(Debug)]
pub struct Milestone(ValueTemplate);

impl Compile<Json> for Milestone {
    fn compile(def: &Json, cx: &Compiler<'_>) -> Result<Self, crate::LoadError> {
        Ok(Milestone(cx.template(def, "milestone")?))
    }
}

impl Kind for Milestone {
    fn plan(&self, run: &mut Run<'_>, at: &At<'_>, profile: &mut Profile) -> Result<(), PlanError> {
        let name = run.required(&self.0, profile, at.path, "milestone")?;
        let new = profile.reach_milestone(name);
        run.set_var("milestone_new", Json::Bool(new));
        Ok(())
    }

    fn outline(&self) -> Outline {
        Outline::leaf(format!("milestone {}", self.0.written()))
    }

    fn variables(&self, names: &mut Variables<'_>) {
        names.template(&self.0);
    }
}
