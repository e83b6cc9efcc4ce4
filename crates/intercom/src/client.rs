//! The HTTP client: configuration, TLS, headers, the rate gate and error classification.

use crate::concurrency::{AdaptiveConcurrency, ConcurrencySettings, Outcome};
use crate::error::IntercomError;
use crate::path::ApiPath;
use crate::rate::RateGate;
use crate::recorder::{self, CallRecord};
use reqwest::{Method, Url};
use serde_json::Value;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Where and how to reach one Intercom workspace.
#[derive(Clone)]
pub struct IntercomConfig {
    /// `https://api.intercom.io`, `https://api.eu.intercom.io`, `https://api.au.intercom.io`, or
    /// an emulator.
    pub base_url: String,
    /// The workspace's access token. Never logged.
    pub token: String,
    /// Pinned `Intercom-Version`; 2.14 by default.
    pub version: String,
    /// Per-request timeout.
    pub timeout: Duration,
    /// In-process retries of calls that are safe to repeat.
    pub retry: RetryPolicy,
    /// How many requests may be in flight at once (adapted to latency within these bounds).
    pub concurrency: ConcurrencySettings,
    /// The rate-limit window's length in seconds: Intercom's 10; tests set an emulator's
    /// shorter windows here to run in seconds.
    pub rate_window_seconds: u64,
}

/// Short, in-process retries of one call (with exponential back-off and full jitter), for
/// momentary failures: 5xx, timeouts, dropped connections, a 429 (after the window resets).
/// Only calls that are safe to repeat are retried ([`repeatable`]); delivery keeps its own,
/// persistent retries for everything else.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    pub attempts: usize,
    pub min_delay: Duration,
    pub max_delay: Duration,
    /// How long a call waits out 429s (each wait lasts until the window resets and is not
    /// counted as an attempt) before giving up with [`IntercomError::RateLimited`].
    pub rate_limit_patience: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            attempts: 5,
            min_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(5),
            rate_limit_patience: Duration::from_secs(300),
        }
    }
}

/// Whether sending a call twice does no harm: reads, updates and upserts, and creates whose
/// repetition Intercom refuses (409) or de-duplicates (events). Conversations, replies,
/// messages, notes and merges are not: a retry could repeat them. Decided on the path's shape,
/// so no id can make a call look repeatable.
pub fn repeatable(method: &Method, path: &ApiPath) -> bool {
    if *method != Method::POST {
        return true;
    }
    let shape = path.shape();
    let not_repeatable = shape.starts_with("/conversations")
        || shape.starts_with("/messages")
        || shape == "/contacts/merge"
        || shape.ends_with("/notes");
    !not_repeatable
}

/// Why a client could not be built.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("intercom base URL {0:?} is not an http(s) URL")]
    BaseUrl(String),
    #[error(transparent)]
    Http(#[from] reqwest::Error),
}

impl IntercomConfig {
    pub fn new(base_url: impl Into<String>, token: impl Into<String>) -> Self {
        IntercomConfig {
            base_url: base_url.into(),
            token: token.into(),
            version: "2.14".into(),
            timeout: Duration::from_secs(15),
            retry: RetryPolicy::default(),
            concurrency: ConcurrencySettings::default(),
            rate_window_seconds: crate::rate::INTERCOM_WINDOW_SECONDS,
        }
    }
}

impl fmt::Debug for IntercomConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IntercomConfig")
            .field("base_url", &self.base_url)
            .field("token", &"***")
            .field("version", &self.version)
            .field("timeout", &self.timeout)
            .finish()
    }
}

#[derive(Clone, Debug)]
pub struct IntercomClient {
    http: reqwest::Client,
    base: Url,
    config: Arc<IntercomConfig>,
    gate: Arc<RateGate>,
    slots: Arc<AdaptiveConcurrency>,
}

impl IntercomClient {
    pub fn new(config: IntercomConfig) -> Result<Self, BuildError> {
        let base = Url::parse(&config.base_url)
            .ok()
            .filter(|url| matches!(url.scheme(), "http" | "https") && url.has_host())
            .ok_or_else(|| BuildError::BaseUrl(config.base_url.clone()))?;
        let roots = rustls::RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        };
        let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("ring supports the default TLS versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
        let http = reqwest::Client::builder()
            .tls_backend_preconfigured(tls)
            .timeout(config.timeout)
            .user_agent(concat!("junction/", env!("CARGO_PKG_VERSION")))
            .build()?;
        let gate = RateGate::new(
            Arc::new(junction_store::SystemClock),
            config.rate_window_seconds,
        );
        Ok(IntercomClient {
            http,
            base,
            slots: AdaptiveConcurrency::new(config.concurrency),
            config: Arc::new(config),
            gate: Arc::new(gate),
        })
    }

    pub fn rate_gate(&self) -> &RateGate {
        &self.gate
    }

    /// The adaptive in-flight limit.
    pub fn concurrency(&self) -> &AdaptiveConcurrency {
        &self.slots
    }

    /// Sends a request through the rate gate, retrying momentary failures when the call is
    /// [`repeatable`], and returns the JSON body (`Null` for an empty one, as `POST /events`
    /// answers) or the classified error. 429s on repeatable calls are waited out (the gate
    /// holds every caller until the window resets) for up to `rate_limit_patience`, without
    /// using up attempts.
    pub async fn call(
        &self,
        method: Method,
        path: &ApiPath,
        body: Option<&Value>,
    ) -> Result<Value, IntercomError> {
        if !repeatable(&method, path) || self.config.retry.attempts <= 1 {
            return self.call_once(method, path, body).await;
        }
        let give_up = Instant::now() + self.config.retry.rate_limit_patience;
        loop {
            match self.call_with_retries(method.clone(), path, body).await {
                Err(IntercomError::RateLimited { .. }) if Instant::now() < give_up => continue,
                outcome => return outcome,
            }
        }
    }

    /// Retries momentary failures with back-off; a 429 ends the attempts (see [`Self::call`]).
    async fn call_with_retries(
        &self,
        method: Method,
        path: &ApiPath,
        body: Option<&Value>,
    ) -> Result<Value, IntercomError> {
        use backon::{ExponentialBuilder, Retryable};
        let policy = self.config.retry;
        let backoff = ExponentialBuilder::default()
            .with_jitter()
            .with_min_delay(policy.min_delay)
            .with_max_delay(policy.max_delay)
            .with_max_times(policy.attempts - 1);
        (|| self.call_once(method.clone(), path, body))
            .retry(backoff)
            .sleep(tokio::time::sleep)
            .when(|error| {
                error.is_retryable() && !matches!(error, IntercomError::RateLimited { .. })
            })
            .notify(
                |error, delay| tracing::debug!(%error, ?delay, path = %path.shape(), "retrying an Intercom call"),
            )
            .await
    }

    /// One attempt.
    async fn call_once(
        &self,
        method: Method,
        path: &ApiPath,
        body: Option<&Value>,
    ) -> Result<Value, IntercomError> {
        let slot = if crate::rate::in_backfill() {
            // A backfill's request waits for its share of a window without holding a slot
            // (held while waiting, slots would be missing for live requests, which the window
            // still has room for), then for one of the backfill's slots (three quarters, so a
            // live request never queues behind a backfill's burst at a window's start).
            // Counted in one window, it must leave in that window.
            loop {
                self.gate.acquire().await;
                let counted_in = self.gate.window_number();
                let slot = self.slots.acquire_for_backfill().await;
                if self.gate.window_number() == counted_in {
                    break slot;
                }
            }
        } else {
            let slot = self.slots.acquire().await;
            self.gate.acquire().await;
            slot
        };
        let started = Instant::now();
        let mut call = CallRecord {
            method: method.to_string(),
            path: path.to_string(),
            status: None,
            request: body.and_then(|b| recorder::excerpt(b.to_string().as_bytes())),
            response: None,
            ms: 0,
        };
        let url = path.url(&self.base);
        let mut request = self
            .http
            .request(method, url)
            .bearer_auth(&self.config.token)
            .header("Intercom-Version", &self.config.version)
            .header(reqwest::header::ACCEPT, "application/json");
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = match request.send().await {
            Ok(response) => response,
            Err(error) => {
                self.gate.observe_no_response();
                slot.finish(Outcome::Overloaded);
                let error = transport(error);
                call.response = Some(error.to_string());
                call.ms = started.elapsed().as_millis() as u64;
                recorder::note(call);
                return Err(error);
            }
        };
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        self.gate.observe(status, &headers);
        count_response(status);
        call.status = Some(status);
        let bytes = match response.bytes().await {
            Ok(bytes) => bytes,
            Err(error) => {
                slot.finish(Outcome::Overloaded);
                let error = transport(error);
                call.response = Some(error.to_string());
                call.ms = started.elapsed().as_millis() as u64;
                recorder::note(call);
                return Err(error);
            }
        };
        call.response = recorder::excerpt(&bytes);
        call.ms = started.elapsed().as_millis() as u64;
        recorder::note(call);
        slot.finish(match status {
            429 => Outcome::Ignored,
            500.. => Outcome::Overloaded,
            _ => Outcome::Answered(started.elapsed()),
        });
        if !(200..300).contains(&status) {
            return Err(IntercomError::from_response(status, &headers, &bytes));
        }
        if bytes.is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_slice(&bytes).map_err(|e| {
            IntercomError::unexpected(Some(status), format!("response was not JSON: {e}"))
        })
    }
}

/// Timeouts, refused and dropped connections: the request may not have been processed.
fn transport(error: reqwest::Error) -> IntercomError {
    IntercomError::Retryable {
        status: None,
        detail: format!("transport: {error}"),
    }
}

/// Intercom's answers so far in this process that were 429s (the console charts them).
static RATE_LIMITED_RESPONSES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// How many of Intercom's answers in this process were 429 (Too Many Requests).
pub fn rate_limited_responses() -> u64 {
    RATE_LIMITED_RESPONSES.load(std::sync::atomic::Ordering::Relaxed)
}

/// `junction_intercom_responses_total{status}` by class (`2xx`, `429`, other `4xx`, `5xx`).
fn count_response(status: u16) {
    let class = match status {
        429 => {
            RATE_LIMITED_RESPONSES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            "429"
        }
        200..=299 => "2xx",
        400..=499 => "4xx",
        500..=599 => "5xx",
        _ => "other",
    };
    metrics::counter!("junction_intercom_responses_total", "status" => class).increment(1);
}
