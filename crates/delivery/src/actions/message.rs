//! Admin-initiated messages, in-app or email.

use super::Call;
use crate::deliver::Failure;
use junction_flow::action::MessageChannel;
use junction_intercom::operations::MessageKind;

pub(super) async fn send(
    call: &Call<'_>,
    from: &str,
    channel: MessageChannel,
    subject: Option<&str>,
    body: &str,
    open_conversation: bool,
) -> Result<String, Failure> {
    let contact = call.contact().await?;
    let kind = match channel {
        MessageChannel::Inapp => MessageKind::InApp,
        MessageChannel::Email => MessageKind::Email {
            subject: subject.unwrap_or_default().to_owned(),
        },
    };
    let message = call
        .client()
        .send_message(from, &contact, call.role(), &kind, body, open_conversation)
        .await?;
    Ok(format!(
        "message {} to contact {contact}",
        message["id"].as_str().unwrap_or("?")
    ))
}
