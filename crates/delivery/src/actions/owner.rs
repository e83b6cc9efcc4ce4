//! The contact's owner (`intercom.assign`).

use super::Call;
use crate::deliver::Failure;
use serde_json::{Value, json};

pub(super) async fn set(call: &Call<'_>, admin: &str) -> Result<String, Failure> {
    let contact = call.contact().await?;
    // Intercom's admin ids are numbers; an id that is not one is sent as given.
    let owner: Value = admin
        .parse::<i64>()
        .map_or_else(|_| Value::String(admin.to_owned()), Value::from);
    call.client()
        .update_contact(&contact, &json!({ "owner_id": owner }))
        .await?;
    Ok(format!("owner {admin} of contact {contact}"))
}
