//! What time it is, for the code whose behaviour depends on it (the rate gate's windows, due
//! timers): the system's clock in production, and in tests a clock the test controls —
//! [`ManualClock`], moved by hand, or [`TokioClock`], which follows tokio's clock and so
//! moves with `tokio::time::pause` and `advance`.
//!
//! Times are Unix milliseconds: the store's coordination compares them across nodes.

use std::sync::atomic::{AtomicI64, Ordering};

/// A source of the current time (Unix ms).
pub trait Clock: Send + Sync + std::fmt::Debug + 'static {
    fn now_ms(&self) -> i64;
}

/// The system clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        chrono::Utc::now().timestamp_millis()
    }
}

/// A clock that moves only when told to.
#[derive(Debug)]
pub struct ManualClock(AtomicI64);

impl ManualClock {
    pub fn new(now_ms: i64) -> ManualClock {
        ManualClock(AtomicI64::new(now_ms))
    }

    pub fn set(&self, now_ms: i64) {
        self.0.store(now_ms, Ordering::SeqCst);
    }

    pub fn advance(&self, by: std::time::Duration) {
        self.0.fetch_add(by.as_millis() as i64, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> i64 {
        self.0.load(Ordering::SeqCst)
    }
}

/// Unix time that follows tokio's clock from a starting point: under `tokio::time::pause` it
/// moves exactly as far as the runtime's sleeps and `advance` move it.
#[derive(Debug)]
pub struct TokioClock {
    start_ms: i64,
    started: tokio::time::Instant,
}

impl TokioClock {
    /// Starts at `start_ms` (Unix ms) now.
    pub fn starting_at(start_ms: i64) -> TokioClock {
        TokioClock {
            start_ms,
            started: tokio::time::Instant::now(),
        }
    }
}

impl Clock for TokioClock {
    fn now_ms(&self) -> i64 {
        self.start_ms + self.started.elapsed().as_millis() as i64
    }
}
