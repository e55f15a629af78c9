//! What the agent knows about its tunnel right now: the session, and per forward whether the
//! server granted it. The handler routes incoming channels from here (only granted forwards are
//! reachable), health and metrics read it, and every change is made through its methods; there
//! is no second copy to drift.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::watch;

use super::metrics::{ClassLabel, ForwardLabel, ForwardMetrics, Metrics};
use crate::config::Forward;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ForwardState {
    /// Not requested yet on the current session (or no session).
    Pending,
    Granted,
    /// The server said no; the reason says what to do about it.
    Refused(String),
}

impl ForwardState {
    pub fn label(&self) -> &'static str {
        match self {
            ForwardState::Pending => "pending",
            ForwardState::Granted => "granted",
            ForwardState::Refused(_) => "refused",
        }
    }
}

#[derive(Debug, Clone)]
pub struct ForwardStatus {
    pub forward: Arc<Forward>,
    pub state: ForwardState,
    /// Flipped to true when the forward is removed (reload): its open connections close.
    closed: watch::Sender<bool>,
}

#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// "host:port (address)" of the live session, if any.
    pub connected_via: Option<String>,
    pub connected_since: Option<SystemTime>,
    pub reconnects: u64,
    pub last_error: Option<(String, String)>,
    pub forwards: Vec<ForwardStatus>,
}

impl Snapshot {
    /// Connected, authenticated, host key verified, and every forward granted.
    pub fn ready(&self) -> bool {
        self.connected_via.is_some()
            && self
                .forwards
                .iter()
                .all(|f| f.state == ForwardState::Granted)
    }
}

/// A granted forward, as the handler needs it to serve one connection.
pub struct Route {
    pub forward: Arc<Forward>,
    pub metrics: ForwardMetrics,
    /// Resolves (changes to true) when the forward is removed by a reload.
    pub removed: watch::Receiver<bool>,
}

#[derive(Debug)]
pub struct TunnelState {
    inner: Mutex<Snapshot>,
    pub metrics: Metrics,
    /// Unix milliseconds of the last liveness tick.
    heartbeat: AtomicU64,
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
        closed: watch::Sender::new(false),
    }
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
        m.ready.set(i64::from(s.ready()));
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
        self.read(|s| s.clone())
    }

    pub fn connected(&self, via: String, handshake: Duration) {
        self.metrics
            .handshake_seconds
            .observe(handshake.as_secs_f64());
        self.with(|s| {
            s.connected_via = Some(via);
            s.connected_since = Some(SystemTime::now());
        });
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

    pub fn set_forward(&self, name: &str, state: ForwardState) {
        self.with(|s| {
            if let Some(f) = s.forwards.iter_mut().find(|f| f.forward.name == name) {
                f.state = state;
            }
        });
    }

    /// Adds a forward (reload); it starts pending.
    pub fn add_forward(&self, forward: &Forward) {
        self.with(|s| s.forwards.push(status(forward)));
    }

    /// Removes a forward (reload): it stops routing at once and its open connections close.
    pub fn remove_forward(&self, name: &str) {
        self.with(|s| {
            if let Some(i) = s.forwards.iter().position(|f| f.forward.name == name) {
                let f = s.forwards.remove(i);
                f.closed.send_replace(true);
                self.metrics.forward_granted.remove(&ForwardLabel {
                    forward: name.into(),
                });
            }
        });
    }

    /// The granted forward the server means by (`address`, `port`) in a forwarded-tcpip open.
    pub fn route(&self, address: &str, port: u32) -> Option<Route> {
        let f = self.read(|s| {
            s.forwards
                .iter()
                .find(|f| {
                    f.state == ForwardState::Granted
                        && u32::from(f.forward.remote_port) == port
                        && same_bind_address(&f.forward.remote_addr, address)
                })
                .map(|f| (f.forward.clone(), f.closed.subscribe()))
        })?;
        Some(Route {
            metrics: self.metrics.forward(&f.0.name),
            forward: f.0,
            removed: f.1,
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
        }
    }

    #[test]
    fn routes_only_granted_forwards_by_address_and_port() {
        let st = TunnelState::new(&[fwd("a", "localhost", 5000), fwd("b", "*", 5001)]);
        assert!(
            st.route("localhost", 5000).is_none(),
            "pending forwards are not routable"
        );
        st.set_forward("a", ForwardState::Granted);
        st.set_forward("b", ForwardState::Granted);
        assert_eq!(st.route("localhost", 5000).unwrap().forward.name, "a");
        assert!(st.route("127.0.0.2", 5000).is_none());
        assert!(st.route("localhost", 5002).is_none());
        assert_eq!(st.route("0.0.0.0", 5001).unwrap().forward.name, "b");
        assert!(!st.snapshot().ready(), "not connected yet");
        st.connected("x:22".into(), Duration::from_millis(80));
        assert!(st.snapshot().ready());
        assert!(st.metrics.encode().contains("agent_ready 1"));
        st.disconnected("network", "gone".into());
        assert!(st.route("localhost", 5000).is_none());
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
    fn removing_a_forward_stops_routing_and_signals_its_connections() {
        let st = TunnelState::new(&[fwd("a", "localhost", 5000)]);
        st.set_forward("a", ForwardState::Granted);
        let route = st.route("localhost", 5000).unwrap();
        assert!(!*route.removed.borrow());
        st.remove_forward("a");
        assert!(*route.removed.borrow());
        assert!(st.route("localhost", 5000).is_none());
        st.add_forward(&fwd("c", "localhost", 5002));
        assert_eq!(st.snapshot().forwards[0].forward.name, "c");
    }
}
