//! Delivery: takes pending actions from the outbox in planning order, runs each user's actions
//! one after another (so a user's Intercom calls keep their events' order) and different users
//! side by side, and records every outcome.
//!
//! A user whose head action is waiting for a retry holds back only that user's later actions
//! (a barrier); the others go on.

use crate::deliver::{Deliverer, Failure};
use crate::engine::now_ms;
use junction_flow::action::{OnError, PlannedAction};
use junction_store::{ActionOutcome, ActionRecord, Store};
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{Notify, watch};
use tokio::task::JoinSet;

/// Pending actions read per look at the outbox.
const WINDOW: usize = 2_000;
/// Users delivered to at the same time (the Intercom client's own limits still apply).
const USERS_IN_PARALLEL: usize = 64;
/// Attempts before a momentary failure counts as permanent.
const MAX_ATTEMPTS: i64 = 12;
const IDLE_POLL: Duration = Duration::from_secs(1);

pub struct Executor {
    store: Arc<dyn Store>,
    deliverer: Arc<Deliverer>,
    actions_planned: Arc<Notify>,
}

impl Executor {
    pub fn new(
        store: Arc<dyn Store>,
        deliverer: Arc<Deliverer>,
        actions_planned: Arc<Notify>,
    ) -> Self {
        Executor {
            store,
            deliverer,
            actions_planned,
        }
    }

    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        let busy: Arc<Mutex<HashSet<String>>> = Arc::default();
        let mut tasks = JoinSet::new();
        loop {
            if *shutdown.borrow() {
                break;
            }
            let mut wait = IDLE_POLL;
            // Users busy now are skipped. The others have no task running, and every outcome
            // their last task recorded was committed before this snapshot, so the outbox read
            // below is up to date for them (a read before the snapshot could hand a finished
            // action to a new task: delivered twice).
            let busy_now: HashSet<String> = busy.lock().expect("busy set").clone();
            match self.store.pending_actions(WINDOW).await {
                Ok(pending) => {
                    let now = now_ms();
                    for (identity, actions) in by_identity(pending) {
                        if busy_now.contains(&identity) {
                            continue;
                        }
                        let head_due = actions[0].next_at_ms;
                        if head_due > now {
                            wait = wait.min(Duration::from_millis((head_due - now) as u64));
                            continue;
                        }
                        if tasks.len() >= USERS_IN_PARALLEL {
                            break;
                        }
                        busy.lock().expect("busy set").insert(identity.clone());
                        let (store, deliverer, busy) = (
                            Arc::clone(&self.store),
                            Arc::clone(&self.deliverer),
                            Arc::clone(&busy),
                        );
                        tasks.spawn(async move {
                            deliver_in_order(&*store, &deliverer, actions).await;
                            busy.lock().expect("busy set").remove(&identity);
                        });
                    }
                }
                Err(error) => tracing::error!(%error, "delivery: cannot read the outbox"),
            }
            tokio::select! {
                _ = self.actions_planned.notified() => {}
                Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
                _ = tokio::time::sleep(wait) => {}
                _ = shutdown.changed() => {}
            }
        }
        // Let the calls in flight finish and their outcomes be recorded.
        while tasks.join_next().await.is_some() {}
    }
}

/// Groups pending actions by identity, keeping planning order within each and ordering the
/// groups by their first action.
fn by_identity(pending: Vec<ActionRecord>) -> Vec<(String, Vec<ActionRecord>)> {
    let mut order: Vec<String> = Vec::new();
    let mut groups: HashMap<String, Vec<ActionRecord>> = HashMap::new();
    for action in pending {
        let group = groups.entry(action.identity.clone()).or_insert_with(|| {
            order.push(action.identity.clone());
            Vec::new()
        });
        group.push(action);
    }
    order
        .into_iter()
        .filter_map(|identity| groups.remove(&identity).map(|actions| (identity, actions)))
        .collect()
}

/// Runs one user's actions in order, stopping at the first that does not succeed (the rest
/// wait for it: per-user order).
async fn deliver_in_order(store: &dyn Store, deliverer: &Deliverer, actions: Vec<ActionRecord>) {
    for record in actions {
        if record.next_at_ms > now_ms() {
            break;
        }
        let outcome = deliver_one(deliverer, &record).await;
        let done = matches!(outcome, ActionOutcome::Done { .. });
        let stop = !done;
        if let Err(error) = store.action_outcomes(vec![outcome]).await {
            tracing::error!(%error, action = %record.id, "delivery: cannot record an outcome");
            break;
        }
        if stop {
            // A failure may have activated an error branch or skipped later actions: look at
            // the outbox again before going on with this user.
            break;
        }
    }
}

async fn deliver_one(deliverer: &Deliverer, record: &ActionRecord) -> ActionOutcome {
    let planned: PlannedAction = match serde_json::from_value(record.body.clone()) {
        Ok(planned) => planned,
        Err(error) => {
            return ActionOutcome::Failed {
                id: record.id.clone(),
                error: format!("unreadable action: {error}"),
                skip_rest_of_run: false,
            };
        }
    };
    let started = std::time::Instant::now();
    let result = deliverer.deliver(&planned).await;
    let kind = planned.action.kind();
    metrics::histogram!("junction_action_seconds", "kind" => kind)
        .record(started.elapsed().as_secs_f64());
    match result {
        Ok(summary) => {
            metrics::counter!("junction_actions_total", "kind" => kind, "outcome" => "done")
                .increment(1);
            tracing::debug!(action = %record.id, %summary, "delivered");
            ActionOutcome::Done {
                id: record.id.clone(),
                result: Some(summary),
            }
        }
        Err(Failure::Retry(error) | Failure::Credentials(error))
            if record.attempts + 1 < MAX_ATTEMPTS =>
        {
            metrics::counter!("junction_actions_total", "kind" => kind, "outcome" => "retry")
                .increment(1);
            let delay = backoff(record.attempts);
            tracing::info!(action = %record.id, %error, ?delay, "delivery will retry");
            ActionOutcome::Retry {
                id: record.id.clone(),
                next_at_ms: now_ms() + delay.as_millis() as i64,
                error,
            }
        }
        Err(
            Failure::Retry(error)
            | Failure::Credentials(error)
            | Failure::Gone(error)
            | Failure::Permanent(error),
        ) => {
            metrics::counter!("junction_actions_total", "kind" => kind, "outcome" => "failed")
                .increment(1);
            tracing::warn!(action = %record.id, %error, "action failed");
            ActionOutcome::Failed {
                id: record.id.clone(),
                error,
                skip_rest_of_run: planned.on_error == OnError::Stop,
            }
        }
    }
}

/// Exponential back-off with full jitter: up to 1 s, 2 s, 4 s, … capped at 5 minutes.
fn backoff(attempts: i64) -> Duration {
    let ceiling_ms = 1_000u64
        .saturating_mul(1 << attempts.clamp(0, 20))
        .min(300_000);
    Duration::from_millis(fastrand::u64(ceiling_ms / 2..=ceiling_ms))
}
