//! The client against the Intercom emulator: operations, every error class as Intercom
//! produces it, and the rate gate keeping a burst inside the window.

use junction_emulator::faults::Faults;
use junction_emulator::{Emulator, EmulatorConfig};
use junction_intercom::{IntercomClient, IntercomConfig, IntercomError};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::time::Duration;

async fn emulator(config: EmulatorConfig) -> (String, Emulator) {
    let emulator = Emulator::new(config);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = emulator.clone().spawn(listener).await.unwrap();
    (format!("http://{addr}"), emulator)
}

fn config() -> EmulatorConfig {
    EmulatorConfig {
        token: Some("secret-token".into()),
        rate_limit: 10_000,
        search_lag: Duration::ZERO,
    }
}

fn client(base: &str, token: &str) -> IntercomClient {
    IntercomClient::new(IntercomConfig::new(base, token)).unwrap()
}

#[tokio::test]
async fn contact_operations_round_trip() {
    let (base, _) = emulator(config()).await;
    let intercom = client(&base, "secret-token");
    let created = intercom
        .create_contact(&json!({"external_id": "u1", "email": "u1@example.com", "name": "Ann"}))
        .await
        .unwrap();
    assert_eq!(
        (created.role.as_str(), created.external_id.as_deref()),
        ("user", Some("u1"))
    );
    let updated = intercom
        .update_contact(&created.id, &json!({"name": "Ann B"}))
        .await
        .unwrap();
    assert_eq!(updated.raw["name"], "Ann B");
    assert_eq!(
        intercom.get_contact(&created.id).await.unwrap().id,
        created.id
    );
    assert_eq!(
        intercom
            .find_user_by_external_id("u1")
            .await
            .unwrap()
            .map(|c| c.id),
        Some(created.id.clone())
    );
    assert_eq!(
        intercom.find_user_by_external_id("nobody").await.unwrap(),
        None
    );
    let page = intercom
        .search_contacts(
            &json!({"field": "email", "operator": "=", "value": "u1@example.com"}),
            50,
            None,
        )
        .await
        .unwrap();
    assert_eq!(
        (page.total_count, page.contacts[0].id.clone(), page.next),
        (1, created.id, None)
    );
}

#[tokio::test]
async fn every_error_class_comes_out_of_real_responses() {
    let (base, emulator) = emulator(config()).await;
    let intercom = client(&base, "secret-token");
    let existing = intercom
        .create_contact(&json!({"external_id": "dup"}))
        .await
        .unwrap();

    let conflict = intercom
        .create_contact(&json!({"external_id": "dup"}))
        .await
        .unwrap_err();
    assert_eq!(
        conflict,
        IntercomError::Conflict {
            existing_id: existing.id.clone(),
            archived: false
        }
    );
    intercom
        .call(
            reqwest::Method::POST,
            &junction_intercom::ApiPath::fixed("contacts")
                .id(&existing.id)
                .unwrap()
                .then("archive"),
            None,
        )
        .await
        .unwrap();
    let archived = intercom
        .create_contact(&json!({"external_id": "dup"}))
        .await
        .unwrap_err();
    assert_eq!(
        archived,
        IntercomError::Conflict {
            existing_id: existing.id.clone(),
            archived: true
        }
    );
    intercom.unarchive_contact(&existing.id).await.unwrap();

    let wrong = client(&base, "wrong-token")
        .get_contact(&existing.id)
        .await
        .unwrap_err();
    assert!(
        matches!(wrong, IntercomError::Credentials { status: 401, ref code, .. } if code == "unauthorized"),
        "{wrong:?}"
    );
    assert!(!wrong.to_string().contains("wrong-token"));

    let invalid = intercom
        .create_contact(&json!({"external_id": "x", "custom_attributes": {"nope": 1}}))
        .await
        .unwrap_err();
    assert!(
        matches!(invalid, IntercomError::Permanent { status: 400, ref code, ref message } if code == "parameter_invalid" && message.contains("'nope'")),
        "{invalid:?}"
    );
    let missing = intercom
        .get_contact("000000000000000000000000")
        .await
        .unwrap_err();
    assert!(matches!(
        missing,
        IntercomError::Permanent { status: 404, .. }
    ));

    emulator.set_faults(Faults {
        error_rates: BTreeMap::from([(500, 1.0)]),
        ..Faults::default()
    });
    let server = intercom.get_contact(&existing.id).await.unwrap_err();
    assert!(
        server.is_retryable()
            && matches!(
                server,
                IntercomError::Retryable {
                    status: Some(500),
                    ..
                }
            )
    );
    emulator.set_faults(Faults {
        reset_rate: 1.0,
        ..Faults::default()
    });
    let dropped = intercom.get_contact(&existing.id).await.unwrap_err();
    assert!(
        matches!(dropped, IntercomError::Retryable { status: None, .. }),
        "{dropped:?}"
    );
    emulator.set_faults(Faults::default());
    assert!(intercom.get_contact(&existing.id).await.is_ok());
}

#[tokio::test]
async fn a_429_names_the_reset_and_the_gate_waits_for_it() {
    let (base, emulator) = emulator(config()).await;
    // One attempt, so the 429 itself comes back (with retries the gate would wait out the storm).
    let mut settings = IntercomConfig::new(&base, "secret-token");
    settings.retry.attempts = 1;
    let intercom = IntercomClient::new(settings).unwrap();
    intercom
        .call(
            reqwest::Method::GET,
            &junction_intercom::ApiPath::fixed("me"),
            None,
        )
        .await
        .unwrap();
    emulator.set_faults(Faults {
        storm_seconds: 60,
        ..Faults::default()
    });
    let limited = intercom
        .call(
            reqwest::Method::GET,
            &junction_intercom::ApiPath::fixed("me"),
            None,
        )
        .await
        .unwrap_err();
    assert!(
        matches!(limited, IntercomError::RateLimited { reset: Some(_) }),
        "{limited:?}"
    );
    assert!(limited.is_retryable());
}

/// With 5 requests allowed per 10-second window, a burst of 8 concurrent calls is spread over
/// two windows: nothing is sent into a spent window, so Intercom never answers 429.
#[tokio::test]
async fn a_burst_stays_inside_the_window() {
    let (base, _) = emulator(EmulatorConfig {
        rate_limit: 5,
        ..config()
    })
    .await;
    let intercom = client(&base, "secret-token");
    let calls: Vec<_> = (0..8)
        .map(|_| {
            let intercom = intercom.clone();
            tokio::spawn(async move {
                intercom
                    .call(
                        reqwest::Method::GET,
                        &junction_intercom::ApiPath::fixed("admins"),
                        None,
                    )
                    .await
            })
        })
        .collect();
    for call in calls {
        call.await.unwrap().expect("no call is refused");
    }
    junction_intercom::install_tls_provider();
    let journal: Vec<Value> = reqwest::get(format!("{base}/_emulator/requests"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(journal.len(), 8);
    assert!(
        journal.iter().all(|entry| entry["status"] == 200),
        "{journal:?}"
    );
    assert!(
        journal
            .iter()
            .all(|entry| entry["intercom_version"] == "2.14")
    );
}

#[tokio::test]
async fn companies_tags_events_and_admins() {
    let (base, _) = emulator(config()).await;
    let intercom = client(&base, "secret-token");
    let contact = intercom
        .create_contact(&json!({"external_id": "u1"}))
        .await
        .unwrap();
    let company = intercom
        .upsert_company(&json!({"company_id": "g1", "name": "Acme", "size": 42}))
        .await
        .unwrap();
    assert_eq!(company.company_id, "g1");
    assert_eq!(
        intercom
            .upsert_company(&json!({"company_id": "g1", "plan": "pro"}))
            .await
            .unwrap(),
        company
    );
    intercom
        .attach_contact_to_company(&contact.id, &company.id)
        .await
        .unwrap();
    assert_eq!(
        intercom.get_contact(&contact.id).await.unwrap().raw["companies"]["total_count"],
        1
    );
    intercom
        .detach_contact_from_company(&contact.id, &company.id)
        .await
        .unwrap();

    let churn = intercom.tag_id("churn-risk").await.unwrap();
    assert_eq!(intercom.tag_id("Churn-Risk").await.unwrap(), churn);
    intercom.tag_contact(&contact.id, &churn).await.unwrap();
    assert_eq!(
        intercom.get_contact(&contact.id).await.unwrap().raw["tags"]["total_count"],
        1
    );
    intercom.untag_contact(&contact.id, &churn).await.unwrap();

    let metadata = json!({"plan": "pro", "price": {"amount": 999, "currency": "usd"}});
    intercom
        .submit_event(
            &contact.id,
            None,
            "Plan Upgraded",
            1_800_000_000,
            metadata.as_object().unwrap(),
        )
        .await
        .unwrap();
    let too_many: serde_json::Map<String, Value> =
        (0..11).map(|i| (format!("k{i}"), json!(i))).collect();
    let refused = intercom
        .submit_event(&contact.id, None, "E", 1, &too_many)
        .await
        .unwrap_err();
    assert!(!refused.is_retryable() && refused.to_string().contains("at most 10"));
    assert!(matches!(
        intercom
            .submit_event("missing", None, "E", 1, &serde_json::Map::new())
            .await
            .unwrap_err(),
        IntercomError::Permanent { status: 404, .. }
    ));

    assert_eq!(intercom.me().await.unwrap()["type"], "admin");
    assert_eq!(
        intercom.admins().await.unwrap().len(),
        4,
        "the emulated team"
    );
}

#[tokio::test]
async fn traits_with_new_attributes_are_written_after_creating_them() {
    use junction_intercom::attributes::{AttributeCatalog, AttributePolicy};
    let (base, _) = emulator(config()).await;
    let intercom = client(&base, "secret-token");
    let catalog = AttributeCatalog::new(intercom.clone());
    let traits = json!({"email": "t@example.com", "plan": "pro", "seats": 12, "address": {"city": "Lyon"}, "createdAt": "2024-01-01T00:00:00Z"});
    let prepared = catalog
        .prepare(traits.as_object().unwrap(), AttributePolicy::default())
        .await
        .unwrap();
    assert_eq!(prepared.to_create.len(), 3);
    let mut body = prepared.fields.clone();
    body.insert("external_id".into(), "t1".into());
    let contact = intercom.create_contact(&Value::Object(body)).await.unwrap();
    assert_eq!(
        contact.raw["custom_attributes"],
        json!({"plan": "pro", "seats": 12, "address_city": "Lyon"})
    );
    assert_eq!(contact.raw["signed_up_at"], 1_704_067_200);
    // The second time, the catalog knows them: nothing to create, and a string seat count is coerced.
    let again = catalog
        .prepare(
            json!({"seats": "13"}).as_object().unwrap(),
            AttributePolicy::default(),
        )
        .await
        .unwrap();
    assert!(again.to_create.is_empty());
    let updated = intercom
        .update_contact(&contact.id, &Value::Object(again.fields))
        .await
        .unwrap();
    assert_eq!(updated.raw["custom_attributes"]["seats"], 13);
}

#[tokio::test]
async fn conversations_messages_notes_and_assignment() {
    use junction_intercom::operations::{Assignee, MessageKind};
    let (base, emulator) = emulator(EmulatorConfig {
        search_lag: Duration::from_millis(300),
        ..config()
    })
    .await;
    let intercom = client(&base, "secret-token");
    let admin = intercom.me().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let contact = intercom
        .create_contact(&json!({"external_id": "c1", "email": "c1@example.com"}))
        .await
        .unwrap();

    // Like Intercom, a contact created moments ago cannot be messaged yet: a 404 worth retrying later.
    let early = intercom
        .send_message(
            &admin,
            &contact.id,
            "user",
            &MessageKind::InApp,
            "Hi",
            false,
        )
        .await
        .unwrap_err();
    assert!(matches!(
        early,
        IntercomError::Permanent { status: 404, .. }
    ));
    emulator.set_search_lag(Duration::ZERO);
    let sent = intercom
        .send_message(
            &admin,
            &contact.id,
            "user",
            &MessageKind::Email {
                subject: "Welcome".into(),
            },
            "Hello",
            true,
        )
        .await
        .unwrap();
    assert_eq!(
        (sent["type"].as_str(), sent["message_type"].as_str()),
        (Some("admin_message"), Some("email"))
    );
    assert!(sent["conversation_id"].is_string());

    let conversation = intercom
        .start_conversation(&contact.id, "user", "I need help")
        .await
        .unwrap();
    intercom
        .reply_as_admin(&conversation, &admin, "On it", false)
        .await
        .unwrap();
    let noted = intercom
        .reply_as_admin(&conversation, &admin, "Churn risk: 3 failed payments", true)
        .await
        .unwrap();
    let parts = noted["conversation_parts"]["conversation_parts"]
        .as_array()
        .unwrap();
    assert_eq!(
        parts
            .iter()
            .map(|p| p["part_type"].as_str().unwrap())
            .collect::<Vec<_>>(),
        ["comment", "note"]
    );
    let assigned = intercom
        .assign_conversation(&conversation, &admin, &Assignee::Team("814".into()))
        .await
        .unwrap();
    assert_eq!(assigned["team_assignee_id"], "814");
    let unassigned = intercom
        .assign_conversation(&conversation, &admin, &Assignee::Nobody)
        .await
        .unwrap();
    assert_eq!(unassigned["admin_assignee_id"], Value::Null);
    assert!(matches!(
        intercom
            .reply_as_admin(&conversation, "999", "x", false)
            .await
            .unwrap_err(),
        IntercomError::Permanent { status: 404, .. }
    ));

    let note = intercom
        .add_note(&contact.id, &admin, "Called them")
        .await
        .unwrap();
    assert_eq!(note["body"], "<p>Called them</p>");
    let notes = intercom
        .call(
            reqwest::Method::GET,
            &junction_intercom::ApiPath::fixed("contacts")
                .id(&contact.id)
                .unwrap()
                .then("notes"),
            None,
        )
        .await
        .unwrap();
    assert_eq!(notes["total_count"], 1);
}

/// With 10 % 500s and 5 % dropped connections, every call that is safe to repeat succeeds.
#[tokio::test]
async fn momentary_failures_are_ridden_out() {
    let (base, emulator) = emulator(config()).await;
    let mut settings = IntercomConfig::new(&base, "secret-token");
    settings.retry.min_delay = Duration::from_millis(5);
    settings.retry.max_delay = Duration::from_millis(50);
    settings.retry.attempts = 8;
    let intercom = IntercomClient::new(settings).unwrap();
    let contact = intercom
        .create_contact(&json!({"external_id": "flaky"}))
        .await
        .unwrap();
    emulator.set_faults(Faults {
        error_rates: BTreeMap::from([(500, 0.10)]),
        reset_rate: 0.05,
        ..Faults::default()
    });
    for n in 0..150 {
        match n % 3 {
            0 => drop(intercom.get_contact(&contact.id).await.unwrap()),
            1 => drop(
                intercom
                    .update_contact(&contact.id, &json!({"name": format!("v{n}")}))
                    .await
                    .unwrap(),
            ),
            _ => drop(
                intercom
                    .upsert_company(&json!({"company_id": format!("g{n}")}))
                    .await
                    .unwrap(),
            ),
        }
    }
    let journal: Vec<Value> = {
        junction_intercom::install_tls_provider();
        reqwest::get(format!("{base}/_emulator/requests"))
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    };
    let failed = journal.iter().filter(|e| e["status"] != 200).count();
    assert!(
        failed > 5,
        "the faults were injected ({failed} failed attempts)"
    );
}

#[test]
fn only_calls_safe_to_repeat_are_retried() {
    use junction_intercom::{ApiPath, repeatable};
    use reqwest::Method;
    let contact = || ApiPath::fixed("contacts").id("1").unwrap();
    for (method, path) in [
        (Method::GET, contact()),
        (Method::PUT, contact()),
        (Method::POST, ApiPath::fixed("contacts")),
        (Method::POST, ApiPath::fixed("contacts/search")),
        (Method::POST, ApiPath::fixed("events")),
        (Method::POST, ApiPath::fixed("companies")),
        // An id that reads like a path cannot make a call look like another.
        (
            Method::POST,
            ApiPath::fixed("contacts")
                .id("x/notes")
                .unwrap()
                .then("tags"),
        ),
    ] {
        assert!(repeatable(&method, &path), "{method} {path}");
    }
    let conversation = || ApiPath::fixed("conversations").id("1").unwrap();
    for path in [
        ApiPath::fixed("conversations"),
        conversation().then("reply"),
        conversation().then("parts"),
        ApiPath::fixed("messages"),
        contact().then("notes"),
        ApiPath::fixed("contacts/merge"),
    ] {
        assert!(!repeatable(&Method::POST, &path), "{path}");
    }
}
