//! The per-socket limit on client frames: a token bucket.
//!
//! Each frame takes a token; tokens come back at `per_second` up to `burst`.
//! A frame with no token is refused (`RATE_LIMITED`); after `max_violations`
//! refusals in a row-without-recovery the socket is closed with 4029.

use std::time::Duration;

use tokio::time::Instant;

/// What to do with one client frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    Allow,
    /// Refuse this frame; the socket lives on.
    Refuse,
    /// Too many refusals: close the socket.
    Close,
}

#[derive(Debug)]
pub(crate) struct RateLimiter {
    per_second: f64,
    burst: f64,
    tokens: f64,
    refilled_at: Instant,
    violations: u32,
    max_violations: u32,
}

impl RateLimiter {
    pub(crate) fn new(per_second: u32, burst: u32, max_violations: u32, now: Instant) -> Self {
        let burst = f64::from(burst.max(1));
        Self {
            per_second: f64::from(per_second),
            burst,
            tokens: burst,
            refilled_at: now,
            violations: 0,
            max_violations: max_violations.max(1),
        }
    }

    /// Takes a token for a frame received at `now`.
    pub(crate) fn check(&mut self, now: Instant) -> Verdict {
        let elapsed = now.saturating_duration_since(self.refilled_at);
        self.tokens = (self.tokens + elapsed.as_secs_f64() * self.per_second).min(self.burst);
        self.refilled_at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            // A full bucket means the client behaved for a while: forgive.
            if self.tokens >= self.burst - 1.0 {
                self.violations = 0;
            }
            return Verdict::Allow;
        }
        self.violations += 1;
        if self.violations >= self.max_violations {
            Verdict::Close
        } else {
            Verdict::Refuse
        }
    }

    /// How long until the next token, for the error message.
    pub(crate) fn retry_after(&self) -> Duration {
        let missing = (1.0 - self.tokens).max(0.0);
        Duration::from_secs_f64(missing / self.per_second.max(f64::MIN_POSITIVE))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_is_allowed_then_frames_are_refused_then_the_socket_closed() {
        let start = Instant::now();
        let mut limiter = RateLimiter::new(10, 3, 2, start);
        assert_eq!(limiter.check(start), Verdict::Allow);
        assert_eq!(limiter.check(start), Verdict::Allow);
        assert_eq!(limiter.check(start), Verdict::Allow);
        assert_eq!(limiter.check(start), Verdict::Refuse);
        assert_eq!(limiter.check(start), Verdict::Close);
    }

    #[test]
    fn tokens_come_back_with_time_and_good_behavior_is_forgiven() {
        let start = Instant::now();
        let mut limiter = RateLimiter::new(10, 2, 3, start);
        assert_eq!(limiter.check(start), Verdict::Allow);
        assert_eq!(limiter.check(start), Verdict::Allow);
        assert_eq!(limiter.check(start), Verdict::Refuse);
        assert!(limiter.retry_after() <= Duration::from_millis(100));
        // 100 ms later one token is back.
        assert_eq!(
            limiter.check(start + Duration::from_millis(100)),
            Verdict::Allow
        );
        // A second later the bucket is full again and the slate is clean.
        assert_eq!(
            limiter.check(start + Duration::from_secs(2)),
            Verdict::Allow
        );
        assert_eq!(
            limiter.check(start + Duration::from_secs(2)),
            Verdict::Allow
        );
        assert_eq!(
            limiter.check(start + Duration::from_secs(2)),
            Verdict::Refuse
        );
        assert_eq!(
            limiter.check(start + Duration::from_secs(2)),
            Verdict::Refuse
        );
    }
}
