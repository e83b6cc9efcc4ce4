//! `intercom.tag` and `intercom.untag`: a tag on or off the contact.

use super::{At, Compile, Compiler, Kind, Outline, Variables};
use crate::action::Action;
use crate::error::PlanError;
use crate::expr::ValueTemplate;
use crate::profile::Profile;
use crate::run::Run;
use serde_json::Value as Json;

#[derive(Debug)]
pub struct Tag(ValueTemplate);

#[derive(Debug)]
pub struct Untag(ValueTemplate);

impl Compile<Json> for Tag {
    fn compile(def: &Json, cx: &Compiler<'_>) -> Result<Self, crate::LoadError> {
        Ok(Tag(cx.template(def, "tag")?))
    }
}

impl Compile<Json> for Untag {
    fn compile(def: &Json, cx: &Compiler<'_>) -> Result<Self, crate::LoadError> {
        Ok(Untag(cx.template(def, "tag")?))
    }
}

impl Kind for Tag {
    fn plan(&self, run: &mut Run<'_>, at: &At<'_>, profile: &mut Profile) -> Result<(), PlanError> {
        let name = run.required(&self.0, profile, at.path, "tag")?;
        run.push(at, Action::Tag { name }, profile)
    }

    fn outline(&self) -> Outline {
        Outline::leaf(format!("intercom.tag {}", self.0.written()))
    }

    fn variables(&self, names: &mut Variables<'_>) {
        names.template(&self.0);
    }
}

impl Kind for Untag {
    fn plan(&self, run: &mut Run<'_>, at: &At<'_>, profile: &mut Profile) -> Result<(), PlanError> {
        let name = run.required(&self.0, profile, at.path, "tag")?;
        run.push(at, Action::Untag { name }, profile)
    }

    fn outline(&self) -> Outline {
        Outline::leaf(format!("intercom.untag {}", self.0.written()))
    }

    fn variables(&self, names: &mut Variables<'_>) {
        names.template(&self.0);
    }
}
