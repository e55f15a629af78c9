//! Holds the tunnel for months: connect, request every forward, keep retrying refused ones,
//! apply reloaded configurations, and when the session dies for any reason, reconnect forever
//! with backoff.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tracing::{Instrument, error, info, info_span, warn};

use super::backoff::Backoff;
use super::conn::ConnContext;
use super::reload::{self, Reload};
use super::state::{ForwardState, TunnelState};
use crate::config::{Config, Forward};
use crate::ssh::keys::Identity;
use crate::ssh::session::{Dialer, ForwardError, Session};

/// A session that lived this long resets the reconnect backoff.
const STABLE_AFTER: Duration = Duration::from_secs(30);
/// Refused forwards are retried on the live session from this delay, growing to the cap.
const FORWARD_RETRY_INITIAL: Duration = Duration::from_secs(1);
/// Kept short so a standby agent takes over soon after the active one's ports are released.
const FORWARD_RETRY_MAX: Duration = Duration::from_secs(10);
/// Budget for cancelling forwards and saying goodbye at shutdown.
const GOODBYE: Duration = Duration::from_millis(1500);

enum Ended {
    Shutdown,
    Lost(String),
    /// A reload changed the session's settings.
    Reconnect,
}

/// The agent's running configuration and what is derived from it.
struct Running {
    config: Config,
    identity: Identity,
    dialer: Dialer,
    ctx: Arc<ConnContext>,
}

impl Running {
    fn new(config: Config, identity: Identity, state: &Arc<TunnelState>) -> Self {
        let dialer = Dialer::new(&config, identity.clone());
        let ctx = ConnContext::new(state.clone(), config.limits, config.timeouts.target_connect);
        Self {
            config,
            identity,
            dialer,
            ctx,
        }
    }
}

/// Runs until `shutdown` resolves; then cancels the forwards and disconnects.
pub async fn supervise(
    config: Config,
    identity: Identity,
    state: Arc<TunnelState>,
    mut reloads: mpsc::Receiver<Reload>,
    shutdown: impl Future<Output = ()>,
) {
    let mut run = Running::new(config, identity, &state);
    let mut backoff = Backoff::new(run.config.reconnect.initial, run.config.reconnect.max);
    let mut last_port = None;
    tokio::pin!(shutdown);

    for session_no in 1u64.. {
        let span = info_span!("session", n = session_no, server = %run.config.server.host);
        let delay = async {
            info!(user = %run.config.server.user, ports = ?run.config.server.ports, "dialing");
            let dial_started = Instant::now();
            let attempt = tokio::select! {
                r = run.dialer.connect(run.ctx.clone(), last_port) => r,
                _ = &mut shutdown => return None,
            };
            match attempt {
                Ok(mut session) => {
                    last_port = Some(session.port);
                    info!(via = %session.via, "connected: host key verified, authenticated");
                    state.connected(session.via.clone(), dial_started.elapsed());
                    let up = Instant::now();
                    match hold(&mut session, &mut run, &state, &mut reloads, &mut shutdown).await {
                        Ended::Shutdown => {
                            goodbye(session, &state).await;
                            return None;
                        }
                        Ended::Lost(reason) => {
                            warn!(after_s = up.elapsed().as_secs(), %reason, "connection lost");
                            state.disconnected("connection_lost", reason);
                        }
                        Ended::Reconnect => {
                            info!("configuration changed the session's settings: reconnecting");
                            goodbye(session, &state).await;
                            backoff = Backoff::new(
                                run.config.reconnect.initial,
                                run.config.reconnect.max,
                            );
                            return Some(Duration::ZERO);
                        }
                    }
                    if up.elapsed() >= STABLE_AFTER {
                        backoff.reset();
                    }
                    Some(backoff.next_delay())
                }
                Err(e) if e.is_permanent() => {
                    error!(class = e.class(), "{e}");
                    state.set_error(e.class(), e.to_string());
                    // Needs a human or the vendor: retry slowly, never in a tight loop.
                    Some(run.config.reconnect.max)
                }
                Err(e) => {
                    warn!(class = e.class(), "{e}");
                    state.set_error(e.class(), e.to_string());
                    Some(backoff.next_delay())
                }
            }
        }
        .instrument(span.clone())
        .await;
        let Some(delay) = delay else { return };
        if !delay.is_zero() {
            span.in_scope(|| {
                info!(
                    seconds = format!("{:.1}", delay.as_secs_f32()),
                    "backing off before reconnecting"
                )
            });
        }
        let wait = tokio::time::sleep(delay);
        tokio::pin!(wait);
        loop {
            tokio::select! {
                _ = &mut wait => break,
                _ = &mut shutdown => return,
                Some(new) = reloads.recv() => {
                    // No session: everything applies to the next attempt.
                    let plan = reload::plan(&run.config, &run.identity, &new);
                    apply_to_state(&plan, &state);
                    log_restart_only(&plan);
                    run = Running::new(new.config, new.identity, &state);
                    backoff = Backoff::new(run.config.reconnect.initial, run.config.reconnect.max);
                    info!("configuration reloaded");
                }
            }
        }
    }
}

fn apply_to_state(plan: &reload::Plan, state: &TunnelState) {
    for name in &plan.removed {
        state.remove_forward(name);
    }
    for f in &plan.added {
        state.add_forward(f);
    }
}

fn log_restart_only(plan: &reload::Plan) {
    if !plan.needs_restart.is_empty() {
        warn!(settings = ?plan.needs_restart, "these settings changed but apply only after a restart");
    }
}

/// Requests every forward, retries refused ones, applies reloads, and waits for the session to
/// end.
async fn hold(
    session: &mut Session,
    run: &mut Running,
    state: &TunnelState,
    reloads: &mut mpsc::Receiver<Reload>,
    shutdown: &mut (impl Future<Output = ()> + Unpin),
) -> Ended {
    let mut wanted: Vec<Arc<Forward>> = state
        .snapshot()
        .forwards
        .into_iter()
        .map(|f| f.forward)
        .collect();
    let mut retry = Backoff::new(FORWARD_RETRY_INITIAL, FORWARD_RETRY_MAX);
    let mut refused: Vec<Arc<Forward>> = Vec::new();
    loop {
        let timeout = run.config.timeouts.handshake;
        for f in std::mem::take(&mut wanted) {
            let result = tokio::select! {
                r = session.request_forward(&f, timeout) => r,
                _ = &mut *shutdown => return Ended::Shutdown,
            };
            let span = info_span!("forward", forward = %f.name, remote = %f.remote(), target = %f.target());
            let _g = span.enter();
            match result {
                Ok(()) => {
                    info!("forward granted");
                    state.set_forward(&f.name, ForwardState::Granted);
                }
                Err(ForwardError::SessionGone) => break,
                Err(e) => {
                    error!("forward refused: {e}; the agent is NOT ready and keeps retrying");
                    state.set_forward(&f.name, ForwardState::Refused(e.to_string()));
                    refused.push(f.clone());
                }
            }
        }
        let retry_in = (!refused.is_empty()).then(|| retry.next_delay());
        if let Some(d) = retry_in {
            info!(
                forwards = refused.len(),
                seconds = format!("{:.1}", d.as_secs_f32()),
                "retrying refused forwards"
            );
        }
        tokio::select! {
            reason = session.closed() => return Ended::Lost(reason),
            _ = &mut *shutdown => return Ended::Shutdown,
            _ = tokio::time::sleep(retry_in.unwrap_or(Duration::MAX)), if retry_in.is_some() => {
                wanted = std::mem::take(&mut refused);
            }
            Some(new) = reloads.recv() => {
                let plan = reload::plan(&run.config, &run.identity, &new);
                log_restart_only(&plan);
                if plan.reconnect {
                    apply_to_state(&plan, state);
                    *run = Running::new(new.config, new.identity, &Arc::clone(&run.ctx.state));
                    return Ended::Reconnect;
                }
                for name in &plan.removed {
                    let granted = state
                        .snapshot()
                        .forwards
                        .into_iter()
                        .find(|f| &f.forward.name == name && f.state == ForwardState::Granted);
                    state.remove_forward(name);
                    refused.retain(|f| &f.name != name);
                    if let Some(f) = granted {
                        session.cancel_forward(&f.forward, timeout).await;
                    }
                    info!(forward = %name, "forward removed: cancelled on the server, its connections closed");
                }
                for f in &plan.added {
                    state.add_forward(f);
                    info!(forward = %f.name, remote = %f.remote(), target = %f.target(), "forward added");
                }
                let added: Vec<Arc<Forward>> = state
                    .snapshot()
                    .forwards
                    .into_iter()
                    .filter(|s| plan.added.iter().any(|a| a.name == s.forward.name))
                    .map(|s| s.forward)
                    .collect();
                // Removed or changed forwards must be gone before their ports are asked for again.
                wanted = added.into_iter().chain(std::mem::take(&mut refused)).collect();
                run.config = new.config;
                run.identity = new.identity;
                info!("configuration reloaded");
            }
        }
    }
}

/// Frees the server-side ports for whoever connects next, then disconnects.
async fn goodbye(session: Session, state: &TunnelState) {
    info!("cancelling forwards and disconnecting");
    let granted: Vec<Arc<Forward>> = state
        .snapshot()
        .forwards
        .into_iter()
        .filter(|f| f.state == ForwardState::Granted)
        .map(|f| f.forward)
        .collect();
    let cancel_all = async {
        for f in &granted {
            session.cancel_forward(f, GOODBYE).await;
        }
    };
    let _ = tokio::time::timeout(GOODBYE, cancel_all).await;
    session.disconnect(GOODBYE).await;
    state.disconnected("shutdown", "agent stopped".into());
}
