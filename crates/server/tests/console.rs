//! The console over HTTP, request by request, against a real SQLite store: sign-in and its
//! cookie, pages with real data (escaped), CSRF on every change, sign-out, and the headers
//! that keep the pages to themselves. (A real browser drives it in crates/junction/tests.)

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Request, StatusCode, header};
use junction_server::{AppState, ServerSettings};
use junction_store::{ActionOutcome, EngineCommit, NewAction, Store, StoreOptions};
use serde_json::json;
use std::sync::Arc;
use tower::ServiceExt;

const ADMIN_TOKEN: &str = "admin-token-never-shown";

struct Console {
    router: Router,
    store: Arc<dyn Store>,
    _dir: tempfile::TempDir,
}

struct Page {
    status: StatusCode,
    headers: HeaderMap,
    html: String,
}

impl Console {
    async fn start() -> Console {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("j.db").display());
        let store = junction_store::open(&url, StoreOptions::default())
            .await
            .unwrap();
        let settings = ServerSettings {
            admin_token: Some(ADMIN_TOKEN.into()),
            ..ServerSettings::default()
        };
        Console {
            router: junction_server::router(AppState::new(store.clone(), settings)),
            store,
            _dir: dir,
        }
    }

    async fn send(&self, request: Request<Body>) -> Page {
        let response = self.router.clone().oneshot(request).await.unwrap();
        let (status, headers) = (response.status(), response.headers().clone());
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        Page {
            status,
            headers,
            html: String::from_utf8(bytes.to_vec()).unwrap(),
        }
    }

    async fn get(&self, path: &str, cookie: Option<&str>) -> Page {
        let mut request = Request::get(path);
        if let Some(cookie) = cookie {
            request = request.header(header::COOKIE, cookie);
        }
        self.send(request.body(Body::empty()).unwrap()).await
    }

    async fn post_form(&self, path: &str, cookie: Option<&str>, form: &[(&str, &str)]) -> Page {
        let body = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(form)
            .finish();
        let mut request =
            Request::post(path).header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
        if let Some(cookie) = cookie {
            request = request.header(header::COOKIE, cookie);
        }
        self.send(request.body(Body::from(body)).unwrap()).await
    }

    /// Signs in; the cookie to send back.
    async fn sign_in(&self) -> String {
        let page = self
            .post_form("/console/login", None, &[("token", ADMIN_TOKEN)])
            .await;
        assert_eq!(page.status, StatusCode::SEE_OTHER, "{}", page.html);
        let set_cookie = page.headers[header::SET_COOKIE]
            .to_str()
            .unwrap()
            .to_owned();
        for attribute in ["HttpOnly", "SameSite=Strict", "Path=/console", "Max-Age="] {
            assert!(set_cookie.contains(attribute), "{set_cookie}");
        }
        set_cookie.split(';').next().unwrap().to_owned()
    }
}

fn letters() -> junction_store::DeadLetterQuery {
    junction_store::DeadLetterQuery {
        limit: 10,
        ..Default::default()
    }
}

/// The CSRF token a page's forms carry.
fn csrf_of(html: &str) -> String {
    let at = html
        .find("name=\"csrf\" value=\"")
        .expect("a form with a CSRF token")
        + 19;
    html[at..].split('"').next().unwrap().to_owned()
}

#[tokio::test]
async fn signing_in_exchanges_the_token_for_a_session_and_signing_out_ends_it() {
    let c = Console::start().await;
    let page = c.get("/console", None).await;
    assert_eq!(page.status, StatusCode::SEE_OTHER);
    assert_eq!(page.headers[header::LOCATION], "/console/login");

    let login = c.get("/console/login", None).await;
    assert_eq!(login.status, StatusCode::OK);
    assert!(
        login
            .html
            .contains("<label for=\"token\">Admin token</label>")
    );
    let csp = login.headers[header::CONTENT_SECURITY_POLICY]
        .to_str()
        .unwrap();
    assert!(csp.contains("default-src 'none'") && csp.contains("frame-ancestors 'none'"));
    assert_eq!(login.headers[header::X_FRAME_OPTIONS], "DENY");

    let wrong = c
        .post_form("/console/login", None, &[("token", "guess<b>")])
        .await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    assert!(wrong.headers.get(header::SET_COOKIE).is_none());
    assert!(
        !wrong.html.contains("guess"),
        "what was typed is not echoed"
    );

    let cookie = c.sign_in().await;
    let overview = c.get("/console", Some(&cookie)).await;
    assert_eq!(overview.status, StatusCode::OK, "{}", overview.html);
    assert!(overview.html.contains("<h1>Overview</h1>"));
    assert!(
        !overview.html.contains(ADMIN_TOKEN),
        "the token is never rendered"
    );

    // Signing out needs the session's CSRF token, and ends the session for good.
    let refused = c.post_form("/console/logout", Some(&cookie), &[]).await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    let csrf = csrf_of(&overview.html);
    let out = c
        .post_form("/console/logout", Some(&cookie), &[("csrf", &csrf)])
        .await;
    assert_eq!(out.status, StatusCode::SEE_OTHER);
    assert!(
        out.headers[header::SET_COOKIE]
            .to_str()
            .unwrap()
            .contains("Max-Age=0")
    );
    let after = c.get("/console", Some(&cookie)).await;
    assert_eq!(after.headers[header::LOCATION], "/console/login");
    let forged = c.get("/console", Some("junction_console=forged")).await;
    assert_eq!(forged.status, StatusCode::SEE_OTHER);
}

#[tokio::test]
async fn pages_show_the_log_escaped_and_its_detail() {
    let c = Console::start().await;
    let batch = json!({"batch": [
        {"type": "identify", "userId": "u1", "messageId": "m-1", "traits": {"name": "<script>alert(1)</script>"}},
        {"type": "track", "userId": "u1", "event": "Order <b>Completed</b>", "messageId": "m-2"},
    ]});
    let response = c
        .router
        .clone()
        .oneshot(
            Request::post("/v1/batch")
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(batch.to_string()))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let cookie = c.sign_in().await;

    let events = c.get("/console/events", Some(&cookie)).await;
    assert_eq!(events.status, StatusCode::OK, "{}", events.html);
    assert!(events.html.contains("m-1") && events.html.contains("m-2"));
    assert!(
        events
            .html
            .contains("Order &lt;b&gt;Completed&lt;&#x2f;b&gt;")
    );
    assert!(!events.html.contains("<b>Completed"));

    let filtered = c
        .get("/console/events?type=track&userId=u1", Some(&cookie))
        .await;
    assert!(filtered.html.contains("m-2") && !filtered.html.contains("m-1"));

    let seq = c.store.events(Default::default()).await.unwrap().items[1].seq;
    let detail = c
        .get(&format!("/console/events/{seq}"), Some(&cookie))
        .await;
    assert_eq!(detail.status, StatusCode::OK);
    assert!(
        detail
            .html
            .contains("&lt;script&gt;alert(1)&lt;&#x2f;script&gt;")
            || detail
                .html
                .contains("&lt;script&gt;alert(1)&lt;/script&gt;"),
        "{}",
        detail.html
    );
    assert!(!detail.html.contains("<script>"));

    let missing = c.get("/console/events/999999", Some(&cookie)).await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);

    // The overview's figures, as htmx refreshes them: this node's two events in this minute.
    let figures = c.get("/console/overview/figures", Some(&cookie)).await;
    assert_eq!(figures.status, StatusCode::OK);
    assert!(
        figures.html.contains("Events in per minute: now 2"),
        "{}",
        figures.html
    );
    assert_eq!(
        c.get("/console/overview/figures", None).await.status,
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn dead_letters_are_discarded_only_with_the_sessions_csrf_token() {
    let c = Console::start().await;
    c.store
        .engine_commit(EngineCommit {
            actions: vec![NewAction {
                id: "m-9/notify/0".into(),
                identity: "u9".into(),
                run: "m-9/notify".into(),
                seq: 1,
                lane: 1,
                standby_for: None,
                capped: None,
                body: json!({"id": "m-9/notify/0", "workflow": "notify", "step": "0", "action": {"kind": "note"}}).to_string(),
            }],
            ..EngineCommit::default()
        })
        .await
        .unwrap();
    let now = chrono::Utc::now().timestamp_millis();
    let claim = c
        .store
        .claim_users("n", now, 60_000, 10)
        .await
        .unwrap()
        .remove(0);
    c.store
        .action_outcomes(
            &claim,
            vec![ActionOutcome::Failed {
                id: "m-9/notify/0".into(),
                error: "admin 42 not found".into(),
                code: "not_found".into(),
                attempt: junction_store::Attempt {
                    number: 1,
                    at_ms: now,
                    duration_ms: 3,
                    outcome: "failed".into(),
                    error: Some("admin 42 not found".into()),
                    calls: json!([]),
                },
                skip_rest_of_run: false,
            }],
        )
        .await
        .unwrap();
    c.store.release_claim(&claim).await.unwrap();

    let cookie = c.sign_in().await;
    let list = c.get("/console/dlq", Some(&cookie)).await;
    assert!(
        list.html.contains("m-9&#x2f;notify&#x2f;0") && list.html.contains("not_found"),
        "{}",
        list.html
    );
    let csrf = csrf_of(&list.html);

    let forged = c
        .post_form(
            "/console/dlq",
            Some(&cookie),
            &[("do", "discard"), ("id", "m-9/notify/0")],
        )
        .await;
    assert_eq!(forged.status, StatusCode::FORBIDDEN);
    let wrong = c
        .post_form(
            "/console/dlq",
            Some(&cookie),
            &[("csrf", "x"), ("do", "discard"), ("id", "m-9/notify/0")],
        )
        .await;
    assert_eq!(wrong.status, StatusCode::FORBIDDEN);
    let anonymous = c
        .post_form(
            "/console/dlq",
            None,
            &[("csrf", &csrf), ("do", "discard"), ("id", "m-9/notify/0")],
        )
        .await;
    assert_eq!(anonymous.headers[header::LOCATION], "/console/login");
    assert_eq!(c.store.dead_letters(letters()).await.unwrap().len(), 1);

    let done = c
        .post_form(
            "/console/dlq",
            Some(&cookie),
            &[("csrf", &csrf), ("do", "discard"), ("id", "m-9/notify/0")],
        )
        .await;
    assert_eq!(done.status, StatusCode::SEE_OTHER);
    let back = done.headers[header::LOCATION].to_str().unwrap().to_owned();
    let after = c.get(&back, Some(&cookie)).await;
    assert!(
        after.html.contains("Discarded 1 dead letter(s)."),
        "{}",
        after.html
    );
    assert!(after.html.contains("The dead-letter queue is empty."));
}
