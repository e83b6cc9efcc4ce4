//! Attribute safety: turning a Segment profile's traits into fields Intercom accepts.
//!
//! Intercom refuses a contact write that carries an unknown custom attribute, a value of the
//! wrong type, or a nested value, and a workspace holds at most 250 custom attributes. So,
//! before writing: reserved Segment traits go to Intercom's standard fields; every other trait
//! is coerced to its attribute's declared type; unknown attributes are created (with a type
//! inferred from the value, within the limit) or dropped, as configured; nested values are
//! flattened to dotted names or JSON-encoded; nulls are skipped or clear the attribute. Nothing
//! is dropped silently: every dropped trait comes back with its reason.

use crate::timestamps::unix_seconds;
use serde_json::{Map, Value};
use std::collections::BTreeMap;

/// Intercom's limit on custom data attributes per workspace (archived ones count too).
pub const MAX_CUSTOM_ATTRIBUTES: usize = 250;

/// An attribute's declared type, as `GET /data_attributes` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttributeType {
    String,
    Integer,
    Float,
    Boolean,
    /// Unix seconds.
    Date,
}

impl AttributeType {
    pub fn parse(data_type: &str) -> Option<AttributeType> {
        Some(match data_type {
            "string" => AttributeType::String,
            "integer" => AttributeType::Integer,
            "float" => AttributeType::Float,
            "boolean" => AttributeType::Boolean,
            "date" | "datetime" => AttributeType::Date,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            AttributeType::String => "string",
            AttributeType::Integer => "integer",
            AttributeType::Float => "float",
            AttributeType::Boolean => "boolean",
            AttributeType::Date => "date",
        }
    }
}

/// What to do with a trait that has no custom attribute yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnknownAttributes {
    Create,
    Drop,
}

/// What to do with objects and arrays, which Intercom attributes cannot hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NestedValues {
    /// `{"address": {"city": "X"}}` → `address_city = "X"`; arrays → `tags_0`, `tags_1`…
    /// (Intercom refuses dots in attribute names.)
    Flatten,
    /// The value as a JSON string.
    JsonString,
}

/// What a null trait means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NullValues {
    Skip,
    Clear,
}

#[derive(Debug, Clone, Copy)]
pub struct AttributePolicy {
    pub unknown: UnknownAttributes,
    pub nested: NestedValues,
    pub nulls: NullValues,
}

impl Default for AttributePolicy {
    fn default() -> Self {
        AttributePolicy {
            unknown: UnknownAttributes::Create,
            nested: NestedValues::Flatten,
            nulls: NullValues::Skip,
        }
    }
}

/// The contact fields to send, the attributes to create first, and what was left out.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PreparedContact {
    /// Standard fields plus `custom_attributes`.
    pub fields: Map<String, Value>,
    /// Attributes to create (`POST /data_attributes`) before sending `fields`.
    pub to_create: Vec<(String, AttributeType)>,
    /// Traits left out, with the reason.
    pub dropped: Vec<(String, String)>,
}

/// Segment's reserved traits that map to Intercom's standard contact fields. `company` and
/// `companies` are handled by the company steps, `id`/`userId` by resolution.
const HANDLED_ELSEWHERE: [&str; 5] = ["company", "companies", "id", "userId", "user_id"];

/// Identity-verification values (an HMAC of the user's id under the workspace's secret): they
/// prove who a Messenger user is, and written to an attribute anyone in the workspace could
/// read them. Never sent, as Segment's destination never sends them.
const NEVER_SENT: [&str; 2] = ["user_hash", "userHash"];

pub fn prepare_contact(
    traits: &Map<String, Value>,
    known: &BTreeMap<String, AttributeType>,
    policy: AttributePolicy,
) -> PreparedContact {
    let mut prepared = PreparedContact::default();
    let mut custom = Map::new();
    let mut flat = Vec::new();
    for (name, value) in traits {
        if HANDLED_ELSEWHERE.contains(&name.as_str()) {
            continue;
        }
        if NEVER_SENT.contains(&name.as_str()) {
            prepared.dropped.push((
                name.clone(),
                "identity-verification values are never sent to Intercom".into(),
            ));
            continue;
        }
        if standard_field(name, value, &mut prepared) {
            continue;
        }
        match (value, policy.nested) {
            (Value::Object(_) | Value::Array(_), NestedValues::Flatten) => {
                flatten(name, value, &mut flat)
            }
            (Value::Object(_) | Value::Array(_), NestedValues::JsonString) => {
                flat.push((name.clone(), Value::String(value.to_string())))
            }
            _ => flat.push((name.clone(), value.clone())),
        }
    }
    // Segment's firstName + lastName make `name` when no name was given.
    if !prepared.fields.contains_key("name") {
        let part = |keys: [&str; 2]| {
            keys.iter()
                .find_map(|k| traits.get(*k).and_then(Value::as_str))
                .map(str::to_owned)
        };
        let full: Vec<String> = [
            part(["firstName", "first_name"]),
            part(["lastName", "last_name"]),
        ]
        .into_iter()
        .flatten()
        .collect();
        if !full.is_empty() {
            prepared.fields.insert("name".into(), full.join(" ").into());
        }
    }
    let mut budget = MAX_CUSTOM_ATTRIBUTES.saturating_sub(known.len());
    for (name, value) in flat {
        if ["firstName", "first_name", "lastName", "last_name"].contains(&name.as_str())
            && !known.contains_key(&name)
        {
            continue; // folded into `name` above
        }
        if value.is_null() {
            match policy.nulls {
                NullValues::Skip => {}
                NullValues::Clear if known.contains_key(&name) => {
                    custom.insert(name, Value::Null);
                }
                NullValues::Clear => {}
            }
            continue;
        }
        let declared = match known.get(&name) {
            Some(declared) => *declared,
            None => match policy.unknown {
                UnknownAttributes::Drop => {
                    prepared.dropped.push((
                        name,
                        "no such custom attribute in Intercom (unknown attributes are dropped)"
                            .into(),
                    ));
                    continue;
                }
                UnknownAttributes::Create if budget == 0 => {
                    prepared.dropped.push((name, format!("the workspace has reached Intercom's {MAX_CUSTOM_ATTRIBUTES} custom attributes")));
                    continue;
                }
                UnknownAttributes::Create => {
                    let inferred = infer(&value);
                    budget -= 1;
                    prepared.to_create.push((name.clone(), inferred));
                    inferred
                }
            },
        };
        match coerce(&value, declared) {
            Some(coerced) => {
                custom.insert(name, coerced);
            }
            None => prepared.dropped.push((
                name,
                format!("{value} cannot be made a {}", declared.as_str()),
            )),
        }
    }
    if !custom.is_empty() {
        prepared
            .fields
            .insert("custom_attributes".into(), Value::Object(custom));
    }
    prepared
}

/// Maps a reserved trait to Intercom's field; false when the trait is not a standard one.
fn standard_field(name: &str, value: &Value, prepared: &mut PreparedContact) -> bool {
    let target = match name {
        "email" => "email",
        "name" => "name",
        "phone" => "phone",
        "avatar" => "avatar",
        "createdAt" | "created_at" => "signed_up_at",
        "unsubscribedFromEmails" | "unsubscribed_from_emails" => "unsubscribed_from_emails",
        _ => return false,
    };
    let converted = match target {
        "signed_up_at" => unix_seconds(value).map(Value::from),
        "unsubscribed_from_emails" => value.as_bool().map(Value::Bool),
        _ => value
            .as_str()
            .filter(|s| !s.is_empty())
            .map(|s| Value::String(s.to_owned())),
    };
    match converted {
        Some(value) => {
            prepared.fields.insert(target.into(), value);
        }
        None if value.is_null() => {}
        None => prepared
            .dropped
            .push((name.into(), format!("{value} is not a valid {target}"))),
    }
    true
}

fn flatten(prefix: &str, value: &Value, out: &mut Vec<(String, Value)>) {
    match value {
        Value::Object(object) => {
            for (key, inner) in object {
                flatten(&format!("{prefix}_{key}"), inner, out);
            }
        }
        Value::Array(items) => {
            for (index, inner) in items.iter().enumerate() {
                flatten(&format!("{prefix}_{index}"), inner, out);
            }
        }
        scalar => out.push((prefix.to_owned(), scalar.clone())),
    }
}

/// The type a new attribute gets from its first value.
fn infer(value: &Value) -> AttributeType {
    match value {
        Value::Bool(_) => AttributeType::Boolean,
        Value::Number(n) if n.is_i64() || n.is_u64() => AttributeType::Integer,
        Value::Number(_) => AttributeType::Float,
        Value::String(s) if crate::timestamps::parse_iso(s).is_some() => AttributeType::Date,
        _ => AttributeType::String,
    }
}

/// The value in the declared type, when it can be said without inventing anything.
fn coerce(value: &Value, declared: AttributeType) -> Option<Value> {
    match declared {
        AttributeType::String => match value {
            Value::String(s) => Some(Value::String(s.clone())),
            Value::Number(n) => Some(Value::String(n.to_string())),
            Value::Bool(b) => Some(Value::String(b.to_string())),
            _ => None,
        },
        AttributeType::Integer => match value {
            Value::Number(n) if n.is_i64() => Some(value.clone()),
            Value::Number(n) => n
                .as_f64()
                .filter(|f| f.fract() == 0.0 && f.abs() < 9.0e15)
                .map(|f| Value::from(f as i64)),
            Value::String(s) => s.trim().parse::<i64>().ok().map(Value::from),
            Value::Bool(b) => Some(Value::from(i64::from(*b))),
            _ => None,
        },
        AttributeType::Float => match value {
            // An integer sent to a float attribute goes as a float (3 → 3.0).
            Value::Number(n) if n.is_i64() || n.is_u64() => n.as_f64().map(Value::from),
            Value::Number(_) => Some(value.clone()),
            Value::String(s) => s
                .trim()
                .parse::<f64>()
                .ok()
                .filter(|f| f.is_finite())
                .map(Value::from),
            _ => None,
        },
        AttributeType::Boolean => match value {
            Value::Bool(_) => Some(value.clone()),
            Value::String(s) => match s.trim().to_ascii_lowercase().as_str() {
                "true" | "yes" | "1" => Some(Value::Bool(true)),
                "false" | "no" | "0" => Some(Value::Bool(false)),
                _ => None,
            },
            Value::Number(n) => match n.as_i64() {
                Some(0) => Some(Value::Bool(false)),
                Some(1) => Some(Value::Bool(true)),
                _ => None,
            },
            _ => None,
        },
        AttributeType::Date => unix_seconds(value).map(Value::from),
    }
}

/// The workspace's contact attributes, cached and refreshed when a trait names one it does not
/// know (another writer, or a person in Intercom's UI, may have created it meanwhile).
pub struct AttributeCatalog {
    client: crate::IntercomClient,
    known: tokio::sync::Mutex<Option<BTreeMap<String, AttributeType>>>,
}

impl AttributeCatalog {
    pub fn new(client: crate::IntercomClient) -> Self {
        AttributeCatalog {
            client,
            known: tokio::sync::Mutex::new(None),
        }
    }

    /// Prepares a contact write from traits, creating the attributes it needs first.
    pub async fn prepare(
        &self,
        traits: &Map<String, Value>,
        policy: AttributePolicy,
    ) -> Result<PreparedContact, crate::IntercomError> {
        let mut known = self.known.lock().await;
        let fresh = known.is_none();
        if fresh {
            *known = Some(self.client.contact_attributes().await?);
        }
        // Refresh only when the traits name a custom attribute the cache does not know (someone
        // may have created it since); standard fields and known attributes cost no call.
        let mut prepared = prepare_contact(traits, known.as_ref().expect("filled above"), policy);
        let unknown = {
            let catalog = known.as_ref().expect("filled above");
            !prepared.to_create.is_empty()
                || prepared
                    .dropped
                    .iter()
                    .any(|(name, _)| !catalog.contains_key(name))
        };
        if unknown && !fresh {
            *known = Some(self.client.contact_attributes().await?);
            prepared = prepare_contact(traits, known.as_ref().expect("filled above"), policy);
        }
        let catalog = known.as_mut().expect("filled above");
        for (name, data_type) in &prepared.to_create {
            match self.client.create_contact_attribute(name, *data_type).await {
                Ok(()) => {}
                // Created by someone else since the refresh: fine.
                Err(crate::IntercomError::Permanent {
                    status: 400,
                    ref message,
                    ..
                }) if message.contains("already have") => {}
                Err(error) => return Err(error),
            }
            catalog.insert(name.clone(), *data_type);
        }
        Ok(prepared)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn known() -> BTreeMap<String, AttributeType> {
        BTreeMap::from([
            ("plan".into(), AttributeType::String),
            ("seats".into(), AttributeType::Integer),
            ("mrr".into(), AttributeType::Float),
            ("trial".into(), AttributeType::Boolean),
            ("renews_at".into(), AttributeType::Date),
        ])
    }

    fn traits(value: Value) -> Map<String, Value> {
        value.as_object().unwrap().clone()
    }

    #[test]
    fn reserved_traits_become_standard_fields() {
        let prepared = prepare_contact(
            &traits(
                json!({"email": "a@example.com", "firstName": "Ann", "lastName": "Lee", "phone": "+33 1",
                           "avatar": "https://x.test/a.png", "createdAt": "2024-01-01T00:00:00Z", "company": {"id": "g1"}}),
            ),
            &known(),
            AttributePolicy::default(),
        );
        assert_eq!(
            Value::Object(prepared.fields),
            json!({"email": "a@example.com", "name": "Ann Lee", "phone": "+33 1", "avatar": "https://x.test/a.png", "signed_up_at": 1_704_067_200})
        );
        assert!(prepared.to_create.is_empty() && prepared.dropped.is_empty());
    }

    /// As Segment's destination: an `unsubscribedFromEmails` trait sets Intercom's
    /// `unsubscribed_from_emails`, and identity-verification hashes are never sent.
    #[test]
    fn unsubscribing_is_a_standard_field_and_user_hash_is_never_sent() {
        let prepared = prepare_contact(
            &traits(json!({"unsubscribedFromEmails": true, "user_hash": "9f3a…", "plan": "pro"})),
            &known(),
            AttributePolicy::default(),
        );
        assert_eq!(prepared.fields["unsubscribed_from_emails"], json!(true));
        assert_eq!(prepared.fields["custom_attributes"], json!({"plan": "pro"}));
        assert_eq!(prepared.dropped.len(), 1, "{:?}", prepared.dropped);
        assert_eq!(prepared.dropped[0].0, "user_hash");
        let not_a_flag = prepare_contact(
            &traits(json!({"unsubscribed_from_emails": "yes"})),
            &known(),
            AttributePolicy::default(),
        );
        assert!(!not_a_flag.fields.contains_key("unsubscribed_from_emails"));
        assert_eq!(not_a_flag.dropped[0].0, "unsubscribed_from_emails");
    }

    #[test]
    fn values_are_coerced_to_the_declared_type_or_dropped_with_a_reason() {
        let prepared = prepare_contact(
            &traits(
                json!({"plan": 3, "seats": "12", "mrr": "99.5", "trial": "yes", "renews_at": "2024-01-01T00:00:00.000+00:00"}),
            ),
            &known(),
            AttributePolicy::default(),
        );
        assert_eq!(
            prepared.fields["custom_attributes"],
            json!({"plan": "3", "seats": 12, "mrr": 99.5, "trial": true, "renews_at": 1_704_067_200})
        );
        let bad = prepare_contact(
            &traits(json!({"seats": "a dozen", "trial": "maybe"})),
            &known(),
            AttributePolicy::default(),
        );
        assert!(bad.fields.is_empty());
        let reasons: Vec<&str> = bad.dropped.iter().map(|(name, _)| name.as_str()).collect();
        assert_eq!(reasons, ["seats", "trial"]);
        assert!(bad.dropped[0].1.contains("cannot be made a integer"));
    }

    /// Numbers keep their type: an integer trait stays an integer, a whole float for an
    /// integer attribute becomes one, and only a float attribute makes an integer a float.
    #[test]
    fn numbers_keep_their_type_unless_the_attribute_says_otherwise() {
        let prepared = prepare_contact(
            &traits(json!({"seats": 12.0, "mrr": 100, "visits": 7, "ratio": 0.25})),
            &known(),
            AttributePolicy::default(),
        );
        let custom = &prepared.fields["custom_attributes"];
        assert!(custom["seats"].is_i64(), "{custom}");
        assert!(custom["mrr"].is_f64(), "mrr is a float attribute: {custom}");
        assert_eq!(custom["mrr"].to_string(), "100.0");
        assert!(
            custom["visits"].is_i64(),
            "a new attribute from an integer: {custom}"
        );
        assert_eq!(
            prepared
                .to_create
                .iter()
                .find(|(name, _)| name == "visits")
                .map(|(_, kind)| *kind),
            Some(AttributeType::Integer)
        );
        assert!(custom["ratio"].is_f64());
    }

    #[test]
    fn unknown_attributes_are_created_with_an_inferred_type_or_dropped() {
        let fresh = traits(
            json!({"industry": "Retail", "employees": 40, "score": 0.7, "beta": false, "trial_ends": "2025-03-01T00:00:00Z"}),
        );
        let created = prepare_contact(&fresh, &known(), AttributePolicy::default());
        let types: BTreeMap<String, &str> = created
            .to_create
            .iter()
            .map(|(n, t)| (n.clone(), t.as_str()))
            .collect();
        assert_eq!(
            types,
            BTreeMap::from([
                ("beta".into(), "boolean"),
                ("employees".into(), "integer"),
                ("industry".into(), "string"),
                ("score".into(), "float"),
                ("trial_ends".into(), "date")
            ])
        );
        assert_eq!(
            created.fields["custom_attributes"]["trial_ends"],
            1_740_787_200
        );

        let dropping = AttributePolicy {
            unknown: UnknownAttributes::Drop,
            ..AttributePolicy::default()
        };
        let dropped = prepare_contact(&fresh, &known(), dropping);
        assert!(dropped.to_create.is_empty() && dropped.fields.is_empty());
        assert_eq!(dropped.dropped.len(), 5);
    }

    #[test]
    fn the_250_attribute_limit_is_respected() {
        let full: BTreeMap<String, AttributeType> = (0..249)
            .map(|i| (format!("a{i}"), AttributeType::String))
            .collect();
        let prepared = prepare_contact(
            &traits(json!({"one": 1, "two": 2})),
            &full,
            AttributePolicy::default(),
        );
        assert_eq!(prepared.to_create.len(), 1);
        assert_eq!(prepared.dropped.len(), 1);
        assert!(prepared.dropped[0].1.contains("250"));
    }

    #[test]
    fn nested_values_are_flattened_or_encoded_and_nulls_follow_the_policy() {
        let nested = traits(
            json!({"address": {"city": "Lyon", "zip": "69001"}, "tags": ["a", "b"], "plan": null}),
        );
        let flat = prepare_contact(&nested, &known(), AttributePolicy::default());
        assert_eq!(
            flat.fields["custom_attributes"],
            json!({"address_city": "Lyon", "address_zip": "69001", "tags_0": "a", "tags_1": "b"})
        );
        let encoding = AttributePolicy {
            nested: NestedValues::JsonString,
            nulls: NullValues::Clear,
            ..AttributePolicy::default()
        };
        let encoded = prepare_contact(&nested, &known(), encoding);
        assert_eq!(
            encoded.fields["custom_attributes"],
            json!({"address": "{\"city\":\"Lyon\",\"zip\":\"69001\"}", "tags": "[\"a\",\"b\"]", "plan": null})
        );
    }
}
