//! Exponential backoff with jitter between `reconnect.initial` and `reconnect.max`, and
//! [`Redial`], which resets it once a session has stayed up (so one blip after a month of
//! uptime retries fast).

use std::time::Duration;

use tokio::time::Instant;

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

/// A session that lived this long resets the reconnect backoff.
pub const STABLE_AFTER: Duration = Duration::from_secs(30);

/// When to dial the server again.
#[derive(Debug)]
pub struct Redial {
    backoff: Backoff,
    max: Duration,
    up_since: Option<Instant>,
}

impl Redial {
    pub fn new(initial: Duration, max: Duration) -> Self {
        Self {
            backoff: Backoff::new(initial, max),
            max,
            up_since: None,
        }
    }

    /// A session is up.
    pub fn connected(&mut self) {
        self.up_since = Some(Instant::now());
    }

    /// The wait before the next attempt after a lost session or a failed attempt. A session
    /// that stayed up [`STABLE_AFTER`] starts the backoff over.
    pub fn after_failure(&mut self) -> Duration {
        if self
            .up_since
            .take()
            .is_some_and(|t| t.elapsed() >= STABLE_AFTER)
        {
            self.backoff.reset();
        }
        self.backoff.next_delay()
    }

    /// The wait after a failure that needs a human or the vendor (a rejected key, a host key
    /// mismatch): slow, never a tight loop.
    pub fn after_permanent_failure(&mut self) -> Duration {
        self.up_since = None;
        self.max
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn redial_backs_off_and_a_stable_session_starts_it_over() {
        let (initial, max) = (Duration::from_secs(1), Duration::from_secs(60));
        let mut r = Redial::new(initial, max);
        let mut last = Duration::ZERO;
        for _ in 0..20 {
            last = r.after_failure();
        }
        assert!(last > Duration::from_secs(20), "grew: {last:?}");
        r.connected();
        tokio::time::advance(STABLE_AFTER - Duration::from_secs(1)).await;
        assert!(
            r.after_failure() > Duration::from_secs(20),
            "a session shorter than STABLE_AFTER does not reset the backoff"
        );
        r.connected();
        tokio::time::advance(STABLE_AFTER).await;
        assert!(
            r.after_failure() <= initial,
            "a stable session starts the backoff over"
        );
        assert_eq!(r.after_permanent_failure(), max);
    }

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
