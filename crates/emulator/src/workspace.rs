//! The emulated workspace's state: contacts and data attributes, and how Intercom renders them.

use crate::error::IntercomError;
use serde_json::{Map, Value, json};
use std::collections::BTreeMap;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

pub const WORKSPACE_ID: &str = "emul8r";

#[derive(Debug, Clone)]
pub struct Contact {
    pub id: String,
    /// "user" or "lead".
    pub role: String,
    pub external_id: Option<String>,
    pub email: Option<String>,
    pub phone: Option<String>,
    pub name: Option<String>,
    pub avatar: Option<String>,
    pub owner_id: Option<i64>,
    pub unsubscribed_from_emails: bool,
    pub created_at: i64,
    pub updated_at: i64,
    pub signed_up_at: Option<i64>,
    pub last_seen_at: Option<i64>,
    pub custom_attributes: Map<String, Value>,
    pub archived: bool,
    pub company_ids: Vec<String>,
    pub tag_ids: Vec<String>,
    /// Set when this lead was merged into another contact.
    pub merged_into: Option<String>,
    /// Deleted contacts are gone from reads but still block re-creation (as "archived"), as
    /// observed against Intercom.
    pub deleted: bool,
    /// Until then, search does not see this contact (Intercom's index lags behind writes).
    pub searchable_after: Instant,
}

impl Contact {
    /// The `contact` object of the 2.14 OpenAPI description.
    pub fn to_json(&self) -> Value {
        let list = |kind: &str| {
            json!({"type": "list", "data": [], "url": format!("/contacts/{}/{kind}", self.id),
                   "total_count": 0, "has_more": false})
        };
        json!({
            "type": "contact",
            "id": self.id,
            "workspace_id": WORKSPACE_ID,
            "external_id": self.external_id,
            "role": self.role,
            "email": self.email,
            "email_domain": self.email.as_deref().and_then(|e| e.split_once('@')).map(|(_, d)| d),
            "phone": self.phone,
            "name": self.name,
            "owner_id": self.owner_id,
            "has_hard_bounced": false,
            "marked_email_as_spam": false,
            "unsubscribed_from_emails": self.unsubscribed_from_emails,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "signed_up_at": self.signed_up_at,
            "last_seen_at": self.last_seen_at,
            "last_replied_at": null,
            "last_contacted_at": null,
            "last_email_opened_at": null,
            "last_email_clicked_at": null,
            "language_override": null,
            "browser": null,
            "browser_version": null,
            "browser_language": null,
            "os": null,
            "custom_attributes": self.custom_attributes,
            "avatar": self.avatar.as_ref().map(|url| json!({"type": "avatar", "image_url": url})),
            "tags": refs(&self.id, "tags", "tag", &self.tag_ids),
            "notes": list("notes"),
            "companies": refs(&self.id, "companies", "company", &self.company_ids),
            "location": {"type": "location", "country": null, "region": null, "city": null},
            "social_profiles": {"type": "list", "data": []},
        })
    }
}

/// A contact's list of linked objects, as Intercom renders it (references, not whole objects).
fn refs(contact_id: &str, kind: &str, item_type: &str, ids: &[String]) -> Value {
    let data: Vec<Value> = ids
        .iter()
        .map(|id| json!({"type": item_type, "id": id, "url": format!("/{kind}/{id}")}))
        .collect();
    json!({"type": "list", "data": data, "url": format!("/contacts/{contact_id}/{kind}"),
           "total_count": ids.len(), "has_more": false})
}

#[derive(Debug, Clone)]
pub struct Company {
    pub id: String,
    pub company_id: String,
    pub name: Option<String>,
    pub plan: Option<String>,
    pub size: Option<i64>,
    pub website: Option<String>,
    pub industry: Option<String>,
    pub monthly_spend: Option<i64>,
    pub remote_created_at: Option<i64>,
    pub created_at: i64,
    pub updated_at: i64,
    pub custom_attributes: Map<String, Value>,
    pub user_count: usize,
}

impl Company {
    pub fn to_json(&self) -> Value {
        let mut company = json!({
            "type": "company",
            "id": self.id,
            "company_id": self.company_id,
            "app_id": WORKSPACE_ID,
            "name": self.name,
            "plan": self.plan.as_ref().map(|name| json!({"type": "plan", "id": format!("plan-{name}"), "name": name})).unwrap_or(json!({})),
            "remote_created_at": self.remote_created_at,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "last_request_at": null,
            "size": self.size,
            "website": self.website,
            "industry": self.industry,
            "monthly_spend": self.monthly_spend,
            "session_count": 0,
            "user_count": self.user_count,
            "custom_attributes": self.custom_attributes,
            "tags": {"type": "tag.list", "tags": []},
            "segments": {"type": "segment.list", "segments": []},
        });
        // Intercom leaves out the optional fields a company does not have.
        if let Some(fields) = company.as_object_mut() {
            fields.retain(|_, value| !value.is_null());
        }
        company
    }
}

/// One entry of a conversation: the opening message, a reply, a note, an assignment…
#[derive(Debug, Clone)]
pub struct Part {
    pub id: String,
    /// comment, note, assignment, close, open
    pub part_type: String,
    pub body: Option<String>,
    /// ("admin" | "user" | "team", id)
    pub author: (String, String),
    pub created_at: i64,
}

#[derive(Debug, Clone)]
pub struct Conversation {
    pub id: String,
    pub contact_id: String,
    pub created_at: i64,
    pub updated_at: i64,
    /// customer_initiated or admin_initiated
    pub delivered_as: String,
    pub source_body: String,
    pub source_author: (String, String),
    pub subject: Option<String>,
    pub admin_assignee_id: Option<String>,
    pub team_assignee_id: Option<String>,
    pub open: bool,
    pub parts: Vec<Part>,
}

impl Conversation {
    /// The `conversation` object (the fields Junction and its tests read, in Intercom's shape).
    pub fn to_json(&self) -> Value {
        let parts: Vec<Value> = self
            .parts
            .iter()
            .map(|p| {
                json!({"type": "conversation_part", "id": p.id, "part_type": p.part_type, "body": p.body,
                       "created_at": p.created_at, "updated_at": p.created_at, "notified_at": p.created_at,
                       "assigned_to": null, "author": {"type": p.author.0, "id": p.author.1}, "attachments": [],
                       "redacted": false})
            })
            .collect();
        json!({
            "type": "conversation",
            "id": self.id,
            "title": self.subject,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "waiting_since": null,
            "snoozed_until": null,
            "open": self.open,
            "state": if self.open { "open" } else { "closed" },
            "read": false,
            "priority": "not_priority",
            "admin_assignee_id": self.admin_assignee_id.as_ref().and_then(|id| id.parse::<i64>().ok()),
            "team_assignee_id": self.team_assignee_id,
            "tags": {"type": "tag.list", "tags": []},
            "source": {"type": "conversation", "id": format!("{}-source", self.id), "delivered_as": self.delivered_as,
                       "subject": self.subject.clone().unwrap_or_default(), "body": self.source_body,
                       "author": {"type": self.source_author.0, "id": self.source_author.1}, "attachments": [],
                       "redacted": false},
            "contacts": {"type": "contact.list", "contacts": [{"type": "contact", "id": self.contact_id}]},
            "teammates": {"type": "admin.list", "admins": []},
            "custom_attributes": {},
            "conversation_parts": {"type": "conversation_part.list", "conversation_parts": parts, "total_count": self.parts.len()},
        })
    }
}

/// A note on a contact.
#[derive(Debug, Clone)]
pub struct Note {
    pub id: String,
    pub contact_id: String,
    pub body: String,
    pub created_at: i64,
}

#[derive(Debug, Clone)]
pub struct Tag {
    pub id: String,
    pub name: String,
}

/// A data event as received (`POST /events`).
#[derive(Debug, Clone)]
pub struct DataEvent {
    pub contact_id: String,
    pub event_name: String,
    pub created_at: i64,
    pub metadata: Map<String, Value>,
}

#[derive(Debug, Clone)]
pub struct DataAttribute {
    pub id: i64,
    pub name: String,
    /// "contact" or "company".
    pub model: String,
    /// string, integer, float, boolean or date.
    pub data_type: String,
    pub description: String,
    pub custom: bool,
    pub created_at: i64,
}

impl DataAttribute {
    pub fn to_json(&self) -> Value {
        let full_name = if self.custom {
            format!("custom_attributes.{}", self.name)
        } else {
            self.name.clone()
        };
        json!({
            "type": "data_attribute",
            "id": self.id,
            "model": self.model,
            "name": self.name,
            "full_name": full_name,
            "label": self.name,
            "description": self.description,
            "data_type": self.data_type,
            "api_writable": true,
            "messenger_writable": false,
            "ui_writable": true,
            "custom": self.custom,
            "archived": false,
            "created_at": self.created_at,
            "updated_at": self.created_at,
        })
    }
}

#[derive(Debug, Default)]
pub struct Workspace {
    pub contacts: BTreeMap<String, Contact>,
    pub companies: BTreeMap<String, Company>,
    pub tags: Vec<Tag>,
    pub events: Vec<DataEvent>,
    pub conversations: BTreeMap<String, Conversation>,
    pub notes: Vec<Note>,
    /// Admin-initiated messages sent, as received.
    pub messages: Vec<Value>,
    pub data_attributes: Vec<DataAttribute>,
    next_id: u64,
}

impl Workspace {
    /// A 24-hex-digit id like Intercom's, unique in this workspace.
    pub fn new_id(&mut self) -> String {
        self.next_id += 1;
        format!("6762f0dd1bb69f9f{:08x}", self.next_id)
    }

    /// A contact that can still be read or written, by Intercom id: deleted ones are 404, merged
    /// ones 410 (turned into 404 for versions before 2.16 by `error::version_compat`).
    pub fn live_contact(&mut self, id: &str) -> Result<&mut Contact, IntercomError> {
        match self.contacts.get_mut(id) {
            Some(contact) if contact.deleted => Err(IntercomError::not_found("User Not Found")),
            Some(contact) => match &contact.merged_into {
                Some(into) => Err(IntercomError::merged(into)),
                None => Ok(contact),
            },
            None => Err(IntercomError::not_found("User Not Found")),
        }
    }

    pub fn custom_attribute(&self, model: &str, name: &str) -> Option<&DataAttribute> {
        self.data_attributes
            .iter()
            .find(|a| a.custom && a.model == model && a.name == name)
    }
}

pub fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}
