//! `set` and `remember`: values for the rest of the run (`vars.NAME`), or kept on the person's
//! profile for later events (`profile.memory.NAME`).

use super::{At, Compile, Compiler, Kind, Outline, Variables};
use crate::error::PlanError;
use crate::expr::ValueTemplate;
use crate::profile::Profile;
use crate::run::Run;
use serde_json::Value as Json;
use std::collections::BTreeMap;

#[derive(Debug)]
pub struct Set(Vec<(String, ValueTemplate)>);

#[derive(Debug)]
pub struct Remember(Vec<(String, ValueTemplate)>);

impl Compile<BTreeMap<String, Json>> for Set {
    fn compile(def: &BTreeMap<String, Json>, cx: &Compiler<'_>) -> Result<Self, crate::LoadError> {
        Ok(Set(cx.pairs(def, "set")?))
    }
}

impl Compile<BTreeMap<String, Json>> for Remember {
    fn compile(def: &BTreeMap<String, Json>, cx: &Compiler<'_>) -> Result<Self, crate::LoadError> {
        Ok(Remember(cx.pairs(def, "remember")?))
    }
}

fn names(pairs: &[(String, ValueTemplate)]) -> String {
    pairs
        .iter()
        .map(|(name, _)| name.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

impl Kind for Set {
    fn plan(&self, run: &mut Run<'_>, at: &At<'_>, profile: &mut Profile) -> Result<(), PlanError> {
        for (name, value) in &self.0 {
            let value = run.render(value, profile, at.path, name)?;
            run.set_var(name, value);
        }
        Ok(())
    }

    fn outline(&self) -> Outline {
        Outline::leaf(format!("set {}", names(&self.0)))
    }

    fn variables(&self, names: &mut Variables<'_>) {
        names.pairs(&self.0);
    }
}

impl Kind for Remember {
    fn plan(&self, run: &mut Run<'_>, at: &At<'_>, profile: &mut Profile) -> Result<(), PlanError> {
        for (name, value) in &self.0 {
            let value = run.render(value, profile, at.path, name)?;
            profile.memory.insert(name.clone(), value);
            run.changed();
        }
        Ok(())
    }

    fn outline(&self) -> Outline {
        Outline::leaf(format!("remember {}", names(&self.0)))
    }

    fn variables(&self, names: &mut Variables<'_>) {
        names.pairs(&self.0);
    }
}
