//! Alerts: what an operator must hear about — actions dead-lettered, credentials refused,
//! sustained error rates, an aging backlog — sent to the configured sinks (a generic JSON
//! webhook, or a Slack-compatible incoming webhook). Alerts are grouped (everything of one kind
//! that arrives within a short window goes out as one message with a count) and rate-limited
//! (at most one message per kind per cooldown; what arrives meanwhile is counted into the next).
//! Without sinks, alerts are logged.

use serde_json::json;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum AlertKind {
    DeadLetter,
    Credentials,
    ErrorRate,
    Backlog,
    /// A pipeline task (the engine, delivery) stopped; it is being restarted.
    TaskStopped,
    /// Stored state could not be read; what depends on it is held.
    UnreadableState,
    /// A reloaded configuration or workflow was refused; the one in force stays.
    ConfigRefused,
}

impl AlertKind {
    pub fn as_str(self) -> &'static str {
        match self {
            AlertKind::DeadLetter => "dead_letter",
            AlertKind::Credentials => "credentials",
            AlertKind::ErrorRate => "error_rate",
            AlertKind::Backlog => "backlog",
            AlertKind::TaskStopped => "task_stopped",
            AlertKind::UnreadableState => "unreadable_state",
            AlertKind::ConfigRefused => "config_refused",
        }
    }

    fn title(self) -> &'static str {
        match self {
            AlertKind::DeadLetter => "actions failed for good and are in the dead-letter queue",
            AlertKind::Credentials => "Intercom refused the credentials; delivery is paused",
            AlertKind::ErrorRate => "a sustained share of Intercom calls is failing",
            AlertKind::Backlog => "the delivery backlog is getting old",
            AlertKind::TaskStopped => "a pipeline task stopped and is being restarted",
            AlertKind::ConfigRefused => {
                "a configuration reload was refused; the configuration in force stays"
            }
            AlertKind::UnreadableState => {
                "stored state could not be read; what depends on it is held"
            }
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SinkFormat {
    /// `{"kind", "title", "count", "examples", "at"}`.
    Webhook,
    /// `{"text": "…"}`, what Slack's incoming webhooks (and compatible ones) take.
    Slack,
}

#[derive(Debug, Clone)]
pub struct Sink {
    pub url: String,
    pub format: SinkFormat,
}

#[derive(Debug, Clone)]
pub struct AlertSettings {
    pub sinks: Vec<Sink>,
    /// At most one message per kind this often.
    pub cooldown: Duration,
    /// Alerts of one kind arriving within this window share a message.
    pub group_window: Duration,
    /// Share of failing attempts (over the last 5 minutes, at least 20 attempts) that alerts.
    pub error_rate: f64,
    /// Age of the oldest pending action that alerts.
    pub backlog_age: Duration,
}

impl Default for AlertSettings {
    fn default() -> Self {
        AlertSettings {
            sinks: Vec::new(),
            cooldown: Duration::from_secs(300),
            group_window: Duration::from_secs(2),
            error_rate: 0.2,
            backlog_age: Duration::from_secs(900),
        }
    }
}

/// Where delivery raises alerts; cheap to clone.
#[derive(Clone)]
pub struct Alerter {
    sender: mpsc::UnboundedSender<(AlertKind, String)>,
    settings: std::sync::Arc<AlertSettings>,
    recent: std::sync::Arc<std::sync::Mutex<std::collections::VecDeque<RecentAlert>>>,
}

impl Alerter {
    /// Starts the task that groups, rate-limits and sends.
    pub fn start(settings: AlertSettings) -> Alerter {
        let (sender, receiver) = mpsc::unbounded_channel();
        tokio::spawn(run(settings.clone(), receiver));
        Alerter {
            sender,
            settings: std::sync::Arc::new(settings),
            recent: std::sync::Arc::default(),
        }
    }

    /// An alerter whose alerts are only queued on the returned receiver (for tests).
    #[cfg(test)]
    pub(crate) fn queued(
        settings: AlertSettings,
    ) -> (Alerter, mpsc::UnboundedReceiver<(AlertKind, String)>) {
        let (sender, receiver) = mpsc::unbounded_channel();
        let alerter = Alerter {
            sender,
            settings: std::sync::Arc::new(settings),
            recent: std::sync::Arc::default(),
        };
        (alerter, receiver)
    }

    pub fn settings(&self) -> &AlertSettings {
        &self.settings
    }

    pub fn raise(&self, kind: AlertKind, detail: impl Into<String>) {
        let detail = detail.into();
        {
            let mut recent = self.recent.lock().expect("recent alerts");
            recent.push_front(RecentAlert {
                at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                kind: kind.as_str(),
                title: kind.title(),
                detail: detail.clone(),
            });
            recent.truncate(RECENT_ALERTS);
        }
        let _ = self.sender.send((kind, detail));
    }

    /// The alerts this node raised lately, newest first (the console's overview), whether or
    /// not a sink was configured or the cooldown held them back.
    pub fn recent(&self) -> Vec<RecentAlert> {
        self.recent
            .lock()
            .expect("recent alerts")
            .iter()
            .cloned()
            .collect()
    }
}

/// Alerts kept for [`Alerter::recent`].
const RECENT_ALERTS: usize = 20;

/// One alert as raised.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RecentAlert {
    pub at: String,
    pub kind: &'static str,
    pub title: &'static str,
    pub detail: String,
}

#[derive(Default)]
struct Pending {
    count: usize,
    examples: Vec<String>,
}

async fn run(settings: AlertSettings, mut receiver: mpsc::UnboundedReceiver<(AlertKind, String)>) {
    junction_intercom::install_tls_provider();
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("an HTTP client");
    let mut pending: BTreeMap<AlertKind, Pending> = BTreeMap::new();
    let mut last_sent: BTreeMap<AlertKind, Instant> = BTreeMap::new();
    loop {
        // Wait for an alert, or for a held-back one's cooldown to pass.
        let first = match held_until(&settings, &pending, &last_sent) {
            None => receiver.recv().await,
            Some(due) => match tokio::time::timeout_at(due.into(), receiver.recv()).await {
                Ok(next) => next,
                Err(_) => {
                    flush(&settings, &http, &mut pending, &mut last_sent).await;
                    continue;
                }
            },
        };
        let Some((kind, detail)) = first else {
            // Shutting down: send what may be sent.
            flush(&settings, &http, &mut pending, &mut last_sent).await;
            return;
        };
        add(&mut pending, kind, detail);
        // Gather what else arrives within the grouping window.
        let deadline = Instant::now() + settings.group_window;
        while let Ok(Some((kind, detail))) =
            tokio::time::timeout_at(deadline.into(), receiver.recv()).await
        {
            add(&mut pending, kind, detail);
        }
        flush(&settings, &http, &mut pending, &mut last_sent).await;
    }
}

fn add(pending: &mut BTreeMap<AlertKind, Pending>, kind: AlertKind, detail: String) {
    let entry = pending.entry(kind).or_default();
    entry.count += 1;
    if entry.examples.len() < 5 && !detail.is_empty() {
        entry.examples.push(detail);
    }
}

/// When the earliest held-back alert may go out.
fn held_until(
    settings: &AlertSettings,
    pending: &BTreeMap<AlertKind, Pending>,
    last_sent: &BTreeMap<AlertKind, Instant>,
) -> Option<Instant> {
    pending
        .keys()
        .map(|kind| {
            last_sent
                .get(kind)
                .map_or_else(Instant::now, |at| *at + settings.cooldown)
        })
        .min()
}

/// Sends each kind whose cooldown has passed; keeps the rest for later.
async fn flush(
    settings: &AlertSettings,
    http: &reqwest::Client,
    pending: &mut BTreeMap<AlertKind, Pending>,
    last_sent: &mut BTreeMap<AlertKind, Instant>,
) {
    let now = Instant::now();
    let due: Vec<AlertKind> = pending
        .keys()
        .copied()
        .filter(|kind| {
            last_sent
                .get(kind)
                .is_none_or(|at| now.duration_since(*at) >= settings.cooldown)
        })
        .collect();
    for kind in due {
        let Some(alert) = pending.remove(&kind) else {
            continue;
        };
        last_sent.insert(kind, now);
        metrics::counter!("junction_alerts_total", "kind" => kind.as_str()).increment(1);
        tracing::warn!(kind = kind.as_str(), count = alert.count, examples = ?alert.examples, "alert: {}", kind.title());
        for sink in &settings.sinks {
            let body = match sink.format {
                SinkFormat::Webhook => json!({
                    "kind": kind.as_str(),
                    "title": kind.title(),
                    "count": alert.count,
                    "examples": alert.examples,
                    "at": chrono::Utc::now().to_rfc3339(),
                }),
                SinkFormat::Slack => {
                    let mut text = format!(
                        ":rotating_light: Junction: {} ({}×)",
                        kind.title(),
                        alert.count
                    );
                    for example in &alert.examples {
                        text.push_str(&format!("\n• {example}"));
                    }
                    json!({ "text": text })
                }
            };
            // The sink's URL is a credential: never logged.
            match http.post(&sink.url).json(&body).send().await {
                Ok(response) if response.status().is_success() => {}
                Ok(response) => {
                    tracing::error!(status = %response.status(), kind = kind.as_str(), "alert sink refused the alert")
                }
                Err(_) => tracing::error!(kind = kind.as_str(), "alert sink unreachable"),
            }
        }
    }
}
