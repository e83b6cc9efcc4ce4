//! The front door's behaviour over HTTP, request by request, against a real SQLite store.
//! (The real Segment SDKs, crash safety and the binary are tested in crates/junction/tests.)

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use base64::Engine;
use junction_server::{AppState, ServerSettings, WriteKey, signature};
use junction_store::{EventQuery, RejectedQuery, Store, StoreOptions};
use proptest::prelude::*;
use serde_json::{Value, json};
use std::io::Write;
use std::sync::Arc;
use tower::ServiceExt;

struct Harness {
    router: Router,
    store: Arc<dyn Store>,
    _dir: tempfile::TempDir,
}

async fn harness(settings: ServerSettings) -> Harness {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("j.db").display());
    let store = junction_store::open(&url, StoreOptions::default())
        .await
        .unwrap();
    let router = junction_server::router(AppState::new(store.clone(), settings));
    Harness {
        router,
        store,
        _dir: dir,
    }
}

fn keyed() -> ServerSettings {
    ServerSettings {
        write_keys: vec![WriteKey {
            key: "wk_live".into(),
            source: "web".into(),
        }],
        shared_secret: Some("shhh-shared-secret".into()),
        admin_token: Some("admin-t".into()),
        ..ServerSettings::default()
    }
}

fn basic(credentials: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(credentials)
    )
}

fn post(path: &str, body: impl Into<Body>) -> axum::http::request::Builder {
    let _ = body;
    Request::post(path).header(header::CONTENT_TYPE, "application/json")
}

impl Harness {
    async fn send(&self, request: Request<Body>) -> (StatusCode, Value) {
        let response = self.router.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        let body = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()));
        (status, body)
    }

    async fn post_json(&self, path: &str, auth: Option<&str>, body: &Value) -> (StatusCode, Value) {
        let mut request = post(path, ()).header(header::CONTENT_TYPE, "application/json");
        if let Some(auth) = auth {
            request = request.header(header::AUTHORIZATION, auth);
        }
        self.send(request.body(Body::from(body.to_string())).unwrap())
            .await
    }

    async fn message_ids(&self) -> Vec<String> {
        let page = self
            .store
            .events(EventQuery {
                limit: Some(1000),
                ..Default::default()
            })
            .await
            .unwrap();
        let mut ids: Vec<_> = page.items.into_iter().map(|e| e.message_id).rev().collect();
        ids.dedup();
        ids
    }
}

fn track(message_id: &str) -> Value {
    json!({"type": "track", "userId": "u1", "event": "Clicked", "messageId": message_id})
}

#[tokio::test]
async fn every_tracking_path_stores_its_type() {
    let h = harness(ServerSettings::default()).await;
    let paths = [
        ("identify", "identify"),
        ("track", "track"),
        ("page", "page"),
        ("screen", "screen"),
        ("group", "group"),
        ("alias", "alias"),
        ("i", "identify"),
        ("t", "track"),
        ("p", "page"),
        ("s", "screen"),
        ("g", "group"),
        ("a", "alias"),
    ];
    for (index, (path, kind)) in paths.iter().enumerate() {
        let body = json!({"userId": "u1", "event": "E", "groupId": "g1", "previousId": "a0",
                          "messageId": format!("m{index}")});
        let (status, reply) = h.post_json(&format!("/v1/{path}"), None, &body).await;
        assert_eq!(
            (status, &reply),
            (StatusCode::OK, &json!({"success": true})),
            "/v1/{path}"
        );
        let page = h
            .store
            .events(EventQuery {
                message_id: Some(format!("m{index}")),
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(page.items[0].kind, *kind);
    }
    for path in ["/v1/batch", "/v1/import", "/v1/b"] {
        let (status, reply) = h
            .post_json(path, None, &json!({"batch": [track(&format!("b-{path}"))]}))
            .await;
        assert_eq!(status, StatusCode::OK, "{path}");
        assert_eq!(reply["accepted"], 1, "{path}");
    }
    let (status, reply) = h.post_json("/v1/unknown", None, &json!({})).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(reply["code"], "not_found");
}

#[tokio::test]
async fn write_keys_come_from_basic_auth_or_the_body() {
    let h = harness(keyed()).await;
    let batch = |id: &str| json!({"batch": [track(id)]});
    for (n, auth) in [basic("wk_live:"), basic("wk_live")].iter().enumerate() {
        let (status, _) = h
            .post_json("/v1/batch", Some(auth), &batch(&format!("basic-{n}")))
            .await;
        assert_eq!(status, StatusCode::OK, "{auth}");
    }
    let mut body = batch("body-key");
    body["writeKey"] = "wk_live".into();
    assert_eq!(
        h.post_json("/v1/batch", None, &body).await.0,
        StatusCode::OK
    );
    let mut single = track("single-body-key");
    single["writeKey"] = "wk_live".into();
    assert_eq!(
        h.post_json("/v1/track", None, &single).await.0,
        StatusCode::OK
    );

    for auth in [Some(basic("wrong:").as_str()), None, Some("Basic %%%")] {
        let (status, reply) = h.post_json("/v1/batch", auth, &batch("refused")).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{auth:?}");
        assert_eq!(reply["code"], "unauthorized");
    }
    let mut wrong = batch("refused");
    wrong["writeKey"] = "nope".into();
    assert_eq!(
        h.post_json("/v1/batch", None, &wrong).await.0,
        StatusCode::UNAUTHORIZED
    );

    assert_eq!(
        h.message_ids().await,
        ["basic-0", "basic-1", "body-key", "single-body-key"]
    );
    let stored = h.store.events(EventQuery::default()).await.unwrap();
    assert!(stored.items.iter().all(|e| e.source == "web"));
    // The key is a secret: it is not kept in the stored message.
    assert!(
        stored
            .items
            .iter()
            .all(|e| !e.body.to_string().contains("wk_live"))
    );
}

#[tokio::test]
async fn gzip_and_text_plain_bodies_are_accepted() {
    let h = harness(ServerSettings::default()).await;
    let body = json!({"batch": [track("gz-1"), track("gz-2")]}).to_string();
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(body.as_bytes()).unwrap();
    let gzipped = encoder.finish().unwrap();
    let request = Request::post("/v1/batch")
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::CONTENT_ENCODING, "gzip")
        .body(Body::from(gzipped))
        .unwrap();
    let (status, reply) = h.send(request).await;
    assert_eq!(
        (status, reply["accepted"].clone()),
        (StatusCode::OK, json!(2))
    );

    let request = Request::post("/v1/t")
        .header(header::CONTENT_TYPE, "text/plain")
        .body(Body::from(track("plain").to_string()))
        .unwrap();
    assert_eq!(h.send(request).await.0, StatusCode::OK);

    let request = Request::post("/v1/batch")
        .header(header::CONTENT_ENCODING, "gzip")
        .body(Body::from("not gzip"))
        .unwrap();
    let (status, reply) = h.send(request).await;
    assert_eq!(
        (status, reply["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("malformed_body"))
    );

    let request = Request::post("/v1/batch")
        .header(header::CONTENT_ENCODING, "br")
        .body(Body::from("x"))
        .unwrap();
    let (status, reply) = h.send(request).await;
    assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert_eq!(reply["field"], "Content-Encoding");
    assert_eq!(h.message_ids().await, ["gz-1", "gz-2", "plain"]);
}

#[tokio::test]
async fn oversize_bodies_are_refused_naming_the_limit() {
    let h = harness(ServerSettings::default()).await;
    let mut big = track("big");
    big["properties"] = json!({"blob": "x".repeat(33 * 1024)});
    let (status, reply) = h.post_json("/v1/track", None, &big).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(
        (reply["code"].as_str(), reply["limit"].as_u64()),
        (Some("payload_too_large"), Some(32_768))
    );

    let many: Vec<_> = (0..2501)
        .map(|i| json!({"type": "page", "userId": "u", "messageId": i.to_string()}))
        .collect();
    let (status, reply) = h
        .post_json("/v1/batch", None, &json!({"batch": many}))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(
        (reply["code"].as_str(), reply["limit"].as_u64()),
        (Some("batch_too_large"), Some(2500))
    );

    let filler: Vec<_> = (0..20)
        .map(|i| {
            let mut m = big.clone();
            m["messageId"] = i.into();
            m["properties"]["blob"] = "y".repeat(30_000).into();
            m
        })
        .collect();
    let (status, reply) = h
        .post_json("/v1/batch", None, &json!({"batch": filler}))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(
        (reply["code"].as_str(), reply["limit"].as_u64()),
        (Some("payload_too_large"), Some(512_000))
    );
    assert!(reply["message"].as_str().unwrap().contains("512000 bytes"));

    // A 40 KB message inside a batch is rejected alone; its neighbour is stored.
    let (status, reply) = h
        .post_json("/v1/batch", None, &json!({"batch": [big, track("small")]}))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        (reply["accepted"].as_u64(), reply["rejected"].as_u64()),
        (Some(1), Some(1))
    );
    assert_eq!(reply["errors"][0]["code"], "message_too_large");
    assert_eq!(h.message_ids().await, ["small"]);
}

#[tokio::test]
async fn malformed_json_is_a_400_naming_the_position() {
    let h = harness(keyed()).await;
    for path in ["/v1/batch", "/v1/track", "/hooks/segment"] {
        let request = Request::post(path)
            .header(header::AUTHORIZATION, basic("wk_live:"))
            .body(Body::from("{\"batch\": [}"))
            .unwrap();
        let (status, reply) = h.send(request).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{path}");
        assert_eq!(reply["code"], "malformed_json", "{path}");
        assert!(
            reply["message"]
                .as_str()
                .unwrap()
                .contains("line 1, column 12"),
            "{path}: {reply}"
        );
    }
}

#[tokio::test]
async fn invalid_messages_are_refused_and_kept_in_the_rejected_log() {
    let h = harness(ServerSettings::default()).await;
    let (status, reply) = h
        .post_json(
            "/v1/batch",
            None,
            &json!({"batch": [
                track("ok-1"),
                {"type": "track", "userId": "u1", "messageId": "no-event"},
                {"type": "group", "userId": "u1", "messageId": "no-group"},
                {"type": "identify", "messageId": "nobody"},
                {"type": "teleport", "userId": "u1", "messageId": "bad-type"},
                track("ok-2"),
            ]}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        (reply["accepted"].as_u64(), reply["rejected"].as_u64()),
        (Some(2), Some(4))
    );
    let fields: Vec<_> = reply["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["index"].as_u64().unwrap(),
                e["field"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        fields,
        [
            (1, "event".into()),
            (2, "groupId".into()),
            (3, "userId".into()),
            (4, "type".into())
        ]
    );

    let (status, reply) = h
        .post_json(
            "/v1/track",
            None,
            &json!({"userId": "u1", "messageId": "single-bad"}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(
        (reply["field"].as_str(), reply["code"].as_str()),
        (Some("event"), Some("invalid_message"))
    );

    let rejected = h.store.rejected(RejectedQuery::default()).await.unwrap();
    let ids: Vec<_> = rejected
        .items
        .iter()
        .map(|r| r.message_id.clone().unwrap())
        .collect();
    assert_eq!(
        ids,
        ["single-bad", "bad-type", "nobody", "no-group", "no-event"]
    );
    assert_eq!(h.message_ids().await, ["ok-1", "ok-2"]);
}

#[tokio::test]
async fn duplicate_message_ids_are_acknowledged_and_stored_once() {
    let h = harness(ServerSettings::default()).await;
    let (_, reply) = h
        .post_json(
            "/v1/batch",
            None,
            &json!({"batch": [track("d1"), track("d1"), track("d2")]}),
        )
        .await;
    assert_eq!(
        (reply["accepted"].as_u64(), reply["duplicates"].as_u64()),
        (Some(2), Some(1))
    );
    let (status, reply) = h.post_json("/v1/track", None, &track("d1")).await;
    assert_eq!((status, reply), (StatusCode::OK, json!({"success": true})));
    assert_eq!(h.message_ids().await, ["d1", "d2"]);
}

fn vector(name: &str) -> Value {
    let path = format!(
        "{}/../../tests/fixtures/webhook-signature/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[tokio::test]
async fn segment_webhooks_are_verified_before_anything_is_stored() {
    let h = harness(keyed()).await;
    let hook = |raw: &str, signature: Option<&str>| {
        let mut request =
            Request::post("/hooks/segment").header(header::CONTENT_TYPE, "application/json");
        if let Some(signature) = signature {
            request = request.header("X-Signature", signature);
        }
        request.body(Body::from(raw.to_owned())).unwrap()
    };
    let single = vector("single.json");
    let (raw, signature) = (
        single["raw_body"].as_str().unwrap(),
        single["expected_x_signature"].as_str().unwrap(),
    );
    let (status, reply) = h.send(hook(raw, Some(signature))).await;
    assert_eq!((status, reply), (StatusCode::OK, json!({"success": true})));

    // Segment signs only a batch's first element: a longer batch signed that way would let the
    // other elements ride in unauthenticated, so it is refused …
    let batch = vector("batch.json");
    let raw_batch = batch["raw_body"].as_str().unwrap();
    let batch_signature = batch["expected_x_signature"].as_str().unwrap();
    let (status, reply) = h.send(hook(raw_batch, Some(batch_signature))).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(
        reply["message"]
            .as_str()
            .unwrap()
            .contains("only the first of the batch's 2 events"),
        "{reply}"
    );
    // … and an element swapped in behind a validly signed first one changes nothing.
    let smuggled = raw_batch.replace("\"m-2\"", "\"m-smuggled\"");
    let (status, _) = h.send(hook(&smuggled, Some(batch_signature))).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    // A batch of one is wholly covered; a signature of the whole array covers it all.
    let (status, _) = h.send(hook(&format!("[{raw}]"), Some(signature))).await;
    assert_eq!(status, StatusCode::OK);
    let whole = signature::sign(b"shhh-shared-secret", raw_batch.as_bytes());
    let (status, reply) = h.send(hook(raw_batch, Some(&whole))).await;
    assert_eq!(status, StatusCode::OK);
    // m-1 was already stored by the single delivery: a duplicate, acknowledged.
    assert_eq!(
        (reply["accepted"].as_u64(), reply["duplicates"].as_u64()),
        (Some(1), Some(1))
    );
    // A write key in Authorization covers any batch, with or without a signature.
    let with_key = Request::post("/hooks/segment")
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::AUTHORIZATION, basic("wk_live:"))
        .body(Body::from(json!([track("k-1"), track("k-2")]).to_string()))
        .unwrap();
    let (status, reply) = h.send(with_key).await;
    assert_eq!(
        (status, reply["accepted"].as_u64()),
        (StatusCode::OK, Some(2))
    );
    let wrong_key = Request::post("/hooks/segment")
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::AUTHORIZATION, basic("wk_stolen:"))
        .header("X-Signature", signature)
        .body(Body::from(raw.to_owned()))
        .unwrap();
    assert_eq!(h.send(wrong_key).await.0, StatusCode::UNAUTHORIZED);

    let tampered = raw
        .replace("a@example.com", "evil@example.com")
        .replace("m-1", "m-evil");
    let wrong_secret = signature::sign(b"other-secret", raw.as_bytes());
    for (body, signature) in [
        (tampered.as_str(), Some(signature)),
        (raw, Some(wrong_secret.as_str())),
        (raw, None),
        (raw, Some("not-hex")),
    ] {
        let (status, reply) = h.send(hook(body, signature)).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{signature:?}");
        assert_eq!(reply["code"], "unauthorized");
    }
    let mut stored = h.message_ids().await;
    stored.sort();
    assert_eq!(stored, ["k-1", "k-2", "m-1", "m-2"]);
    let stored = h.store.events(EventQuery::default()).await.unwrap();
    assert!(stored.items.iter().all(|e| e.source == "segment-webhook"));
}

#[tokio::test]
async fn webhooks_are_refused_when_nothing_could_authenticate_them() {
    // No shared secret and no write keys: nothing can prove a webhook's origin.
    let h = harness(ServerSettings::default()).await;
    for auth in [None, Some(basic("any-key:"))] {
        let (status, reply) = h
            .post_json("/hooks/segment", auth.as_deref(), &json!([track("w1")]))
            .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{auth:?}");
        assert_eq!(reply["code"], "unauthorized");
    }
    // Write keys but no secret: the key is required.
    let h = harness(ServerSettings {
        shared_secret: None,
        ..keyed()
    })
    .await;
    let (status, _) = h.post_json("/hooks/segment", None, &track("w2")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, reply) = h
        .post_json(
            "/hooks/segment",
            Some(&basic("wk_live:")),
            &json!([track("w3"), {"type": "purge", "userId": "u1"}]),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        (reply["accepted"].as_u64(), reply["rejected"].as_u64()),
        (Some(1), Some(1))
    );
    let (status, reply) = h
        .post_json(
            "/hooks/segment",
            Some(&basic("wk_live:")),
            &json!({"type": "track", "userId": "u"}),
        )
        .await;
    assert_eq!(
        (status, reply["field"].as_str()),
        (StatusCode::BAD_REQUEST, Some("event"))
    );
    assert_eq!(h.message_ids().await, ["w3"]);
}

#[tokio::test]
async fn every_refusal_is_json_with_a_reason() {
    let h = harness(keyed()).await;
    let long = format!("/v1/track?pad={}", "x".repeat(9_000));
    let mut many_headers = Request::get("/healthz");
    for n in 0..70 {
        many_headers = many_headers.header(format!("x-h{n}"), "v");
    }
    let cases = [
        (
            Request::get("/v1/batch").body(Body::empty()).unwrap(),
            405,
            "method_not_allowed",
        ),
        (
            Request::get("/nowhere").body(Body::empty()).unwrap(),
            404,
            "not_found",
        ),
        (
            Request::post(long.as_str()).body(Body::empty()).unwrap(),
            414,
            "uri_too_long",
        ),
        (
            many_headers.body(Body::empty()).unwrap(),
            431,
            "headers_too_large",
        ),
        (
            post("/v1/track", ())
                .header(header::AUTHORIZATION, basic("wk_live:"))
                .body(Body::from(vec![b' '; 600 * 1024]))
                .unwrap(),
            400,
            "payload_too_large",
        ),
    ];
    for (request, status, code) in cases {
        let what = format!(
            "{} {}",
            request.method(),
            &request.uri().to_string()[..20.min(request.uri().to_string().len())]
        );
        let (got, body) = h.send(request).await;
        assert_eq!(got.as_u16(), status, "{what}: {body}");
        assert_eq!(body["code"], code, "{what}: {body}");
        assert!(
            body["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{what}: {body}"
        );
    }
}

#[tokio::test]
async fn the_admin_api_pages_events_and_rejections_behind_its_token() {
    let h = harness(keyed()).await;
    let auth = basic("wk_live:");
    let batch: Vec<_> = (0..5)
        .map(|i| track(&format!("a{i}")))
        .chain([
            json!({"type": "identify", "userId": "u2", "messageId": "who"}),
            json!({"type": "alias"}),
        ])
        .collect();
    h.post_json("/v1/batch", Some(&auth), &json!({"batch": batch}))
        .await;

    let get = |uri: &str, token: Option<&str>| {
        let mut request = Request::get(uri);
        if let Some(token) = token {
            request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        request.body(Body::empty()).unwrap()
    };
    assert_eq!(
        h.send(get("/api/events", None)).await.0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        h.send(get("/api/events", Some("wrong"))).await.0,
        StatusCode::UNAUTHORIZED
    );

    let (status, page) = h.send(get("/api/events?limit=4", Some("admin-t"))).await;
    assert_eq!(status, StatusCode::OK);
    let ids: Vec<_> = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["messageId"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["who", "a4", "a3", "a2"]);
    let cursor = page["nextCursor"].as_str().unwrap();
    let (_, next) = h
        .send(get(
            &format!("/api/events?limit=4&cursor={cursor}"),
            Some("admin-t"),
        ))
        .await;
    assert_eq!(next["items"].as_array().unwrap().len(), 2);
    assert_eq!(next["nextCursor"], Value::Null);

    for (query, expected) in [
        ("type=identify", 1),
        ("userId=u1", 5),
        ("messageId=a3", 1),
        ("anonymousId=x", 0),
    ] {
        let (_, page) = h
            .send(get(&format!("/api/events?{query}"), Some("admin-t")))
            .await;
        assert_eq!(page["items"].as_array().unwrap().len(), expected, "{query}");
    }
    let seq = page["items"][0]["seq"].as_i64().unwrap();
    let (status, event) = h
        .send(get(&format!("/api/events/{seq}"), Some("admin-t")))
        .await;
    assert_eq!(
        (status, event["body"]["userId"].as_str()),
        (StatusCode::OK, Some("u2"))
    );
    assert!(event["body"]["receivedAt"].is_string());
    assert_eq!(
        h.send(get("/api/events/99999", Some("admin-t"))).await.0,
        StatusCode::NOT_FOUND
    );

    for bad in [
        "/api/events?limit=0",
        "/api/events?cursor=zz",
        "/api/events?colour=red",
        "/api/events/abc",
    ] {
        let (status, reply) = h.send(get(bad, Some("admin-t"))).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}");
        assert_eq!(reply["code"], "invalid_query", "{bad}");
    }
    let (status, rejected) = h.send(get("/api/rejected", Some("admin-t"))).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(rejected["items"][0]["field"], "userId");
}

#[tokio::test]
async fn health_readiness_and_metrics_answer() {
    let h = harness(ServerSettings::default()).await;
    h.post_json(
        "/v1/batch",
        None,
        &json!({"batch": [track("m1"), track("m1"), {"type": "track"}]}),
    )
    .await;
    let get = |uri: &str| Request::get(uri).body(Body::empty()).unwrap();
    assert_eq!(
        h.send(get("/healthz")).await,
        (StatusCode::OK, json!({"status": "ok"}))
    );
    assert_eq!(
        h.send(get("/readyz")).await,
        (StatusCode::OK, json!({"status": "ready"}))
    );
    let (status, text) = h.send(get("/metrics")).await;
    assert_eq!(status, StatusCode::OK);
    let text = text.as_str().unwrap();
    for needle in [
        r#"junction_events_total{type="track",outcome="accepted"}"#,
        r#"junction_events_total{type="track",outcome="duplicate"}"#,
        r#"junction_events_total{type="track",outcome="rejected"}"#,
        r#"junction_http_requests_total{route="/v1/batch",status="200"}"#,
        "junction_store_commit_seconds_bucket",
        r#"junction_store_write_seconds_bucket{kind="append""#,
        "junction_ingest_request_messages_bucket",
    ] {
        assert!(text.contains(needle), "missing {needle}");
    }
    h.store.close().await.unwrap();
    assert_eq!(
        h.send(get("/readyz")).await.0,
        StatusCode::SERVICE_UNAVAILABLE
    );
    let (status, reply) = h.post_json("/v1/track", None, &track("late")).await;
    assert_eq!(
        (status, reply["code"].as_str()),
        (StatusCode::SERVICE_UNAVAILABLE, Some("shutting_down"))
    );
}

/// Every refusal, whatever the input, is a 4xx with a JSON body naming a code.
fn assert_json_refusal_or_success(status: StatusCode, body: &Value) -> Result<(), TestCaseError> {
    prop_assert!(
        status.is_success() || status.is_client_error(),
        "status {status}"
    );
    if !status.is_success() {
        prop_assert!(body["code"].is_string(), "body {body}");
        prop_assert_eq!(&body["success"], &json!(false));
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    #[test]
    fn arbitrary_bodies_never_break_the_server(
        bytes in proptest::collection::vec(any::<u8>(), 0..600),
        path in prop_oneof![Just("/v1/batch"), Just("/v1/track"), Just("/v1/i"), Just("/hooks/segment")],
        gzip in any::<bool>(),
    ) {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(async {
            let h = harness(keyed()).await;
            let mut request = Request::post(path).header(header::AUTHORIZATION, basic("wk_live:"));
            if gzip {
                request = request.header(header::CONTENT_ENCODING, "gzip");
            }
            let (status, body) = h.send(request.body(Body::from(bytes)).unwrap()).await;
            assert_json_refusal_or_success(status, &body)
        })?;
    }

    #[test]
    fn arbitrary_json_never_breaks_the_server(value in arb_json(), path in prop_oneof![Just("/v1/batch"), Just("/v1/page"), Just("/hooks/segment")], wrap in any::<bool>()) {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(async {
            let h = harness(keyed()).await;
            let body = if wrap { json!({"batch": [value.clone()], "context": value}) } else { value };
            let (status, reply) = h.post_json(path, Some(&basic("wk_live:")), &body).await;
            assert_json_refusal_or_success(status, &reply)
        })?;
    }
}

fn arb_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        "[a-z]{0,8}".prop_map(Value::from),
        prop_oneof![
            Just("track"),
            Just("identify"),
            Just("userId"),
            Just("2026-11-29T00:00:00Z")
        ]
        .prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 32, 5, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..5).prop_map(Value::from),
            proptest::collection::btree_map(
                prop_oneof![
                    Just("type".to_owned()),
                    Just("userId".to_owned()),
                    Just("event".to_owned()),
                    Just("batch".to_owned()),
                    Just("messageId".to_owned()),
                    "[a-z]{1,5}"
                ],
                inner,
                0..5,
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}
