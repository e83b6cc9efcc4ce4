//! Junction's configuration file: YAML with `${ENV_VAR}` interpolation, checked strictly
//! (unknown keys are errors) and reported with the file, line and column at fault.
//!
//! ```yaml
//! listen: 0.0.0.0:8080
//! store: sqlite://junction-data/junction.db
//! segment:
//!   write_keys:
//!     - ${SEGMENT_WRITE_KEY}             # source name derived from the key
//!     - { key: "${IOS_WRITE_KEY}", source: ios }
//!   shared_secret: ${SEGMENT_SHARED_SECRET:-}   # empty: webhooks need a write key instead
//!   dedupe_window: 7d
//!   outbound:                           # where segment.* workflow steps send
//!     write_key: ${SEGMENT_OUTBOUND_WRITE_KEY}
//!     host: https://api.segment.io
//!   profiles:                           # Segment Profile API, for segment_profile in expressions
//!     space_id: spa_123
//!     token: ${SEGMENT_PROFILES_TOKEN}
//! admin:
//!   token: ${JUNCTION_ADMIN_TOKEN:-}
//!   # listen: 127.0.0.1:8081          # the admin API and the console here only
//! intercom:
//!   region: us                          # or eu, au: the workspace's Intercom host
//!   # base_url: http://127.0.0.1:8090   # instead of region: an emulator or a proxy
//!   token: ${INTERCOM_TOKEN}
//!   version: "2.14"
//!   client_secret: ${INTERCOM_CLIENT_SECRET:-}   # signs the webhooks /hooks/intercom accepts
//!   unknown_attributes: create          # or drop
//!   nested_values: flatten              # or json
//!   null_values: skip                   # or clear
//! delivery:
//!   retry_window: 4h                    # retried this long (and at least min_attempts times)
//!   min_attempts: 3
//!   retention: 30d                      # finished actions, attempts and runs kept this long
//!   mode: live                          # or shadow: record what would be sent, send nothing
//! alerts:
//!   sinks:
//!     - { url: "${SLACK_WEBHOOK_URL}", format: slack }   # or format: webhook (JSON)
//!   cooldown: 5m                        # at most one message per kind this often
//!   error_rate: 0.2                     # share of failing attempts over 5 minutes
//!   backlog_age: 15m                    # oldest pending action
//! cluster:                              # several nodes on one PostgreSQL store
//!   node: ${HOSTNAME}                   # unique, stable across restarts (default: HOSTNAME:PORT)
//!   lease: 30s                          # a dead node's users move to others after this
//!   partitions: 8                       # planning partitions (new store: 8 on PostgreSQL)
//! shutdown_timeout: 10s                 # a stop never takes longer
//! journeys:                            # what every workflow's messages respect
//!   timezone: America/New_York          # contacts without a timezone trait or context.timezone
//!   caps: { messages: 3 per 1d }        # per contact; calendar days in their time zone
//!   quiet_hours: { from: "21:00", to: "08:00" }   # their local time; held, sent after
//! workflows:                            # default: profile-sync, company-sync, track-events
//!   - template: profile-sync
//!   - template: lead-score
//!     vars: { sales_reps: ["991267002", "991267003"] }
//!   - file: workflows/vip.yaml          # relative to this file
//! ```

use serde::Deserialize;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Address and port the HTTP server listens on.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// Where events are kept: `sqlite://PATH`, or `postgres://USER@HOST/DATABASE` for several
    /// nodes sharing one store.
    #[serde(default)]
    pub store: StoreUrl,
    #[serde(default)]
    pub segment: SegmentConfig,
    #[serde(default)]
    pub admin: AdminConfig,
    #[serde(default)]
    pub intercom: IntercomSection,
    #[serde(default)]
    pub delivery: DeliverySection,
    #[serde(default)]
    pub alerts: AlertsSection,
    #[serde(default)]
    pub cluster: ClusterSection,
    /// The workflows to run; without this key, the defaults that mirror Segment's own Intercom
    /// destination (profile-sync, company-sync, track-events).
    #[serde(default)]
    pub workflows: Option<Vec<WorkflowEntry>>,
    /// Rules every workflow's messages follow: a default time zone for contacts, a frequency
    /// cap, quiet hours.
    #[serde(default)]
    pub journeys: junction_flow::definition::JourneysDef,
    /// `journeys`, read (by `check`).
    #[serde(skip)]
    pub journey_rules: junction_flow::journey::JourneyRules,
    /// How long a stop (SIGTERM, Ctrl-C) may take: requests drain, calls in flight finish and
    /// are recorded; what is still waiting then is abandoned as a crash would abandon it.
    /// Below Kubernetes' 30-second grace period by default.
    #[serde(default = "default_shutdown_timeout")]
    pub shutdown_timeout: Window,
    /// The folder relative workflow paths start from (the configuration file's own).
    #[serde(skip)]
    pub base_dir: PathBuf,
    /// The file it was read from, if any (a reload reads it again).
    #[serde(skip)]
    pub path: Option<PathBuf>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: default_listen(),
            store: StoreUrl::default(),
            segment: SegmentConfig::default(),
            admin: AdminConfig::default(),
            intercom: IntercomSection::default(),
            delivery: DeliverySection::default(),
            alerts: AlertsSection::default(),
            cluster: ClusterSection::default(),
            workflows: None,
            journeys: Default::default(),
            journey_rules: Default::default(),
            shutdown_timeout: default_shutdown_timeout(),
            base_dir: PathBuf::from("."),
            path: None,
        }
    }
}

/// How this node works alongside others on a shared store.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterSection {
    /// This node's name, unique among the nodes sharing the store and the same across its
    /// restarts (default: HOSTNAME:PORT).
    #[serde(default)]
    pub node: Option<String>,
    /// How long a node's hold on a user (and on planning) lasts without renewal: how soon the
    /// work of a node that died moves to the others. Renewed every third of it.
    #[serde(default = "default_lease")]
    pub lease: Window,
    /// How many planning partitions the store is split into (users are spread over them by
    /// a hash of their id; each is planned by one node at a time), 1 to 256. Default for a new
    /// store: 8 on PostgreSQL, 1 on SQLite (one process); else what the store has. Changed only with every node stopped and planning
    /// caught up: `junction migrate --partitions N`.
    #[serde(default, deserialize_with = "partitions")]
    pub partitions: Option<u32>,
}

/// The most planning partitions a store may have: more would only add idle engines and
/// polling for the nodes a deployment runs.
pub const MAX_PARTITIONS: u32 = 256;

fn partitions<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    let n = u32::deserialize(d)?;
    if (1..=MAX_PARTITIONS).contains(&n) {
        Ok(Some(n))
    } else {
        Err(serde::de::Error::custom(format!(
            "expected a number of planning partitions from 1 to {MAX_PARTITIONS}, got {n}"
        )))
    }
}

fn default_lease() -> Window {
    Window(Duration::from_secs(30))
}

impl Default for ClusterSection {
    fn default() -> Self {
        ClusterSection {
            node: None,
            lease: default_lease(),
            partitions: None,
        }
    }
}

impl ClusterSection {
    pub fn node_name(&self, listen: SocketAddr) -> String {
        self.node
            .clone()
            .filter(|n| !n.trim().is_empty())
            .unwrap_or_else(|| junction_delivery::executor::default_node_name(listen.port()))
    }

    pub fn lease(&self) -> Duration {
        self.lease.0.max(Duration::from_secs(1))
    }
}

/// How delivery retries and how long it keeps records.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeliverySection {
    /// How long an action is retried, from its first attempt, before the dead-letter queue.
    #[serde(default = "default_retry_window")]
    pub retry_window: Window,
    /// Attempts an action gets before it may be dead-lettered.
    #[serde(default = "default_min_attempts")]
    pub min_attempts: u32,
    /// Users delivered to at the same time.
    #[serde(default = "default_users_in_parallel")]
    pub users_in_parallel: usize,
    /// Finished actions, attempts and runs are deleted after this (dead letters stay).
    #[serde(default = "default_retention")]
    pub retention: Window,
    /// How often a paused delivery checks whether Intercom accepts the credentials again.
    #[serde(default = "default_probe_every")]
    pub probe_every: Window,
    /// How often the error rate and the backlog's age are checked for metrics and alerts.
    #[serde(default = "default_health_every")]
    pub health_every: Window,
    /// `live` (the default), or `shadow`: plan and record the exact requests Junction would
    /// send, without sending them (`junction shadow report`).
    #[serde(default)]
    pub mode: DeliveryMode,
}

/// Whether delivery sends (live) or only records what it would send (shadow).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryMode {
    #[default]
    Live,
    Shadow,
}

fn default_shutdown_timeout() -> Window {
    Window(Duration::from_secs(10))
}

fn default_health_every() -> Window {
    Window(Duration::from_secs(15))
}

fn default_retry_window() -> Window {
    Window(Duration::from_secs(4 * 3600))
}
fn default_min_attempts() -> u32 {
    3
}
fn default_users_in_parallel() -> usize {
    64
}
fn default_retention() -> Window {
    Window(Duration::from_secs(30 * 86_400))
}
fn default_probe_every() -> Window {
    Window(Duration::from_secs(10))
}

impl Default for DeliverySection {
    fn default() -> Self {
        DeliverySection {
            retry_window: default_retry_window(),
            min_attempts: default_min_attempts(),
            users_in_parallel: default_users_in_parallel(),
            mode: DeliveryMode::Live,
            retention: default_retention(),
            probe_every: default_probe_every(),
            health_every: default_health_every(),
        }
    }
}

impl DeliverySection {
    pub fn settings(&self) -> junction_delivery::DeliverySettings {
        junction_delivery::DeliverySettings {
            retry_window: self.retry_window.0,
            min_attempts: i64::from(self.min_attempts),
            users_in_parallel: self.users_in_parallel.max(1),
            retention: self.retention.0,
            probe_every: self.probe_every.0.max(Duration::from_secs(1)),
            health_every: self.health_every.0.max(Duration::from_secs(1)),
            ..junction_delivery::DeliverySettings::default()
        }
    }
}

/// Where alerts go, and when they fire.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertsSection {
    #[serde(default)]
    pub sinks: Vec<AlertSink>,
    #[serde(default = "default_cooldown")]
    pub cooldown: Window,
    #[serde(default = "default_error_rate")]
    pub error_rate: f64,
    #[serde(default = "default_backlog_age")]
    pub backlog_age: Window,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertSink {
    /// The webhook's URL (a secret: keep it in the environment).
    #[serde(deserialize_with = "http_url")]
    pub url: String,
    /// `webhook` (a JSON document) or `slack` (`{"text": …}`).
    #[serde(default)]
    pub format: AlertFormat,
}

#[derive(Debug, Clone, Copy, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AlertFormat {
    #[default]
    Webhook,
    Slack,
}

fn default_cooldown() -> Window {
    Window(Duration::from_secs(300))
}
fn default_error_rate() -> f64 {
    0.2
}
fn default_backlog_age() -> Window {
    Window(Duration::from_secs(900))
}

impl Default for AlertsSection {
    fn default() -> Self {
        AlertsSection {
            sinks: Vec::new(),
            cooldown: default_cooldown(),
            error_rate: default_error_rate(),
            backlog_age: default_backlog_age(),
        }
    }
}

impl AlertsSection {
    pub fn settings(&self) -> junction_delivery::AlertSettings {
        junction_delivery::AlertSettings {
            sinks: self
                .sinks
                .iter()
                .map(|sink| junction_delivery::Sink {
                    url: sink.url.clone(),
                    format: match sink.format {
                        AlertFormat::Webhook => junction_delivery::SinkFormat::Webhook,
                        AlertFormat::Slack => junction_delivery::SinkFormat::Slack,
                    },
                })
                .collect(),
            cooldown: self.cooldown.0,
            error_rate: self.error_rate,
            backlog_age: self.backlog_age.0,
            ..junction_delivery::AlertSettings::default()
        }
    }
}

/// One workflow to load: an embedded template or a file, with variable overrides.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkflowEntry {
    /// A template's name (`junction templates list`).
    #[serde(default)]
    pub template: Option<String>,
    /// A workflow file, relative to the configuration file.
    #[serde(default)]
    pub file: Option<PathBuf>,
    /// Values replacing the workflow's `vars` defaults.
    #[serde(default)]
    pub vars: serde_json::Map<String, serde_json::Value>,
    /// Replaces the workflow's own `unmatched`: what its Intercom actions do for an event
    /// without a userId whose email matches no single contact (`create_lead` or
    /// `dead_letter`).
    #[serde(default)]
    pub unmatched: Option<junction_flow::definition::Unmatched>,
    /// `shadow`: this workflow's requests are recorded, not sent (whatever `delivery.mode`).
    #[serde(default)]
    pub mode: Option<DeliveryMode>,
}

/// The Intercom workspace Junction writes to.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IntercomSection {
    /// Where the workspace is hosted: `us` (`https://api.intercom.io`, the default), `eu`
    /// (`https://api.eu.intercom.io`) or `au` (`https://api.au.intercom.io`).
    #[serde(default)]
    pub region: IntercomRegion,
    /// Any other address, instead of the region's: an emulator such as
    /// `http://127.0.0.1:8090`, or a proxy.
    #[serde(default, deserialize_with = "optional_http_url")]
    pub base_url: Option<String>,
    /// The workspace's access token (keep it in the environment: `${INTERCOM_TOKEN}`).
    #[serde(default)]
    pub token: Option<String>,
    /// The pinned `Intercom-Version` header.
    #[serde(default = "default_intercom_version")]
    pub version: String,
    /// The Intercom app's client secret: it signs the webhooks `POST /hooks/intercom` accepts.
    #[serde(default)]
    pub client_secret: Option<String>,
    /// Traits with no custom attribute in Intercom yet: `create` it (typed from the value) or
    /// `drop` the trait with a warning.
    #[serde(default)]
    pub unknown_attributes: UnknownAttributesSetting,
    /// Objects and arrays in traits: `flatten` (`address_city`) or `json` (one text value).
    #[serde(default)]
    pub nested_values: NestedValuesSetting,
    /// Null traits: `skip` them or `clear` the attribute.
    #[serde(default)]
    pub null_values: NullValuesSetting,
    /// What a user's deletion request (a Segment `delete` message) does to their contact:
    /// `delete` it (the default, as Segment's destination does) or `archive` it.
    #[serde(default)]
    pub deletion: DeletionSetting,
}

#[derive(Debug, Clone, Copy, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeletionSetting {
    #[default]
    Delete,
    Archive,
}

#[derive(Debug, Clone, Copy, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UnknownAttributesSetting {
    #[default]
    Create,
    Drop,
}

/// The data centre an Intercom workspace lives in.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IntercomRegion {
    #[default]
    Us,
    Eu,
    Au,
}

#[derive(Debug, Clone, Copy, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NestedValuesSetting {
    #[default]
    Flatten,
    Json,
}

#[derive(Debug, Clone, Copy, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NullValuesSetting {
    #[default]
    Skip,
    Clear,
}

impl Default for IntercomSection {
    fn default() -> Self {
        IntercomSection {
            region: IntercomRegion::default(),
            base_url: None,
            token: None,
            version: default_intercom_version(),
            client_secret: None,
            unknown_attributes: UnknownAttributesSetting::default(),
            nested_values: NestedValuesSetting::default(),
            null_values: NullValuesSetting::default(),
            deletion: DeletionSetting::default(),
        }
    }
}

impl IntercomSection {
    /// The client configuration, when a token is configured.
    pub fn client_config(&self) -> Option<junction_intercom::IntercomConfig> {
        let token = self.token.clone().filter(|t| !t.is_empty())?;
        let mut config = junction_intercom::IntercomConfig::new(self.base_url(), token);
        config.version = self.version.clone();
        Some(config)
    }

    /// The address Intercom is called at: `base_url` when set, else the region's host.
    pub fn base_url(&self) -> String {
        match (&self.base_url, self.region) {
            (Some(url), _) => url.clone(),
            (None, IntercomRegion::Us) => "https://api.intercom.io".into(),
            (None, IntercomRegion::Eu) => "https://api.eu.intercom.io".into(),
            (None, IntercomRegion::Au) => "https://api.au.intercom.io".into(),
        }
    }

    pub fn deletion(&self) -> junction_delivery::Deletion {
        match self.deletion {
            DeletionSetting::Delete => junction_delivery::Deletion::Delete,
            DeletionSetting::Archive => junction_delivery::Deletion::Archive,
        }
    }

    pub fn attribute_policy(&self) -> junction_intercom::attributes::AttributePolicy {
        use junction_intercom::attributes::{NestedValues, NullValues, UnknownAttributes};
        junction_intercom::attributes::AttributePolicy {
            unknown: match self.unknown_attributes {
                UnknownAttributesSetting::Create => UnknownAttributes::Create,
                UnknownAttributesSetting::Drop => UnknownAttributes::Drop,
            },
            nested: match self.nested_values {
                NestedValuesSetting::Flatten => NestedValues::Flatten,
                NestedValuesSetting::Json => NestedValues::JsonString,
            },
            nulls: match self.null_values {
                NullValuesSetting::Skip => NullValues::Skip,
                NullValuesSetting::Clear => NullValues::Clear,
            },
        }
    }
}

fn default_intercom_version() -> String {
    "2.14".into()
}

fn optional_http_url<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<String>, D::Error> {
    http_url(deserializer).map(Some)
}

fn http_url<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<String, D::Error> {
    let url = String::deserialize(deserializer)?;
    if url.starts_with("https://") || url.starts_with("http://") {
        Ok(url.trim_end_matches('/').to_owned())
    } else {
        Err(serde::de::Error::custom(format!(
            "expected an http:// or https:// URL, found {url:?}"
        )))
    }
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8080))
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SegmentConfig {
    /// Write keys accepted by the Tracking API. Empty: any key is accepted (local trials only).
    #[serde(default)]
    pub write_keys: Vec<WriteKeyEntry>,
    /// Shared secret of Segment's Webhooks destination: `/hooks/segment` accepts requests signed
    /// with it (`X-Signature`); without it, only requests carrying a write key.
    #[serde(default)]
    pub shared_secret: Option<String>,
    /// How long a `messageId` is remembered for de-duplication (`7d`, `24h`, `90m`, `3600s`).
    #[serde(default)]
    pub dedupe_window: Window,
    /// Where `segment.identify|track|group` steps send (the Intercom → Segment direction).
    #[serde(default)]
    pub outbound: Option<SegmentOutbound>,
    /// Segment's Profile API, for `segment_profile` in expressions (without it, Junction's own
    /// history of the user).
    #[serde(default)]
    pub profiles: Option<SegmentProfiles>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SegmentProfiles {
    pub space_id: String,
    /// The space's access token (a secret: keep it in the environment).
    pub token: String,
    /// `https://profiles.segment.com` (US, the default) or `https://profiles.euw1.segment.com`.
    #[serde(default = "default_profiles_host", deserialize_with = "http_url")]
    pub host: String,
}

fn default_profiles_host() -> String {
    "https://profiles.segment.com".into()
}

/// A Segment source to send to.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SegmentOutbound {
    /// The source's write key (a secret: keep it in the environment).
    pub write_key: String,
    /// `https://api.segment.io` (US, the default), `https://events.eu1.segmentapis.com` (EU),
    /// or any Segment-compatible endpoint.
    #[serde(default = "default_segment_host", deserialize_with = "http_url")]
    pub host: String,
}

fn default_segment_host() -> String {
    "https://api.segment.io".into()
}

/// A write key, alone or with the source name its events are recorded under.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum WriteKeyEntry {
    Key(String),
    Named { key: String, source: String },
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// Bearer token required by `/api/*`; unset means the admin API is open.
    #[serde(default)]
    pub token: Option<String>,
    /// A second address for the admin API and the console, which `listen` then no longer
    /// serves (keep them off the address Segment and Intercom reach).
    #[serde(default)]
    pub listen: Option<SocketAddr>,
}

/// A store URL, checked when the file is read so the error can point at it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreUrl(pub String);

impl Default for StoreUrl {
    fn default() -> Self {
        StoreUrl("sqlite://junction-data/junction.db".into())
    }
}

impl<'de> Deserialize<'de> for StoreUrl {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let url = String::deserialize(deserializer)?;
        StoreUrl::parse(&url).map_err(serde::de::Error::custom)
    }
}

impl StoreUrl {
    pub fn parse(url: &str) -> Result<StoreUrl, String> {
        junction_store::locate(url)
            .map(|_| StoreUrl(url.to_owned()))
            .map_err(|e| e.to_string())
    }
}

/// The de-duplication window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window(pub Duration);

impl Default for Window {
    fn default() -> Self {
        Window(Duration::from_secs(7 * 24 * 3600))
    }
}

impl<'de> Deserialize<'de> for Window {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        parse_duration(&text)
            .map(Window)
            .map_err(serde::de::Error::custom)
    }
}

/// `30s`, `90m`, `24h`, `7d`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let seconds_per_unit = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => {
            return Err(format!(
                "expected a duration such as 30s, 90m, 24h or 7d, found {text:?}"
            ));
        }
    };
    let number: u64 = number
        .parse()
        .map_err(|_| format!("expected a duration such as 30s, 90m, 24h or 7d, found {text:?}"))?;
    Ok(Duration::from_secs(number.saturating_mul(seconds_per_unit)))
}

/// A configuration error located in its file. Shown as `FILE:LINE:COLUMN: message`.
#[derive(Debug)]
pub struct ConfigError {
    pub file: PathBuf,
    pub line: Option<u64>,
    pub column: Option<u64>,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
            if let Some(column) = self.column {
                write!(f, ":{column}")?;
            }
        }
        write!(f, ": {}", self.message)
    }
}

impl std::error::Error for ConfigError {}

impl Config {
    /// Reads and checks a configuration file, taking `${VAR}` from the process environment.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: path.to_path_buf(),
            line: None,
            column: None,
            message: format!("cannot read the configuration file: {e}"),
        })?;
        let mut config = Config::parse(path, &text, |name| std::env::var(name).ok())?;
        config.path = Some(path.to_path_buf());
        Ok(config)
    }

    /// Parses configuration text; `env` looks up variables (injected for tests).
    pub fn parse(
        path: &Path,
        text: &str,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        let located = |line, column, message| ConfigError {
            file: path.to_path_buf(),
            line: Some(line),
            column: Some(column),
            message,
        };
        let (text, substituted) = interpolate(text, &env)
            .map_err(|(line, column, message)| located(line, column, message))?;
        // Values from the environment are often secrets; keep them out of error messages.
        let redact = |message: String| {
            substituted
                .iter()
                .filter(|value| value.len() >= 3)
                .fold(message, |m, value| m.replace(value.as_str(), "***"))
        };
        if text.trim().is_empty() {
            return Ok(Config::default());
        }
        let config: Config = serde_saphyr::from_str(&text).map_err(|e| {
            let (line, column) = e
                .location()
                .map_or((None, None), |l| (Some(l.line()), Some(l.column())));
            let reason = redact(junction_flow::compile::yaml_error_reason(&e.to_string()));
            let message = match line.and_then(|l| key_path_at(&text, l)) {
                Some(path) => format!("{path}: {reason}"),
                None => reason,
            };
            ConfigError {
                file: path.to_path_buf(),
                line,
                column,
                message,
            }
        })?;
        let mut config = config.check(path, &text)?;
        config.base_dir = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .map_or_else(|| PathBuf::from("."), Path::to_path_buf);
        Ok(config)
    }

    /// Rules serde cannot express; errors point at the offending key.
    fn check(mut self, path: &Path, text: &str) -> Result<Config, ConfigError> {
        self.journey_rules = junction_flow::journey::JourneyRules::from_def(&self.journeys)
            .map_err(|e| ConfigError {
                file: path.to_path_buf(),
                line: Some(e.line as u64),
                column: Some(e.column as u64),
                message: format!("journeys.{}", e.message),
            })?;
        for (index, entry) in self.segment.write_keys.iter().enumerate() {
            let (key, source) = match entry {
                WriteKeyEntry::Key(key) => (key, None),
                WriteKeyEntry::Named { key, source } => (key, Some(source)),
            };
            let problem = if key.trim().is_empty() {
                Some("segment.write_keys: a write key is empty (is its environment variable set?)")
            } else if source.is_some_and(|s| s.trim().is_empty()) {
                Some("segment.write_keys: a source name is empty")
            } else {
                None
            };
            if let Some(problem) = problem {
                let line = line_of(text, "write_keys").map(|l| l + 1 + index as u64);
                return Err(ConfigError {
                    file: path.to_path_buf(),
                    line,
                    column: None,
                    message: problem.into(),
                });
            }
        }
        Ok(self)
    }

    pub fn server_settings(&self) -> junction_server::ServerSettings {
        junction_server::ServerSettings {
            write_keys: self
                .segment
                .write_keys
                .iter()
                .map(|entry| match entry {
                    WriteKeyEntry::Key(key) => junction_server::WriteKey::unnamed(key.clone()),
                    WriteKeyEntry::Named { key, source } => junction_server::WriteKey {
                        key: key.clone(),
                        source: source.clone(),
                    },
                })
                .collect(),
            shared_secret: self.segment.shared_secret.clone().filter(|s| !s.is_empty()),
            admin_token: self.admin.token.clone().filter(|s| !s.is_empty()),
            intercom_secret: self
                .intercom
                .client_secret
                .clone()
                .filter(|s| !s.is_empty()),
        }
    }

    pub fn store_options(&self) -> junction_store::StoreOptions {
        junction_store::StoreOptions {
            dedupe_window: self.segment.dedupe_window.0,
        }
    }
}

/// The dotted key path (`segment.dedupe_window`) of the YAML mapping entry on a line, found
/// by indentation: enough to tell the user which setting is wrong.
fn key_path_at(text: &str, line: u64) -> Option<String> {
    let lines: Vec<&str> = text.lines().collect();
    let index = usize::try_from(line).ok()?.checked_sub(1)?;
    let key_of = |l: &str| -> Option<(usize, String)> {
        let indent = l.len() - l.trim_start().len();
        let content = l.trim_start().trim_start_matches("- ");
        let (key, _) = content.split_once(':')?;
        let key = key.trim();
        let plain = !key.is_empty() && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        plain.then(|| (indent, key.to_owned()))
    };
    let mut indent = lines.get(index)?.len() - lines.get(index)?.trim_start().len();
    let mut path = Vec::new();
    if let Some((_, key)) = key_of(lines[index]) {
        path.push(key);
    }
    for l in lines[..index].iter().rev() {
        if l.trim().is_empty() || l.trim_start().starts_with('#') {
            continue;
        }
        if let Some((key_indent, key)) = key_of(l)
            && key_indent < indent
        {
            path.push(key);
            indent = key_indent;
            if indent == 0 {
                break;
            }
        }
    }
    path.reverse();
    (!path.is_empty()).then(|| path.join("."))
}

fn line_of(text: &str, key: &str) -> Option<u64> {
    text.lines()
        .position(|line| line.trim_start().starts_with(&format!("{key}:")))
        .map(|index| index as u64 + 1)
}

/// Replaces `${VAR}` and `${VAR:-default}`; `$${` stands for a literal `${`. Comment lines are
/// left alone. Lines are never added or removed, so YAML errors keep their line numbers.
/// Returns the text and the values substituted from the environment.
fn interpolate(
    text: &str,
    env: &impl Fn(&str) -> Option<String>,
) -> Result<(String, Vec<String>), (u64, u64, String)> {
    let mut out = String::with_capacity(text.len());
    let mut substituted = Vec::new();
    for (index, line) in text.split_inclusive('\n').enumerate() {
        if line.trim_start().starts_with('#') {
            out.push_str(line);
            continue;
        }
        let mut rest = line;
        while let Some(start) = rest.find('$') {
            out.push_str(&rest[..start]);
            let tail = &rest[start..];
            if let Some(after) = tail.strip_prefix("$${") {
                out.push_str("${");
                rest = after;
            } else if let Some(body) = tail.strip_prefix("${") {
                let column = (line.len() - tail.len() + 1) as u64;
                let end = body.find('}').ok_or((
                    index as u64 + 1,
                    column,
                    "unclosed ${ in an environment variable reference".to_owned(),
                ))?;
                let reference = &body[..end];
                let (name, default) = match reference.split_once(":-") {
                    Some((name, default)) => (name, Some(default)),
                    None => (reference, None),
                };
                let valid =
                    !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
                if !valid {
                    return Err((
                        index as u64 + 1,
                        column,
                        format!("${{{reference}}} is not a valid environment variable reference"),
                    ));
                }
                match (env(name), default) {
                    (Some(value), _) => {
                        out.push_str(&value);
                        substituted.push(value);
                    }
                    (None, Some(default)) => out.push_str(default),
                    (None, None) => {
                        return Err((
                            index as u64 + 1,
                            column,
                            format!(
                                "environment variable {name} is not set (write ${{{name}:-}} to allow it to be empty)"
                            ),
                        ));
                    }
                }
                rest = &body[end + 1..];
            } else {
                out.push('$');
                rest = &tail[1..];
            }
        }
        out.push_str(rest);
    }
    Ok((out, substituted))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(Path::new("junction.yaml"), text, |name| match name {
            "KEY" => Some("wk-from-env".into()),
            "EMPTY" => Some(String::new()),
            _ => None,
        })
    }

    #[test]
    fn an_empty_file_means_the_defaults() {
        let config = parse("").unwrap();
        assert_eq!(config.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(config.store.0, "sqlite://junction-data/junction.db");
        assert_eq!(config.segment.dedupe_window.0, Duration::from_secs(604_800));
        assert!(config.segment.write_keys.is_empty());
    }

    #[test]
    fn every_key_is_read_and_variables_are_interpolated() {
        let config = parse(
            "# ${NOT_SET} in a comment is fine\n\
             listen: 0.0.0.0:9000\n\
             store: sqlite:///var/lib/junction/j.db\n\
             segment:\n  write_keys:\n    - ${KEY}\n    - { key: literal, source: ios }\n\
             \x20 shared_secret: \"${UNSET:-fallback}\"\n  dedupe_window: 24h\n\
             admin:\n  token: \"a$${b}\"\n",
        )
        .unwrap();
        assert_eq!(config.listen.port(), 9000);
        let settings = config.server_settings();
        assert_eq!(settings.write_keys[0].key, "wk-from-env");
        assert!(settings.write_keys[0].source.starts_with("wk_"));
        assert_eq!(settings.write_keys[1].source, "ios");
        assert_eq!(settings.shared_secret.as_deref(), Some("fallback"));
        assert_eq!(settings.admin_token.as_deref(), Some("a${b}"));
        assert_eq!(
            config.store_options().dedupe_window,
            Duration::from_secs(86_400)
        );
    }

    #[test]
    fn errors_name_the_file_line_and_what_was_expected() {
        let cases = [
            ("listen: 8080x\n", "junction.yaml:1:", "listen"),
            (
                "segment:\n  write_kyes: []\n",
                "junction.yaml:2:",
                "unknown field",
            ),
            (
                "store: mysql://db/j\n",
                "junction.yaml:1:",
                "expected sqlite://PATH or postgres://",
            ),
            (
                "store: postgres://db:port/j\n",
                "junction.yaml:1:",
                "not a PostgreSQL connection URL",
            ),
            (
                "segment:\n  dedupe_window: soon\n",
                "junction.yaml:2:",
                "segment.dedupe_window: expected a duration such as 30s",
            ),
            (
                "admin:\n  token: ${MISSING}\n",
                "junction.yaml:2:10",
                "MISSING is not set",
            ),
            (
                "segment:\n  write_keys:\n    - x\n    - \"${EMPTY}\"\n",
                "junction.yaml:4",
                "write key is empty",
            ),
            (
                "journeys:\n  caps: { messages: lots }\n",
                "junction.yaml:2:",
                "journeys.caps.messages: `lots`: expected a cap like `2 per 1d`",
            ),
            (
                "journeys:\n  timezone: Mars/Olympus\n",
                "junction.yaml:2:13",
                "journeys.timezone: `Mars/Olympus` is not a time zone",
            ),
        ];
        for (text, location, expected) in cases {
            let error = parse(text).unwrap_err().to_string();
            assert!(error.starts_with(location), "{text:?} gave {error}");
            assert!(error.contains(expected), "{text:?} gave {error}");
        }
    }

    #[test]
    fn secrets_from_the_environment_never_reach_error_messages() {
        let error = parse("segment:\n  write_keys: ${KEY}\n")
            .unwrap_err()
            .to_string();
        assert!(!error.contains("wk-from-env"), "{error}");
    }

    #[test]
    fn the_intercom_section_names_the_workspace() {
        let config = parse("").unwrap();
        assert_eq!(config.intercom.base_url(), "https://api.intercom.io");
        for (region, host) in [
            ("eu", "https://api.eu.intercom.io"),
            ("au", "https://api.au.intercom.io"),
            ("us", "https://api.intercom.io"),
        ] {
            let config = parse(&format!("intercom:\n  region: {region}\n")).unwrap();
            assert_eq!(config.intercom.base_url(), host, "{region}");
        }
        let emulator = "intercom:\n  region: eu\n  base_url: http://127.0.0.1:8090\n";
        assert_eq!(
            parse(emulator).unwrap().intercom.base_url(),
            "http://127.0.0.1:8090",
            "base_url, when set, wins"
        );
        let error = parse("intercom:\n  region: mars\n")
            .unwrap_err()
            .to_string();
        assert!(error.contains("region") && error.contains("eu"), "{error}");
        assert!(
            config.intercom.client_config().is_none(),
            "no token, no client"
        );
        let config = parse("intercom:\n  base_url: https://api.eu.intercom.io/\n  token: ${KEY}\n  version: \"2.16\"\n").unwrap();
        let client = config.intercom.client_config().unwrap();
        assert_eq!(
            (client.base_url.as_str(), client.version.as_str()),
            ("https://api.eu.intercom.io", "2.16")
        );
        assert!(
            !format!("{client:?}").contains("wk-from-env"),
            "the token is never printed"
        );
        let error = parse("intercom:\n  base_url: api.intercom.io\n")
            .unwrap_err()
            .to_string();
        assert!(
            error.starts_with("junction.yaml:2:") && error.contains("intercom.base_url"),
            "{error}"
        );
    }

    #[test]
    fn durations_take_a_unit() {
        assert_eq!(parse_duration("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_duration("7d").unwrap(), Duration::from_secs(604_800));
        assert!(parse_duration("7").is_err());
        assert!(parse_duration("d").is_err());
    }

    /// The configuration documented at the top of this module, with `${VAR}`s that resolve.
    fn documented() -> String {
        include_str!("config.rs")
            .lines()
            .skip_while(|l| !l.starts_with("//! ```yaml"))
            .skip(1)
            .take_while(|l| !l.starts_with("//! ```"))
            .map(|l| l.strip_prefix("//! ").unwrap_or(""))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Parses with every variable set (URLs where the name says so).
    fn parse_with_env(text: &str) -> Result<Config, ConfigError> {
        Config::parse(Path::new("junction.yaml"), text, |name| {
            Some(if name.ends_with("_URL") {
                "https://hooks.example.com/x".into()
            } else {
                format!("value-of-{name}")
            })
        })
    }

    #[test]
    fn the_documented_configuration_parses() {
        let config = parse_with_env(&documented()).unwrap();
        assert_eq!(config.shutdown_timeout.0, Duration::from_secs(10));
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]

        /// A damaged configuration is refused with a position inside the file (or loads),
        /// never a panic.
        #[test]
        fn damaged_configurations_are_refused_with_a_location(
            edits in proptest::collection::vec((0usize..4000, 0u8..3, proptest::prelude::any::<char>()), 1..6),
        ) {
            let mut chars: Vec<char> = documented().chars().collect();
            for (at, kind, c) in edits {
                let at = at % (chars.len() + 1);
                match kind {
                    0 if at < chars.len() => {
                        chars.remove(at);
                    }
                    1 if at < chars.len() => chars[at] = c,
                    _ => chars.insert(at, c),
                }
            }
            let text: String = chars.into_iter().collect();
            if let Err(error) = parse_with_env(&text) {
                if let Some(line) = error.line {
                    proptest::prop_assert!(line as usize <= text.lines().count() + 1, "{error}");
                }
                proptest::prop_assert!(!error.message.is_empty());
            }
        }

        #[test]
        fn arbitrary_text_never_crashes_the_loader(text in "\\PC{0,300}") {
            let _ = parse(&text);
        }
    }
}
