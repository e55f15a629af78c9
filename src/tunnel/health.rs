//! What health questions are answered from: the session's record (connected where and since
//! when, reconnects, the last error, what the access policy keeps closed), the liveness
//! heartbeat, and the [`Snapshot`] /healthz, /readyz, `agent health` and the metrics read.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::routes::{ForwardState, ForwardStatus, RoutingTable};

#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// "host:port (address)" of the live session, if any.
    pub connected_via: Option<String>,
    pub connected_since: Option<SystemTime>,
    pub reconnects: u64,
    pub last_error: Option<(String, String)>,
    pub forwards: Vec<ForwardStatus>,
    /// Counts sessions: the per-forward states belong to session number `session`, and a late
    /// answer from an earlier one cannot change them.
    pub session: u64,
    /// Configured forwards the customer's access policy keeps closed now (not failures).
    pub policy_closed: Vec<PolicyClosed>,
    /// Why the access state (grants, pauses) cannot be trusted, if so: not ready until fixed.
    pub access_problem: Option<String>,
    /// The forwards the access policy keeps open now, by name: ready only once `forwards`
    /// lists exactly these (not in the moment between a decision and the reconciler's list).
    pub decided: Vec<String>,
    /// Why vendor connections are refused for want of an audit trail (`audit.on_failure:
    /// refuse` and the file cannot be written); read from the audit handle by `snapshot()`.
    pub audit: Option<String>,
    /// `health.target_down: not_ready`: a forward whose target is down makes the agent not
    /// ready (by default it is reported as degraded only).
    pub target_down_not_ready: bool,
}

/// A forward closed by the customer's access policy: why, and until when if that is known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyClosed {
    pub name: String,
    pub remote: String,
    pub target: String,
    /// In a word or two, nothing the customer wrote ("paused", "not granted"): for `/readyz`.
    pub label: &'static str,
    /// The whole sentence, who paused and why included: for logs and `agent status` only.
    pub why: String,
    pub until: Option<SystemTime>,
}

impl Snapshot {
    /// The session's record and the routing table, as one picture; what is kept elsewhere
    /// (each target's health, the audit trail's, `health.target_down`) is left at its default
    /// for the caller to fill in.
    pub(super) fn of(record: &HealthRecord, table: &RoutingTable) -> Self {
        Snapshot {
            connected_via: record.connected_via.clone(),
            connected_since: record.connected_since,
            reconnects: record.reconnects,
            last_error: record.last_error.clone(),
            forwards: table.forwards().to_vec(),
            session: table.last_session(),
            policy_closed: record.policy_closed.clone(),
            access_problem: record.access_problem.clone(),
            decided: record.decided.clone(),
            audit: None,
            target_down_not_ready: false,
        }
    }

    /// Connected, authenticated, host key verified, every forward that should be open now
    /// granted, the access state readable, and the audit trail writable (or not required).
    pub fn ready(&self) -> bool {
        self.audit.is_none()
            && serving(
                self.access_problem.as_deref(),
                self.connected_via.is_some(),
                &self.forwards,
                &self.decided,
            )
            && !(self.target_down_not_ready && self.forwards.iter().any(|f| f.target.is_down()))
    }
}

/// The session's side of health: what [`Snapshot`] reports besides the forwards.
#[derive(Debug, Clone, Default)]
pub struct HealthRecord {
    pub connected_via: Option<String>,
    pub connected_since: Option<SystemTime>,
    pub reconnects: u64,
    /// (class, message) of the last failure.
    pub last_error: Option<(String, String)>,
    pub policy_closed: Vec<PolicyClosed>,
    pub access_problem: Option<String>,
    /// The forwards the access policy keeps open now, by name ([`Snapshot::decided`]).
    pub decided: Vec<String>,
}

impl HealthRecord {
    /// Ready as far as this record and `table` tell (the audit trail, target health and
    /// `health.target_down` are the caller's to add).
    pub fn ready(&self, table: &RoutingTable) -> bool {
        serving(
            self.access_problem.as_deref(),
            self.connected_via.is_some(),
            table.forwards(),
            &self.decided,
        )
    }

    pub fn connected(&mut self, via: String) {
        self.connected_via = Some(via);
        self.connected_since = Some(SystemTime::now());
    }

    /// Returns whether a session was up.
    pub fn disconnected(&mut self) -> bool {
        let was_up = self.connected_via.take().is_some();
        if was_up {
            self.reconnects += 1;
        }
        self.connected_since = None;
        was_up
    }

    /// Returns the class of the error it replaces, if any.
    pub fn set_error(&mut self, class: &str, reason: String) -> Option<String> {
        self.last_error
            .replace((class.to_string(), reason))
            .map(|(old, _)| old)
    }
}

/// The access state readable, a session up, and every forward that should be open granted.
fn serving(
    access_problem: Option<&str>,
    connected: bool,
    forwards: &[ForwardStatus],
    decided: &[String],
) -> bool {
    access_problem.is_none()
        && connected
        && forwards.len() == decided.len()
        && forwards
            .iter()
            .all(|f| f.state == ForwardState::Granted && decided.contains(&f.forward.name))
}

/// When the process loop last showed it was alive.
#[derive(Debug)]
pub struct Heartbeat(AtomicU64);

impl Default for Heartbeat {
    fn default() -> Self {
        Self(AtomicU64::new(now_ms()))
    }
}

impl Heartbeat {
    /// Marks the process loop alive (called by a ticker task on the runtime).
    pub fn beat(&self) {
        self.0.store(now_ms(), Ordering::Relaxed);
    }

    /// Time since the last beat: large means the runtime is stuck.
    pub fn since(&self) -> Duration {
        Duration::from_millis(now_ms().saturating_sub(self.0.load(Ordering::Relaxed)))
    }
}

/// Unix milliseconds.
fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
