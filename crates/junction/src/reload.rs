//! Hot reload: on SIGHUP (and with `serve --watch`, when the configuration file or a workflow
//! file it names changes), `junction serve` reads its configuration and workflows again and,
//! when they load, puts the new workflows (and journey rules) in force from the engines' next
//! batch (`LivePlanner`): no event is lost, none is planned twice, no delivery is interrupted.
//!
//! A configuration or workflow that does not load is refused with its FILE:LINE:COL in the log
//! and an alert, and the one in force stays (as Vector does). So is a change to a setting only
//! a restart can apply (the listen address, the store, …): the refusal names it.
//! `/api/config` (and `junction status`) shows the version in force, when it was loaded and
//! the last refusal.

use crate::config::Config;
use junction_delivery::alerts::AlertKind;
use junction_delivery::{Alerter, LivePlanner};
use junction_flow::Planner;
use junction_server::config_api::{ConfigStatus, RefusedReload, SharedConfigStatus};
use sha2::{Digest, Sha256};
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

/// Where a reload reads the configuration from.
pub struct ReloadSource {
    /// Reads it again as at start-up: the file, then the command line's overrides.
    pub load: Box<dyn Fn() -> Result<Config, String> + Send + Sync>,
    /// Also reload when a watched file changes (`serve --watch`).
    pub watch: bool,
}

/// How often `--watch` looks at the files.
const WATCH_EVERY: Duration = Duration::from_secs(1);

/// The configuration in force, shared with what reads it at run time (the console's "try it").
pub type CurrentConfig = Arc<RwLock<Arc<Config>>>;

pub struct Reloader {
    pub source: ReloadSource,
    pub live: Arc<LivePlanner>,
    pub status: SharedConfigStatus,
    pub current: CurrentConfig,
    pub alerts: Alerter,
    /// The workflows delivering in shadow, settled when delivery started (`None`: all).
    pub shadowed: Option<std::collections::HashSet<String>>,
}

/// The status of a configuration just put in force.
pub fn status_of(config: &Config, planner: &Planner, reloads: u64) -> ConfigStatus {
    ConfigStatus {
        version: version(config, planner),
        loaded_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        workflows: planner.workflows().iter().map(|w| w.name.clone()).collect(),
        reloads,
        last_refused: None,
    }
}

/// A hash of the configuration file's text and of every workflow's source as loaded: two
/// loads of the same files have the same version.
fn version(config: &Config, planner: &Planner) -> String {
    let mut hash = Sha256::new();
    if let Some(text) = config.path.as_ref().and_then(|p| std::fs::read(p).ok()) {
        hash.update(&text);
    }
    for workflow in planner.workflows() {
        hash.update(workflow.name.as_bytes());
        hash.update([0]);
        hash.update(workflow.source.as_bytes());
        hash.update([0]);
    }
    hex::encode(&hash.finalize()[..6])
}

/// The settings a running server cannot take without a restart that differ between `old` and
/// `new` (and `shadowed`, the workflows delivery started with in shadow). Only the workflows
/// and `journeys` are reloaded.
fn needs_a_restart(
    old: &Config,
    new: &Config,
    shadowed: &Option<std::collections::HashSet<String>>,
) -> Vec<&'static str> {
    let differs =
        |a: &dyn std::fmt::Debug, b: &dyn std::fmt::Debug| format!("{a:?}") != format!("{b:?}");
    let mut changed = Vec::new();
    let mut check = |name: &'static str, a: &dyn std::fmt::Debug, b: &dyn std::fmt::Debug| {
        if differs(a, b) {
            changed.push(name);
        }
    };
    check("listen", &old.listen, &new.listen);
    check("store", &old.store, &new.store);
    check("segment", &old.segment, &new.segment);
    check("admin", &old.admin, &new.admin);
    check("intercom", &old.intercom, &new.intercom);
    check("delivery", &old.delivery, &new.delivery);
    check("alerts", &old.alerts, &new.alerts);
    check("cluster", &old.cluster, &new.cluster);
    check(
        "shutdown_timeout",
        &old.shutdown_timeout,
        &new.shutdown_timeout,
    );
    // Which workflows deliver in shadow is settled when delivery starts.
    if crate::workflows::shadowed(new).ok().as_ref() != Some(shadowed) {
        changed.push("a workflow's mode (shadow)");
    }
    changed
}

/// The files whose change `--watch` reloads on: the configuration file and the workflow files
/// it names, with when each was last modified.
fn watched(config: &Config) -> Vec<(PathBuf, Option<SystemTime>)> {
    let mut files: Vec<PathBuf> = config.path.iter().cloned().collect();
    for entry in config.workflows.iter().flatten() {
        if let Some(file) = &entry.file {
            files.push(if file.is_absolute() {
                file.clone()
            } else {
                config.base_dir.join(file)
            });
        }
    }
    files
        .into_iter()
        .map(|file| {
            let modified = std::fs::metadata(&file).and_then(|m| m.modified()).ok();
            (file, modified)
        })
        .collect()
}

impl Reloader {
    /// Reloads on SIGHUP (and, with `--watch`, when a watched file changes) until the process
    /// ends.
    pub fn spawn(self) {
        tokio::spawn(async move {
            let mut hangups =
                match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
                    Ok(signal) => signal,
                    Err(error) => {
                        tracing::error!(%error, "cannot listen for SIGHUP: no reload on signal");
                        return;
                    }
                };
            let mut seen = watched(&self.config());
            let mut tick = tokio::time::interval(WATCH_EVERY);
            loop {
                tokio::select! {
                    _ = hangups.recv() => {
                        tracing::info!("SIGHUP: reloading the configuration");
                        self.reload();
                        seen = watched(&self.config());
                    }
                    _ = tick.tick(), if self.source.watch => {
                        let now = watched(&self.config());
                        if now != seen {
                            tracing::info!("a watched file changed: reloading the configuration");
                            self.reload();
                            seen = watched(&self.config());
                        }
                    }
                }
            }
        });
    }

    fn config(&self) -> Arc<Config> {
        Arc::clone(&self.current.read().expect("config lock"))
    }

    /// One reload: put in force, unchanged, or refused (logged, alerted, recorded).
    pub fn reload(&self) {
        match self.try_reload() {
            Ok(Some(version)) => {
                tracing::info!(%version, "configuration reloaded: the new workflows plan from the next batch")
            }
            Ok(None) => tracing::info!("configuration unchanged"),
            Err(error) => {
                tracing::error!(%error, "configuration reload refused; the configuration in force stays");
                self.alerts.raise(AlertKind::ConfigRefused, error.clone());
                self.status
                    .write()
                    .expect("config status lock")
                    .last_refused = Some(RefusedReload {
                    at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
                    error,
                });
            }
        }
    }

    fn try_reload(&self) -> Result<Option<String>, String> {
        let config = (self.source.load)()?;
        let planner = crate::workflows::planner(&config)?;
        let old = self.config();
        let changed = needs_a_restart(&old, &config, &self.shadowed);
        if !changed.is_empty() {
            let file = config.path.as_ref().map_or_else(
                || "the configuration".to_owned(),
                |p| p.display().to_string(),
            );
            return Err(format!(
                "{file}: {} cannot change without a restart; nothing was reloaded",
                changed.join(", ")
            ));
        }
        let mut status = self.status.write().expect("config status lock");
        let fresh = status_of(&config, &planner, status.reloads + 1);
        if fresh.version == status.version {
            return Ok(None);
        }
        let version = fresh.version.clone();
        self.live.replace(Arc::new(planner));
        *self.current.write().expect("config lock") = Arc::new(config);
        *status = ConfigStatus {
            // The last refusal stays on record, with its time.
            last_refused: status.last_refused.take(),
            ..fresh
        };
        Ok(Some(version))
    }
}

/// `junction status`: the running server's `/api/config`, asked at the configuration's address
/// (the admin listener when there is one) with its admin token.
pub async fn status(config: &Config, url: Option<&str>, json: bool) -> Result<(), crate::Failure> {
    let address = server_url(config, url);
    let request = reqwest::Client::new().get(format!("{address}/api/config"));
    let response = with_admin_token(config, request)
        .send()
        .await
        .map_err(|e| unreachable(&address, e))?;
    if !response.status().is_success() {
        return Err(crate::Failure::Runtime(anyhow::anyhow!(
            "the server at {address} answered {}",
            response.status()
        )));
    }
    let body: serde_json::Value = response
        .json()
        .await
        .map_err(|e| crate::Failure::Runtime(e.into()))?;
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&body).unwrap_or_default()
        );
        return Ok(());
    }
    println!(
        "version {} loaded {} ({} reload(s) since start)",
        body["version"].as_str().unwrap_or("?"),
        body["loadedAt"].as_str().unwrap_or("?"),
        body["reloads"]
    );
    let workflows: Vec<&str> = body["workflows"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|w| w.as_str())
        .collect();
    println!("workflows {}", workflows.join(", "));
    if let Some(refused) = body["lastRefused"].as_object() {
        println!(
            "last refused reload at {}: {}",
            refused["at"].as_str().unwrap_or("?"),
            refused["error"].as_str().unwrap_or("?")
        );
    }
    Ok(())
}

/// The running server's base URL: `url` when given, else the configuration's admin listener
/// (or its listener), on loopback when it listens on every address.
pub fn server_url(config: &Config, url: Option<&str>) -> String {
    match url {
        Some(url) => url.trim_end_matches('/').to_owned(),
        None => {
            let mut address = config.admin.listen.unwrap_or(config.listen);
            if address.ip().is_unspecified() {
                address.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
            }
            format!("http://{address}")
        }
    }
}

/// `request` to the admin API, with the configuration's admin token.
pub fn with_admin_token(
    config: &Config,
    request: reqwest::RequestBuilder,
) -> reqwest::RequestBuilder {
    match config.admin.token.as_deref().filter(|t| !t.is_empty()) {
        Some(token) => request.bearer_auth(token),
        None => request,
    }
}

/// What the commands that talk to a running server say when none answers at `base`.
pub fn unreachable(base: &str, error: reqwest::Error) -> crate::Failure {
    crate::Failure::Runtime(anyhow::anyhow!(
        "no server answers at {base} ({}); is `junction serve` running with this configuration?",
        error.without_url()
    ))
}
