//! The rate gate: one budget per Intercom workspace token, shared by every request.
//!
//! Intercom allows N requests per 10-second window and says so on every response
//! (`X-RateLimit-Limit`, `-Remaining`, `-Reset` in Unix seconds). The gate counts down the
//! remaining budget locally as requests leave (so concurrent callers cannot overspend it
//! between two responses), corrects itself from each response, and makes callers wait for the
//! reset once the window is spent: no request is sent into an exhausted window, and after a 429
//! nobody sends until the reset (no retry storm). The window after a 429 opens with a single
//! probe: if Intercom is still refusing (a 429 storm), one request per window finds out, not the
//! whole queue.
//!
//! Several nodes calling one workspace share its budget through the store
//! ([`RateGate::share_budget`]): besides what Intercom's headers say, a node spends only what it
//! took from the store for the current window, in slices of a twentieth of the limit, so all
//! nodes together stay inside the window (windows are Intercom's: 10 seconds, aligned to the
//! Unix clock). Probes, one request when nothing is known of a window, go without. A window
//! that follows one spent to within a tenth of its limit opens after a short hold
//! ([`RESET_MARGIN`]), so that requests still in flight from the last one land first; a window
//! after a quiet one opens at once (no added latency at low rates).
//!
//! A backfill's requests (made inside [`as_backfill`]) spend at most [`BACKFILL_SHARE`] of a
//! window, spread evenly over it: the rest is kept for live traffic, which therefore finds
//! budget at once even while a backfill runs at Intercom's limit, and finds no burst of a
//! backfill's calls (and of the writes recording them) in its way at a window's start.

use junction_store::{Clock, RateBudget, SystemClock};
use reqwest::header::HeaderMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

/// Slack added after the announced reset, since the server's second and ours may differ.
const RESET_MARGIN: Duration = Duration::from_millis(100);

/// The share of each window a backfill may spend (numerator, denominator): four fifths, so
/// that a fifth of Intercom's limit (333 requests per 10 s by default) stays for live traffic.
pub const BACKFILL_SHARE: (u32, u32) = (4, 5);

tokio::task_local! {
    /// Present while a backfill's action is delivered.
    static BACKFILL: ();
}

/// Runs `work` as a backfill's: the requests it makes spend at most [`BACKFILL_SHARE`] of each
/// rate window, leaving the rest to live traffic.
pub async fn as_backfill<F: std::future::Future>(work: F) -> F::Output {
    BACKFILL.scope((), work).await
}

pub(crate) fn in_backfill() -> bool {
    BACKFILL.try_with(|_| ()).is_ok()
}

/// What a backfill's requests may spend of a window of `limit`.
fn backfill_budget(limit: u32) -> u32 {
    (u64::from(limit) * u64::from(BACKFILL_SHARE.0) / u64::from(BACKFILL_SHARE.1)) as u32
}

pub struct RateGate {
    window: Mutex<Window>,
    shared: OnceLock<SharedBudget>,
    /// Unix time, for windows aligned to it (the system's; a test's own in tests).
    clock: Arc<dyn Clock>,
    /// The window's length (Intercom's is 10 seconds).
    window_seconds: u64,
}

impl Default for RateGate {
    fn default() -> Self {
        RateGate::new(Arc::new(SystemClock), INTERCOM_WINDOW_SECONDS)
    }
}

impl std::fmt::Debug for RateGate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateGate")
            .field("window", &self.window)
            .field("shared", &self.shared.get().map(|s| &s.workspace))
            .finish()
    }
}

/// The store's budget of one workspace.
struct SharedBudget {
    budget: Arc<dyn RateBudget>,
    workspace: String,
}

/// What `acquire` does after looking at the window.
enum Next {
    Wait(Duration),
    /// A backfill's request found only live traffic's part of the window left: it waits, then
    /// takes its turn in the next window's pace (not all at the window's start).
    WaitAndPace(Duration),
    /// Send a probe, counting it in this window's shared budget first.
    Probe(u64),
    /// Take a slice of this window's shared budget (bucket, what may be taken of it in all,
    /// for a backfill).
    Borrow(u64, u32, bool),
}

/// Clears the "a slice is being fetched" flag even when the fetch is abandoned midway.
struct Borrowing<'a>(&'a Mutex<Window>);

impl Drop for Borrowing<'_> {
    fn drop(&mut self) {
        if let Ok(mut window) = self.0.lock() {
            window.borrowing = false;
        }
    }
}

#[derive(Debug, Default, Clone, Copy)]
struct Window {
    limit: Option<u32>,
    remaining: Option<u32>,
    /// Unix seconds.
    reset: Option<u64>,
    /// A request is out while nothing is known of the window: the others wait for its answer.
    probing: bool,
    /// The last answer was a 429: the next window starts with one probe, not the full budget.
    refused: bool,
    /// With a shared budget: requests this node took for window `slice_bucket` and has not
    /// spent yet, whether a slice is being fetched, and a window whose budget is all taken.
    slice: u32,
    slice_bucket: u64,
    borrowing: bool,
    spent_bucket: Option<u64>,
    /// With a shared budget: a window whose backfill share is all taken.
    backfill_spent_bucket: Option<u64>,
    /// The window (by number) a backfill's requests are being paced in, and how many it let
    /// go in it.
    backfill_bucket: u64,
    backfill_sent: u64,
    /// With a shared budget: the window (bucket) whose first [`RESET_MARGIN`] is held because
    /// the window before it ended at or near its limit.
    hold_bucket: Option<u64>,
}

impl Window {
    /// Paces a backfill's requests evenly over a window: by `into` milliseconds into it, one
    /// request plus `into / window` of its share may have gone (a burst at a window's start
    /// would hold up live requests behind it, and the writes recording it). Counts the request
    /// (None) or says how long until it may go.
    fn pace_backfill(&mut self, now_ms: u64, window_seconds: u64) -> Option<Duration> {
        // Nothing known of the limit yet: the probe finds it first.
        let limit = self.limit?;
        let share = u64::from(backfill_budget(limit).max(1));
        let window_ms = window_seconds * 1000;
        let bucket = now_ms / window_ms;
        if self.backfill_bucket != bucket {
            self.backfill_bucket = bucket;
            self.backfill_sent = 0;
        }
        let into = now_ms % window_ms;
        let burst = 1;
        if self.backfill_sent < burst + share * into / window_ms {
            self.backfill_sent += 1;
            return None;
        }
        // The moment the allowance reaches one more request.
        let at = ((self.backfill_sent + 1 - burst) * window_ms).div_ceil(share);
        Some(Duration::from_millis(at.saturating_sub(into).max(1)))
    }

    /// With a shared budget: counts a request against this node's slice of the current window
    /// (None: it may go), or says what to do first.
    fn spend_slice(
        &mut self,
        remaining: u32,
        now_ms: u64,
        window_seconds: u64,
        backfill: bool,
    ) -> Option<Next> {
        let bucket = now_ms / 1000 / window_seconds;
        let into_window = now_ms % (window_seconds * 1000);
        let margin = RESET_MARGIN.as_millis() as u64;
        let previous_was_tight =
            self.hold_bucket == Some(bucket) || self.spent_bucket == Some(bucket.saturating_sub(1));
        if into_window < margin && previous_was_tight {
            // Requests sent at the end of the last window may still be on their way and be
            // counted in this one; when that window was (nearly) spent, this one will be too,
            // so let them land first. A window after a quiet one opens at once: the few
            // requests in flight cannot fill it, and Intercom's answers correct the count.
            return Some(Next::Wait(Duration::from_millis(margin - into_window)));
        }
        if self.slice_bucket != bucket {
            self.slice = 0;
            self.slice_bucket = bucket;
        }
        if self.slice > 0 {
            self.slice -= 1;
            self.remaining = Some(remaining - 1);
            return None;
        }
        if self.spent_bucket == Some(bucket)
            || (backfill && self.backfill_spent_bucket == Some(bucket))
        {
            let next_window = (bucket + 1) * window_seconds * 1000;
            return Some(Next::Wait(
                Duration::from_millis(next_window.saturating_sub(now_ms)) + RESET_MARGIN,
            ));
        }
        if self.borrowing {
            return Some(Next::Wait(PROBE_POLL));
        }
        self.borrowing = true;
        let limit = self.limit.unwrap_or(remaining);
        Some(if backfill {
            Next::Borrow(bucket, backfill_budget(limit), true)
        } else {
            Next::Borrow(bucket, limit, false)
        })
    }
}

/// Intercom's rate-limit window.
pub const INTERCOM_WINDOW_SECONDS: u64 = 10;

/// How often waiting callers look again while the first request probes the window.
const PROBE_POLL: Duration = Duration::from_millis(10);

impl RateGate {
    /// A gate reading Unix time from `clock`, for windows of `window_seconds` (Intercom's are
    /// [`INTERCOM_WINDOW_SECONDS`]; an emulator may be set to shorter ones for tests).
    pub fn new(clock: Arc<dyn Clock>, window_seconds: u64) -> RateGate {
        RateGate {
            window: Mutex::new(Window::default()),
            shared: OnceLock::new(),
            clock,
            window_seconds: window_seconds.max(1),
        }
    }

    fn now_ms(&self) -> u64 {
        self.clock.now_ms().max(0) as u64
    }

    /// The number of the current window (windows aligned to the Unix clock).
    pub(crate) fn window_number(&self) -> u64 {
        self.now_ms() / 1000 / self.window_seconds
    }

    /// From now on, spends only what it takes from `budget` for `workspace` (shared with every
    /// node calling that workspace). Set once; later calls change nothing.
    pub fn share_budget(&self, budget: Arc<dyn RateBudget>, workspace: impl Into<String>) {
        let _ = self.shared.set(SharedBudget {
            budget,
            workspace: workspace.into(),
        });
    }

    /// Waits until a request may be sent, and counts it.
    pub async fn acquire(&self) {
        if in_backfill() {
            self.pace_backfill().await;
        }
        loop {
            let next = {
                let mut window = self.window.lock().expect("rate gate lock");
                let now_ms = self.now_ms();
                let window_seconds = self.window_seconds;
                if let Some(reset) = window.reset
                    && now_ms >= reset * 1000
                {
                    // A new window: the full budget is back, unless Intercom was refusing
                    // everything, in which case one probe asks first.
                    let tight = window.refused
                        || match (window.remaining, window.limit) {
                            (Some(remaining), Some(limit)) => remaining <= limit / 10,
                            _ => true,
                        };
                    window.hold_bucket = tight.then_some(now_ms / 1000 / window_seconds);
                    window.remaining = if window.refused { None } else { window.limit };
                    window.reset = None;
                }
                let backfill = in_backfill();
                // What a backfill leaves of the window for live traffic.
                let reserve = match window.limit {
                    Some(limit) if backfill => limit - backfill_budget(limit),
                    _ => 0,
                };
                match (window.remaining, window.reset) {
                    (Some(0), Some(reset)) => Next::Wait(
                        Duration::from_millis((reset * 1000).saturating_sub(now_ms)) + RESET_MARGIN,
                    ),
                    // Spent a fresh window's budget before any answer named its reset: wait
                    // for the answers.
                    (Some(0), None) => Next::Wait(PROBE_POLL),
                    (Some(remaining), Some(reset)) if remaining <= reserve => Next::WaitAndPace(
                        Duration::from_millis((reset * 1000).saturating_sub(now_ms)) + RESET_MARGIN,
                    ),
                    (Some(remaining), None) if remaining <= reserve => {
                        Next::WaitAndPace(PROBE_POLL)
                    }
                    (Some(remaining), _) if self.shared.get().is_some() => {
                        match window.spend_slice(remaining, now_ms, window_seconds, backfill) {
                            Some(next) => next,
                            None => return,
                        }
                    }
                    (Some(remaining), _) => {
                        window.remaining = Some(remaining - 1);
                        return;
                    }
                    // Nothing known yet: one request goes first and its response tells.
                    (None, _) if !window.probing => {
                        window.probing = true;
                        if self.shared.get().is_none() {
                            return;
                        }
                        Next::Probe(now_ms / 1000 / window_seconds)
                    }
                    (None, _) => Next::Wait(PROBE_POLL),
                }
            };
            match next {
                Next::Wait(wait) => {
                    tracing::debug!(?wait, "Intercom rate window spent; waiting for its reset");
                    tokio::time::sleep(wait).await;
                }
                Next::WaitAndPace(wait) => {
                    tokio::time::sleep(wait).await;
                    self.pace_backfill().await;
                }
                Next::Borrow(bucket, limit, backfill) => self.borrow(bucket, limit, backfill).await,
                Next::Probe(bucket) => {
                    self.count_probe(bucket).await;
                    return;
                }
            }
        }
    }

    /// Waits for a backfill's request's turn in the even pace of its window.
    async fn pace_backfill(&self) {
        loop {
            let wait = {
                let mut window = self.window.lock().expect("rate gate lock");
                window.pace_backfill(self.now_ms(), self.window_seconds)
            };
            match wait {
                None => return,
                Some(wait) => tokio::time::sleep(wait).await,
            }
        }
    }

    /// Counts a probe in window `bucket`'s shared budget, so that the slices other nodes take
    /// leave room for it. The probe goes out whatever the answer: one request per node when a
    /// window is unknown is the price of learning it.
    async fn count_probe(&self, bucket: u64) {
        let Some(shared) = self.shared.get() else {
            return;
        };
        if let Err(error) = shared
            .budget
            .take_budget(&shared.workspace, bucket as i64, i64::MAX, 1)
            .await
        {
            tracing::warn!(%error, "cannot count a probe in the shared Intercom rate budget");
        }
    }

    /// Takes a slice of window `bucket`'s shared budget, while all nodes together have taken
    /// less than `limit` of it (a backfill's share, for a backfill).
    async fn borrow(&self, bucket: u64, limit: u32, backfill: bool) {
        let Some(shared) = self.shared.get() else {
            return;
        };
        let _borrowing = Borrowing(&self.window);
        let wanted = (limit / 20).max(1);
        let granted = match shared
            .budget
            .take_budget(
                &shared.workspace,
                bucket as i64,
                i64::from(limit),
                i64::from(wanted),
            )
            .await
        {
            Ok(granted) => u32::try_from(granted).unwrap_or(0),
            Err(error) => {
                // Without the store no node can know what the others spent: wait for the next
                // window and ask again.
                tracing::error!(%error, "cannot take a slice of the shared Intercom rate budget");
                0
            }
        };
        let mut window = self.window.lock().expect("rate gate lock");
        if window.slice_bucket == bucket {
            window.slice += granted;
            if granted == 0 && backfill {
                window.backfill_spent_bucket = Some(bucket);
            } else if granted == 0 {
                window.spent_bucket = Some(bucket);
            }
        }
    }

    /// A request got no response at all: if it was the probe, let another one try.
    pub fn observe_no_response(&self) {
        let mut window = self.window.lock().expect("rate gate lock");
        window.probing = false;
        if window.remaining == Some(0) && window.reset.is_none() {
            // Nobody will answer with this window's reset: ask again with one probe.
            window.remaining = None;
        }
    }

    /// Learns the window from a response's headers (429s included).
    pub fn observe(&self, status: u16, headers: &HeaderMap) {
        let number = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok())
        };
        let mut window = self.window.lock().expect("rate gate lock");
        window.probing = false;
        // An answer to a request of a window that has ended (it arrived late, after the gate
        // moved on) says nothing about the current one: taking it would hand out the current
        // window's budget a second time.
        if let Some(reset) = number("x-ratelimit-reset")
            && (reset * 1000 <= self.now_ms() || window.reset.is_some_and(|known| reset < known))
        {
            return;
        }
        if let Some(limit) = number("x-ratelimit-limit") {
            window.limit = Some(limit as u32);
        }
        if let Some(reset) = number("x-ratelimit-reset") {
            if window.reset.is_some_and(|known| known != reset) {
                // A response from a newer window resets what we counted locally. (A window the
                // gate opened itself at the reset, `reset` still unknown, keeps its count: the
                // first answers to come back, from its first requests, tell of more budget than
                // the requests sent since have left, and waiting callers would take it.)
                window.remaining = None;
            }
            window.reset = Some(reset);
        }
        if let Some(remaining) = number("x-ratelimit-remaining") {
            let remaining = remaining as u32;
            // Requests still in flight were already counted; keep the lower figure.
            window.remaining = Some(window.remaining.map_or(remaining, |r| r.min(remaining)));
        }
        window.refused = status == 429;
        if window.refused {
            window.remaining = Some(0);
            if window.reset.is_none() {
                // A 429 that names no reset: assume a whole window.
                window.reset = Some(self.now_ms() / 1000 + self.window_seconds);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::{HeaderMap, HeaderValue};

    fn headers(remaining: u32, reset: u64) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert("x-ratelimit-limit", HeaderValue::from(50u32));
        headers.insert("x-ratelimit-remaining", HeaderValue::from(remaining));
        headers.insert("x-ratelimit-reset", HeaderValue::from(reset));
        headers
    }

    /// The first moments of a window are held only after a window that was (nearly) spent.
    #[test]
    fn a_window_start_is_held_only_after_a_tight_window() {
        let bucket = 1_000_000u64;
        let start_ms = bucket * INTERCOM_WINDOW_SECONDS * 1000;
        let mut quiet = Window {
            limit: Some(1666),
            slice: 5,
            slice_bucket: bucket,
            ..Window::default()
        };
        assert!(
            quiet
                .spend_slice(1600, start_ms + 5, INTERCOM_WINDOW_SECONDS, false)
                .is_none()
        );

        let mut after_tight = Window {
            hold_bucket: Some(bucket),
            ..quiet
        };
        assert!(matches!(
            after_tight.spend_slice(1600, start_ms + 5, INTERCOM_WINDOW_SECONDS, false),
            Some(Next::Wait(wait)) if wait == Duration::from_millis(95)
        ));
        assert!(
            after_tight
                .spend_slice(1600, start_ms + 100, INTERCOM_WINDOW_SECONDS, false)
                .is_none()
        );

        let mut after_spent = Window {
            spent_bucket: Some(bucket - 1),
            ..quiet
        };
        assert!(matches!(
            after_spent.spend_slice(1600, start_ms, INTERCOM_WINDOW_SECONDS, false),
            Some(Next::Wait(_))
        ));
    }

    /// A late answer from a window that has ended must not give the current window's budget
    /// back (found by CI: one 429 in 1,000 calls when an answer crossed a window boundary).
    #[tokio::test]
    async fn a_late_answer_from_an_ended_window_is_ignored() {
        let clock = Arc::new(junction_store::ManualClock::new(1_790_000_003_000));
        let gate = RateGate::new(clock.clone(), INTERCOM_WINDOW_SECONDS);
        let now = gate.now_ms() / 1000;
        gate.acquire().await;
        gate.observe(200, &headers(1, now + 10));
        gate.acquire().await;
        assert_eq!(gate.window.lock().unwrap().remaining, Some(0));
        // An answer naming an earlier window (or one already over) changes nothing.
        gate.observe(200, &headers(49, now + 5));
        gate.observe(200, &headers(49, now.saturating_sub(1)));
        let window = *gate.window.lock().unwrap();
        assert_eq!((window.remaining, window.reset), (Some(0), Some(now + 10)));
        // The current window's own answers still count.
        gate.observe(200, &headers(0, now + 10));
        assert_eq!(gate.window.lock().unwrap().remaining, Some(0));
    }

    /// A queue of requests against a workspace allowing 50 per 10-second window, in tokio's
    /// paused time with the gate's clock following it: every window gets at most 50, the
    /// queue drains at the allowed rate, and the test takes no wall-clock time.
    #[tokio::test(start_paused = true)]
    async fn a_queue_drains_at_the_allowed_rate_in_paused_time() {
        let limit = 50u64;
        let clock = Arc::new(junction_store::TokioClock::starting_at(1_790_000_003_000));
        let gate = Arc::new(RateGate::new(clock.clone(), INTERCOM_WINDOW_SECONDS));
        // Intercom's side: what each window has served.
        let served = Arc::new(Mutex::new(std::collections::BTreeMap::<u64, u64>::new()));
        let tasks: Vec<_> = (0..230)
            .map(|_| {
                let (gate, clock, served) = (gate.clone(), clock.clone(), served.clone());
                tokio::spawn(async move {
                    gate.acquire().await;
                    // A request takes 20 ms, then Intercom counts it and answers.
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    let now = clock.now_ms() as u64 / 1000;
                    let window = now / INTERCOM_WINDOW_SECONDS;
                    let used = {
                        let mut served = served.lock().unwrap();
                        let used = served.entry(window).or_default();
                        *used += 1;
                        *used
                    };
                    let reset = (window + 1) * INTERCOM_WINDOW_SECONDS;
                    let status = if used > limit { 429 } else { 200 };
                    gate.observe(status, &headers(limit.saturating_sub(used) as u32, reset));
                    status
                })
            })
            .collect();
        let started = tokio::time::Instant::now();
        for task in tasks {
            assert_eq!(task.await.unwrap(), 200, "no request met a spent window");
        }
        let served = served.lock().unwrap().clone();
        assert!(served.values().all(|&n| n <= limit), "{served:?}");
        assert_eq!(served.values().sum::<u64>(), 230);
        // 230 requests at 50 per window need five windows (the first one partly over).
        assert!(served.len() <= 6, "{served:?}");
        assert!(
            started.elapsed() <= Duration::from_secs(60),
            "{:?}",
            started.elapsed()
        );
    }

    /// A backfill queued at the limit spends at most four fifths of each window, spread evenly
    /// over it, and a live request arriving in the middle of it goes out at once instead of
    /// waiting for a window.
    #[tokio::test(start_paused = true)]
    async fn a_backfill_leaves_a_fifth_of_each_window_to_live_requests() {
        let limit = 50u64;
        let clock = Arc::new(junction_store::TokioClock::starting_at(1_790_000_000_000));
        let gate = Arc::new(RateGate::new(clock.clone(), INTERCOM_WINDOW_SECONDS));
        let served = Arc::new(Mutex::new(std::collections::BTreeMap::<u64, u64>::new()));
        let send = |gate: Arc<RateGate>,
                    clock: Arc<junction_store::TokioClock>,
                    served: Arc<Mutex<std::collections::BTreeMap<u64, u64>>>| async move {
            gate.acquire().await;
            let window = clock.now_ms() as u64 / 1000 / INTERCOM_WINDOW_SECONDS;
            let used = {
                let mut served = served.lock().unwrap();
                let used = served.entry(window).or_default();
                *used += 1;
                *used
            };
            let reset = (window + 1) * INTERCOM_WINDOW_SECONDS;
            gate.observe(200, &headers(limit.saturating_sub(used) as u32, reset));
            (window, used)
        };
        let backfill: Vec<_> = (0..150)
            .map(|_| {
                tokio::spawn(as_backfill(send(
                    gate.clone(),
                    clock.clone(),
                    served.clone(),
                )))
            })
            .collect();
        // Into the second window, with the backfill still queued.
        tokio::time::sleep(Duration::from_secs(13)).await;
        let so_far = served.lock().unwrap().values().last().copied();
        let asked = tokio::time::Instant::now();
        let (window, _) = send(gate.clone(), clock.clone(), served.clone()).await;
        assert_eq!(asked.elapsed(), Duration::ZERO, "the live request waited");
        assert_eq!(
            window,
            clock.now_ms() as u64 / 1000 / INTERCOM_WINDOW_SECONDS
        );
        for task in backfill {
            task.await.unwrap();
        }
        // Spread over the window: 3 s into it, one and 30 % of the 40 have gone, not all 40.
        assert!(
            matches!(so_far, Some(12..=14)),
            "not paced evenly: {so_far:?} of 40 by 3 s into the window"
        );
        let served = served.lock().unwrap().clone();
        // 150 backfill requests at no more than 40 a window, and the live one.
        assert!(served.values().all(|&n| n <= 41), "{served:?}");
        assert_eq!(served.values().sum::<u64>(), 151);
    }
}
