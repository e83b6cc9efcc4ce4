//! The console: pages for people, served by Junction itself under `/console`.
//!
//! Server-rendered HTML (minijinja templates embedded in the binary, HTML-escaped), one CSS
//! file, no script: every page works without JavaScript. Sign-in exchanges the admin token for
//! a session cookie ([`session`]); every form that changes something carries the session's
//! CSRF token; responses forbid framing, sniffing, caching and anything not served from here
//! (Content-Security-Policy). Pages read the same JSON views as the admin API
//! (`junction_delivery::inspect`), and never show a secret: the admin token is only ever read
//! from the sign-in form, and recorded calls never hold credentials.
//!
//! - `session.rs`: sessions, cookies, CSRF tokens;
//! - `pages.rs`: one handler per page;
//! - `people.rs`: one person's timeline, found by any of their ids;
//! - `workflows.rs`: each workflow's source, diagram and "try it";
//! - `../../console/`: the templates and the stylesheet.

pub mod activity;
pub mod jobs;
mod pages;
mod people;
pub mod redact;
pub mod session;
mod workflows;

use crate::AppState;
use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use bytes::Bytes;
use minijinja::Environment;
use serde_json::Value;
use std::sync::OnceLock;
use subtle::ConstantTimeEq;

/// Only this origin's styles, scripts (htmx, embedded), event streams and forms; no inline
/// script or style, no frames, objects or plugins.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; style-src 'self'; img-src 'self'; \
     script-src 'self'; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; \
     base-uri 'none'";

macro_rules! templates {
    ($($name:literal),* $(,)?) => {
        &[$(($name, include_str!(concat!("../../console/", $name)))),*]
    };
}

const TEMPLATES: &[(&str, &str)] = templates![
    "base.html",
    "login.html",
    "overview.html",
    "overview_figures.html",
    "event_row.html",
    "event_rows.html",
    "events.html",
    "event.html",
    "run_rows.html",
    "runs.html",
    "run.html",
    "dlq.html",
    "people.html",
    "replay_progress.html",
    "workflows.html",
    "workflow.html",
    "error.html",
];

const STYLESHEET: &str = include_str!("../../console/console.css");
const FAVICON: &str = include_str!("../../console/favicon.svg");
/// htmx and its server-sent-events extension (BSD Zero Clause), for the live parts.
const HTMX: &str = include_str!("../../console/vendor/htmx-2.0.11.min.js");
const HTMX_SSE: &str = include_str!("../../console/vendor/htmx-ext-sse-2.2.4.js");

fn environment() -> &'static Environment<'static> {
    static ENVIRONMENT: OnceLock<Environment<'static>> = OnceLock::new();
    ENVIRONMENT.get_or_init(|| {
        let mut env = Environment::new();
        for (name, source) in TEMPLATES {
            env.add_template(name, source)
                .unwrap_or_else(|e| panic!("console template {name}: {e}"));
        }
        env
    })
}

/// The console's routes, under `/console`.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/console", get(pages::overview))
        .route("/console/overview/figures", get(pages::overview_figures))
        .route("/console/login", get(login_page).post(login))
        .route("/console/logout", post(logout))
        .route("/console/events", get(pages::events))
        .route("/console/events/live", get(pages::events_live))
        .route("/console/events/{seq}", get(pages::event))
        .route("/console/runs", get(pages::runs))
        .route("/console/runs/{*id}", get(pages::run))
        .route(
            "/console/dlq",
            get(pages::dead_letters).post(pages::dead_letter_action),
        )
        .route("/console/dlq/jobs/{id}", get(pages::replay_progress))
        .route("/console/people", get(people::page))
        .route("/console/workflows", get(workflows::list))
        .route("/console/workflows/{name}", get(workflows::show))
        .route("/console/workflows/{name}/try", post(workflows::try_it))
        .route("/console/assets/console.css", get(stylesheet))
        .route("/console/assets/favicon.svg", get(favicon))
        .route("/console/assets/htmx.min.js", get(|| script(HTMX)))
        .route("/console/assets/htmx-ext-sse.js", get(|| script(HTMX_SSE)))
        .layer(axum::middleware::map_response(protect))
}

/// Headers every console response carries.
async fn protect(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers
        .entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    response
}

/// A template rendered to HTML text.
fn render_text(name: &str, context: &Value) -> Result<String, minijinja::Error> {
    environment()
        .get_template(name)
        .and_then(|template| template.render(minijinja::value::Serde(context)))
}

/// A rendered page.
fn render(name: &str, context: Value) -> Response {
    match render_text(name, &context) {
        Ok(html) => Html(html).into_response(),
        Err(error) => {
            tracing::error!(template = name, %error, "console page failed to render");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                Html(
                    "<!doctype html><title>Error</title><p>This page failed to render.".to_owned(),
                ),
            )
                .into_response()
        }
    }
}

/// An error page (still inside the console's frame when signed in).
fn error_page(status: StatusCode, title: &str, message: &str, signed_in: Option<&str>) -> Response {
    let mut response = render(
        "error.html",
        serde_json::json!({
            "title": title,
            "message": message,
            "signed_in": signed_in.is_some(),
            "csrf": signed_in.unwrap_or_default(),
        }),
    );
    *response.status_mut() = status;
    response
}

/// A page's signed-in session (else see [`to_sign_in`]).
pub(crate) fn signed_in(state: &AppState, headers: &HeaderMap) -> Option<session::Session> {
    state
        .inner
        .console_sessions
        .of(headers)
        .map(|(_, session)| session)
}

/// Where a request without a session goes.
pub(crate) fn to_sign_in() -> Response {
    Redirect::to("/console/login").into_response()
}

async fn login_page(State(state): State<AppState>) -> Response {
    render(
        "login.html",
        serde_json::json!({"configured": state.inner.admin_token.is_some()}),
    )
}

/// The fields of a submitted form (repeated names kept in order).
pub(crate) fn form_fields(body: &Bytes) -> Vec<(String, String)> {
    form_urlencoded::parse(body).into_owned().collect()
}

/// The first value of `name` in a submitted form.
pub(crate) fn field<'a>(fields: &'a [(String, String)], name: &str) -> Option<&'a str> {
    fields
        .iter()
        .find(|(key, _)| key == name)
        .map(|(_, value)| value.as_str())
}

async fn login(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    let Some(expected) = state.inner.admin_token.as_deref() else {
        return login_page(State(state)).await;
    };
    let fields = form_fields(&body);
    let presented = field(&fields, "token").unwrap_or_default();
    if !bool::from(presented.as_bytes().ct_eq(expected.as_bytes())) {
        tracing::warn!("console sign-in refused: wrong admin token");
        let mut page = render(
            "login.html",
            serde_json::json!({"configured": true, "error": "That is not the admin token."}),
        );
        *page.status_mut() = StatusCode::UNAUTHORIZED;
        return page;
    }
    let id = state.inner.console_sessions.start();
    let secure = headers
        .get("x-forwarded-proto")
        .is_some_and(|proto| proto.as_bytes().eq_ignore_ascii_case(b"https"));
    let mut response = Redirect::to("/console").into_response();
    response.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_str(&session::set_cookie(&id, secure)).expect("a cookie is ASCII"),
    );
    response
}

async fn logout(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    let Some((id, session)) = state.inner.console_sessions.of(&headers) else {
        return Redirect::to("/console/login").into_response();
    };
    if !session.accepts(field(&form_fields(&body), "csrf")) {
        return csrf_refused(&session);
    }
    state.inner.console_sessions.end(&id);
    let mut response = Redirect::to("/console/login").into_response();
    response.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_str(&session::clear_cookie()).expect("a cookie is ASCII"),
    );
    response
}

/// A state-changing request without this session's CSRF token.
pub(crate) fn csrf_refused(session: &session::Session) -> Response {
    error_page(
        StatusCode::FORBIDDEN,
        "Refused",
        "This form did not carry the session's CSRF token. Reload the page and try again.",
        Some(&session.csrf),
    )
}

async fn script(source: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=86400"),
        ],
        source,
    )
        .into_response()
}

async fn favicon() -> Response {
    (
        [
            (header::CONTENT_TYPE, "image/svg+xml"),
            (header::CACHE_CONTROL, "public, max-age=86400"),
        ],
        FAVICON,
    )
        .into_response()
}

async fn stylesheet() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        STYLESHEET,
    )
        .into_response()
}
