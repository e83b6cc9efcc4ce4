//! Contact resolution: the one Intercom contact for a Segment identity, never created twice.
//!
//! Order, per identity and serialised (so concurrent events for one new user create one
//! contact): the identity map in the store; then, for a user (a userId), create at once: one
//! call for a new user, and Intercom's 409 names the contact when one exists with that
//! external_id or user email (it is adopted, unarchived when needed, and updated). Searching
//! first would cost two calls more for every new user, and Intercom's search lags behind its
//! creates anyway. For a lead (no userId), leads may share an email, so a create never
//! conflicts: search by email first, accepting only exactly one match, then create a lead with
//! that email (or, when the workflow says `unmatched: dead_letter`, fail). A remembered id that is gone (404) or merged (410) is
//! forgotten and resolved again. A remembered lead whose visitor turns out to be an existing
//! user (the update answers 409) is merged into that user. Every path ends by updating the
//! contact with the event's fields and remembering every id of the identity.

use crate::contacts::Contact;
use crate::{IntercomClient, IntercomError};
use junction_store::{IdentityKey, Store, StoreError};
use serde_json::{Map, Value};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};

/// The Segment ids of one person.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Identity {
    pub user_id: Option<String>,
    pub anonymous_id: Option<String>,
    pub email: Option<String>,
    /// Without a userId: when the email matches no single contact, fail
    /// ([`ResolveError::Unmatched`]) instead of creating a lead with it.
    pub dead_letter_unmatched: bool,
}

impl Identity {
    fn keys(&self) -> Vec<IdentityKey> {
        let mut keys = Vec::new();
        if let Some(id) = &self.user_id {
            keys.push(IdentityKey::UserId(id.clone()));
        }
        if let Some(id) = &self.anonymous_id {
            keys.push(IdentityKey::AnonymousId(id.clone()));
        }
        if let Some(email) = &self.email {
            keys.push(IdentityKey::Email(email.clone()));
        }
        keys
    }

    /// What serialises resolutions: the strongest id the identity has.
    fn lock_key(&self) -> Option<String> {
        self.keys()
            .first()
            .map(|k| format!("{}:{}", k.kind(), k.value()))
    }

    /// Adds the identity fields Intercom needs on a create or an update to `body`: a userId
    /// gives the contact that external_id and makes it a user (converting a lead), unless the
    /// workflow set the role itself (`lead` or `user`, as Segment's destination honours it).
    fn add_contact_fields(&self, body: &mut Map<String, Value>, creating: bool) {
        let chosen = body
            .get("role")
            .and_then(Value::as_str)
            .is_some_and(|role| role == "lead" || role == "user");
        if !chosen {
            body.remove("role");
        }
        match &self.user_id {
            Some(user_id) => {
                if !chosen {
                    body.insert("role".into(), "user".into());
                }
                body.insert("external_id".into(), user_id.clone().into());
            }
            None if creating && !chosen => {
                body.insert("role".into(), "lead".into());
            }
            None => {}
        }
        if let Some(email) = &self.email {
            body.insert("email".into(), email.clone().into());
        }
    }
}

fn attachment(contact_id: &str, company_id: &str) -> IdentityKey {
    IdentityKey::CompanyAttachment {
        contact_id: contact_id.to_owned(),
        company_id: company_id.to_owned(),
    }
}

/// How a contact was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResolvedBy {
    IdentityMap,
    /// A lead found by its email (the only contact with it).
    Email,
    Created,
    /// Already in Intercom (created by someone else, or before Junction knew it): adopted
    /// from the 409 that answered the create.
    Conflict,
    /// A remembered lead was merged into the user the identity turned out to be.
    Merged,
}

#[derive(Debug, Clone)]
pub struct Resolution {
    pub contact: Contact,
    pub resolved_by: ResolvedBy,
}

#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    #[error(transparent)]
    Intercom(#[from] IntercomError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the identity has no userId, anonymousId or email")]
    NoIdentity,
    /// No userId, and the email matches no contact, or several (the workflow says
    /// `unmatched: dead_letter`).
    #[error(
        "no single Intercom contact has this email (contacts with it: {matches}); the workflow's `unmatched: dead_letter` keeps Junction from creating a lead"
    )]
    Unmatched { matches: usize },
}

pub struct ContactResolver {
    client: IntercomClient,
    store: Arc<dyn Store>,
    /// The Intercom workspace the identity map is kept for.
    workspace: String,
    locks: Mutex<HashMap<String, Weak<tokio::sync::Mutex<()>>>>,
}

impl ContactResolver {
    pub fn new(
        client: IntercomClient,
        store: Arc<dyn Store>,
        workspace: impl Into<String>,
    ) -> Self {
        ContactResolver {
            client,
            store,
            workspace: workspace.into(),
            locks: Mutex::new(HashMap::new()),
        }
    }

    fn lock_for(&self, key: String) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.locks.lock().expect("resolver locks");
        if let Some(lock) = locks.get(&key).and_then(Weak::upgrade) {
            return lock;
        }
        if locks.len() > 10_000 {
            locks.retain(|_, lock| lock.strong_count() > 0);
        }
        let lock = Arc::new(tokio::sync::Mutex::new(()));
        locks.insert(key, Arc::downgrade(&lock));
        lock
    }

    /// Finds or creates the identity's contact and sets `fields` on it.
    pub async fn upsert(
        &self,
        identity: &Identity,
        fields: &Map<String, Value>,
    ) -> Result<Resolution, ResolveError> {
        let lock = self.lock_for(identity.lock_key().ok_or(ResolveError::NoIdentity)?);
        let _serialised = lock.lock().await;
        let (contact, resolved_by) = self.find_or_create(identity, fields).await?;
        self.store
            .identity_remember(&self.workspace, &identity.keys(), &contact.id)
            .await?;
        Ok(Resolution {
            contact,
            resolved_by,
        })
    }

    /// The identity's contact id, for actions that only need to address it: from the identity
    /// map when known (no call), else found or created like [`Self::upsert`] with no fields.
    /// Contacts are created as users when the identity has a userId, as leads otherwise.
    pub async fn contact_id(&self, identity: &Identity) -> Result<String, ResolveError> {
        let lock = self.lock_for(identity.lock_key().ok_or(ResolveError::NoIdentity)?);
        let _serialised = lock.lock().await;
        for key in identity.keys() {
            if let Some(id) = self.store.identity_lookup(&self.workspace, &key).await? {
                return Ok(id);
            }
        }
        let (contact, _) = self.find_or_create(identity, &Map::new()).await?;
        self.store
            .identity_remember(&self.workspace, &identity.keys(), &contact.id)
            .await?;
        Ok(contact.id)
    }

    /// The identity's contact when one is known, without creating anything: the identity map,
    /// else Intercom's user with the userId as external_id. (A deletion must not create the
    /// contact it deletes, nor guess it from an email several contacts may share.)
    pub async fn existing_contact_id(
        &self,
        identity: &Identity,
    ) -> Result<Option<String>, ResolveError> {
        let lock = self.lock_for(identity.lock_key().ok_or(ResolveError::NoIdentity)?);
        let _serialised = lock.lock().await;
        for key in identity.keys() {
            if let Some(id) = self.store.identity_lookup(&self.workspace, &key).await? {
                return Ok(Some(id));
            }
        }
        match &identity.user_id {
            Some(user_id) => Ok(self
                .client
                .find_user_by_external_id(user_id)
                .await?
                .map(|contact| contact.id)),
            None => Ok(None),
        }
    }

    /// Whether the identity map knows this contact is attached to this company (Intercom's
    /// ids): Junction attached it before, and has not detached it since.
    pub async fn is_attached(
        &self,
        contact_id: &str,
        company_id: &str,
    ) -> Result<bool, ResolveError> {
        Ok(self
            .store
            .identity_lookup(&self.workspace, &attachment(contact_id, company_id))
            .await?
            .is_some())
    }

    /// Records that the contact is (or no longer is) attached to the company.
    pub async fn remember_attachment(
        &self,
        contact_id: &str,
        company_id: &str,
        attached: bool,
    ) -> Result<(), ResolveError> {
        let key = attachment(contact_id, company_id);
        if attached {
            self.store
                .identity_remember(&self.workspace, std::slice::from_ref(&key), contact_id)
                .await?;
        } else {
            self.store.identity_unlink(&self.workspace, &key).await?;
        }
        Ok(())
    }

    /// Forgets a contact that turned out to be gone (a call on it answered 404 or 410), so the
    /// next resolution looks again.
    pub async fn forget(&self, contact_id: &str) -> Result<(), ResolveError> {
        Ok(self
            .store
            .identity_forget(&self.workspace, contact_id)
            .await?)
    }

    async fn find_or_create(
        &self,
        identity: &Identity,
        fields: &Map<String, Value>,
    ) -> Result<(Contact, ResolvedBy), ResolveError> {
        for key in identity.keys() {
            let Some(id) = self.store.identity_lookup(&self.workspace, &key).await? else {
                continue;
            };
            match self.update(&id, identity, fields).await {
                Ok(contact) => return Ok((contact, ResolvedBy::IdentityMap)),
                // The remembered contact is a lead, and the user it turned out to be exists
                // already: fold the lead into the user.
                Err(IntercomError::Conflict {
                    existing_id,
                    archived,
                }) if existing_id != id => {
                    if archived {
                        self.client.unarchive_contact(&existing_id).await?;
                    }
                    self.client.merge_lead_into_user(&id, &existing_id).await?;
                    self.store.identity_forget(&self.workspace, &id).await?;
                    let contact = self.update(&existing_id, identity, fields).await?;
                    return Ok((contact, ResolvedBy::Merged));
                }
                Err(IntercomError::Permanent { status: 404, .. }) => {
                    self.store.identity_forget(&self.workspace, &id).await?;
                }
                Err(IntercomError::Gone { canonical }) => {
                    self.store.identity_forget(&self.workspace, &id).await?;
                    if let Some(surviving) = canonical {
                        let contact = self.update(&surviving, identity, fields).await?;
                        return Ok((contact, ResolvedBy::IdentityMap));
                    }
                }
                Err(error) => return Err(error.into()),
            }
            break;
        }
        if identity.user_id.is_none()
            && let Some(email) = &identity.email
        {
            let query = serde_json::json!({"field": "email", "operator": "=", "value": email});
            let page = self.client.search_contacts(&query, 2, None).await?;
            // Several contacts may share an email (leads do); only a single match is safe.
            if page.total_count == 1
                && let Some(found) = page.contacts.first()
            {
                return Ok((
                    self.update(&found.id, identity, fields).await?,
                    ResolvedBy::Email,
                ));
            }
            if identity.dead_letter_unmatched {
                return Err(ResolveError::Unmatched {
                    matches: page.total_count as usize,
                });
            }
        }
        let mut body = fields.clone();
        identity.add_contact_fields(&mut body, true);
        match self.client.create_contact(&Value::Object(body)).await {
            Ok(contact) => {
                // Intercom's webhook about it is Junction's own doing: known as an echo.
                self.store.remember_made("contact", &contact.id).await?;
                Ok((contact, ResolvedBy::Created))
            }
            Err(IntercomError::Conflict {
                existing_id,
                archived,
            }) => {
                if archived {
                    self.client.unarchive_contact(&existing_id).await?;
                }
                Ok((
                    self.update(&existing_id, identity, fields).await?,
                    ResolvedBy::Conflict,
                ))
            }
            Err(error) => Err(error.into()),
        }
    }

    async fn update(
        &self,
        id: &str,
        identity: &Identity,
        fields: &Map<String, Value>,
    ) -> Result<Contact, IntercomError> {
        let mut body = fields.clone();
        identity.add_contact_fields(&mut body, false);
        self.client.update_contact(id, &Value::Object(body)).await
    }
}
