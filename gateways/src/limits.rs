//! Rate limits by key (a channel's sender, an API key), with governor: over the limit, the
//! caller learns how long to wait.

use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use serde::{Deserialize, Serialize};

/// The HTTP front door's limits, `[limits]` in the configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// `POST /v1/events` per API key and second (0: unlimited).
    pub events_per_key_per_second: u32,
    /// Largest webhook body, bytes.
    pub webhook_body_bytes: usize,
    /// Longest a request may take before it is answered 408, milliseconds.
    pub request_timeout_ms: u64,
    /// Requests served at once; more wait for a turn.
    pub concurrent_requests: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            events_per_key_per_second: 20_000,
            webhook_body_bytes: 1 << 20,
            request_timeout_ms: 30_000,
            concurrent_requests: 1024,
        }
    }
}

/// A rate limit per key; `None` inside means unlimited.
pub struct KeyedLimit {
    limiter: Option<DefaultKeyedRateLimiter<String>>,
    clock: DefaultClock,
    /// Checks so far, to forget idle keys now and then.
    checks: AtomicU64,
}

/// Checks between two sweeps of keys whose limit has fully recovered.
const SWEEP_EVERY: u64 = 4096;

impl KeyedLimit {
    /// `per_period` requests per key every `period`, in a burst if they like; 0 is unlimited.
    pub fn new(per_period: u32, period: Duration) -> KeyedLimit {
        let limiter = NonZeroU32::new(per_period).and_then(|burst| {
            let quota = Quota::with_period(period / burst.get())?.allow_burst(burst);
            Some(RateLimiter::keyed(quota))
        });
        KeyedLimit {
            limiter,
            clock: DefaultClock::default(),
            checks: AtomicU64::new(0),
        }
    }

    /// Counts a request of `key`: `Err` with how long to wait when it is over the limit.
    pub fn check(&self, key: &str) -> Result<(), Duration> {
        let Some(limiter) = &self.limiter else {
            return Ok(());
        };
        // Keys come from outside (senders, keys): those back to a full quota are forgotten,
        // so the table holds only the recently active.
        if self.checks.fetch_add(1, Ordering::Relaxed) % SWEEP_EVERY == SWEEP_EVERY - 1 {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
        limiter
            .check_key(&key.to_owned())
            .map_err(|not_until| not_until.wait_time_from(self.clock.now()))
    }
}

/// A `Retry-After` value: whole seconds, at least one.
pub fn retry_after_secs(wait: Duration) -> u64 {
    (wait.as_millis().div_ceil(1000) as u64).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_over_its_quota_waits_and_other_keys_do_not() {
        let limit = KeyedLimit::new(2, Duration::from_secs(60));
        assert!(limit.check("a").is_ok());
        assert!(limit.check("a").is_ok());
        let wait = limit.check("a").unwrap_err();
        assert!(
            wait > Duration::from_secs(20) && wait <= Duration::from_secs(30),
            "{wait:?}"
        );
        assert!(limit.check("b").is_ok());
        let unlimited = KeyedLimit::new(0, Duration::from_secs(1));
        assert!((0..1000).all(|_| unlimited.check("a").is_ok()));
    }

    #[test]
    fn retry_after_rounds_up_to_whole_seconds() {
        assert_eq!(retry_after_secs(Duration::from_millis(1)), 1);
        assert_eq!(retry_after_secs(Duration::ZERO), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(2500)), 3);
        assert_eq!(retry_after_secs(Duration::from_secs(2)), 2);
    }
}
