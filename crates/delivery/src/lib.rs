//! Junction's moving parts after ingest: the [`engine::Engine`] plans events into the outbox,
//! the [`executor::Executor`] delivers the outbox to Intercom (and to alert webhooks) through
//! [`deliver::Deliverer`].
//!
//! [`Pipeline::start`] wires both to a store and runs them until shutdown.

pub mod alerts;
pub mod deliver;
pub mod engine;
pub mod executor;
pub mod inspect;
pub mod profiles;
pub mod replay;
pub mod segment;

use junction_flow::Planner;
use junction_store::{Store, StoreError};
use std::sync::Arc;
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;

pub use alerts::{AlertSettings, Alerter, Sink, SinkFormat};
pub use deliver::{Deliverer, Failure, FailureClass, IntercomTarget};
pub use executor::DeliverySettings;
pub use segment::{SegmentClient, SegmentSettings};

/// The running engine and executor.
pub struct Pipeline {
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    events_arrived: Arc<Notify>,
}

impl Pipeline {
    /// Starts planning at once, and delivery once `deliverer` resolves to somewhere to deliver
    /// to (it may wait for Intercom to accept the credentials; without a deliverer, actions wait
    /// in the outbox). `events_arrived` is rung by ingest after each commit.
    pub async fn start(
        store: Arc<dyn Store>,
        planner: Arc<Planner>,
        deliverer: impl Future<Output = Option<Deliverer>> + Send + 'static,
        events_arrived: Arc<Notify>,
        settings: DeliverySettings,
        alerts: Alerter,
        profile_api: Option<profiles::ProfileApiClient>,
    ) -> Result<Pipeline, StoreError> {
        let (shutdown, stop) = watch::channel(false);
        let actions_planned = Arc::new(Notify::new());
        let engine = engine::Engine::new(
            Arc::clone(&store),
            planner,
            Arc::clone(&events_arrived),
            Arc::clone(&actions_planned),
        )
        .await?
        .with_profile_api(profile_api);
        let mut delivery_stop = stop.clone();
        let delivery = async move {
            let deliverer = tokio::select! {
                deliverer = deliverer => deliverer,
                _ = delivery_stop.changed() => None,
            };
            if let Some(deliverer) = deliverer {
                executor::Executor::new(
                    store,
                    Arc::new(deliverer),
                    actions_planned,
                    settings,
                    alerts,
                )
                .run(delivery_stop)
                .await;
            }
        };
        let tasks = vec![tokio::spawn(engine.run(stop)), tokio::spawn(delivery)];
        Ok(Pipeline {
            shutdown,
            tasks,
            events_arrived,
        })
    }

    /// The bell ingest rings after a commit.
    pub fn events_arrived(&self) -> Arc<Notify> {
        Arc::clone(&self.events_arrived)
    }

    /// Stops taking new work and lets calls in flight finish and record their outcomes, until
    /// `deadline`. Whatever is still running then (a call waiting out a spent rate-limit
    /// window, say) is abandoned exactly as a crash would abandon it: its action stays pending
    /// (a call that must not repeat keeps its in-flight mark, checked at the next start), and
    /// nothing acknowledged is lost, because ingest committed it before answering.
    pub async fn stop(self, deadline: tokio::time::Instant) {
        let _ = self.shutdown.send(true);
        for task in self.tasks {
            let abort = task.abort_handle();
            if tokio::time::timeout_at(deadline, task).await.is_err() {
                abort.abort();
                tracing::warn!(
                    "delivery did not stop by the shutdown deadline: calls still waiting were abandoned as a crash would abandon them"
                );
            }
        }
    }
}
