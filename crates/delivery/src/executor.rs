//! Delivery: takes each user's pending actions from the outbox in planning order, runs them one
//! after another (so a user's Intercom calls keep their events' order) and different users side
//! by side, and records every attempt and outcome.
//!
//! - **Barrier, not blockage.** A user whose head action waits for a retry holds back only that
//!   user's later actions; the outbox is read by users' heads, so the others go on however long
//!   the stuck user's queue is.
//! - **Lanes.** Among users whose heads are due, those with something urgent pending
//!   (messages, conversations, notes, owners, alerts) are served before users with only bulk
//!   syncs; within a user, order still holds.
//! - **Retries** with exponential back-off and full jitter, for as long as the retry window
//!   (default 4 hours, like Segment) and at least the minimum attempts; then the dead-letter
//!   queue. Permanent errors go there at once.
//! - **Credentials refused** pause delivery (no attempts burnt) and raise one alert; a probe
//!   every few seconds resumes it once Intercom accepts them again.
//! - **Coalescing.** Consecutive contact updates of one user that are all due go out as one
//!   request (in order; the last value of each attribute wins).
//! - **Effectively once.** Calls that must not be repeated (messages, conversations, notes) are
//!   marked in flight before they are made; a mark found at start-up means a crash may have
//!   come between the call and its record: it is delivered again and counted as a possible
//!   duplicate.

use crate::alerts::{AlertKind, Alerter};
use crate::deliver::{Deliverer, Failure, FailureClass};
use crate::engine::now_ms;
use junction_flow::action::{Action, OnError, PlannedAction};
use junction_intercom::recorder;
use junction_store::{ActionOutcome, ActionRecord, Attempt, Store};
use serde_json::Map;
use std::collections::{HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{Notify, watch};
use tokio::task::JoinSet;

/// How delivery retries, paces and keeps records.
#[derive(Debug, Clone)]
pub struct DeliverySettings {
    /// How long an action is retried (from its first attempt) before it is dead-lettered.
    pub retry_window: Duration,
    /// Attempts an action gets before it may be dead-lettered, however short the window.
    pub min_attempts: i64,
    /// Longest pause between two attempts.
    pub max_backoff: Duration,
    /// Users delivered to at the same time (the Intercom client's own limits still apply).
    pub users_in_parallel: usize,
    /// How often a paused delivery asks Intercom whether the credentials work again.
    pub probe_every: Duration,
    /// Finished actions, attempts and runs older than this are deleted (dead letters stay).
    pub retention: Duration,
    /// How often the error rate and the backlog's age are checked (metrics and alerts).
    pub health_every: Duration,
}

impl Default for DeliverySettings {
    fn default() -> Self {
        DeliverySettings {
            retry_window: Duration::from_secs(4 * 3600),
            min_attempts: 3,
            max_backoff: Duration::from_secs(300),
            users_in_parallel: 64,
            probe_every: Duration::from_secs(10),
            retention: Duration::from_secs(30 * 86_400),
            health_every: Duration::from_secs(15),
        }
    }
}

/// A user's actions read per turn.
const USER_BATCH: usize = 500;
const IDLE_POLL: Duration = Duration::from_secs(1);
const CLEANUP_EVERY: Duration = Duration::from_secs(3600);
/// The window the error rate is measured over.
const ERROR_WINDOW: Duration = Duration::from_secs(300);

pub struct Executor {
    store: Arc<dyn Store>,
    deliverer: Arc<Deliverer>,
    actions_planned: Arc<Notify>,
    settings: DeliverySettings,
    alerts: Alerter,
    paused: Arc<AtomicBool>,
    attempts: Arc<Mutex<VecDeque<(Instant, bool)>>>,
}

impl Executor {
    pub fn new(
        store: Arc<dyn Store>,
        deliverer: Arc<Deliverer>,
        actions_planned: Arc<Notify>,
        settings: DeliverySettings,
        alerts: Alerter,
    ) -> Self {
        Executor {
            store,
            deliverer,
            actions_planned,
            settings,
            alerts,
            paused: Arc::default(),
            attempts: Arc::default(),
        }
    }

    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        self.recover_uncertain().await;
        let busy: Arc<Mutex<HashSet<String>>> = Arc::default();
        let mut tasks = JoinSet::new();
        let mut next_health = Instant::now() + self.settings.health_every;
        let mut next_cleanup = Instant::now();
        let mut next_probe = Instant::now();
        loop {
            if *shutdown.borrow() {
                break;
            }
            let mut wait = IDLE_POLL;
            if self.paused.load(Ordering::SeqCst) {
                if Instant::now() >= next_probe {
                    next_probe = Instant::now() + self.settings.probe_every;
                    match self.deliverer.credentials_accepted().await {
                        Ok(()) => {
                            tracing::info!(
                                "Intercom accepts the credentials again: delivery resumes"
                            );
                            self.paused.store(false, Ordering::SeqCst);
                            continue;
                        }
                        Err(failure) => {
                            tracing::warn!(error = %failure.message, "delivery paused: credentials still refused")
                        }
                    }
                }
                wait = wait.min(next_probe.saturating_duration_since(Instant::now()));
            } else {
                // Users busy now are skipped. The others have no task running, and every
                // outcome their last task recorded was committed before this snapshot, so the
                // outbox read below is up to date for them (a read before the snapshot could
                // hand a finished action to a new task: delivered twice).
                let busy_now: HashSet<String> = busy.lock().expect("busy set").clone();
                let free = self.settings.users_in_parallel.saturating_sub(tasks.len());
                if free > 0 {
                    match self
                        .store
                        .ready_heads(now_ms(), free + busy_now.len())
                        .await
                    {
                        Ok(heads) => {
                            for head in heads {
                                if busy_now.contains(&head.identity)
                                    || tasks.len() >= self.settings.users_in_parallel
                                {
                                    continue;
                                }
                                busy.lock().expect("busy set").insert(head.identity.clone());
                                let worker = self.worker(shutdown.clone());
                                let busy = Arc::clone(&busy);
                                tasks.spawn(async move {
                                    worker.deliver_user(&head.identity).await;
                                    busy.lock().expect("busy set").remove(&head.identity);
                                });
                            }
                        }
                        Err(error) => tracing::error!(%error, "delivery: cannot read the outbox"),
                    }
                }
                if let Ok(Some(due)) = self.store.next_due_ms().await {
                    wait = wait.min(Duration::from_millis((due - now_ms()).max(0) as u64));
                }
            }
            if Instant::now() >= next_health {
                next_health = Instant::now() + self.settings.health_every;
                self.check_health().await;
            }
            if Instant::now() >= next_cleanup {
                next_cleanup = Instant::now() + CLEANUP_EVERY;
                let before = now_ms() - self.settings.retention.as_millis() as i64;
                match self.store.cleanup(before).await {
                    Ok(0) => {}
                    Ok(n) => {
                        tracing::info!(actions = n, "removed finished records past the retention")
                    }
                    Err(error) => tracing::error!(%error, "cleanup failed"),
                }
            }
            tokio::select! {
                _ = self.actions_planned.notified() => {}
                Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
                _ = tokio::time::sleep(wait.max(Duration::from_millis(5))) => {}
                _ = shutdown.changed() => {}
            }
        }
        // Let the calls in flight finish and their outcomes be recorded.
        while tasks.join_next().await.is_some() {}
    }

    fn worker(&self, stopping: watch::Receiver<bool>) -> Worker {
        Worker {
            stopping,
            store: Arc::clone(&self.store),
            deliverer: Arc::clone(&self.deliverer),
            settings: self.settings.clone(),
            alerts: self.alerts.clone(),
            paused: Arc::clone(&self.paused),
            attempts: Arc::clone(&self.attempts),
        }
    }

    /// Actions marked in flight when the process stopped: their call may have happened.
    /// Conversations are looked up in Intercom before they are started again (see
    /// `Deliverer::deliver`); messages and notes cannot be, so they are delivered again and
    /// counted as possible duplicates.
    async fn recover_uncertain(&self) {
        let uncertain = match self.store.take_uncertain().await {
            Ok(uncertain) => uncertain,
            Err(error) => {
                tracing::error!(%error, "cannot read actions in flight at the last stop");
                return;
            }
        };
        for record in uncertain {
            if record.body["action"]["kind"] == "conversation" {
                tracing::info!(action = %record.id, "a conversation was being started at the last stop; Intercom is asked before it is started again");
            } else {
                metrics::counter!("junction_possible_duplicates_total").increment(1);
                tracing::warn!(action = %record.id, "a call that must not be repeated may have happened before the last stop; delivering it again (counted as a possible duplicate)");
            }
        }
    }

    /// Error rate and backlog age: metrics, and alerts past the thresholds.
    async fn check_health(&self) {
        let (failing, total) = {
            let mut attempts = self.attempts.lock().expect("attempt window");
            let horizon = Instant::now() - ERROR_WINDOW;
            while attempts.front().is_some_and(|(at, _)| *at < horizon) {
                attempts.pop_front();
            }
            (
                attempts.iter().filter(|(_, failed)| *failed).count(),
                attempts.len(),
            )
        };
        let rate = if total == 0 {
            0.0
        } else {
            failing as f64 / total as f64
        };
        metrics::gauge!("junction_delivery_error_rate").set(rate);
        let threshold = self.alerts_threshold();
        if total >= 20 && rate >= threshold {
            self.alerts.raise(
                AlertKind::ErrorRate,
                format!(
                    "{failing} of {total} attempts failed in the last 5 minutes ({:.0}%)",
                    rate * 100.0
                ),
            );
        }
        if let Ok(counts) = self.store.outbox_counts().await {
            for (lane, age) in ["urgent", "bulk"].iter().zip(counts.oldest_pending_ms) {
                let seconds = age.unwrap_or(0) as f64 / 1000.0;
                metrics::gauge!("junction_queue_age_seconds", "lane" => *lane).set(seconds);
                if let Some(age) = age
                    && Duration::from_millis(age as u64) >= self.backlog_threshold()
                {
                    self.alerts.raise(
                        AlertKind::Backlog,
                        format!("the oldest {lane} action has waited {:.0} s", seconds),
                    );
                }
            }
            metrics::gauge!("junction_actions_pending").set(counts.pending as f64);
            metrics::gauge!("junction_dead_letters").set(counts.failed as f64);
        }
    }

    fn alerts_threshold(&self) -> f64 {
        self.alerts.settings().error_rate
    }

    fn backlog_threshold(&self) -> Duration {
        self.alerts.settings().backlog_age
    }
}

/// What a user's delivery task needs.
struct Worker {
    /// Turns true at shutdown: the worker finishes the action in hand and takes no other.
    stopping: watch::Receiver<bool>,
    store: Arc<dyn Store>,
    deliverer: Arc<Deliverer>,
    settings: DeliverySettings,
    alerts: Alerter,
    paused: Arc<AtomicBool>,
    attempts: Arc<Mutex<VecDeque<(Instant, bool)>>>,
}

impl Worker {
    /// Runs one user's due actions in order, stopping at the first that does not succeed (the
    /// rest wait for it: per-user order) or when delivery pauses.
    async fn deliver_user(&self, identity: &str) {
        let actions = match self.store.pending_of(identity, USER_BATCH).await {
            Ok(actions) => actions,
            Err(error) => {
                tracing::error!(%error, identity, "delivery: cannot read a user's actions");
                return;
            }
        };
        let mut index = 0;
        while index < actions.len() {
            if actions[index].next_at_ms > now_ms()
                || self.paused.load(Ordering::SeqCst)
                || *self.stopping.borrow()
            {
                break;
            }
            let (planned, merged) = match coalesce(&actions[index..]) {
                Ok(found) => found,
                Err(error) => {
                    let outcome = ActionOutcome::Failed {
                        id: actions[index].id.clone(),
                        error: format!("unreadable action: {error}"),
                        code: "unreadable".into(),
                        attempt: attempt(1, now_ms(), 0, "failed", Some("unreadable".into()), &[]),
                        skip_rest_of_run: false,
                    };
                    let _ = self.store.action_outcomes(vec![outcome]).await;
                    break;
                }
            };
            let record = &actions[index];
            index += 1 + merged.len();
            if !merged.is_empty() {
                metrics::counter!("junction_coalesced_updates_total")
                    .increment(merged.len() as u64);
            }
            if planned.action.creates_something()
                && let Err(error) = self.store.mark_started(&record.id).await
            {
                tracing::error!(%error, action = %record.id, "delivery: cannot mark an action in flight");
                break;
            }
            let outcome = self.deliver_one(record, &planned, merged).await;
            let done = matches!(outcome, ActionOutcome::Done { .. });
            if let Err(error) = self.store.action_outcomes(vec![outcome]).await {
                tracing::error!(%error, action = %record.id, "delivery: cannot record an outcome");
                break;
            }
            if !done {
                // A failure may have activated an error branch or skipped later actions: look
                // at the outbox again before going on with this user.
                break;
            }
        }
    }

    async fn deliver_one(
        &self,
        record: &ActionRecord,
        planned: &PlannedAction,
        merged: Vec<String>,
    ) -> ActionOutcome {
        let started_at = now_ms();
        let started = Instant::now();
        // A message or note whose last attempt lost its connection may have been sent anyway:
        // sending it again may duplicate it, and Intercom offers no way to check.
        if planned.action.creates_something()
            && !matches!(planned.action, Action::Conversation { .. })
            && record.error_code.as_deref() == Some("transport")
        {
            metrics::counter!("junction_possible_duplicates_total").increment(1);
        }
        let (result, calls) = recorder::record(
            self.deliverer
                .deliver(planned, record.first_attempt_ms.or(record.started_ms)),
        )
        .await;
        let duration_ms = started.elapsed().as_millis() as i64;
        let kind = planned.action.kind();
        let number = record.attempts + 1;
        let this_attempt = |outcome: &str, error: Option<String>| {
            attempt(number, started_at, duration_ms, outcome, error, &calls)
        };
        metrics::histogram!("junction_action_seconds", "kind" => kind)
            .record(started.elapsed().as_secs_f64());
        metrics::counter!("junction_api_calls_total").increment(calls.len() as u64);
        self.attempts
            .lock()
            .expect("attempt window")
            .push_back((Instant::now(), result.is_err()));
        let id = record.id.clone();
        let outcome = match result {
            Ok(summary) => {
                tracing::debug!(action = %id, %summary, "delivered");
                ActionOutcome::Done {
                    id,
                    result: Some(summary),
                    attempt: this_attempt("done", None),
                    merged,
                }
            }
            Err(Failure {
                class: FailureClass::Credentials,
                code,
                message,
            }) => {
                if !self.paused.swap(true, Ordering::SeqCst) {
                    tracing::error!(error = %message, "Intercom refused the credentials: delivery pauses");
                    self.alerts.raise(AlertKind::Credentials, message.clone());
                }
                ActionOutcome::Retry {
                    id,
                    next_at_ms: now_ms() + self.settings.probe_every.as_millis() as i64,
                    error: message.clone(),
                    code,
                    attempt: this_attempt("paused", Some(message)),
                    counts: false,
                }
            }
            Err(Failure {
                class: FailureClass::Retry,
                code,
                message,
            }) => {
                let first = record.first_attempt_ms.unwrap_or(started_at);
                let window_over = now_ms() - first >= self.settings.retry_window.as_millis() as i64;
                if window_over && number >= self.settings.min_attempts {
                    let error = format!(
                        "gave up after {number} attempts over {}: {message}",
                        human(now_ms() - first)
                    );
                    self.dead_letter(&id, &error);
                    ActionOutcome::Failed {
                        id,
                        error: error.clone(),
                        code,
                        attempt: this_attempt("failed", Some(message)),
                        skip_rest_of_run: planned.on_error == OnError::Stop,
                    }
                } else {
                    let delay = backoff(record.attempts, self.settings.max_backoff);
                    tracing::info!(action = %id, error = %message, ?delay, "delivery will retry");
                    ActionOutcome::Retry {
                        id,
                        next_at_ms: now_ms() + delay.as_millis() as i64,
                        error: message.clone(),
                        code,
                        attempt: this_attempt("retry", Some(message)),
                        counts: true,
                    }
                }
            }
            Err(Failure {
                class: FailureClass::Gone | FailureClass::Permanent,
                code,
                message,
            }) => {
                self.dead_letter(&id, &message);
                ActionOutcome::Failed {
                    id,
                    error: message.clone(),
                    code,
                    attempt: this_attempt("failed", Some(message)),
                    skip_rest_of_run: planned.on_error == OnError::Stop,
                }
            }
        };
        let label = match &outcome {
            ActionOutcome::Done { .. } => "done",
            ActionOutcome::Retry { counts: false, .. } => "paused",
            ActionOutcome::Retry { .. } => "retry",
            ActionOutcome::Failed { .. } => "failed",
        };
        metrics::counter!("junction_actions_total", "kind" => kind, "outcome" => label)
            .increment(1);
        outcome
    }

    fn dead_letter(&self, id: &str, error: &str) {
        tracing::warn!(action = %id, %error, "action failed for good: dead-lettered");
        self.alerts
            .raise(AlertKind::DeadLetter, format!("{id}: {error}"));
    }
}

/// The action to deliver for the head of `actions`: the head itself, or — when it is a contact
/// update followed by more of them — one update carrying them all (later values win), with the
/// ids of the ones folded in.
fn coalesce(actions: &[ActionRecord]) -> Result<(PlannedAction, Vec<String>), serde_json::Error> {
    let mut planned: PlannedAction = serde_json::from_value(actions[0].body.clone())?;
    let mut merged = Vec::new();
    let now = now_ms();
    if let Action::Contact { traits, fields } = &mut planned.action {
        for next in &actions[1..] {
            if next.next_at_ms > now {
                break;
            }
            let Ok(later) = serde_json::from_value::<PlannedAction>(next.body.clone()) else {
                break;
            };
            let Action::Contact {
                traits: more_traits,
                fields: more_fields,
            } = later.action
            else {
                break;
            };
            if later.standby_for.is_some() {
                break;
            }
            merge(traits, more_traits);
            merge(fields, more_fields);
            // The latest ids (an email learned later, say) address the contact.
            planned.who = later.who;
            merged.push(next.id.clone());
        }
    }
    Ok((planned, merged))
}

fn merge(into: &mut Map<String, serde_json::Value>, from: Map<String, serde_json::Value>) {
    for (key, value) in from {
        into.insert(key, value);
    }
}

fn attempt(
    number: i64,
    at_ms: i64,
    duration_ms: i64,
    outcome: &str,
    error: Option<String>,
    calls: &[recorder::CallRecord],
) -> Attempt {
    Attempt {
        number,
        at_ms,
        duration_ms,
        outcome: outcome.into(),
        error,
        calls: serde_json::to_value(calls).unwrap_or_default(),
    }
}

/// Exponential back-off with full jitter: a random pause up to 1 s, 2 s, 4 s, … capped.
fn backoff(attempts: i64, max: Duration) -> Duration {
    let ceiling_ms = 1_000u64
        .saturating_mul(1 << attempts.clamp(0, 20))
        .min(max.as_millis() as u64)
        .max(1);
    Duration::from_millis(fastrand::u64(0..=ceiling_ms))
}

fn human(ms: i64) -> String {
    let seconds = ms / 1000;
    match seconds {
        s if s < 120 => format!("{s} s"),
        s if s < 7200 => format!("{} min", s / 60),
        s => format!("{:.1} h", s as f64 / 3600.0),
    }
}
