//! What the agent knows about its tunnel right now, as four parts, each its own type:
//! - the routing table ([`RoutingTable`]): the session number, and per forward how far the
//!   server has got with it; the handler routes incoming channels from it (only forwards asked
//!   for on the live session are reachable);
//! - the health record ([`HealthRecord`], [`Heartbeat`], each target's health): what
//!   [`Snapshot`] reports to /healthz, /readyz and `agent health`;
//! - the metrics ([`Metrics`]): the values derived from the other parts are brought up to date
//!   on every change;
//! - the audit trail ([`AuditSlot`]), once `run` has started it.
//!
//! [`TunnelState`] composes them, and every change is made through its methods, which keep the
//! parts in step; there is no second copy to drift. The reconciler ([`super::reconcile`]) is
//! the only writer of the per-forward states.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::health::{HealthRecord, Heartbeat};
pub use super::health::{PolicyClosed, Snapshot};
use super::metrics::Metrics;
pub use super::routes::{ForwardState, ForwardStatus, Routed, RoutingTable};
use super::target_health::Targets;
use crate::audit::{Audit, AuditSlot};
use crate::config::Forward;

/// The routing table and the health record, under one lock: a snapshot never shows a session
/// without its forwards' states.
#[derive(Debug)]
struct Inner {
    table: RoutingTable,
    record: HealthRecord,
}

#[derive(Debug)]
pub struct TunnelState {
    inner: Mutex<Inner>,
    pub metrics: Metrics,
    heartbeat: Heartbeat,
    audit: AuditSlot,
    /// Whether each target answers (vendor connections' dials and probes).
    pub targets: Targets,
    /// `health.target_down: not_ready`.
    target_down_not_ready: AtomicBool,
    /// Counts the changes made through this state's methods (see [`TunnelState::changes`]).
    changes: tokio::sync::watch::Sender<u64>,
}

impl TunnelState {
    pub fn new(forwards: &[Forward]) -> Arc<Self> {
        let state = Self {
            inner: Mutex::new(Inner {
                table: RoutingTable::new(forwards),
                // Listed from the start: what the caller decided is open.
                record: HealthRecord {
                    decided: forwards.iter().map(|f| f.name.clone()).collect(),
                    ..HealthRecord::default()
                },
            }),
            metrics: Metrics::new(),
            heartbeat: Heartbeat::default(),
            audit: AuditSlot::default(),
            targets: Targets::default(),
            target_down_not_ready: AtomicBool::new(false),
            changes: tokio::sync::watch::Sender::new(0),
        };
        state.with(|_| ());
        Arc::new(state)
    }

    /// Runs `f` on the state, then brings the derived metrics up to date.
    fn with<R>(&self, f: impl FnOnce(&mut Inner) -> R) -> R {
        // A panic while holding this lock cannot leave it inconsistent: every writer sets whole
        // fields. Keep serving rather than poisoning the agent.
        let mut s = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let r = f(&mut s);
        let ready = s.record.ready(&s.table) && self.audit().accepting();
        self.metrics
            .observe(s.record.connected_since, ready, s.table.forwards());
        drop(s);
        self.changes.send_modify(|n| *n = n.wrapping_add(1));
        r
    }

    /// Marked changed after every change made through this state's methods (the session, the
    /// forwards' states, the access policy's closures, errors), so a wait for a state can
    /// follow it instead of polling. Target health and the audit trail's health change on
    /// their own: a wait for those re-reads the snapshot now and then as well.
    pub fn changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changes.subscribe()
    }

    /// Reads the state; the derived metrics only change with the state, so reads skip them
    /// (`route` runs for every vendor connection).
    fn read<R>(&self, f: impl FnOnce(&Inner) -> R) -> R {
        f(&self.inner.lock().unwrap_or_else(|p| p.into_inner()))
    }

    pub fn snapshot(&self) -> Snapshot {
        let mut s = self.read(|s| Snapshot::of(&s.record, &s.table));
        s.audit = self.audit().refusing();
        for f in &mut s.forwards {
            f.target = self.targets.get(&f.forward.target());
        }
        s.target_down_not_ready = self.target_down_not_ready.load(Ordering::Relaxed);
        s
    }

    /// The forwards listed now (those the access policy keeps open).
    pub fn listed_forwards(&self) -> Vec<Arc<Forward>> {
        self.read(|s| {
            s.table
                .forwards()
                .iter()
                .map(|f| f.forward.clone())
                .collect()
        })
    }

    /// `health.target_down`: whether a target that is down makes the agent not ready.
    pub fn set_target_down_not_ready(&self, not_ready: bool) {
        self.target_down_not_ready
            .store(not_ready, Ordering::Relaxed);
        self.with(|_| ());
    }

    /// Takes the audit trail into use (once; later calls are ignored). Connections, sessions
    /// and configuration changes are recorded through [`TunnelState::audit`].
    pub fn attach_audit(&self, audit: Audit) {
        self.audit.attach(audit);
        self.with(|_| ());
    }

    /// The audit trail; off unless one was attached.
    pub fn audit(&self) -> &Audit {
        self.audit.get()
    }

    /// The Prometheus text, with `agent_ready` brought up to date first: the audit trail's
    /// health changes on its own thread, not through this state's methods.
    pub fn encode_metrics(&self) -> String {
        self.with(|_| ());
        // Readiness and target health as /readyz reports them (targets are kept apart from
        // the state, so they are read here).
        let snap = self.snapshot();
        self.metrics
            .observe_health(snap.ready() && self.audit().accepting(), &snap.forwards);
        self.metrics.encode()
    }

    /// A session is up; returns its number, which the reconciler's writes must name.
    pub fn connected(&self, via: String, handshake: Duration) -> u64 {
        self.metrics.session_up(handshake);
        self.with(|s| {
            s.record.connected(via);
            s.table.connected()
        })
    }

    /// The number of the live session, if one is up.
    pub fn session(&self) -> Option<u64> {
        self.read(|s| s.table.session())
    }

    /// The session is gone: nothing is granted any more.
    pub fn disconnected(&self, class: &str, reason: String) {
        let was_up = self.with(|s| {
            s.table.disconnected();
            s.record.disconnected()
        });
        if was_up && class != "shutdown" {
            self.metrics.reconnects.inc();
        }
        if class != "shutdown" {
            self.set_error(class, reason);
        }
    }

    pub fn set_error(&self, class: &str, reason: String) {
        self.with(|s| {
            let previous = s.record.set_error(class, reason);
            self.metrics.error(class, previous.as_deref());
        });
    }

    /// Sets the state of `forward` on session number `session`, if that session is still the
    /// live one and the forward is still the one under its name (a reload may have replaced it
    /// while its request was in flight).
    pub fn set_forward(&self, session: u64, forward: &Forward, state: ForwardState) {
        self.with(|s| s.table.set(session, forward, state));
    }

    /// Makes the list of forwards equal to `desired`, in its order (see
    /// [`RoutingTable::replace`]): removed or changed ones stop routing at once and their open
    /// connections close with `why(name)`. Returns the forwards that left the list.
    pub fn set_forwards<'a>(
        &self,
        desired: &[Forward],
        why: impl Fn(&str) -> &'a str,
    ) -> Vec<Arc<Forward>> {
        self.with(|s| {
            let gone = s.table.replace(desired, why);
            for f in &gone {
                if !s.table.forwards().iter().any(|k| k.forward.name == f.name) {
                    self.metrics.forget_forward(&f.name);
                }
            }
            gone
        })
    }

    /// Records the access policy's decision (set by `crate::access`): the forwards it keeps
    /// open, by name (ready only once the reconciler lists exactly these), those it keeps
    /// closed, and why the access state cannot be trusted, if so.
    pub fn set_access(
        &self,
        open: Vec<String>,
        closed: Vec<PolicyClosed>,
        problem: Option<String>,
    ) {
        self.with(|s| {
            s.record.decided = open;
            s.record.policy_closed = closed;
            s.record.access_problem = problem;
        });
    }

    /// The forward the server means by (`address`, `port`) in a forwarded-tcpip open: one
    /// granted, or asked for, on the live session. Nothing else is reachable.
    pub fn route(&self, address: &str, port: u32) -> Option<Routed> {
        self.read(|s| s.table.find(address, port, &self.metrics))
    }

    /// Marks the process loop alive (called by a ticker task on the runtime).
    pub fn beat(&self) {
        self.heartbeat.beat();
    }

    /// Time since the last liveness tick: large means the runtime is stuck.
    pub fn since_heartbeat(&self) -> Duration {
        self.heartbeat.since()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fwd(name: &str, addr: &str, port: u16) -> Forward {
        Forward {
            name: name.into(),
            remote_addr: addr.into(),
            remote_port: port,
            target_host: "127.0.0.1".into(),
            target_port: 80,
            limits: Default::default(),
            access: None,
            tls: None,
            allow: Vec::new(),
            http: None,
            connect: None,
        }
    }

    #[test]
    fn not_ready_between_the_policys_decision_and_the_reconcilers_list() {
        let a = fwd("a", "localhost", 5000);
        let st = TunnelState::new(&[]);
        let n = st.connected("x:22".into(), Duration::from_millis(80));
        st.set_access(vec!["a".into()], Vec::new(), None);
        assert!(
            !st.snapshot().ready(),
            "a is decided open but not listed yet: an empty list is not ready"
        );
        st.set_forwards(std::slice::from_ref(&a), |_| "removed");
        st.set_forward(n, &a, ForwardState::Granted);
        assert!(st.snapshot().ready(), "listed and granted");
        st.set_access(Vec::new(), Vec::new(), None);
        assert!(!st.snapshot().ready(), "a was closed, still listed");
        st.set_forwards(&[], |_| "removed");
        assert!(
            st.snapshot().ready(),
            "nothing is decided open and nothing is listed"
        );
    }

    #[test]
    fn every_change_is_announced_and_reads_are_not() {
        let a = fwd("a", "localhost", 5000);
        let st = TunnelState::new(std::slice::from_ref(&a));
        let mut changes = st.changes();
        assert!(!changes.has_changed().unwrap(), "nothing changed yet");
        let n = st.connected("x:22".into(), Duration::from_millis(80));
        assert!(changes.has_changed().unwrap(), "a session came up");
        changes.mark_unchanged();
        let _ = (st.snapshot(), st.route("localhost", 5000), st.session());
        assert!(!changes.has_changed().unwrap(), "reads change nothing");
        st.set_forward(n, &a, ForwardState::Granted);
        assert!(changes.has_changed().unwrap(), "a forward was granted");
        changes.mark_unchanged();
        st.disconnected("io", "gone".into());
        assert!(changes.has_changed().unwrap(), "the session went down");
    }

    #[test]
    fn routes_only_forwards_asked_for_on_the_session_by_address_and_port() {
        let (a, b) = (fwd("a", "localhost", 5000), fwd("b", "*", 5001));
        let st = TunnelState::new(&[a.clone(), b.clone()]);
        let n = st.connected("x:22".into(), Duration::from_millis(80));
        assert!(
            st.route("localhost", 5000).is_none(),
            "pending forwards are not routable"
        );
        st.set_forward(n, &a, ForwardState::Requested);
        assert_eq!(
            st.route("localhost", 5000).unwrap().forward.name,
            "a",
            "a forward whose request is in flight is routable"
        );
        st.set_forward(n, &a, ForwardState::Granted);
        st.set_forward(n, &b, ForwardState::Granted);
        assert_eq!(st.route("localhost", 5000).unwrap().forward.name, "a");
        assert!(st.route("127.0.0.2", 5000).is_none());
        assert!(st.route("localhost", 5002).is_none());
        assert_eq!(st.route("0.0.0.0", 5001).unwrap().forward.name, "b");
        st.set_forward(n, &b, ForwardState::Refused("no".into()));
        assert!(
            st.route("0.0.0.0", 5001).is_none(),
            "refused is not routable"
        );
        st.set_forward(n, &b, ForwardState::Granted);
        assert!(st.snapshot().ready());
        assert!(st.metrics.encode().contains("agent_ready 1"));
        st.disconnected("network", "gone".into());
        assert!(st.route("localhost", 5000).is_none());
        st.set_forward(n, &a, ForwardState::Granted);
        assert_eq!(
            st.snapshot().forwards[0].state,
            ForwardState::Pending,
            "a late answer on a session that ended changes nothing"
        );
        let n2 = st.connected("x:22".into(), Duration::from_millis(80));
        st.set_forward(n, &a, ForwardState::Granted);
        assert!(
            st.route("localhost", 5000).is_none(),
            "nor on the next session"
        );
        st.set_forward(n2, &a, ForwardState::Granted);
        assert!(st.route("localhost", 5000).is_some());
        assert_eq!(st.snapshot().reconnects, 1);
        let text = st.metrics.encode();
        assert!(
            text.contains("agent_ready 0") && text.contains("agent_reconnects_total 1"),
            "{text}"
        );
        assert!(
            text.contains("agent_last_error{class=\"network\"} 1"),
            "{text}"
        );
    }

    #[test]
    fn set_forwards_keeps_unchanged_ones_and_closes_removed_and_changed_ones() {
        let (a, b, c) = (
            fwd("a", "localhost", 5000),
            fwd("b", "localhost", 5001),
            fwd("c", "localhost", 5002),
        );
        let st = TunnelState::new(&[a.clone(), b.clone()]);
        let n = st.connected("x:22".into(), Duration::from_millis(80));
        st.set_forward(n, &a, ForwardState::Granted);
        st.set_forward(n, &b, ForwardState::Granted);
        let route_a = st.route("localhost", 5000).unwrap();
        let route_b = st.route("localhost", 5001).unwrap();
        let b2 = Forward {
            target_port: 81,
            ..b.clone()
        };
        let gone = st.set_forwards(&[c.clone(), a.clone(), b2.clone()], |_| "removed");
        assert_eq!(gone.len(), 1);
        assert_eq!(*gone[0], b, "the old definition of b left");
        assert!(route_a.closed.borrow().is_none(), "a is untouched");
        assert_eq!(route_b.closed.borrow().as_deref(), Some("removed"));
        let snap = st.snapshot();
        let names: Vec<_> = snap
            .forwards
            .iter()
            .map(|f| f.forward.name.as_str())
            .collect();
        assert_eq!(names, ["c", "a", "b"], "the desired order");
        assert_eq!(snap.forwards[1].state, ForwardState::Granted);
        assert_eq!(snap.forwards[2].state, ForwardState::Pending);
        assert_eq!(*snap.forwards[2].forward, b2);
        st.set_forward(n, &b, ForwardState::Granted);
        assert_eq!(
            st.snapshot().forwards[2].state,
            ForwardState::Pending,
            "a late answer for the old definition does not touch the new one"
        );
        assert!(
            st.set_forwards(&[c.clone(), a.clone(), b2], |_| "removed")
                .is_empty()
        );
        // A new `allow` keeps the forward and its connections, and routes new ones with it.
        let a2 = Forward {
            allow: vec!["10.0.0.0/8".parse().unwrap()],
            ..a.clone()
        };
        assert!(st.set_forwards(&[c, a2.clone()], |_| "removed").len() == 1);
        assert!(route_a.closed.borrow().is_none(), "a is kept");
        assert_eq!(*st.route("localhost", 5000).unwrap().forward, a2);
    }
}
