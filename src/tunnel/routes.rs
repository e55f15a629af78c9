//! The routing table: the forwards listed now, how far the server has got with each on the
//! live session, and which of them a channel the server opens reaches. Only forwards asked for
//! on the live session are reachable. The reconciler ([`super::reconcile`]) is the only writer
//! of the per-forward states, through [`super::state::TunnelState`].

use std::sync::Arc;

use tokio::sync::{Semaphore, watch};

use super::metrics::{ForwardMetrics, Metrics};
use super::target_health::TargetHealth;
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
    /// Whether its target answers, as of [`super::state::TunnelState::snapshot`].
    pub target: TargetHealth,
    /// Set to why when the forward is closed (removed from the desired set): its open
    /// connections close.
    closed: watch::Sender<Option<String>>,
    /// One permit per open connection, when the forward has its own `max_connections`.
    slots: Option<Arc<Semaphore>>,
}

impl ForwardStatus {
    fn new(f: &Forward) -> Self {
        ForwardStatus {
            forward: Arc::new(f.clone()),
            state: ForwardState::Pending,
            target: TargetHealth::Unknown,
            closed: watch::Sender::new(None),
            slots: slots(f),
        }
    }
}

fn slots(f: &Forward) -> Option<Arc<Semaphore>> {
    f.limits
        .max_connections
        .map(|n| Arc::new(Semaphore::new(n as usize)))
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

/// The forwards listed now and their states, on session number `session`.
#[derive(Debug, Clone, Default)]
pub struct RoutingTable {
    forwards: Vec<ForwardStatus>,
    /// Counts sessions: the per-forward states belong to session number `session`, and a late
    /// answer from an earlier one cannot change them.
    session: u64,
    /// Whether session number `session` is up.
    live: bool,
}

impl RoutingTable {
    pub fn new(forwards: &[Forward]) -> Self {
        Self {
            forwards: forwards.iter().map(ForwardStatus::new).collect(),
            ..Self::default()
        }
    }

    /// The forwards listed now, in order.
    pub fn forwards(&self) -> &[ForwardStatus] {
        &self.forwards
    }

    /// The number of the last session (live or not).
    pub fn last_session(&self) -> u64 {
        self.session
    }

    /// The number of the live session, if one is up.
    pub fn session(&self) -> Option<u64> {
        self.live.then_some(self.session)
    }

    /// A session is up; returns its number, which writes must name.
    pub fn connected(&mut self) -> u64 {
        self.live = true;
        self.session += 1;
        self.session
    }

    /// The session is gone: nothing is granted any more.
    pub fn disconnected(&mut self) {
        self.live = false;
        for f in &mut self.forwards {
            f.state = ForwardState::Pending;
        }
    }

    /// Sets the state of `forward` on session number `session`, if that session is still the
    /// live one and the forward is still the one under its name (a reload may have replaced it
    /// while its request was in flight).
    pub fn set(&mut self, session: u64, forward: &Forward, state: ForwardState) {
        if !self.live || self.session != session {
            return;
        }
        if let Some(f) = self
            .forwards
            .iter_mut()
            .find(|f| f.forward.same_service(forward))
        {
            f.state = state;
        }
    }

    /// Makes the list equal to `desired`, in its order: forwards for the same service keep
    /// their state and connections (new limits and `allow` apply to new connections); new or
    /// changed ones start pending; removed or changed ones stop routing at once and their open
    /// connections close with `why(name)`. Returns the forwards that left the list.
    pub fn replace<'a>(
        &mut self,
        desired: &[Forward],
        why: impl Fn(&str) -> &'a str,
    ) -> Vec<Arc<Forward>> {
        let mut old = std::mem::take(&mut self.forwards);
        self.forwards = desired
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
                    None => ForwardStatus::new(f),
                },
            )
            .collect();
        old.into_iter()
            .map(|gone| {
                gone.closed
                    .send_replace(Some(why(&gone.forward.name).to_string()));
                gone.forward
            })
            .collect()
    }

    /// The forward the server means by (`address`, `port`) in a forwarded-tcpip open: one
    /// granted, or asked for, on the live session, with its counters from `metrics`. Nothing
    /// else is reachable.
    pub fn find(&self, address: &str, port: u32, metrics: &Metrics) -> Option<Routed> {
        self.forwards
            .iter()
            .find(|f| {
                matches!(f.state, ForwardState::Requested | ForwardState::Granted)
                    && u32::from(f.forward.remote_port) == port
                    && same_bind_address(&f.forward.remote_addr, address)
            })
            .map(|f| Routed {
                metrics: metrics.forward(&f.forward.name),
                forward: f.forward.clone(),
                closed: f.closed.subscribe(),
                slots: f.slots.clone(),
            })
    }
}

/// Servers echo the bind address as requested, but spell the wildcard several ways.
fn same_bind_address(requested: &str, announced: &str) -> bool {
    let wildcard = |a: &str| matches!(a, "" | "*" | "0.0.0.0" | "::");
    requested.eq_ignore_ascii_case(announced) || (wildcard(requested) && wildcard(announced))
}
