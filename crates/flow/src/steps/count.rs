//! `count`: the person's events in this window and the one before (`profile.counts.NAME`).

use super::{At, Compile, Compiler, Kind, Outline, Variables};
use crate::duration::Span;
use crate::error::PlanError;
use crate::profile::Profile;
use crate::run::Run;
use schemars::JsonSchema;
use serde::Deserialize;

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CountDef {
    pub name: String,
    pub window: Span,
}

#[derive(Debug)]
pub struct Count {
    name: String,
    window: Span,
}

impl Compile<CountDef> for Count {
    fn compile(def: &CountDef, _: &Compiler<'_>) -> Result<Self, crate::LoadError> {
        Ok(Count {
            name: def.name.clone(),
            window: def.window,
        })
    }
}

impl Kind for Count {
    fn plan(&self, run: &mut Run<'_>, _: &At<'_>, profile: &mut Profile) -> Result<(), PlanError> {
        profile
            .counts
            .entry(self.name.clone())
            .or_default()
            .record(run.now_ms, self.window);
        run.changed();
        Ok(())
    }

    fn outline(&self) -> Outline {
        Outline::leaf(format!("count {} over {}", self.name, self.window))
    }

    fn variables(&self, _: &mut Variables<'_>) {}
}
