//! `intercom.company`: upsert a company by `company_id` and attach the event's contact.

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
pub struct CompanyDef {
    /// Default `{{ event.groupId }}`.
    #[serde(default)]
    pub company_id: Option<Json>,
    /// Segment group traits (default `{{ event.traits }}`): `name`, `plan`, `employees` → size,
    /// `monthly_spend`, `industry`, `website`, `createdAt`; others become custom attributes.
    #[serde(default)]
    pub traits: Option<Json>,
    /// Attach the event's contact to the company (default true).
    #[serde(default)]
    pub attach: Option<bool>,
}

#[derive(Debug)]
pub struct Company {
    company_id: ValueTemplate,
    traits: ValueTemplate,
    attach: bool,
}

impl Compile<CompanyDef> for Company {
    fn compile(def: &CompanyDef, cx: &Compiler<'_>) -> Result<Self, crate::LoadError> {
        Ok(Company {
            company_id: cx.template_or(&def.company_id, "{{ event.groupId }}", "company_id")?,
            traits: cx.template_or(&def.traits, "{{ event.traits }}", "traits")?,
            attach: def.attach.unwrap_or(true),
        })
    }
}

impl Kind for Company {
    fn plan(&self, run: &mut Run<'_>, at: &At<'_>, profile: &mut Profile) -> Result<(), PlanError> {
        let path = at.path;
        let company_id = run.required(&self.company_id, profile, path, "company_id")?;
        let traits = run.object(&self.traits, profile, path, "traits")?;
        let fields = company_fields(&traits);
        // As Segment's destination: a group from an anonymous visitor upserts the company but
        // attaches nobody (attaching would create a lead for them), unless it names an email:
        // then the contact with that email is attached (or, as the workflow's `unmatched`
        // says, a lead with it).
        let known_user = run.event.body["userId"]
            .as_str()
            .is_some_and(|id| !id.is_empty())
            || profile.user_id.is_some()
            || run.who(profile).email.is_some();
        let action = Action::Company {
            company_id,
            fields,
            attach: self.attach && known_user,
        };
        run.push(at, action, profile)
    }

    fn outline(&self) -> Outline {
        Outline::leaf(format!("intercom.company {}", self.company_id.written()))
    }

    fn variables(&self, names: &mut Variables<'_>) {
        names.template(&self.company_id);
        names.template(&self.traits);
    }
}

/// Intercom company fields from Segment group traits, as Segment's destination maps them
/// (`employees` → `size`, `createdAt` → `remote_created_at` in Unix seconds), other traits as
/// custom attributes (nested ones as JSON text).
pub fn company_fields(traits: &Map<String, Json>) -> Map<String, Json> {
    let mut fields = Map::new();
    let mut custom = Map::new();
    for (key, value) in traits {
        if value.is_null() {
            continue;
        }
        match key.as_str() {
            "name" | "plan" | "industry" | "website" => {
                if let Some(text) = value.as_str() {
                    fields.insert(key.clone(), text.into());
                } else {
                    fields.insert(key.clone(), value.to_string().into());
                }
            }
            "employees" | "size" => {
                if let Some(n) = value
                    .as_f64()
                    .or_else(|| value.as_str().and_then(|s| s.parse().ok()))
                {
                    fields.insert("size".into(), json!(n as i64));
                }
            }
            "monthly_spend" | "monthlySpend" => {
                // A number keeps its type (1200 stays 1200, not 1200.0); text is read as one.
                let number = match value {
                    Json::Number(_) => Some(value.clone()),
                    Json::String(text) => serde_json::from_str::<serde_json::Number>(text.trim())
                        .ok()
                        .map(Json::Number),
                    _ => None,
                };
                if let Some(number) = number {
                    fields.insert("monthly_spend".into(), number);
                }
            }
            "createdAt" | "created_at" => {
                let seconds = value
                    .as_str()
                    .and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok())
                    .map(|t| t.timestamp())
                    .or_else(|| value.as_i64());
                if let Some(seconds) = seconds {
                    fields.insert("remote_created_at".into(), json!(seconds));
                }
            }
            "id" | "email" | "company_id" => {}
            _ => {
                let value = match value {
                    Json::Object(_) | Json::Array(_) => Json::String(value.to_string()),
                    scalar => scalar.clone(),
                };
                custom.insert(key.clone(), value);
            }
        }
    }
    if !custom.is_empty() {
        fields.insert("custom_attributes".into(), Json::Object(custom));
    }
    fields
}
