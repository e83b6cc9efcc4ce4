//! `intercom.event`: a data event for the contact, its metadata within Intercom's rules.

use super::{At, Compile, Compiler, Kind, Outline, Variables};
use crate::action::Action;
use crate::error::PlanError;
use crate::expr::ValueTemplate;
use crate::profile::Profile;
use crate::run::Run;
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{Map, Value as Json, json};

#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EventDef {
    /// Default `{{ event.event }}`.
    #[serde(default)]
    pub name: Option<Json>,
    /// Default the event's timestamp.
    #[serde(default)]
    pub created_at: Option<Json>,
    /// Default `{{ event.properties }}`; `revenue` (+ `currency`) becomes `price` in cents; at
    /// most 10 keys are sent, nested objects are dropped (except rich links and money).
    #[serde(default)]
    pub metadata: Option<Json>,
}

#[derive(Debug)]
pub struct DataEvent {
    name: ValueTemplate,
    created_at: Option<ValueTemplate>,
    metadata: ValueTemplate,
}

impl Compile<EventDef> for DataEvent {
    fn compile(def: &EventDef, cx: &Compiler<'_>) -> Result<Self, crate::LoadError> {
        Ok(DataEvent {
            name: cx.template_or(&def.name, "{{ event.event }}", "name")?,
            created_at: cx.optional(&def.created_at, "created_at")?,
            metadata: cx.template_or(&def.metadata, "{{ event.properties }}", "metadata")?,
        })
    }
}

impl Kind for DataEvent {
    fn plan(&self, run: &mut Run<'_>, at: &At<'_>, profile: &mut Profile) -> Result<(), PlanError> {
        let path = at.path;
        let name = run.required(&self.name, profile, path, "name")?;
        let created_at = match &self.created_at {
            Some(template) => match run.render(template, profile, path, "created_at")? {
                Json::Number(n) => n.as_i64().unwrap_or(run.now_ms / 1000),
                _ => {
                    return Err(PlanError::invalid(
                        path,
                        "created_at",
                        "expected Unix seconds (use `| unix`)",
                    ));
                }
            },
            None => run.event.timestamp_ms / 1000,
        };
        let metadata = event_metadata(run.object(&self.metadata, profile, path, "metadata")?);
        let action = Action::Event {
            name,
            created_at,
            metadata,
        };
        run.push(at, action, profile)
    }

    fn outline(&self) -> Outline {
        Outline::leaf(format!("intercom.event {}", self.name.written()))
    }

    fn variables(&self, names: &mut Variables<'_>) {
        names.template(&self.name);
        names.optional(&self.created_at);
        names.template(&self.metadata);
    }
}

/// Intercom data event metadata from Segment properties, the way Segment's own destination
/// does it and then within Intercom's rules (scalars only, except rich links `{url, value}` and
/// money `{amount, currency}`; at most 10 keys):
///
/// - `revenue` (+ `currency`, default USD) becomes `price` in integer cents; `email` is left out
///   (it identifies the contact instead); nulls are dropped;
/// - nested objects are flattened to dotted keys (`plan: {tier: "pro"}` → `plan.tier`), as
///   Segment's classic destination did;
/// - arrays are sent as JSON text (Intercom refuses them; an array of objects has no useful
///   dotted form);
/// - which keys win when there are more than 10: `price` first, then the rest by name (dotted
///   keys sort with their parent's name). Keys past the tenth are dropped, as Intercom would
///   drop them silently.
pub fn event_metadata(mut properties: Map<String, Json>) -> Map<String, Json> {
    properties.remove("email");
    let currency = properties.remove("currency");
    let revenue = properties.remove("revenue");
    let mut flat = std::collections::BTreeMap::new();
    flatten_metadata(String::new(), properties, &mut flat);
    let mut metadata = Map::new();
    if let Some(revenue) = revenue.as_ref().and_then(Json::as_f64) {
        let currency = currency.as_ref().and_then(Json::as_str).unwrap_or("USD");
        metadata.insert(
            "price".into(),
            json!({"amount": (revenue * 100.0).round() as i64, "currency": currency}),
        );
    }
    for (key, value) in flat {
        if metadata.len() >= MAX_EVENT_METADATA_KEYS {
            break;
        }
        metadata.entry(key).or_insert(value);
    }
    metadata
}

/// Adds `object`'s values to `flat` under `prefix`-dotted keys: scalars as they are, rich links
/// and money whole, other objects one level down, arrays as JSON text; nulls left out.
fn flatten_metadata(
    prefix: String,
    object: Map<String, Json>,
    flat: &mut std::collections::BTreeMap<String, Json>,
) {
    for (key, value) in object {
        let key = if prefix.is_empty() {
            key
        } else {
            format!("{prefix}.{key}")
        };
        match value {
            Json::Null => {}
            Json::Object(object) if is_rich_link_or_money(&object) => {
                flat.insert(key, Json::Object(object));
            }
            Json::Object(object) => flatten_metadata(key, object, flat),
            Json::Array(_) => {
                flat.insert(key, Json::String(value.to_string()));
            }
            scalar => {
                flat.insert(key, scalar);
            }
        }
    }
}

/// The two object shapes Intercom accepts as metadata values.
fn is_rich_link_or_money(object: &Map<String, Json>) -> bool {
    object.len() == 2
        && ((object.contains_key("url") && object.contains_key("value"))
            || (object.get("amount").is_some_and(Json::is_i64)
                && object.get("currency").is_some_and(Json::is_string)))
}

/// Intercom keeps at most ten metadata keys per data event (and silently drops the rest).
pub const MAX_EVENT_METADATA_KEYS: usize = 10;
