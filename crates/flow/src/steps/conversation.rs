//! `intercom.conversation`: a conversation started for the contact, optionally assigned and
//! noted. Junction starting a conversation reaches the person: the journey guards apply.

use super::{At, Compile, Compiler, Kind, Outline, Variables};
use crate::action::Action;
use crate::error::PlanError;
use crate::expr::ValueTemplate;
use crate::profile::Profile;
use crate::run::Run;
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::Value as Json;

#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AssigneeDef {
    #[serde(default)]
    pub admin: Option<Json>,
    #[serde(default)]
    pub team: Option<Json>,
}

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ConversationDef {
    /// The opening message, as the contact.
    pub body: Json,
    #[serde(default)]
    pub assign_to: Option<AssigneeDef>,
    /// The admin who assigns and writes the note (default: the assignee admin).
    #[serde(default)]
    pub admin: Option<Json>,
    /// An internal note added to the conversation.
    #[serde(default)]
    pub note: Option<Json>,
}

#[derive(Debug)]
pub struct Conversation {
    body: ValueTemplate,
    assign_admin: Option<ValueTemplate>,
    assign_team: Option<ValueTemplate>,
    admin: Option<ValueTemplate>,
    note: Option<ValueTemplate>,
}

impl Compile<ConversationDef> for Conversation {
    fn compile(def: &ConversationDef, cx: &Compiler<'_>) -> Result<Self, crate::LoadError> {
        let assign = def.assign_to.clone().unwrap_or_default();
        Ok(Conversation {
            body: cx.template(&def.body, "body")?,
            assign_admin: cx.optional(&assign.admin, "assign_to.admin")?,
            assign_team: cx.optional(&assign.team, "assign_to.team")?,
            admin: cx.optional(&def.admin, "admin")?,
            note: cx.optional(&def.note, "note")?,
        })
    }
}

impl Kind for Conversation {
    fn plan(&self, run: &mut Run<'_>, at: &At<'_>, profile: &mut Profile) -> Result<(), PlanError> {
        let path = at.path;
        let action = Action::Conversation {
            body: run.required(&self.body, profile, path, "body")?,
            assign_admin: run.optional(&self.assign_admin, profile, path, "assign_to.admin")?,
            assign_team: run.optional(&self.assign_team, profile, path, "assign_to.team")?,
            admin: run.optional(&self.admin, profile, path, "admin")?,
            note: run.optional(&self.note, profile, path, "note")?,
        };
        run.push(at, action, profile)
    }

    fn outline(&self) -> Outline {
        Outline::leaf("intercom.conversation")
    }

    fn variables(&self, names: &mut Variables<'_>) {
        names.template(&self.body);
        for template in [
            &self.assign_admin,
            &self.assign_team,
            &self.admin,
            &self.note,
        ] {
            names.optional(template);
        }
    }
}
