//! A faithful Intercom emulator: an in-memory workspace served over HTTP with Intercom's paths,
//! response shapes, status codes and error envelope (`error.list`), so that every test, demo
//! and benchmark of Junction runs against something that fails the way Intercom fails.
//!
//! Behaviours that break naive integrations are reproduced and configurable:
//! - rate limits in 10-second windows with `X-RateLimit-Limit/Remaining/Reset` and 429
//!   `rate_limit_exceeded` ([`limits`]);
//! - search lag: a new or changed contact is invisible to `POST /contacts/search` for a while
//!   ([`contacts`]);
//! - 409 `conflict` on creating a contact whose external_id (or, for users, email) exists,
//!   with the archived variant of the message;
//! - merged contacts: 410 with a `Link` to the survivor for `Intercom-Version` 2.16+, 404
//!   before, as Intercom does;
//! - 401 on a wrong token; unknown custom attributes refused with 400;
//! - injected faults: error statuses at a rate, dropped connections, latency, 429 storms
//!   ([`faults`]).
//!
//! Every request is kept in a journal readable at `GET /_emulator/requests` ([`journal`]), and
//! the behaviour can be changed while running through `GET|PUT /_emulator/config`.
//!
//! Scope so far (issue 3 is in progress): contacts (create, get, update, find by external_id,
//! search, list, archive, unarchive, delete), companies (upsert, get, lookup, attach, detach),
//! tags (create, list, tag and untag a contact), data events, admins (`/me`, list) and data
//! attributes (list, create), conversations (create, reply, note, assign, close, open),
//! admin-initiated messages and notes on contacts.

mod admins;
mod companies;
mod contacts;
mod control;
mod conversations;
mod data_attributes;
mod error;
mod events;
pub mod faults;
pub mod journal;
pub mod limits;
mod search;
mod tags;
pub mod webhooks;
mod workspace;

use axum::Router;
use axum::routing::{get, post};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How the emulated workspace behaves.
#[derive(Debug, Clone)]
pub struct EmulatorConfig {
    /// The bearer token accepted; any token is accepted when `None`.
    pub token: Option<String>,
    /// Requests allowed per 10-second window (Intercom's default app limit is 10,000/min,
    /// about 1,666 per window).
    pub rate_limit: u32,
    /// How long a created or updated contact stays invisible to search.
    pub search_lag: Duration,
}

impl Default for EmulatorConfig {
    fn default() -> Self {
        EmulatorConfig {
            token: None,
            rate_limit: 1_666,
            search_lag: Duration::from_millis(1_000),
        }
    }
}

/// Shared by every handler.
#[derive(Clone)]
pub struct Emulator {
    pub(crate) config: Arc<Mutex<EmulatorConfig>>,
    pub(crate) workspace: Arc<Mutex<workspace::Workspace>>,
    pub(crate) limiter: Arc<limits::WindowLimiter>,
    pub(crate) journal: Arc<journal::Journal>,
    pub(crate) faults: Arc<faults::FaultInjector>,
    pub(crate) webhook: Arc<Mutex<Option<webhooks::Webhook>>>,
    /// Every notification sent: (body, X-Hub-Signature).
    pub(crate) webhooks_sent: Arc<Mutex<Vec<(String, String)>>>,
}

impl Emulator {
    pub fn new(config: EmulatorConfig) -> Self {
        Emulator {
            limiter: Arc::new(limits::WindowLimiter::new(config.rate_limit)),
            config: Arc::new(Mutex::new(config)),
            workspace: Arc::new(Mutex::new(workspace::Workspace::default())),
            journal: Arc::new(journal::Journal::default()),
            faults: Arc::new(faults::FaultInjector::default()),
            webhook: Arc::default(),
            webhooks_sent: Arc::default(),
        }
    }

    /// Every webhook notification sent so far: (body, `X-Hub-Signature`), oldest first.
    pub fn webhooks_sent(&self) -> Vec<(String, String)> {
        self.webhooks_sent.lock().expect("webhook log lock").clone()
    }

    /// Sends signed webhook notifications to `url` when contacts and conversations are
    /// created (`None` stops them).
    pub fn set_webhook(&self, webhook: Option<webhooks::Webhook>) {
        *self.webhook.lock().expect("webhook lock") = webhook;
    }

    /// The Intercom API routes and the `/_emulator` control routes.
    pub fn router(&self) -> Router {
        let api = Router::new()
            .route("/contacts", post(contacts::create).get(contacts::list))
            .route("/contacts/search", post(contacts::search))
            .route("/contacts/merge", post(contacts::merge))
            .route(
                "/contacts/find_by_external_id/{external_id}",
                get(contacts::find_by_external_id),
            )
            .route(
                "/contacts/{id}",
                get(contacts::show)
                    .put(contacts::update)
                    .delete(contacts::delete),
            )
            .route("/contacts/{id}/archive", post(contacts::archive))
            .route("/contacts/{id}/unarchive", post(contacts::unarchive))
            .route(
                "/contacts/{id}/companies",
                post(companies::attach).get(companies::of_contact),
            )
            .route(
                "/contacts/{id}/companies/{company_id}",
                axum::routing::delete(companies::detach),
            )
            .route("/contacts/{id}/tags", post(tags::tag_contact))
            .route(
                "/contacts/{id}/tags/{tag_id}",
                axum::routing::delete(tags::untag_contact),
            )
            .route("/companies", post(companies::upsert).get(companies::lookup))
            .route("/companies/{id}", get(companies::show))
            .route("/tags", post(tags::create).get(tags::list))
            .route("/events", post(events::submit).get(events::list))
            .route(
                "/conversations",
                post(conversations::create).get(conversations::list),
            )
            .route("/conversations/search", post(conversations::search))
            .route("/conversations/{id}", get(conversations::show))
            .route("/conversations/{id}/reply", post(conversations::reply))
            .route("/conversations/{id}/parts", post(conversations::parts))
            .route("/messages", post(conversations::message))
            .route(
                "/contacts/{id}/notes",
                post(conversations::note).get(conversations::notes),
            )
            .route("/me", get(admins::me))
            .route("/admins", get(admins::list))
            .route(
                "/data_attributes",
                get(data_attributes::list).post(data_attributes::create),
            )
            .fallback(error::not_found)
            .layer(axum::middleware::from_fn(error::version_compat))
            .layer(axum::middleware::from_fn_with_state(
                self.clone(),
                faults::inject,
            ))
            .layer(axum::middleware::from_fn_with_state(
                self.clone(),
                limits::rate_limit,
            ))
            .layer(axum::middleware::from_fn_with_state(
                self.clone(),
                error::authenticate,
            ));
        Router::new()
            .route(
                "/_emulator/requests",
                get(journal::list).delete(journal::clear),
            )
            .route("/_emulator/config", get(control::show).put(control::change))
            .merge(api)
            .layer(axum::middleware::from_fn_with_state(
                self.clone(),
                journal::record,
            ))
            .with_state(self.clone())
    }

    /// Serves on `listener` until the task is dropped; returns the bound address.
    pub async fn spawn(self, listener: tokio::net::TcpListener) -> std::io::Result<SocketAddr> {
        let addr = listener.local_addr()?;
        let app = self.router();
        tokio::spawn(async move {
            if let Err(error) = axum::serve(listener, app).await {
                tracing::error!(%error, "the Intercom emulator stopped");
            }
        });
        Ok(addr)
    }

    /// Changes the search lag of a running emulator.
    pub fn set_search_lag(&self, lag: Duration) {
        self.config.lock().expect("config lock").search_lag = lag;
    }

    /// Changes the token a running emulator accepts (a revoked or rotated token, in tests).
    pub fn set_token(&self, token: Option<String>) {
        self.config.lock().expect("config lock").token = token;
    }

    /// Rate-limit windows of this many seconds instead of Intercom's 10 (tests that need many
    /// windows).
    pub fn set_rate_window(&self, seconds: u64) {
        self.limiter.set_window_seconds(seconds);
    }

    /// Changes the requests a window allows.
    pub fn set_rate_limit(&self, limit: u32) {
        self.limiter.set_limit(limit);
    }

    /// Replaces the injected faults of a running emulator.
    pub fn set_faults(&self, faults: faults::Faults) {
        self.faults.set(faults);
    }

    /// Every request received so far, oldest first (what `GET /_emulator/requests` serves).
    pub fn journal_entries(&self) -> Vec<journal::JournalEntry> {
        self.journal.entries()
    }
}
