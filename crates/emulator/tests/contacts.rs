//! The emulator over HTTP, as an Intercom client meets it.

use junction_emulator::{Emulator, EmulatorConfig};
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::time::Duration;

struct Api {
    base: String,
    http: reqwest::Client,
    token: &'static str,
}

async fn start(config: EmulatorConfig) -> (Api, Emulator) {
    let emulator = Emulator::new(config);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = emulator.clone().spawn(listener).await.unwrap();
    let api = Api {
        base: format!("http://{addr}"),
        http: http(),
        token: "tok",
    };
    (api, emulator)
}

fn config() -> EmulatorConfig {
    EmulatorConfig {
        token: Some("tok".into()),
        rate_limit: 10_000,
        search_lag: Duration::from_millis(300),
    }
}

impl Api {
    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, reqwest::header::HeaderMap, Value) {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(self.token)
            .header("Intercom-Version", "2.14");
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let (status, headers) = (response.status(), response.headers().clone());
        let body = response.json().await.unwrap_or(Value::Null);
        (status, headers, body)
    }

    async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        let (status, _, body) = self.call(reqwest::Method::POST, path, Some(body)).await;
        (status, body)
    }

    async fn get(&self, path: &str) -> (StatusCode, Value) {
        let (status, _, body) = self.call(reqwest::Method::GET, path, None).await;
        (status, body)
    }

    async fn search_external_id(&self, external_id: &str) -> Value {
        self.post(
            "/contacts/search",
            json!({"query": {"field": "external_id", "operator": "=", "value": external_id}}),
        )
        .await
        .1
    }
}

fn assert_error(body: &Value, code: &str) {
    assert_eq!(body["type"], "error.list", "{body}");
    assert_eq!(body["errors"][0]["code"], code, "{body}");
    assert!(body["request_id"].is_string());
}

#[tokio::test]
async fn a_wrong_or_missing_token_is_401_without_rate_limit_headers() {
    let (api, _) = start(config()).await;
    for token in [Some("wrong"), None] {
        let mut request = api.http.get(format!("{}/contacts", api.base));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        assert!(response.headers().get("x-ratelimit-remaining").is_none());
        assert_error(&response.json().await.unwrap(), "unauthorized");
    }
}

#[tokio::test]
async fn creating_an_existing_user_is_a_409_naming_its_id() {
    let (api, _) = start(config()).await;
    let (status, ann) = api
        .post(
            "/contacts",
            json!({"external_id": "u1", "email": "ann@example.com", "name": "Ann"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        (ann["type"].as_str(), ann["role"].as_str()),
        (Some("contact"), Some("user"))
    );
    assert_eq!(ann["email_domain"], "example.com");
    let id = ann["id"].as_str().unwrap();
    assert_eq!(id.len(), 24);

    for duplicate in [
        json!({"external_id": "u1"}),
        json!({"email": "ANN@example.com", "role": "user"}),
    ] {
        let (status, body) = api.post("/contacts", duplicate).await;
        assert_eq!(status, StatusCode::CONFLICT);
        assert_error(&body, "conflict");
        assert_eq!(
            body["errors"][0]["message"],
            format!("A contact matching those details already exists with id={id}")
        );
    }
    // Leads may share an email, and keep an external_id of their own.
    let (status, lead) = api
        .post(
            "/contacts",
            json!({"role": "lead", "email": "ann@example.com", "external_id": "mine"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_ne!(lead["external_id"], "mine");
    let (status, body) = api.post("/contacts", json!({"name": "nobody"})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_error(&body, "parameter_invalid");
}

#[tokio::test]
async fn search_lags_behind_creation_but_direct_reads_do_not() {
    let (api, _) = start(config()).await;
    let (_, created) = api
        .post("/contacts", json!({"external_id": "lagging"}))
        .await;
    assert_eq!(api.search_external_id("lagging").await["total_count"], 0);
    let (status, found) = api.get("/contacts/find_by_external_id/lagging").await;
    assert_eq!((status, &found["id"]), (StatusCode::OK, &created["id"]));
    // Found once the lag has passed: wait for that state, not for a guessed time.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let result = loop {
        let result = api.search_external_id("lagging").await;
        if result["total_count"] == 1 {
            break result;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "never found: {result}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(result["data"][0]["id"], created["id"]);
}

#[tokio::test]
async fn archived_and_deleted_contacts_block_re_creation_as_archived() {
    let (api, _) = start(config()).await;
    let (_, a) = api.post("/contacts", json!({"external_id": "arch"})).await;
    let id = a["id"].as_str().unwrap();
    let (status, archived) = api
        .post(&format!("/contacts/{id}/archive"), json!({}))
        .await;
    assert_eq!(
        (status, archived["archived"].as_bool()),
        (StatusCode::OK, Some(true))
    );
    let (status, body) = api.post("/contacts", json!({"external_id": "arch"})).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(
        body["errors"][0]["message"],
        format!("An archived contact matching those details already exists with id={id}")
    );
    assert_eq!(
        api.get("/contacts/find_by_external_id/arch").await.0,
        StatusCode::NOT_FOUND
    );
    api.post(&format!("/contacts/{id}/unarchive"), json!({}))
        .await;
    assert_eq!(
        api.get("/contacts/find_by_external_id/arch").await.0,
        StatusCode::OK
    );

    let (status, deleted) = api
        .call(reqwest::Method::DELETE, &format!("/contacts/{id}"), None)
        .await
        .into_parts();
    assert_eq!(
        (status, deleted["deleted"].as_bool()),
        (StatusCode::OK, Some(true))
    );
    let (status, body) = api.get(&format!("/contacts/{id}")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_error(&body, "not_found");
    assert_eq!(
        api.post("/contacts", json!({"external_id": "arch"}))
            .await
            .0,
        StatusCode::CONFLICT
    );
}

trait IntoParts {
    fn into_parts(self) -> (StatusCode, Value);
}

impl IntoParts for (StatusCode, reqwest::header::HeaderMap, Value) {
    fn into_parts(self) -> (StatusCode, Value) {
        (self.0, self.2)
    }
}

#[tokio::test]
async fn custom_attributes_must_exist_and_fit_their_type() {
    let (api, _) = start(config()).await;
    let (status, body) = api
        .post(
            "/contacts",
            json!({"external_id": "c1", "custom_attributes": {"plan": "pro"}}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        body["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("'plan' does not exist")
    );

    for (name, data_type) in [
        ("plan", "string"),
        ("seats", "integer"),
        ("mrr", "float"),
        ("trial", "boolean"),
    ] {
        let (status, attribute) = api
            .post(
                "/data_attributes",
                json!({"name": name, "model": "contact", "data_type": data_type}),
            )
            .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(attribute["full_name"], format!("custom_attributes.{name}"));
    }
    assert_eq!(
        api.post(
            "/data_attributes",
            json!({"name": "plan", "model": "contact", "data_type": "string"})
        )
        .await
        .0,
        StatusCode::BAD_REQUEST
    );

    let (status, contact) = api
        .post("/contacts", json!({"external_id": "c1", "custom_attributes": {"plan": "pro", "seats": 3, "mrr": 9.5, "trial": true}}))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(contact["custom_attributes"]["seats"], 3);
    let id = contact["id"].as_str().unwrap();
    let (status, body) = api
        .call(
            reqwest::Method::PUT,
            &format!("/contacts/{id}"),
            Some(json!({"custom_attributes": {"seats": "three"}})),
        )
        .await
        .into_parts();
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        body["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("of type integer")
    );
    let (status, updated) = api
        .call(
            reqwest::Method::PUT,
            &format!("/contacts/{id}"),
            Some(json!({"custom_attributes": {"plan": null}, "name": "C"})),
        )
        .await
        .into_parts();
    assert_eq!(status, StatusCode::OK);
    assert!(updated["custom_attributes"].get("plan").is_none());
    assert_eq!(
        (
            updated["name"].as_str(),
            updated["custom_attributes"]["seats"].as_i64()
        ),
        (Some("C"), Some(3))
    );
    let (_, listed) = api.get("/data_attributes?model=contact").await;
    assert_eq!(listed["data"].as_array().unwrap().len(), 4);
}

#[tokio::test]
async fn a_lead_becomes_a_user_but_never_the_reverse() {
    let (api, _) = start(config()).await;
    let (_, lead) = api
        .post(
            "/contacts",
            json!({"role": "lead", "email": "l@example.com"}),
        )
        .await;
    let id = lead["id"].as_str().unwrap();
    let path = format!("/contacts/{id}");
    let (status, user) = api
        .call(
            reqwest::Method::PUT,
            &path,
            Some(json!({"role": "user", "external_id": "u9"})),
        )
        .await
        .into_parts();
    assert_eq!(
        (status, user["role"].as_str(), user["external_id"].as_str()),
        (StatusCode::OK, Some("user"), Some("u9"))
    );
    let (status, body) = api
        .call(reqwest::Method::PUT, &path, Some(json!({"role": "lead"})))
        .await
        .into_parts();
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(
        body["errors"][0]["message"],
        "user role can't be converted to a lead"
    );
}

#[tokio::test]
async fn search_and_list_page_with_body_cursors() {
    let (api, emulator) = start(config()).await;
    emulator.set_search_lag(Duration::ZERO);
    for n in 0..7 {
        api.post(
            "/contacts",
            json!({"external_id": format!("p{n}"), "email": format!("p{n}@team.example")}),
        )
        .await;
    }
    let query = json!({"field": "email", "operator": "$", "value": "@team.example"});
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut pagination = json!({"per_page": 3});
        if let Some(cursor) = &cursor {
            pagination["starting_after"] = cursor.clone().into();
        }
        let (status, page) = api
            .post(
                "/contacts/search",
                json!({"query": query, "pagination": pagination}),
            )
            .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(page["total_count"], 7);
        seen.extend(
            page["data"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| c["external_id"].as_str().unwrap().to_owned()),
        );
        match page["pages"]["next"]["starting_after"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    assert_eq!(seen, (0..7).map(|n| format!("p{n}")).collect::<Vec<_>>());
    let (_, listed) = api.get("/contacts?per_page=5").await;
    assert_eq!(
        (
            listed["data"].as_array().unwrap().len(),
            listed["pages"]["total_pages"].as_u64()
        ),
        (5, Some(2))
    );
    let (status, body) = api
        .post(
            "/contacts/search",
            json!({"query": {"field": "email", "operator": "≈", "value": 1}}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_error(&body, "parameter_invalid");
}

#[tokio::test]
async fn the_rate_limit_is_announced_and_enforced_per_ten_second_window() {
    let (api, _) = start(EmulatorConfig {
        rate_limit: 5,
        ..config()
    })
    .await;
    let mut remaining = Vec::new();
    let mut statuses = Vec::new();
    for _ in 0..7 {
        let (status, headers, body) = api.call(reqwest::Method::GET, "/contacts", None).await;
        let header = |name: &str| {
            headers
                .get(name)
                .unwrap()
                .to_str()
                .unwrap()
                .parse::<u64>()
                .unwrap()
        };
        assert_eq!(header("x-ratelimit-limit"), 5);
        let reset = header("x-ratelimit-reset");
        assert_eq!(reset % 10, 0, "windows are aligned to 10 s");
        remaining.push(header("x-ratelimit-remaining"));
        statuses.push(status);
        if status == StatusCode::TOO_MANY_REQUESTS {
            assert_error(&body, "rate_limit_exceeded");
            assert_eq!(
                body["errors"][0]["message"],
                "Exceeded rate limit of 5 in 10_seconds"
            );
        }
    }
    // A window boundary may fall inside the loop; either way the count restarts at the limit.
    let refused = statuses
        .iter()
        .filter(|s| **s == StatusCode::TOO_MANY_REQUESTS)
        .count();
    assert!(refused >= 1, "{statuses:?} {remaining:?}");
    assert!(
        remaining
            .windows(2)
            .all(|w| w[1] < w[0] || w[1] == 0 || w[1] == 4),
        "{remaining:?}"
    );
}

#[tokio::test]
async fn the_journal_keeps_every_request_without_credentials() {
    let (api, _) = start(config()).await;
    api.post("/contacts", json!({"external_id": "j1"})).await;
    api.get("/contacts/nope").await;
    let journal: Vec<Value> = api
        .http
        .get(format!("{}/_emulator/requests", api.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(journal.len(), 2);
    assert_eq!(
        (
            journal[0]["method"].as_str(),
            journal[0]["path"].as_str(),
            journal[0]["status"].as_u64()
        ),
        (Some("POST"), Some("/contacts"), Some(200))
    );
    assert_eq!(journal[0]["body"]["external_id"], "j1");
    assert_eq!(journal[0]["intercom_version"], "2.14");
    assert_eq!(journal[1]["status"], 404);
    assert!(!serde_json::to_string(&journal).unwrap().contains("tok"));
    api.http
        .delete(format!("{}/_emulator/requests", api.base))
        .send()
        .await
        .unwrap();
    let journal: Vec<Value> = api
        .http
        .get(format!("{}/_emulator/requests", api.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(journal.is_empty());
}

/// reqwest is built with `rustls-no-provider` in this workspace: install one before building a client.
fn http() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::new()
}
