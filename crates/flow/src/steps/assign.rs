//! `intercom.assign`: choose an admin (fixed, or round-robin across every user of the
//! workflow, a turn kept in the shared state), make them the contact's owner, and expose the
//! choice as `vars.assignee` to later steps.

use super::{At, Compile, Compiler, Kind, Outline, Variables};
use crate::action::Action;
use crate::error::PlanError;
use crate::expr::ValueTemplate;
use crate::profile::Profile;
use crate::run::Run;
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::Value as Json;

#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AssignDef {
    /// One admin.
    #[serde(default)]
    pub admin: Option<Json>,
    /// Admins taken in turn, across all users of this workflow: a list of ids, or an
    /// expression giving one (`{{ vars.sales_reps }}`).
    #[serde(default)]
    pub round_robin: Option<Json>,
    /// Also make the admin the contact's owner (default true).
    #[serde(default)]
    pub set_owner: Option<bool>,
}

#[derive(Debug)]
pub struct Assign {
    admin: Option<ValueTemplate>,
    round_robin: Option<ValueTemplate>,
    set_owner: bool,
}

impl Compile<AssignDef> for Assign {
    fn compile(def: &AssignDef, cx: &Compiler<'_>) -> Result<Self, crate::LoadError> {
        if def.admin.is_some() == def.round_robin.is_some() {
            return Err(cx.error("expected either `admin` or a `round_robin` list"));
        }
        if let Some(Json::Array(list)) = &def.round_robin
            && list.is_empty()
        {
            return Err(cx.error("round_robin: the list is empty"));
        }
        Ok(Assign {
            admin: cx.optional(&def.admin, "admin")?,
            round_robin: cx.optional(&def.round_robin, "round_robin")?,
            set_owner: def.set_owner.unwrap_or(true),
        })
    }
}

impl Kind for Assign {
    fn plan(&self, run: &mut Run<'_>, at: &At<'_>, profile: &mut Profile) -> Result<(), PlanError> {
        let path = at.path;
        let chosen = match &self.admin {
            Some(admin) => run.required(admin, profile, path, "admin")?,
            None => {
                let admins: Vec<String> = match &self.round_robin {
                    Some(list) => match run.render(list, profile, path, "round_robin")? {
                        Json::Array(items) => items
                            .iter()
                            .map(|i| i.as_str().map_or_else(|| i.to_string(), str::to_owned))
                            .collect(),
                        other => {
                            return Err(PlanError::Shape {
                                path: path.to_owned(),
                                field: "round_robin".into(),
                                expected: "a list of admin ids",
                                got: other.to_string(),
                            });
                        }
                    },
                    None => Vec::new(),
                };
                if admins.is_empty() {
                    return Err(PlanError::invalid(
                        path,
                        "round_robin",
                        "no admins to choose from",
                    ));
                }
                let key = format!("{}/{path}", run.workflow.name);
                let turn = run.globals.round_robin.entry(key).or_insert(0);
                let chosen = admins[(*turn % admins.len() as u64) as usize].clone();
                *turn += 1;
                chosen
            }
        };
        run.set_var("assignee", Json::String(chosen.clone()));
        if self.set_owner {
            run.push(at, Action::Owner { admin: chosen }, profile)?;
        }
        Ok(())
    }

    fn outline(&self) -> Outline {
        Outline::leaf(if self.round_robin.is_some() {
            "intercom.assign (round-robin)"
        } else {
            "intercom.assign"
        })
    }

    fn variables(&self, names: &mut Variables<'_>) {
        names.optional(&self.admin);
        names.optional(&self.round_robin);
    }
}
