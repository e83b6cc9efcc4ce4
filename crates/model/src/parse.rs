//! Request bodies of the Tracking API and the Webhooks destination, turned into validated
//! messages or precise refusals.
//!
//! Two levels of refusal, because Segment's clients treat them differently:
//! - a [`RequestError`] refuses the whole request (too large, not JSON, no `batch` array): the
//!   server answers 400 and stores nothing;
//! - a [`MessageError`] refuses one message, which lands in [`Envelope::rejected`]: a
//!   single-message call answers 400 with it, a batch stores the valid messages; either way the
//!   refused message is kept, with its reason, in the rejected log.

use crate::exact;
use crate::limits::{
    MAX_BATCH_BYTES, MAX_BATCH_MESSAGES, MAX_EXACT_JSON_INTEGER, MAX_ID_CHARS, MAX_MESSAGE_BYTES,
    MAX_MESSAGE_ID_CHARS,
};
use crate::message::{Message, MessageType};
use crate::timestamp;
use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value};
use std::fmt;

/// Webhooks (Actions) batches hold up to 4,000 events (Segment's documented maximum), larger
/// than a Tracking API batch.
pub const MAX_WEBHOOK_MESSAGES: usize = 4_000;
/// Body limit of a webhook array: 4,000 events of a few KB each.
pub const MAX_WEBHOOK_BYTES: usize = 16 * 1024 * 1024;

/// Why one message was refused: a machine code, the field at fault and the rule it broke.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageError {
    /// `message_too_large` or `invalid_message`.
    pub code: &'static str,
    /// The offending field (`userId`, `event`, …), or `message` for the whole message.
    pub field: String,
    /// The rule, in words a sender can act on.
    pub rule: String,
}

impl MessageError {
    fn invalid(field: &str, rule: impl Into<String>) -> Self {
        MessageError {
            code: "invalid_message",
            field: field.to_owned(),
            rule: rule.into(),
        }
    }
}

impl fmt::Display for MessageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.rule)
    }
}

impl std::error::Error for MessageError {}

/// A refused message, kept with its position in the request and its text so that nothing is
/// dropped silently.
#[derive(Debug, Clone, PartialEq)]
pub struct RejectedMessage {
    /// Position in the batch (0 for a single-message call).
    pub index: usize,
    /// The declared type, when the message had a readable one.
    pub kind: Option<String>,
    pub message_id: Option<String>,
    pub error: MessageError,
    /// The message as received (JSON text), with any `writeKey` removed.
    pub raw: String,
}

/// A refusal of the whole request.
#[derive(Debug, Clone, PartialEq)]
pub enum RequestError {
    /// The body exceeds a size limit.
    TooLarge {
        field: &'static str,
        limit: usize,
        what: &'static str,
    },
    /// More messages than a batch may hold.
    TooManyMessages { count: usize, limit: usize },
    /// Not JSON; the position is 1-based.
    MalformedJson {
        line: usize,
        column: usize,
        detail: String,
    },
    /// JSON of the wrong shape.
    InvalidBody { field: &'static str, rule: String },
}

impl RequestError {
    pub fn code(&self) -> &'static str {
        match self {
            RequestError::TooLarge { .. } => "payload_too_large",
            RequestError::TooManyMessages { .. } => "batch_too_large",
            RequestError::MalformedJson { .. } => "malformed_json",
            RequestError::InvalidBody { .. } => "invalid_request",
        }
    }

    pub fn field(&self) -> &str {
        match self {
            RequestError::TooLarge { field, .. } => field,
            RequestError::TooManyMessages { .. } => "batch",
            RequestError::MalformedJson { .. } => "body",
            RequestError::InvalidBody { field, .. } => field,
        }
    }

    /// The numeric limit that was exceeded, when there is one.
    pub fn limit(&self) -> Option<usize> {
        match self {
            RequestError::TooLarge { limit, .. } | RequestError::TooManyMessages { limit, .. } => {
                Some(*limit)
            }
            _ => None,
        }
    }
}

impl fmt::Display for RequestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RequestError::TooLarge { limit, what, .. } => {
                write!(f, "{what} exceeds the limit of {limit} bytes")
            }
            RequestError::TooManyMessages { count, limit } => write!(
                f,
                "batch holds {count} messages, over the limit of {limit} messages per batch"
            ),
            RequestError::MalformedJson {
                line,
                column,
                detail,
            } => write!(
                f,
                "malformed JSON at line {line}, column {column}: {detail}"
            ),
            RequestError::InvalidBody { field, rule } => write!(f, "{field}: {rule}"),
        }
    }
}

impl std::error::Error for RequestError {}

/// What a request carried: the write key found in the body, if any, its valid messages and
/// its refused ones.
#[derive(Debug, Clone, Default)]
pub struct Envelope {
    pub write_key: Option<String>,
    pub messages: Vec<Message>,
    pub rejected: Vec<RejectedMessage>,
}

/// Fields a batch shares with each of its messages.
#[derive(Default)]
struct SharedFields {
    context: Option<Map<String, Value>>,
    integrations: Option<Map<String, Value>>,
    sent_at: Option<Value>,
}

impl SharedFields {
    /// The message fields a batch's shared fields are merged into (rewritten, so their text
    /// as sent cannot be kept).
    fn merged_fields(&self) -> Vec<&'static str> {
        let mut merged = Vec::new();
        if self.context.is_some() {
            merged.push("context");
        }
        if self.integrations.is_some() {
            merged.push("integrations");
        }
        merged
    }
}

/// `POST /v1/{identify,track,…}`: one message whose type comes from the path.
pub fn parse_single(
    body: &[u8],
    kind: MessageType,
    received_at: DateTime<Utc>,
) -> Result<Envelope, RequestError> {
    if body.len() > MAX_MESSAGE_BYTES {
        return Err(RequestError::TooLarge {
            field: "message",
            limit: MAX_MESSAGE_BYTES,
            what: "message",
        });
    }
    let mut object = match serde_json::from_slice::<Value>(body).map_err(malformed)? {
        Value::Object(object) => object,
        _ => {
            return Err(RequestError::InvalidBody {
                field: "body",
                rule: "must be a JSON object (one Segment message)".into(),
            });
        }
    };
    let write_key = take_write_key(&mut object);
    // The path names the call; a conflicting `type` in the body loses, as at Segment.
    object.insert("type".into(), Value::String(kind.as_str().into()));
    Ok(single_envelope(write_key, object, received_at, body))
}

#[derive(Deserialize)]
struct BatchBody<'a> {
    #[serde(borrow)]
    batch: Option<Vec<&'a RawValue>>,
    context: Option<Map<String, Value>>,
    integrations: Option<Map<String, Value>>,
    #[serde(rename = "writeKey")]
    write_key: Option<String>,
    #[serde(rename = "sentAt")]
    sent_at: Option<Value>,
}

/// `POST /v1/batch` and `/v1/import`: `{"batch": [...], "context"?, "integrations"?, "writeKey"?, "sentAt"?}`.
pub fn parse_batch(body: &[u8], received_at: DateTime<Utc>) -> Result<Envelope, RequestError> {
    if body.len() > MAX_BATCH_BYTES {
        return Err(RequestError::TooLarge {
            field: "batch",
            limit: MAX_BATCH_BYTES,
            what: "batch request body",
        });
    }
    let parsed: BatchBody = serde_json::from_slice(body).map_err(|e| match e.classify() {
        serde_json::error::Category::Data => RequestError::InvalidBody {
            field: "body",
            rule: format!(
                "expected {{\"batch\": [messages…]}} with object context/integrations and string writeKey ({e})"
            ),
        },
        _ => malformed(e),
    })?;
    let Some(items) = parsed.batch else {
        return Err(RequestError::InvalidBody {
            field: "batch",
            rule: "required: an array of messages".into(),
        });
    };
    let shared = SharedFields {
        context: parsed.context,
        integrations: parsed.integrations,
        sent_at: parsed.sent_at,
    };
    let mut envelope = parse_items(&items, MAX_BATCH_MESSAGES, &shared, received_at)?;
    envelope.write_key = parsed.write_key.filter(|k| !k.is_empty());
    Ok(envelope)
}

/// `POST /hooks/segment`: one message, or a JSON array of them (Webhooks (Actions) batch mode).
pub fn parse_webhook(body: &[u8], received_at: DateTime<Utc>) -> Result<Envelope, RequestError> {
    if is_json_array(body) {
        if body.len() > MAX_WEBHOOK_BYTES {
            return Err(RequestError::TooLarge {
                field: "body",
                limit: MAX_WEBHOOK_BYTES,
                what: "webhook batch body",
            });
        }
        let items: Vec<&RawValue> = serde_json::from_slice(body).map_err(malformed)?;
        return parse_items(
            &items,
            MAX_WEBHOOK_MESSAGES,
            &SharedFields::default(),
            received_at,
        );
    }
    if body.len() > MAX_MESSAGE_BYTES {
        return Err(RequestError::TooLarge {
            field: "message",
            limit: MAX_MESSAGE_BYTES,
            what: "message",
        });
    }
    let object = match serde_json::from_slice::<Value>(body).map_err(malformed)? {
        Value::Object(object) => object,
        _ => {
            return Err(RequestError::InvalidBody {
                field: "body",
                rule: "must be a Segment message object or an array of them".into(),
            });
        }
    };
    Ok(single_envelope(None, object, received_at, body))
}

/// The envelope of a one-message request: the message, or its refusal.
fn single_envelope(
    write_key: Option<String>,
    object: Map<String, Value>,
    received_at: DateTime<Utc>,
    text: &[u8],
) -> Envelope {
    let (messages, rejected) = match validate(object, &SharedFields::default(), received_at) {
        Ok(mut message) => {
            message.exact = exact::exact_fields(&String::from_utf8_lossy(text), &[]);
            (vec![message], Vec::new())
        }
        Err((error, object)) => (Vec::new(), vec![rejection(0, error, &object)]),
    };
    Envelope {
        write_key,
        messages,
        rejected,
    }
}

/// The first element of a JSON array body, as its exact bytes (Segment signs only that element
/// of a webhook batch), and how many elements the array holds. `None` when the body is not a
/// non-empty array.
pub fn first_array_element(body: &[u8]) -> Option<(&str, usize)> {
    if !is_json_array(body) {
        return None;
    }
    let items: Vec<&RawValue> = serde_json::from_slice(body).ok()?;
    items.first().map(|raw| (raw.get(), items.len()))
}

fn is_json_array(body: &[u8]) -> bool {
    body.iter()
        .find(|b| !b.is_ascii_whitespace())
        .is_some_and(|b| *b == b'[')
}

fn parse_items(
    items: &[&RawValue],
    max_messages: usize,
    shared: &SharedFields,
    received_at: DateTime<Utc>,
) -> Result<Envelope, RequestError> {
    if items.len() > max_messages {
        return Err(RequestError::TooManyMessages {
            count: items.len(),
            limit: max_messages,
        });
    }
    let mut envelope = Envelope {
        write_key: None,
        messages: Vec::with_capacity(items.len()),
        rejected: Vec::new(),
    };
    let merged_fields = shared.merged_fields();
    for (index, raw) in items.iter().enumerate() {
        let text = raw.get();
        if text.len() > MAX_MESSAGE_BYTES {
            envelope.rejected.push(RejectedMessage {
                index,
                kind: None,
                message_id: None,
                error: MessageError {
                    code: "message_too_large",
                    field: "message".into(),
                    rule: format!(
                        "message is {} bytes, over the limit of {MAX_MESSAGE_BYTES} bytes per message",
                        text.len()
                    ),
                },
                raw: truncate(text, MAX_MESSAGE_BYTES).to_owned(),
            });
            continue;
        }
        let object = match serde_json::from_str::<Value>(text) {
            Ok(Value::Object(mut object)) => {
                take_write_key(&mut object);
                object
            }
            // RawValue already checked the syntax, so the shape or the depth is wrong here.
            other => {
                let rule = match other {
                    Err(e) if is_too_deep(&e) => TOO_DEEP.to_owned(),
                    _ => "must be a JSON object".to_owned(),
                };
                envelope.rejected.push(RejectedMessage {
                    index,
                    kind: None,
                    message_id: None,
                    error: MessageError::invalid("message", rule),
                    raw: text.to_owned(),
                });
                continue;
            }
        };
        match validate(object, shared, received_at) {
            Ok(mut message) => {
                message.exact = exact::exact_fields(text, &merged_fields);
                envelope.messages.push(message)
            }
            Err((error, object)) => envelope.rejected.push(rejection(index, error, &object)),
        }
    }
    Ok(envelope)
}

/// serde_json stops reading at 128 levels of nesting (which keeps a hostile body from
/// exhausting the stack); Segment messages never come close.
const TOO_DEEP: &str = "nested more than 128 levels deep (arrays and objects)";

fn is_too_deep(e: &serde_json::Error) -> bool {
    e.to_string().starts_with("recursion limit exceeded")
}

fn malformed(e: serde_json::Error) -> RequestError {
    if is_too_deep(&e) {
        return RequestError::InvalidBody {
            field: "body",
            rule: format!("{TOO_DEEP} (line {}, column {})", e.line(), e.column()),
        };
    }
    let detail = e.to_string();
    // serde_json appends " at line L column C"; the position is reported separately.
    let detail = detail
        .rsplit_once(" at line ")
        .map_or(detail.as_str(), |(head, _)| head)
        .to_owned();
    RequestError::MalformedJson {
        line: e.line(),
        column: e.column(),
        detail,
    }
}

fn take_write_key(object: &mut Map<String, Value>) -> Option<String> {
    match object.remove("writeKey") {
        Some(Value::String(key)) if !key.is_empty() => Some(key),
        _ => None,
    }
}

fn rejection(index: usize, error: MessageError, object: &Map<String, Value>) -> RejectedMessage {
    RejectedMessage {
        index,
        kind: object
            .get("type")
            .and_then(Value::as_str)
            .map(str::to_owned),
        message_id: object
            .get("messageId")
            .and_then(Value::as_str)
            .map(str::to_owned),
        error,
        raw: serde_json::to_string(object).unwrap_or_default(),
    }
}

fn truncate(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// Checks one message against the Spec and normalises it. On refusal the object is handed back
/// so the rejected log can keep it.
fn validate(
    mut object: Map<String, Value>,
    shared: &SharedFields,
    received_at: DateTime<Utc>,
) -> Result<Message, (MessageError, Map<String, Value>)> {
    match check(&mut object, shared, received_at) {
        Ok(fields) => Ok(Message {
            kind: fields.kind,
            message_id: fields.message_id,
            user_id: fields.user_id,
            anonymous_id: fields.anonymous_id,
            event: fields.event,
            timestamp: fields.timestamp,
            received_at,
            body: object,
            exact: Vec::new(),
        }),
        Err(error) => Err((error, object)),
    }
}

struct CheckedFields {
    kind: MessageType,
    message_id: String,
    user_id: Option<String>,
    anonymous_id: Option<String>,
    event: Option<String>,
    timestamp: DateTime<Utc>,
}

fn check(
    object: &mut Map<String, Value>,
    shared: &SharedFields,
    received_at: DateTime<Utc>,
) -> Result<CheckedFields, MessageError> {
    let kind = match object.get("type") {
        None | Some(Value::Null) => {
            return Err(MessageError::invalid(
                "type",
                "required: one of identify, track, page, screen, group, alias, delete",
            ));
        }
        Some(Value::String(name)) => name
            .parse::<MessageType>()
            .map_err(|rule| MessageError::invalid("type", rule))?,
        Some(_) => return Err(MessageError::invalid("type", "must be a string")),
    };
    let user_id = optional_id(object, "userId")?;
    let anonymous_id = optional_id(object, "anonymousId")?;
    if user_id.is_none() && anonymous_id.is_none() {
        return Err(MessageError::invalid(
            "userId",
            "required when there is no anonymousId",
        ));
    }
    let event = match kind {
        MessageType::Track => match object.get("event") {
            Some(Value::String(name)) if !name.is_empty() => Some(name.clone()),
            Some(Value::String(_)) => {
                return Err(MessageError::invalid("event", "must not be empty"));
            }
            None | Some(Value::Null) => {
                return Err(MessageError::invalid("event", "required for a track call"));
            }
            Some(_) => return Err(MessageError::invalid("event", "must be a string")),
        },
        _ => None,
    };
    if kind == MessageType::Group && optional_id(object, "groupId")?.is_none() {
        return Err(MessageError::invalid(
            "groupId",
            "required for a group call",
        ));
    }
    if kind == MessageType::Delete && user_id.is_none() {
        return Err(MessageError::invalid(
            "userId",
            "required for a delete call (the user to delete)",
        ));
    }
    if kind == MessageType::Alias && optional_id(object, "previousId")?.is_none() {
        return Err(MessageError::invalid(
            "previousId",
            "required for an alias call",
        ));
    }
    for field in ["traits", "properties", "context", "integrations"] {
        if let Some(value) = object.get(field)
            && !(value.is_object() || value.is_null())
        {
            return Err(MessageError::invalid(field, "must be an object"));
        }
    }
    let timestamp = optional_time(object, "timestamp")?;
    let original_timestamp = optional_time(object, "originalTimestamp")?;
    optional_time(object, "sentAt")?;
    let message_id = match object.get("messageId") {
        None | Some(Value::Null) => {
            let generated = format!("junction-{}", uuid::Uuid::now_v7());
            object.insert("messageId".into(), Value::String(generated.clone()));
            generated
        }
        Some(Value::String(id)) if id.is_empty() => {
            return Err(MessageError::invalid("messageId", "must not be empty"));
        }
        Some(Value::String(id)) if id.chars().count() > MAX_MESSAGE_ID_CHARS => {
            return Err(MessageError::invalid(
                "messageId",
                format!("longer than {MAX_MESSAGE_ID_CHARS} characters"),
            ));
        }
        Some(Value::String(id)) => id.clone(),
        Some(_) => return Err(MessageError::invalid("messageId", "must be a string")),
    };

    merge_shared(object, "context", shared.context.as_ref());
    merge_shared(object, "integrations", shared.integrations.as_ref());
    if let Some(sent_at) = &shared.sent_at
        && matches!(object.get("sentAt"), None | Some(Value::Null))
    {
        object.insert("sentAt".into(), sent_at.clone());
    }
    object.insert(
        "receivedAt".into(),
        Value::String(timestamp::format(received_at)),
    );

    Ok(CheckedFields {
        kind,
        message_id,
        user_id,
        anonymous_id,
        event,
        timestamp: timestamp.or(original_timestamp).unwrap_or(received_at),
    })
}

/// A date-time field that may be absent or null.
fn optional_time(
    object: &Map<String, Value>,
    field: &str,
) -> Result<Option<DateTime<Utc>>, MessageError> {
    match object.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(text)) => timestamp::parse(text).map(Some).ok_or_else(|| {
            MessageError::invalid(
                field,
                format!("{text:?} is not an ISO-8601 date-time with an offset"),
            )
        }),
        Some(_) => Err(MessageError::invalid(
            field,
            "must be an ISO-8601 date-time string",
        )),
    }
}

/// An id field that may be absent, null, a string or a number (analytics.js allows numeric
/// ids; Segment treats them as strings, and so does Junction: a numeric id is rewritten as its
/// string in the stored body). Empty strings count as absent.
///
/// Ids end up in Intercom (`external_id`, `company_id`) and in its URLs, so an id Intercom
/// cannot hold exactly is refused here, where the sender hears about it, rather than failing
/// every delivery later: blank, control characters, longer than [`MAX_ID_CHARS`], `.` or `..`
/// (no URL can address them as a path segment), or a number that JSON cannot carry exactly.
fn optional_id(
    object: &mut Map<String, Value>,
    field: &str,
) -> Result<Option<String>, MessageError> {
    let id = match object.get(field) {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::String(id)) if id.is_empty() => return Ok(None),
        Some(Value::String(id)) => id.clone(),
        Some(Value::Number(n)) => {
            let exact = match (n.as_u64(), n.as_i64()) {
                (Some(u), _) => u <= MAX_EXACT_JSON_INTEGER,
                (None, Some(i)) => i.unsigned_abs() <= MAX_EXACT_JSON_INTEGER,
                (None, None) => false,
            };
            if !exact {
                return Err(MessageError::invalid(
                    field,
                    format!(
                        "the number {n} cannot be held exactly (only integers up to 2^53 can); send the id as a string"
                    ),
                ));
            }
            let id = n.to_string();
            object.insert(field.into(), Value::String(id.clone()));
            id
        }
        Some(_) => return Err(MessageError::invalid(field, "must be a string")),
    };
    check_id(field, &id)?;
    Ok(Some(id))
}

/// The rules an id must meet to be sent to Intercom exactly (see [`optional_id`]).
fn check_id(field: &str, id: &str) -> Result<(), MessageError> {
    if id.trim().is_empty() {
        return Err(MessageError::invalid(field, "must not be blank"));
    }
    if id.chars().any(char::is_control) {
        return Err(MessageError::invalid(
            field,
            "must not contain control characters",
        ));
    }
    if id.chars().count() > MAX_ID_CHARS {
        return Err(MessageError::invalid(
            field,
            format!("longer than {MAX_ID_CHARS} characters"),
        ));
    }
    if id == "." || id == ".." {
        return Err(MessageError::invalid(
            field,
            "must not be \".\" or \"..\" (no URL can address it)",
        ));
    }
    Ok(())
}

/// Merges a batch-level object into the message's own: the message's keys win, objects merge
/// recursively.
fn merge_shared(object: &mut Map<String, Value>, field: &str, shared: Option<&Map<String, Value>>) {
    let Some(shared) = shared else { return };
    match object.get_mut(field) {
        Some(Value::Object(own)) => merge_missing(own, shared),
        _ => {
            object.insert(field.into(), Value::Object(shared.clone()));
        }
    }
}

fn merge_missing(own: &mut Map<String, Value>, shared: &Map<String, Value>) {
    for (key, value) in shared {
        match (own.get_mut(key), value) {
            (Some(Value::Object(inner)), Value::Object(shared_inner)) => {
                merge_missing(inner, shared_inner)
            }
            (Some(_), _) => {}
            (None, _) => {
                own.insert(key.clone(), value.clone());
            }
        }
    }
}

#[cfg(test)]
mod tests;
