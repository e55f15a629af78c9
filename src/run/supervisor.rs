//! Holds the tunnel for months: dial, hand the live session to the reconciler, and when the
//! session dies for any reason, reconnect forever with backoff. A reloaded configuration is
//! applied the same way whatever the agent is doing (dialing, connected, backing off): its
//! forwards go to the access policy, which makes the desired set of them, and a change to what a session is built from starts a new
//! session at once.
//!
//! This loop sits above both halves of the agent: it drives `ssh` (dial, session) and `tunnel`
//! (reconciler, state), which know nothing of each other beyond the ports `tunnel` defines.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tracing::{Instrument, debug, error, info, info_span, warn};

use super::reload::{self, Reload};
use crate::audit::{SessionEvent, SessionRecord};
use crate::config::{Config, Forward};
use crate::fault::Fault;
use crate::ssh::dial::Dialer;
use crate::ssh::keys::Identity;
use crate::ssh::session::Session;
use crate::tunnel::backoff::Redial;
use crate::tunnel::conn::ConnContext;
use crate::tunnel::drain::{self, Connections};
use crate::tunnel::reconcile::{Desired, Gate, Reconciler, Timing};
use crate::tunnel::state::{ForwardState, TunnelState};

/// Budget for cancelling forwards and saying goodbye at shutdown.
const GOODBYE: Duration = Duration::from_millis(1500);

/// The configuration the agent applies now, and what is derived from it (dialer, connection
/// context, redial backoff).
struct Applied {
    config: Config,
    identity: Identity,
    dialer: Dialer,
    ctx: Arc<ConnContext>,
    redial: Redial,
    /// The configured forwards, which the access policy narrows to the desired set.
    configured: watch::Sender<Vec<Forward>>,
}

impl Applied {
    fn new(
        config: Config,
        identity: Identity,
        state: &Arc<TunnelState>,
        configured: watch::Sender<Vec<Forward>>,
        conns: Connections,
    ) -> Self {
        Self {
            dialer: Dialer::new(&config.session(), identity.clone()),
            ctx: ConnContext::new(
                state.clone(),
                config.limits,
                config.timeouts.target_connect,
                conns,
                Some(config.state_dir.clone()),
            ),
            redial: Redial::new(config.reconnect.initial, config.reconnect.max),
            configured,
            config,
            identity,
        }
    }

    fn timing(&self) -> Timing {
        Timing::new(self.config.timeouts.handshake)
    }

    /// Applies a reloaded configuration, the one way whatever the agent is doing. Returns
    /// whether the session must be rebuilt (the caller ends it, if any, and dials at once).
    fn apply(&mut self, new: Reload) -> bool {
        let changes = reload::changes(&self.config, &self.identity, &new);
        if !changes.needs_restart.is_empty() {
            warn!(settings = ?changes.needs_restart, "these settings changed but apply only after a restart");
        }
        if changes.session {
            self.dialer = Dialer::new(&new.config.session(), new.identity.clone());
            self.ctx = ConnContext::new(
                self.ctx.state.clone(),
                new.config.limits,
                new.config.timeouts.target_connect,
                self.ctx.conns.clone(),
                Some(new.config.state_dir.clone()),
            );
        }
        if changes.session || changes.reconnect {
            self.redial = Redial::new(new.config.reconnect.initial, new.config.reconnect.max);
        }
        if changes.forwards {
            self.configured.send_replace(new.config.forwards.clone());
        }
        if changes.health {
            self.ctx
                .state
                .set_target_down_not_ready(new.config.target_down_not_ready);
        }
        self.config = new.config;
        self.identity = new.identity;
        let then = match (changes.session, changes.reconnect) {
            (true, _) => "; the session is rebuilt with the new settings",
            (false, true) => "; the new reconnect bounds apply from the next attempt",
            (false, false) => "",
        };
        info!(
            forwards = %changes.by_forward,
            new_session = changes.session,
            "configuration reloaded: forwards {}{then}",
            changes.by_forward
        );
        changes.session
    }
}

enum Ended {
    Shutdown,
    Lost(String),
    /// A reload changed what the session is built from.
    Rebuild,
}

/// Where the forwards come from: `configured` takes each configuration's forwards, `desired`
/// gives the ones the access policy opens now (`crate::access`).
pub struct Forwards {
    pub configured: watch::Sender<Vec<Forward>>,
    pub desired: watch::Receiver<Desired>,
    /// Asked before every forward request (a fresh reading of the shared access state).
    pub gate: Gate,
}

/// Runs until `shutdown` resolves; then cancels the forwards, drains the open connections
/// (`conns`, see [`drain`]) and disconnects.
pub async fn supervise(
    config: Config,
    identity: Identity,
    state: Arc<TunnelState>,
    forwards: Forwards,
    conns: Connections,
    mut reloads: mpsc::Receiver<Reload>,
    shutdown: impl Future<Output = ()>,
) {
    let mut run = Applied::new(config, identity, &state, forwards.configured, conns);
    let mut reconciler =
        Reconciler::new(state.clone(), forwards.desired, run.timing()).with_gate(forwards.gate);
    let mut last_rung = None;
    tokio::pin!(shutdown);

    // Counts sessions that came up: failed dials log under the number the next one will have.
    let mut sessions = 0u64;
    loop {
        let span = info_span!("session", n = sessions + 1, server = %run.config.server.host);
        // Dial. The dial runs on its own copy of the dialer, so reloads keep applying meanwhile;
        // one that changes the session's settings dials again with them.
        let attempt = async {
            let dialer = run.dialer.clone();
            let ctx = run.ctx.clone();
            debug!(user = %run.config.server.user, rungs = run.config.server.transports.len(), "dialing");
            let dial = dialer.connect(ctx, last_rung.as_ref());
            tokio::pin!(dial);
            loop {
                tokio::select! {
                    r = &mut dial => return Some(Ok(r)),
                    _ = &mut shutdown => return None,
                    _ = reconciler.without_session() => {}
                    Some(new) = reloads.recv() => if run.apply(new) {
                        return Some(Err(Redo));
                    }
                }
            }
        }
        .instrument(span.clone())
        .await;
        let delay = match attempt {
            None => return,
            Some(Err(Redo)) => continue,
            Some(Ok(Ok(mut session))) => {
                sessions += 1;
                last_rung = Some(session.rung.clone());
                span.in_scope(
                    || info!(via = %session.via, "connected: host key verified, authenticated"),
                );
                state.connected(session.via.clone(), session.handshake);
                let audited = session_record(&run, &session);
                state.audit().session(audited.clone());
                run.redial.connected();
                reconciler.timing = run.timing();
                let ended = hold(
                    &mut session,
                    &mut run,
                    &mut reconciler,
                    &mut reloads,
                    &mut shutdown,
                )
                .instrument(span.clone())
                .await;
                if let Ended::Shutdown = ended {
                    stop(session, &state, &run.ctx.conns, audited)
                        .instrument(span.clone())
                        .await;
                    return;
                }
                let _g = span.enter();
                state.audit().session(audited.ended(match &ended {
                    Ended::Lost(reason) => reason,
                    _ => "configuration changed the session's settings",
                }));
                match ended {
                    Ended::Shutdown => return,
                    Ended::Rebuild => {
                        info!("configuration changed the session's settings: reconnecting");
                        goodbye(session, &state).await;
                        continue;
                    }
                    Ended::Lost(reason) => {
                        let delay = run.redial.after_failure();
                        let retry_in_s = format!("{:.1}", delay.as_secs_f32());
                        warn!(%reason, retry_in_s, "connection lost");
                        state.disconnected("connection_lost", reason);
                        delay
                    }
                }
            }
            Some(Ok(Err(e))) => {
                let _g = span.enter();
                state.set_error(e.class(), e.to_string());
                // The one line of a failed dial: what failed, and when the next one starts.
                if e.is_permanent() {
                    let delay = run.redial.after_permanent_failure();
                    let retry_in_s = format!("{:.1}", delay.as_secs_f32());
                    error!(class = e.class(), retry_in_s, "{e}");
                    delay
                } else {
                    let delay = run.redial.after_failure();
                    let retry_in_s = format!("{:.1}", delay.as_secs_f32());
                    warn!(class = e.class(), retry_in_s, "{e}");
                    delay
                }
            }
        };
        span.in_scope(|| {
            debug!(
                seconds = format!("{:.1}", delay.as_secs_f32()),
                "backing off before reconnecting"
            )
        });
        let wait = tokio::time::sleep(delay);
        tokio::pin!(wait);
        loop {
            tokio::select! {
                _ = &mut wait => break,
                _ = &mut shutdown => return,
                _ = reconciler.without_session() => {}
                // A fixed configuration is tried at once, not after the rest of the backoff.
                Some(new) = reloads.recv() => if run.apply(new) { break },
            }
        }
    }
}

/// The audit trail's record of a session that just came up.
fn session_record(run: &Applied, session: &Session) -> SessionRecord {
    SessionRecord {
        event: SessionEvent::Connected,
        server: session.rung.host.clone(),
        port: session.port,
        host_key: session.host_key.clone(),
        proxy: run
            .config
            .proxy
            .route(&session.rung.host)
            .proxy()
            .map(|p| p.to_string()),
        via: session.via.clone(),
        reason: None,
    }
}

/// A reload asked for a new dial.
struct Redo;

/// Keeps the reconciler working on the live session until the session ends, the agent stops,
/// or a reload needs a new session.
async fn hold(
    session: &mut Session,
    run: &mut Applied,
    reconciler: &mut Reconciler,
    reloads: &mut mpsc::Receiver<Reload>,
    shutdown: &mut (impl Future<Output = ()> + Unpin),
) -> Ended {
    let reconcile = reconciler.with_session(session.forwarder());
    tokio::pin!(reconcile);
    loop {
        tokio::select! {
            reason = session.closed() => return Ended::Lost(reason),
            _ = &mut *shutdown => return Ended::Shutdown,
            _ = &mut reconcile => {}
            Some(new) = reloads.recv() => if run.apply(new) {
                return Ended::Rebuild;
            }
        }
    }
}

/// Frees the server-side ports for whoever connects next, then disconnects.
async fn goodbye(session: Session, state: &TunnelState) {
    info!("cancelling forwards and disconnecting");
    cancel_forwards(&session, state).await;
    session.disconnect(GOODBYE).await;
    state.disconnected("shutdown", "agent stopped".into());
}

/// The agent stops: new channels refused, the forwards cancelled on the server, the open
/// connections given [`drain::GRACE`] and then cut, each one's audit record handed to the
/// writer; then the session's end is recorded and the session says goodbye. Disconnecting
/// first would end every open connection as `session_lost`, mid-request.
async fn stop(session: Session, state: &TunnelState, conns: &Connections, audited: SessionRecord) {
    conns.refuse_new();
    info!(
        open = conns.open(),
        "stopping: cancelling forwards, draining connections, disconnecting"
    );
    cancel_forwards(&session, state).await;
    conns.drain(drain::GRACE, drain::AFTER_CUT).await;
    state.audit().session(audited.ended("agent stopped"));
    session.disconnect(GOODBYE).await;
    state.disconnected("shutdown", "agent stopped".into());
}

/// Asks the server to cancel every forward requested or granted (bounded by [`GOODBYE`]), so
/// its ports are free for whoever connects next and it opens no new channel here.
async fn cancel_forwards(session: &Session, state: &TunnelState) {
    let asked: Vec<Arc<Forward>> = state
        .snapshot()
        .forwards
        .into_iter()
        .filter(|f| matches!(f.state, ForwardState::Requested | ForwardState::Granted))
        .map(|f| f.forward)
        .collect();
    let cancel_all = async {
        for f in &asked {
            session.cancel_forward(f, GOODBYE).await;
        }
    };
    let _ = tokio::time::timeout(GOODBYE, cancel_all).await;
}
