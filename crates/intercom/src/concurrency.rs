//! Adaptive concurrency: how many requests may be in flight to one workspace at once.
//!
//! The rate gate decides how many requests a window may carry; this decides how many may be
//! outstanding together. Too few and a slow round trip starves the budget; too many and Intercom
//! (or the network in between) queues them, so every call gets slower and time-outs follow. The
//! limit follows the additive-increase / multiplicative-decrease rule that TCP and Vector's
//! adaptive request concurrency use, with latency as the congestion signal:
//!
//! - every `limit` completed requests (about one round of the window) the mean round trip of that
//!   round is compared with a slowly moving baseline;
//! - slower than `baseline × tolerance`, or a server error or dropped connection seen → the limit
//!   shrinks by a quarter;
//! - otherwise, if callers were waiting for a slot, it grows by one.
//!
//! 429s are not a congestion signal here (the rate gate owns them) and their instant answers are
//! not counted as round trips.
//!
//! [`LimitController`] is the pure rule (tested without a clock); [`AdaptiveConcurrency`] wraps it
//! with the slots that callers wait for. A backfill's requests take a slot only while a quarter
//! of them stays free ([`AdaptiveConcurrency::acquire_for_backfill`]): a live request never
//! queues behind a backfill's.

use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Notify;

/// Bounds and tuning of the adaptive limit.
#[derive(Debug, Clone, Copy)]
pub struct ConcurrencySettings {
    /// The limit to start from.
    pub initial: usize,
    /// Never fewer slots than this.
    pub min: usize,
    /// Never more slots than this.
    pub max: usize,
    /// A round whose mean round trip exceeds the baseline by this factor counts as congested.
    pub tolerance: f64,
}

impl Default for ConcurrencySettings {
    fn default() -> Self {
        ConcurrencySettings {
            initial: 8,
            min: 1,
            max: 64,
            tolerance: 1.5,
        }
    }
}

/// What happened to one request, as far as congestion goes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Outcome {
    /// An answer arrived after this round trip (2xx, 4xx other than 429).
    Answered(Duration),
    /// A server error, a time-out or a dropped connection: back off.
    Overloaded,
    /// A 429 or anything else that says nothing about congestion.
    Ignored,
}

/// The pure AIMD rule.
#[derive(Debug, Clone)]
pub struct LimitController {
    settings: ConcurrencySettings,
    limit: f64,
    /// Exponentially weighted mean of each round's mean round trip, in seconds.
    baseline: Option<f64>,
    round_sum: f64,
    round_samples: usize,
    round_overloaded: bool,
    /// Whether a caller had to wait for a slot during this round.
    round_saturated: bool,
}

/// Weight of a slower round in the baseline: small, so that the baseline stays near the fastest
/// round trips seen (rising with the limit would let the limit climb without end), while a
/// lasting change of the network's latency still becomes the new normal. A faster round
/// becomes the baseline at once.
const BASELINE_WEIGHT: f64 = 0.01;
/// Share of the limit kept after a congested round.
const DECREASE: f64 = 0.75;

impl LimitController {
    pub fn new(settings: ConcurrencySettings) -> Self {
        let limit = settings.initial.clamp(settings.min, settings.max) as f64;
        LimitController {
            settings,
            limit,
            baseline: None,
            round_sum: 0.0,
            round_samples: 0,
            round_overloaded: false,
            round_saturated: false,
        }
    }

    /// The current number of slots.
    pub fn limit(&self) -> usize {
        self.limit as usize
    }

    /// A caller found every slot taken.
    pub fn saturated(&mut self) {
        self.round_saturated = true;
    }

    /// Records one finished request; at the end of a round, adjusts the limit.
    pub fn record(&mut self, outcome: Outcome) {
        match outcome {
            Outcome::Answered(rtt) => {
                self.round_sum += rtt.as_secs_f64();
                self.round_samples += 1;
            }
            Outcome::Overloaded => {
                self.round_overloaded = true;
                self.round_samples += 1;
            }
            Outcome::Ignored => return,
        }
        if self.round_samples < self.limit() {
            return;
        }
        let answered = self.round_samples - usize::from(self.round_overloaded);
        let mean = (answered > 0).then(|| self.round_sum / answered as f64);
        let slow = match (mean, self.baseline) {
            (Some(mean), Some(baseline)) => mean > baseline * self.settings.tolerance,
            _ => false,
        };
        let (min, max) = (self.settings.min as f64, self.settings.max as f64);
        if self.round_overloaded || slow {
            self.limit = (self.limit * DECREASE).floor().max(min);
        } else if self.round_saturated {
            self.limit = (self.limit + 1.0).min(max);
        }
        if let Some(mean) = mean {
            self.baseline = Some(match self.baseline {
                Some(baseline) if mean > baseline => baseline + BASELINE_WEIGHT * (mean - baseline),
                _ => mean,
            });
        }
        self.round_sum = 0.0;
        self.round_samples = 0;
        self.round_overloaded = false;
        self.round_saturated = false;
    }
}

/// Slots for in-flight requests, sized by a [`LimitController`].
#[derive(Debug)]
pub struct AdaptiveConcurrency {
    state: Mutex<State>,
    /// Wakes callers waiting for any slot.
    freed: Notify,
    /// Wakes a backfill's callers, waiting for a slot within the backfill's part.
    freed_for_backfill: Notify,
}

/// How many requests may be in flight for a backfill's to take a slot: all but a quarter of
/// `limit` (at least one slot kept for live requests, and at least one for the backfill).
fn backfill_slots(limit: usize) -> usize {
    limit.saturating_sub((limit / 4).max(1)).max(1)
}

#[derive(Debug)]
struct State {
    controller: LimitController,
    in_flight: usize,
}

/// A taken slot; report how the request went with [`Slot::finish`]. Dropping it unreported
/// frees the slot without a verdict.
pub struct Slot {
    owner: Arc<AdaptiveConcurrency>,
    finished: bool,
}

impl AdaptiveConcurrency {
    pub fn new(settings: ConcurrencySettings) -> Arc<Self> {
        Arc::new(AdaptiveConcurrency {
            state: Mutex::new(State {
                controller: LimitController::new(settings),
                in_flight: 0,
            }),
            freed: Notify::new(),
            freed_for_backfill: Notify::new(),
        })
    }

    /// The current limit.
    pub fn limit(&self) -> usize {
        self.state
            .lock()
            .expect("concurrency lock")
            .controller
            .limit()
    }

    /// Requests in flight now.
    pub fn in_flight(&self) -> usize {
        self.state.lock().expect("concurrency lock").in_flight
    }

    /// Waits for a free slot.
    pub async fn acquire(self: &Arc<Self>) -> Slot {
        self.acquire_within(false).await
    }

    /// Waits for a free slot while a quarter of them stays free for live requests.
    pub async fn acquire_for_backfill(self: &Arc<Self>) -> Slot {
        self.acquire_within(true).await
    }

    async fn acquire_within(self: &Arc<Self>, backfill: bool) -> Slot {
        let notify = if backfill {
            &self.freed_for_backfill
        } else {
            &self.freed
        };
        loop {
            // Registered before looking, so a slot freed in between is not missed.
            let freed = notify.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            {
                let mut state = self.state.lock().expect("concurrency lock");
                let limit = state.controller.limit();
                let room = if backfill {
                    backfill_slots(limit)
                } else {
                    limit
                };
                if state.in_flight < room {
                    state.in_flight += 1;
                    return Slot {
                        owner: Arc::clone(self),
                        finished: false,
                    };
                }
                if state.in_flight >= limit {
                    state.controller.saturated();
                }
            }
            freed.await;
        }
    }

    fn release(&self, outcome: Outcome) {
        let mut state = self.state.lock().expect("concurrency lock");
        state.in_flight -= 1;
        state.controller.record(outcome);
        let limit = state.controller.limit();
        let free = limit.saturating_sub(state.in_flight);
        let free_for_backfill = backfill_slots(limit).saturating_sub(state.in_flight);
        drop(state);
        for _ in 0..free {
            self.freed.notify_one();
        }
        for _ in 0..free_for_backfill {
            self.freed_for_backfill.notify_one();
        }
    }
}

impl Slot {
    pub fn finish(mut self, outcome: Outcome) {
        self.finished = true;
        self.owner.release(outcome);
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        if !self.finished {
            self.owner.release(Outcome::Ignored);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A backfill takes a slot only while a quarter of them stays free for live requests.
    #[tokio::test(start_paused = true)]
    async fn a_backfill_leaves_a_quarter_of_the_slots_to_live_requests() {
        let slots = AdaptiveConcurrency::new(ConcurrencySettings::default());
        async fn ready<F: std::future::Future>(
            future: F,
        ) -> Result<F::Output, tokio::time::error::Elapsed> {
            tokio::time::timeout(Duration::ZERO, future).await
        }
        let mut backfill = Vec::new();
        for _ in 0..6 {
            backfill.push(ready(slots.acquire_for_backfill()).await.unwrap());
        }
        let waiting = tokio::spawn({
            let slots = Arc::clone(&slots);
            async move { slots.acquire_for_backfill().await }
        });
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished(), "a seventh backfill slot of eight");
        let live: Vec<Slot> = vec![
            ready(slots.acquire()).await.expect("a live slot"),
            ready(slots.acquire()).await.expect("a second live slot"),
        ];
        assert!(ready(slots.acquire()).await.is_err(), "all eight are taken");
        drop(backfill.pop());
        tokio::task::yield_now().await;
        assert!(
            !waiting.is_finished(),
            "a backfill goes only while a quarter of the slots stays free"
        );
        drop(live);
        let _slot = waiting.await.unwrap();
        assert_eq!(slots.in_flight(), 6);
    }

    /// Runs `rounds` rounds against a server whose round trip is `rtt(in_flight)`, with every
    /// slot busy (a backlog), and returns the limit at the end.
    fn settle(rtt: impl Fn(usize) -> Duration, rounds: usize) -> usize {
        let mut controller = LimitController::new(ConcurrencySettings::default());
        for _ in 0..rounds {
            let in_flight = controller.limit();
            controller.saturated();
            for _ in 0..in_flight {
                controller.record(Outcome::Answered(rtt(in_flight)));
            }
        }
        controller.limit()
    }

    #[test]
    fn grows_to_the_maximum_while_latency_stays_flat() {
        assert_eq!(settle(|_| Duration::from_millis(20), 200), 64);
    }

    #[test]
    fn stays_low_when_latency_grows_with_concurrency() {
        // A server that queues beyond 4 concurrent requests: each extra one adds a full service
        // time. The limit must stop growing where latency climbs past the tolerance (it starts
        // at 8: 100 ms; 11 would take 160 ms), far below the maximum.
        let limit = settle(
            |n| Duration::from_millis(20 * (1 + n.saturating_sub(4) as u64)),
            400,
        );
        assert!((4..=12).contains(&limit), "limit {limit}");
    }

    #[test]
    fn errors_shrink_the_limit_and_429s_do_not() {
        let mut controller = LimitController::new(ConcurrencySettings::default());
        for _ in 0..8 {
            controller.record(Outcome::Ignored);
        }
        assert_eq!(controller.limit(), 8);
        for _ in 0..8 {
            controller.record(Outcome::Overloaded);
        }
        assert_eq!(controller.limit(), 6);
        for _ in 0..100 {
            controller.record(Outcome::Overloaded);
        }
        assert_eq!(controller.limit(), 1);
    }

    #[test]
    fn an_idle_client_does_not_grow() {
        // Answers are fast but nobody waited for a slot: no reason to add slots.
        let mut controller = LimitController::new(ConcurrencySettings::default());
        for _ in 0..100 {
            controller.record(Outcome::Answered(Duration::from_millis(5)));
        }
        assert_eq!(controller.limit(), 8);
    }

    #[tokio::test]
    async fn slots_are_bounded_and_freed() {
        let slots = AdaptiveConcurrency::new(ConcurrencySettings {
            initial: 2,
            max: 2,
            ..ConcurrencySettings::default()
        });
        let first = slots.acquire().await;
        let _second = slots.acquire().await;
        let waiting = tokio::spawn({
            let slots = Arc::clone(&slots);
            async move { slots.acquire().await.finish(Outcome::Ignored) }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiting.is_finished(), "a third caller must wait");
        assert_eq!(slots.in_flight(), 2);
        drop(first);
        waiting.await.unwrap();
        assert_eq!(slots.in_flight(), 1);
    }
}
