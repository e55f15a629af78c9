//! What the agent knows about its tunnel right now: the session, and per forward whether the
//! server granted it. The handler routes incoming channels from here (only granted forwards are
//! reachable), and health reporting reads it; there is no second copy to drift.

use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use crate::config::Forward;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ForwardState {
    /// Not requested yet on the current session (or no session).
    Pending,
    Granted,
    /// The server said no; the reason says what to do about it.
    Refused(String),
}

#[derive(Debug, Clone)]
pub struct ForwardStatus {
    pub forward: Arc<Forward>,
    pub state: ForwardState,
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

#[derive(Debug, Default)]
pub struct TunnelState {
    inner: Mutex<Snapshot>,
}

impl TunnelState {
    pub fn new(forwards: &[Forward]) -> Arc<Self> {
        let snap = Snapshot {
            forwards: forwards
                .iter()
                .map(|f| ForwardStatus {
                    forward: Arc::new(f.clone()),
                    state: ForwardState::Pending,
                })
                .collect(),
            ..Snapshot::default()
        };
        Arc::new(Self {
            inner: Mutex::new(snap),
        })
    }

    fn with<R>(&self, f: impl FnOnce(&mut Snapshot) -> R) -> R {
        // A panic while holding this lock cannot leave it inconsistent: every writer sets whole
        // fields. Keep serving rather than poisoning the agent.
        let mut guard = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut guard)
    }

    pub fn snapshot(&self) -> Snapshot {
        self.with(|s| s.clone())
    }

    pub fn connected(&self, via: String) {
        self.with(|s| {
            s.connected_via = Some(via);
            s.connected_since = Some(SystemTime::now());
        });
    }

    /// The session is gone: nothing is granted any more.
    pub fn disconnected(&self, class: &str, reason: String) {
        self.with(|s| {
            if s.connected_via.take().is_some() {
                s.reconnects += 1;
            }
            s.connected_since = None;
            s.last_error = Some((class.to_string(), reason));
            for f in &mut s.forwards {
                f.state = ForwardState::Pending;
            }
        });
    }

    pub fn set_error(&self, class: &str, reason: String) {
        self.with(|s| s.last_error = Some((class.to_string(), reason)));
    }

    pub fn set_forward(&self, name: &str, state: ForwardState) {
        self.with(|s| {
            if let Some(f) = s.forwards.iter_mut().find(|f| f.forward.name == name) {
                f.state = state;
            }
        });
    }

    /// The granted forward the server means by (`address`, `port`) in a forwarded-tcpip open.
    pub fn route(&self, address: &str, port: u32) -> Option<Arc<Forward>> {
        self.with(|s| {
            s.forwards
                .iter()
                .find(|f| {
                    f.state == ForwardState::Granted
                        && u32::from(f.forward.remote_port) == port
                        && same_bind_address(&f.forward.remote_addr, address)
                })
                .map(|f| f.forward.clone())
        })
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
        assert_eq!(st.route("localhost", 5000).unwrap().name, "a");
        assert!(st.route("127.0.0.2", 5000).is_none());
        assert!(st.route("localhost", 5002).is_none());
        assert_eq!(st.route("0.0.0.0", 5001).unwrap().name, "b");
        assert!(!st.snapshot().ready(), "not connected yet");
        st.connected("x:22".into());
        assert!(st.snapshot().ready());
        st.disconnected("network", "gone".into());
        assert!(st.route("localhost", 5000).is_none());
        assert_eq!(st.snapshot().reconnects, 1);
    }
}
