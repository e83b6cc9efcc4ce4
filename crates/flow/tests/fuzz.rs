//! Hostile workflow text never crashes or hangs the loader or the planner (issue 11): property
//! tests with a bounded number of cases, run by the suite. Inputs are the shipped templates with
//! random edits, arbitrary text, and expressions assembled from Jinja's tokens.

use junction_flow::expr::{Condition, ValueTemplate, from_json};
use junction_flow::templates::TEMPLATES;
use junction_flow::{EventInput, Globals, Planner, Profile};
use proptest::prelude::*;
use serde_json::{Map, json};

/// A template's text with a few random edits: characters deleted, replaced or inserted.
fn mutated_template() -> impl Strategy<Value = String> {
    let edits = proptest::collection::vec((any::<u16>(), 0u8..3, any::<char>()), 1..6);
    (0..TEMPLATES.len(), edits).prop_map(|(index, edits)| {
        let mut chars: Vec<char> = TEMPLATES[index].source.chars().collect();
        for (at, kind, c) in edits {
            let at = at as usize % (chars.len() + 1);
            match kind {
                0 if at < chars.len() => {
                    chars.remove(at);
                }
                1 if at < chars.len() => chars[at] = c,
                _ => chars.insert(at, c),
            }
        }
        chars.into_iter().collect()
    })
}

/// Expressions from Jinja's own pieces, so that many of them compile and get evaluated.
fn expression() -> impl Strategy<Value = String> {
    let token = prop_oneof![
        Just("event"),
        Just("traits"),
        Just("profile.scores"),
        Just("event.properties.total"),
        Just("1"),
        Just("-2.5"),
        Just("'text'"),
        Just("none"),
        Just("["),
        Just("]"),
        Just("("),
        Just(")"),
        Just("{"),
        Just("}"),
        Just(","),
        Just(":"),
        Just("+"),
        Just("*"),
        Just("/"),
        Just("//"),
        Just("**"),
        Just("~"),
        Just("and"),
        Just("or"),
        Just("not"),
        Just("=="),
        Just("in"),
        Just("is present"),
        Just("| length"),
        Just("| unix"),
        Just("| cents"),
        Just("| join"),
        Just("range(9)"),
        Just("range(100000)"),
        Just("if"),
        Just("else"),
        Just("."),
    ];
    proptest::collection::vec(token, 1..24).prop_map(|tokens| tokens.join(" "))
}

fn context() -> minijinja::Value {
    from_json(&json!({
        "event": {"type": "track", "event": "Order", "properties": {"total": 12.5, "items": [1, 2, 3]}},
        "traits": {"plan": "pro", "mrr": 99},
        "profile": {"scores": {"lead": 40}},
    }))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Damaged workflow files load or fail with a position inside the file; if they load, they
    /// plan an event without panicking.
    #[test]
    fn damaged_templates_load_or_fail_with_a_location(text in mutated_template()) {
        match junction_flow::load(&text, &Map::new()) {
            Ok(workflow) => {
                let planner = Planner::new(vec![workflow]).unwrap();
                let body = json!({"type": "identify", "userId": "u1", "messageId": "m1",
                    "traits": {"email": "a@example.com", "plan": "pro"}, "timestamp": "2026-11-29T10:00:00Z"});
                let _ = planner.plan_event(
                    EventInput {
                        message_id: "m1",
                        kind: "identify",
                        identity: "u1",
                        body: &body,
                        timestamp_ms: 1_795_946_400_000,
                        segment_profile: None,
                    },
                    &mut Profile::default(),
                    &mut Globals::default(),
                );
            }
            Err(error) => {
                if let Some(line) = error.line {
                    prop_assert!(line as usize <= text.lines().count() + 1, "{error:?}");
                }
                prop_assert!(!error.message.is_empty());
            }
        }
    }

    /// Arbitrary text as a workflow file is refused or loaded, never a crash.
    #[test]
    fn arbitrary_text_never_crashes_the_loader(text in "\\PC{0,400}") {
        let _ = junction_flow::load(&text, &Map::new());
    }

    /// Expressions compile or fail with a message; compiled ones evaluate or fail, bounded.
    #[test]
    fn expressions_compile_and_evaluate_or_fail_cleanly(source in expression()) {
        let context = context();
        if let Ok(condition) = Condition::compile(&source) {
            let _ = condition.test(&context);
        }
        let template = format!("Dear {{{{ {source} }}}}, {{% for i in range(3) %}}{{{{ {source} }}}}{{% endfor %}}");
        if let Ok(compiled) = ValueTemplate::compile(&json!(template)) {
            let _ = compiled.render(&context);
        }
    }

    /// Arbitrary text in expression positions never crashes compilation.
    #[test]
    fn arbitrary_expression_text_never_crashes(source in "\\PC{0,200}") {
        let _ = Condition::compile(&source);
        let _ = ValueTemplate::compile(&json!(source));
    }
}
