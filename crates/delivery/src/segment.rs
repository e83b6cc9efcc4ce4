//! The Segment Tracking API client for the Intercom → Segment direction: messages are batched
//! into `POST /v1/batch` (within Segment's limits: 500 KB a request, 32 KB a message, and a
//! flush interval), sent with the write key as HTTP Basic user, and retried on Segment's
//! retryable answers (408, 429, 5xx, dropped connections) honouring `Retry-After`; a 400 is
//! reported, not retried. Each caller learns its message's fate when its batch is answered.

use crate::deliver::{Failure, FailureClass};
use junction_intercom::recorder::{self, CallRecord};
use serde_json::{Value, json};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};

/// Segment's request limit is 500 KB; keep a margin for the envelope.
pub const MAX_BATCH_BYTES: usize = 480 * 1024;
/// Segment's per-message limit.
pub const MAX_MESSAGE_BYTES: usize = 32 * 1024;
pub const MAX_BATCH_MESSAGES: usize = 2_500;

#[derive(Debug, Clone)]
pub struct SegmentSettings {
    /// `https://api.segment.io` (US), `https://events.eu1.segmentapis.com` (EU), or any
    /// Segment-compatible endpoint (another Junction, say).
    pub host: String,
    pub write_key: String,
    /// A batch goes out at the latest this long after its first message.
    pub flush_interval: Duration,
    /// Attempts per batch before its messages are reported as failed (delivery retries them
    /// later with its own back-off).
    pub attempts: u32,
}

impl SegmentSettings {
    pub fn new(host: impl Into<String>, write_key: impl Into<String>) -> Self {
        SegmentSettings {
            host: host.into(),
            write_key: write_key.into(),
            flush_interval: Duration::from_millis(200),
            attempts: 4,
        }
    }
}

type Waiter = oneshot::Sender<Result<(), Failure>>;

/// A message, its size as JSON text (measured once, when it is handed in), and who waits.
type Queued = (Value, usize, Waiter);

/// Hands messages to the batching task; cheap to clone.
#[derive(Clone)]
pub struct SegmentClient {
    sender: mpsc::Sender<Queued>,
}

impl SegmentClient {
    pub fn start(settings: SegmentSettings) -> SegmentClient {
        let (sender, receiver) = mpsc::channel(10_000);
        tokio::spawn(run(settings, receiver));
        SegmentClient { sender }
    }

    /// Sends one message (a whole Segment call with `type` and `messageId`) and waits until
    /// Segment accepted or refused its batch.
    pub async fn send(&self, message: Value) -> Result<(), Failure> {
        let size = message.to_string().len();
        if size > MAX_MESSAGE_BYTES {
            return Err(Failure::new(
                FailureClass::Permanent,
                "message_too_large",
                format!("{size} bytes; Segment takes at most {MAX_MESSAGE_BYTES} per message"),
            ));
        }
        let (done, outcome) = oneshot::channel();
        self.sender.send((message, size, done)).await.map_err(|_| {
            Failure::new(
                FailureClass::Retry,
                "shutting_down",
                "the Segment client stopped",
            )
        })?;
        outcome.await.unwrap_or_else(|_| {
            Err(Failure::new(
                FailureClass::Retry,
                "shutting_down",
                "the Segment client stopped",
            ))
        })
    }
}

async fn run(settings: SegmentSettings, mut receiver: mpsc::Receiver<Queued>) {
    junction_intercom::install_tls_provider();
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(15))
        .user_agent(concat!("junction/", env!("CARGO_PKG_VERSION")))
        .build()
        .expect("an HTTP client");
    let mut carried: Option<Queued> = None;
    loop {
        let first = match carried.take() {
            Some(first) => first,
            None => match receiver.recv().await {
                Some(first) => first,
                None => return,
            },
        };
        let deadline = Instant::now() + settings.flush_interval;
        let mut bytes = first.1;
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH_MESSAGES {
            match tokio::time::timeout_at(deadline.into(), receiver.recv()).await {
                Ok(Some(next)) => {
                    let size = next.1 + 1;
                    if bytes + size > MAX_BATCH_BYTES {
                        carried = Some(next);
                        break;
                    }
                    bytes += size;
                    batch.push(next);
                }
                Ok(None) | Err(_) => break,
            }
        }
        let (messages, waiters): (Vec<Value>, Vec<Waiter>) = batch
            .into_iter()
            .map(|(message, _, waiter)| (message, waiter))
            .unzip();
        let outcome = send_batch(&http, &settings, messages).await;
        for waiter in waiters {
            let _ = waiter.send(outcome.clone());
        }
    }
}

async fn send_batch(
    http: &reqwest::Client,
    settings: &SegmentSettings,
    messages: Vec<Value>,
) -> Result<(), Failure> {
    let url = format!("{}/v1/batch", settings.host.trim_end_matches('/'));
    let body = json!({ "batch": messages, "sentAt": chrono::Utc::now().to_rfc3339() });
    let mut attempt = 0;
    loop {
        attempt += 1;
        let started = Instant::now();
        let sent = http
            .post(&url)
            .basic_auth(&settings.write_key, Some(""))
            .json(&body)
            .send()
            .await;
        let mut call = CallRecord {
            method: "POST".into(),
            path: "/v1/batch".into(),
            status: None,
            request: None,
            response: None,
            ms: started.elapsed().as_millis() as u64,
        };
        let (failure, wait) = match sent {
            Ok(response) => {
                let status = response.status().as_u16();
                call.status = Some(status);
                let retry_after = response
                    .headers()
                    .get(reqwest::header::RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.trim().parse::<u64>().ok())
                    .map(Duration::from_secs);
                let text = response.text().await.unwrap_or_default();
                call.response = recorder::excerpt(text.as_bytes());
                recorder::note(call);
                metrics::counter!("junction_segment_batches_total", "status" => status.to_string())
                    .increment(1);
                match status {
                    200..=299 => return Ok(()),
                    408 | 429 | 500..=599 => (
                        Failure::new(
                            FailureClass::Retry,
                            format!("segment_{status}"),
                            format!("Segment answered {status}: {text}"),
                        ),
                        retry_after,
                    ),
                    401 | 403 => {
                        return Err(Failure::new(
                            FailureClass::Permanent,
                            format!("segment_{status}"),
                            format!("Segment refused the write key ({status})"),
                        ));
                    }
                    _ => {
                        return Err(Failure::new(
                            FailureClass::Permanent,
                            format!("segment_{status}"),
                            format!("Segment refused the batch ({status}): {text}"),
                        ));
                    }
                }
            }
            Err(error) => {
                call.response = Some(if error.is_timeout() {
                    "timed out".into()
                } else {
                    "connection failed".into()
                });
                recorder::note(call);
                (
                    Failure::new(
                        FailureClass::Retry,
                        "transport",
                        "the Segment endpoint could not be reached",
                    ),
                    None,
                )
            }
        };
        if attempt >= settings.attempts {
            return Err(failure);
        }
        let backoff = Duration::from_millis(fastrand::u64(0..=(250u64 << attempt.min(6))));
        tokio::time::sleep(wait.unwrap_or(backoff).min(Duration::from_secs(30))).await;
    }
}
