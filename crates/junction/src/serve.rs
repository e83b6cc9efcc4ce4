//! `junction serve`: opens the store, loads the workflows, binds the listener, starts the
//! engine and (with an Intercom token) delivery, and serves until SIGTERM or SIGINT; then
//! drains in-flight requests, lets delivery record the calls in flight, and closes the store.

use crate::config::Config;
use anyhow::Context;
use junction_delivery::alerts::AlertKind;
use junction_delivery::profiles::{ProfileApiClient, ProfileApiSettings};
use junction_delivery::{
    Alerter, Deliverer, IntercomTarget, LivePlanner, Oversight, Pipeline, SegmentClient,
    SegmentSettings,
};
use junction_intercom::attributes::AttributeCatalog;
use junction_intercom::{ContactResolver, IntercomClient};
use junction_server::{AppState, serve_split};
use junction_store::Store;
use std::sync::Arc;
use std::time::Duration;

pub async fn run(
    config: Config,
    reload: Option<crate::reload::ReloadSource>,
) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("listening on {}", config.listen))?;
    run_on(config, listener, shutdown_signal(), reload).await
}

/// Splits a new store into the configured number of planning partitions, or when the
/// configuration does not say, into the backend's `default`; refuses to start when a store in
/// use is split otherwise than configured and cannot be changed now (the error says why and
/// what to do).
async fn settle_partitions(
    store: &dyn Store,
    configured: Option<u32>,
    default: u32,
    node: &str,
) -> anyhow::Result<()> {
    let have = store.partitions().await?;
    let wanted = match configured {
        Some(wanted) => wanted,
        None => {
            let empty = junction_store::EventQuery {
                limit: Some(1),
                ..Default::default()
            };
            if !store.events(empty).await?.items.is_empty() {
                return Ok(());
            }
            default
        }
    };
    if wanted == have {
        return Ok(());
    }
    let now = chrono::Utc::now().timestamp_millis();
    match store.repartition(wanted, node, now).await {
        Ok(()) => {
            tracing::info!(from = have, to = wanted, "planning partitions changed");
            Ok(())
        }
        // A new store another node is already splitting: keep what it chose.
        Err(junction_store::StoreError::Refused(_)) if configured.is_none() => Ok(()),
        Err(junction_store::StoreError::Refused(reason)) => anyhow::bail!(
            "cluster.partitions is {wanted}, but the store is split into {have} planning partitions and cannot change now: {reason}"
        ),
        Err(error) => Err(error.into()),
    }
}

/// Serves on `listener` until `shutdown` resolves (the demo runs it this way, in-process),
/// reloading from `reload` on SIGHUP (and with `--watch`) when given.
pub async fn run_on(
    config: Config,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
    reload: Option<crate::reload::ReloadSource>,
) -> anyhow::Result<()> {
    let planner = crate::workflows::planner(&config).map_err(anyhow::Error::msg)?;
    let settings = config.server_settings();
    if settings.write_keys.is_empty() {
        tracing::warn!("segment.write_keys is empty: any write key is accepted");
    }
    if settings.shared_secret.is_none() && settings.write_keys.is_empty() {
        tracing::warn!(
            "neither segment.shared_secret nor segment.write_keys is set: /hooks/segment refuses every request"
        );
    }
    if settings.admin_token.is_none() && !config.listen.ip().is_loopback() {
        tracing::warn!(listen = %config.listen, "admin.token is not set: /api is open to anyone who can reach this address");
    }
    let store = junction_store::open(&config.store.0, config.store_options())
        .await
        .with_context(|| {
            format!(
                "opening the store {}",
                junction_store::redact_url(&config.store.0)
            )
        })?;
    let node = config
        .cluster
        .node_name(listener.local_addr().unwrap_or(config.listen));
    let default = junction_store::default_partitions(&config.store.0);
    settle_partitions(store.as_ref(), config.cluster.partitions, default, &node).await?;
    let status: junction_server::config_api::SharedConfigStatus = Arc::new(std::sync::RwLock::new(
        crate::reload::status_of(&config, &planner, 0),
    ));
    let planner = Arc::new(planner);
    let live = Arc::new(LivePlanner::new(Arc::clone(&planner)));
    let current: crate::reload::CurrentConfig =
        Arc::new(std::sync::RwLock::new(Arc::new(config.clone())));
    let health = Arc::new(junction_delivery::supervise::Health::default());
    let alerts = Alerter::start(config.alerts.settings());
    let tap = junction_delivery::Tap::default();
    let state = AppState::new(Arc::clone(&store), settings)
        .with_tap(tap.clone())
        .with_planner(Arc::clone(&live))
        .with_config_status(Arc::clone(&status))
        .with_try_it(try_it(Arc::clone(&current)))
        .with_alerts(alerts.clone())
        .with_health(Arc::clone(&health));
    // Shadow delivery: every workflow (`delivery.mode: shadow`, when Intercom is never called)
    // or those whose entry says so.
    let shadowed = crate::workflows::shadowed(&config).map_err(anyhow::Error::msg)?;
    if let Some(source) = reload {
        crate::reload::Reloader {
            source,
            live: Arc::clone(&live),
            status,
            current,
            alerts: alerts.clone(),
            shadowed: shadowed.clone(),
        }
        .spawn();
    }
    let all_shadow = shadowed.is_none();
    let shadow = match &shadowed {
        Some(names) if names.is_empty() => None,
        _ => Some(
            shadow_target(Arc::clone(&store), config.intercom.attribute_policy())
                .await
                .context("starting the shadow workspace")?,
        ),
    };
    if let Some(names) = &shadowed
        && !names.is_empty()
    {
        tracing::info!(workflows = ?names, "shadow: these workflows' requests are recorded, not sent");
    } else if all_shadow {
        tracing::info!(
            "delivery.mode is shadow: requests are recorded, not sent; Intercom is not called"
        );
    }
    let client = match config.intercom.client_config().filter(|_| !all_shadow) {
        Some(client_config) => {
            Some(IntercomClient::new(client_config).context("configuring the Intercom client")?)
        }
        None => {
            tracing::warn!(
                "intercom.token is not set: actions are planned and kept, and delivered once a token is configured"
            );
            None
        }
    };
    let (policy, resolver_store) = (config.intercom.attribute_policy(), Arc::clone(&store));
    let deletion = config.intercom.deletion();
    let made_store = Arc::clone(&store) as Arc<dyn Store>;
    let credential_alerts = alerts.clone();
    let probe_every = config.delivery.settings().probe_every;
    let segment = config.segment.outbound.as_ref().map(|outbound| {
        SegmentClient::start(SegmentSettings::new(
            outbound.host.clone(),
            outbound.write_key.clone(),
        ))
    });
    let budget_store: Arc<dyn junction_store::RateBudget> = store.clone();
    let deliverer = async move {
        let deliverer = match client {
            Some(client) => {
                let workspace = workspace_id(&client, &credential_alerts, probe_every).await;
                // Every node calling this workspace spends from one budget, kept in the store.
                client
                    .rate_gate()
                    .share_budget(Arc::clone(&budget_store), workspace.clone());
                Deliverer::new(Some(IntercomTarget {
                    resolver: ContactResolver::new(client.clone(), resolver_store, workspace),
                    catalog: AttributeCatalog::new(client.clone()),
                    policy,
                    deletion,
                    client,
                }))
            }
            // Without Intercom, only Segment calls and webhooks can be delivered (or the
            // shadow's).
            None if segment.is_some() || shadow.is_some() => Deliverer::new(None),
            None => return None,
        };
        let deliverer = match shadow {
            Some(target) => deliverer.with_shadow(junction_delivery::Shadow {
                target,
                workflows: shadowed,
            }),
            None => deliverer,
        };
        let deliverer = deliverer.remembering_made(made_store);
        Some(match segment {
            Some(segment) => deliverer.with_segment(segment),
            None => deliverer,
        })
    };
    tracing::info!(workflows = ?planner.workflows().iter().map(|w| w.name.as_str()).collect::<Vec<_>>(), "workflows loaded");
    let pipeline = Pipeline::start(
        Arc::clone(&store) as Arc<dyn Store>,
        live,
        deliverer,
        state.commit_bell(),
        junction_delivery::DeliverySettings {
            node,
            lease: config.cluster.lease(),
            tap,
            ..config.delivery.settings()
        },
        config
            .segment
            .profiles
            .as_ref()
            .map(|p| {
                ProfileApiClient::new(ProfileApiSettings {
                    host: p.host.clone(),
                    space_id: p.space_id.clone(),
                    token: p.token.clone(),
                })
            })
            .transpose()
            .context("configuring segment.profiles")?,
        Oversight { alerts, health },
    );
    // A stop is bounded by `shutdown_timeout`: requests drain and delivery stops within it
    // (leaving a second for the store to close), and a watchdog ends the process if anything
    // still hangs then — exactly the state a crash leaves, which Junction recovers from.
    let timeout = config.shutdown_timeout.0;
    let stop_began: Arc<std::sync::OnceLock<tokio::time::Instant>> = Arc::default();
    let began = Arc::clone(&stop_began);
    let shutdown = async move {
        shutdown.await;
        let now = tokio::time::Instant::now();
        let _ = began.set(now);
        tracing::info!(timeout = ?timeout, "stopping");
        tokio::spawn(async move {
            tokio::time::sleep_until(now + timeout).await;
            tracing::error!(timeout = ?timeout, "shutdown_timeout reached: exiting now, as after a crash");
            std::process::exit(1);
        });
    };
    let stop_delivery = async move {
        let began = stop_began
            .get()
            .copied()
            .unwrap_or_else(tokio::time::Instant::now);
        let close_store = Duration::from_secs(1).min(timeout / 4);
        pipeline.stop(began + timeout - close_store).await
    };
    let admin = match config.admin.listen {
        Some(address) => Some(
            tokio::net::TcpListener::bind(address)
                .await
                .with_context(|| format!("admin.listen: cannot listen on {address}"))?,
        ),
        None => None,
    };
    serve_split(listener, admin, state, shutdown, stop_delivery)
        .await
        .context("serving HTTP")
}

/// The stand-in workspace shadow delivery sends to: an in-process Intercom emulator (the
/// same `junction test` predicts with), its contacts kept apart in the identity map under the
/// workspace `shadow`.
async fn shadow_target(
    store: Arc<dyn Store>,
    policy: junction_intercom::attributes::AttributePolicy,
) -> anyhow::Result<IntercomTarget> {
    let emulator = junction_emulator::Emulator::new(junction_emulator::EmulatorConfig {
        token: Some("shadow".into()),
        rate_limit: 1_000_000,
        search_lag: Duration::ZERO,
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let address = emulator.spawn(listener).await?;
    let client = IntercomClient::new(junction_intercom::IntercomConfig::new(
        format!("http://{address}"),
        "shadow",
    ))?;
    Ok(IntercomTarget {
        resolver: ContactResolver::new(client.clone(), store, "shadow"),
        catalog: AttributeCatalog::new(client.clone()),
        policy,
        deletion: Default::default(),
        client,
    })
}

/// The Intercom workspace's id (`GET /me`), which keys the identity map. Asks until Intercom
/// answers: without accepted credentials nothing can be delivered anyway (ingest and planning
/// do not wait for this).
async fn workspace_id(client: &IntercomClient, alerts: &Alerter, probe_every: Duration) -> String {
    let mut pause = Duration::from_secs(1);
    let mut alerted = false;
    loop {
        match client.me().await {
            Ok(me) => {
                let workspace = me["app"]["id_code"]
                    .as_str()
                    .unwrap_or("default")
                    .to_owned();
                tracing::info!(admin = me["email"].as_str().unwrap_or("?"), %workspace, "Intercom credentials accepted");
                return workspace;
            }
            Err(error) => {
                tracing::error!(%error, "Intercom credentials check failed; delivery waits");
                if !alerted && matches!(error, junction_intercom::IntercomError::Credentials { .. })
                {
                    alerts.raise(AlertKind::Credentials, error.to_string());
                    alerted = true;
                }
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(probe_every);
            }
        }
    }
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

/// The console's "try it": the dry run of `junction test`, on the workflows in force.
fn try_it(current: crate::reload::CurrentConfig) -> junction_server::TryIt {
    Arc::new(move |name: String, event: Vec<u8>| {
        let config = Arc::clone(&current.read().expect("config lock"));
        Box::pin(async move { crate::dry_run::try_event(&config, &name, &event).await })
    })
}
