//! `if`: a condition; `then` runs when it holds, `else` otherwise.

use super::{At, Compile, Compiler, Kind, Outline, Step, Variables};
use crate::definition::Located;
use crate::error::PlanError;
use crate::expr::Condition;
use crate::profile::Profile;
use crate::run::Run;

#[derive(Debug)]
pub struct If {
    condition: Condition,
    then: Vec<Step>,
    otherwise: Vec<Step>,
}

impl Compile<Located<String>> for If {
    fn compile(def: &Located<String>, cx: &Compiler<'_>) -> Result<Self, crate::LoadError> {
        let Some(then) = &cx.def.then else {
            return Err(cx.error("an `if` needs `then` steps"));
        };
        Ok(If {
            condition: cx.condition(def, "if")?,
            then: cx.steps(then)?,
            otherwise: cx
                .def
                .otherwise
                .as_deref()
                .map(|s| cx.steps(s))
                .transpose()?
                .unwrap_or_default(),
        })
    }
}

impl Kind for If {
    fn plan(&self, run: &mut Run<'_>, at: &At<'_>, profile: &mut Profile) -> Result<(), PlanError> {
        if run.test(&self.condition, profile, at.path, "if")? {
            run.steps(
                &self.then,
                &format!("{}.then", at.path),
                at.standby_for,
                profile,
            )
        } else {
            run.steps(
                &self.otherwise,
                &format!("{}.else", at.path),
                at.standby_for,
                profile,
            )
        }
    }

    fn outline(&self) -> Outline {
        let list = |steps: &[Step]| steps.iter().map(Step::outline).collect::<Vec<_>>();
        let mut branches = vec![("then".to_owned(), list(&self.then))];
        if !self.otherwise.is_empty() {
            branches.push(("else".to_owned(), list(&self.otherwise)));
        }
        Outline {
            label: format!("if {}", self.condition.source().trim()),
            branches,
        }
    }

    fn variables(&self, names: &mut Variables<'_>) {
        names.condition(&self.condition);
        names.steps(&self.then);
        names.steps(&self.otherwise);
    }
}
