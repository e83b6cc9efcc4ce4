//! No duplicate contacts: resolution against the emulator, with Intercom's search lag and
//! 409s, under concurrency.

use junction_emulator::{Emulator, EmulatorConfig};
use junction_intercom::{
    ContactResolver, Identity, IntercomClient, IntercomConfig, ResolveError, ResolvedBy,
};
use junction_store::{Store, StoreOptions};
use serde_json::{Map, Value, json};
use std::sync::Arc;
use std::time::Duration;

struct Setup {
    base: String,
    emulator: Emulator,
    resolver: Arc<ContactResolver>,
    _dir: tempfile::TempDir,
}

/// The emulator with its default search lag (1 s), a fresh store, a resolver.
async fn setup() -> Setup {
    let emulator = Emulator::new(EmulatorConfig {
        search_lag: Duration::from_secs(1),
        ..EmulatorConfig::default()
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", emulator.clone().spawn(listener).await.unwrap());
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = junction_store::open(
        &format!("sqlite://{}", dir.path().join("j.db").display()),
        StoreOptions::default(),
    )
    .await
    .unwrap();
    let client = IntercomClient::new(IntercomConfig::new(&base, "token")).unwrap();
    Setup {
        base,
        emulator,
        resolver: Arc::new(ContactResolver::new(client, store, "ws")),
        _dir: dir,
    }
}

fn user(id: &str) -> Identity {
    Identity {
        user_id: Some(id.into()),
        ..Identity::default()
    }
}

fn fields(value: Value) -> Map<String, Value> {
    value.as_object().unwrap().clone()
}

async fn journal(base: &str) -> Vec<Value> {
    junction_intercom::install_tls_provider();
    reqwest::get(format!("{base}/_emulator/requests"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

async fn contacts(base: &str) -> Vec<Value> {
    junction_intercom::install_tls_provider();
    let list: Value = reqwest::Client::new()
        .get(format!("{base}/contacts?per_page=150"))
        .bearer_auth("t")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    list["data"].as_array().unwrap().clone()
}

fn count(journal: &[Value], method: &str, path: &str, status: u64) -> usize {
    journal
        .iter()
        .filter(|e| e["method"] == method && e["path"] == path && e["status"] == status)
        .count()
}

#[tokio::test]
async fn fifty_concurrent_resolutions_of_a_new_user_create_one_contact() {
    let s = setup().await;
    let tasks: Vec<_> = (0..50)
        .map(|n| {
            let resolver = s.resolver.clone();
            tokio::spawn(async move {
                resolver
                    .upsert(&user("new-user"), &fields(json!({"name": format!("v{n}")})))
                    .await
                    .unwrap()
            })
        })
        .collect();
    let mut ids = Vec::new();
    for task in tasks {
        ids.push(task.await.unwrap().contact.id);
    }
    ids.dedup();
    assert_eq!(ids.len(), 1, "every resolution found the same contact");
    assert_eq!(contacts(&s.base).await.len(), 1);
    assert_eq!(count(&journal(&s.base).await, "POST", "/contacts", 200), 1);
}

#[tokio::test]
async fn steady_state_costs_one_call() {
    let s = setup().await;
    let first = s
        .resolver
        .upsert(&user("u1"), &fields(json!({"name": "Ann"})))
        .await
        .unwrap();
    assert_eq!(first.resolved_by, ResolvedBy::Created);
    let before = journal(&s.base).await.len();
    let again = s
        .resolver
        .upsert(&user("u1"), &fields(json!({"name": "Ann B"})))
        .await
        .unwrap();
    assert_eq!(
        (again.resolved_by, again.contact.id.clone()),
        (ResolvedBy::IdentityMap, first.contact.id)
    );
    let calls = &journal(&s.base).await[before..];
    assert_eq!(calls.len(), 1, "{calls:?}");
    assert_eq!(calls[0]["method"], "PUT");
}

/// A new user costs one request: the create itself (no lookup by external_id, no search by
/// email first). A user Intercom already has, unknown to Junction, costs two: the create that
/// Intercom answers 409, and the update of the contact it names.
#[tokio::test]
async fn a_new_user_costs_one_call_and_a_known_one_two() {
    let s = setup().await;
    let identity = Identity {
        user_id: Some("fresh".into()),
        email: Some("fresh@example.com".into()),
        ..Identity::default()
    };
    let created = s
        .resolver
        .upsert(&identity, &fields(json!({"name": "Fresh"})))
        .await
        .unwrap();
    assert_eq!(created.resolved_by, ResolvedBy::Created);
    let calls = journal(&s.base).await;
    assert_eq!(calls.len(), 1, "{calls:?}");
    assert_eq!(
        (calls[0]["method"].as_str(), calls[0]["path"].as_str()),
        (Some("POST"), Some("/contacts"))
    );

    let outside = IntercomClient::new(IntercomConfig::new(&s.base, "token")).unwrap();
    let existing = outside
        .create_contact(&json!({"external_id": "elsewhere", "role": "user"}))
        .await
        .unwrap();
    let before = journal(&s.base).await.len();
    let adopted = s
        .resolver
        .upsert(&user("elsewhere"), &fields(json!({"name": "Known"})))
        .await
        .unwrap();
    assert_eq!(
        (adopted.resolved_by, adopted.contact.id.clone()),
        (ResolvedBy::Conflict, existing.id)
    );
    let calls = &journal(&s.base).await[before..];
    let routes: Vec<(&str, u64)> = calls
        .iter()
        .map(|c| (c["method"].as_str().unwrap(), c["status"].as_u64().unwrap()))
        .collect();
    assert_eq!(routes, [("POST", 409), ("PUT", 200)], "{calls:?}");
}

/// A role the workflow sets is kept (a lead with a userId stays a lead), as Segment's
/// destination keeps it; without one, a userId makes the contact a user.
#[tokio::test]
async fn a_role_the_workflow_sets_is_kept() {
    let s = setup().await;
    let lead = s
        .resolver
        .upsert(&user("trial-7"), &fields(json!({"role": "lead"})))
        .await
        .unwrap();
    let again = s
        .resolver
        .upsert(
            &user("trial-7"),
            &fields(json!({"role": "lead", "name": "Trial"})),
        )
        .await
        .unwrap();
    assert_eq!(again.contact.id, lead.contact.id);
    let stored = contacts(&s.base).await;
    assert_eq!(stored.len(), 1);
    assert_eq!(
        (
            stored[0]["role"].as_str(),
            stored[0]["external_id"].as_str()
        ),
        (Some("lead"), Some("trial-7"))
    );
    let plain = s
        .resolver
        .upsert(&user("paying-1"), &fields(json!({"role": "admin?"})))
        .await
        .unwrap();
    let found = contacts(&s.base).await;
    let paying = found
        .iter()
        .find(|c| c["id"] == plain.contact.id.as_str())
        .unwrap();
    assert_eq!(
        paying["role"], "user",
        "an unknown role is not sent: {paying}"
    );
}

/// A user created out of band moments ago: search cannot see it yet, the create gets 409, and
/// the resolver adopts the existing contact instead of failing or duplicating.
#[tokio::test]
async fn a_409_from_a_lagging_search_adopts_the_existing_contact() {
    let s = setup().await;
    let outside = IntercomClient::new(IntercomConfig::new(&s.base, "token")).unwrap();
    let existing = outside
        .create_contact(&json!({"email": "race@example.com", "role": "user"}))
        .await
        .unwrap();
    let identity = Identity {
        user_id: Some("u7".into()),
        email: Some("race@example.com".into()),
        ..Identity::default()
    };
    let resolution = s
        .resolver
        .upsert(&identity, &fields(json!({"name": "Racer"})))
        .await
        .unwrap();
    assert_eq!(
        (resolution.resolved_by, resolution.contact.id.clone()),
        (ResolvedBy::Conflict, existing.id.clone())
    );
    assert_eq!(resolution.contact.external_id.as_deref(), Some("u7"));
    let log = journal(&s.base).await;
    assert_eq!(count(&log, "POST", "/contacts", 409), 1);
    assert_eq!(contacts(&s.base).await.len(), 1);
    // The 409 taught the identity map: the next event costs one call.
    let next = s
        .resolver
        .upsert(&identity, &fields(json!({})))
        .await
        .unwrap();
    assert_eq!(next.resolved_by, ResolvedBy::IdentityMap);
}

/// The same race with a contact created out of band first, invisible to the lagging search:
/// fifty concurrent resolutions meet one 409 between them and all adopt that contact.
#[tokio::test]
async fn fifty_concurrent_resolutions_adopt_an_out_of_band_contact_once() {
    let s = setup().await;
    let outside = IntercomClient::new(IntercomConfig::new(&s.base, "token")).unwrap();
    let existing = outside
        .create_contact(&json!({"email": "crowd@example.com", "role": "user"}))
        .await
        .unwrap();
    let identity = Identity {
        user_id: Some("crowd".into()),
        email: Some("crowd@example.com".into()),
        ..Identity::default()
    };
    let tasks: Vec<_> = (0..50)
        .map(|n| {
            let (resolver, identity) = (s.resolver.clone(), identity.clone());
            tokio::spawn(async move {
                resolver
                    .upsert(&identity, &fields(json!({"name": format!("v{n}")})))
                    .await
                    .unwrap()
            })
        })
        .collect();
    for task in tasks {
        assert_eq!(task.await.unwrap().contact.id, existing.id);
    }
    assert_eq!(contacts(&s.base).await.len(), 1);
    let log = journal(&s.base).await;
    assert_eq!(
        count(&log, "POST", "/contacts", 409),
        1,
        "one conflict, then the map"
    );
    assert_eq!(
        count(&log, "POST", "/contacts", 200),
        1,
        "only the out-of-band create"
    );
}

#[tokio::test]
async fn an_archived_contact_is_unarchived_and_reused() {
    let s = setup().await;
    let outside = IntercomClient::new(IntercomConfig::new(&s.base, "token")).unwrap();
    let existing = outside
        .create_contact(&json!({"external_id": "back"}))
        .await
        .unwrap();
    outside
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
    let resolution = s
        .resolver
        .upsert(&user("back"), &fields(json!({"name": "Returning"})))
        .await
        .unwrap();
    assert_eq!(
        (resolution.resolved_by, resolution.contact.id.clone()),
        (ResolvedBy::Conflict, existing.id.clone())
    );
    let log = journal(&s.base).await;
    assert_eq!(
        count(
            &log,
            "POST",
            &format!("/contacts/{}/unarchive", existing.id),
            200
        ),
        1
    );
    assert!(
        outside
            .find_user_by_external_id("back")
            .await
            .unwrap()
            .is_some(),
        "active again"
    );
}

#[tokio::test]
async fn a_remembered_contact_that_was_deleted_is_resolved_again() {
    let s = setup().await;
    let first = s
        .resolver
        .upsert(&user("gone"), &fields(json!({})))
        .await
        .unwrap();
    let outside = IntercomClient::new(IntercomConfig::new(&s.base, "token")).unwrap();
    outside
        .call(
            reqwest::Method::DELETE,
            &junction_intercom::ApiPath::fixed("contacts")
                .id(&first.contact.id)
                .unwrap(),
            None,
        )
        .await
        .unwrap();
    // Intercom keeps a deleted contact's details: re-creating it meets a 409 "archived", and
    // the deleted contact cannot be unarchived. That is a permanent failure to report (and, with
    // delivery, to dead-letter), never a silent duplicate.
    let error = s
        .resolver
        .upsert(&user("gone"), &fields(json!({})))
        .await
        .unwrap_err();
    assert!(error.to_string().contains("404 not_found"), "{error}");
    assert!(contacts(&s.base).await.is_empty());
    let log = journal(&s.base).await;
    assert_eq!(
        count(&log, "PUT", &format!("/contacts/{}", first.contact.id), 404),
        1,
        "the stale id was tried once"
    );
    assert_eq!(count(&log, "POST", "/contacts", 409), 1);
}

#[tokio::test]
async fn an_anonymous_visitor_with_an_email_becomes_a_lead_then_a_user() {
    let s = setup().await;
    let visitor = Identity {
        anonymous_id: Some("anon-1".into()),
        email: Some("lead@example.com".into()),
        ..Identity::default()
    };
    let lead = s
        .resolver
        .upsert(&visitor, &fields(json!({"name": "Lee"})))
        .await
        .unwrap();
    assert_eq!(lead.contact.role, "lead");
    let signed_up = Identity {
        user_id: Some("u-lee".into()),
        ..visitor
    };
    let user = s
        .resolver
        .upsert(&signed_up, &fields(json!({})))
        .await
        .unwrap();
    assert_eq!(
        (
            user.contact.id.clone(),
            user.contact.role.as_str(),
            user.contact.external_id.as_deref()
        ),
        (lead.contact.id, "user", Some("u-lee"))
    );
    assert_eq!(contacts(&s.base).await.len(), 1);
}

/// Without a userId, an email that matches no contact (or several) fails the resolution when
/// the workflow says `unmatched: dead_letter`, and creates nothing; by default it creates a
/// lead with that email; a single match is that contact.
#[tokio::test]
async fn an_unmatched_email_creates_a_lead_or_fails_as_the_workflow_says() {
    let s = setup().await;
    let strict = Identity {
        anonymous_id: Some("anon-1".into()),
        email: Some("nobody@example.com".into()),
        dead_letter_unmatched: true,
        ..Identity::default()
    };
    let refused = s.resolver.upsert(&strict, &Map::new()).await.unwrap_err();
    assert!(
        matches!(refused, ResolveError::Unmatched { matches: 0 }),
        "{refused}"
    );
    assert!(
        s.emulator
            .journal_entries()
            .iter()
            .all(|e| e.method != "POST" || e.path != "/contacts")
    );

    let lenient = Identity {
        dead_letter_unmatched: false,
        ..strict.clone()
    };
    let lead = s.resolver.upsert(&lenient, &Map::new()).await.unwrap();
    assert_eq!(lead.resolved_by, ResolvedBy::Created);
    assert_eq!(
        (lead.contact.role.as_str(), lead.contact.email.as_deref()),
        ("lead", Some("nobody@example.com"))
    );

    // A lead made outside Junction, once Intercom's search shows it: found by its email.
    let outside = IntercomClient::new(IntercomConfig::new(&s.base, "token")).unwrap();
    let made = outside
        .create_contact(&json!({"role": "lead", "email": "known@example.com"}))
        .await
        .unwrap();
    let query = json!({"field": "email", "operator": "=", "value": "known@example.com"});
    while outside
        .search_contacts(&query, 2, None)
        .await
        .unwrap()
        .total_count
        == 0
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let known = Identity {
        anonymous_id: Some("anon-2".into()),
        email: Some("known@example.com".into()),
        ..strict
    };
    let found = s.resolver.upsert(&known, &Map::new()).await.unwrap();
    assert_eq!(
        (found.contact.id.as_str(), found.resolved_by),
        (made.id.as_str(), ResolvedBy::Email)
    );
}

/// A visitor known as a lead logs in as a user who already exists: the lead is merged into the
/// user, one contact remains, and the merged lead answers 404 to 2.14 clients (410 from 2.16).
#[tokio::test]
async fn a_lead_that_turns_out_to_be_an_existing_user_is_merged_into_it() {
    let s = setup().await;
    let visitor = Identity {
        anonymous_id: Some("anon-9".into()),
        email: Some("v@example.com".into()),
        ..Identity::default()
    };
    let lead = s
        .resolver
        .upsert(&visitor, &fields(json!({"name": "Visitor"})))
        .await
        .unwrap();
    assert_eq!(lead.contact.role, "lead");
    let outside = IntercomClient::new(IntercomConfig::new(&s.base, "token")).unwrap();
    let user = outside
        .create_contact(&json!({"external_id": "u-9", "name": "Existing"}))
        .await
        .unwrap();

    // The userId is not in the map yet; the anonymousId points at the lead, whose conversion to
    // user u-9 meets a 409 naming the existing user: merge.
    let logged_in = Identity {
        user_id: Some("u-9".into()),
        anonymous_id: Some("anon-9".into()),
        ..Identity::default()
    };
    let resolved = s
        .resolver
        .upsert(&logged_in, &fields(json!({})))
        .await
        .unwrap();
    assert_eq!(
        (resolved.resolved_by, resolved.contact.id.clone()),
        (ResolvedBy::Merged, user.id.clone())
    );
    assert_eq!(
        resolved.contact.email.as_deref(),
        Some("v@example.com"),
        "the lead's email moved to the user"
    );
    assert_eq!(contacts(&s.base).await.len(), 1);

    let gone_214 = outside.get_contact(&lead.contact.id).await.unwrap_err();
    assert!(
        matches!(
            gone_214,
            junction_intercom::IntercomError::Permanent { status: 404, .. }
        ),
        "{gone_214:?}"
    );
    let mut config_216 = IntercomConfig::new(&s.base, "token");
    config_216.version = "2.16".into();
    let gone_216 = IntercomClient::new(config_216)
        .unwrap()
        .get_contact(&lead.contact.id)
        .await
        .unwrap_err();
    assert_eq!(
        gone_216,
        junction_intercom::IntercomError::Gone {
            canonical: Some(user.id.clone())
        }
    );

    // The visitor's next anonymous-only event lands on the user.
    let anonymous_again = Identity {
        anonymous_id: Some("anon-9".into()),
        ..Identity::default()
    };
    let again = s
        .resolver
        .upsert(&anonymous_again, &fields(json!({})))
        .await
        .unwrap();
    assert_eq!(
        (again.resolved_by, again.contact.id),
        (ResolvedBy::IdentityMap, user.id)
    );
}
