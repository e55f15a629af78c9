//! The race between the rungs of `server.transports`: which rung is tried when, and which
//! attempt wins. Knows nothing of what an attempt does (the SSH layer dials, shakes hands and
//! authenticates in it): an attempt is a future that yields a `T` or fails with an `E`, and
//! says through a [`FirstBytes`] watch when the server has spoken.
//!
//! The rungs are tried in order, the preferred one (the one that worked last) first. A rung
//! that fails starts the next at once; a rung that has not spoken within [`FALLBACK_DELAY`] gets
//! the next started beside it, as Happy Eyeballs (RFC 8305) does between addresses. The first
//! attempt to succeed wins and the others are dropped. When every rung failed, the caller gets
//! every failure, to pick the one that says most.

use std::collections::{HashMap, VecDeque};
use std::fmt::Display;
use std::future::Future;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::{JoinError, JoinSet};
use tokio::time::Instant;
use tracing::{debug, info};

use super::FirstBytes;

/// How long a rung may go without producing its first byte (the SSH banner) before the next
/// rung is started beside it. Short enough that a port that accepts TCP and never speaks (a
/// silent firewall) costs well under a second, long enough that a healthy server across an
/// ocean (TCP, TLS and WebSocket round trips) has usually spoken first.
pub const FALLBACK_DELAY: Duration = Duration::from_millis(300);

/// Races the attempts at `rungs`, starting with rung `first` (then the others in order), until
/// one succeeds. `attempt(i, spoke)` tries rung `i` and sets `spoke` when the server's first
/// bytes arrive. After rung `i` failed with `e`, every rung `j` not started yet for which
/// `drop_after(i, &e, j)` holds is skipped (a proxy that failed fails every rung through it).
///
/// Returns the winner's `T`, or every failure as (rung, error) in the order they came; none
/// when there was no rung. An attempt that panicked fails with `E::from` its [`JoinError`].
pub async fn climb<R, T, E, Fut>(
    rungs: &[R],
    first: Option<usize>,
    attempt: impl Fn(usize, watch::Sender<Vec<u8>>) -> Fut,
    drop_after: impl Fn(usize, &E, usize) -> bool,
) -> Result<T, Vec<(usize, E)>>
where
    R: Display,
    Fut: Future<Output = Result<T, E>> + Send + 'static,
    T: Send + 'static,
    E: Display + From<JoinError> + Send + 'static,
{
    let mut order: VecDeque<usize> = (0..rungs.len()).collect();
    if let Some(i) = first.filter(|i| *i < rungs.len()) {
        order.retain(|x| *x != i);
        order.push_front(i);
    }
    let mut attempts = JoinSet::new();
    // Which rung each running attempt is at, for an attempt that ended in a panic.
    let mut at = HashMap::new();
    let mut failures = Vec::new();
    // The first-bytes watch and start time of the rung started last.
    let mut latest: Option<(FirstBytes, Instant)> = None;
    loop {
        if attempts.is_empty() || latest.is_none() {
            // With no rung left to start, the attempts still running may yet win: wait for
            // them. (The ladder used to give up here, on the first failure after the last
            // rung had started, although a rung started beside a slow one was still going.)
            match order.pop_front() {
                Some(i) => {
                    let (tx, rx) = watch::channel(Vec::new());
                    let fut = attempt(i, tx);
                    let handle = attempts.spawn(async move { (i, fut.await) });
                    at.insert(handle.id(), i);
                    latest = Some((rx, Instant::now()));
                }
                None if attempts.is_empty() => break,
                None => {}
            }
        }
        let fallback = {
            let more = !order.is_empty();
            let latest = latest.clone();
            async move {
                let Some((mut spoke, since)) = latest.filter(|_| more) else {
                    return std::future::pending().await;
                };
                tokio::time::sleep_until(since + FALLBACK_DELAY).await;
                // Spoke in time: no fallback for it (its failure starts the next rung).
                if !spoke.borrow_and_update().is_empty() {
                    std::future::pending::<()>().await;
                }
            }
        };
        let event = tokio::select! {
            joined = attempts.join_next_with_id() => joined,
            _ = fallback => None,
        };
        match event {
            None => {
                if let Some(next) = order.front() {
                    info!(next = %rungs[*next], "no SSH banner within {}ms: starting the next rung beside it", FALLBACK_DELAY.as_millis());
                }
                latest = None;
            }
            Some(Ok((_, (_, Ok(won))))) => return Ok(won),
            Some(Ok((id, (i, Err(e))))) => {
                at.remove(&id);
                let rung = &rungs[i];
                // The caller's own line says how the last one failed.
                if order.is_empty() && attempts.is_empty() {
                    debug!(%rung, error = %e, "connection attempt failed");
                } else {
                    info!(%rung, error = %e, "connection attempt failed; trying the next rung");
                }
                order.retain(|j| !drop_after(i, &e, *j));
                failures.push((i, e));
                // A failure starts the next rung at once.
                latest = None;
            }
            Some(Err(e)) => {
                if let Some(i) = at.remove(&e.id()) {
                    failures.push((i, E::from(e)));
                }
                latest = None;
            }
        }
        if attempts.is_empty() && order.is_empty() {
            break;
        }
    }
    Err(failures)
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    /// How a fake rung behaves: speaks after `speaks` (never if `None`), then succeeds or fails
    /// after `ends`.
    #[derive(Clone, Copy)]
    struct Fake {
        speaks: Option<Duration>,
        ends: Duration,
        ok: bool,
    }

    const MS: Duration = Duration::from_millis(1);

    fn fails(after: u64) -> Fake {
        Fake {
            speaks: None,
            ends: MS * after as u32,
            ok: false,
        }
    }

    fn wins(speaks: u64, after: u64) -> Fake {
        Fake {
            speaks: Some(MS * speaks as u32),
            ends: MS * after as u32,
            ok: true,
        }
    }

    #[derive(Debug, PartialEq)]
    struct Failed(String);

    impl Display for Failed {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(&self.0)
        }
    }

    impl From<JoinError> for Failed {
        fn from(e: JoinError) -> Self {
            Failed(format!("ended: {}", e.is_panic()))
        }
    }

    /// (rung, ms since the ladder started) of every attempt started.
    type Started = Arc<Mutex<Vec<(usize, u64)>>>;

    /// Climbs a ladder of `fakes` (named "r0", "r1"...) from `first`; returns the outcome (the
    /// winner's index, or every failure), the attempts started and when it returned (ms).
    async fn climb_fakes(
        fakes: &[Fake],
        first: Option<usize>,
        drop_after: impl Fn(usize, &Failed, usize) -> bool,
    ) -> (Result<usize, Vec<(usize, Failed)>>, Vec<(usize, u64)>, u64) {
        let names: Vec<String> = (0..fakes.len()).map(|i| format!("r{i}")).collect();
        let started: Started = Arc::default();
        let t0 = Instant::now();
        let fakes = fakes.to_vec();
        let log = started.clone();
        let outcome = climb(
            &names,
            first,
            move |i, spoke: watch::Sender<Vec<u8>>| {
                let fake = fakes[i];
                log.lock()
                    .unwrap()
                    .push((i, t0.elapsed().as_millis() as u64));
                async move {
                    if let Some(after) = fake.speaks.filter(|s| *s < fake.ends) {
                        tokio::time::sleep(after).await;
                        spoke.send_replace(b"SSH-2.0-x".to_vec());
                        tokio::time::sleep(fake.ends - after).await;
                    } else {
                        tokio::time::sleep(fake.ends).await;
                    }
                    if fake.ok {
                        Ok(i)
                    } else {
                        Err(Failed(format!("r{i} failed")))
                    }
                }
            },
            drop_after,
        )
        .await;
        let took = t0.elapsed().as_millis() as u64;
        let started = started.lock().unwrap().clone();
        (outcome, started, took)
    }

    fn never(_: usize, _: &Failed, _: usize) -> bool {
        false
    }

    #[tokio::test(start_paused = true)]
    async fn rungs_are_tried_in_order_the_preferred_one_first() {
        let ladder = [fails(10), fails(10), wins(5, 20), fails(10)];
        let (outcome, started, took) = climb_fakes(&ladder, None, never).await;
        assert_eq!(outcome.unwrap(), 2);
        assert_eq!(
            started,
            [(0, 0), (1, 10), (2, 20)],
            "each failure starts the next at once"
        );
        assert_eq!(took, 40);

        let (outcome, started, _) = climb_fakes(&ladder, Some(2), never).await;
        assert_eq!(outcome.unwrap(), 2);
        assert_eq!(started, [(2, 0)], "the rung that worked last goes first");

        let (outcome, started, _) = climb_fakes(&ladder, Some(3), never).await;
        assert_eq!(outcome.unwrap(), 2);
        assert_eq!(
            started,
            [(3, 0), (0, 10), (1, 20), (2, 30)],
            "then the rest in order"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_rung_that_speaks_in_time_gets_no_rival() {
        // Speaks at 100 ms, within the head start, and takes 2 s to authenticate.
        let ladder = [wins(100, 2000), wins(1, 2)];
        let (outcome, started, took) = climb_fakes(&ladder, None, never).await;
        assert_eq!(outcome.unwrap(), 0);
        assert_eq!(started, [(0, 0)]);
        assert_eq!(took, 2000);
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_first_rung_is_overtaken_after_its_head_start() {
        // The first rung accepts and never speaks (a silent firewall) until its own bound.
        let ladder = [fails(10_000), wins(20, 50), wins(1, 2)];
        let (outcome, started, took) = climb_fakes(&ladder, None, never).await;
        assert_eq!(outcome.unwrap(), 1, "the second rung overtook the first");
        let head_start = FALLBACK_DELAY.as_millis() as u64;
        assert_eq!(started, [(0, 0), (1, head_start)]);
        assert_eq!(
            took,
            head_start + 50,
            "the winner did not wait for the silent rung"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_failure_does_not_abandon_a_rung_still_going() {
        // The silent first rung gives up at 10 s while the second, started beside it, is still
        // authenticating (it spoke at once): the second still wins.
        let ladder = [fails(10_000), wins(1, 11_000)];
        let (outcome, started, took) = climb_fakes(&ladder, None, never).await;
        assert_eq!(outcome.unwrap(), 1);
        let head_start = FALLBACK_DELAY.as_millis() as u64;
        assert_eq!(started, [(0, 0), (1, head_start)]);
        assert_eq!(took, head_start + 11_000);
    }

    #[tokio::test(start_paused = true)]
    async fn every_failure_is_reported_when_every_rung_fails() {
        let ladder = [fails(30), fails(10), fails(20)];
        let (outcome, _, _) = climb_fakes(&ladder, None, never).await;
        let failures = outcome.unwrap_err();
        assert_eq!(
            failures,
            [
                (0, Failed("r0 failed".into())),
                (1, Failed("r1 failed".into())),
                (2, Failed("r2 failed".into()))
            ]
        );
        let (outcome, _, _) = climb_fakes(&[], None, never).await;
        assert!(outcome.unwrap_err().is_empty(), "no rung, no failure");
    }

    #[tokio::test(start_paused = true)]
    async fn a_failure_can_rule_out_the_rungs_behind_it() {
        // Rung 0's failure says rung 2 cannot do better (the same proxy): it is never tried.
        let ladder = [fails(10), fails(10), fails(10), wins(1, 2)];
        let (outcome, started, _) =
            climb_fakes(&ladder, None, |i, _: &Failed, j| i == 0 && j == 2).await;
        assert_eq!(outcome.unwrap(), 3);
        let tried: Vec<usize> = started.iter().map(|(i, _)| *i).collect();
        assert_eq!(tried, [0, 1, 3]);
    }

    #[tokio::test(start_paused = true)]
    async fn silent_rungs_cost_one_head_start_each_then_their_own_bound() {
        // Every rung accepts and never speaks; each attempt ends at its own bound (5 s), as the
        // SSH layer's handshake timeout does. Each rung is tried once, and the whole ladder
        // takes the head starts plus one bound, not one bound per rung.
        let ladder = [fails(5000); 4];
        let (outcome, started, took) = climb_fakes(&ladder, None, never).await;
        assert_eq!(outcome.unwrap_err().len(), 4);
        let head_start = FALLBACK_DELAY.as_millis() as u64;
        let starts: Vec<(usize, u64)> = (0..4).map(|i| (i, i as u64 * head_start)).collect();
        assert_eq!(started, starts);
        assert_eq!(took, 3 * head_start + 5000);
    }

    #[tokio::test(start_paused = true)]
    async fn a_panicking_attempt_is_a_failure_of_its_rung() {
        let names = ["r0", "r1"];
        let outcome = climb(
            &names,
            None,
            |i, _| async move {
                if i == 0 {
                    panic!("boom");
                }
                Err::<(), _>(Failed("r1 failed".into()))
            },
            never,
        )
        .await;
        assert_eq!(
            outcome.unwrap_err(),
            [
                (0, Failed("ended: true".into())),
                (1, Failed("r1 failed".into()))
            ]
        );
    }
}
