//! Junction's moving parts after ingest: [`planning::Planning`] keeps this node's share of the
//! planning partitions, each planned by an [`engine::Engine`] into the outbox; the
//! [`executor::Executor`] delivers the outbox to Intercom (and to alert webhooks) through
//! [`deliver::Deliverer`].
//!
//! [`Pipeline::start`] wires both to a store and runs them until shutdown.

mod actions;
pub mod alerts;
pub mod deliver;
pub mod engine;
pub mod executor;
pub mod inspect;
pub mod live;
pub mod planning;
pub mod profiles;
pub mod replay;
pub mod segment;
mod shared;
pub mod supervise;
pub mod tap;

use junction_store::Store;
use std::sync::Arc;
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;

pub use alerts::{AlertSettings, Alerter, Sink, SinkFormat};
pub use deliver::{Deletion, Deliverer, Failure, FailureClass, IntercomTarget, Shadow};
pub use executor::DeliverySettings;
pub use live::LivePlanner;
pub use segment::{SegmentClient, SegmentSettings};
pub use tap::{Tap, TapEntry, TapFilter};

/// Where the pipeline reports on itself: alerts, and the health of its supervised parts.
pub struct Oversight {
    pub alerts: Alerter,
    pub health: Arc<supervise::Health>,
}

/// Tells the other nodes this one is alive, every third of a lease, until `stop`.
async fn heartbeat(
    store: Arc<dyn Store>,
    node: String,
    lease: std::time::Duration,
    mut stop: watch::Receiver<bool>,
) {
    let started = engine::now_ms();
    loop {
        // Gone after two leases without news (it beats every third of one).
        let now = engine::now_ms();
        let expires = now + 2 * lease.as_millis() as i64;
        if let Err(error) = store.heartbeat(&node, started, now, expires).await {
            tracing::warn!(%error, "cannot record this node's heartbeat");
        }
        tokio::select! {
            _ = tokio::time::sleep(lease / 3) => {}
            _ = stop.changed() => {}
        }
        if *stop.borrow() {
            // Stopping: the others see this node gone at once.
            let now = engine::now_ms();
            if let Err(error) = store.heartbeat(&node, started, now, now).await {
                tracing::warn!(%error, "cannot record that this node stops");
            }
            return;
        }
    }
}

/// The running engine and executor.
pub struct Pipeline {
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    events_arrived: Arc<Notify>,
}

impl Pipeline {
    /// Starts planning at once, and delivery once `deliverer` resolves to somewhere to deliver
    /// to (it may wait for Intercom to accept the credentials; without a deliverer, actions wait
    /// in the outbox). `events_arrived` is rung by ingest after each commit. The workflows are
    /// `planner`'s at the start of each batch (a reload replaces them).
    pub fn start(
        store: Arc<dyn Store>,
        planner: Arc<LivePlanner>,
        deliverer: impl Future<Output = Option<Deliverer>> + Send + 'static,
        events_arrived: Arc<Notify>,
        settings: DeliverySettings,
        profile_api: Option<profiles::ProfileApiClient>,
        oversight: Oversight,
    ) -> Pipeline {
        let Oversight { alerts, health } = oversight;
        let (settings_node, settings_lease) = (settings.node.clone(), settings.lease);
        let heartbeat_store = Arc::clone(&store);
        let actions_planned = Arc::new(Notify::new());
        let heartbeat_bell = Arc::clone(&actions_planned);
        let (shutdown, stop) = watch::channel(false);
        let profile_api = profile_api.map(Arc::new);
        // Each part runs under a supervisor: a panic or an unexpected end is reported (health,
        // metric, alert) and the part is started again, while ingest keeps committing.
        let engine = supervise::supervise(
            "engine",
            Arc::clone(&health),
            alerts.clone(),
            stop.clone(),
            {
                let (store, planner) = (Arc::clone(&store), Arc::clone(&planner));
                let (events_arrived, actions_planned) =
                    (Arc::clone(&events_arrived), Arc::clone(&actions_planned));
                let (stop, alerts) = (stop.clone(), alerts.clone());
                let (node, lease) = (settings.node.clone(), settings.lease);
                let clock = Arc::clone(&settings.clock);
                let tap = settings.tap.clone();
                move || {
                    // This node plans its share of the partitions (see planning.rs).
                    let planning = planning::Planning {
                        store: Arc::clone(&store),
                        planner: Arc::clone(&planner),
                        events_arrived: Arc::clone(&events_arrived),
                        actions_planned: Arc::clone(&actions_planned),
                        profile_api: profile_api.clone(),
                        alerts: alerts.clone(),
                        node: node.clone(),
                        lease,
                        clock: Arc::clone(&clock),
                        tap: tap.clone(),
                    };
                    let stop = stop.clone();
                    async move { Ok(planning.run(stop)) }
                }
            },
        );
        let mut delivery_stop = stop.clone();
        let delivery_health = Arc::clone(&health);
        let delivery = async move {
            let deliverer = tokio::select! {
                deliverer = deliverer => deliverer,
                _ = delivery_stop.changed() => None,
            };
            let Some(deliverer) = deliverer else { return };
            let deliverer = Arc::new(deliverer);
            supervise::supervise(
                "delivery",
                delivery_health,
                alerts.clone(),
                delivery_stop.clone(),
                || {
                    let executor = executor::Executor::new(
                        Arc::clone(&store),
                        Arc::clone(&deliverer),
                        Arc::clone(&actions_planned),
                        settings.clone(),
                        alerts.clone(),
                    );
                    let stop = delivery_stop.clone();
                    async move {
                        Ok(async move {
                            executor.run(stop).await;
                            Ok(())
                        })
                    }
                },
            )
            .await;
        };
        let heartbeat = {
            let (events_arrived, actions_planned) = (Arc::clone(&events_arrived), heartbeat_bell);
            async move {
                // Other nodes' ingest and planning ring this node's bells too.
                if let Err(error) = heartbeat_store
                    .ring_on_changes(events_arrived, actions_planned)
                    .await
                {
                    tracing::warn!(%error, "cannot listen for other nodes' work; polling instead");
                }
                heartbeat(heartbeat_store, settings_node, settings_lease, stop.clone()).await
            }
        };
        let tasks = vec![
            tokio::spawn(engine),
            tokio::spawn(delivery),
            tokio::spawn(heartbeat),
        ];
        Pipeline {
            shutdown,
            tasks,
            events_arrived,
        }
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
