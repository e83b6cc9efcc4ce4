//! `intercom.message`: an admin-initiated message, in-app or email. A message reaches the
//! person, so it passes the journey guards (`Run::push_part`).

use super::{At, Compile, Compiler, Kind, Outline, Variables};
use crate::action::{Action, MessageChannel};
use crate::error::PlanError;
use crate::expr::ValueTemplate;
use crate::profile::Profile;
use crate::run::Run;
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::Value as Json;

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum MessageType {
    Inapp,
    Email,
}

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MessageDef {
    /// The sending admin's id.
    pub from: Json,
    #[serde(rename = "type")]
    pub kind: MessageType,
    /// Email only.
    #[serde(default)]
    pub subject: Option<Json>,
    pub body: Json,
    /// Open an inbox conversation at once rather than on the contact's reply.
    #[serde(default)]
    pub open_conversation: bool,
}

#[derive(Debug)]
pub struct Message {
    from: ValueTemplate,
    email: bool,
    subject: Option<ValueTemplate>,
    body: ValueTemplate,
    open_conversation: bool,
}

impl Compile<MessageDef> for Message {
    fn compile(def: &MessageDef, cx: &Compiler<'_>) -> Result<Self, crate::LoadError> {
        let email = matches!(def.kind, MessageType::Email);
        if email && def.subject.is_none() {
            return Err(cx.error("an email needs a `subject`"));
        }
        Ok(Message {
            from: cx.template(&def.from, "from")?,
            email,
            subject: cx.optional(&def.subject, "subject")?,
            body: cx.template(&def.body, "body")?,
            open_conversation: def.open_conversation,
        })
    }
}

impl Kind for Message {
    fn plan(&self, run: &mut Run<'_>, at: &At<'_>, profile: &mut Profile) -> Result<(), PlanError> {
        let path = at.path;
        let action = Action::Message {
            from: run.required(&self.from, profile, path, "from")?,
            channel: if self.email {
                MessageChannel::Email
            } else {
                MessageChannel::Inapp
            },
            subject: run.optional(&self.subject, profile, path, "subject")?,
            body: run.required(&self.body, profile, path, "body")?,
            open_conversation: self.open_conversation,
        };
        run.push(at, action, profile)
    }

    fn outline(&self) -> Outline {
        Outline::leaf(format!(
            "intercom.message ({})",
            if self.email { "email" } else { "in-app" }
        ))
    }

    fn variables(&self, names: &mut Variables<'_>) {
        names.template(&self.from);
        names.optional(&self.subject);
        names.template(&self.body);
    }
}
