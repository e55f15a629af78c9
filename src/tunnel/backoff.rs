//! Exponential backoff with jitter between `reconnect.initial` and `reconnect.max`, reset by the
//! caller once a session has stayed up (so one blip after a month of uptime retries fast).

use std::time::Duration;

use rand::RngExt;

/// Growth per failed attempt. Gentler than doubling, and only after the first few attempts, so
/// that a server back after a few seconds is found within about two seconds, while a long outage
/// still backs off to `max`.
const FACTOR: f64 = 1.5;
const ATTEMPTS_BEFORE_GROWTH: u32 = 3;

#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    attempt: u32,
}

impl Backoff {
    pub fn new(initial: Duration, max: Duration) -> Self {
        Self {
            initial,
            max: max.max(initial),
            attempt: 0,
        }
    }

    /// The next delay: the nominal value for this attempt, jittered into [50%, 100%] so that
    /// many agents cut off by one outage do not return in lockstep.
    pub fn next_delay(&mut self) -> Duration {
        let nominal = self.nominal();
        self.attempt = self.attempt.saturating_add(1);
        let jitter: f64 = rand::rng().random_range(0.5..=1.0);
        nominal
            .mul_f64(jitter)
            .max(Duration::from_millis(50).min(nominal))
    }

    fn nominal(&self) -> Duration {
        let steps = self.attempt.saturating_sub(ATTEMPTS_BEFORE_GROWTH).min(64);
        let grown = self.initial.as_secs_f64() * FACTOR.powi(steps as i32);
        Duration::from_secs_f64(grown.min(self.max.as_secs_f64()))
    }

    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_caps_and_resets() {
        let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(10));
        let first = b.next_delay();
        assert!(first >= Duration::from_millis(500) && first <= Duration::from_secs(1));
        for _ in 0..50 {
            assert!(b.next_delay() <= Duration::from_secs(10));
        }
        assert!(b.nominal() == Duration::from_secs(10));
        b.reset();
        assert!(b.next_delay() <= Duration::from_secs(1));
    }
}
