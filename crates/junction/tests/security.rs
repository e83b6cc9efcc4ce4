//! Hostile input against the real binary (issue 11): ids that try to address someone else's
//! contact, unauthenticated webhooks, refusals as JSON, secrets kept out of the logs.

mod common;

use common::scenario::Scenario;
use serde_json::{Value, json};

/// Segment userIds that, formatted into a URL, would address another resource.
fn hostile_ids(alice_intercom_id: &str) -> Vec<String> {
    vec![
        "alice?x=1".into(),
        "alice#f".into(),
        format!("../{alice_intercom_id}"),
        "alice/../bob".into(),
        "%2e%2e".into(),
    ]
}

#[tokio::test]
async fn ids_in_urls_never_reach_another_users_contact() {
    let s = Scenario::start("  - template: profile-sync\n  - template: track-events\n").await;
    s.identify(
        "alice",
        json!({"email": "alice@example.com", "name": "Alice"}),
    )
    .await;
    s.track("alice", "Signed In", json!({"plan": "pro"})).await;
    s.until("alice's contact and event", |s| {
        !s.calls_at("POST", "/events").is_empty()
    })
    .await;
    let alice = s
        .contacts()
        .await
        .into_iter()
        .find(|c| c["external_id"] == "alice")
        .expect("alice's contact");
    let alice_id = alice["id"].as_str().unwrap().to_owned();
    let journal_before = s.emulator.journal_entries().len();
    let alice_events_before = s
        .get(&format!("/events?type=user&intercom_user_id={alice_id}"))
        .await;

    let ids = hostile_ids(&alice_id);
    for id in &ids {
        s.identify(
            id,
            json!({"name": "Mallory", "email": format!("m{}@evil.test", id.len())}),
        )
        .await;
        s.track(id, "Hijacked", json!({"by": id})).await;
    }
    s.until("a data event for every hostile user", |s| {
        s.calls_at("POST", "/events").len() == 1 + ids.len()
    })
    .await;
    s.quiet().await;

    // Each hostile id got a contact of its own, with exactly that external_id …
    let contacts = s.contacts().await;
    for id in &ids {
        let own: Vec<&Value> = contacts
            .iter()
            .filter(|c| c["external_id"] == id.as_str())
            .collect();
        assert_eq!(own.len(), 1, "{id}: {contacts:#?}");
        assert_eq!(own[0]["name"], "Mallory");
    }
    // … and Alice's contact is exactly as it was, with only her own data event.
    let alice_after = s
        .contacts()
        .await
        .into_iter()
        .find(|c| c["id"] == alice_id.as_str())
        .unwrap();
    assert_eq!(alice_after, alice, "Alice's contact changed");
    assert_eq!(
        s.get(&format!("/events?type=user&intercom_user_id={alice_id}"))
            .await,
        alice_events_before
    );
    // No request after hers addressed her contact or carried her id.
    for entry in &s.emulator.journal_entries()[journal_before..] {
        assert!(
            !entry.path.split('/').any(|segment| segment == alice_id),
            "{} {} addressed Alice",
            entry.method,
            entry.path
        );
        assert!(
            !entry.body.to_string().contains(&format!("\"{alice_id}\"")),
            "{} {} carried Alice's id: {}",
            entry.method,
            entry.path,
            entry.body
        );
    }
}

/// Through the real listener (hyper in front of Junction's router), refusals that axum or
/// Junction's limits produce are JSON naming a code.
#[tokio::test]
async fn refusals_through_the_real_listener_are_json() {
    let dir = tempfile::tempdir().unwrap();
    let server = common::Server::start(dir.path()).await;
    let http = common::http();
    let long = server.url(&format!("/v1/track?pad={}", "x".repeat(20_000)));
    let mut many = http.get(server.url("/healthz"));
    for n in 0..80 {
        many = many.header(format!("x-h{n}"), "v");
    }
    let cases = [
        (http.get(server.url("/v1/batch")), 405, "method_not_allowed"),
        (
            http.delete(server.url("/hooks/segment")),
            405,
            "method_not_allowed",
        ),
        (http.get(server.url("/no/such/page")), 404, "not_found"),
        (http.post(long), 414, "uri_too_long"),
        (many, 431, "headers_too_large"),
        (
            http.post(server.url("/hooks/segment")).json(&json!([])),
            401,
            "unauthorized",
        ),
    ];
    for (request, status, code) in cases {
        let response = request.send().await.unwrap();
        assert_eq!(response.status().as_u16(), status, "{code}");
        assert!(
            response.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("application/json")
        );
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["code"], code, "{body}");
        assert!(body["message"].as_str().is_some_and(|m| !m.is_empty()));
    }
}
