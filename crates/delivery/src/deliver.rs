//! Carrying out one planned action: the Intercom calls (or HTTP request) it stands for, and
//! the verdict delivery acts on — done, try again later, or failed for good.

use junction_flow::action::{Action, PlannedAction, Who};
use junction_intercom::attributes::{AttributeCatalog, AttributePolicy};
use junction_intercom::recorder::{self, CallRecord};
use junction_intercom::{ContactResolver, Identity, IntercomClient, IntercomError, ResolveError};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

/// The Intercom workspace actions go to.
pub struct IntercomTarget {
    pub client: IntercomClient,
    pub resolver: ContactResolver,
    pub catalog: AttributeCatalog,
    pub policy: AttributePolicy,
    /// What a deletion request does to the contact.
    pub deletion: Deletion,
}

/// What a user's deletion request does to their Intercom contact (`intercom.deletion`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Deletion {
    /// `DELETE /contacts/{id}`: gone for good (what Segment's destination does).
    #[default]
    Delete,
    /// `POST /contacts/{id}/archive`: hidden, restorable from Intercom.
    Archive,
}

/// How long a message refused with 404 for a contact that exists is retried (Intercom refuses
/// messages to a contact created moments ago).
pub const NEW_CONTACT_GRACE: std::time::Duration = std::time::Duration::from_secs(600);

/// What delivery should do about a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureClass {
    /// Momentary: try again after a pause.
    Retry,
    /// The workspace's credentials were refused: nothing for it will succeed until they are
    /// fixed, so delivery pauses instead of burning attempts.
    Credentials,
    /// The contact addressed is gone (404, or merged away: 410).
    Gone,
    /// Will not succeed as it is: the dead-letter queue.
    Permanent,
}

/// Why an action did not succeed: the class, a short code (Intercom's error code where it
/// gave one: `not_found`, `parameter_invalid`; else `server_error`, `transport`, …) and the
/// message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub class: FailureClass,
    pub code: String,
    pub message: String,
}

impl Failure {
    pub fn new(class: FailureClass, code: impl Into<String>, message: impl Into<String>) -> Self {
        Failure {
            class,
            code: code.into(),
            message: message.into(),
        }
    }
}

impl From<IntercomError> for Failure {
    fn from(error: IntercomError) -> Self {
        let message = error.to_string();
        match &error {
            IntercomError::Credentials { code, .. } => {
                Failure::new(FailureClass::Credentials, code.clone(), message)
            }
            IntercomError::Gone { .. } => Failure::new(FailureClass::Gone, "gone", message),
            IntercomError::Permanent {
                status: 404, code, ..
            } => Failure::new(FailureClass::Gone, code.clone(), message),
            IntercomError::Retryable {
                status: Some(status),
                ..
            } => Failure::new(
                FailureClass::Retry,
                if *status >= 500 {
                    "server_error".to_owned()
                } else {
                    format!("http_{status}")
                },
                message,
            ),
            IntercomError::Retryable { status: None, .. } => {
                Failure::new(FailureClass::Retry, "transport", message)
            }
            IntercomError::RateLimited { .. } => {
                Failure::new(FailureClass::Retry, "rate_limited", message)
            }
            IntercomError::Conflict { .. } | IntercomError::OtherConflict { .. } => {
                Failure::new(FailureClass::Permanent, "conflict", message)
            }
            IntercomError::Permanent { code, .. } => {
                Failure::new(FailureClass::Permanent, code.clone(), message)
            }
        }
    }
}

impl From<ResolveError> for Failure {
    fn from(error: ResolveError) -> Self {
        match error {
            ResolveError::Intercom(error) => error.into(),
            ResolveError::Store(error) => {
                Failure::new(FailureClass::Retry, "store", format!("store: {error}"))
            }
            ResolveError::NoIdentity => Failure::new(
                FailureClass::Permanent,
                "no_identity",
                ResolveError::NoIdentity.to_string(),
            ),
            unmatched @ ResolveError::Unmatched { .. } => Failure::new(
                FailureClass::Permanent,
                "no_unique_contact",
                unmatched.to_string(),
            ),
        }
    }
}

/// Shadow delivery (`delivery.mode: shadow`, or a workflow's `mode: shadow`): the actions of
/// these workflows (all, when `workflows` is `None`) go to a stand-in workspace — an in-process
/// emulator — instead of Intercom, and their HTTP requests and Segment calls are not sent at
/// all. Each attempt records the requests that would have been sent, and the action's result
/// says shadow, so the run log and `junction shadow report` show them.
pub struct Shadow {
    pub target: IntercomTarget,
    pub workflows: Option<std::collections::HashSet<String>>,
}

impl Shadow {
    fn covers(&self, workflow: &str) -> bool {
        self.workflows.as_ref().is_none_or(|w| w.contains(workflow))
    }
}

pub struct Deliverer {
    intercom: Option<IntercomTarget>,
    shadow: Option<Shadow>,
    /// Where conversations Junction starts are remembered (so their webhooks are known).
    made: Option<std::sync::Arc<dyn junction_store::Store>>,
    segment: Option<crate::segment::SegmentClient>,
    http: reqwest::Client,
    tag_ids: Mutex<HashMap<String, String>>,
}

impl Deliverer {
    pub fn new(intercom: Option<IntercomTarget>) -> Self {
        junction_intercom::install_tls_provider();
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(15))
            .user_agent(concat!("junction/", env!("CARGO_PKG_VERSION")))
            .build()
            .expect("an HTTP client with the process TLS provider");
        Deliverer {
            intercom,
            shadow: None,
            made: None,
            segment: None,
            http,
            tag_ids: Mutex::new(HashMap::new()),
        }
    }

    /// Remembers in `store` the conversations Junction starts: Intercom's webhook about one of
    /// them then triggers nothing (it is Junction's own doing, not a customer's).
    pub fn remembering_made(mut self, store: std::sync::Arc<dyn junction_store::Store>) -> Self {
        self.made = Some(store);
        self
    }

    /// Delivers these workflows' actions in shadow (see [`Shadow`]).
    pub fn with_shadow(mut self, shadow: Shadow) -> Self {
        self.shadow = Some(shadow);
        self
    }

    /// In shadow: the action's requests go to the stand-in workspace (Intercom's) or nowhere
    /// (webhooks, Segment), recorded as the attempt's calls.
    async fn shadow(
        &self,
        shadow: &Shadow,
        planned: &PlannedAction,
        earlier_attempt_ms: Option<i64>,
    ) -> Result<String, Failure> {
        let not_sent = |method: &str, path: String, body: Option<&Value>| {
            recorder::note(CallRecord {
                method: method.to_owned(),
                path,
                status: None,
                request: body.and_then(|b| recorder::excerpt(b.to_string().as_bytes())),
                response: Some("not sent (shadow)".into()),
                ms: 0,
            });
        };
        match &planned.action {
            Action::Http {
                method, url, body, ..
            } => {
                // The host only: a webhook's path is its secret.
                let host = reqwest::Url::parse(url)
                    .ok()
                    .and_then(|u| u.host_str().map(str::to_owned))
                    .unwrap_or_else(|| "?".into());
                not_sent(method, format!("https://{host}/…"), body.as_ref());
                Ok(format!("{method} to {host} not sent"))
            }
            Action::Segment { call, message } => {
                not_sent(
                    "POST",
                    "segment /v1/batch".into(),
                    Some(&Value::Object(message.clone())),
                );
                Ok(format!("Segment {call} not sent"))
            }
            action => {
                let identity = identity_of(&planned.who);
                self.intercom_action(&shadow.target, &identity, action, earlier_attempt_ms)
                    .await
            }
        }
    }

    /// Segment calls (the Intercom → Segment direction) go through this client.
    pub fn with_segment(mut self, segment: crate::segment::SegmentClient) -> Self {
        self.segment = Some(segment);
        self
    }

    /// A Segment call: the message with its type, a `messageId` from the action's id (a replay
    /// is de-duplicated by Segment), and Junction's mark, so that the message coming back
    /// through Segment triggers nothing.
    async fn segment_call(
        &self,
        planned: &PlannedAction,
        call: &str,
        message: &serde_json::Map<String, Value>,
    ) -> Result<String, Failure> {
        let Some(segment) = &self.segment else {
            return Err(Failure::new(
                FailureClass::Credentials,
                "not_configured",
                "segment.outbound is not configured",
            ));
        };
        let mut message = message.clone();
        message.insert("type".into(), call.into());
        message.insert("messageId".into(), planned.id.clone().into());
        let context = message.entry("context").or_insert_with(|| json!({}));
        if let Value::Object(context) = context {
            context.insert(
                "library".into(),
                json!({"name": "junction", "version": env!("CARGO_PKG_VERSION")}),
            );
            context.insert(
                "junction".into(),
                json!({"workflow": planned.workflow, "run": planned.run}),
            );
        }
        segment.send(Value::Object(message)).await?;
        Ok(format!("Segment {call} {}", planned.id))
    }

    /// Carries out the action; `Ok` holds a short summary for the log. `earlier_attempt_ms`: when
    /// an earlier attempt of this action started, if any — an action that creates something
    /// first looks for what that attempt may have created (a dropped connection can hide a
    /// success), so a retry does not create it twice.
    pub async fn deliver(
        &self,
        planned: &PlannedAction,
        earlier_attempt_ms: Option<i64>,
    ) -> Result<String, Failure> {
        if let Some(shadow) = &self.shadow
            && shadow.covers(&planned.workflow)
        {
            let summary = self.shadow(shadow, planned, earlier_attempt_ms).await?;
            return Ok(format!("{}{summary}", junction_store::SHADOW_RESULT_PREFIX));
        }
        if let Action::Http {
            method,
            url,
            headers,
            body,
        } = &planned.action
        {
            return self.http(method, url, headers, body.as_ref()).await;
        }
        if let Action::Segment { call, message } = &planned.action {
            return self.segment_call(planned, call, message).await;
        }
        let Some(intercom) = &self.intercom else {
            // Not a credential failure: pausing would hold back the Segment calls too.
            return Err(Failure::new(
                FailureClass::Retry,
                "not_configured",
                "intercom.token is not configured",
            ));
        };
        let identity = identity_of(&planned.who);
        match self
            .intercom_action(intercom, &identity, &planned.action, earlier_attempt_ms)
            .await
        {
            Err(failure) if failure.class == FailureClass::Gone => {
                self.after_not_found(
                    intercom,
                    &identity,
                    &planned.action,
                    failure,
                    earlier_attempt_ms,
                )
                .await
            }
            other => other,
        }
    }

    /// Whether Intercom accepts the credentials now (`GET /me`): how a paused delivery finds
    /// out it may resume. Without Intercom configured there is nothing to check.
    pub async fn credentials_accepted(&self) -> Result<(), Failure> {
        match &self.intercom {
            Some(target) => target.client.me().await.map(|_| ()).map_err(Failure::from),
            None => Ok(()),
        }
    }

    /// A 404 or 410 on an action: find out whether the contact itself is gone. If it is (deleted,
    /// or merged away), forget it and try once more with the contact resolved again. If it is
    /// not, the 404 was about something else (an admin, say) and is final — except for a message
    /// to a contact created moments ago, which Intercom refuses for a short while (retried for
    /// [`NEW_CONTACT_GRACE`] from the first attempt, then final: not hours of retries).
    async fn after_not_found(
        &self,
        target: &IntercomTarget,
        identity: &Identity,
        action: &Action,
        failure: Failure,
        earlier_attempt_ms: Option<i64>,
    ) -> Result<String, Failure> {
        let id = target.resolver.contact_id(identity).await?;
        let first_attempt =
            earlier_attempt_ms.unwrap_or_else(|| chrono::Utc::now().timestamp_millis());
        let within_grace = chrono::Utc::now().timestamp_millis() - first_attempt
            < NEW_CONTACT_GRACE.as_millis() as i64;
        match target.client.get_contact(&id).await {
            Ok(_) if matches!(action, Action::Message { .. }) && within_grace => Err(Failure::new(
                FailureClass::Retry,
                failure.code,
                format!(
                    "{} (Intercom refuses to message a contact created moments ago; retrying)",
                    failure.message
                ),
            )),
            Ok(_) => Err(Failure {
                class: FailureClass::Permanent,
                ..failure
            }),
            Err(IntercomError::Gone { .. } | IntercomError::Permanent { status: 404, .. }) => {
                target.resolver.forget(&id).await?;
                match self.intercom_action(target, identity, action, None).await {
                    Err(again) if again.class == FailureClass::Gone => Err(Failure {
                        class: FailureClass::Permanent,
                        ..again
                    }),
                    other => other,
                }
            }
            Err(error) => Err(error.into()),
        }
    }

    async fn intercom_action(
        &self,
        target: &IntercomTarget,
        identity: &Identity,
        action: &Action,
        earlier_attempt_ms: Option<i64>,
    ) -> Result<String, Failure> {
        let call = crate::actions::Call {
            deliverer: self,
            target,
            identity,
            earlier_attempt_ms,
        };
        crate::actions::deliver(&call, action).await
    }

    /// Remembers a conversation (or another thing) Junction made, so that Intercom's webhook
    /// about it triggers nothing; a failure to remember is logged, not fatal.
    pub(crate) async fn remember_made(&self, kind: &str, id: &str) {
        if let Some(store) = &self.made
            && let Err(error) = store.remember_made(kind, id).await
        {
            tracing::warn!(%error, kind, "cannot remember what Junction made");
        }
    }

    pub(crate) async fn tag_id(
        &self,
        client: &IntercomClient,
        name: &str,
    ) -> Result<String, Failure> {
        if let Some(id) = self.tag_ids.lock().expect("tag cache").get(name) {
            return Ok(id.clone());
        }
        let id = client.tag_id(name).await?;
        self.tag_ids
            .lock()
            .expect("tag cache")
            .insert(name.to_owned(), id.clone());
        Ok(id)
    }

    /// An alert or any other webhook. The URL is never logged or recorded: webhook URLs (Slack's
    /// among them) are credentials.
    async fn http(
        &self,
        method: &str,
        url: &str,
        headers: &std::collections::BTreeMap<String, String>,
        body: Option<&Value>,
    ) -> Result<String, Failure> {
        let method = reqwest::Method::from_bytes(method.as_bytes()).map_err(|_| {
            Failure::new(
                FailureClass::Permanent,
                "bad_method",
                format!("bad method {method}"),
            )
        })?;
        let mut request = self.http.request(method.clone(), url);
        for (name, value) in headers {
            request = request.header(name, value);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        let host = reqwest::Url::parse(url)
            .ok()
            .and_then(|u| u.host_str().map(str::to_owned))
            .unwrap_or_else(|| "?".into());
        let started = std::time::Instant::now();
        let mut call = CallRecord {
            method: method.to_string(),
            // The host only: a webhook's path is its secret.
            path: format!("https://{host}/…"),
            status: None,
            request: body.and_then(|b| recorder::excerpt(b.to_string().as_bytes())),
            response: None,
            ms: 0,
        };
        let sent = request.send().await;
        call.ms = started.elapsed().as_millis() as u64;
        let response = match sent {
            Ok(response) => response,
            Err(e) => {
                // reqwest's message would include the URL.
                let kind = if e.is_timeout() {
                    "timed out"
                } else if e.is_connect() {
                    "could not connect"
                } else {
                    "failed"
                };
                call.response = Some(kind.into());
                recorder::note(call);
                return Err(Failure::new(
                    FailureClass::Retry,
                    "transport",
                    format!("{method} to {host} {kind}"),
                ));
            }
        };
        let status = response.status();
        call.status = Some(status.as_u16());
        recorder::note(call);
        let code = format!("http_{}", status.as_u16());
        let summary = format!("{method} to {host}: {status}");
        match status.as_u16() {
            200..=299 => Ok(summary),
            408 | 429 | 500..=599 => Err(Failure::new(FailureClass::Retry, code, summary)),
            _ => Err(Failure::new(FailureClass::Permanent, code, summary)),
        }
    }
}

fn identity_of(who: &Who) -> Identity {
    Identity {
        user_id: who.user_id.clone(),
        anonymous_id: who.anonymous_id.clone(),
        email: who.email.clone(),
        dead_letter_unmatched: who.dead_letter_unmatched,
    }
}
