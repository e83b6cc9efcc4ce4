//! The shipped templates planned against event sequences: what each use case asks Intercom
//! for, without any I/O. (The end-to-end tests in the binary crate deliver the same plans to
//! the emulator.)

use junction_flow::action::{Action, MessageChannel};
use junction_flow::templates;
use junction_flow::{EventInput, Globals, Plan, Planner, Profile};
use serde_json::{Map, Value, json};
use std::collections::HashMap;

struct Harness {
    planner: Planner,
    profiles: HashMap<String, Profile>,
    globals: Globals,
    clock_ms: i64,
    counter: usize,
}

impl Harness {
    fn new(names: &[&str], vars: Value) -> Self {
        let overrides: Map<String, Value> = vars.as_object().cloned().unwrap_or_default();
        let workflows = names
            .iter()
            .map(|name| {
                junction_flow::load(templates::find(name).unwrap().source, &overrides).unwrap()
            })
            .collect();
        Harness {
            planner: Planner::new(workflows).unwrap(),
            profiles: HashMap::new(),
            globals: Globals::default(),
            clock_ms: 1_790_000_000_000,
            counter: 0,
        }
    }

    /// Plans one message; `body` gets a messageId, a timestamp (advancing by `after_ms`).
    fn send(&mut self, after_ms: i64, mut body: Value) -> Plan {
        self.clock_ms += after_ms;
        self.counter += 1;
        body["messageId"] = json!(format!("m{}", self.counter));
        body["timestamp"] = json!(
            chrono::DateTime::from_timestamp_millis(self.clock_ms)
                .unwrap()
                .to_rfc3339()
        );
        let identity = body["userId"]
            .as_str()
            .or(body["anonymousId"].as_str())
            .unwrap()
            .to_owned();
        let kind = body["type"].as_str().unwrap().to_owned();
        let message_id = body["messageId"].as_str().unwrap().to_owned();
        let profile = self.profiles.entry(identity.clone()).or_default();
        self.planner.plan_event(
            EventInput {
                message_id: &message_id,
                kind: &kind,
                identity: &identity,
                body: &body,
                timestamp_ms: self.clock_ms,
                segment_profile: None,
            },
            profile,
            &mut self.globals,
        )
    }

    fn track(&mut self, after_ms: i64, user: &str, event: &str, properties: Value) -> Plan {
        self.send(
            after_ms,
            json!({"type": "track", "userId": user, "event": event, "properties": properties}),
        )
    }
}

fn kinds(plan: &Plan) -> Vec<&'static str> {
    plan.actions.iter().map(|a| a.action.kind()).collect()
}

const DAY: i64 = 86_400_000;

#[test]
fn profile_sync_maps_traits_and_last_seen() {
    let mut h = Harness::new(&["profile-sync"], json!({}));
    let plan = h.send(0, json!({"type": "identify", "userId": "u1", "traits": {"email": "a@x.io", "plan": "pro", "mrr": 99}}));
    assert_eq!(plan.actions.len(), 1);
    let action = &plan.actions[0];
    assert_eq!(action.id, "m1/profile-sync/0");
    assert_eq!(action.who.email.as_deref(), Some("a@x.io"));
    let Action::Contact { traits, fields } = &action.action else {
        panic!("{action:?}")
    };
    assert_eq!(traits["plan"], "pro");
    assert_eq!(fields["last_seen_at"], json!(1_790_000_000));
}

#[test]
fn lead_score_fires_once_per_crossing_and_rotates_reps() {
    let mut h = Harness::new(&["lead-score"], json!({}));
    // 20 + 20 = 40: below 50.
    assert!(
        h.track(0, "lead1", "Pricing Viewed", json!({}))
            .actions
            .is_empty()
    );
    assert!(
        h.track(1000, "lead1", "Demo Requested", json!({}))
            .actions
            .is_empty()
    );
    // 50: crosses.
    let crossed = h.track(1000, "lead1", "Feature Used", json!({}));
    assert_eq!(kinds(&crossed), ["tag", "owner", "note"]);
    let Action::Owner { admin } = &crossed.actions[1].action else {
        panic!()
    };
    assert_eq!(admin, "991267002");
    let Action::Note {
        admin: author,
        body,
    } = &crossed.actions[2].action
    else {
        panic!()
    };
    assert_eq!(author, "991267002");
    assert!(
        body.contains("Lead score 50 crossed") && body.contains("Pricing Viewed"),
        "{body}"
    );
    // Higher still: no second firing.
    assert!(
        h.track(1000, "lead1", "Pricing Viewed", json!({}))
            .actions
            .is_empty()
    );
    // A second user crossing gets the next rep.
    for event in ["Pricing Viewed", "Pricing Viewed", "Demo Requested"] {
        let plan = h.track(1000, "lead2", event, json!({}));
        if let Some(owner) = plan.actions.iter().find(|a| a.action.kind() == "owner") {
            assert_eq!(
                owner.action,
                Action::Owner {
                    admin: "991267003".into()
                }
            );
        }
    }
    // 31 days later the window has emptied: the score falls below 40, re-arms, and a new
    // crossing fires again.
    assert!(
        h.track(31 * DAY, "lead1", "Pricing Viewed", json!({}))
            .actions
            .is_empty()
    );
    h.track(1000, "lead1", "Pricing Viewed", json!({}));
    assert_eq!(
        kinds(&h.track(1000, "lead1", "Demo Requested", json!({}))),
        ["tag", "owner", "note"]
    );
}

#[test]
fn inactivity_waits_and_a_feature_use_ends_the_wait() {
    let mut h = Harness::new(&["inactivity"], json!({"delay": "2s"}));
    let started = h.track(0, "u1", "Signed Up", json!({}));
    assert!(started.actions.is_empty());
    assert_eq!(started.timers.len(), 1);
    let timer = started.timers[0].clone();
    assert_eq!(timer.fire_at_ms - h.clock_ms, 2_000);
    // Times out: the on_timeout steps, a tag and a message.
    let mut profile = h.profiles["u1"].clone();
    let fired = h.planner.plan_timer(&timer, &mut profile, &mut h.globals);
    assert_eq!(kinds(&fired), ["tag", "message"]);
    assert_eq!(fired.actions[0].id, "m1/inactivity/0.on_timeout.0");
    // Ended by use: the wait comes due at once and the run ends with nothing to send.
    let other = h.track(0, "u2", "Signed Up", json!({}));
    let used = h.track(500, "u2", "Feature Used", json!({}));
    assert_eq!(
        used.rescheduled_timers,
        [(other.timers[0].id.clone(), h.clock_ms)]
    );
    let mut profile = h.profiles["u2"].clone();
    assert!(
        h.planner
            .plan_timer(&other.timers[0], &mut profile, &mut h.globals)
            .actions
            .is_empty()
    );
    // A person enters once.
    assert!(h.track(0, "u2", "Signed Up", json!({})).timers.is_empty());
}

#[test]
fn onboarding_points_to_the_next_milestone_once() {
    let mut h = Harness::new(&["onboarding"], json!({}));
    let first = h.track(0, "u1", "Teammate Invited", json!({}));
    let Action::Message { body, channel, .. } = &first.actions[0].action else {
        panic!()
    };
    assert_eq!(*channel, MessageChannel::Inapp);
    assert!(
        body.contains("teammate invited") && body.contains("complete your profile"),
        "{body}"
    );
    assert!(
        h.track(0, "u1", "Teammate Invited", json!({}))
            .actions
            .is_empty(),
        "reached already"
    );
    h.track(0, "u1", "Profile Completed", json!({}));
    let last = h.track(0, "u1", "Integration Connected", json!({}));
    let Action::Message { body, .. } = &last.actions[0].action else {
        panic!()
    };
    assert!(body.contains("You're all set"), "{body}");
}

#[test]
fn churn_risk_from_a_signal_or_a_login_drop_at_most_monthly() {
    let mut h = Harness::new(&["churn-risk"], json!({}));
    let plan = h.track(0, "u1", "Payment Failed", json!({}));
    assert_eq!(kinds(&plan), ["tag", "contact", "conversation"]);
    let Action::Conversation {
        assign_admin, note, ..
    } = &plan.actions[2].action
    else {
        panic!()
    };
    assert_eq!(assign_admin.as_deref(), Some("991267004"));
    assert!(note.as_deref().unwrap().contains("Payment Failed"));
    assert!(
        h.track(DAY, "u1", "Payment Failed", json!({}))
            .actions
            .is_empty(),
        "flagged this month already"
    );

    // Six logins one week, then one the next: a drop.
    for _ in 0..6 {
        assert!(
            h.track(DAY, "u2", "Logged In", json!({}))
                .actions
                .is_empty()
        );
    }
    let dropped = h.track(8 * DAY, "u2", "Logged In", json!({}));
    assert_eq!(kinds(&dropped), ["tag", "contact", "conversation"]);
    let Action::Contact { traits, .. } = &dropped.actions[1].action else {
        panic!()
    };
    assert!(
        traits["churn_signal"]
            .as_str()
            .unwrap()
            .starts_with("Logins dropped to 1"),
        "{traits:?}"
    );
}

#[test]
fn company_sync_alerts_once_when_health_drops() {
    let mut h = Harness::new(
        &["company-sync"],
        json!({"alert_url": "http://alerts.invalid/hook", "account_manager": "991267004"}),
    );
    let group = |health: i64| json!({"type": "group", "userId": "u1", "groupId": "g1", "traits": {"name": "Acme", "employees": 40, "plan": "pro", "health_score": health}});
    let first = h.send(0, group(80));
    assert_eq!(kinds(&first), ["company"]);
    let Action::Company { fields, attach, .. } = &first.actions[0].action else {
        panic!()
    };
    assert_eq!((fields["size"].clone(), *attach), (json!(40), true));
    assert_eq!(fields["custom_attributes"]["health_score"], 80);
    assert_eq!(kinds(&h.send(0, group(30))), ["company", "note", "http"]);
    assert_eq!(
        kinds(&h.send(0, group(20))),
        ["company"],
        "still low: no new alert"
    );
}

/// An identify's `company` and `companies` traits, as Segment's destination reads them: each
/// company is upserted and the contact attached, `remove: true` detaches, and a company given
/// only by name gets the id Segment's classic destination derived from the name.
#[test]
fn profile_sync_attaches_and_detaches_the_companies_in_traits() {
    let mut h = Harness::new(&["profile-sync"], json!({}));
    let plan = h.send(
        0,
        json!({"type": "identify", "userId": "u1", "traits": {
            "plan": "pro",
            "company": {"id": "acme", "name": "Acme", "plan": "enterprise", "employees": 40},
            "companies": ["Initech", {"company_id": 42, "remove": true}, {"plan": "nameless"}]
        }}),
    );
    assert_eq!(kinds(&plan), ["contact", "company", "company", "detach"]);
    let Action::Contact { traits, .. } = &plan.actions[0].action else {
        panic!()
    };
    assert!(!traits.contains_key("company") && !traits.contains_key("companies"));
    let Action::Company {
        company_id,
        fields,
        attach,
    } = &plan.actions[1].action
    else {
        panic!()
    };
    assert_eq!((company_id.as_str(), *attach), ("acme", true));
    assert_eq!(fields["size"], 40);
    assert_eq!(fields["plan"], "enterprise");
    let Action::Company { company_id, .. } = &plan.actions[2].action else {
        panic!()
    };
    assert_eq!(company_id, "721719249", "string-hash of \"Initech\"");
    assert_eq!(
        plan.actions[3].action,
        Action::Detach {
            company_id: "42".into()
        }
    );
}

/// The same ids as the `string-hash` npm package (which Segment's classic destination used),
/// computed with it in node.
#[test]
fn company_ids_from_names_match_segments_classic_destination() {
    for (name, id) in [
        ("Acme Inc", "3302265675"),
        ("Initech", "721719249"),
        ("Société Générale", "776683732"),
        ("😀 Co", "181040308"),
    ] {
        assert_eq!(
            junction_flow::plan::company_id_from_name(name),
            id,
            "{name}"
        );
    }
}

#[test]
fn track_events_follow_intercom_metadata_rules() {
    let mut h = Harness::new(&["track-events"], json!({}));
    let mut properties = json!({"revenue": 19.99, "currency": "EUR", "email": "x@y.z", "nested": {"a": 1}, "link": {"url": "https://x", "value": "X"}});
    for n in 0..12 {
        properties[format!("k{n:02}")] = json!(n);
    }
    let plan = h.track(0, "u1", "Order Completed", properties);
    let Action::Event {
        name,
        metadata,
        created_at,
    } = &plan.actions[0].action
    else {
        panic!()
    };
    assert_eq!(
        (name.as_str(), *created_at),
        ("Order Completed", 1_790_000_000)
    );
    assert_eq!(metadata.len(), 10);
    assert_eq!(
        metadata["price"],
        json!({"amount": 1999, "currency": "EUR"})
    );
    assert!(!metadata.contains_key("email") && !metadata.contains_key("revenue"));
}

#[test]
fn event_message_sends_in_app_or_email() {
    let mut h = Harness::new(&["event-message"], json!({}));
    h.send(
        0,
        json!({"type": "identify", "userId": "u1", "traits": {"first_name": "Ann"}}),
    );
    let abandoned = h.track(0, "u1", "Feature Abandoned", json!({"feature": "Reports"}));
    let Action::Message {
        channel,
        body,
        from,
        ..
    } = &abandoned.actions[0].action
    else {
        panic!()
    };
    assert_eq!(
        (*channel, from.as_str()),
        (MessageChannel::Inapp, "991267001")
    );
    assert!(
        body.starts_with("Hi Ann,") && body.contains("Reports"),
        "{body}"
    );
    let expiring = h.track(0, "u1", "Trial Expiring Soon", json!({"ends_on": "Friday"}));
    let Action::Message {
        channel, subject, ..
    } = &expiring.actions[0].action
    else {
        panic!()
    };
    assert_eq!(
        (*channel, subject.as_deref()),
        (MessageChannel::Email, Some("Your trial ends Friday"))
    );
    assert!(
        h.track(0, "u1", "Something Else", json!({}))
            .actions
            .is_empty()
    );
}
