//! Companies, tags, data events and admins in the emulator.

use junction_emulator::{Emulator, EmulatorConfig};
use serde_json::{Value, json};

struct Api {
    base: String,
    http: reqwest::Client,
}

impl Api {
    async fn start() -> Api {
        let emulator = Emulator::new(EmulatorConfig::default());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = emulator.spawn(listener).await.unwrap();
        Api {
            base: format!("http://{addr}"),
            http: http(),
        }
    }

    async fn send(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth("t");
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        self.send(reqwest::Method::POST, path, Some(body)).await
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        self.send(reqwest::Method::GET, path, None).await
    }
}

#[tokio::test]
async fn companies_upsert_by_company_id_and_attach_contacts() {
    let api = Api::start().await;
    let (status, acme) = api.post("/companies", json!({"company_id": "g1", "name": "Acme", "size": 42, "monthly_spend": 99.9, "plan": "pro"})).await;
    assert_eq!(status, 200);
    assert_eq!(
        (
            acme["type"].as_str(),
            acme["monthly_spend"].as_i64(),
            acme["plan"]["name"].as_str()
        ),
        (Some("company"), Some(99), Some("pro"))
    );
    let (_, again) = api
        .post(
            "/companies",
            json!({"company_id": "g1", "industry": "Software"}),
        )
        .await;
    assert_eq!(
        (
            again["id"].clone(),
            again["name"].as_str(),
            again["industry"].as_str()
        ),
        (acme["id"].clone(), Some("Acme"), Some("Software"))
    );
    let (status, body) = api
        .post("/companies", json!({"company_id": "g2", "test": 1}))
        .await;
    assert_eq!(
        (status, body["errors"][0]["code"].as_str()),
        (400, Some("bad_request"))
    );
    assert_eq!(
        api.get("/companies?company_id=g1").await.1["id"],
        acme["id"]
    );
    assert_eq!(api.get("/companies?company_id=nope").await.0, 404);

    let (_, contact) = api.post("/contacts", json!({"external_id": "u1"})).await;
    let contact_id = contact["id"].as_str().unwrap();
    let company_id = acme["id"].as_str().unwrap();
    let (status, attached) = api
        .post(
            &format!("/contacts/{contact_id}/companies"),
            json!({"id": company_id}),
        )
        .await;
    assert_eq!((status, attached["user_count"].as_u64()), (200, Some(1)));
    let (_, shown) = api.get(&format!("/contacts/{contact_id}")).await;
    assert_eq!(shown["companies"]["data"][0]["id"], company_id);
    assert_eq!(
        api.get(&format!("/contacts/{contact_id}/companies"))
            .await
            .1["total_count"],
        1
    );
    assert_eq!(
        api.post(
            &format!("/contacts/{contact_id}/companies"),
            json!({"id": "missing"})
        )
        .await
        .0,
        404
    );
    let (status, detached) = api
        .send(
            reqwest::Method::DELETE,
            &format!("/contacts/{contact_id}/companies/{company_id}"),
            None,
        )
        .await;
    assert_eq!((status, detached["user_count"].as_u64()), (200, Some(0)));
}

#[tokio::test]
async fn tags_are_found_by_name_and_applied_to_contacts() {
    let api = Api::start().await;
    let (_, vip) = api.post("/tags", json!({"name": "VIP"})).await;
    let (_, same) = api.post("/tags", json!({"name": "vip"})).await;
    assert_eq!(vip["id"], same["id"]);
    let (_, contact) = api.post("/contacts", json!({"external_id": "u1"})).await;
    let contact_id = contact["id"].as_str().unwrap();
    let (status, applied) = api
        .post(
            &format!("/contacts/{contact_id}/tags"),
            json!({"id": vip["id"]}),
        )
        .await;
    assert_eq!(
        (status, applied["applied_by"]["type"].as_str()),
        (200, Some("admin"))
    );
    assert_eq!(
        api.get(&format!("/contacts/{contact_id}")).await.1["tags"]["total_count"],
        1
    );
    api.send(
        reqwest::Method::DELETE,
        &format!(
            "/contacts/{contact_id}/tags/{}",
            vip["id"].as_str().unwrap()
        ),
        None,
    )
    .await;
    assert_eq!(
        api.get(&format!("/contacts/{contact_id}")).await.1["tags"]["total_count"],
        0
    );
    assert_eq!(
        api.post(
            &format!("/contacts/{contact_id}/tags"),
            json!({"id": "404"})
        )
        .await
        .0,
        404
    );
    assert_eq!(
        api.get("/tags").await.1["data"].as_array().unwrap().len(),
        1
    );
}

#[tokio::test]
async fn data_events_follow_intercoms_metadata_rules() {
    let api = Api::start().await;
    let (_, user) = api
        .post(
            "/contacts",
            json!({"external_id": "u1", "email": "u1@example.com"}),
        )
        .await;
    let metadata: serde_json::Map<String, Value> =
        (0..12).map(|i| (format!("k{i:02}"), json!(i))).collect();
    let (status, body) = api.post("/events", json!({"event_name": "Plan Upgraded", "created_at": 1_800_000_000, "user_id": "u1", "metadata": metadata})).await;
    assert_eq!((status, body), (202, Value::Null));
    let price = json!({"price": {"amount": 999, "currency": "eur"}, "article": {"url": "https://x.test", "value": "Docs"}});
    assert_eq!(api.post("/events", json!({"event_name": "Paid", "created_at": 1_800_000_001, "email": "u1@example.com", "metadata": price})).await.0, 202);
    let (status, body) = api.post("/events", json!({"event_name": "Bad", "created_at": 1, "id": user["id"], "metadata": {"nested": {"a": 1}}})).await;
    assert_eq!(
        (status, body["errors"][0]["code"].as_str()),
        (400, Some("parameter_invalid"))
    );
    assert_eq!(
        api.post(
            "/events",
            json!({"event_name": "E", "created_at": 1, "user_id": "nobody"})
        )
        .await
        .0,
        404
    );
    // The same contact, name and created_at is one event.
    api.post(
        "/events",
        json!({"event_name": "Paid", "created_at": 1_800_000_001, "user_id": "u1"}),
    )
    .await;

    let (_, listed) = api
        .get(&format!(
            "/events?type=user&intercom_user_id={}",
            user["id"].as_str().unwrap()
        ))
        .await;
    let events = listed["events"].as_array().unwrap();
    assert_eq!(events.len(), 2);
    assert_eq!(
        events[0]["metadata"].as_object().unwrap().len(),
        10,
        "keys past the tenth are dropped"
    );
    assert_eq!(events[1]["metadata"]["price"]["amount"], 999);
}

/// Segment's destination sends `revenue * 100`, which for 19.99 is 1998.9999999999998: Intercom
/// refuses money that is not whole cents, and the journal shows exactly what was sent.
#[tokio::test]
async fn money_in_fractions_of_a_cent_is_refused_and_journaled_exactly() {
    let api = Api::start().await;
    api.post("/contacts", json!({"external_id": "u1"})).await;
    let sent = r#"{"event_name":"Order Completed","created_at":1800000000,"user_id":"u1","metadata":{"price":{"amount":1998.9999999999998,"currency":"usd"}}}"#;
    let response = api
        .http
        .post(format!("{}/events", api.base))
        .bearer_auth("t")
        .header("content-type", "application/json")
        .body(sent)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 400);
    let body: Value = response.json().await.unwrap();
    let message = body["errors"][0]["message"].as_str().unwrap();
    assert!(
        message.contains("'price' is money") && message.contains("integer number of cents"),
        "{message}"
    );

    let journal = api
        .http
        .get(format!("{}/_emulator/requests", api.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        journal.contains("\"amount\":1998.9999999999998"),
        "{journal}"
    );
    let journal: Value = serde_json::from_str(&journal).unwrap();
    assert_eq!(
        journal[1]["body"]["metadata"]["price"]["amount"].as_f64(),
        Some(1998.9999999999998)
    );
}

#[tokio::test]
async fn the_token_belongs_to_one_admin() {
    let api = Api::start().await;
    let (_, me) = api.get("/me").await;
    let (_, admins) = api.get("/admins").await;
    assert_eq!(me["type"], "admin");
    assert_eq!(admins["admins"][0]["id"], me["id"]);
}

/// reqwest is built with `rustls-no-provider` in this workspace: install one before building a client.
fn http() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::new()
}
