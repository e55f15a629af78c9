//! What the agent knows about its tunnel right now: the session, and per forward how far the
//! server has got with it. The handler routes incoming channels from here (only forwards asked
//! for on the live session are reachable), health and metrics read it, and every change is made
//! through its methods; there is no second copy to drift. The reconciler
//! ([`super::reconcile`]) is the only writer of the per-forward states.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::{Semaphore, watch};

use super::metrics::{ClassLabel, ForwardLabel, ForwardMetrics, Metrics};
use super::target_health::{TargetHealth, Targets};
use crate::audit::Audit;
use crate::config::Forward;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ForwardState {
    /// Not requested yet on the current session (or no session).
    Pending,
    /// Asked for on the live session, answer not in yet. Its channels are served: a server
    /// only opens `forwarded-tcpip` for a listener it granted, and it may open one in the same
    /// packet batch as the grant, before the agent has read the answer.
    Requested,
    Granted,
    /// The server said no; the reason says what to do about it.
    Refused(String),
}

impl ForwardState {
    pub fn label(&self) -> &'static str {
        match self {
            ForwardState::Pending => "pending",
            ForwardState::Requested => "requested",
            ForwardState::Granted => "granted",
            ForwardState::Refused(_) => "refused",
        }
    }
}

#[derive(Debug, Clone)]
pub struct ForwardStatus {
    pub forward: Arc<Forward>,
    pub state: ForwardState,
    /// Whether its target answers, as of [`TunnelState::snapshot`].
    pub target: TargetHealth,
    /// Set to why when the forward is closed (removed from the desired set): its open
    /// connections close.
    closed: watch::Sender<Option<String>>,
    /// One permit per open connection, when the forward has its own `max_connections`.
    slots: Option<Arc<Semaphore>>,
}

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
    /// Connected, authenticated, host key verified, every forward that should be open now
    /// granted, the access state readable, and the audit trail writable (or not required).
    pub fn ready(&self) -> bool {
        self.access_problem.is_none()
            && self.audit.is_none()
            && self.connected_via.is_some()
            && self
                .forwards
                .iter()
                .all(|f| f.state == ForwardState::Granted)
            && !(self.target_down_not_ready && self.forwards.iter().any(|f| f.target.is_down()))
    }
}

/// A granted forward, as the handler needs it to serve one connection.
pub struct Routed {
    pub forward: Arc<Forward>,
    pub metrics: ForwardMetrics,
    /// The forward's own connection slots (`max_connections`), if it has a cap.
    pub slots: Option<Arc<Semaphore>>,
    /// Changes to `Some(why)` when the forward is closed (removed from the desired set).
    pub closed: watch::Receiver<Option<String>>,
}

#[derive(Debug)]
pub struct TunnelState {
    inner: Mutex<Snapshot>,
    pub metrics: Metrics,
    /// Unix milliseconds of the last liveness tick.
    heartbeat: AtomicU64,
    /// The audit trail, once `run` has started it; off until then (and in tests that never do).
    audit: OnceLock<Audit>,
    /// Whether each target answers (vendor connections' dials and probes).
    pub targets: Targets,
    /// `health.target_down: not_ready`.
    target_down_not_ready: AtomicBool,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn status(f: &Forward) -> ForwardStatus {
    ForwardStatus {
        forward: Arc::new(f.clone()),
        state: ForwardState::Pending,
        target: TargetHealth::Unknown,
        closed: watch::Sender::new(None),
        slots: slots(f),
    }
}

fn slots(f: &Forward) -> Option<Arc<Semaphore>> {
    f.limits
        .max_connections
        .map(|n| Arc::new(Semaphore::new(n as usize)))
}

impl TunnelState {
    pub fn new(forwards: &[Forward]) -> Arc<Self> {
        let snap = Snapshot {
            forwards: forwards.iter().map(status).collect(),
            ..Snapshot::default()
        };
        let state = Self {
            inner: Mutex::new(snap),
            metrics: Metrics::new(),
            heartbeat: AtomicU64::new(now_ms()),
            audit: OnceLock::new(),
            targets: Targets::default(),
            target_down_not_ready: AtomicBool::new(false),
        };
        state.with(|_| ());
        Arc::new(state)
    }

    /// Runs `f` on the state, then brings the derived metrics up to date.
    fn with<R>(&self, f: impl FnOnce(&mut Snapshot) -> R) -> R {
        // A panic while holding this lock cannot leave it inconsistent: every writer sets whole
        // fields. Keep serving rather than poisoning the agent.
        let mut s = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let r = f(&mut s);
        let m = &self.metrics;
        m.connected.set(i64::from(s.connected_via.is_some()));
        m.ready
            .set(i64::from(s.ready() && self.audit().accepting()));
        m.connected_since.set(
            s.connected_since
                .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                .map_or(0.0, |d| d.as_secs_f64()),
        );
        for f in &s.forwards {
            m.forward_granted
                .get_or_create(&ForwardLabel {
                    forward: f.forward.name.clone(),
                })
                .set(i64::from(f.state == ForwardState::Granted));
        }
        r
    }

    /// Reads the state; the derived metrics only change with the state, so reads skip them
    /// (`route` runs for every vendor connection).
    fn read<R>(&self, f: impl FnOnce(&Snapshot) -> R) -> R {
        f(&self.inner.lock().unwrap_or_else(|p| p.into_inner()))
    }

    pub fn snapshot(&self) -> Snapshot {
        let mut s = self.read(|s| s.clone());
        s.audit = self.audit().refusing();
        for f in &mut s.forwards {
            f.target = self.targets.get(&f.forward.target());
        }
        s.target_down_not_ready = self.target_down_not_ready.load(Ordering::Relaxed);
        s
    }

    /// The forwards listed now (those the access policy keeps open).
    pub fn listed_forwards(&self) -> Vec<Arc<Forward>> {
        self.read(|s| s.forwards.iter().map(|f| f.forward.clone()).collect())
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
        let _ = self.audit.set(audit);
        self.with(|_| ());
    }

    /// The audit trail; off unless one was attached.
    pub fn audit(&self) -> &Audit {
        static OFF: Audit = Audit::off();
        self.audit.get().unwrap_or(&OFF)
    }

    /// The Prometheus text, with `agent_ready` brought up to date first: the audit trail's
    /// health changes on its own thread, not through this state's methods.
    pub fn encode_metrics(&self) -> String {
        self.with(|_| ());
        // Readiness and target health as /readyz reports them (targets are kept apart from
        // the state, so they are read here).
        let snap = self.snapshot();
        let m = &self.metrics;
        m.ready
            .set(i64::from(snap.ready() && self.audit().accepting()));
        for f in &snap.forwards {
            let up = match f.target {
                TargetHealth::Up { .. } => 1,
                TargetHealth::Down { .. } => 0,
                TargetHealth::Unknown => -1,
            };
            let label = ForwardLabel {
                forward: f.forward.name.clone(),
            };
            m.forward_target_up.get_or_create(&label).set(up);
        }
        m.encode()
    }

    /// A session is up; returns its number, which the reconciler's writes must name.
    pub fn connected(&self, via: String, handshake: Duration) -> u64 {
        self.metrics
            .handshake_seconds
            .observe(handshake.as_secs_f64());
        self.with(|s| {
            s.connected_via = Some(via);
            s.connected_since = Some(SystemTime::now());
            s.session += 1;
            s.session
        })
    }

    /// The number of the live session, if one is up.
    pub fn session(&self) -> Option<u64> {
        self.read(|s| s.connected_via.is_some().then_some(s.session))
    }

    /// The session is gone: nothing is granted any more.
    pub fn disconnected(&self, class: &str, reason: String) {
        let was_up = self.with(|s| {
            let was_up = s.connected_via.take().is_some();
            if was_up {
                s.reconnects += 1;
            }
            s.connected_since = None;
            for f in &mut s.forwards {
                f.state = ForwardState::Pending;
            }
            was_up
        });
        if was_up && class != "shutdown" {
            self.metrics.reconnects.inc();
        }
        if class != "shutdown" {
            self.set_error(class, reason);
        }
    }

    pub fn set_error(&self, class: &str, reason: String) {
        self.metrics
            .errors
            .get_or_create(&ClassLabel {
                class: class.into(),
            })
            .inc();
        self.with(|s| {
            if let Some((old, _)) = &s.last_error {
                self.metrics
                    .last_error
                    .get_or_create(&ClassLabel { class: old.clone() })
                    .set(0);
            }
            self.metrics
                .last_error
                .get_or_create(&ClassLabel {
                    class: class.into(),
                })
                .set(1);
            s.last_error = Some((class.to_string(), reason));
        });
    }

    /// Sets the state of `forward` on session number `session`, if that session is still the
    /// live one and the forward is still the one under its name (a reload may have replaced it
    /// while its request was in flight).
    pub fn set_forward(&self, session: u64, forward: &Forward, state: ForwardState) {
        self.with(|s| {
            if s.connected_via.is_none() || s.session != session {
                return;
            }
            if let Some(f) = s
                .forwards
                .iter_mut()
                .find(|f| f.forward.same_service(forward))
            {
                f.state = state;
            }
        });
    }

    /// Makes the list of forwards equal to `desired`, in its order: forwards for the same
    /// service keep their state and connections (new limits and `allow` apply to new
    /// connections); new or
    /// changed ones start pending; removed or changed ones stop routing at once and their open
    /// connections close with `why(name)`. Returns the forwards that left the list.
    pub fn set_forwards<'a>(
        &self,
        desired: &[Forward],
        why: impl Fn(&str) -> &'a str,
    ) -> Vec<Arc<Forward>> {
        self.with(|s| {
            let mut old = std::mem::take(&mut s.forwards);
            s.forwards = desired
                .iter()
                .map(
                    |f| match old.iter().position(|o| o.forward.same_service(f)) {
                        Some(i) => {
                            let mut kept = old.swap_remove(i);
                            if kept.forward.limits != f.limits {
                                kept.slots = slots(f);
                            }
                            if *kept.forward != *f {
                                kept.forward = Arc::new(f.clone());
                            }
                            kept
                        }
                        None => status(f),
                    },
                )
                .collect();
            old.into_iter()
                .map(|gone| {
                    gone.closed
                        .send_replace(Some(why(&gone.forward.name).to_string()));
                    if !s
                        .forwards
                        .iter()
                        .any(|f| f.forward.name == gone.forward.name)
                    {
                        self.metrics.forward_granted.remove(&ForwardLabel {
                            forward: gone.forward.name.clone(),
                        });
                    }
                    gone.forward
                })
                .collect()
        })
    }

    /// Records what the access policy keeps closed (set by `crate::access`).
    pub fn set_access(&self, closed: Vec<PolicyClosed>, problem: Option<String>) {
        self.with(|s| {
            s.policy_closed = closed;
            s.access_problem = problem;
        });
    }

    /// The forward the server means by (`address`, `port`) in a forwarded-tcpip open: one
    /// granted, or asked for, on the live session. Nothing else is reachable.
    pub fn route(&self, address: &str, port: u32) -> Option<Routed> {
        let f = self.read(|s| {
            s.forwards
                .iter()
                .find(|f| {
                    matches!(f.state, ForwardState::Requested | ForwardState::Granted)
                        && u32::from(f.forward.remote_port) == port
                        && same_bind_address(&f.forward.remote_addr, address)
                })
                .map(|f| (f.forward.clone(), f.closed.subscribe(), f.slots.clone()))
        })?;
        Some(Routed {
            metrics: self.metrics.forward(&f.0.name),
            forward: f.0,
            closed: f.1,
            slots: f.2,
        })
    }

    /// Marks the process loop alive (called by a ticker task on the runtime).
    pub fn beat(&self) {
        self.heartbeat.store(now_ms(), Ordering::Relaxed);
    }

    /// Time since the last liveness tick: large means the runtime is stuck.
    pub fn since_heartbeat(&self) -> Duration {
        Duration::from_millis(now_ms().saturating_sub(self.heartbeat.load(Ordering::Relaxed)))
    }
}

/// Servers echo the bind address as requested, but spell the wildcard several ways.
fn same_bind_address(requested: &str, announced: &str) -> bool {
    let wildcard = |a: &str| matches!(a, "" | "*" | "0.0.0.0" | "::");
    requested.eq_ignore_ascii_case(announced) || (wildcard(requested) && wildcard(announced))
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
        }
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
