//! The contract: Intercom's official OpenAPI description (2.14, the baseline), with the
//! corrections Intercom applies when generating its own SDKs (the Fern overrides: `inapp` for
//! in-app messages, free-form event metadata); copies of both are in tests/fixtures. Every request the client sends in this scenario is checked against the
//! request schema of its path and method, and every emulator answer against the response
//! schema of its status; any mismatch fails the test, naming the operation and the field.

use junction_emulator::{Emulator, EmulatorConfig};
use junction_intercom::attributes::{AttributeCatalog, AttributePolicy};
use junction_intercom::operations::{Assignee, MessageKind};
use junction_intercom::{ContactResolver, Identity, IntercomClient, IntercomConfig};
use junction_store::{Store, StoreOptions};
use serde_json::{Map, Value, json};
use std::sync::Arc;
use std::time::Duration;

/// The OpenAPI document, with OpenAPI 3.0's `nullable` turned into JSON Schema.
struct Spec {
    doc: Value,
}

impl Spec {
    fn load() -> Spec {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../tests/fixtures/intercom-openapi-2.14.yaml"
        );
        let text = std::fs::read_to_string(path).unwrap();
        // Both files repeat a key here and there; Intercom's tooling keeps the last one.
        let options = || {
            serde_saphyr::options! {
                duplicate_keys: serde_saphyr::options::DuplicateKeyPolicy::LastWins,
            }
        };
        let mut doc: Value = serde_saphyr::from_str_with_options(&text, options()).unwrap();
        let overrides = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../tests/fixtures/intercom-openapi-2.14-fern-overrides.yml"
        );
        let overrides: Value = serde_saphyr::from_str_with_options(
            &std::fs::read_to_string(overrides).unwrap(),
            options(),
        )
        .unwrap();
        overlay(&mut doc, overrides);
        nullable_to_json_schema(&mut doc);
        Spec { doc }
    }

    /// The path template (`/contacts/{id}`) matching a request path; the most literal one wins.
    fn template(&self, path: &str) -> Option<String> {
        let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
        self.doc["paths"]
            .as_object()?
            .keys()
            .filter(|template| {
                let parts: Vec<&str> = template.trim_matches('/').split('/').collect();
                parts.len() == segments.len()
                    && parts
                        .iter()
                        .zip(&segments)
                        .all(|(t, s)| t.starts_with('{') || t == s)
            })
            .max_by_key(|template| template.split('/').filter(|p| !p.starts_with('{')).count())
            .cloned()
    }

    fn resolve<'a>(&'a self, value: &'a Value) -> &'a Value {
        match value.get("$ref").and_then(Value::as_str) {
            Some(reference) => reference
                .trim_start_matches('#')
                .split('/')
                .skip(1)
                .fold(&self.doc, |node, key| {
                    &node[key.replace("~1", "/").replace("~0", "~")]
                }),
            None => value,
        }
    }

    /// Errors of `instance` against `schema`, whose `$ref`s point into the document.
    fn check(&self, schema: &Value, instance: &Value) -> Vec<String> {
        let mut root = schema.clone();
        if let Some(object) = root.as_object_mut() {
            object.insert("components".into(), self.doc["components"].clone());
        } else {
            return vec![];
        }
        // Formats are descriptions here: Intercom's own answers carry relative URLs where the
        // description says `format: uri`.
        let validator = jsonschema::options()
            .with_draft(jsonschema::Draft::Draft7)
            .should_validate_formats(false)
            .build(&root)
            .unwrap_or_else(|e| panic!("schema does not compile: {e}"));
        validator
            .iter_errors(instance)
            .map(|e| format!("{} at {}", e, e.instance_path()))
            .collect()
    }
}

/// Applies an overlay: objects merge key by key, anything else replaces.
fn overlay(target: &mut Value, patch: Value) {
    match (target, patch) {
        (Value::Object(target), Value::Object(patch)) => {
            for (key, value) in patch {
                match target.get_mut(&key) {
                    Some(existing) => overlay(existing, value),
                    None => {
                        target.insert(key, value);
                    }
                }
            }
        }
        (target, patch) => *target = patch,
    }
}

fn nullable_to_json_schema(value: &mut Value) {
    match value {
        Value::Object(object) => {
            // The description has a few empty schemas (`teammates:` or `properties:` with
            // nothing under them): they constrain nothing.
            if object.get("properties").is_some_and(Value::is_null) {
                object.insert("properties".into(), json!({}));
            }
            if let Some(Value::Object(properties)) = object.get_mut("properties") {
                for schema in properties.values_mut().filter(|s| s.is_null()) {
                    *schema = json!({});
                }
            }
            for child in object.values_mut() {
                nullable_to_json_schema(child);
            }
            if object.remove("nullable") == Some(Value::Bool(true)) {
                match object.get("type").cloned() {
                    Some(Value::String(kind)) => {
                        object.insert("type".into(), json!([kind, "null"]));
                        if let Some(Value::Array(options)) = object.get_mut("enum") {
                            options.push(Value::Null);
                        }
                    }
                    _ => {
                        let inner = Value::Object(std::mem::take(object));
                        object.insert("anyOf".into(), json!([inner, {"type": "null"}]));
                    }
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(nullable_to_json_schema),
        _ => {}
    }
}

/// Every client operation once, through the emulator.
async fn scenario(base: &str) {
    let intercom = IntercomClient::new(IntercomConfig::new(base, "token")).unwrap();
    let admin = intercom.me().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    intercom.admins().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = junction_store::open(
        &format!("sqlite://{}", dir.path().join("c.db").display()),
        StoreOptions::default(),
    )
    .await
    .unwrap();
    let resolver = ContactResolver::new(intercom.clone(), store, "ws");
    let catalog = AttributeCatalog::new(intercom.clone());
    let traits = json!({"email": "ann@example.com", "name": "Ann", "plan": "pro", "seats": 3, "createdAt": "2024-01-01T00:00:00Z"});
    let prepared = catalog
        .prepare(traits.as_object().unwrap(), AttributePolicy::default())
        .await
        .unwrap();
    let identity = Identity {
        user_id: Some("u1".into()),
        email: Some("ann@example.com".into()),
        ..Identity::default()
    };
    let user = resolver
        .upsert(&identity, &prepared.fields)
        .await
        .unwrap()
        .contact;
    resolver.upsert(&identity, &Map::new()).await.unwrap();
    let visitor = Identity {
        anonymous_id: Some("a1".into()),
        email: Some("lead@example.com".into()),
        ..Identity::default()
    };
    let lead = resolver
        .upsert(&visitor, &Map::new())
        .await
        .unwrap()
        .contact;
    intercom
        .search_contacts(
            &json!({"operator": "OR", "value": [
        {"field": "email", "operator": "=", "value": "ann@example.com"},
        {"field": "external_id", "operator": "=", "value": "u1"}]}),
            10,
            None,
        )
        .await
        .unwrap();
    intercom.find_user_by_external_id("u1").await.unwrap();
    let company = intercom.upsert_company(&json!({"company_id": "g1", "name": "Acme", "size": 42, "plan": "pro", "monthly_spend": 100})).await.unwrap();
    intercom
        .attach_contact_to_company(&user.id, &company.id)
        .await
        .unwrap();
    intercom
        .detach_contact_from_company(&user.id, &company.id)
        .await
        .unwrap();
    let tag = intercom.tag_id("churn-risk").await.unwrap();
    intercom.tag_contact(&user.id, &tag).await.unwrap();
    intercom.untag_contact(&user.id, &tag).await.unwrap();
    let metadata = json!({"plan": "pro", "price": {"amount": 999, "currency": "usd"}});
    intercom
        .submit_event(
            &user.id,
            Some("ann@example.com"),
            "Plan Upgraded",
            1_800_000_000,
            metadata.as_object().unwrap(),
        )
        .await
        .unwrap();
    intercom
        .send_message(
            &admin,
            &user.id,
            "user",
            &MessageKind::InApp,
            "Welcome",
            false,
        )
        .await
        .unwrap();
    intercom
        .send_message(
            &admin,
            &user.id,
            "user",
            &MessageKind::Email {
                subject: "Hi".into(),
            },
            "Hello",
            true,
        )
        .await
        .unwrap();
    let conversation = intercom
        .start_conversation(&lead.id, "lead", "Question")
        .await
        .unwrap();
    intercom
        .reply_as_admin(&conversation, &admin, "Answer", false)
        .await
        .unwrap();
    intercom
        .reply_as_admin(&conversation, &admin, "Internal", true)
        .await
        .unwrap();
    intercom
        .assign_conversation(&conversation, &admin, &Assignee::Admin(admin.clone()))
        .await
        .unwrap();
    intercom.add_note(&user.id, &admin, "Called").await.unwrap();
    intercom.unarchive_contact(&user.id).await.unwrap();
}

#[tokio::test]
async fn requests_and_responses_follow_the_2_14_description() {
    let emulator = Emulator::new(EmulatorConfig {
        search_lag: Duration::ZERO,
        ..EmulatorConfig::default()
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", emulator.spawn(listener).await.unwrap());
    scenario(&base).await;

    let spec = Spec::load();
    junction_intercom::install_tls_provider();
    let journal: Vec<Value> = reqwest::get(format!("{base}/_emulator/requests"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        journal.len() >= 25,
        "the scenario covers the operations ({} calls)",
        journal.len()
    );
    let mut mismatches = Vec::new();
    let mut checked = 0;
    for entry in &journal {
        let (method, path) = (
            entry["method"].as_str().unwrap().to_lowercase(),
            entry["path"].as_str().unwrap(),
        );
        let Some(template) = spec.template(path) else {
            mismatches.push(format!("{method} {path}: no such path in the description"));
            continue;
        };
        let operation = &spec.doc["paths"][&template][&method];
        if operation.is_null() {
            mismatches.push(format!(
                "{method} {template}: no such operation in the description"
            ));
            continue;
        }
        let request_schema =
            &spec.resolve(&operation["requestBody"])["content"]["application/json"]["schema"];
        if !request_schema.is_null() && !entry["body"].is_null() {
            checked += 1;
            for error in spec.check(request_schema, &entry["body"]) {
                mismatches.push(format!("request {method} {template}: {error}"));
            }
        }
        let status = entry["status"].as_u64().unwrap().to_string();
        let described = spec.resolve(&operation["responses"][&status]);
        // Errors the description leaves out (a 404 on a lookup, a 409 on create) still use
        // Intercom's error envelope.
        let error_envelope = json!({"content": {"application/json": {"schema": {"$ref": "#/components/schemas/error"}}}});
        let response = match (described.is_null(), status.starts_with('4')) {
            (false, _) => described,
            (true, true) => &error_envelope,
            (true, false) => &Value::Null,
        };
        let response_schema = &response["content"]["application/json"]["schema"];
        if response.is_null() {
            mismatches.push(format!(
                "{method} {template}: status {status} is not described"
            ));
        } else if !response_schema.is_null() && !entry["response"].is_null() {
            checked += 1;
            for error in spec.check(response_schema, &entry["response"]) {
                mismatches.push(format!("response {method} {template} {status}: {error}"));
            }
        }
    }
    assert!(checked >= 40, "bodies checked: {checked}");
    assert!(
        mismatches.is_empty(),
        "{} mismatches:\n{}",
        mismatches.len(),
        mismatches.join("\n")
    );
}
