//! Holds the tunnel for months: connect, request every forward, keep retrying refused ones,
//! and when the session dies for any reason, reconnect forever with backoff.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::{Instrument, error, info, info_span, warn};

use super::backoff::Backoff;
use super::conn::ConnContext;
use super::state::{ForwardState, TunnelState};
use crate::config::{Config, Forward};
use crate::ssh::keys::Identity;
use crate::ssh::session::{Dialer, ForwardError, Session};

/// A session that lived this long resets the reconnect backoff.
const STABLE_AFTER: Duration = Duration::from_secs(30);
/// Refused forwards are retried on the live session from this delay, growing to the cap.
const FORWARD_RETRY_INITIAL: Duration = Duration::from_secs(1);
const FORWARD_RETRY_MAX: Duration = Duration::from_secs(30);
/// Budget for cancelling forwards and saying goodbye at shutdown.
const GOODBYE: Duration = Duration::from_millis(1500);

enum Ended {
    Shutdown,
    Lost(String),
}

/// Runs until `shutdown` resolves; then cancels the forwards and disconnects.
pub async fn supervise(
    config: &Config,
    identity: Identity,
    state: Arc<TunnelState>,
    shutdown: impl Future<Output = ()>,
) {
    let dialer = Dialer::new(config, identity);
    let ctx = ConnContext::new(state.clone(), config.limits, config.timeouts.target_connect);
    let mut backoff = Backoff::new(config.reconnect.initial, config.reconnect.max);
    let mut last_port = None;
    tokio::pin!(shutdown);

    for session_no in 1u64.. {
        let span = info_span!("session", n = session_no, server = %config.server.host);
        let delay = async {
            info!(user = %config.server.user, ports = ?config.server.ports, "dialing");
            let attempt = tokio::select! {
                r = dialer.connect(ctx.clone(), last_port) => r,
                _ = &mut shutdown => return None,
            };
            match attempt {
                Ok(mut session) => {
                    last_port = Some(session.port);
                    info!(via = %session.via, "connected: host key verified, authenticated");
                    state.connected(session.via.clone());
                    let up = Instant::now();
                    match hold(&mut session, config, &state, &mut shutdown).await {
                        Ended::Shutdown => {
                            goodbye(session, &state).await;
                            return None;
                        }
                        Ended::Lost(reason) => {
                            warn!(after_s = up.elapsed().as_secs(), %reason, "connection lost");
                            state.disconnected("connection_lost", reason);
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
                    Some(config.reconnect.max)
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
        span.in_scope(|| {
            info!(
                seconds = format!("{:.1}", delay.as_secs_f32()),
                "backing off before reconnecting"
            )
        });
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = &mut shutdown => return,
        }
    }
}

/// Requests every forward, retries refused ones, and waits for the session to end.
async fn hold(
    session: &mut Session,
    config: &Config,
    state: &TunnelState,
    shutdown: &mut (impl Future<Output = ()> + Unpin),
) -> Ended {
    let timeout = config.timeouts.handshake;
    let mut wanted: Vec<Arc<Forward>> = state
        .snapshot()
        .forwards
        .into_iter()
        .map(|f| f.forward)
        .collect();
    let mut retry = Backoff::new(FORWARD_RETRY_INITIAL, FORWARD_RETRY_MAX);
    loop {
        let mut refused = Vec::new();
        for f in wanted {
            let result = tokio::select! {
                r = session.request_forward(&f, timeout) => r,
                _ = &mut *shutdown => return Ended::Shutdown,
            };
            let span =
                info_span!("forward", name = %f.name, remote = %f.remote(), target = %f.target());
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
            _ = tokio::time::sleep(retry_in.unwrap_or(Duration::MAX)), if retry_in.is_some() => {}
        }
        wanted = refused;
    }
}

/// Frees the server-side ports for whoever connects next, then disconnects.
async fn goodbye(session: Session, state: &TunnelState) {
    info!("shutting down: cancelling forwards and disconnecting");
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
