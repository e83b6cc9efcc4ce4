//! `score`: a per-person score with a threshold; `crossed` steps run once per upward crossing
//! (the arithmetic is `ScoreState::add`, beside the profile).

use super::{At, Compile, Compiler, Kind, Outline, Step, Variables};
use crate::definition::{Located, OneOrMany};
use crate::duration::Span;
use crate::error::PlanError;
use crate::expr::Condition;
use crate::profile::{Decay, Profile, ScoreState};
use crate::run::Run;
use schemars::JsonSchema;
use serde::Deserialize;

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ScoreRuleDef {
    /// Event names (track) or page/screen names this rule scores.
    #[serde(default)]
    pub event: Option<OneOrMany<String>>,
    /// Message types this rule scores (`page`, `track`, …).
    #[serde(default, rename = "type")]
    pub kind: Option<OneOrMany<String>>,
    /// A further condition.
    #[serde(default)]
    pub when: Option<Located<String>>,
    pub points: f64,
}

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ScoreDef {
    /// The score's name (`profile.scores.NAME`).
    pub name: String,
    /// Points per event; the first matching rule counts.
    pub rules: Vec<ScoreRuleDef>,
    /// Only points earned within this window count.
    #[serde(default)]
    pub window: Option<Span>,
    /// Or: points fade, halving over this span.
    #[serde(default)]
    pub half_life: Option<Span>,
    /// Crossing it upwards runs `crossed` once.
    pub threshold: f64,
    /// The score must fall this far below the threshold before another crossing counts.
    #[serde(default)]
    pub hysteresis: f64,
    #[serde(default)]
    pub crossed: Vec<Located<crate::steps::StepDef>>,
}

#[derive(Debug)]
struct Rule {
    events: Option<Vec<String>>,
    kinds: Option<Vec<String>>,
    when: Option<Condition>,
    points: f64,
}

#[derive(Debug)]
pub struct Score {
    name: String,
    rules: Vec<Rule>,
    decay: Decay,
    threshold: f64,
    hysteresis: f64,
    crossed: Vec<Step>,
}

impl Compile<ScoreDef> for Score {
    fn compile(def: &ScoreDef, cx: &Compiler<'_>) -> Result<Self, crate::LoadError> {
        if def.rules.is_empty() {
            return Err(cx.error("a score needs at least one rule"));
        }
        let decay = match (def.window, def.half_life) {
            (Some(_), Some(_)) => return Err(cx.error("use `window` or `half_life`, not both")),
            (Some(window), None) => Decay::Window(window),
            (None, Some(half_life)) => Decay::HalfLife(half_life),
            (None, None) => Decay::Never,
        };
        let rules = def
            .rules
            .iter()
            .map(|rule| {
                Ok(Rule {
                    events: rule.event.as_ref().map(OneOrMany::to_vec),
                    kinds: rule.kind.as_ref().map(OneOrMany::to_vec),
                    when: rule
                        .when
                        .as_ref()
                        .map(|w| cx.condition(w, "rules.when"))
                        .transpose()?,
                    points: rule.points,
                })
            })
            .collect::<Result<_, crate::LoadError>>()?;
        Ok(Score {
            name: def.name.clone(),
            rules,
            decay,
            threshold: def.threshold,
            hysteresis: def.hysteresis.max(0.0),
            crossed: cx.steps(&def.crossed)?,
        })
    }
}

impl Score {
    /// The points the first matching rule gives this event.
    fn points(&self, run: &mut Run<'_>, profile: &Profile, path: &str) -> Result<f64, PlanError> {
        let name = crate::plan::event_name(run.event.kind, run.event.body);
        for rule in &self.rules {
            if let Some(kinds) = &rule.kinds
                && !kinds.iter().any(|k| k == run.event.kind)
            {
                continue;
            }
            if let Some(events) = &rule.events
                && !name.as_ref().is_some_and(|n| events.iter().any(|e| e == n))
            {
                continue;
            }
            if let Some(when) = &rule.when
                && !run.test(when, profile, path, "rules.when")?
            {
                continue;
            }
            return Ok(rule.points);
        }
        Ok(0.0)
    }
}

impl Kind for Score {
    fn plan(&self, run: &mut Run<'_>, at: &At<'_>, profile: &mut Profile) -> Result<(), PlanError> {
        let points = self.points(run, profile, at.path)?;
        let now = run.now_ms;
        let crossed = profile
            .scores
            .entry(self.name.clone())
            .or_insert_with(|| ScoreState::new(now))
            .add(points, now, self.decay, self.threshold, self.hysteresis);
        run.changed();
        if crossed {
            let prefix = format!("{}.crossed", at.path);
            run.steps(&self.crossed, &prefix, at.standby_for, profile)?;
        }
        Ok(())
    }

    fn outline(&self) -> Outline {
        Outline {
            label: format!("score {}", self.name),
            branches: if self.crossed.is_empty() {
                Vec::new()
            } else {
                let steps = self.crossed.iter().map(Step::outline).collect();
                vec![(format!("crossed {}", self.threshold), steps)]
            },
        }
    }

    fn variables(&self, names: &mut Variables<'_>) {
        for rule in &self.rules {
            if let Some(when) = &rule.when {
                names.condition(when);
            }
        }
        names.steps(&self.crossed);
    }
}
