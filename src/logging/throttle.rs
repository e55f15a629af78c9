//! A peer that triggers a warning in a loop (a server opening channels nobody asked for, tens of
//! thousands a second) must not turn the agent's log into its amplifier: disk, a log
//! collector's quota, and the one line an operator needs, buried. A [`Throttle`] lets a burst of
//! lines through per period and counts the rest; the next line it lets through says how many
//! it held back. Counters (metrics) keep the exact totals.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// At most `burst` lines per `period` for one kind of event; see the module doc.
#[derive(Debug)]
pub struct Throttle {
    burst: u32,
    period: Duration,
    state: Mutex<Window>,
}

#[derive(Debug)]
struct Window {
    started: Option<Instant>,
    passed: u32,
    held: u64,
}

impl Throttle {
    /// Usable in a `static`, one per call site.
    pub const fn new(burst: u32, period: Duration) -> Self {
        Self {
            burst,
            period,
            state: Mutex::new(Window {
                started: None,
                passed: 0,
                held: 0,
            }),
        }
    }

    /// `Some(held)`: log this event, and say that `held` similar ones were not logged since the
    /// last one that was (0: nothing held back). `None`: do not log it.
    pub fn admit(&self) -> Option<u64> {
        self.admit_at(Instant::now())
    }

    /// Whether to log this event, saying first (one `warn` line) how many `what` were held back.
    pub fn allow(&self, what: &str) -> bool {
        match self.admit() {
            None => false,
            Some(0) => true,
            Some(held) => {
                tracing::warn!(
                    not_logged = held,
                    "{held} more {what} were not logged (at most {} lines every {} s; the metrics count all)",
                    self.burst,
                    self.period.as_secs()
                );
                true
            }
        }
    }

    fn admit_at(&self, now: Instant) -> Option<u64> {
        let mut w = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let expired = w
            .started
            .is_none_or(|s| now.saturating_duration_since(s) >= self.period);
        if expired {
            w.started = Some(now);
            w.passed = 0;
        }
        if w.passed < self.burst {
            w.passed += 1;
            return Some(std::mem::take(&mut w.held));
        }
        w.held += 1;
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_passes_then_the_rest_is_counted_into_the_next_line() {
        let t = Throttle::new(3, Duration::from_secs(10));
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        assert_eq!(t.admit_at(at(0)), Some(0));
        assert_eq!(t.admit_at(at(1)), Some(0));
        assert_eq!(t.admit_at(at(2)), Some(0));
        for _ in 0..1000 {
            assert_eq!(t.admit_at(at(3)), None);
        }
        assert_eq!(t.admit_at(at(9)), None);
        // A new period: the first line carries the count of what was held back, once.
        assert_eq!(t.admit_at(at(10)), Some(1001));
        assert_eq!(t.admit_at(at(11)), Some(0));
    }
}
