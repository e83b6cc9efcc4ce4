//! The shipped templates end to end: Segment events in over HTTP to the real `junction`
//! binary, planned and delivered to the Intercom emulator, checked in the emulator's state and
//! request journal. Plus the durable timer across a restart, and per-user order under load.
//! Every test runs on each store: SQLite and PostgreSQL (the `on_each_store!` list at the end).

mod common;

use common::Backend;
use common::scenario::{Scenario, alert_sink};
use serde_json::{Value, json};
use std::time::Duration;

async fn profile_sync_creates_one_contact_and_keeps_it_up_to_date(backend: Backend) {
    let s = Scenario::start_on(backend, "  - template: profile-sync\n").await;
    s.identify("u1", json!({"email": "ann@example.com", "name": "Ann", "plan": "pro", "industry": "retail", "mrr": 99.5})).await;
    s.identify(
        "u1",
        json!({"plan": "enterprise", "unsubscribedFromEmails": true, "user_hash": "a1b2c3"}),
    )
    .await;
    // A burst for a new user: still one contact.
    let burst: Vec<_> = (0..20)
        .map(|n| s.identify("u2", json!({"email": "bo@example.com", "seats": n})))
        .collect();
    futures_util::future::join_all(burst).await;
    // u1: a create and an update; u2: a create and up to 19 updates — fewer when updates that
    // queued up are coalesced (u1's two identifies may even become one create).
    s.until("both users' latest traits", |s| {
        let writes = s
            .calls_to("PUT", "")
            .into_iter()
            .chain(s.calls_at("POST", "/contacts"));
        s.calls_at("POST", "/contacts").len() == 2
            && writes
                .into_iter()
                .any(|w| w.body["custom_attributes"]["plan"] == "enterprise")
    })
    .await;
    s.quiet().await;
    let contacts = s.contacts().await;
    let of = |user: &str| {
        contacts
            .iter()
            .filter(|c| c["external_id"] == user)
            .cloned()
            .collect::<Vec<_>>()
    };
    assert_eq!(of("u1").len(), 1, "{contacts:#?}");
    assert_eq!(of("u2").len(), 1, "{contacts:#?}");
    let ann = &of("u1")[0];
    assert_eq!(
        (ann["email"].as_str(), ann["name"].as_str()),
        (Some("ann@example.com"), Some("Ann"))
    );
    assert_eq!(ann["custom_attributes"]["plan"], "enterprise");
    assert_eq!(ann["custom_attributes"]["industry"], "retail");
    assert_eq!(ann["custom_attributes"]["mrr"], 99.5);
    assert!(ann["last_seen_at"].as_i64().is_some());
    // As Segment's destination: the trait unsubscribes, the verification hash is never sent.
    assert_eq!(ann["unsubscribed_from_emails"], true, "{ann}");
    assert!(
        s.calls()
            .iter()
            .all(|c| !c.body.to_string().contains("a1b2c3")),
        "user_hash never reaches Intercom"
    );
    // Steady state: one call per identify (no lookups, no attribute reads).
    let after_first = s
        .calls()
        .iter()
        .filter(|e| e.method == "GET" && e.path == "/data_attributes")
        .count();
    assert!(
        after_first <= 3,
        "the attribute catalog is read only when a trait is new ({after_first} reads)"
    );
}

async fn event_triggered_messages_go_out_in_app_and_by_email(backend: Backend) {
    let s = Scenario::start_on(
        backend,
        "  - template: profile-sync\n  - template: event-message\n",
    )
    .await;
    s.identify(
        "u1",
        json!({"email": "ann@example.com", "first_name": "Ann"}),
    )
    .await;
    s.track("u1", "Feature Abandoned", json!({"feature": "Reports"}))
        .await;
    s.track("u1", "Trial Expiring Soon", json!({"ends_on": "Friday"}))
        .await;
    s.track("u1", "Unrelated", json!({})).await;
    s.until("two messages", |s| {
        s.calls_to("POST", "/messages").len() == 2
    })
    .await;
    let messages = s.calls_to("POST", "/messages");
    assert_eq!(messages[0].body["message_type"], "inapp");
    assert!(
        messages[0].body["body"]
            .as_str()
            .unwrap()
            .contains("Hi Ann, it looks like Reports")
    );
    assert_eq!(messages[1].body["message_type"], "email");
    assert_eq!(messages[1].body["subject"], "Your trial ends Friday");
    assert_eq!(messages[0].body["from"]["id"], 991267001);
    s.quiet().await;
    assert_eq!(s.calls_to("POST", "/messages").len(), 2);
}

async fn lead_score_tags_assigns_and_notes_once_per_crossing(backend: Backend) {
    let s = Scenario::start_on(backend, "  - template: lead-score\n").await;
    for event in ["Pricing Viewed", "Demo Requested"] {
        s.track("lead1", event, json!({})).await;
    }
    s.send("page", json!({"userId": "lead1", "name": "Pricing"}))
        .await;
    s.track("lead1", "Feature Used", json!({})).await; // 20 + 20 + 5 + 10 = 55: crossed
    s.track("lead1", "Pricing Viewed", json!({})).await; // higher still: no second firing
    for event in ["Pricing Viewed", "Pricing Viewed", "Demo Requested"] {
        s.track("lead2", event, json!({})).await;
    }
    s.until("two notes", |s| s.calls_to("POST", "/notes").len() == 2)
        .await;
    s.quiet().await;
    assert_eq!(s.calls_to("POST", "/notes").len(), 2, "once per crossing");
    assert_eq!(
        s.calls_to("POST", "/tags").len() - s.calls_at("POST", "/tags").len(),
        2,
        "two contacts tagged"
    );
    // Reps in turn: one each. Which lead got the first turn depends on which was planned
    // first, and the two may be planned side by side (in different planning partitions).
    let owner_of = |contacts: &[Value], user: &str| {
        contacts
            .iter()
            .find(|c| c["external_id"] == user)
            .map(|c| c["owner_id"].to_string())
    };
    let contacts = s.contacts().await;
    let mut owners = [owner_of(&contacts, "lead1"), owner_of(&contacts, "lead2")];
    owners.sort();
    assert_eq!(
        owners,
        [Some("991267002".to_owned()), Some("991267003".to_owned())],
        "reps in turn"
    );
    assert_eq!(s.calls_to("PUT", "").len(), 2, "one owner update each");
    // Each lead's note (the two leads may be planned and delivered in either order).
    let notes: Vec<String> = s
        .calls_to("POST", "/notes")
        .iter()
        .map(|c| c.body["body"].as_str().unwrap_or_default().to_owned())
        .collect();
    let lead1 = notes
        .iter()
        .find(|n| n.contains("Lead score 55 crossed 50"))
        .unwrap_or_else(|| panic!("lead1's note: {notes:?}"));
    assert!(lead1.contains("page: Pricing"), "{lead1}");
    assert!(
        notes.iter().any(|n| n.contains("Lead score 60 crossed 50")),
        "lead2's note: {notes:?}"
    );
    let contacts = s.contacts().await;
    assert_eq!(contacts.len(), 2);
    assert!(
        contacts
            .iter()
            .all(|c| c["tags"]["data"].as_array().is_some_and(|t| t.len() == 1)),
        "{contacts:#?}"
    );
}

/// As Segment's destination: an identify sent on a user's behalf (`context.active: false`)
/// updates their traits but not when they were last seen, and `integrations.Intercom`'s
/// `unsubscribedFromEmails` unsubscribes them.
async fn an_inactive_identify_leaves_last_seen_alone(backend: Backend) {
    let s = Scenario::start_on(backend, "  - template: profile-sync\n").await;
    s.send(
        "identify",
        json!({"userId": "backend-1", "traits": {"plan": "pro"}, "context": {"active": false},
               "integrations": {"Intercom": {"unsubscribedFromEmails": true}}}),
    )
    .await;
    s.identify("active-1", json!({"plan": "pro"})).await;
    s.until("both contacts", |s| {
        s.calls_at("POST", "/contacts").len() == 2
    })
    .await;
    s.quiet().await;
    let contacts = s.contacts().await;
    let of = |user: &str| contacts.iter().find(|c| c["external_id"] == user).unwrap();
    assert_eq!(of("backend-1")["custom_attributes"]["plan"], "pro");
    assert!(
        of("backend-1")["last_seen_at"].is_null(),
        "{}",
        of("backend-1")
    );
    assert!(
        of("active-1")["last_seen_at"].as_i64().is_some(),
        "{}",
        of("active-1")
    );
}

/// As Segment's destination: a group call from an anonymous visitor upserts the company and
/// creates no lead.
async fn an_anonymous_group_upserts_the_company_and_creates_no_lead(backend: Backend) {
    let s = Scenario::start_on(backend, "  - template: company-sync\n").await;
    s.send(
        "group",
        json!({"anonymousId": "visitor-1", "groupId": "initech", "traits": {"name": "Initech"}}),
    )
    .await;
    s.until("the company", |s| {
        !s.calls_at("POST", "/companies").is_empty()
    })
    .await;
    s.quiet().await;
    let companies = s.get("/companies").await;
    assert_eq!(companies["data"][0]["company_id"], "initech", "{companies}");
    assert!(s.contacts().await.is_empty(), "no lead was created");
    assert!(s.calls_at("POST", "/contacts").is_empty());
}

async fn company_sync_upserts_attaches_and_alerts_on_a_health_drop(backend: Backend) {
    let (hook, alerts) = alert_sink().await;
    let s = Scenario::start_on(backend, &format!(
        "  - template: company-sync\n    vars: {{ account_manager: \"991267004\", alert_url: \"{hook}\" }}\n"
    ))
    .await;
    let group = |health: i64| json!({"userId": "u1", "groupId": "acme", "traits": {"name": "Acme", "employees": 40, "plan": "pro", "monthly_spend": 1200, "industry": "retail", "website": "https://acme.test", "health_score": health}});
    s.send("group", group(80)).await;
    s.send("group", group(30)).await;
    s.send("group", group(20)).await;
    s.until("the alert", |_| !alerts.lock().unwrap().is_empty())
        .await;
    s.quiet().await;
    let companies = s.get("/companies").await;
    let acme = &companies["data"][0];
    assert_eq!(
        (
            acme["company_id"].as_str(),
            acme["size"].as_i64(),
            acme["plan"]["name"].as_str().or(acme["plan"].as_str())
        ),
        (Some("acme"), Some(40), Some("pro"))
    );
    assert_eq!(acme["custom_attributes"]["health_score"], 20);
    assert_eq!(s.calls_at("POST", "/companies").len(), 3);
    assert_eq!(s.calls_to("POST", "/notes").len(), 1, "one alert per drop");
    assert_eq!(alerts.lock().unwrap().len(), 1);
    assert!(
        alerts.lock().unwrap()[0]["text"]
            .as_str()
            .unwrap()
            .contains("Acme dropped to 30")
    );
    let attached = s.calls_to("POST", "/companies").len() - s.calls_at("POST", "/companies").len();
    assert_eq!(
        attached, 1,
        "the user is attached once: the identity map knows the attachment"
    );
}

async fn churn_risk_tags_flags_opens_an_assigned_conversation_and_alerts(backend: Backend) {
    let (hook, alerts) = alert_sink().await;
    let s = Scenario::start_on(backend, &format!("  - template: profile-sync\n  - template: churn-risk\n    vars: {{ alert_url: \"{hook}\" }}\n")).await;
    s.identify("u1", json!({"email": "ann@example.com"})).await;
    s.track("u1", "Payment Failed", json!({})).await;
    s.track("u1", "Payment Failed", json!({})).await; // flagged this month already
    s.until("the alert", |_| !alerts.lock().unwrap().is_empty())
        .await;
    s.quiet().await;
    assert_eq!(s.calls_to("POST", "/conversations").len(), 1);
    let parts = s.calls_to("POST", "/parts");
    assert_eq!(parts[0].body["assignee_id"], "991267004");
    let replies = s.calls_to("POST", "/reply");
    assert_eq!(replies[0].body["message_type"], "note");
    let contact = &s.contacts().await[0];
    assert_eq!(contact["custom_attributes"]["churn_risk"], true);
    assert_eq!(
        contact["custom_attributes"]["churn_signal"],
        "Payment Failed"
    );
    assert_eq!(contact["tags"]["data"].as_array().unwrap().len(), 1);
    assert_eq!(alerts.lock().unwrap().len(), 1);
    assert!(
        alerts.lock().unwrap()[0]["text"]
            .as_str()
            .unwrap()
            .contains("ann@example.com")
    );
}

async fn onboarding_acknowledges_each_milestone_once(backend: Backend) {
    let s = Scenario::start_on(backend, "  - template: onboarding\n").await;
    s.track("u1", "Teammate Invited", json!({})).await;
    s.track("u1", "Teammate Invited", json!({})).await;
    s.track("u1", "Profile Completed", json!({})).await;
    s.track("u1", "Integration Connected", json!({})).await;
    s.until("three messages", |s| {
        s.calls_to("POST", "/messages").len() == 3
    })
    .await;
    s.quiet().await;
    let bodies: Vec<String> = s
        .calls_to("POST", "/messages")
        .iter()
        .map(|m| m.body["body"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(bodies.len(), 3, "{bodies:?}");
    assert!(
        bodies[0].contains("teammate invited") && bodies[0].contains("complete your profile"),
        "{bodies:?}"
    );
    assert!(
        bodies[1].contains("connect your first integration"),
        "{bodies:?}"
    );
    assert!(bodies[2].contains("You're all set"), "{bodies:?}");
}

async fn inactivity_timer_fires_unless_the_feature_is_used(backend: Backend) {
    let s = Scenario::start_on(
        backend,
        "  - template: inactivity\n    vars: { delay: 2s }\n",
    )
    .await;
    s.track("idle", "Signed Up", json!({})).await;
    s.track("busy", "Signed Up", json!({})).await;
    s.track("busy", "Feature Used", json!({})).await;
    // The busy user's wait has ended; the idle user's still runs (its timer has not fired, so
    // its message cannot have been planned yet).
    s.timers_pending(1).await;
    assert!(s.calls_to("POST", "/messages").is_empty(), "too early");
    s.until("the nudge", |s| s.calls_to("POST", "/messages").len() == 1)
        .await;
    s.quiet().await;
    let contacts = s.contacts().await;
    assert_eq!(
        contacts.len(),
        1,
        "only the idle user was contacted: {contacts:#?}"
    );
    assert_eq!(contacts[0]["external_id"], "idle");
    assert_eq!(s.calls_to("POST", "/messages").len(), 1);
}

async fn a_pending_wait_fires_after_a_restart(backend: Backend) {
    let mut s = Scenario::start_on(
        backend,
        "  - template: inactivity\n    vars: { delay: 1s }\n",
    )
    .await;
    let signed_up = std::time::Instant::now();
    s.track("u1", "Signed Up", json!({})).await;
    s.timers_pending(1).await;
    s.server.kill();
    // Down past the due time: the downtime is the scenario, not a guess at a state.
    tokio::time::sleep(Duration::from_millis(1_200).saturating_sub(signed_up.elapsed())).await;
    assert!(s.calls_to("POST", "/messages").is_empty());
    s.server.spawn().await;
    s.until("the nudge after the restart", |s| {
        s.calls_to("POST", "/messages").len() == 1
    })
    .await;
    s.quiet().await;
    assert_eq!(s.calls_to("POST", "/messages").len(), 1);
    assert_eq!(s.calls_at("POST", "/tags").len(), 1);
}

async fn track_becomes_a_data_event_even_before_identify(backend: Backend) {
    let s = Scenario::start_on(backend, "  - template: track-events\n").await;
    s.track(
        "new-user",
        "Order Completed",
        json!({"revenue": 19.99, "currency": "EUR", "item": {"sku": "A1"}}),
    )
    .await;
    s.until("the data event", |s| {
        s.calls_to("POST", "/events").len() == 1
    })
    .await;
    let event = &s.calls_to("POST", "/events")[0].body;
    assert_eq!(event["event_name"], "Order Completed");
    assert_eq!(
        event["metadata"]["price"],
        json!({"amount": 1999, "currency": "EUR"})
    );
    assert_eq!(event["metadata"]["item.sku"], "A1");
    // Segment's destination would have failed with 404 here; Junction created the user.
    assert_eq!(s.contacts().await[0]["external_id"], "new-user");
}

/// As Segment's destination: an identify's `company` trait upserts the company and attaches the
/// contact (once: later identifies cost the upsert only), and `remove: true` detaches it.
async fn identify_company_traits_attach_and_detach(backend: Backend) {
    let s = Scenario::start_on(backend, "  - template: profile-sync\n").await;
    s.identify(
        "u1",
        json!({"email": "ann@example.com", "company": {"id": "acme", "name": "Acme", "plan": "pro"}}),
    )
    .await;
    s.identify("u1", json!({"company": {"id": "acme", "name": "Acme", "plan": "enterprise"}, "companies": ["Initech"]}))
        .await;
    s.until("three upserts", |s| {
        s.calls_at("POST", "/companies").len() == 3
    })
    .await;
    s.quiet().await;
    let contact = s.contacts().await[0].clone();
    let id = contact["id"].as_str().unwrap().to_owned();
    let attaches = s.calls_at("POST", &format!("/contacts/{id}/companies"));
    assert_eq!(attaches.len(), 2, "acme once, initech once");
    let companies = s.get(&format!("/contacts/{id}/companies")).await;
    let mut ids: Vec<&str> = companies["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["company_id"].as_str().unwrap())
        .collect();
    ids.sort_unstable();
    assert_eq!(
        ids,
        ["721719249", "acme"],
        "Initech's id derived from its name"
    );
    assert!(
        contact["custom_attributes"].get("company_name").is_none(),
        "{contact}"
    );

    s.identify("u1", json!({"company": {"id": "acme", "remove": true}}))
        .await;
    s.until("the detach", |s| {
        s.calls()
            .iter()
            .any(|c| c.method == "DELETE" && c.path.contains("/companies/"))
    })
    .await;
    let companies = s.get(&format!("/contacts/{id}/companies")).await;
    let ids: Vec<&str> = companies["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["company_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["721719249"]);
    // Attached again after the detach: the identity map forgot the attachment.
    s.identify("u1", json!({"company": {"id": "acme", "name": "Acme"}}))
        .await;
    s.until("attached again", |s| {
        s.calls_at("POST", &format!("/contacts/{id}/companies"))
            .len()
            == 3
    })
    .await;
}

/// A Segment deletion request (`type: delete`): the user's contact is deleted in Intercom, the
/// identity map forgets it, and the event log keeps the request but redacts the user's earlier
/// events. A second request for the same user is a success with nothing to do.
async fn a_deletion_request_deletes_the_contact_and_redacts_the_log(backend: Backend) {
    let s = Scenario::start_on(
        backend,
        "  - template: profile-sync\n  - template: track-events\n",
    )
    .await;
    s.identify("u1", json!({"email": "ann@example.com", "plan": "pro"}))
        .await;
    s.track("u1", "Order Completed", json!({"revenue": 10}))
        .await;
    s.identify("u2", json!({"email": "bo@example.com"})).await;
    s.until("both contacts and the event", |s| {
        s.calls_at("POST", "/contacts").len() == 2 && s.calls_to("POST", "/events").len() == 1
    })
    .await;
    let ann = s.created_contact("u1").await;
    // As Segment sends a deletion to a Destination Function's onDelete, forwarded in a batch.
    s.send(
        "batch",
        json!({"batch": [{"type": "delete", "userId": "u1", "messageId": "deletion-1"}]}),
    )
    .await;
    s.until("the delete", |s| {
        !s.calls_at("DELETE", &format!("/contacts/{ann}")).is_empty()
    })
    .await;
    s.quiet().await;
    let contacts = s.contacts().await;
    assert_eq!(contacts.len(), 1, "{contacts:#?}");
    assert_eq!(contacts[0]["external_id"], "u2");

    let events = s.admin("/api/events?userId=u1").await["items"].clone();
    let events = events.as_array().unwrap();
    assert_eq!(events.len(), 3, "{events:#?}");
    for event in events {
        if event["messageId"] == "deletion-1" {
            assert_eq!(event["body"]["type"], "delete");
        } else {
            assert_eq!(
                event["body"]["redacted"], "erased at the user's request",
                "{event}"
            );
            assert!(!event["body"].to_string().contains("ann@example.com"));
        }
    }
    let bo = s.admin("/api/events?userId=u2").await["items"][0].clone();
    assert_eq!(bo["body"]["traits"]["email"], "bo@example.com");

    // Again: already gone is success, and no contact is created to be deleted.
    s.send("delete", json!({"userId": "u1", "messageId": "deletion-2"}))
        .await;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let action = s
            .admin("/api/actions/deletion-2/junction.delete/delete")
            .await;
        if action["status"] == "done" {
            assert!(
                action.to_string().contains("nothing to delete"),
                "{action:#}"
            );
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{action:#}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    s.quiet().await;
    assert!(
        s.admin("/api/dlq").await["items"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    assert_eq!(s.calls_at("POST", "/contacts").len(), 2);
    assert_eq!(s.calls_to("DELETE", "").len(), 1);
}

/// `intercom.deletion: archive` archives the contact instead.
async fn a_deletion_request_can_archive_instead(backend: Backend) {
    let s = Scenario::start_config_on(
        backend,
        "intercom:\n  deletion: archive\nworkflows:\n  - template: profile-sync\n",
        Some(common::scenario::TOKEN),
    )
    .await;
    s.identify("u1", json!({"email": "ann@example.com"})).await;
    let ann = s.created_contact("u1").await;
    s.send("delete", json!({"userId": "u1"})).await;
    s.until("the archive", |s| {
        !s.calls_at("POST", &format!("/contacts/{ann}/archive"))
            .is_empty()
    })
    .await;
    assert!(s.calls_to("DELETE", "").is_empty());
}

/// As Segment's destination: a track or group without a userId finds its contact by email
/// (`properties.email`, a group's `traits.email`), and the data event carries the email. An
/// email nobody has makes a lead with it (the default `unmatched: create_lead`).
async fn a_track_or_group_without_a_user_id_finds_its_contact_by_email(backend: Backend) {
    let s = Scenario::start_on(
        backend,
        "  - template: profile-sync\n  - template: track-events\n  - template: company-sync\n",
    )
    .await;
    s.identify("u1", json!({"email": "ann@example.com", "seats": 3}))
        .await;
    let ann = s.created_contact("u1").await;
    s.send(
        "track",
        json!({"anonymousId": "visitor-1", "event": "Docs Read", "properties": {"email": "ann@example.com", "page": "/api"}}),
    )
    .await;
    s.send(
        "group",
        json!({"anonymousId": "visitor-2", "groupId": "acme", "traits": {"name": "Acme", "email": "ann@example.com", "monthly_spend": 1200}}),
    )
    .await;
    s.send(
        "track",
        json!({"anonymousId": "visitor-3", "event": "Docs Read", "properties": {"email": "new@example.com"}}),
    )
    .await;
    s.until("two events and an attach", |s| {
        s.calls_to("POST", "/events").len() == 2 && s.calls_to("POST", "/companies").len() == 2
    })
    .await;
    s.quiet().await;
    let events = s.calls_to("POST", "/events");
    let anns = events
        .iter()
        .find(|e| e.body["email"] == "ann@example.com")
        .expect("the event found by email carries it");
    assert_eq!(anns.body["id"], ann.as_str());
    assert_eq!(anns.body["metadata"], json!({"page": "/api"}));
    let attach = s
        .calls()
        .into_iter()
        .find(|e| e.method == "POST" && e.path.ends_with("/companies") && e.path != "/companies")
        .unwrap();
    assert_eq!(attach.path, format!("/contacts/{ann}/companies"));
    let contacts = s.contacts().await;
    assert_eq!(contacts.len(), 2, "ann and one new lead: {contacts:#?}");
    let lead = contacts.iter().find(|c| c["id"] != ann.as_str()).unwrap();
    assert_eq!(
        (lead["role"].as_str(), lead["email"].as_str()),
        (Some("lead"), Some("new@example.com"))
    );
    // Numbers keep their type: an integer trait and an integer company spend stay integers.
    let ann_contact = contacts.iter().find(|c| c["id"] == ann.as_str()).unwrap();
    assert!(
        ann_contact["custom_attributes"]["seats"].is_i64(),
        "{ann_contact}"
    );
    let upsert = &s.calls_at("POST", "/companies")[0];
    assert!(upsert.body["monthly_spend"].is_i64(), "{}", upsert.body);
}

/// `unmatched: dead_letter`: an email nobody has fails the action for good, with the reason,
/// and creates nothing.
async fn an_unmatched_email_is_dead_lettered_when_the_workflow_says_so(backend: Backend) {
    let s = Scenario::start_on(
        backend,
        "  - template: track-events\n    unmatched: dead_letter\n",
    )
    .await;
    s.send(
        "track",
        json!({"anonymousId": "visitor-1", "event": "Docs Read", "properties": {"email": "nobody@example.com"}}),
    )
    .await;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let letter = loop {
        let items = s.admin("/api/dlq").await["items"].clone();
        if let Some(letter) = items.as_array().and_then(|items| items.first()) {
            break letter.clone();
        }
        assert!(std::time::Instant::now() < deadline, "no dead letter");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        letter.to_string().contains("no_unique_contact"),
        "{letter:#}"
    );
    assert!(s.calls_at("POST", "/contacts").is_empty());
    assert!(s.calls_to("POST", "/events").is_empty());
}

/// 1,000 events from 50 users, interleaved in batches: each user's Intercom calls happen in
/// the order of their events.
async fn each_users_calls_keep_their_events_order(backend: Backend) {
    let s = Scenario::start_on(backend, "  - template: track-events\n").await;
    let users = 50;
    let per_user = 20;
    let mut batch = Vec::new();
    for n in 0..per_user {
        for u in 0..users {
            batch.push(json!({"type": "track", "userId": format!("user{u}"), "event": format!("step {n:02}")}));
        }
    }
    for chunk in batch.chunks(100) {
        s.send("batch", json!({"batch": chunk})).await;
    }
    s.until("1,000 data events", |s| {
        s.calls_to("POST", "/events").len() == users * per_user
    })
    .await;
    let mut seen: std::collections::HashMap<String, Vec<String>> = Default::default();
    for call in s.calls_to("POST", "/events") {
        seen.entry(call.body["id"].as_str().unwrap().to_owned())
            .or_default()
            .push(call.body["event_name"].as_str().unwrap().to_owned());
    }
    assert_eq!(seen.len(), users, "one contact per user");
    for (contact, names) in seen {
        let mut sorted = names.clone();
        sorted.sort();
        assert_eq!(names, sorted, "contact {contact}'s events out of order");
        assert_eq!(names.len(), per_user);
    }
}

/// `wait: {until: …}`: the awaited event ends the wait at once (the stored timer is brought
/// forward) and the run goes on; a person who never does it is still waiting.
async fn a_wait_until_goes_on_when_the_awaited_event_arrives(backend: Backend) {
    let files = tempfile::tempdir().unwrap();
    let file = files.path().join("activation.yaml");
    std::fs::write(&file, ACTIVATION).unwrap();
    let s = Scenario::start_on(backend, &format!("  - file: {}\n", file.display())).await;
    s.track("u1", "Signed Up", json!({})).await;
    s.track("u2", "Signed Up", json!({})).await;
    s.track("u1", "Project Created", json!({})).await;
    let u1 = s.created_contact("u1").await;
    let tagged = format!("/contacts/{u1}/tags");
    s.until("u1 tagged", |s| !s.calls_at("POST", &tagged).is_empty())
        .await;
    assert_eq!(s.calls_at("POST", "/tags")[0].body["name"], "activated");
    assert_eq!(s.contacts().await.len(), 1, "u2 is still waiting");
    let delivery = s.admin("/api/delivery").await;
    assert_eq!(delivery["timersPending"], 1, "u2 still waits: {delivery}");
}

const ACTIVATION: &str = "name: activation
trigger: { on: segment.track, event: Signed Up }
steps:
  - wait:
      until: { event: Project Created }
      timeout: 1d
  - intercom.tag: activated
";

/// A workspace cap: the message over it is kept as `capped` (listed, its run too, counted by a
/// metric), not sent, until an operator releases it.
async fn a_capped_message_is_kept_listed_and_released(backend: Backend) {
    let s = Scenario::start_config_on(
        backend,
        "journeys:\n  caps: { messages: 1 per 1d }\nworkflows:\n  - template: event-message\n",
        Some(common::scenario::TOKEN),
    )
    .await;
    s.track("u1", "Feature Abandoned", json!({"feature": "Reports"}))
        .await;
    s.track("u1", "Feature Abandoned", json!({"feature": "Exports"}))
        .await;
    s.until("one message", |s| {
        s.calls_to("POST", "/messages").len() == 1
    })
    .await;
    let capped = wait_for_items(&s, "/api/dlq?capped=true", 1).await;
    assert_eq!(capped[0]["code"], "capped");
    assert_eq!(capped[0]["error"], "workspace cap 1 per 1d reached");
    assert_eq!(capped[0]["kind"], "message");
    let runs = s.admin("/api/runs?status=capped").await;
    assert_eq!(runs["items"].as_array().unwrap().len(), 1, "{runs}");
    assert!(
        s.admin("/api/dlq").await["items"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    let metrics = s.server.metrics().await;
    assert!(
        metrics.contains("junction_messages_capped_total 1"),
        "{metrics}"
    );
    let released = s.admin_post("/api/dlq/release", json!({})).await;
    assert_eq!(released["released"], 1);
    s.until("the released message", |s| {
        s.calls_to("POST", "/messages").len() == 2
    })
    .await;
    let bodies: Vec<String> = s
        .calls_to("POST", "/messages")
        .iter()
        .map(|m| m.body["body"].as_str().unwrap().to_owned())
        .collect();
    assert!(bodies[1].contains("Exports"), "{bodies:?}");

    // `junction audit` tells u1's story: both events, their runs, each message's calls.
    s.quiet().await;
    let audit = s.cli(&["audit", "u1"]);
    let out = String::from_utf8_lossy(&audit.stdout);
    assert!(
        audit.status.success(),
        "{out}{}",
        String::from_utf8_lossy(&audit.stderr)
    );
    let contact = s.created_contact("u1").await;
    assert!(
        out.contains(&format!("Intercom contact {contact} (user_id u1)")),
        "{out}"
    );
    assert_eq!(
        out.matches("track \"Feature Abandoned\"").count(),
        2,
        "{out}"
    );
    assert_eq!(out.matches("run event-message: done").count(), 2, "{out}");
    assert_eq!(out.matches("POST /messages 200").count(), 2, "{out}");
    let nobody = s.cli(&["audit", "nobody-at-all"]);
    assert_eq!(nobody.status.code(), Some(2));
}

/// Polls an admin listing until it holds `n` items.
async fn wait_for_items(s: &Scenario, path: &str, n: usize) -> Vec<serde_json::Value> {
    common::eventually(String::new, async || {
        let items = s.admin(path).await["items"].as_array().unwrap().clone();
        if items.len() == n {
            Ok(items)
        } else {
            Err(format!("{path}: {items:?}, expected {n}"))
        }
    })
    .await
}

/// Quiet hours in the contact's time: a message planned inside the window waits (its run
/// paused, a timer pending); one whose window has ended (yesterday's, here) goes out.
async fn quiet_hours_hold_a_message_until_the_window_ends(backend: Backend) {
    let now = chrono::Utc::now();
    let clock = |at: chrono::DateTime<chrono::Utc>| at.format("%H:%M").to_string();
    let window = format!(
        "journeys:\n  quiet_hours: {{ from: \"{}\", to: \"{}\" }}\nworkflows:\n  - template: event-message\n",
        clock(now - chrono::Duration::hours(1)),
        clock(now + chrono::Duration::hours(2)),
    );
    let s = Scenario::start_config_on(backend, &window, Some(common::scenario::TOKEN)).await;
    s.track(
        "tonight",
        "Feature Abandoned",
        json!({"feature": "Reports"}),
    )
    .await;
    let yesterday = (now - chrono::Duration::days(1)).to_rfc3339();
    s.send(
        "track",
        json!({"userId": "last-night", "event": "Feature Abandoned", "timestamp": yesterday, "properties": {"feature": "Exports"}}),
    )
    .await;
    s.until("last night's message, released", |s| {
        s.calls_to("POST", "/messages").len() == 1
    })
    .await;
    let runs = wait_for_items(&s, "/api/runs?status=paused", 1).await;
    assert_eq!(runs[0]["user"], "tonight");
    let delivery = s.admin("/api/delivery").await;
    assert_eq!(delivery["timersPending"], 1, "{delivery}");
    let sent = s.calls_to("POST", "/messages");
    assert!(
        sent[0].body["body"].as_str().unwrap().contains("Exports"),
        "only last night's message went out"
    );
    let metrics = s.server.metrics().await;
    assert!(
        metrics.contains("junction_messages_held_total 2"),
        "{metrics}"
    );
}

/// Instantiates each test for each store.
macro_rules! on_each_store {
    ($($test:ident,)*) => {
        mod sqlite {
            $(#[tokio::test]
            async fn $test() {
                super::$test(super::Backend::Sqlite).await
            })*
        }
        mod postgres {
            $(#[tokio::test]
            async fn $test() {
                super::$test(super::Backend::Postgres).await
            })*
        }
    };
}

on_each_store! {
    profile_sync_creates_one_contact_and_keeps_it_up_to_date,
    event_triggered_messages_go_out_in_app_and_by_email,
    lead_score_tags_assigns_and_notes_once_per_crossing,
    company_sync_upserts_attaches_and_alerts_on_a_health_drop,
    an_anonymous_group_upserts_the_company_and_creates_no_lead,
    an_inactive_identify_leaves_last_seen_alone,
    churn_risk_tags_flags_opens_an_assigned_conversation_and_alerts,
    onboarding_acknowledges_each_milestone_once,
    inactivity_timer_fires_unless_the_feature_is_used,
    a_pending_wait_fires_after_a_restart,
    track_becomes_a_data_event_even_before_identify,
    a_track_or_group_without_a_user_id_finds_its_contact_by_email,
    identify_company_traits_attach_and_detach,
    a_deletion_request_deletes_the_contact_and_redacts_the_log,
    a_deletion_request_can_archive_instead,
    an_unmatched_email_is_dead_lettered_when_the_workflow_says_so,
    each_users_calls_keep_their_events_order,
    a_wait_until_goes_on_when_the_awaited_event_arrives,
    a_capped_message_is_kept_listed_and_released,
    quiet_hours_hold_a_message_until_the_window_ends,
}
