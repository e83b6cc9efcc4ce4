//! Which node plans which partition. Planning is split into partitions by identity (see
//! `junction_store::partition_of`); each partition is planned by one engine at a time, on
//! whichever node holds its lease (`planner/N` in the store's `leases`).
//!
//! Every node runs one [`Planning`] keeper. Each turn (a third of a lease, at most two
//! seconds) it counts the nodes alive (heartbeats) and aims at its fair share,
//! ⌈partitions ÷ nodes⌉: above it, it stops engines (they give their leases up); below it, it
//! takes free or lapsed leases and starts an engine for each. So partitions spread out when a
//! node joins, and a dead node's partitions are taken over once its leases lapse. An engine
//! whose lease was taken over stops by itself (its commits would be refused anyway).

use crate::alerts::Alerter;
use crate::engine::{Engine, now_ms, partition_lease};
use crate::profiles::ProfileApiClient;
use junction_store::Store;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Notify, watch};
use tokio::task::JoinSet;

/// What the keeper needs to start engines.
pub struct Planning {
    pub store: Arc<dyn Store>,
    pub planner: Arc<crate::LivePlanner>,
    /// Rung by ingest (this node's, and others' through the store) after a commit.
    pub events_arrived: Arc<Notify>,
    pub actions_planned: Arc<Notify>,
    pub profile_api: Option<Arc<ProfileApiClient>>,
    pub alerts: Alerter,
    /// This node's name and the lease length.
    pub node: String,
    pub lease: Duration,
    /// The clock timers fall due by.
    pub clock: Arc<dyn junction_store::Clock>,
    /// This node's live tail.
    pub tap: crate::Tap,
}

/// Stops every engine (each gives its lease up) and waits for them.
async fn stop_all(
    engines: &mut JoinSet<Result<(), String>>,
    running: &HashMap<tokio::task::Id, Running>,
) {
    for engine in running.values() {
        let _ = engine.stop.send(true);
    }
    while engines.join_next().await.is_some() {}
}

/// Why a turn of the keeper failed.
enum Trouble {
    /// The store did not answer: the next turn tries again.
    Store(String),
    /// An engine cannot start or stopped on unreadable state: the keeper stops, and its
    /// supervisor reports it.
    Engine(String),
}

/// An engine this node runs, and how to stop it.
struct Running {
    partition: u32,
    stop: watch::Sender<bool>,
}

impl Planning {
    /// Keeps this node's share of the partitions planned until `stop` turns true; then stops
    /// every engine (each gives its lease up). Fails when an engine cannot start or dies.
    pub async fn run(self, mut stop: watch::Receiver<bool>) -> Result<(), String> {
        // Known at the first turn; read again every turn, as it may change between runs of
        // the nodes (`junction migrate --partitions`, or a new store split by another node).
        let mut partitions = 0;
        // Every engine watches this bell; the keeper rings it for each ingest notification.
        let (bell, _) = watch::channel(0u64);
        let mut engines: JoinSet<Result<(), String>> = JoinSet::new();
        let mut running: HashMap<tokio::task::Id, Running> = HashMap::new();
        let tick = (self.lease / 3).min(Duration::from_secs(2));
        let mut next_turn = tokio::time::Instant::now();
        loop {
            if *stop.borrow() {
                break;
            }
            if tokio::time::Instant::now() >= next_turn {
                next_turn = tokio::time::Instant::now() + tick;
                match self.store.partitions().await {
                    Ok(now) if now == partitions => {}
                    Ok(now) => {
                        if partitions > 0 {
                            tracing::warn!(
                                from = partitions,
                                to = now,
                                "planning partitions changed: this node's engines start over"
                            );
                        } else {
                            tracing::info!(node = %self.node, partitions = now, "planning keeper started");
                        }
                        stop_all(&mut engines, &running).await;
                        running.clear();
                        partitions = now;
                    }
                    Err(error) => {
                        tracing::error!(%error, "planning: cannot read the partitions; trying again");
                        continue;
                    }
                }
                // Nodes start their search for free partitions at different places, so that
                // nodes starting together do not all contend for partition 0 first.
                let offset = junction_store::partition_of(&self.node, partitions);
                match self
                    .balance(partitions, offset, &bell, &mut engines, &mut running)
                    .await
                {
                    Ok(()) => {}
                    Err(Trouble::Store(error)) => {
                        tracing::error!(%error, "planning: cannot balance partitions; trying again");
                    }
                    Err(Trouble::Engine(error)) => return Err(error),
                }
            }
            tokio::select! {
                _ = self.events_arrived.notified() => bell.send_modify(|n| *n += 1),
                Some(ended) = engines.join_next_with_id() => {
                    let (id, outcome) = match ended {
                        Ok((id, outcome)) => (id, outcome),
                        Err(error) => (error.id(), Err(format!("died: {error}"))),
                    };
                    let partition = running.remove(&id).map_or(0, |r| r.partition);
                    // Lost its lease or was asked to stop (Ok): the next turn decides again.
                    // Otherwise the supervisor reports it and starts planning over.
                    outcome.map_err(|error| format!("partition {partition}: {error}"))?;
                }
                _ = tokio::time::sleep_until(next_turn) => {}
                _ = stop.changed() => {}
            }
        }
        stop_all(&mut engines, &running).await;
        Ok(())
    }

    /// One turn: stops engines above this node's fair share, or starts engines for free
    /// partitions up to it.
    async fn balance(
        &self,
        partitions: u32,
        offset: u32,
        bell: &watch::Sender<u64>,
        engines: &mut JoinSet<Result<(), String>>,
        running: &mut HashMap<tokio::task::Id, Running>,
    ) -> Result<(), Trouble> {
        let now = now_ms();
        let view = (self.store.cluster().await).map_err(|e| Trouble::Store(e.to_string()))?;
        let mut alive: HashSet<&str> = (view.nodes.iter())
            .filter(|n| n.expires_ms > now)
            .map(|n| n.name.as_str())
            .collect();
        alive.insert(&self.node);
        let share = partitions.div_ceil(alive.len() as u32) as usize;
        let mut planning: Vec<(tokio::task::Id, u32)> = (running.iter())
            .filter(|(_, r)| !*r.stop.borrow())
            .map(|(id, r)| (*id, r.partition))
            .collect();
        if planning.len() > share {
            // Give the highest-numbered partitions up; their engines release the leases.
            planning.sort_by_key(|(_, p)| std::cmp::Reverse(*p));
            for (id, partition) in planning.iter().take(planning.len() - share) {
                tracing::info!(
                    partition,
                    "planning: handing this partition over to another node"
                );
                let _ = running[id].stop.send(true);
            }
            return Ok(());
        }
        let held: HashSet<u32> = running.values().map(|r| r.partition).collect();
        let mut wanted = share - planning.len();
        for step in 0..partitions {
            if wanted == 0 {
                break;
            }
            let partition = (offset + step) % partitions;
            if held.contains(&partition) {
                continue;
            }
            let lease_ms = self.lease.as_millis() as i64;
            let name = partition_lease(partition);
            let lease = match self
                .store
                .acquire_lease(&name, &self.node, now, lease_ms)
                .await
            {
                Ok(Some(lease)) => lease,
                Ok(None) => continue,
                Err(error) => return Err(Trouble::Store(error.to_string())),
            };
            let engine = Engine::new(
                Arc::clone(&self.store),
                self.planner.current(),
                partition,
                bell.subscribe(),
                Arc::clone(&self.actions_planned),
            )
            .await
            .map_err(|e| Trouble::Engine(format!("partition {partition}: cannot start: {e}")))?
            .with_profile_api(self.profile_api.clone())
            .with_alerts(self.alerts.clone())
            .with_lease(lease.clone(), self.lease)
            .with_clock(Arc::clone(&self.clock))
            .with_live_planner(Arc::clone(&self.planner))
            .with_tap(self.tap.clone());
            tracing::info!(
                partition,
                token = lease.token,
                "planning: this node plans this partition"
            );
            let (stop, stopped) = watch::channel(false);
            let id = engines.spawn(engine.run(stopped)).id();
            running.insert(id, Running { partition, stop });
            wanted -= 1;
        }
        Ok(())
    }
}
