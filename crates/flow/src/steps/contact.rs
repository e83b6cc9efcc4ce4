//! `intercom.contact`: create or update the event's contact; an identify's `company` and
//! `companies` traits become company upserts (or detaches) after it.

use super::{At, Compile, Compiler, Kind, Outline, Variables};
use crate::action::Action;
use crate::error::PlanError;
use crate::expr::ValueTemplate;
use crate::profile::Profile;
use crate::run::Run;
use crate::steps::company_fields;
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{Map, Value as Json};
use std::collections::BTreeMap;

#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ContactDef {
    /// Segment-style traits to write (default `{{ event.traits }}`); reserved traits go to
    /// Intercom's standard fields, the rest to custom attributes (typed and created safely).
    #[serde(default)]
    pub traits: Option<Json>,
    /// Intercom standard fields set as given (`last_seen_at`, `owner_id`, …).
    #[serde(default)]
    pub fields: BTreeMap<String, Json>,
}

#[derive(Debug)]
pub struct Contact {
    traits: ValueTemplate,
    fields: Vec<(String, ValueTemplate)>,
}

impl Compile<ContactDef> for Contact {
    fn compile(def: &ContactDef, cx: &Compiler<'_>) -> Result<Self, crate::LoadError> {
        Ok(Contact {
            traits: cx.template_or(&def.traits, "{{ event.traits }}", "traits")?,
            fields: cx.pairs(&def.fields, "fields")?,
        })
    }
}

impl Kind for Contact {
    fn plan(&self, run: &mut Run<'_>, at: &At<'_>, profile: &mut Profile) -> Result<(), PlanError> {
        let path = at.path;
        let mut traits = run.object(&self.traits, profile, path, "traits")?;
        let companies = take_companies(&mut traits);
        let mut rendered = Map::new();
        for (name, value) in &self.fields {
            let value = run.render(value, profile, path, name)?;
            if !value.is_null() {
                rendered.insert(name.clone(), value);
            }
        }
        // The contact first, then its companies: attaching needs the contact.
        let contact = Action::Contact {
            traits,
            fields: rendered,
        };
        if companies.is_empty() {
            return run.push(at, contact, profile);
        }
        let id = run.push_part(at, path, contact, profile);
        for (n, company) in companies.into_iter().enumerate() {
            run.push_part(at, &format!("{path}.company{n}"), company, profile);
        }
        run.error_branch(at, &id, profile)
    }

    fn outline(&self) -> Outline {
        Outline::leaf("intercom.contact")
    }

    fn variables(&self, names: &mut Variables<'_>) {
        names.template(&self.traits);
        names.pairs(&self.fields);
    }
}

/// Takes an identify's `company` (an object or a name) and `companies` (a list of either) out
/// of its traits, as Segment's Intercom destination reads them: each becomes a company upsert
/// with the contact attached, or, with `remove: true`, a detach. A company's `company_id` is its
/// `id` (or `company_id`); one given only by name gets the id Segment's classic destination
/// derived from the name ([`company_id_from_name`]), so the same company is found again.
fn take_companies(traits: &mut Map<String, Json>) -> Vec<Action> {
    let mut given = Vec::new();
    match traits.remove("company") {
        Some(Json::Array(list)) => given.extend(list),
        Some(one) => given.push(one),
        None => {}
    }
    if let Some(Json::Array(list)) = traits.remove("companies") {
        given.extend(list);
    }
    given
        .into_iter()
        .filter_map(|company| {
            let mut object = match company {
                Json::String(name) if !name.trim().is_empty() => {
                    let mut object = Map::new();
                    object.insert("name".into(), Json::String(name));
                    object
                }
                Json::Object(object) => object,
                _ => return None,
            };
            let remove = object
                .remove("remove")
                .is_some_and(|r| r == Json::Bool(true));
            let company_id = ["id", "company_id"]
                .iter()
                .find_map(|key| match object.get(*key) {
                    Some(Json::String(id)) if !id.trim().is_empty() => Some(id.clone()),
                    Some(Json::Number(id)) => Some(id.to_string()),
                    _ => None,
                })
                .or_else(|| {
                    object
                        .get("name")
                        .and_then(Json::as_str)
                        .filter(|name| !name.trim().is_empty())
                        .map(company_id_from_name)
                })?;
            Some(if remove {
                Action::Detach { company_id }
            } else {
                Action::Company {
                    fields: company_fields(&object),
                    company_id,
                    attach: true,
                }
            })
        })
        .collect()
}

/// The `company_id` of a company known only by its name: the `string-hash` of the name (a
/// djb2 variant over UTF-16 code units, last to first), as a decimal number — what Segment's
/// classic Intercom destination used, so that companies it created are the same companies.
pub fn company_id_from_name(name: &str) -> String {
    let units: Vec<u16> = name.encode_utf16().collect();
    let mut hash: i32 = 5381;
    for unit in units.iter().rev() {
        hash = hash.wrapping_mul(33) ^ i32::from(*unit);
    }
    (hash as u32).to_string()
}
