//! Notes on the contact.

use super::Call;
use crate::deliver::Failure;

pub(super) async fn add(call: &Call<'_>, admin: &str, body: &str) -> Result<String, Failure> {
    let contact = call.contact().await?;
    let note = call.client().add_note(&contact, admin, body).await?;
    Ok(format!(
        "note {} on contact {contact}",
        note["id"].as_str().unwrap_or("?")
    ))
}
