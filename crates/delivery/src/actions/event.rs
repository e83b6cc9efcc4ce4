//! Data events for the contact.

use super::Call;
use crate::deliver::Failure;
use serde_json::{Map, Value};

pub(super) async fn submit(
    call: &Call<'_>,
    name: &str,
    created_at: i64,
    metadata: &Map<String, Value>,
) -> Result<String, Failure> {
    let contact = call.contact().await?;
    // As Segment's destination: an event found by email carries the email too.
    let email = call
        .identity
        .email
        .as_deref()
        .filter(|_| call.identity.user_id.is_none());
    call.client()
        .submit_event(&contact, email, name, created_at, metadata)
        .await?;
    Ok(format!("event {name:?} for contact {contact}"))
}
