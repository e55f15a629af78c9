//! The agent's open vendor connections, tracked so that a stop drains them instead of cutting
//! them: tokio's mini-redis pattern, a [`TaskTracker`] for the tasks and a
//! [`CancellationToken`] for the cut.
//!
//! A stop first closes the door (new channels are refused), then gives the open connections
//! [`GRACE`] to finish on their own, then cuts the rest (`end=shutdown`) and waits for each to
//! hand its audit record to the writer. Only then may the session go: cutting it first would
//! end every connection as `session_lost`.

use std::future::Future;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

/// How long open vendor connections get to finish on their own once the agent stops. Long
/// enough for a request in flight (a page load, a `git fetch` of a few MB) to complete; short
/// enough that the whole stop (this, plus cancelling forwards and disconnecting, 1.5 s each at
/// most, and the audit trail's final sync) stays well inside systemd's `TimeoutStopSec=30s`.
pub const GRACE: Duration = Duration::from_secs(5);

/// How long cut connections get to close their channel and hand over their audit record: the
/// pump ends at once on the cut, so this only bounds a stuck channel close.
pub const AFTER_CUT: Duration = Duration::from_secs(1);

/// The open vendor connections (cheap to clone: every clone is the same set).
#[derive(Debug, Clone, Default)]
pub struct Connections {
    tasks: TaskTracker,
    cut: CancellationToken,
}

/// How a drain ended: how many connections finished within the grace period, how many were
/// cut, and how many had still not ended after the cut (their records may be missing).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Drained {
    pub finished: usize,
    pub cut: usize,
    pub stuck: usize,
}

impl Connections {
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether new vendor channels are still served: false once a stop has begun.
    pub fn accepting(&self) -> bool {
        !self.tasks.is_closed()
    }

    /// Refuses new vendor channels from now on (a drain does this first too).
    pub fn refuse_new(&self) {
        self.tasks.close();
    }

    /// Runs one connection as a tracked task.
    pub fn spawn<F>(&self, task: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.tasks.spawn(task);
    }

    /// Cancelled when the open connections must end now (`end=shutdown`).
    pub fn cut_signal(&self) -> CancellationToken {
        self.cut.clone()
    }

    /// Connections open (or still dialing their target) now.
    pub fn open(&self) -> usize {
        self.tasks.len()
    }

    /// Refuses new channels from now on, waits up to `grace` for the open connections to end,
    /// then cuts the rest and waits up to `after_cut` for them to finish their records.
    pub async fn drain(&self, grace: Duration, after_cut: Duration) -> Drained {
        self.tasks.close();
        let at_start = self.tasks.len();
        if at_start > 0 {
            info!(
                open = at_start,
                grace_s = grace.as_secs_f32(),
                "stopping: no new vendor connections; waiting for the open ones to finish"
            );
        }
        let _ = tokio::time::timeout(grace, self.tasks.wait()).await;
        let cut = self.tasks.len();
        self.cut.cancel();
        let _ = tokio::time::timeout(after_cut, self.tasks.wait()).await;
        let stuck = self.tasks.len();
        if cut > 0 {
            info!(
                cut,
                "open vendor connections cut: the grace period ended (end=shutdown)"
            );
        }
        if stuck > 0 {
            warn!(
                stuck,
                "vendor connections still ending after the cut: their audit records may be missing"
            );
        }
        Drained {
            finished: at_start.saturating_sub(cut),
            cut: cut.saturating_sub(stuck),
            stuck,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn finished_connections_wait_for_nothing_and_the_rest_are_cut_after_the_grace() {
        let conns = Connections::new();
        // One ends on its own within the grace period, one only when cut.
        conns.spawn(tokio::time::sleep(Duration::from_secs(2)));
        let cut = conns.cut_signal();
        let (tx, rx) = tokio::sync::oneshot::channel();
        conns.spawn(async move {
            cut.cancelled().await;
            let _ = tx.send(());
        });
        assert_eq!(conns.open(), 2);
        let started = tokio::time::Instant::now();
        let drained = conns.drain(GRACE, AFTER_CUT).await;
        assert_eq!(
            drained,
            Drained {
                finished: 1,
                cut: 1,
                stuck: 0
            }
        );
        assert!(rx.await.is_ok(), "the cut connection saw the cut");
        assert_eq!(
            started.elapsed(),
            GRACE,
            "the cut came when the grace ended"
        );
        assert!(!conns.accepting(), "no new channels once a stop began");
    }

    #[tokio::test(start_paused = true)]
    async fn with_nothing_open_a_drain_is_immediate() {
        let conns = Connections::new();
        let started = tokio::time::Instant::now();
        let drained = conns.drain(GRACE, AFTER_CUT).await;
        assert_eq!(started.elapsed(), Duration::ZERO);
        assert_eq!((drained.finished, drained.cut, drained.stuck), (0, 0, 0));
    }

    #[tokio::test(start_paused = true)]
    async fn a_connection_that_ignores_the_cut_does_not_hold_the_stop() {
        let conns = Connections::new();
        conns.spawn(std::future::pending());
        let started = tokio::time::Instant::now();
        let drained = conns.drain(GRACE, AFTER_CUT).await;
        assert_eq!(started.elapsed(), GRACE + AFTER_CUT);
        assert_eq!(drained.stuck, 1);
    }
}
