//! Junction's HTTP front door.
//!
//! - `/v1/*`: the Segment HTTP Tracking API, compatible with the real SDKs ([`ingest`]);
//! - `/hooks/segment`: Segment's Webhooks destination ([`hooks`]);
//! - `/api/*`: the admin read API ([`admin`]);
//! - `/console`: the console, pages for people ([`console`]);
//! - `/healthz`, `/readyz`, `/metrics`: operations ([`ops`]).
//!
//! Ingest never talks to Intercom: it validates, commits to the [`Store`], and only then
//! answers 200. Everything downstream reads the store.

mod admin;
mod auth;
pub mod backfill;
mod body;
pub mod config_api;
mod console;
pub use console::redact as console_redact;
mod delivery_api;
mod error;
mod hooks;
mod ingest;
mod ops;
mod refusals;
pub mod signature;
mod tap_api;
pub mod telemetry;

pub use auth::WriteKey;

use axum::Router;
use axum::routing::{get, post};
use junction_store::Store;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::sensitive_headers::SetSensitiveRequestHeadersLayer;
use tower_http::trace::TraceLayer;

/// What the server needs to know, already validated by the configuration loader.
#[derive(Debug, Clone, Default)]
pub struct ServerSettings {
    /// Accepted Segment write keys. Empty: any key (or none) is accepted, for local trials.
    pub write_keys: Vec<WriteKey>,
    /// Secret of Segment's Webhooks destination; when set, `X-Signature` is required.
    pub shared_secret: Option<String>,
    /// Bearer token for `/api/*`; when unset the admin API is open.
    pub admin_token: Option<String>,
    /// The Intercom app's client secret, which signs its webhooks (`X-Hub-Signature`); without
    /// it `/hooks/intercom` refuses everything.
    pub intercom_secret: Option<String>,
}

/// Shared by every handler.
#[derive(Clone)]
pub struct AppState {
    inner: Arc<Inner>,
}

struct Inner {
    store: Arc<dyn Store>,
    write_keys: auth::WriteKeys,
    shared_secret: Option<String>,
    admin_token: Option<String>,
    intercom_secret: Option<String>,
    metrics: Option<telemetry::PrometheusHandle>,
    draining: AtomicBool,
    /// Rung after each commit that stored events, so the engine plans them at once.
    committed: Arc<tokio::sync::Notify>,
    /// The workflows in force, for replaying dead letters.
    planner: Option<Arc<junction_delivery::LivePlanner>>,
    /// The configuration in force and the last refused reload (`/api/config`).
    config_status: Option<config_api::SharedConfigStatus>,
    /// This node's live tail (`/api/tap`): ingest publishes the events it stores.
    tap: Option<junction_delivery::Tap>,
    /// The supervised pipeline parts, for `/readyz`.
    health: Option<Arc<junction_delivery::supervise::Health>>,
    /// Who is signed in to the console on this node.
    console_sessions: console::session::Sessions,
    /// Counts this node's commits of events: the console's live tail waits on it.
    commits: tokio::sync::watch::Sender<u64>,
    /// The console's "try it" (given by the binary, which has the dry run).
    try_it: Option<TryIt>,
    /// The last hour of this node's ingest and backlog, for the console's charts.
    activity: Arc<console::activity::Activity>,
    /// This node's alerts, for the console's overview.
    alerts: Option<junction_delivery::Alerter>,
    /// Dead-letter replays the console started, with their progress.
    replays: console::jobs::Jobs,
}

/// Plans one event (JSON text) with the loaded workflow of this name and delivers the plan to
/// an Intercom emulator, returning what `junction test` prints, or why it could not.
pub type TryIt = Arc<
    dyn Fn(
            String,
            Vec<u8>,
        ) -> std::pin::Pin<Box<dyn Future<Output = Result<String, String>> + Send>>
        + Send
        + Sync,
>;

impl AppState {
    pub fn new(store: Arc<dyn Store>, settings: ServerSettings) -> Self {
        AppState {
            inner: Arc::new(Inner {
                store,
                write_keys: auth::WriteKeys::new(settings.write_keys),
                shared_secret: settings.shared_secret.filter(|s| !s.is_empty()),
                admin_token: settings.admin_token.filter(|s| !s.is_empty()),
                intercom_secret: settings.intercom_secret.filter(|s| !s.is_empty()),
                metrics: telemetry::prometheus(),
                draining: AtomicBool::new(false),
                committed: Arc::new(tokio::sync::Notify::new()),
                planner: None,
                config_status: None,
                tap: None,
                health: None,
                console_sessions: console::session::Sessions::default(),
                commits: tokio::sync::watch::Sender::new(0),
                try_it: None,
                activity: Arc::default(),
                alerts: None,
                replays: console::jobs::Jobs::default(),
            }),
        }
    }

    /// The live tail ingest publishes to and `/api/tap` reads.
    pub fn with_tap(self, tap: junction_delivery::Tap) -> Self {
        let mut inner = Arc::try_unwrap(self.inner)
            .unwrap_or_else(|_| panic!("with_tap before the state is shared"));
        inner.tap = Some(tap);
        AppState {
            inner: Arc::new(inner),
        }
    }

    /// What `/api/config` reports (the binary updates it as it loads and reloads).
    pub fn with_config_status(self, status: config_api::SharedConfigStatus) -> Self {
        let mut inner = Arc::try_unwrap(self.inner)
            .unwrap_or_else(|_| panic!("with_config_status before the state is shared"));
        inner.config_status = Some(status);
        AppState {
            inner: Arc::new(inner),
        }
    }

    /// The workflows dead letters are replayed with (`POST /api/dlq/replay`).
    pub fn with_planner(self, planner: Arc<junction_delivery::LivePlanner>) -> Self {
        let mut inner = Arc::try_unwrap(self.inner)
            .unwrap_or_else(|_| panic!("with_planner before the state is shared"));
        inner.planner = Some(planner);
        AppState {
            inner: Arc::new(inner),
        }
    }

    /// The alerter whose recent alerts the console's overview lists.
    pub fn with_alerts(self, alerts: junction_delivery::Alerter) -> Self {
        let mut inner = Arc::try_unwrap(self.inner)
            .unwrap_or_else(|_| panic!("with_alerts before the state is shared"));
        inner.alerts = Some(alerts);
        AppState {
            inner: Arc::new(inner),
        }
    }

    /// The console's "try it".
    pub fn with_try_it(self, try_it: TryIt) -> Self {
        let mut inner = Arc::try_unwrap(self.inner)
            .unwrap_or_else(|_| panic!("with_try_it before the state is shared"));
        inner.try_it = Some(try_it);
        AppState {
            inner: Arc::new(inner),
        }
    }

    /// The pipeline's supervised parts, which `/readyz` reports on.
    pub fn with_health(self, health: Arc<junction_delivery::supervise::Health>) -> Self {
        let mut inner = Arc::try_unwrap(self.inner)
            .unwrap_or_else(|_| panic!("with_health before the state is shared"));
        inner.health = Some(health);
        AppState {
            inner: Arc::new(inner),
        }
    }

    /// The bell rung after every commit that stored events (the engine waits on it).
    pub fn commit_bell(&self) -> Arc<tokio::sync::Notify> {
        Arc::clone(&self.inner.committed)
    }

    pub(crate) fn events_committed(&self) {
        self.inner.committed.notify_one();
        self.inner.commits.send_modify(|n| *n += 1);
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.inner.store
    }

    /// Marks the server as shutting down: `/readyz` turns 503 so load balancers stop sending.
    pub fn start_draining(&self) {
        self.inner.draining.store(true, Ordering::SeqCst);
    }

    fn draining(&self) -> bool {
        self.inner.draining.load(Ordering::SeqCst)
    }
}

/// Which routes a listener serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Routes {
    /// Everything: ingest, hooks, the admin API, the console, operations.
    All,
    /// What Segment and Intercom call, and operations (health, readiness, metrics).
    Public,
    /// The admin API and the console, with health and readiness (`admin.listen`).
    Admin,
}

/// Every route, with the layers that apply to all of them.
pub fn router(state: AppState) -> Router {
    router_for(state, Routes::All)
}

/// The routes of one kind of listener, with the layers that apply to all of them.
pub fn router_for(state: AppState, routes: Routes) -> Router {
    let public = Router::new()
        .route("/v1/batch", post(ingest::batch))
        .route("/v1/import", post(ingest::batch))
        .route("/v1/b", post(ingest::batch))
        .route("/v1/{call}", post(ingest::single))
        .route("/hooks/segment", post(hooks::segment))
        .route(
            "/hooks/intercom",
            post(hooks::intercom).head(hooks::intercom_check),
        )
        .route("/metrics", get(ops::metrics));
    let admin = Router::new()
        .route("/api/events", get(admin::list_events))
        .route("/api/events/{seq}", get(admin::show_event))
        .route("/api/rejected", get(admin::list_rejected))
        .route("/api/delivery", get(delivery_api::status))
        .route("/api/cluster", get(delivery_api::cluster))
        .route("/api/dlq", get(delivery_api::list_dead_letters))
        .route("/api/dlq/replay", post(delivery_api::replay))
        .route("/api/dlq/discard", post(delivery_api::discard))
        .route("/api/dlq/release", post(delivery_api::release))
        .route("/api/actions/{*id}", get(delivery_api::show_action))
        .route("/api/quarantine", get(delivery_api::list_quarantine))
        .route(
            "/api/quarantine/release",
            post(delivery_api::release_quarantine),
        )
        .route("/api/config", get(config_api::show))
        .route("/api/tap", get(tap_api::stream))
        .route(
            "/api/backfill",
            post(backfill::backfill).get(backfill::progress),
        )
        .route("/api/runs", get(delivery_api::list_runs))
        .route("/api/runs/{*id}", get(delivery_api::show_run))
        .merge(console::routes());
    let health = Router::new()
        .route("/healthz", get(ops::healthz))
        .route("/readyz", get(ops::readyz));
    let served = match routes {
        Routes::All => public.merge(admin),
        Routes::Public => public,
        Routes::Admin => admin,
    };
    served
        .merge(health)
        .fallback(ops::not_found)
        .layer(axum::middleware::from_fn(refusals::json_refusals))
        .layer(axum::middleware::from_fn(ops::record_request))
        .layer(TraceLayer::new_for_http().make_span_with(
            |request: &axum::http::Request<axum::body::Body>| {
                // The target with credential-like query values redacted, never the raw URI.
                tracing::debug_span!(
                    "request",
                    method = %request.method(),
                    uri = %refusals::redacted_uri(request.uri()),
                    version = ?request.version(),
                )
            },
        ))
        .layer(SetSensitiveRequestHeadersLayer::new([
            axum::http::header::AUTHORIZATION,
            axum::http::header::COOKIE,
        ]))
        .layer(CatchPanicLayer::custom(error::panic_response))
        .with_state(state)
}

/// Serves `app` on `listener` until `stopping` turns true, then finishes in-flight requests.
async fn serve_routes(
    listener: tokio::net::TcpListener,
    app: Router,
    mut stopping: tokio::sync::watch::Receiver<bool>,
) -> std::io::Result<()> {
    use axum::serve::ListenerExt;
    let addr: SocketAddr = listener.local_addr()?;
    tracing::info!(%addr, "listening");
    let listener = listener.tap_io(|stream| {
        // Replies are small; don't let Nagle's algorithm hold them back.
        let _ = stream.set_nodelay(true);
    });
    axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            let _ = stopping.wait_for(|stop| *stop).await;
        })
        .await
}

/// Serves until `shutdown` resolves, then finishes in-flight requests (and so their commits)
/// and closes the store, so every request that got a 200 is on disk.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    serve_then(listener, state, shutdown, async {}).await
}

/// Like [`serve`], running `before_close` once requests are drained and before the store
/// closes (the engine and delivery stop there, so their last writes land).
pub async fn serve_then(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
    before_close: impl Future<Output = ()>,
) -> std::io::Result<()> {
    serve_split(listener, None, state, shutdown, before_close).await
}

/// Like [`serve_then`]; with `admin`, the admin API and the console are served there only, and
/// `listener` serves what Segment and Intercom call (`admin.listen`).
pub async fn serve_split(
    listener: tokio::net::TcpListener,
    admin: Option<tokio::net::TcpListener>,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
    before_close: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let (stop, stopping) = tokio::sync::watch::channel(false);
    let draining = state.clone();
    tokio::spawn(async move {
        shutdown.await;
        draining.start_draining();
        tracing::info!("shutting down: finishing in-flight requests");
        let _ = stop.send(true);
    });
    let sampler = tokio::spawn(console::activity::sample_backlog(
        Arc::clone(state.store()),
        Arc::clone(&state.inner.activity),
    ));
    let main_routes = if admin.is_some() {
        Routes::Public
    } else {
        Routes::All
    };
    let main = serve_routes(
        listener,
        router_for(state.clone(), main_routes),
        stopping.clone(),
    );
    match admin {
        Some(admin) => {
            let admin = serve_routes(admin, router_for(state.clone(), Routes::Admin), stopping);
            let (main, admin) = tokio::join!(main, admin);
            main?;
            admin?;
        }
        None => main.await?,
    }
    sampler.abort();
    before_close.await;
    if let Err(error) = state.store().close().await {
        tracing::error!(%error, "closing the store failed");
    }
    tracing::info!("stopped");
    Ok(())
}
