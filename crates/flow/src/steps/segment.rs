//! `segment.identify`, `segment.track`, `segment.group`: a call sent back to Segment through
//! the Tracking API. Null or empty values are left out, at the top and inside traits and
//! properties: Segment would store a null trait as a value.

use super::{At, Compile, Compiler, Kind, Outline, Variables};
use crate::action::Action;
use crate::error::PlanError;
use crate::expr::ValueTemplate;
use crate::profile::Profile;
use crate::run::Run;
use serde_json::{Map, Value as Json};
use std::collections::BTreeMap;

/// A Segment call of one type, with its fields.
#[derive(Debug)]
pub struct SegmentCall {
    call: &'static str,
    fields: Vec<(String, ValueTemplate)>,
}

#[derive(Debug)]
pub struct Identify(SegmentCall);
#[derive(Debug)]
pub struct Track(SegmentCall);
#[derive(Debug)]
pub struct Group(SegmentCall);

impl SegmentCall {
    fn compile(
        call: &'static str,
        fields: &BTreeMap<String, Json>,
        cx: &Compiler<'_>,
    ) -> Result<Self, crate::LoadError> {
        let required = match call {
            "track" => Some("event"),
            "group" => Some("groupId"),
            _ => None,
        };
        if let Some(field) = required
            && !fields.contains_key(field)
        {
            return Err(cx.error(format!("a Segment {call} needs `{field}`")));
        }
        if !fields.contains_key("userId") && !fields.contains_key("anonymousId") {
            return Err(cx.error("needs `userId` or `anonymousId`"));
        }
        Ok(SegmentCall {
            call,
            fields: cx.pairs(fields, "fields")?,
        })
    }

    fn plan(&self, run: &mut Run<'_>, at: &At<'_>, profile: &mut Profile) -> Result<(), PlanError> {
        let path = at.path;
        let blank = |v: &Json| v.is_null() || v.as_str().is_some_and(|s| s.trim().is_empty());
        let mut message = Map::new();
        for (name, value) in &self.fields {
            match run.render(value, profile, path, name)? {
                Json::Object(mut members) => {
                    members.retain(|_, v| !blank(v));
                    message.insert(name.clone(), Json::Object(members));
                }
                value if blank(&value) => {}
                value => {
                    message.insert(name.clone(), value);
                }
            }
        }
        if !message.contains_key("userId") && !message.contains_key("anonymousId") {
            return Err(PlanError::step(
                path,
                "both userId and anonymousId rendered empty",
            ));
        }
        for required in ["event", "groupId"] {
            if self.fields.iter().any(|(n, _)| n == required) && !message.contains_key(required) {
                return Err(PlanError::Empty {
                    path: path.to_owned(),
                    field: required.to_owned(),
                });
            }
        }
        let action = Action::Segment {
            call: self.call.to_owned(),
            message,
        };
        run.push(at, action, profile)
    }
}

macro_rules! segment_kind {
    ($kind:ident, $call:literal) => {
        impl Compile<BTreeMap<String, Json>> for $kind {
            fn compile(
                def: &BTreeMap<String, Json>,
                cx: &Compiler<'_>,
            ) -> Result<Self, crate::LoadError> {
                SegmentCall::compile($call, def, cx).map($kind)
            }
        }

        impl Kind for $kind {
            fn plan(
                &self,
                run: &mut Run<'_>,
                at: &At<'_>,
                profile: &mut Profile,
            ) -> Result<(), PlanError> {
                self.0.plan(run, at, profile)
            }

            fn outline(&self) -> Outline {
                Outline::leaf(concat!("segment.", $call))
            }

            fn variables(&self, names: &mut Variables<'_>) {
                names.pairs(&self.0.fields);
            }
        }
    };
}

segment_kind!(Identify, "identify");
segment_kind!(Track, "track");
segment_kind!(Group, "group");
