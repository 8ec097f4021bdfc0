//! When to try the collector again: exponential backoff with jitter (so a
//! fleet of daemons does not retry in lockstep), the server's own hint
//! (gRPC RetryInfo, HTTP Retry-After) as a floor, and a circuit breaker that,
//! once several attempts in a row have failed, limits a dead collector to
//! one probe per backoff period and says so once in the log.

use std::time::Duration;

/// Backoff and breaker state.
#[derive(Debug)]
pub struct RetryPolicy {
    initial: Duration,
    max: Duration,
    current: Duration,
    failures: u32,
    threshold: u32,
    /// How many times the breaker opened.
    pub opened: u64,
}

/// What a failure changed.
#[derive(Debug, PartialEq, Eq)]
pub struct Failure {
    /// Wait this long before the next attempt.
    pub delay: Duration,
    /// The breaker opened with this failure.
    pub opened: bool,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self::new(Duration::from_millis(500), Duration::from_secs(30), 3)
    }
}

impl RetryPolicy {
    /// Backoff from `initial` doubling up to `max`; the breaker opens after
    /// `threshold` consecutive failures.
    pub fn new(initial: Duration, max: Duration, threshold: u32) -> Self {
        Self {
            initial,
            max,
            current: initial,
            failures: 0,
            threshold,
            opened: 0,
        }
    }

    /// True while the breaker is open (the collector keeps failing).
    pub fn is_open(&self) -> bool {
        self.failures >= self.threshold
    }

    /// Consecutive failures so far.
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// Records a failure; `hint` is the server's requested delay.
    pub fn failure(&mut self, hint: Option<Duration>) -> Failure {
        self.failures += 1;
        let opened = self.failures == self.threshold;
        if opened {
            self.opened += 1;
        }
        // Full jitter in [0.5, 1.5) of the current step.
        let jittered = self.current.mul_f64(0.5 + fastrand::f64());
        self.current = (self.current * 2).min(self.max);
        let delay = match hint {
            Some(h) => jittered.max(h),
            None => jittered,
        };
        Failure { delay, opened }
    }

    /// Records a success; returns the failures it ended (0 if none).
    pub fn success(&mut self) -> u32 {
        let ended = self.failures;
        self.failures = 0;
        self.current = self.initial;
        ended
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backs_off_exponentially_with_jitter_and_honours_hints() {
        let mut r = RetryPolicy::new(Duration::from_secs(1), Duration::from_secs(8), 3);
        let mut steps = Vec::new();
        for _ in 0..6 {
            steps.push(r.failure(None));
        }
        let expected = [1u64, 2, 4, 8, 8, 8];
        for (f, base) in steps.iter().zip(expected) {
            let base = Duration::from_secs(base);
            assert!(
                f.delay >= base.mul_f64(0.5) && f.delay < base.mul_f64(1.5),
                "{f:?} vs {base:?}"
            );
        }
        assert_eq!(steps.iter().filter(|f| f.opened).count(), 1);
        assert!(steps[2].opened && r.is_open() && r.opened == 1);
        // A server hint is a floor.
        assert!(r.failure(Some(Duration::from_secs(60))).delay >= Duration::from_secs(60));
        assert_eq!(r.success(), 7);
        assert!(!r.is_open());
        let f = r.failure(None);
        assert!(f.delay < Duration::from_millis(1500) && !f.opened);
    }
}
