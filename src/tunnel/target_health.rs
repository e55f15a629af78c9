//! Whether each forward's target (the customer's service) answers: the result of the last
//! vendor connection's dial, and while no dial has succeeded, a light TCP probe (connect, then
//! close) at most every [`PROBE_EVERY`]. Health, status and readiness read it, so a forward whose
//! target is down is reported as degraded instead of "ready, 0 connections".

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use tokio::time::Instant;

use super::conn::dial_target;
use super::state::TunnelState;

use tracing::{info, warn};

/// How often a target that is down (or never reached) is probed.
pub const PROBE_EVERY: Duration = Duration::from_secs(30);

/// What the agent last learned about a target.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum TargetHealth {
    /// Neither a vendor connection nor a probe has reached it yet.
    #[default]
    Unknown,
    Up {
        at: SystemTime,
    },
    Down {
        since: SystemTime,
        /// Why the last dial failed (the agent's own words about the customer's target).
        error: String,
    },
}

impl TargetHealth {
    pub fn label(&self) -> &'static str {
        match self {
            TargetHealth::Unknown => "unknown",
            TargetHealth::Up { .. } => "up",
            TargetHealth::Down { .. } => "down",
        }
    }

    pub fn is_down(&self) -> bool {
        matches!(self, TargetHealth::Down { .. })
    }

    /// "not answering since 2026-12-07T18:00:00Z (connection refused)" when down.
    pub fn down_since(&self) -> Option<String> {
        let TargetHealth::Down { since, error } = self else {
            return None;
        };
        let since = jiff::Timestamp::try_from(*since)
            .map(|t| t.round(jiff::Unit::Second).unwrap_or(t).to_string())
            .unwrap_or_else(|_| "?".into());
        Some(format!("not answering since {since} ({error})"))
    }
}

/// Per target (`host:port`, as configured): what is known about it. Forwards that share a
/// target share its health.
#[derive(Debug, Default)]
pub struct Targets {
    known: Mutex<BTreeMap<String, TargetHealth>>,
}

impl Targets {
    /// Records a dial of `target` (a vendor connection's or a probe's). Logs the changes only:
    /// down once (WARN) and back up once (INFO), however many connections fail in between.
    pub fn record(&self, target: &str, result: Result<(), String>) {
        let mut known = self.known.lock().unwrap_or_else(|p| p.into_inner());
        let now = SystemTime::now();
        let entry = known.entry(target.to_string()).or_default();
        let was_down = entry.is_down();
        *entry = match (result, &*entry) {
            (Ok(()), _) => TargetHealth::Up { at: now },
            (Err(error), TargetHealth::Down { since, .. }) => TargetHealth::Down {
                since: *since,
                error,
            },
            (Err(error), _) => TargetHealth::Down { since: now, error },
        };
        match (&*entry, was_down) {
            // A fixed message with fields, to alert on; refused connections are audited.
            (TargetHealth::Down { error, .. }, false) => warn!(
                %target,
                error = %error,
                probed_every_s = PROBE_EVERY.as_secs(),
                "target down"
            ),
            (TargetHealth::Up { .. }, true) => info!(%target, "target answers again"),
            _ => {}
        }
    }

    pub fn get(&self, target: &str) -> TargetHealth {
        let known = self.known.lock().unwrap_or_else(|p| p.into_inner());
        known.get(target).cloned().unwrap_or_default()
    }

    /// Forgets targets no configured forward uses any more.
    pub fn keep_only<'a>(&self, targets: impl IntoIterator<Item = &'a str>) {
        let keep: Vec<&str> = targets.into_iter().collect();
        let mut known = self.known.lock().unwrap_or_else(|p| p.into_inner());
        known.retain(|t, _| keep.contains(&t.as_str()));
    }
}

/// Until dropped: dials each listed forward's target whose health is not up, at most every
/// [`PROBE_EVERY`] per target (a newly listed one within a second), and closes the connection
/// as soon as it is made.
pub async fn probe_targets(state: Arc<TunnelState>, connect_timeout: Duration) {
    let mut probed: HashMap<String, Instant> = HashMap::new();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let forwards = state.listed_forwards();
        let listed: Vec<String> = forwards.iter().map(|f| f.target()).collect();
        state.targets.keep_only(listed.iter().map(String::as_str));
        probed.retain(|t, _| listed.contains(t));
        let mut probes = tokio::task::JoinSet::new();
        for f in forwards {
            let target = f.target();
            let due = probed
                .get(&target)
                .is_none_or(|at| at.elapsed() >= PROBE_EVERY);
            if !due || matches!(state.targets.get(&target), TargetHealth::Up { .. }) {
                continue;
            }
            probed.insert(target.clone(), Instant::now());
            let state = state.clone();
            probes.spawn(async move {
                let result = dial_target(&f, connect_timeout).await;
                // The probe is a plain connect: the stream and its address are dropped at once.
                let result = result.map(drop).map_err(|e| e.to_string());
                state.targets.record(&target, result);
            });
        }
        while probes.join_next().await.is_some() {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_target_is_down_from_its_first_failure_until_a_dial_succeeds() {
        let t = Targets::default();
        assert_eq!(t.get("db:5432"), TargetHealth::Unknown);
        t.record("db:5432", Err("refused".into()));
        let TargetHealth::Down { since, .. } = t.get("db:5432") else {
            panic!("not down")
        };
        t.record("db:5432", Err("timed out".into()));
        assert_eq!(
            t.get("db:5432"),
            TargetHealth::Down {
                since,
                error: "timed out".into()
            },
            "the first failure's time is kept, the latest error shown"
        );
        t.record("db:5432", Ok(()));
        assert_eq!(t.get("db:5432").label(), "up");
        t.keep_only(["other:1"]);
        assert_eq!(t.get("db:5432"), TargetHealth::Unknown);
    }
}
