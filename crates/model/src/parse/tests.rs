use super::*;
use proptest::prelude::*;
use serde_json::json;

fn now() -> DateTime<Utc> {
    timestamp::parse("2026-11-29T08:00:00.000Z").unwrap()
}

fn fixture(path: &str) -> String {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fixtures/");
    std::fs::read_to_string(format!("{root}{path}")).unwrap()
}

fn batch(value: serde_json::Value) -> Result<Envelope, RequestError> {
    parse_batch(value.to_string().as_bytes(), now())
}

#[test]
fn every_captured_python_and_node_request_parses_whole() {
    for file in [
        "segment-clients/segment-analytics-python-2.4.0.jsonl",
        "segment-clients/segment-analytics-node-3.1.0.jsonl",
    ] {
        for line in fixture(file).lines() {
            let capture: serde_json::Value = serde_json::from_str(line).unwrap();
            let sent = &capture["body"]["batch"];
            let envelope = batch(capture["body"].clone()).unwrap();
            assert!(
                envelope.rejected.is_empty(),
                "{file}: {:?}",
                envelope.rejected
            );
            assert_eq!(envelope.write_key.as_deref(), Some("WRITE_KEY_TEST"));
            assert_eq!(envelope.messages.len(), sent.as_array().unwrap().len());
            for (message, original) in envelope.messages.iter().zip(sent.as_array().unwrap()) {
                assert_eq!(message.message_id, original["messageId"].as_str().unwrap());
                assert_eq!(message.kind.as_str(), original["type"].as_str().unwrap());
                // Every field sent is kept as sent, explicit nulls included.
                for (key, value) in original.as_object().unwrap() {
                    assert_eq!(message.body.get(key), Some(value), "{file}: field {key}");
                }
                assert_eq!(message.body["receivedAt"], "2026-11-29T08:00:00.000Z");
                assert_eq!(message.body["sentAt"], capture["body"]["sentAt"]);
            }
        }
    }
}

#[test]
fn python_nulls_leave_the_other_identity_in_charge() {
    let envelope = batch(json!({"batch": [
        {"type": "identify", "userId": "u1", "anonymousId": null, "traits": {"a": 1},
         "context": null, "messageId": "m1", "timestamp": "2026-11-29T06:29:22.077+00:00"}
    ]}))
    .unwrap();
    let message = &envelope.messages[0];
    assert_eq!(message.identity(), "u1");
    assert_eq!(message.anonymous_id, None);
    assert_eq!(
        message.timestamp,
        timestamp::parse("2026-11-29T06:29:22.077Z").unwrap()
    );
}

#[test]
fn the_documented_batch_example_is_accepted_with_shared_context_merged() {
    let example: serde_json::Value =
        serde_json::from_str(&fixture("segment-spec-examples/http-api-batch.json")).unwrap();
    let envelope = batch(example["body"].clone()).unwrap();
    assert!(envelope.rejected.is_empty(), "{:?}", envelope.rejected);
    assert_eq!(envelope.messages.len(), 4);
    for message in &envelope.messages {
        assert_eq!(message.body["context"]["device"]["name"], "Apple iPhone 6");
        assert!(message.body.get("writeKey").is_none());
    }
}

#[test]
fn the_message_own_context_wins_over_the_batch_context() {
    let envelope = batch(json!({
        "context": {"ip": "1.1.1.1", "library": {"name": "batch", "version": "1"}},
        "integrations": {"All": false},
        "batch": [{"type": "track", "userId": "u", "event": "E",
                   "context": {"library": {"name": "mine"}}, "integrations": {"Intercom": true}}]
    }))
    .unwrap();
    let body = &envelope.messages[0].body;
    assert_eq!(
        body["context"]["library"],
        json!({"name": "mine", "version": "1"})
    );
    assert_eq!(body["context"]["ip"], "1.1.1.1");
    assert_eq!(
        body["integrations"],
        json!({"Intercom": true, "All": false})
    );
}

#[test]
fn every_spec_example_is_valid_through_its_own_endpoint() {
    for (file, kind) in [
        ("identify.json", MessageType::Identify),
        ("track.json", MessageType::Track),
        ("page.json", MessageType::Page),
        ("screen.json", MessageType::Screen),
        ("group.json", MessageType::Group),
        ("alias.json", MessageType::Alias),
    ] {
        let example: serde_json::Value =
            serde_json::from_str(&fixture(&format!("segment-spec-examples/{file}"))).unwrap();
        let body = example["message"].to_string();
        let envelope =
            parse_single(body.as_bytes(), kind, now()).unwrap_or_else(|e| panic!("{file}: {e}"));
        assert_eq!(envelope.messages[0].kind, kind);
    }
}

#[test]
fn invalid_messages_name_the_field_and_the_rule() {
    let cases = [
        (
            json!({"type": "identify", "traits": {}}),
            "userId",
            "required when there is no anonymousId",
        ),
        (
            json!({"type": "identify", "userId": "", "anonymousId": null}),
            "userId",
            "required when there is no anonymousId",
        ),
        (
            json!({"type": "delete", "anonymousId": "a1"}),
            "userId",
            "required for a delete call (the user to delete)",
        ),
        (
            json!({"type": "track", "userId": "u"}),
            "event",
            "required for a track call",
        ),
        (
            json!({"type": "track", "userId": "u", "event": ""}),
            "event",
            "must not be empty",
        ),
        (
            json!({"type": "group", "userId": "u"}),
            "groupId",
            "required for a group call",
        ),
        (
            json!({"type": "alias", "userId": "u"}),
            "previousId",
            "required for an alias call",
        ),
        (
            json!({"type": "login", "userId": "u"}),
            "type",
            "unknown message type \"login\"",
        ),
        (json!({"userId": "u"}), "type", "required"),
        (
            json!({"type": "identify", "userId": {"id": 1}}),
            "userId",
            "must be a string",
        ),
        (
            json!({"type": "identify", "userId": "u", "traits": [1]}),
            "traits",
            "must be an object",
        ),
        (
            json!({"type": "identify", "userId": "u", "timestamp": "yesterday"}),
            "timestamp",
            "is not an ISO-8601",
        ),
        (
            json!({"type": "identify", "userId": "u", "messageId": "x".repeat(101)}),
            "messageId",
            "longer than 100",
        ),
        (
            json!({"type": "identify", "userId": "u", "messageId": 7}),
            "messageId",
            "must be a string",
        ),
    ];
    for (message, field, rule) in cases {
        let envelope = batch(json!({"batch": [message.clone()]})).unwrap();
        assert!(envelope.messages.is_empty(), "{message}");
        let rejected = &envelope.rejected[0];
        assert_eq!(rejected.error.field, field, "{message}");
        assert!(
            rejected.error.rule.contains(rule),
            "{message}: {}",
            rejected.error.rule
        );
        assert_eq!(rejected.error.code, "invalid_message");
    }
}

#[test]
fn a_batch_keeps_valid_messages_and_rejects_invalid_ones_in_place() {
    let envelope = batch(json!({"batch": [
        {"type": "identify", "userId": "u1"},
        {"type": "track", "userId": "u1", "messageId": "bad-1"},
        "not an object",
        {"type": "track", "anonymousId": "a1", "event": "Clicked", "writeKey": "secret"},
    ]}))
    .unwrap();
    assert_eq!(envelope.messages.len(), 2);
    let indexes: Vec<_> = envelope.rejected.iter().map(|r| r.index).collect();
    assert_eq!(indexes, [1, 2]);
    assert_eq!(envelope.rejected[0].message_id.as_deref(), Some("bad-1"));
    assert_eq!(envelope.rejected[0].kind.as_deref(), Some("track"));
    assert!(envelope.rejected[0].raw.contains("bad-1"));
    assert!(!envelope.messages[1].body.contains_key("writeKey"));
}

#[test]
fn missing_message_ids_are_generated_and_unique() {
    let envelope = batch(json!({"batch": [
        {"type": "identify", "userId": "u1"}, {"type": "identify", "userId": "u1", "messageId": null}
    ]}))
    .unwrap();
    let [a, b] = [&envelope.messages[0], &envelope.messages[1]];
    assert_ne!(a.message_id, b.message_id);
    assert_eq!(a.body["messageId"], a.message_id.as_str());
    assert!(a.message_id.len() <= 100);
}

#[test]
fn numeric_ids_and_string_or_number_versions_are_accepted() {
    let envelope = batch(json!({"batch": [
        {"type": "identify", "userId": 42, "version": 2},
        {"type": "identify", "userId": "u", "version": "1.1"},
        {"type": "group", "userId": "u", "groupId": 7},
    ]}))
    .unwrap();
    assert!(envelope.rejected.is_empty());
    assert_eq!(envelope.messages[0].identity(), "42");
    // Stored as the string Segment treats it as, so every reader sees the same id.
    assert_eq!(envelope.messages[0].body["userId"], "42");
    assert_eq!(envelope.messages[2].body["groupId"], "7");
}

#[test]
fn ids_intercom_cannot_hold_exactly_are_refused_naming_the_field() {
    let long = "x".repeat(256);
    let cases = [
        (json!({"userId": "   "}), "userId", "must not be blank"),
        (json!({"userId": "a\u{0}b"}), "userId", "control characters"),
        (json!({"userId": "a\nb"}), "userId", "control characters"),
        (
            json!({"userId": long}),
            "userId",
            "longer than 255 characters",
        ),
        (json!({"userId": ".."}), "userId", "no URL can address it"),
        (
            json!({"anonymousId": "."}),
            "anonymousId",
            "no URL can address it",
        ),
        (
            json!({"userId": 9007199254740993u64}),
            "userId",
            "cannot be held exactly",
        ),
        (
            json!({"userId": -9007199254740993i64}),
            "userId",
            "cannot be held exactly",
        ),
        (json!({"userId": 1.5}), "userId", "cannot be held exactly"),
        (json!({"userId": 1e300}), "userId", "cannot be held exactly"),
        (
            json!({"userId": "u", "type": "group", "groupId": "\t"}),
            "groupId",
            "must not be blank",
        ),
    ];
    for (fields, field, rule) in cases {
        let mut message = json!({"type": "identify"});
        for (key, value) in fields.as_object().unwrap() {
            message[key] = value.clone();
        }
        let envelope = batch(json!({ "batch": [message.clone()] })).unwrap();
        assert!(envelope.messages.is_empty(), "{message} was accepted");
        let error = &envelope.rejected[0].error;
        assert_eq!(error.field, field, "{message}");
        assert!(error.rule.contains(rule), "{message}: {}", error.rule);
    }
    // What Intercom can hold is accepted as it is, however odd for a URL.
    for id in [
        "alice?x=1",
        "alice#f",
        "../abc",
        "alice/../bob",
        "%2e%2e",
        "é 字",
        "9007199254740992",
    ] {
        let envelope = batch(json!({"batch": [{"type": "identify", "userId": id}]})).unwrap();
        assert_eq!(envelope.messages[0].identity(), id);
    }
}

#[test]
fn limits_are_named_in_the_refusal() {
    let big = "x".repeat(MAX_BATCH_BYTES);
    let err = batch(json!({"batch": [], "pad": big})).unwrap_err();
    assert_eq!(
        (err.code(), err.field(), err.limit()),
        ("payload_too_large", "batch", Some(512_000))
    );

    let many: Vec<_> = (0..2501)
        .map(|_| json!({"type": "identify", "userId": "u"}))
        .collect();
    let err = batch(json!({ "batch": many })).unwrap_err();
    assert_eq!((err.code(), err.limit()), ("batch_too_large", Some(2500)));
    assert!(err.to_string().contains("2501 messages"));

    let huge = json!({"type": "identify", "userId": "u", "traits": {"bio": "y".repeat(33_000)}});
    let envelope =
        batch(json!({"batch": [huge.clone(), {"type": "identify", "userId": "v"}]})).unwrap();
    assert_eq!(envelope.messages.len(), 1);
    assert_eq!(envelope.rejected[0].error.code, "message_too_large");
    assert!(envelope.rejected[0].error.rule.contains("32768"));

    let err = parse_single(huge.to_string().as_bytes(), MessageType::Identify, now()).unwrap_err();
    assert_eq!(
        (err.code(), err.limit()),
        ("payload_too_large", Some(32_768))
    );
}

#[test]
fn malformed_json_is_refused_with_its_position() {
    let err = parse_batch(b"{\"batch\": [\n  {\"type\": }\n]}", now()).unwrap_err();
    match err {
        RequestError::MalformedJson { line, column, .. } => assert_eq!((line, column), (2, 12)),
        other => panic!("{other:?}"),
    }
    let err = parse_batch(b"{\"batch\": 3}", now()).unwrap_err();
    assert_eq!(err.code(), "invalid_request");
    let err = parse_batch(b"{}", now()).unwrap_err();
    assert_eq!((err.code(), err.field()), ("invalid_request", "batch"));
    let err = parse_single(b"[1]", MessageType::Track, now()).unwrap_err();
    assert_eq!(err.code(), "invalid_request");
}

#[test]
fn a_single_call_takes_its_type_from_the_path_and_its_key_from_the_body() {
    let body = br#"{"type":"identify","userId":"u","event":"E","writeKey":"wk"}"#;
    let envelope = parse_single(body, MessageType::Track, now()).unwrap();
    assert_eq!(envelope.write_key.as_deref(), Some("wk"));
    assert_eq!(envelope.messages[0].kind, MessageType::Track);
    assert!(!envelope.messages[0].body.contains_key("writeKey"));
}

#[test]
fn webhook_bodies_are_one_message_or_an_array() {
    let single = fixture("webhook-signature/single.json");
    let single: serde_json::Value = serde_json::from_str(&single).unwrap();
    let raw = single["raw_body"].as_str().unwrap();
    assert_eq!(
        parse_webhook(raw.as_bytes(), now()).unwrap().messages.len(),
        1
    );

    let batch: serde_json::Value =
        serde_json::from_str(&fixture("webhook-signature/batch.json")).unwrap();
    let raw = batch["raw_body"].as_str().unwrap();
    assert_eq!(
        parse_webhook(raw.as_bytes(), now()).unwrap().messages.len(),
        2
    );
    assert_eq!(
        first_array_element(raw.as_bytes()),
        Some((single["raw_body"].as_str().unwrap(), 2))
    );
    assert_eq!(first_array_element(b"{}"), None);
    assert_eq!(first_array_element(b"[]"), None);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let _ = parse_batch(&bytes, now());
        let _ = parse_single(&bytes, MessageType::Track, now());
        let _ = parse_webhook(&bytes, now());
        let _ = first_array_element(&bytes);
        let _ = crate::intercom::parse_notification(&bytes, now());
    }

    /// Intercom notifications of any shape are taken or refused with a reason, never a panic;
    /// what is taken always has an identity and the notification's id.
    #[test]
    fn arbitrary_intercom_notifications_are_taken_or_refused(
        topic in prop_oneof![Just(json!("contact.lead.created")), Just(json!("conversation.user.created")), Just(json!("ping")), arb_json()],
        id in prop_oneof![Just(json!("notif_1")), arb_json()],
        created_at in prop_oneof![Just(json!(1_700_000_000)), arb_json()],
        item in prop_oneof![
            Just(json!({"type": "contact", "id": "c1", "role": "lead", "email": "a@example.com"})),
            Just(json!({"type": "conversation", "id": "9", "contacts": {"contacts": [{"id": "c1"}]}})),
            arb_json(),
        ],
        wrap in any::<bool>(),
    ) {
        let body = json!({"type": "notification_event", "topic": topic, "id": id, "created_at": created_at,
            "data": if wrap { json!({"item": item}) } else { item }});
        match crate::intercom::parse_notification(body.to_string().as_bytes(), now()) {
            Ok(Some(message)) => {
                prop_assert!(!message.identity().is_empty());
                prop_assert!(!message.message_id.is_empty());
            }
            Ok(None) => {}
            Err(error) => prop_assert!(!error.to_string().is_empty()),
        }
    }

    #[test]
    fn arbitrary_json_messages_are_accepted_or_refused_with_a_reason(message in arb_message()) {
        let body = json!({"batch": [message]}).to_string();
        let envelope = parse_batch(body.as_bytes(), now()).unwrap();
        prop_assert_eq!(envelope.messages.len() + envelope.rejected.len(), 1);
        for rejected in &envelope.rejected {
            prop_assert!(!rejected.error.field.is_empty());
            prop_assert!(!rejected.error.rule.is_empty());
        }
        for message in &envelope.messages {
            prop_assert!(!message.identity().is_empty());
            prop_assert_eq!(message.body["messageId"].as_str(), Some(message.message_id.as_str()));
        }
    }
}

fn arb_json() -> impl Strategy<Value = serde_json::Value> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        any::<f64>().prop_map(serde_json::Value::from),
        "[a-zA-Z0-9 :.+-]{0,30}".prop_map(serde_json::Value::from),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::from),
            proptest::collection::btree_map("[a-z]{1,6}", inner, 0..4)
                .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Messages built from Segment's field names with arbitrary values, so that validation is
/// exercised on every branch rather than on random keys it never reads.
fn arb_message() -> impl Strategy<Value = serde_json::Value> {
    let field = prop_oneof![
        Just("type"),
        Just("userId"),
        Just("anonymousId"),
        Just("event"),
        Just("groupId"),
        Just("previousId"),
        Just("messageId"),
        Just("timestamp"),
        Just("sentAt"),
        Just("originalTimestamp"),
        Just("traits"),
        Just("properties"),
        Just("context"),
        Just("integrations"),
        Just("writeKey"),
    ];
    let value = prop_oneof![
        arb_json(),
        prop_oneof![
            Just("identify"),
            Just("track"),
            Just("group"),
            Just("alias"),
            Just("page")
        ]
        .prop_map(serde_json::Value::from),
        Just(serde_json::Value::from("2026-11-29T06:29:22.077+00:00")),
    ];
    prop_oneof![
        proptest::collection::btree_map(field, value, 0..10).prop_map(|m| {
            serde_json::Value::Object(m.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())
        }),
        arb_json(),
    ]
}

#[test]
fn nesting_too_deep_is_named_as_such() {
    let deep = format!(
        r#"{{"type":"track","userId":"u","event":"e","properties":{}1{}}}"#,
        "[".repeat(200),
        "]".repeat(200)
    );
    let body = format!(r#"{{"batch":[{deep},{{"type":"identify","userId":"ok"}}]}}"#);
    match parse_batch(body.as_bytes(), now()) {
        Ok(envelope) => {
            assert_eq!(envelope.messages.len(), 1);
            assert!(
                envelope.rejected[0]
                    .error
                    .rule
                    .contains("nested more than 128 levels"),
                "{:?}",
                envelope.rejected
            );
        }
        Err(error) => assert!(
            error.to_string().contains("nested more than 128"),
            "{error}"
        ),
    }
    let error = parse_single(deep.as_bytes(), MessageType::Track, now()).unwrap_err();
    assert_eq!(error.code(), "invalid_request");
    assert!(
        error.to_string().contains("nested more than 128 levels"),
        "{error}"
    );
}
