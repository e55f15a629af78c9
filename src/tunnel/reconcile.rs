//! The one place that makes what the server has granted equal what should be open.
//!
//! The *desired* set of forwards arrives on a watch channel (today the config's forwards; the
//! customer's access policy will filter it). Without a session, the reconciler only keeps the
//! agent's state listing that set. On a session it keeps, per desired forward, one task that
//! asks the server for it, retries with backoff while it is refused, and cancels it on the
//! server once it leaves the set; a request that times out is cancelled before it is retried,
//! so a late grant cannot leave the port held by our own earlier request. A changed forward is
//! asked for again only after its old definition is cancelled, so the two never race for one
//! port. A server that refuses a cancel (Dropbear answers every `cancel-tcpip-forward` with
//! a failure) keeps listening for this session until it ends: its connections are refused by
//! the agent meanwhile, and when the forward is wanted again and the server refuses the new
//! request because it still holds that listener, the listener is used.
//!
//! The server is reached through [`ForwardPort`], which the SSH session implements: this module
//! knows nothing of russh, and tests drive it with a fake under paused time.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinSet;
use tracing::{Instrument, debug, info, info_span, warn};

use super::backoff::Backoff;
use super::state::{ForwardState, TunnelState};
use crate::config::Forward;

/// Refused forwards are retried from this delay, growing to the cap.
pub const FORWARD_RETRY_INITIAL: Duration = Duration::from_secs(1);
/// Kept short so a standby agent takes over soon after the active one's ports are released.
pub const FORWARD_RETRY_MAX: Duration = Duration::from_secs(10);

/// What an open connection of a forward that left the desired set is told.
pub const REMOVED: &str = "the forward was removed from the configuration";
/// ... and of one whose definition changed (same name, another remote or target).
pub const CHANGED: &str =
    "the forward was changed in the configuration (its new definition starts now)";

/// The forwards that should be open now (the reconciler's input), and why each forward that
/// left the set was closed: by default [`REMOVED`], or what the customer's access policy said.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Desired {
    pub forwards: Vec<Forward>,
    /// (forward name, why it is closed) for configured forwards the policy keeps closed.
    pub closed: Vec<(String, String)>,
}

impl Desired {
    /// Every forward, none closed: a configuration without access policies.
    pub fn all(forwards: Vec<Forward>) -> Self {
        Self {
            forwards,
            closed: Vec::new(),
        }
    }

    /// What an open connection of `name` is told when the forward leaves the set.
    pub fn why_closed(&self, name: &str) -> &str {
        self.closed
            .iter()
            .find(|(n, _)| n == name)
            .map_or(REMOVED, |(_, why)| why.as_str())
    }
}

/// Why the server did not grant a forward.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ForwardError {
    #[error(
        "the server refused it (the port is still held by an earlier connection, used by something else, or not permitted for this user)"
    )]
    Refused,
    #[error("no answer from the server within {}s", .0.as_secs_f32())]
    Timeout(Duration),
    #[error("the session is gone")]
    SessionGone,
}

/// The server side of remote forwarding, as the reconciler needs it (the SSH session).
/// Neither call needs its own timeout: the reconciler bounds both.
pub trait ForwardPort: Send + Sync + 'static {
    /// Asks the server to listen for `forward`; Ok once it granted it.
    fn request(&self, forward: &Forward) -> impl Future<Output = Result<(), ForwardError>> + Send;
    /// Asks the server to stop listening for `forward`.
    fn cancel(&self, forward: &Forward) -> impl Future<Output = Result<(), ForwardError>> + Send;
}

/// Timings of the reconciler.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// Bound on each forward request and each cancel (`timeouts.handshake`).
    pub request_timeout: Duration,
    pub retry_initial: Duration,
    pub retry_max: Duration,
}

impl Timing {
    pub fn new(request_timeout: Duration) -> Self {
        Self {
            request_timeout,
            retry_initial: FORWARD_RETRY_INITIAL,
            retry_max: FORWARD_RETRY_MAX,
        }
    }
}

/// Asks the customer's access policy, fresh from its source of truth (the state on disk that
/// every agent of a site shares), whether a forward may be asked for now. The desired set can be
/// a moment old: another agent sharing the state may have paused the forward and cancelled it
/// on the server, and a standby that asked for the freed port on its stale copy would hand the
/// vendor the port. No gate (a configuration without access control): always yes.
#[derive(Clone, Default)]
pub struct Gate(Option<mpsc::Sender<GateQuery>>);

/// One question to the gate's answerer (the access controller).
pub struct GateQuery {
    pub forward: String,
    pub reply: oneshot::Sender<bool>,
}

/// An answer that does not come in this time is a no: closed is the safe side.
const GATE_TIMEOUT: Duration = Duration::from_secs(5);

impl Gate {
    pub fn new(queries: mpsc::Sender<GateQuery>) -> Self {
        Self(Some(queries))
    }

    /// Whether `forward` is open now by a fresh reading of the access state.
    pub async fn allows(&self, forward: &str) -> bool {
        let Some(queries) = &self.0 else {
            return true;
        };
        let (reply, answer) = oneshot::channel();
        let query = GateQuery {
            forward: forward.to_string(),
            reply,
        };
        if queries.send(query).await.is_err() {
            return false;
        }
        matches!(
            tokio::time::timeout(GATE_TIMEOUT, answer).await,
            Ok(Ok(true))
        )
    }
}

pub struct Reconciler {
    state: Arc<TunnelState>,
    desired: watch::Receiver<Desired>,
    pub timing: Timing,
    gate: Gate,
}

/// A desired forward's task on the live session.
struct Held {
    forward: Arc<Forward>,
    /// Set to false when the forward leaves the desired set: the task cancels it and ends.
    wanted: watch::Sender<bool>,
    /// Closed when the task has ended (its port is free for a new definition).
    done: watch::Receiver<()>,
}

impl Reconciler {
    pub fn new(state: Arc<TunnelState>, desired: watch::Receiver<Desired>, timing: Timing) -> Self {
        let mut r = Self {
            state,
            desired,
            timing,
            gate: Gate::default(),
        };
        r.list_desired();
        r
    }

    /// Asks `gate` before every forward request (and again once granted).
    pub fn with_gate(mut self, gate: Gate) -> Self {
        self.gate = gate;
        self
    }

    /// Makes the state list the desired set; connections of forwards that left it close.
    fn list_desired(&mut self) -> Vec<Forward> {
        let desired = self.desired.borrow_and_update().clone();
        let why = |name: &str| match desired.forwards.iter().any(|f| f.name == name) {
            true => CHANGED,
            false => desired.why_closed(name),
        };
        for gone in self.state.set_forwards(&desired.forwards, why) {
            let why = why(&gone.name);
            info!(forward = %gone.name, remote = %gone.remote(), "forward closed: {why}");
        }
        desired.forwards
    }

    /// While there is no session: keeps the state listing the desired set. Never returns; drop
    /// it when a session starts.
    pub async fn without_session(&mut self) {
        loop {
            if self.desired.changed().await.is_err() {
                return std::future::pending().await;
            }
            self.list_desired();
        }
    }

    /// On a live session: makes the forwards granted by `port` equal the desired set, and keeps
    /// them so. Never returns; dropping it (the session ended) stops every forward's task.
    pub async fn with_session<P: ForwardPort>(&mut self, port: Arc<P>) {
        // Writes of this session's tasks name it: once it has ended, they change nothing.
        let Some(session) = self.state.session() else {
            return std::future::pending().await;
        };
        let mut held: HashMap<String, Held> = HashMap::new();
        let kept = Kept::default();
        let mut tasks = JoinSet::new();
        // Tasks of forwards that left the set, until they have ended (their cancel answered),
        // across changes: a forward back before then still waits for its old cancel.
        let mut leaving: Vec<(Arc<Forward>, watch::Receiver<()>)> = Vec::new();
        loop {
            let desired = self.list_desired();
            // An error: the task has ended.
            leaving.retain(|(_, done)| done.has_changed().is_ok());
            // Leaving (or changed): cancel on the server. Their task ends by itself.
            held.retain(|_, h| {
                let keep = desired.iter().any(|d| d.same_service(&h.forward));
                if !keep {
                    h.wanted.send_replace(false);
                    leaving.push((h.forward.clone(), h.done.clone()));
                }
                keep
            });
            for f in &desired {
                if held.contains_key(&f.name) {
                    continue;
                }
                // A changed forward, or one taking over another's remote address, waits until
                // the old request there is cancelled.
                let after: Vec<watch::Receiver<()>> = leaving
                    .iter()
                    .filter(|(old, _)| old.name == f.name || same_remote(old, f))
                    .map(|(_, done)| done.clone())
                    .collect();
                let forward = Arc::new(f.clone());
                let (wanted, wanted_rx) = watch::channel(true);
                let (done_tx, done) = watch::channel(());
                let span = info_span!("forward", forward = %f.name, remote = %f.remote(), target = %f.target());
                tasks.spawn(
                    hold_forward(
                        session,
                        port.clone(),
                        self.gate.clone(),
                        forward.clone(),
                        kept.clone(),
                        self.state.clone(),
                        wanted_rx,
                        after,
                        self.timing,
                        done_tx,
                    )
                    .instrument(span),
                );
                held.insert(
                    f.name.clone(),
                    Held {
                        forward,
                        wanted,
                        done,
                    },
                );
            }
            while tasks.try_join_next().is_some() {}
            if self.desired.changed().await.is_err() {
                return std::future::pending().await;
            }
        }
    }
}

fn same_remote(a: &Forward, b: &Forward) -> bool {
    a.remote_port == b.remote_port && a.remote_addr.eq_ignore_ascii_case(&b.remote_addr)
}

/// The remote addresses whose cancel the server refused after granting them on this session:
/// it still listens there for us (Dropbear does this), so a refused request for one of them
/// is that listener, not someone else's.
#[derive(Clone, Default)]
struct Kept(Arc<Mutex<HashSet<(String, u16)>>>);

impl Kept {
    fn key(f: &Forward) -> (String, u16) {
        (f.remote_addr.to_ascii_lowercase(), f.remote_port)
    }
    fn insert(&self, f: &Forward) {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(Self::key(f));
    }
    /// Takes `f`'s remote address out of the set; true when it was there.
    fn take(&self, f: &Forward) -> bool {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&Self::key(f))
    }
}

/// One desired forward's life on one session: request it (routable while in flight), retry
/// while refused, and cancel it once it is no longer wanted. `_done` is dropped when the task
/// ends, however it ends, which frees the remote address for a successor.
#[allow(clippy::too_many_arguments)] // one task's whole context, passed once at spawn
async fn hold_forward<P: ForwardPort>(
    session: u64,
    port: Arc<P>,
    gate: Gate,
    forward: Arc<Forward>,
    kept: Kept,
    state: Arc<TunnelState>,
    mut wanted: watch::Receiver<bool>,
    after: Vec<watch::Receiver<()>>,
    timing: Timing,
    _done: watch::Sender<()>,
) {
    for mut earlier in after {
        // Resolves with an error once that task has ended.
        while earlier.changed().await.is_ok() {}
    }
    let mut retry = Backoff::new(timing.retry_initial, timing.retry_max);
    let mut refusals = Refusals::default();
    loop {
        if !*wanted.borrow_and_update() {
            return;
        }
        if !gate.allows(&forward.name).await {
            // The access state closed it since the desired set was made: the new set is on
            // its way; ask again only if it still wants the forward after a retry step.
            info!("the access state says closed: not asking the server for it");
            tokio::select! {
                _ = tokio::time::sleep(retry.next_delay()) => continue,
                _ = wanted.wait_for(|w| !*w) => return,
            }
        }
        state.set_forward(session, &forward, ForwardState::Requested);
        let mut outcome = tokio::time::timeout(timing.request_timeout, port.request(&forward))
            .await
            .unwrap_or(Err(ForwardError::Timeout(timing.request_timeout)));
        if outcome == Err(ForwardError::Refused) && kept.take(&forward) {
            info!(
                "the server still listens here for this session (it refused the earlier cancel): using that listener"
            );
            outcome = Ok(());
        }
        // Closed while the request was in flight (by this agent's policy, or by another agent
        // sharing the access state): give the port back at once.
        if outcome.is_ok() && (!*wanted.borrow() || !gate.allows(&forward.name).await) {
            cancel_granted(&*port, &forward, &kept, timing).await;
            state.set_forward(session, &forward, ForwardState::Pending);
            if !*wanted.borrow() {
                return;
            }
            tokio::select! {
                _ = tokio::time::sleep(retry.next_delay()) => continue,
                _ = wanted.wait_for(|w| !*w) => return,
            }
        }
        match outcome {
            Ok(()) => {
                match refusals.granted() {
                    0 => info!("forward granted"),
                    n => info!(refusals = n, "forward granted after {n} refusals"),
                }
                state.set_forward(session, &forward, ForwardState::Granted);
                retry.reset();
                // An error means the reconciler is gone: the session is ending, and the
                // server drops the listener with it.
                if wanted.wait_for(|w| !*w).await.is_ok() {
                    cancel_granted(&*port, &forward, &kept, timing).await;
                }
                return;
            }
            Err(ForwardError::SessionGone) => return,
            Err(e @ ForwardError::Timeout(_)) => {
                // A late grant of this request would hold the port against the retry.
                warn!("forward request unanswered: {e}; cancelling it before retrying");
                cancel(&*port, &forward, timing).await;
                state.set_forward(session, &forward, ForwardState::Refused(e.to_string()));
            }
            Err(e) => {
                // Not an ERROR: a standby's forward is refused while the active agent holds the
                // port, for as long as both run. Once WARN, then a count every 10 minutes.
                match refusals.refused(tokio::time::Instant::now()) {
                    Some(0) => warn!(
                        "forward refused: {e}; this agent is not ready and keeps retrying (a standby's normal state while another agent holds the port)"
                    ),
                    Some(n) => info!(
                        refusals = n,
                        "forward still refused: {n} more times in the last {} minutes",
                        REFUSALS_EVERY.as_secs() / 60
                    ),
                    None => {}
                }
                state.set_forward(session, &forward, ForwardState::Refused(e.to_string()));
            }
        }
        let delay = retry.next_delay();
        debug!(
            seconds = format!("{:.1}", delay.as_secs_f32()),
            "retrying the forward"
        );
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = wanted.wait_for(|w| !*w) => return,
        }
    }
}

/// How often a forward that stays refused is logged again (with a count).
const REFUSALS_EVERY: Duration = Duration::from_secs(600);

/// A streak of refusals of one forward, for its log lines.
#[derive(Debug, Default)]
struct Refusals {
    /// Refusals in the streak, and since the last line.
    total: u64,
    unlogged: u64,
    logged_at: Option<tokio::time::Instant>,
}

impl Refusals {
    /// One more refusal: `Some(0)` for the first of a streak (log it in full), `Some(n)` when
    /// [`REFUSALS_EVERY`] has passed since the last line (log the n since), else `None`.
    fn refused(&mut self, now: tokio::time::Instant) -> Option<u64> {
        self.total += 1;
        let Some(at) = self.logged_at else {
            self.logged_at = Some(now);
            return Some(0);
        };
        self.unlogged += 1;
        if now.duration_since(at) < REFUSALS_EVERY {
            return None;
        }
        self.logged_at = Some(now);
        Some(std::mem::take(&mut self.unlogged))
    }

    /// Granted: the streak ends; how many refusals it had.
    fn granted(&mut self) -> u64 {
        std::mem::take(self).total
    }
}

/// Cancels a request that may never have been granted: a refusal means the server holds nothing.
async fn cancel<P: ForwardPort>(port: &P, forward: &Forward, timing: Timing) {
    let _ = cancel_answer(port, forward, timing).await;
}

/// Cancels a granted forward. A server that refuses keeps listening until the session ends.
async fn cancel_granted<P: ForwardPort>(port: &P, forward: &Forward, kept: &Kept, timing: Timing) {
    if cancel_answer(port, forward, timing).await == Some(Err(ForwardError::Refused)) {
        kept.insert(forward);
        warn!(
            "the server refused to cancel the forward: it keeps listening on {} until the session ends, and the agent refuses every connection it sends from there",
            forward.remote()
        );
    }
}

/// The server's answer to a cancel; None when it gave none in time.
async fn cancel_answer<P: ForwardPort>(
    port: &P,
    forward: &Forward,
    timing: Timing,
) -> Option<Result<(), ForwardError>> {
    match tokio::time::timeout(timing.request_timeout, port.cancel(forward)).await {
        Ok(Ok(())) => {
            info!("forward cancelled on the server");
            Some(Ok(()))
        }
        Ok(Err(e)) => Some(Err(e)),
        Err(_) => {
            warn!(
                seconds = timing.request_timeout.as_secs_f32(),
                "the server did not answer the cancel in time"
            );
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::VecDeque;
    use std::sync::Mutex;

    #[test]
    fn a_refused_forward_is_logged_once_then_counted_every_ten_minutes() {
        let mut r = Refusals::default();
        let t0 = tokio::time::Instant::now();
        assert_eq!(r.refused(t0), Some(0));
        // Every 10 s for ten minutes: nothing logged.
        let mut logged = Vec::new();
        for i in 1..=120u64 {
            if let Some(n) = r.refused(t0 + Duration::from_secs(10 * i)) {
                logged.push((i, n));
            }
        }
        assert_eq!(
            logged,
            [(60, 60), (120, 60)],
            "a line with the count every ten minutes"
        );
        assert_eq!(r.granted(), 121);
        assert_eq!(
            r.refused(t0 + Duration::from_secs(2000)),
            Some(0),
            "a new streak"
        );
    }

    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum Reply {
        Grant,
        Refuse,
        /// Never answers (a server that lost the request, or answers very late).
        Hang,
    }

    #[derive(Debug, Clone, PartialEq, Eq)]
    enum Call {
        Request(String),
        Cancel(String),
    }

    /// A server that answers each request from a script per remote port (granting by default)
    /// and records every call in order.
    #[derive(Default)]
    struct FakeServer {
        script: Mutex<HashMap<u16, VecDeque<Reply>>>,
        calls: Mutex<Vec<Call>>,
        /// Like Dropbear: refuses every cancel, keeps listening until the session ends, and
        /// refuses a request for a port it already listens on.
        refuses_cancels: bool,
        listening: Mutex<HashSet<u16>>,
        /// How long the server takes to answer a cancel.
        cancel_delay: Duration,
    }

    impl FakeServer {
        fn script(&self, port: u16, replies: &[Reply]) {
            self.script
                .lock()
                .unwrap()
                .insert(port, replies.iter().copied().collect());
        }
        fn calls(&self) -> Vec<Call> {
            self.calls.lock().unwrap().clone()
        }
    }

    fn key(f: &Forward) -> String {
        format!("{}:{}", f.remote_port, f.target_port)
    }

    impl ForwardPort for FakeServer {
        async fn request(&self, f: &Forward) -> Result<(), ForwardError> {
            self.calls.lock().unwrap().push(Call::Request(key(f)));
            let reply = self
                .script
                .lock()
                .unwrap()
                .get_mut(&f.remote_port)
                .and_then(VecDeque::pop_front)
                .unwrap_or(Reply::Grant);
            match reply {
                Reply::Grant if !self.listening.lock().unwrap().insert(f.remote_port) => {
                    Err(ForwardError::Refused)
                }
                Reply::Grant => Ok(()),
                Reply::Refuse => Err(ForwardError::Refused),
                Reply::Hang => std::future::pending().await,
            }
        }
        async fn cancel(&self, f: &Forward) -> Result<(), ForwardError> {
            self.calls.lock().unwrap().push(Call::Cancel(key(f)));
            tokio::time::sleep(self.cancel_delay).await;
            if self.refuses_cancels {
                return Err(ForwardError::Refused);
            }
            self.listening.lock().unwrap().remove(&f.remote_port);
            Ok(())
        }
    }

    fn fwd(name: &str, port: u16, target_port: u16) -> Forward {
        Forward {
            name: name.into(),
            remote_addr: "localhost".into(),
            remote_port: port,
            target_host: "127.0.0.1".into(),
            target_port,
            limits: Default::default(),
            access: None,
            tls: None,
            allow: Vec::new(),
            http: None,
            connect: None,
        }
    }

    fn states(state: &TunnelState) -> Vec<(String, &'static str)> {
        state
            .snapshot()
            .forwards
            .iter()
            .map(|f| (f.forward.name.clone(), f.state.label()))
            .collect()
    }

    struct Rig {
        state: Arc<TunnelState>,
        desired: watch::Sender<Desired>,
        server: Arc<FakeServer>,
        task: tokio::task::JoinHandle<()>,
    }

    /// A reconciler on a live session with `server`, for `forwards`.
    fn rig(forwards: Vec<Forward>, server: FakeServer) -> Rig {
        rig_with_gate(forwards, server, Gate::default())
    }

    /// [`rig`] asking `gate` before every request.
    fn rig_with_gate(forwards: Vec<Forward>, server: FakeServer, gate: Gate) -> Rig {
        let state = TunnelState::new(&[]);
        state.connected("fake:22".into(), Duration::ZERO);
        let desired = watch::Sender::new(Desired::all(forwards));
        let server = Arc::new(server);
        let mut r = Reconciler::new(
            state.clone(),
            desired.subscribe(),
            Timing::new(Duration::from_secs(15)),
        )
        .with_gate(gate);
        let port = server.clone();
        let task = tokio::spawn(async move { r.with_session(port).await });
        Rig {
            state,
            desired,
            server,
            task,
        }
    }

    async fn settle() {
        for _ in 0..20 {
            tokio::task::yield_now().await;
        }
    }

    /// A gate whose every answer `answer` gives; the count of questions asked.
    fn gate(mut answer: impl FnMut() -> bool + Send + 'static) -> (Gate, Arc<Mutex<usize>>) {
        let asked = Arc::new(Mutex::new(0));
        let counted = asked.clone();
        let (tx, mut rx) = mpsc::channel::<GateQuery>(8);
        tokio::spawn(async move {
            while let Some(q) = rx.recv().await {
                *counted.lock().unwrap() += 1;
                let _ = q.reply.send(answer());
            }
        });
        (Gate::new(tx), asked)
    }

    #[tokio::test(start_paused = true)]
    async fn the_gate_is_asked_before_every_request_and_again_once_granted() {
        let open = Arc::new(Mutex::new(false));
        let answer = open.clone();
        let (gate, asked) = gate(move || *answer.lock().unwrap());
        let rig = rig_with_gate(vec![fwd("a", 5000, 1)], FakeServer::default(), gate);
        // Closed by a fresh reading although the (stale) desired set wants it: never asked for.
        tokio::time::sleep(Duration::from_secs(30)).await;
        assert!(rig.server.calls().is_empty(), "{:?}", rig.server.calls());
        assert!(
            *asked.lock().unwrap() >= 3,
            "asked again after each retry step"
        );
        // Open: requested, then the gate is asked once more before it counts as granted.
        *open.lock().unwrap() = true;
        let before = *asked.lock().unwrap();
        tokio::time::sleep(Duration::from_secs(11)).await;
        assert_eq!(rig.server.calls(), [Call::Request("5000:1".into())]);
        assert_eq!(*asked.lock().unwrap(), before + 2);
        assert_eq!(states(&rig.state), [("a".into(), "granted")]);
        rig.task.abort();
    }

    #[tokio::test(start_paused = true)]
    async fn a_forward_the_gate_closes_while_its_request_is_in_flight_is_given_back() {
        // The first question (before the request) says open, every later one closed.
        let mut first = true;
        let (gate, _) = gate(move || std::mem::replace(&mut first, false));
        let rig = rig_with_gate(vec![fwd("a", 5000, 1)], FakeServer::default(), gate);
        settle().await;
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert_eq!(
            rig.server.calls(),
            [
                Call::Request("5000:1".into()),
                Call::Cancel("5000:1".into())
            ]
        );
        assert_eq!(states(&rig.state), [("a".into(), "pending")]);
        rig.task.abort();
    }

    #[tokio::test(start_paused = true)]
    async fn requests_every_forward_and_retries_a_refused_one_with_backoff() {
        let server = FakeServer::default();
        server.script(5001, &[Reply::Refuse, Reply::Refuse]);
        let rig = rig(vec![fwd("a", 5000, 1), fwd("b", 5001, 1)], server);
        settle().await;
        assert_eq!(
            states(&rig.state),
            [("a".into(), "granted"), ("b".into(), "refused")]
        );
        tokio::time::sleep(Duration::from_millis(1100)).await;
        // The first steps are 0.5 to 1 s (jittered): retried once by now, twice if both were
        // short; the third answer is a grant, so never more.
        let calls = rig.server.calls();
        assert_eq!(
            calls[..3],
            [
                Call::Request("5000:1".into()),
                Call::Request("5001:1".into()),
                Call::Request("5001:1".into()),
            ],
            "retried within the first backoff step (at most 1 s)"
        );
        assert!(calls.len() <= 4, "{calls:?}");
        tokio::time::sleep(Duration::from_secs(12)).await;
        assert_eq!(states(&rig.state)[1].1, "granted");
        let requests = rig.server.calls().len();
        tokio::time::sleep(Duration::from_secs(600)).await;
        assert_eq!(
            rig.server.calls().len(),
            requests,
            "granted forwards are left alone"
        );
        rig.task.abort();
    }

    #[tokio::test(start_paused = true)]
    async fn an_unanswered_request_is_routable_then_cancelled_before_it_is_retried() {
        let server = FakeServer::default();
        server.script(5000, &[Reply::Hang]);
        let rig = rig(vec![fwd("a", 5000, 1)], server);
        settle().await;
        assert_eq!(states(&rig.state), [("a".into(), "requested")]);
        assert!(
            rig.state.route("localhost", 5000).is_some(),
            "a forward whose request is in flight takes the server's channels"
        );
        tokio::time::sleep(Duration::from_secs(15) + Duration::from_millis(1100)).await;
        assert_eq!(
            rig.server.calls(),
            [
                Call::Request("5000:1".into()),
                Call::Cancel("5000:1".into()),
                Call::Request("5000:1".into()),
            ]
        );
        assert_eq!(states(&rig.state), [("a".into(), "granted")]);
        rig.task.abort();
    }

    #[tokio::test(start_paused = true)]
    async fn removed_and_changed_forwards_are_cancelled_before_their_port_is_asked_for_again() {
        let server = FakeServer::default();
        // b's first request is still in flight when b changes.
        server.script(5001, &[Reply::Hang]);
        let rig = rig(vec![fwd("a", 5000, 1), fwd("b", 5001, 1)], server);
        settle().await;
        let route_a = rig.state.route("localhost", 5000).unwrap();
        rig.desired
            .send_replace(Desired::all(vec![fwd("b", 5001, 2), fwd("c", 5002, 1)]));
        settle().await;
        assert_eq!(
            route_a.closed.borrow().as_deref(),
            Some(REMOVED),
            "a's open connections are told to close"
        );
        assert!(rig.state.route("localhost", 5000).is_none());
        assert!(
            !rig.server.calls().contains(&Call::Request("5001:2".into())),
            "the new b waits for the old one's request to end"
        );
        tokio::time::sleep(Duration::from_secs(16)).await;
        let calls = rig.server.calls();
        let at = |c: &str| calls.iter().position(|x| *x == Call::Cancel(c.into()));
        let asked = |c: &str| calls.iter().position(|x| *x == Call::Request(c.into()));
        assert!(
            at("5000:1").is_some(),
            "a cancelled on the server: {calls:?}"
        );
        assert!(
            at("5001:1").unwrap() < asked("5001:2").unwrap(),
            "old b cancelled before the new b is asked for: {calls:?}"
        );
        assert!(asked("5002:1").is_some());
        assert_eq!(
            states(&rig.state),
            [("b".into(), "granted"), ("c".into(), "granted")]
        );
        rig.task.abort();
    }

    #[tokio::test(start_paused = true)]
    async fn without_a_session_the_state_follows_the_desired_set() {
        let state = TunnelState::new(&[]);
        let desired = watch::Sender::new(Desired::all(vec![fwd("a", 5000, 1)]));
        let mut r = Reconciler::new(
            state.clone(),
            desired.subscribe(),
            Timing::new(Duration::from_secs(15)),
        );
        assert_eq!(states(&state), [("a".into(), "pending")]);
        let task = tokio::spawn(async move { r.without_session().await });
        desired.send_replace(Desired::all(vec![fwd("b", 5001, 1)]));
        settle().await;
        assert_eq!(states(&state), [("b".into(), "pending")]);
        task.abort();
    }

    #[tokio::test(start_paused = true)]
    async fn a_forward_whose_cancel_was_refused_uses_the_kept_listener_when_wanted_again() {
        let server = FakeServer {
            refuses_cancels: true,
            ..Default::default()
        };
        let (a, b) = (fwd("a", 5000, 1), fwd("b", 5001, 1));
        let rig = rig(vec![a.clone(), b.clone()], server);
        settle().await;
        rig.desired.send_replace(Desired::all(vec![a.clone()]));
        settle().await;
        assert!(
            rig.state.route("localhost", 5001).is_none(),
            "the server's refusal does not keep b routable"
        );
        rig.desired
            .send_replace(Desired::all(vec![a.clone(), b.clone()]));
        settle().await;
        assert_eq!(
            states(&rig.state),
            [("a".into(), "granted"), ("b".into(), "granted")],
            "the server refused the new request because it still listens for us"
        );
        assert!(rig.state.route("localhost", 5001).is_some());
        // Changed: the same port to another target takes over the kept listener too.
        rig.desired
            .send_replace(Desired::all(vec![a.clone(), fwd("b", 5001, 2)]));
        settle().await;
        assert_eq!(states(&rig.state)[1], ("b".into(), "granted"));
        assert_eq!(
            rig.server.calls(),
            [
                Call::Request("5000:1".into()),
                Call::Request("5001:1".into()),
                Call::Cancel("5001:1".into()),
                Call::Request("5001:1".into()),
                Call::Cancel("5001:1".into()),
                Call::Request("5001:2".into()),
            ]
        );
        // A port held by someone else is still refused (and retried), kept listener or not.
        rig.desired
            .send_replace(Desired::all(vec![a, b, fwd("c", 5002, 1)]));
        rig.server.listening.lock().unwrap().insert(5002);
        settle().await;
        assert_eq!(states(&rig.state)[2], ("c".into(), "refused"));
        rig.task.abort();
    }

    #[tokio::test(start_paused = true)]
    async fn a_forward_back_before_its_cancel_was_answered_waits_for_that_answer() {
        let server = FakeServer {
            refuses_cancels: true,
            cancel_delay: Duration::from_millis(500),
            ..Default::default()
        };
        let (a, b) = (fwd("a", 5000, 1), fwd("b", 5001, 1));
        let rig = rig(vec![a.clone(), b.clone()], server);
        settle().await;
        rig.desired.send_replace(Desired::all(vec![a.clone()]));
        settle().await;
        rig.desired.send_replace(Desired::all(vec![a, b]));
        settle().await;
        assert_eq!(
            rig.server.calls().last(),
            Some(&Call::Cancel("5001:1".into())),
            "b is not asked for while its cancel is unanswered"
        );
        tokio::time::sleep(Duration::from_millis(600)).await;
        assert_eq!(
            states(&rig.state),
            [("a".into(), "granted"), ("b".into(), "granted")],
            "granted on the first request after the refused cancel, no retry"
        );
        assert_eq!(rig.server.calls().len(), 4, "{:?}", rig.server.calls());
        rig.task.abort();
    }
}
