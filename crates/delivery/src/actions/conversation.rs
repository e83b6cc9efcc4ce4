//! Conversations Junction starts for the contact, assigned and noted. Starting one is never
//! repeated blindly: a retry first looks for the conversation an earlier attempt may have
//! started (a dropped connection can hide a success).

use super::Call;
use crate::deliver::Failure;
use junction_intercom::operations::Assignee;

/// Who the conversation is assigned to, who acts, and the note they leave.
pub(super) struct People<'a> {
    pub assign_admin: Option<&'a str>,
    pub assign_team: Option<&'a str>,
    /// The admin who assigns and writes the note (default: the assignee admin).
    pub admin: Option<&'a str>,
    pub note: Option<&'a str>,
}

pub(super) async fn start(
    call: &Call<'_>,
    body: &str,
    people: People<'_>,
) -> Result<String, Failure> {
    let client = call.client();
    let contact = call.contact().await?;
    let started_before = match call.earlier_attempt_ms {
        Some(since) => client
            .conversations_of_contact(&contact, since / 1000 - 1)
            .await?
            .into_iter()
            .find(|c| {
                c["source"]["body"]
                    .as_str()
                    .is_some_and(|b| b.contains(body))
            })
            .and_then(|c| c["id"].as_str().map(str::to_owned)),
        None => None,
    };
    let conversation = match started_before {
        Some(id) => {
            metrics::counter!("junction_duplicates_avoided_total").increment(1);
            id
        }
        None => {
            let id = client
                .start_conversation(&contact, call.role(), body)
                .await?;
            call.deliverer.remember_made("conversation", &id).await;
            id
        }
    };
    let acting = people.admin.or(people.assign_admin);
    let assignee = match (people.assign_admin, people.assign_team) {
        (Some(admin), _) => Some(Assignee::Admin(admin.to_owned())),
        (None, Some(team)) => Some(Assignee::Team(team.to_owned())),
        _ => None,
    };
    if let (Some(assignee), Some(acting)) = (&assignee, acting) {
        client
            .assign_conversation(&conversation, acting, assignee)
            .await?;
    }
    if let (Some(note), Some(acting)) = (people.note, acting) {
        client
            .reply_as_admin(&conversation, acting, note, true)
            .await?;
    }
    Ok(format!("conversation {conversation} for contact {contact}"))
}
