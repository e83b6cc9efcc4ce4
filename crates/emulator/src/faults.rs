//! Injected faults, so that retries and back-off are tested against failures like Intercom's:
//! error statuses at a given rate, connections dropped mid-response, extra latency, and 429
//! storms (every request refused until the storm ends).

use crate::Emulator;
use crate::error::IntercomError;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// What to inject; all zero by default.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Faults {
    /// Share of requests answered with each status instead of being served, e.g. `{"500": 0.05}`.
    pub error_rates: BTreeMap<u16, f64>,
    /// Share of requests whose connection is dropped before the response completes.
    pub reset_rate: f64,
    /// Added to every response.
    pub latency_ms: u64,
    /// Starts a 429 storm of this many seconds when set through the control endpoint.
    pub storm_seconds: u64,
    /// Share of requests answered 200 with an HTML page instead of JSON (as a misconfigured
    /// proxy in front of an API can): an answer the client cannot interpret.
    pub garbage_rate: f64,
}

/// The fault settings and the state they need at run time.
pub struct FaultInjector {
    faults: Mutex<(Faults, Option<Instant>)>,
    random: Mutex<u64>,
}

impl Default for FaultInjector {
    fn default() -> Self {
        FaultInjector {
            faults: Mutex::new((Faults::default(), None)),
            random: Mutex::new(0x853c_49e6_748f_ea9b),
        }
    }
}

enum Decision {
    Serve,
    Fail(StatusCode),
    Reset,
    Storm,
    Garbage,
}

impl FaultInjector {
    pub fn set(&self, faults: Faults) {
        let storm = (faults.storm_seconds > 0)
            .then(|| Instant::now() + Duration::from_secs(faults.storm_seconds));
        *self.faults.lock().expect("faults lock") = (faults, storm);
    }

    pub fn get(&self) -> Faults {
        self.faults.lock().expect("faults lock").0.clone()
    }

    /// A uniform number in [0, 1) (splitmix64; reproducible, no dependency needed).
    fn roll(&self) -> f64 {
        let mut state = self.random.lock().expect("random lock");
        *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = *state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        (z ^ (z >> 31)) as f64 / (u64::MAX as f64 + 1.0)
    }

    fn decide(&self) -> (Decision, Duration) {
        let (faults, storm) = self.faults.lock().expect("faults lock").clone();
        let latency = Duration::from_millis(faults.latency_ms);
        if storm.is_some_and(|until| Instant::now() < until) {
            return (Decision::Storm, latency);
        }
        let mut roll = self.roll();
        if roll < faults.reset_rate {
            return (Decision::Reset, latency);
        }
        roll -= faults.reset_rate;
        if roll < faults.garbage_rate {
            return (Decision::Garbage, latency);
        }
        roll -= faults.garbage_rate;
        for (status, rate) in &faults.error_rates {
            if roll < *rate {
                let status =
                    StatusCode::from_u16(*status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
                return (Decision::Fail(status), latency);
            }
            roll -= rate;
        }
        (Decision::Serve, latency)
    }
}

pub async fn inject(State(emulator): State<Emulator>, request: Request, next: Next) -> Response {
    let (decision, latency) = emulator.faults.decide();
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    match decision {
        Decision::Serve => next.run(request).await,
        Decision::Storm => IntercomError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limit_exceeded",
            "Exceeded rate limit (injected storm)",
        )
        .into_response(),
        Decision::Fail(status) => {
            IntercomError::new(status, "server_error", "Injected failure").into_response()
        }
        Decision::Garbage => Response::builder()
            .status(StatusCode::OK)
            .header("content-type", "text/html")
            .body(Body::from("<html><body>Welcome to the proxy</body></html>"))
            .unwrap_or_default(),
        Decision::Reset => {
            // Headers go out, then the body fails: the client sees the connection cut mid-reply.
            let cut = futures_util::stream::once(async {
                Err::<axum::body::Bytes, _>(std::io::Error::other("injected connection reset"))
            });
            Response::builder()
                .status(StatusCode::OK)
                .header("content-type", "application/json")
                .body(Body::from_stream(cut))
                .unwrap_or_default()
        }
    }
}
