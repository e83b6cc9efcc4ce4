//! Contact operations (`/contacts`), returning the fields Junction relies on.

use crate::{ApiPath, IntercomClient, IntercomError};
use reqwest::Method;
use serde::Deserialize;
use serde_json::{Value, json};

/// The parts of Intercom's `contact` object Junction uses; the rest stays in `raw`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Contact {
    pub id: String,
    pub role: String,
    pub external_id: Option<String>,
    pub email: Option<String>,
    #[serde(skip)]
    pub raw: Value,
}

fn contact(value: Value) -> Result<Contact, IntercomError> {
    let mut contact: Contact = serde_json::from_value(value.clone())
        .map_err(|e| IntercomError::unexpected(None, format!("unexpected contact shape: {e}")))?;
    contact.raw = value;
    Ok(contact)
}

/// A search page: the contacts and Intercom's total.
#[derive(Debug, Clone)]
pub struct SearchPage {
    pub contacts: Vec<Contact>,
    pub total_count: u64,
    /// Cursor of the next page, for `pagination.starting_after`.
    pub next: Option<String>,
}

impl IntercomClient {
    pub async fn create_contact(&self, fields: &Value) -> Result<Contact, IntercomError> {
        contact(
            self.call(Method::POST, &ApiPath::fixed("contacts"), Some(fields))
                .await?,
        )
    }

    pub async fn update_contact(&self, id: &str, fields: &Value) -> Result<Contact, IntercomError> {
        contact(
            self.call(
                Method::PUT,
                &ApiPath::fixed("contacts").id(id)?,
                Some(fields),
            )
            .await?,
        )
    }

    pub async fn get_contact(&self, id: &str) -> Result<Contact, IntercomError> {
        contact(
            self.call(Method::GET, &ApiPath::fixed("contacts").id(id)?, None)
                .await?,
        )
    }

    /// A user by external_id (leads are not found this way); `None` when there is none.
    pub async fn find_user_by_external_id(
        &self,
        external_id: &str,
    ) -> Result<Option<Contact>, IntercomError> {
        match self
            .call(
                Method::GET,
                &ApiPath::fixed("contacts/find_by_external_id").id(external_id)?,
                None,
            )
            .await
        {
            Ok(value) => contact(value).map(Some),
            Err(IntercomError::Permanent { status: 404, .. }) => Ok(None),
            Err(error) => Err(error),
        }
    }

    /// `POST /contacts/search` with a query (a filter or an AND/OR group); the cursor goes in
    /// the body, as Intercom requires.
    pub async fn search_contacts(
        &self,
        query: &Value,
        per_page: u32,
        starting_after: Option<&str>,
    ) -> Result<SearchPage, IntercomError> {
        let mut pagination = json!({ "per_page": per_page });
        if let Some(cursor) = starting_after {
            pagination["starting_after"] = cursor.into();
        }
        let page = self
            .call(
                Method::POST,
                &ApiPath::fixed("contacts/search"),
                Some(&json!({"query": query, "pagination": pagination})),
            )
            .await?;
        let contacts = page["data"]
            .as_array()
            .map(|items| {
                items
                    .iter()
                    .cloned()
                    .map(contact)
                    .collect::<Result<Vec<_>, _>>()
            })
            .transpose()?
            .unwrap_or_default();
        Ok(SearchPage {
            total_count: page["total_count"]
                .as_u64()
                .unwrap_or(contacts.len() as u64),
            next: page["pages"]["next"]["starting_after"]
                .as_str()
                .map(str::to_owned),
            contacts,
        })
    }

    /// `POST /contacts/merge`: the lead `from` disappears into the user `into`.
    pub async fn merge_lead_into_user(
        &self,
        lead_id: &str,
        user_id: &str,
    ) -> Result<Contact, IntercomError> {
        contact(
            self.call(
                Method::POST,
                &ApiPath::fixed("contacts/merge"),
                Some(&json!({"from": lead_id, "into": user_id})),
            )
            .await?,
        )
    }

    /// `DELETE /contacts/{id}`: the contact is gone for good.
    pub async fn delete_contact(&self, id: &str) -> Result<(), IntercomError> {
        let path = ApiPath::fixed("contacts").id(id)?;
        self.call(Method::DELETE, &path, None).await.map(|_| ())
    }

    /// `POST /contacts/{id}/archive`: hidden from the workspace, restorable.
    pub async fn archive_contact(&self, id: &str) -> Result<(), IntercomError> {
        let path = ApiPath::fixed("contacts").id(id)?.then("archive");
        self.call(Method::POST, &path, None).await.map(|_| ())
    }

    pub async fn unarchive_contact(&self, id: &str) -> Result<(), IntercomError> {
        let path = ApiPath::fixed("contacts").id(id)?.then("unarchive");
        self.call(Method::POST, &path, None).await.map(|_| ())
    }
}
