//! Intercom → Segment in real time: signed webhooks in (`/hooks/intercom`), Segment identify
//! and track out, through the `intercom-lead-to-segment` template. The Segment side is a second
//! Junction's own ingest API on loopback; Intercom is the emulator, which signs and sends the
//! notifications itself.

mod common;

use common::scenario::{Scenario, TOKEN};
use common::{ADMIN_TOKEN, Server, WRITE_KEY, http};
use junction_emulator::webhooks::{Webhook, signature};
use serde_json::{Value, json};
use std::time::{Duration, Instant};

const SECRET: &str = "intercom-client-secret";

/// A vector computed independently (Python's hmac module) for this secret and body.
const VECTOR_BODY: &str = r#"{"type":"notification_event","topic":"contact.lead.created","id":"notif_vector","created_at":1700000000,"data":{"item":{"type":"contact","id":"lead-1","role":"lead","email":"vec@example.com"}}}"#;
const VECTOR_SIGNATURE: &str = "sha1=6e188463a9eca9f55168337c1e1a5a07840ece06";

async fn post_hook(s: &Scenario, body: &str, signature: Option<&str>) -> reqwest::StatusCode {
    let mut request = http()
        .post(s.server.url("/hooks/intercom"))
        .header("content-type", "application/json")
        .body(body.to_owned());
    if let Some(signature) = signature {
        request = request.header("x-hub-signature", signature);
    }
    request.send().await.unwrap().status()
}

async fn stored(server_url: &str, kind: &str) -> Vec<Value> {
    http()
        .get(format!("{server_url}/api/events?type={kind}&limit=1000"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap()
        .json::<Value>()
        .await
        .unwrap()["items"]
        .as_array()
        .unwrap()
        .clone()
}

#[tokio::test]
async fn only_correctly_signed_notifications_are_kept() {
    let s = Scenario::start_config(
        &format!("intercom:\n  client_secret: {SECRET}\nworkflows: []\n"),
        None,
    )
    .await;
    assert_eq!(
        signature(SECRET, VECTOR_BODY.as_bytes()),
        VECTOR_SIGNATURE,
        "the emulator signs like Intercom"
    );
    let head = http()
        .head(s.server.url("/hooks/intercom"))
        .send()
        .await
        .unwrap();
    assert_eq!(head.status(), 200, "Intercom's endpoint check");

    let tampered = VECTOR_BODY.replace("vec@example.com", "evil@example.com");
    assert_eq!(
        post_hook(&s, &tampered, Some(VECTOR_SIGNATURE)).await,
        401,
        "tampered body"
    );
    assert_eq!(
        post_hook(
            &s,
            VECTOR_BODY,
            Some(&signature("wrong-secret", VECTOR_BODY.as_bytes()))
        )
        .await,
        401,
        "wrong secret"
    );
    assert_eq!(
        post_hook(&s, VECTOR_BODY, None).await,
        401,
        "missing header"
    );
    assert!(
        stored(&s.server.url(""), "intercom").await.is_empty(),
        "nothing unsigned is stored"
    );

    assert_eq!(
        post_hook(&s, VECTOR_BODY, Some(VECTOR_SIGNATURE)).await,
        200
    );
    assert_eq!(
        post_hook(&s, VECTOR_BODY, Some(VECTOR_SIGNATURE)).await,
        200,
        "a redelivery is acknowledged"
    );
    let ping = r#"{"type":"notification_event","topic":"ping","id":"notif_ping","created_at":1700000000,"data":{"item":{"type":"ping"}}}"#;
    assert_eq!(
        post_hook(&s, ping, Some(&signature(SECRET, ping.as_bytes()))).await,
        200
    );
    let kept = stored(&s.server.url(""), "intercom").await;
    assert_eq!(
        kept.len(),
        1,
        "de-duplicated by notification id, pings not kept: {kept:#?}"
    );
    assert_eq!(
        (
            kept[0]["messageId"].as_str(),
            kept[0]["anonymousId"].as_str(),
            kept[0]["event"].as_str()
        ),
        (
            Some("notif_vector"),
            Some("lead-1"),
            Some("contact.lead.created")
        )
    );
}

/// Junction A takes Intercom's webhooks and sends to the Segment-compatible endpoint `host`.
fn config_a(host: &str, extra_workflows: &str) -> String {
    format!(
        "intercom:\n  client_secret: {SECRET}\nsegment:\n  write_keys: [{WRITE_KEY}]\n  outbound:\n    host: {host}\n    write_key: {WRITE_KEY}\nworkflows:\n  - template: intercom-lead-to-segment\n{extra_workflows}"
    )
}

async fn junction_a(host: &str, extra_workflows: &str) -> Scenario {
    let s = Scenario::start_config(&config_a(host, extra_workflows), Some(TOKEN)).await;
    s.emulator.set_webhook(Some(Webhook {
        url: s.server.url("/hooks/intercom"),
        secret: SECRET.into(),
    }));
    s
}

#[tokio::test]
async fn a_new_lead_reaches_segment_once() {
    let receiver_dir = tempfile::tempdir().unwrap();
    let receiver = Server::start(receiver_dir.path()).await;
    let s = junction_a(&receiver.url(""), "").await;
    let lead: Value = http()
        .post(format!("{}/contacts", s.intercom))
        .bearer_auth(TOKEN)
        .json(&json!({"role": "lead", "email": "lead@example.com", "name": "Lee Lead", "phone": "+33 1 23 45 67 89"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let lead_id = lead["id"].as_str().unwrap().to_owned();
    let deadline = Instant::now() + Duration::from_secs(15);
    let identifies = loop {
        let identifies = stored(&receiver.url(""), "identify").await;
        if !identifies.is_empty() {
            break identifies;
        }
        assert!(
            Instant::now() < deadline,
            "no identify reached Segment; A's log:\n{}",
            s.server.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let identify = &identifies[0]["body"];
    assert_eq!(identify["anonymousId"], lead_id.as_str(), "{identify:#}");
    assert!(identify.get("userId").is_none());
    assert_eq!(identify["traits"]["email"], "lead@example.com");
    assert_eq!(identify["traits"]["name"], "Lee Lead");
    assert_eq!(identify["traits"]["phone"], "+33 1 23 45 67 89");
    assert_eq!(identify["traits"]["intercom_role"], "lead");
    assert!(
        identify["traits"]
            .as_object()
            .unwrap()
            .values()
            .all(|v| !v.is_null()),
        "no null traits: {identify:#}"
    );
    assert!(
        identify["messageId"]
            .as_str()
            .unwrap()
            .contains("/intercom-lead-to-segment/")
    );

    // Intercom delivers the same notification again: no second identify.
    let (body, signature) = s.emulator.webhooks_sent()[0].clone();
    assert_eq!(post_hook(&s, &body, Some(&signature)).await, 200);
    s.notifications_settled().await;
    assert_eq!(stored(&receiver.url(""), "identify").await.len(), 1);
}

#[tokio::test]
async fn junction_sending_to_itself_does_not_loop() {
    // A sends its Segment calls to its own ingest, and also runs profile-sync: the identify
    // coming back must trigger nothing.
    let mut s = junction_a("http://127.0.0.1:9", "  - template: profile-sync\n").await;
    let own = s.server.url("");
    s.restart_with(&config_a(&own, "  - template: profile-sync\n"), Some(TOKEN))
        .await;
    http()
        .post(format!("{}/contacts", s.intercom))
        .bearer_auth(TOKEN)
        .json(&json!({"role": "lead", "email": "loop@example.com"}))
        .send()
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    while stored(&own, "identify").await.is_empty() {
        assert!(
            Instant::now() < deadline,
            "the identify never came back; log:\n{}",
            s.server.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    s.notifications_settled().await;
    assert_eq!(
        stored(&own, "identify").await.len(),
        1,
        "exactly one identify"
    );
    let runs = s.admin("/api/runs").await["items"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(
        runs.len(),
        1,
        "only the Intercom notification ran a workflow: {runs:#?}"
    );
    let writes: Vec<_> = s
        .calls()
        .into_iter()
        .filter(|e| e.method != "GET" && !(e.method == "POST" && e.path == "/contacts"))
        .collect();
    assert!(writes.is_empty(), "no further Intercom calls: {writes:#?}");
}

/// A Segment Profile API stand-in: one profile, `user_id:u1`.
async fn profile_api() -> String {
    let app = axum::Router::new()
        .route(
            "/v1/spaces/spa_test/collections/users/profiles/user_id:u1/traits",
            axum::routing::get(|headers: axum::http::HeaderMap| async move {
                // The access token as the Basic user: "tok:" in base64.
                assert_eq!(headers["authorization"], "Basic dG9rOg==");
                axum::Json(json!({"traits": {"plan": "enterprise", "seats": 40}, "cursor": {"has_more": false}}))
            }),
        )
        .route(
            "/v1/spaces/spa_test/collections/users/profiles/user_id:u1/events",
            axum::routing::get(|| async {
                axum::Json(json!({"data": [{"type": "track", "event": "Order Completed", "timestamp": "2026-11-28T10:00:00Z", "message_id": "x"}], "cursor": {"has_more": false}}))
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}")
}

#[tokio::test]
async fn expressions_read_segments_profile_api_when_configured() {
    let host = profile_api().await;
    let dir = tempfile::tempdir().unwrap();
    let workflow = dir.path().join("brief.yaml");
    std::fs::write(
        &workflow,
        "name: brief\ntrigger:\n  on: segment.identify\nsteps:\n  - intercom.note:\n      admin: \"991267001\"\n      body: \"{{ segment_profile.traits.plan }} / {{ segment_profile.events[0].name }}\"\n",
    )
    .unwrap();
    let config = format!(
        "segment:\n  write_keys: [{WRITE_KEY}]\n  profiles:\n    space_id: spa_test\n    token: tok\n    host: {host}\nworkflows:\n  - file: {}\n",
        workflow.display()
    );
    let s = Scenario::start_config(&config, Some(TOKEN)).await;
    s.identify("u1", json!({"name": "Ann"})).await;
    s.until("the note", |s| s.calls_to("POST", "/notes").len() == 1)
        .await;
    assert_eq!(
        s.calls_to("POST", "/notes")[0].body["body"],
        "enterprise / Order Completed"
    );
}

#[tokio::test]
async fn a_contacts_notifications_are_planned_in_created_at_order() {
    let (sink, received) = common::scenario::alert_sink().await;
    let dir = tempfile::tempdir().unwrap();
    let workflow = dir.path().join("topics.yaml");
    std::fs::write(
        &workflow,
        format!("name: topics\ntrigger:\n  on: [intercom.contact.lead.created, intercom.contact.lead.signed_up]\nsteps:\n  - http.request:\n      url: \"{sink}\"\n      body: {{ text: \"{{{{ event.topic }}}}\" }}\n"),
    )
    .unwrap();
    let s = Scenario::start_config(
        &format!(
            "intercom:\n  client_secret: {SECRET}\nworkflows:\n  - file: {}\n",
            workflow.display()
        ),
        Some(TOKEN),
    )
    .await;
    let notification = |id: &str, topic: &str, at: i64| {
        json!({"type": "notification_event", "topic": topic, "id": id, "created_at": at,
               "data": {"item": {"type": "contact", "id": "lead-9", "role": "lead"}}})
        .to_string()
    };
    // The later event arrives first.
    let signed_up = notification("n2", "contact.lead.signed_up", 1_700_000_200);
    let created = notification("n1", "contact.lead.created", 1_700_000_100);
    assert_eq!(
        post_hook(
            &s,
            &signed_up,
            Some(&signature(SECRET, signed_up.as_bytes()))
        )
        .await,
        200
    );
    assert_eq!(
        post_hook(&s, &created, Some(&signature(SECRET, created.as_bytes()))).await,
        200
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while received.lock().unwrap().len() < 2 {
        assert!(Instant::now() < deadline, "{}", s.server.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let topics: Vec<Value> = received
        .lock()
        .unwrap()
        .iter()
        .map(|b| b["text"].clone())
        .collect();
    assert_eq!(
        topics,
        [
            json!("contact.lead.created"),
            json!("contact.lead.signed_up")
        ]
    );
}

#[tokio::test]
async fn what_junction_created_in_intercom_is_not_echoed_to_segment() {
    let receiver_dir = tempfile::tempdir().unwrap();
    let receiver = Server::start(receiver_dir.path()).await;
    let s = junction_a(&receiver.url(""), "  - template: churn-risk\n").await;
    // Junction starts a churn conversation; Intercom tells Junction about it.
    s.track("dee", "Payment Failed", json!({})).await;
    s.until("the churn conversation", |s| {
        s.calls_at("POST", "/conversations").len() == 1
    })
    .await;
    // A customer starts one too.
    let lead: Value = http()
        .post(format!("{}/contacts", s.intercom))
        .bearer_auth(TOKEN)
        .json(&json!({"role": "lead", "email": "asker@example.com"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    http()
        .post(format!("{}/conversations", s.intercom))
        .bearer_auth(TOKEN)
        .json(&json!({"from": {"type": "lead", "id": lead["id"]}, "body": "Is there an API?"}))
        .send()
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    while stored(&receiver.url(""), "track").await.is_empty() {
        assert!(Instant::now() < deadline, "{}", s.server.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    s.notifications_settled().await;
    let tracks = stored(&receiver.url(""), "track").await;
    assert_eq!(
        tracks.len(),
        1,
        "only the customer's conversation: {tracks:#?}"
    );
    assert_eq!(
        tracks[0]["body"]["properties"]["first_message"],
        "Is there an API?"
    );
    // Nor is the contact Junction created for dee announced back to Segment.
    let identifies = stored(&receiver.url(""), "identify").await;
    assert!(
        identifies
            .iter()
            .all(|i| i["body"]["anonymousId"] == lead["id"]),
        "only the customer's lead: {identifies:#?}"
    );
}
