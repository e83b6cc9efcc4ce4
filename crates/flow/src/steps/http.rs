//! `http.request`: an HTTP request (alerts to generic or Slack-compatible webhooks).

use super::{At, Compile, Compiler, Kind, Outline, Variables};
use crate::action::Action;
use crate::error::PlanError;
use crate::expr::ValueTemplate;
use crate::profile::Profile;
use crate::run::Run;
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::Value as Json;
use std::collections::BTreeMap;

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HttpDef {
    pub url: Json,
    /// Default POST.
    #[serde(default)]
    pub method: Option<String>,
    #[serde(default)]
    pub headers: BTreeMap<String, Json>,
    /// Sent as JSON (a Slack incoming webhook takes `{text: …}`).
    #[serde(default)]
    pub body: Option<Json>,
}

#[derive(Debug)]
pub struct Http {
    method: String,
    url: ValueTemplate,
    headers: Vec<(String, ValueTemplate)>,
    body: Option<ValueTemplate>,
}

impl Compile<HttpDef> for Http {
    fn compile(def: &HttpDef, cx: &Compiler<'_>) -> Result<Self, crate::LoadError> {
        let method = def
            .method
            .clone()
            .unwrap_or_else(|| "POST".into())
            .to_ascii_uppercase();
        if !["GET", "POST", "PUT", "PATCH", "DELETE"].contains(&method.as_str()) {
            return Err(cx.error(format!(
                "method `{method}`: expected GET, POST, PUT, PATCH or DELETE"
            )));
        }
        Ok(Http {
            method,
            url: cx.template(&def.url, "url")?,
            headers: cx.pairs(&def.headers, "headers")?,
            body: cx.optional(&def.body, "body")?,
        })
    }
}

impl Kind for Http {
    fn plan(&self, run: &mut Run<'_>, at: &At<'_>, profile: &mut Profile) -> Result<(), PlanError> {
        let path = at.path;
        let url = run.required(&self.url, profile, path, "url")?;
        let mut headers = BTreeMap::new();
        for (name, value) in &self.headers {
            headers.insert(name.clone(), run.text(value, profile, path, name)?);
        }
        let body = match &self.body {
            Some(body) => Some(run.render(body, profile, path, "body")?),
            None => None,
        };
        let action = Action::Http {
            method: self.method.clone(),
            url,
            headers,
            body,
        };
        run.push(at, action, profile)
    }

    fn outline(&self) -> Outline {
        Outline::leaf(format!("http.request {}", self.method))
    }

    fn variables(&self, names: &mut Variables<'_>) {
        names.template(&self.url);
        names.pairs(&self.headers);
        names.optional(&self.body);
    }
}
