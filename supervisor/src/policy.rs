//! Restart strategy, intensity and backoff: pure decisions, no actors.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Which siblings restart with a failed child (OTP's strategies).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strategy {
    /// Only the child that stopped.
    OneForOne,
    /// Every child.
    OneForAll,
    /// The child that stopped and every child started after it.
    RestForOne,
}

impl Strategy {
    /// The indices of the children to restart when child `stopped` of `count` stops.
    pub fn affected(self, stopped: usize, count: usize) -> std::ops::Range<usize> {
        match self {
            Strategy::OneForOne => stopped..stopped + 1,
            Strategy::OneForAll => 0..count,
            Strategy::RestForOne => stopped..count,
        }
    }
}

/// Exponential backoff between restarts, with jitter.
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    /// Delay before the first restart in a window.
    pub initial: Duration,
    /// The delay never grows beyond this.
    pub max: Duration,
}

impl Backoff {
    /// The delay before the `attempt`-th recent restart (1-based): `initial * 2^(attempt-1)`,
    /// capped at `max`, then scaled by `jitter` in [0.5, 1.0] so restarts do not synchronise.
    pub fn delay(&self, attempt: u32, jitter: f64) -> Duration {
        let exponent = attempt.saturating_sub(1).min(16);
        let base = self.initial.saturating_mul(1 << exponent).min(self.max);
        base.mul_f64(jitter.clamp(0.5, 1.0))
    }
}

/// How a supervisor restarts its children.
#[derive(Debug, Clone, Copy)]
pub struct SupervisorConfig {
    /// Which siblings restart together.
    pub strategy: Strategy,
    /// At most this many restarts ...
    pub max_restarts: u32,
    /// ... within this window; one more and the supervisor fails to its parent.
    pub within: Duration,
    /// Delay between restarts.
    pub backoff: Backoff,
}

impl Default for SupervisorConfig {
    fn default() -> Self {
        SupervisorConfig {
            strategy: Strategy::OneForOne,
            max_restarts: 3,
            within: Duration::from_secs(5),
            backoff: Backoff {
                initial: Duration::from_millis(50),
                max: Duration::from_secs(5),
            },
        }
    }
}

/// The restarts of one supervisor within its sliding window.
#[derive(Debug, Default)]
pub(crate) struct Intensity {
    recent: VecDeque<Instant>,
}

impl Intensity {
    /// Records a restart at `now`; returns how many restarts the window now holds.
    pub(crate) fn record(&mut self, now: Instant, within: Duration) -> u32 {
        while self
            .recent
            .front()
            .is_some_and(|t| now.duration_since(*t) > within)
        {
            self.recent.pop_front();
        }
        self.recent.push_back(now);
        u32::try_from(self.recent.len()).unwrap_or(u32::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strategies_pick_their_siblings() {
        assert_eq!(Strategy::OneForOne.affected(1, 4), 1..2);
        assert_eq!(Strategy::OneForAll.affected(1, 4), 0..4);
        assert_eq!(Strategy::RestForOne.affected(1, 4), 1..4);
    }

    #[test]
    fn backoff_doubles_up_to_its_cap_and_jitters_down_to_half() {
        let backoff = Backoff {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(1),
        };
        assert_eq!(backoff.delay(1, 1.0), Duration::from_millis(100));
        assert_eq!(backoff.delay(3, 1.0), Duration::from_millis(400));
        assert_eq!(backoff.delay(10, 1.0), Duration::from_secs(1));
        assert_eq!(backoff.delay(2, 0.5), Duration::from_millis(100));
        assert_eq!(backoff.delay(2, 0.1), Duration::from_millis(100));
    }

    #[test]
    fn intensity_forgets_restarts_outside_the_window() {
        let mut intensity = Intensity::default();
        let t0 = Instant::now();
        let window = Duration::from_secs(5);
        assert_eq!(intensity.record(t0, window), 1);
        assert_eq!(intensity.record(t0 + Duration::from_secs(1), window), 2);
        assert_eq!(intensity.record(t0 + Duration::from_secs(7), window), 1);
    }
}
