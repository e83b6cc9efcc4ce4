//! Tags on and off the contact (tag ids cached by name in the deliverer).

use super::Call;
use crate::deliver::Failure;

pub(super) async fn tag(call: &Call<'_>, name: &str, on: bool) -> Result<String, Failure> {
    let tag = call.deliverer.tag_id(call.client(), name).await?;
    let contact = call.contact().await?;
    if on {
        call.client().tag_contact(&contact, &tag).await?;
    } else {
        call.client().untag_contact(&contact, &tag).await?;
    }
    Ok(format!("tag {name} on contact {contact}"))
}
