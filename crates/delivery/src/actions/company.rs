//! Companies: upserted by `company_id` with the contact attached (once: the identity map
//! remembers the attachments Junction made), or the contact detached.

use super::Call;
use crate::deliver::Failure;
use serde_json::{Map, Value};

pub(super) async fn upsert(
    call: &Call<'_>,
    company_id: &str,
    fields: &Map<String, Value>,
    attach: bool,
) -> Result<String, Failure> {
    let client = call.client();
    let mut body = fields.clone();
    body.insert("company_id".into(), Value::String(company_id.to_owned()));
    let company = client.upsert_company(&Value::Object(body)).await?;
    if !attach {
        return Ok(format!("company {}", company.id));
    }
    let resolver = &call.target.resolver;
    let contact = call.contact().await?;
    // A second group call for the same pair costs the upsert only.
    if resolver.is_attached(&contact, &company.id).await? {
        return Ok(format!(
            "company {} (contact {contact} already attached)",
            company.id
        ));
    }
    client
        .attach_contact_to_company(&contact, &company.id)
        .await?;
    resolver
        .remember_attachment(&contact, &company.id, true)
        .await?;
    Ok(format!("company {} with contact {contact}", company.id))
}

pub(super) async fn detach(call: &Call<'_>, company_id: &str) -> Result<String, Failure> {
    let client = call.client();
    let contact = call.contact().await?;
    let Some(company) = client.find_company(company_id).await? else {
        return Ok(format!("no company {company_id}: nothing to detach"));
    };
    client
        .detach_contact_from_company(&contact, &company.id)
        .await?;
    call.target
        .resolver
        .remember_attachment(&contact, &company.id, false)
        .await?;
    Ok(format!(
        "contact {contact} detached from company {}",
        company.id
    ))
}
