//! Delivery: takes each user's pending actions from the outbox in planning order, runs them one
//! after another (so a user's Intercom calls keep their events' order) and different users side
//! by side, and records every attempt and outcome.
//!
//! - **Barrier, not blockage.** A user whose head action waits for a retry holds back only that
//!   user's later actions; the outbox is read by users' heads, so the others go on however long
//!   the stuck user's queue is.
//! - **Lanes.** Among users whose heads are due, those with something urgent pending
//!   (messages, conversations, notes, owners, alerts) are served before users with only bulk
//!   syncs, and those before users with only a backfill's actions; within a user, order still
//!   holds. A backfill takes at most three quarters of the workers (the others stay free for
//!   live users, whatever a backfill waits for) and, at the rate gate, four fifths of each
//!   Intercom window: live traffic keeps its latency while a backfill runs at the limit.
//! - **Retries** with exponential back-off and full jitter, for as long as the retry window
//!   (default 4 hours, like Segment) and at least the minimum attempts; then the dead-letter
//!   queue. Permanent errors go there at once.
//! - **Credentials refused** pause delivery (no attempts burnt) and raise one alert; a probe
//!   every few seconds resumes it once Intercom accepts them again.
//! - **Coalescing.** Consecutive contact updates of one user that are all due go out as one
//!   request (in order; the last value of each attribute wins).
//! - **One node per user.** Delivery claims users in the store ([`Store::claim_users`]) for a
//!   lease it renews while it works; no other node delivers to a claimed user. A node that
//!   loses a claim (it stalled past the lease and another node took over) stops before its next
//!   call, and its late records are refused by the store (fencing tokens).
//! - **Effectively once.** Calls that must not be repeated (messages, conversations, notes) are
//!   marked in flight, under a live claim, before they are made; a mark found on a user's head
//!   when it is claimed means the last holder stopped between the call and its record: it is
//!   delivered again and counted as a possible duplicate (conversations are looked up first).

use crate::alerts::{AlertKind, Alerter};
use crate::deliver::{Deliverer, Failure, FailureClass};
use junction_flow::action::{Action, OnError, PlannedAction};
use junction_intercom::recorder;
use junction_store::{
    ActionOutcome, ActionRecord, Attempt, Claim, Clock, Store, StoreError, SystemClock, lane,
};
use serde_json::Map;
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
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
    /// This node's name in delivery claims (unique among the nodes sharing a store).
    pub node: String,
    /// How long a claim on a user lasts unless renewed: how soon another node takes over the
    /// users of a node that died. Renewed every third of it.
    pub lease: Duration,
    /// The clock timers and retries fall due by: the system's, or a test's own to move time
    /// (leases and claims between nodes always go by the system clock).
    pub clock: Arc<dyn Clock>,
    /// Where this node's planned actions and calls are shown as they happen (`junction tap`).
    pub tap: crate::Tap,
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
            node: default_node_name(0),
            lease: Duration::from_secs(30),
            clock: Arc::new(SystemClock),
            tap: crate::Tap::default(),
        }
    }
}

/// `HOSTNAME:PORT` (the port Junction listens on): unique among running nodes on hosts with
/// distinct names, and the same across a node's restarts, so a restarted node takes its own
/// claims and lease back at once instead of waiting for them to lapse.
pub fn default_node_name(port: u16) -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "junction".into());
    format!("{host}:{port}")
}

/// The claims this node holds, by user: renewed by the executor, read by workers before each
/// call (a claim gone from here was lost to another node).
type HeldClaims = Arc<Mutex<HashMap<String, Claim>>>;

/// A user's actions read per turn.
const USER_BATCH: usize = 500;
/// How often a call in progress checks that its claim still holds.
const CLAIM_CHECK: Duration = Duration::from_millis(250);
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
    /// Workers delivering to users with only a backfill's actions pending.
    delivering_backfill: Arc<AtomicUsize>,
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
            delivering_backfill: Arc::default(),
        }
    }

    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        match self.store.release_claims_of(&self.settings.node).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(
                users = n,
                "gave up the claims this node held before it restarted"
            ),
            Err(error) => {
                tracing::warn!(%error, "cannot give up this node's earlier claims; they lapse by themselves")
            }
        }
        let held: HeldClaims = Arc::default();
        let mut tasks = JoinSet::new();
        let mut next_health = Instant::now() + self.settings.health_every;
        let mut next_cleanup = Instant::now();
        let mut next_probe = Instant::now();
        let mut next_renewal = Instant::now() + self.settings.lease / 3;
        let lease_ms = self.settings.lease.as_millis() as i64;
        loop {
            if *shutdown.borrow() {
                break;
            }
            let mut wait = IDLE_POLL;
            if Instant::now() >= next_renewal {
                next_renewal = Instant::now() + self.settings.lease / 3;
                self.renew(&held, lease_ms).await;
            }
            wait = wait.min(next_renewal.saturating_duration_since(Instant::now()));
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
                // A claim is granted only on a user no live claim holds, and a worker records
                // its last outcome before it releases its claim: the outbox a new worker reads
                // is up to date for its user.
                let free = self.settings.users_in_parallel.saturating_sub(tasks.len());
                match self.claim(free, lease_ms).await {
                    Ok(claims) => {
                        for claim in claims {
                            held.lock()
                                .expect("held claims")
                                .insert(claim.identity.clone(), claim.clone());
                            let worker = self.worker(shutdown.clone(), Arc::clone(&held));
                            tasks.spawn(async move {
                                worker.deliver_user(&claim).await;
                                worker.release(&claim).await;
                            });
                        }
                    }
                    Err(error) => tracing::error!(%error, "delivery: cannot claim users"),
                }
                if let Ok(Some(due)) = self.store.next_due_ms().await {
                    wait = wait.min(Duration::from_millis(
                        (due - self.settings.clock.now_ms()).max(0) as u64,
                    ));
                }
            }
            if Instant::now() >= next_health {
                next_health = Instant::now() + self.settings.health_every;
                self.check_health().await;
            }
            if Instant::now() >= next_cleanup {
                next_cleanup = Instant::now() + CLEANUP_EVERY;
                let before =
                    self.settings.clock.now_ms() - self.settings.retention.as_millis() as i64;
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

    /// Claims users for `free` workers, backfill users only for the workers a backfill may
    /// take ([`Self::backfill_workers`], less those delivering a backfill now): one query in
    /// the common case, two when the backfill's room is the smaller.
    async fn claim(&self, free: usize, lease_ms: i64) -> Result<Vec<Claim>, StoreError> {
        if free == 0 {
            return Ok(Vec::new());
        }
        let (node, now_ms) = (&self.settings.node, self.settings.clock.now_ms());
        let backfill_room = self
            .backfill_workers()
            .saturating_sub(self.delivering_backfill.load(Ordering::SeqCst));
        if backfill_room >= free {
            return self.store.claim_users(node, now_ms, lease_ms, free).await;
        }
        let mut claims = self
            .store
            .claim_users_in(node, now_ms, lease_ms, free, lane::URGENT..=lane::BULK)
            .await?;
        let room = backfill_room.min(free - claims.len());
        if room > 0 {
            claims.extend(
                self.store
                    .claim_users_in(
                        node,
                        now_ms,
                        lease_ms,
                        room,
                        lane::BACKFILL..=lane::BACKFILL,
                    )
                    .await?,
            );
        }
        Ok(claims)
    }

    /// Workers a backfill may take: three quarters, so that live users always find some free.
    fn backfill_workers(&self) -> usize {
        let workers = self.settings.users_in_parallel;
        workers.saturating_sub((workers / 4).max(1)).max(1)
    }

    /// Renews every claim held; a claim the store no longer grants was taken over: it leaves
    /// `held`, and its worker stops before its next call.
    async fn renew(&self, held: &HeldClaims, lease_ms: i64) {
        let claims: Vec<Claim> = held
            .lock()
            .expect("held claims")
            .values()
            .cloned()
            .collect();
        if claims.is_empty() {
            return;
        }
        match self
            .store
            .renew_claims(claims.clone(), self.settings.clock.now_ms(), lease_ms)
            .await
        {
            Ok(renewed) => {
                let mut held = held.lock().expect("held claims");
                for claim in &claims {
                    let kept = renewed.iter().find(|c| c.identity == claim.identity);
                    match kept {
                        Some(kept) => {
                            if let Some(entry) = held.get_mut(&claim.identity)
                                && entry.token == kept.token
                            {
                                entry.expires_ms = kept.expires_ms;
                            }
                        }
                        None => {
                            if held
                                .get(&claim.identity)
                                .is_some_and(|c| c.token == claim.token)
                            {
                                held.remove(&claim.identity);
                            }
                            metrics::counter!("junction_claims_lost_total").increment(1);
                            tracing::warn!(identity = %claim.identity, "another node took this user over; delivery to them stops here");
                        }
                    }
                }
            }
            // Without a renewal the claims run out; workers stop when they see that.
            Err(error) => tracing::error!(%error, "delivery: cannot renew claims"),
        }
    }

    fn worker(&self, stopping: watch::Receiver<bool>, held: HeldClaims) -> Worker {
        Worker {
            stopping,
            held,
            store: Arc::clone(&self.store),
            deliverer: Arc::clone(&self.deliverer),
            settings: self.settings.clone(),
            alerts: self.alerts.clone(),
            paused: Arc::clone(&self.paused),
            attempts: Arc::clone(&self.attempts),
            delivering_backfill: Arc::clone(&self.delivering_backfill),
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
        if let Ok(counts) = self.store.backlog().await {
            for (lane, age) in lane::NAMES.iter().zip(counts.oldest_pending_ms) {
                let seconds = age.unwrap_or(0) as f64 / 1000.0;
                metrics::gauge!("junction_queue_age_seconds", "lane" => *lane).set(seconds);
                // A backfill waits for Intercom's budget by design: its age is no alarm.
                if let Some(age) = age
                    && *lane != lane::NAMES[lane::BACKFILL as usize]
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
    /// The node's live claims: this worker's user must still be in it before each call.
    held: HeldClaims,
    store: Arc<dyn Store>,
    deliverer: Arc<Deliverer>,
    settings: DeliverySettings,
    alerts: Alerter,
    paused: Arc<AtomicBool>,
    attempts: Arc<Mutex<VecDeque<(Instant, bool)>>>,
    delivering_backfill: Arc<AtomicUsize>,
}

/// Counts a worker among those delivering a backfill while it lives.
struct BackfillWorker(Arc<AtomicUsize>);

impl BackfillWorker {
    fn new(count: &Arc<AtomicUsize>) -> Self {
        count.fetch_add(1, Ordering::SeqCst);
        BackfillWorker(Arc::clone(count))
    }
}

impl Drop for BackfillWorker {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Worker {
    /// Whether this worker's claim is still this node's and lasts more than `margin_ms`.
    fn holds_for(&self, claim: &Claim, margin_ms: i64) -> bool {
        let held = self.held.lock().expect("held claims");
        held.get(&claim.identity).is_some_and(|c| {
            c.token == claim.token && c.expires_ms - self.settings.clock.now_ms() > margin_ms
        })
    }

    /// Whether a call may start: the claim lasts at least until the next renewal is due.
    fn may_start_a_call(&self, claim: &Claim) -> bool {
        self.holds_for(claim, (self.settings.lease / 3).as_millis() as i64)
    }

    /// Runs a delivery while the claim holds; None when the claim ran out first (renewals
    /// failed, or another node took the user over): the call is abandoned, as a crash would
    /// abandon it, so that it never runs alongside the next holder's.
    async fn while_held<T>(&self, claim: &Claim, work: impl Future<Output = T>) -> Option<T> {
        let mut work = std::pin::pin!(work);
        loop {
            tokio::select! {
                done = &mut work => return Some(done),
                _ = tokio::time::sleep(CLAIM_CHECK) => {
                    if !self.holds_for(claim, 0) {
                        return None;
                    }
                }
            }
        }
    }

    /// Gives the claim up, now that every outcome is recorded.
    async fn release(&self, claim: &Claim) {
        self.held
            .lock()
            .expect("held claims")
            .remove(&claim.identity);
        if let Err(error) = self.store.release_claim(claim).await {
            // It lapses by itself at the end of its lease.
            tracing::warn!(%error, identity = %claim.identity, "delivery: cannot release a claim");
        }
    }

    /// Runs one user's due actions in order, stopping at the first that does not succeed (the
    /// rest wait for it: per-user order), when delivery pauses, or when the claim is lost.
    async fn deliver_user(&self, claim: &Claim) {
        let identity = claim.identity.as_str();
        let actions = match self.store.pending_of(identity, USER_BATCH).await {
            Ok(actions) => actions,
            Err(error) => {
                tracing::error!(%error, identity, "delivery: cannot read a user's actions");
                return;
            }
        };
        let _backfill = actions
            .iter()
            .all(|a| a.lane == lane::BACKFILL)
            .then(|| BackfillWorker::new(&self.delivering_backfill));
        if let Some(head) = actions.first().filter(|a| a.started_ms.is_some()) {
            // The last holder marked this call in flight and stopped before recording it.
            if head.body["action"]["kind"] == "conversation" {
                tracing::info!(action = %head.id, "a conversation was being started when its last delivery stopped; Intercom is asked before it is started again");
            } else {
                metrics::counter!("junction_possible_duplicates_total").increment(1);
                tracing::warn!(action = %head.id, "a call that must not be repeated may have happened before its last delivery stopped; delivering it again (counted as a possible duplicate)");
            }
        }
        let mut index = 0;
        while index < actions.len() {
            if actions[index].next_at_ms > self.settings.clock.now_ms()
                || self.paused.load(Ordering::SeqCst)
                || *self.stopping.borrow()
                || !self.may_start_a_call(claim)
            {
                break;
            }
            let (planned, merged) = match coalesce(&actions[index..], self.settings.clock.now_ms())
            {
                Ok(found) => found,
                Err(error) => {
                    let outcome = ActionOutcome::Failed {
                        id: actions[index].id.clone(),
                        error: format!("unreadable action: {error}"),
                        code: "unreadable".into(),
                        attempt: attempt(
                            1,
                            self.settings.clock.now_ms(),
                            0,
                            "failed",
                            Some("unreadable".into()),
                            &[],
                        ),
                        skip_rest_of_run: false,
                    };
                    let _ = self.store.action_outcomes(claim, vec![outcome]).await;
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
                && let Err(error) = self
                    .store
                    .mark_started(claim, &record.id, self.settings.clock.now_ms())
                    .await
            {
                self.store_refused(&error, &record.id, "mark an action in flight");
                break;
            }
            let Some(outcome) = self
                .while_held(claim, self.deliver_one(record, &planned, merged))
                .await
            else {
                metrics::counter!("junction_claims_lost_total").increment(1);
                tracing::warn!(action = %record.id, "delivery: the claim on this user ran out during a call; the call is abandoned to the next holder");
                break;
            };
            let done = matches!(outcome, ActionOutcome::Done { .. });
            if let Err(error) = self.store.action_outcomes(claim, vec![outcome]).await {
                self.store_refused(&error, &record.id, "record an outcome");
                break;
            }
            if !done {
                // A failure may have activated an error branch or skipped later actions: look
                // at the outbox again before going on with this user.
                break;
            }
        }
    }

    fn store_refused(&self, error: &StoreError, action: &str, what: &str) {
        if matches!(error, StoreError::Fenced { .. }) {
            metrics::counter!("junction_claims_lost_total").increment(1);
            tracing::warn!(%error, action, "delivery: another node took this user over; stopping");
        } else {
            tracing::error!(%error, action, "delivery: cannot {what}");
        }
    }

    async fn deliver_one(
        &self,
        record: &ActionRecord,
        planned: &PlannedAction,
        merged: Vec<String>,
    ) -> ActionOutcome {
        let started_at = self.settings.clock.now_ms();
        let started = Instant::now();
        // A message or note whose last attempt lost its connection may have been sent anyway:
        // sending it again may duplicate it, and Intercom offers no way to check.
        if planned.action.creates_something()
            && !matches!(planned.action, Action::Conversation { .. })
            && record.error_code.as_deref() == Some("transport")
        {
            metrics::counter!("junction_possible_duplicates_total").increment(1);
        }
        let delivery = self
            .deliverer
            .deliver(planned, record.first_attempt_ms.or(record.started_ms));
        let (result, calls) = if record.lane == lane::BACKFILL {
            recorder::record(junction_intercom::as_backfill(delivery)).await
        } else {
            recorder::record(delivery).await
        };
        let duration_ms = started.elapsed().as_millis() as i64;
        let kind = planned.action.kind();
        let number = record.attempts + 1;
        let this_attempt = |outcome: &str, error: Option<String>| {
            attempt(number, started_at, duration_ms, outcome, error, &calls)
        };
        metrics::histogram!("junction_action_seconds", "kind" => kind)
            .record(started.elapsed().as_secs_f64());
        metrics::counter!("junction_api_calls_total").increment(calls.len() as u64);
        if self.settings.tap.listening() {
            for call in &calls {
                self.settings.tap.publish(crate::TapEntry::Call {
                    at: crate::tap::now(),
                    action: record.id.clone(),
                    workflow: planned.workflow.clone(),
                    user: record.identity.clone(),
                    method: call.method.clone(),
                    path: call.path.clone(),
                    status: call.status,
                    ms: call.ms,
                });
            }
        }
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
                    next_at_ms: self.settings.clock.now_ms()
                        + self.settings.probe_every.as_millis() as i64,
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
                let window_over = self.settings.clock.now_ms() - first
                    >= self.settings.retry_window.as_millis() as i64;
                if window_over && number >= self.settings.min_attempts {
                    let error = format!(
                        "gave up after {number} attempts over {}: {message}",
                        human(self.settings.clock.now_ms() - first)
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
                        next_at_ms: self.settings.clock.now_ms() + delay.as_millis() as i64,
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
fn coalesce(
    actions: &[ActionRecord],
    now: i64,
) -> Result<(PlannedAction, Vec<String>), serde_json::Error> {
    let mut planned: PlannedAction = serde_json::from_value(actions[0].body.clone())?;
    let mut merged = Vec::new();
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
