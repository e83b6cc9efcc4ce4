//! Companies, tags, data events and admins: thin typed calls over [`IntercomClient::call`].

use crate::{ApiPath, IntercomClient, IntercomError};
use reqwest::Method;
use serde_json::{Value, json};

/// The ids Junction keeps of a company.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompanyRef {
    /// Intercom's id (used to attach contacts).
    pub id: String,
    /// Your id for it (Segment's groupId).
    pub company_id: String,
}

/// Intercom's data events take at most this many metadata keys and ignore the rest.
pub const MAX_EVENT_METADATA_KEYS: usize = 10;

impl IntercomClient {
    /// `POST /companies`: creates or updates the company with this `company_id`.
    pub async fn upsert_company(&self, fields: &Value) -> Result<CompanyRef, IntercomError> {
        let company = self
            .call(Method::POST, &ApiPath::fixed("companies"), Some(fields))
            .await?;
        match (company["id"].as_str(), company["company_id"].as_str()) {
            (Some(id), Some(company_id)) => Ok(CompanyRef {
                id: id.to_owned(),
                company_id: company_id.to_owned(),
            }),
            _ => Err(IntercomError::unexpected(
                None,
                "company response without id",
            )),
        }
    }

    /// `GET /companies?company_id=`: the company with this `company_id`, if there is one.
    pub async fn find_company(
        &self,
        company_id: &str,
    ) -> Result<Option<CompanyRef>, IntercomError> {
        let found = self
            .call(
                Method::GET,
                &ApiPath::fixed("companies").query("company_id", company_id),
                None,
            )
            .await;
        let company = match found {
            Ok(company) => company,
            Err(IntercomError::Permanent { status: 404, .. }) => return Ok(None),
            Err(error) => return Err(error),
        };
        match (company["id"].as_str(), company["company_id"].as_str()) {
            (Some(id), Some(company_id)) => Ok(Some(CompanyRef {
                id: id.to_owned(),
                company_id: company_id.to_owned(),
            })),
            _ => Err(IntercomError::unexpected(
                None,
                "company response without id",
            )),
        }
    }

    pub async fn attach_contact_to_company(
        &self,
        contact_id: &str,
        company_id: &str,
    ) -> Result<(), IntercomError> {
        self.call(
            Method::POST,
            &ApiPath::fixed("contacts").id(contact_id)?.then("companies"),
            Some(&json!({ "id": company_id })),
        )
        .await
        .map(|_| ())
    }

    pub async fn detach_contact_from_company(
        &self,
        contact_id: &str,
        company_id: &str,
    ) -> Result<(), IntercomError> {
        self.call(
            Method::DELETE,
            &ApiPath::fixed("contacts")
                .id(contact_id)?
                .then("companies")
                .id(company_id)?,
            None,
        )
        .await
        .map(|_| ())
    }

    /// `POST /tags` creates the tag or returns the existing one of that name; its id.
    pub async fn tag_id(&self, name: &str) -> Result<String, IntercomError> {
        let tag = self
            .call(
                Method::POST,
                &ApiPath::fixed("tags"),
                Some(&json!({ "name": name })),
            )
            .await?;
        tag["id"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| IntercomError::unexpected(None, "tag response without id"))
    }

    pub async fn tag_contact(&self, contact_id: &str, tag_id: &str) -> Result<(), IntercomError> {
        self.call(
            Method::POST,
            &ApiPath::fixed("contacts").id(contact_id)?.then("tags"),
            Some(&json!({ "id": tag_id })),
        )
        .await
        .map(|_| ())
    }

    pub async fn untag_contact(&self, contact_id: &str, tag_id: &str) -> Result<(), IntercomError> {
        self.call(
            Method::DELETE,
            &ApiPath::fixed("contacts")
                .id(contact_id)?
                .then("tags")
                .id(tag_id)?,
            None,
        )
        .await
        .map(|_| ())
    }

    /// `POST /events` for a contact by Intercom id (leads can only be addressed that way).
    /// Metadata is checked before sending: at most ten keys (Intercom would silently drop the
    /// rest), no nesting except rich links `{url, value}` and money `{amount, currency}`.
    pub async fn submit_event(
        &self,
        contact_id: &str,
        email: Option<&str>,
        event_name: &str,
        created_at: i64,
        metadata: &serde_json::Map<String, Value>,
    ) -> Result<(), IntercomError> {
        if metadata.len() > MAX_EVENT_METADATA_KEYS {
            return Err(IntercomError::Permanent {
                status: 400,
                code: "junction_metadata_too_large".into(),
                message: format!(
                    "{} metadata keys; Intercom keeps at most {MAX_EVENT_METADATA_KEYS}",
                    metadata.len()
                ),
            });
        }
        let mut body = json!({"event_name": event_name, "created_at": created_at, "id": contact_id, "metadata": metadata});
        if let Some(email) = email {
            body["email"] = email.into();
        }
        self.call(Method::POST, &ApiPath::fixed("events"), Some(&body))
            .await
            .map(|_| ())
    }

    /// `GET /me`: the admin the token belongs to (checks credentials).
    pub async fn me(&self) -> Result<Value, IntercomError> {
        self.call(Method::GET, &ApiPath::fixed("me"), None).await
    }

    /// `GET /admins`.
    pub async fn admins(&self) -> Result<Vec<Value>, IntercomError> {
        let list = self
            .call(Method::GET, &ApiPath::fixed("admins"), None)
            .await?;
        Ok(list["admins"].as_array().cloned().unwrap_or_default())
    }
}

impl IntercomClient {
    /// `GET /data_attributes?model=contact`: custom contact attributes and their types.
    pub async fn contact_attributes(
        &self,
    ) -> Result<std::collections::BTreeMap<String, crate::attributes::AttributeType>, IntercomError>
    {
        let list = self
            .call(
                Method::GET,
                &ApiPath::fixed("data_attributes").query("model", "contact"),
                None,
            )
            .await?;
        Ok(list["data"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|a| a["custom"].as_bool() == Some(true))
            .filter_map(|a| {
                let name = a["name"].as_str()?.to_owned();
                let data_type = crate::attributes::AttributeType::parse(a["data_type"].as_str()?)?;
                Some((name, data_type))
            })
            .collect())
    }

    /// `POST /data_attributes` for a contact attribute.
    pub async fn create_contact_attribute(
        &self,
        name: &str,
        data_type: crate::attributes::AttributeType,
    ) -> Result<(), IntercomError> {
        let body = json!({"name": name, "model": "contact", "data_type": data_type.as_str()});
        self.call(
            Method::POST,
            &ApiPath::fixed("data_attributes"),
            Some(&body),
        )
        .await
        .map(|_| ())
    }
}

/// Who an admin-initiated message goes to, and how.
#[derive(Debug, Clone, PartialEq)]
pub enum MessageKind {
    InApp,
    Email { subject: String },
}

/// Whom a conversation is assigned to.
#[derive(Debug, Clone, PartialEq)]
pub enum Assignee {
    Admin(String),
    Team(String),
    Nobody,
}

impl IntercomClient {
    /// `POST /conversations` as the contact (a contact-initiated conversation; plain text body).
    /// Returns the conversation id.
    pub async fn start_conversation(
        &self,
        contact_id: &str,
        role: &str,
        body: &str,
    ) -> Result<String, IntercomError> {
        let request = json!({"from": {"type": role, "id": contact_id}, "body": body});
        let message = self
            .call(
                Method::POST,
                &ApiPath::fixed("conversations"),
                Some(&request),
            )
            .await?;
        message["conversation_id"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| {
                IntercomError::unexpected(None, "conversation response without conversation_id")
            })
    }

    /// Conversations with this contact created after `after` (Unix seconds), oldest first
    /// (`POST /conversations/search`): how a restart tells whether a conversation it may have
    /// started before a crash exists.
    pub async fn conversations_of_contact(
        &self,
        contact_id: &str,
        after: i64,
    ) -> Result<Vec<Value>, IntercomError> {
        let query = json!({
            "query": {"operator": "AND", "value": [
                {"field": "contact_ids", "operator": "=", "value": contact_id},
                {"field": "created_at", "operator": ">", "value": after.to_string()},
            ]},
            "pagination": {"per_page": 50},
        });
        let found = self
            .call(
                Method::POST,
                &ApiPath::fixed("conversations/search"),
                Some(&query),
            )
            .await?;
        Ok(found["conversations"]
            .as_array()
            .cloned()
            .unwrap_or_default())
    }

    /// An admin's reply (`note = false`) or internal note (`note = true`) on a conversation.
    pub async fn reply_as_admin(
        &self,
        conversation_id: &str,
        admin_id: &str,
        body: &str,
        note: bool,
    ) -> Result<Value, IntercomError> {
        let request = json!({"type": "admin", "admin_id": admin_id, "message_type": if note { "note" } else { "comment" }, "body": body});
        self.call(
            Method::POST,
            &ApiPath::fixed("conversations")
                .id(conversation_id)?
                .then("reply"),
            Some(&request),
        )
        .await
    }

    /// Assigns a conversation (`admin_id` is the admin doing it).
    pub async fn assign_conversation(
        &self,
        conversation_id: &str,
        admin_id: &str,
        assignee: &Assignee,
    ) -> Result<Value, IntercomError> {
        let (kind, assignee_id) = match assignee {
            Assignee::Admin(id) => ("admin", id.as_str()),
            Assignee::Team(id) => ("team", id.as_str()),
            Assignee::Nobody => ("admin", "0"),
        };
        let request = json!({"message_type": "assignment", "type": kind, "admin_id": admin_id, "assignee_id": assignee_id});
        self.call(
            Method::POST,
            &ApiPath::fixed("conversations")
                .id(conversation_id)?
                .then("parts"),
            Some(&request),
        )
        .await
    }

    /// An admin-initiated message (`POST /messages`); `open_conversation` starts an inbox
    /// conversation at once instead of waiting for the contact's reply. Note the wire value
    /// `inapp` (the OpenAPI enum's `in_app` is wrong).
    pub async fn send_message(
        &self,
        admin_id: &str,
        contact_id: &str,
        role: &str,
        kind: &MessageKind,
        body: &str,
        open_conversation: bool,
    ) -> Result<Value, IntercomError> {
        // The description types admin ids as integers here, although they travel as strings
        // elsewhere.
        let from: Value = admin_id
            .parse::<i64>()
            .map_or_else(|_| admin_id.into(), Value::from);
        let mut request = json!({
            "from": {"type": "admin", "id": from},
            "to": {"type": role, "id": contact_id},
            "body": body,
            "create_conversation_without_contact_reply": open_conversation,
        });
        match kind {
            MessageKind::InApp => request["message_type"] = "inapp".into(),
            MessageKind::Email { subject } => {
                request["message_type"] = "email".into();
                request["subject"] = subject.clone().into();
                request["template"] = "plain".into();
            }
        }
        self.call(Method::POST, &ApiPath::fixed("messages"), Some(&request))
            .await
    }

    /// `POST /contacts/{id}/notes`.
    pub async fn add_note(
        &self,
        contact_id: &str,
        admin_id: &str,
        body: &str,
    ) -> Result<Value, IntercomError> {
        self.call(
            Method::POST,
            &ApiPath::fixed("contacts").id(contact_id)?.then("notes"),
            Some(&json!({"body": body, "admin_id": admin_id})),
        )
        .await
    }
}
