//! `intercom.note`: a note on the contact.

use super::{At, Compile, Compiler, Kind, Outline, Variables};
use crate::action::Action;
use crate::error::PlanError;
use crate::expr::ValueTemplate;
use crate::profile::Profile;
use crate::run::Run;
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::Value as Json;

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NoteDef {
    /// The authoring admin's id.
    pub admin: Json,
    pub body: Json,
}

#[derive(Debug)]
pub struct Note {
    admin: ValueTemplate,
    body: ValueTemplate,
}

impl Compile<NoteDef> for Note {
    fn compile(def: &NoteDef, cx: &Compiler<'_>) -> Result<Self, crate::LoadError> {
        Ok(Note {
            admin: cx.template(&def.admin, "admin")?,
            body: cx.template(&def.body, "body")?,
        })
    }
}

impl Kind for Note {
    fn plan(&self, run: &mut Run<'_>, at: &At<'_>, profile: &mut Profile) -> Result<(), PlanError> {
        let action = Action::Note {
            admin: run.required(&self.admin, profile, at.path, "admin")?,
            body: run.required(&self.body, profile, at.path, "body")?,
        };
        run.push(at, action, profile)
    }

    fn outline(&self) -> Outline {
        Outline::leaf("intercom.note")
    }

    fn variables(&self, names: &mut Variables<'_>) {
        names.template(&self.admin);
        names.template(&self.body);
    }
}
