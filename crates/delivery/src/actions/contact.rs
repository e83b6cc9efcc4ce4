//! The contact itself: written (through attribute safety, found or created once), or deleted
//! (archived, as `intercom.deletion` says) at the person's request.

use super::Call;
use crate::deliver::{Deletion, Failure};
use junction_intercom::IntercomError;
use serde_json::{Map, Value};

pub(super) async fn upsert(
    call: &Call<'_>,
    traits: &Map<String, Value>,
    fields: &Map<String, Value>,
) -> Result<String, Failure> {
    let target = call.target;
    let prepared = target.catalog.prepare(traits, target.policy).await?;
    for (name, reason) in &prepared.dropped {
        tracing::warn!(attribute = %name, %reason, "trait not written to Intercom");
    }
    let mut body = prepared.fields;
    for (name, value) in fields {
        body.insert(name.clone(), value.clone());
    }
    let resolution = target.resolver.upsert(call.identity, &body).await?;
    Ok(format!(
        "contact {} ({:?})",
        resolution.contact.id, resolution.resolved_by
    ))
}

pub(super) async fn delete(call: &Call<'_>) -> Result<String, Failure> {
    let target = call.target;
    let Some(contact) = target.resolver.existing_contact_id(call.identity).await? else {
        return Ok("no Intercom contact for this user: nothing to delete".into());
    };
    let done = match target.deletion {
        Deletion::Delete => call.client().delete_contact(&contact).await,
        Deletion::Archive => call.client().archive_contact(&contact).await,
    };
    match done {
        // Already gone (deleted, or merged away): the request is met.
        Ok(())
        | Err(IntercomError::Permanent { status: 404, .. })
        | Err(IntercomError::Gone { .. }) => {}
        Err(error) => return Err(error.into()),
    }
    target.resolver.forget(&contact).await?;
    Ok(match target.deletion {
        Deletion::Delete => format!("contact {contact} deleted"),
        Deletion::Archive => format!("contact {contact} archived"),
    })
}
