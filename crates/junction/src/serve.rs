//! `junction serve`: opens the store, binds the listener, and serves until SIGTERM or SIGINT,
//! then drains in-flight requests so every acknowledged event is committed.

use crate::config::Config;
use anyhow::Context;
use junction_server::{AppState, serve};

pub async fn run(config: Config) -> anyhow::Result<()> {
    let settings = config.server_settings();
    if settings.write_keys.is_empty() {
        tracing::warn!("segment.write_keys is empty: any write key is accepted");
    }
    if settings.shared_secret.is_none() {
        tracing::warn!(
            "segment.shared_secret is not set: /hooks/segment accepts unsigned requests"
        );
    }
    if settings.admin_token.is_none() && !config.listen.ip().is_loopback() {
        tracing::warn!(listen = %config.listen, "admin.token is not set: /api is open to anyone who can reach this address");
    }
    match config.intercom.client_config() {
        Some(intercom) => {
            let client = junction_intercom::IntercomClient::new(intercom)
                .context("configuring the Intercom client")?;
            // Report bad credentials at start-up, not at the first event; never block on it.
            tokio::spawn(async move {
                match client.me().await {
                    Ok(me) => tracing::info!(
                        admin = me["email"].as_str().unwrap_or("?"),
                        workspace = me["app"]["id_code"].as_str().unwrap_or("?"),
                        "Intercom credentials accepted"
                    ),
                    Err(error) => tracing::error!(%error, "Intercom credentials check failed"),
                }
            });
        }
        None => tracing::warn!("intercom.token is not set: nothing will be sent to Intercom"),
    }
    let store = junction_store::open(&config.store.0, config.store_options())
        .await
        .with_context(|| format!("opening the store {}", config.store.0))?;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("listening on {}", config.listen))?;
    serve(listener, AppState::new(store, settings), shutdown_signal())
        .await
        .context("serving HTTP")
}

/// Resolves on SIGTERM (what process managers send) or SIGINT (Ctrl-C).
pub(crate) async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut terminate =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(signal) => signal,
                Err(error) => {
                    tracing::error!(%error, "cannot listen for SIGTERM");
                    let _ = interrupt.await;
                    return;
                }
            };
        tokio::select! {
            _ = interrupt => {}
            _ = terminate.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = interrupt.await;
    }
}
