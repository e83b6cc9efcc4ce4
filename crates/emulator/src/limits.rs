//! Intercom's rate limit: a per-app allowance that resets every 10 seconds, announced on every
//! authenticated response in `X-RateLimit-Limit` (the per-window figure), `X-RateLimit-Remaining`
//! and `X-RateLimit-Reset` (Unix seconds), and enforced with 429 `rate_limit_exceeded`.

use crate::Emulator;
use crate::error::IntercomError;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

pub const WINDOW_SECONDS: u64 = 10;

/// Fixed 10-second windows aligned to the Unix clock, as Intercom's reset times are.
pub struct WindowLimiter {
    state: Mutex<Window>,
}

struct Window {
    limit: u32,
    /// The window's length (Intercom's: [`WINDOW_SECONDS`]).
    seconds: u64,
    /// Start of the current window, Unix seconds.
    started: u64,
    used: u32,
}

/// What one request was told.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Admission {
    pub allowed: bool,
    pub limit: u32,
    pub remaining: u32,
    /// Unix seconds at which the window resets.
    pub reset: u64,
    /// The window's length.
    pub seconds: u64,
}

impl WindowLimiter {
    pub fn new(limit: u32) -> Self {
        WindowLimiter {
            state: Mutex::new(Window {
                limit,
                seconds: WINDOW_SECONDS,
                started: 0,
                used: 0,
            }),
        }
    }

    pub fn set_limit(&self, limit: u32) {
        self.state.lock().expect("limiter lock").limit = limit;
    }

    /// Shorter windows than Intercom's, for tests that exercise many windows in seconds.
    pub fn set_window_seconds(&self, seconds: u64) {
        self.state.lock().expect("limiter lock").seconds = seconds.max(1);
    }

    /// Counts a request made at `now` (Unix seconds).
    pub fn admit(&self, now: u64) -> Admission {
        let mut window = self.state.lock().expect("limiter lock");
        let seconds = window.seconds;
        let started = now - now % seconds;
        if started != window.started {
            window.started = started;
            window.used = 0;
        }
        let allowed = window.used < window.limit;
        if allowed {
            window.used += 1;
        }
        Admission {
            allowed,
            limit: window.limit,
            remaining: window.limit - window.used,
            reset: started + seconds,
            seconds,
        }
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

pub async fn rate_limit(
    State(emulator): State<Emulator>,
    request: Request,
    next: Next,
) -> Response {
    let admission = emulator.limiter.admit(unix_now());
    let mut response = if admission.allowed {
        next.run(request).await
    } else {
        IntercomError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limit_exceeded",
            format!(
                "Exceeded rate limit of {} in {}_seconds",
                admission.limit, admission.seconds
            ),
        )
        .into_response()
    };
    let headers = response.headers_mut();
    for (name, value) in [
        ("x-ratelimit-limit", admission.limit as u64),
        ("x-ratelimit-remaining", admission.remaining as u64),
        ("x-ratelimit-reset", admission.reset),
    ] {
        headers.insert(name, HeaderValue::from(value));
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_are_ten_seconds_aligned_to_the_clock() {
        let limiter = WindowLimiter::new(2);
        let first = limiter.admit(1_000_003);
        assert_eq!(
            first,
            Admission {
                allowed: true,
                limit: 2,
                remaining: 1,
                reset: 1_000_010,
                seconds: 10,
            }
        );
        assert!(limiter.admit(1_000_009).allowed);
        let refused = limiter.admit(1_000_009);
        assert!(!refused.allowed);
        assert_eq!(refused.remaining, 0);
        let next_window = limiter.admit(1_000_010);
        assert_eq!(
            (
                next_window.allowed,
                next_window.remaining,
                next_window.reset
            ),
            (true, 1, 1_000_020)
        );
        limiter.set_window_seconds(1);
        assert_eq!(limiter.admit(1_000_021).reset, 1_000_022);
    }
}
