//! The ready-made workflows, embedded in the binary (`junction templates list|show`,
//! `junction init`). Their sources live in the repository's `templates/` folder.

/// A template: its name (also the workflow's name) and its YAML.
#[derive(Debug, Clone, Copy)]
pub struct Template {
    pub name: &'static str,
    pub source: &'static str,
}

macro_rules! templates {
    ($($name:literal),* $(,)?) => {
        &[$(Template {
            name: $name,
            source: include_str!(concat!("../../../templates/", $name, ".yaml")),
        }),*]
    };
}

/// Every template, in the order the product presents them.
pub const TEMPLATES: &[Template] = templates![
    "profile-sync",
    "event-message",
    "lead-score",
    "company-sync",
    "churn-risk",
    "onboarding",
    "inactivity",
    "track-events",
    "intercom-lead-to-segment",
];

pub fn find(name: &str) -> Option<&'static Template> {
    TEMPLATES.iter().find(|t| t.name == name)
}

impl Template {
    /// The description line of the workflow.
    pub fn description(&self) -> String {
        crate::compile::parse(self.source)
            .ok()
            .and_then(|file| file.description)
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_template_loads_and_is_named_after_its_file() {
        for template in TEMPLATES {
            let workflow = crate::load(template.source, &Default::default())
                .unwrap_or_else(|e| panic!("{}: {e}", template.name));
            assert_eq!(workflow.name, template.name);
            assert!(!template.description().is_empty(), "{}", template.name);
        }
    }
}
