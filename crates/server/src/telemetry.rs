//! Prometheus metrics: one recorder per process, rendered by `/metrics`.
//!
//! Metric names (all prefixed `junction_`):
//! - `http_requests_total{route,status}`, `http_request_seconds{route}`;
//! - `events_total{type,outcome}` with outcome `accepted`, `duplicate` or `rejected`;
//! - `ingest_request_messages`: messages per request (batch sizes);
//! - `store_commit_seconds`, `store_commit_events`: group-commit latency and size;
//!   `store_commit_failures_total`;
//! - `store_index_lag_events`: events the identity index has yet to cover (lookups by user
//!   scan that many at most);
//! - `intercom_responses_total{status}`: Intercom's answers by class (`2xx`, `429`, `4xx`,
//!   `5xx`), counted by the client.
//! - `messages_capped_total`, `messages_held_total`: messages a frequency cap kept back, and
//!   messages quiet hours held (counted by the planner when they are committed).

pub use metrics_exporter_prometheus::PrometheusHandle;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};
use std::sync::OnceLock;

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// The process-wide recorder, installed on first use. `None` if another recorder was already
/// installed by the embedding program.
pub fn prometheus() -> Option<PrometheusHandle> {
    HANDLE
        .get_or_init(|| {
            let latency = [
                0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                1.0, 2.5,
            ];
            let sizes = [
                1.0, 2.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0,
            ];
            PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &latency)
                .and_then(|b| b.set_buckets_for_metric(Matcher::Suffix("_events".into()), &sizes))
                .and_then(|b| b.set_buckets_for_metric(Matcher::Suffix("_messages".into()), &sizes))
                .and_then(|b| b.install_recorder())
                .map_err(|error| tracing::warn!(%error, "metrics recorder not installed"))
                .ok()
        })
        .clone()
}
