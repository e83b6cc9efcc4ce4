//! Each planned action's Intercom calls: the delivery half of the step kinds (whose planning
//! half is `junction-flow`'s `steps/`), one module per kind of action. [`deliver`] is the table
//! that sends each [`Action`] to its module; adding an Intercom action is a module and a line
//! there. (HTTP requests and Segment calls are not Intercom's: `Deliverer` sends them itself.)

mod company;
mod contact;
mod conversation;
mod event;
mod message;
mod note;
mod owner;
mod tag;

use crate::deliver::{Deliverer, Failure, IntercomTarget};
use junction_flow::action::Action;
use junction_intercom::{Identity, IntercomClient};

/// One attempt at one action: who it is for, where it goes, and what earlier attempts may have
/// left behind.
pub(crate) struct Call<'a> {
    pub deliverer: &'a Deliverer,
    pub target: &'a IntercomTarget,
    pub identity: &'a Identity,
    /// When an earlier attempt of this action started, if any: an action that creates
    /// something first looks for what that attempt may have created.
    pub earlier_attempt_ms: Option<i64>,
}

impl Call<'_> {
    pub fn client(&self) -> &IntercomClient {
        &self.target.client
    }

    /// The person's contact id (found, or created once: see contact resolution).
    pub async fn contact(&self) -> Result<String, Failure> {
        Ok(self.target.resolver.contact_id(self.identity).await?)
    }

    /// Intercom's role for the person: a user when Segment knows their userId, else a lead.
    pub fn role(&self) -> &'static str {
        if self.identity.user_id.is_some() {
            "user"
        } else {
            "lead"
        }
    }
}

/// Carries out one Intercom action; `Ok` holds a short summary for the log.
pub(crate) async fn deliver(call: &Call<'_>, action: &Action) -> Result<String, Failure> {
    match action {
        Action::Contact { traits, fields } => contact::upsert(call, traits, fields).await,
        Action::DeleteContact => contact::delete(call).await,
        Action::Company {
            company_id,
            fields,
            attach,
        } => company::upsert(call, company_id, fields, *attach).await,
        Action::Detach { company_id } => company::detach(call, company_id).await,
        Action::Tag { name } => tag::tag(call, name, true).await,
        Action::Untag { name } => tag::tag(call, name, false).await,
        Action::Event {
            name,
            created_at,
            metadata,
        } => event::submit(call, name, *created_at, metadata).await,
        Action::Message {
            from,
            channel,
            subject,
            body,
            open_conversation,
        } => {
            message::send(
                call,
                from,
                *channel,
                subject.as_deref(),
                body,
                *open_conversation,
            )
            .await
        }
        Action::Conversation {
            body,
            assign_admin,
            assign_team,
            admin,
            note,
        } => {
            let people = conversation::People {
                assign_admin: assign_admin.as_deref(),
                assign_team: assign_team.as_deref(),
                admin: admin.as_deref(),
                note: note.as_deref(),
            };
            conversation::start(call, body, people).await
        }
        Action::Note { admin, body } => note::add(call, admin, body).await,
        Action::Owner { admin } => owner::set(call, admin).await,
        Action::Http { .. } | Action::Segment { .. } => {
            unreachable!("the deliverer sends HTTP requests and Segment calls itself")
        }
    }
}
