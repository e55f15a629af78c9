//! The customer decides when the vendor gets in: per-forward access windows, break-glass grants,
//! pause, all enforced here, on the customer's side, and never widened by anything the vendor
//! sends. The configuration is the ceiling; this module narrows it in time.
//!
//! - [`schedule`]: windows ("Mon-Fri 08:00-18:00" in a time zone) as instants.
//! - [`policy`]: the rule deciding one forward from its windows, grant and pause.
//! - [`store`]: grants, pauses and the last clock reading on disk, in a state folder every
//!   agent of a site shares and no other user can write, changed under its lock.
//! - [`controller`]: the task that decides every forward and publishes the open ones as the
//!   reconciler's desired set (config and policy -> reconciler -> session).
//! - [`commands`]: grant, revoke, pause and resume as changes of the state on disk, made by the
//!   command line itself or by an agent asked over its socket.
//! - [`control`], [`protocol`], [`client`]: each agent's local control socket (the fast path:
//!   "re-read the state now") and the command line.
//! - `watcher`: the file watch that wakes the controller when the state folder changes.
//! - [`notify`]: every access change posted to a chat webhook, off the decision path.
//!
//! Fails closed: a state folder or file that cannot be read closes what depends on it, and the
//! agent reports not ready with the reason.

pub mod client;
pub mod commands;
pub mod control;
pub mod controller;
pub mod notify;
pub mod policy;
pub mod protocol;
pub mod schedule;
pub mod store;
#[cfg(test)]
mod tests;
mod watcher;

use std::sync::Arc;

use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tracing::{error, warn};

use crate::config::{Config, Forward};
use crate::fault::Fault;
use crate::sys::dir::DirError;
use crate::tunnel::reconcile::{Desired, Gate};
use crate::tunnel::state::TunnelState;
use controller::{Controller, EventHook, SystemClock};

/// The running access control: where configured forwards go in, and the desired set comes out.
pub struct AccessControl {
    /// The configured forwards (a reload sends new ones).
    pub configured: watch::Sender<Vec<Forward>>,
    /// The forwards open now: the reconciler's input.
    pub desired: watch::Receiver<Desired>,
    /// Asked before every forward request: a fresh reading of the shared state.
    pub gate: Gate,
    tasks: Vec<JoinHandle<()>>,
    /// This agent's control socket, removed when it stops.
    socket: Option<(store::Store, String)>,
}

impl Drop for AccessControl {
    fn drop(&mut self) {
        self.tasks.iter().for_each(JoinHandle::abort);
        if let Some((store, name)) = &self.socket {
            let _ = store.folder().remove(name);
        }
    }
}

impl AccessControl {
    /// Stops in order, within `within`: the control socket first (no new command), then the
    /// controller, which finishes what it is doing (a grant being saved, a state file being
    /// written) and returns once its configured forwards' sender is gone. Only a controller
    /// still busy after `within` is aborted. The control socket's file is removed on drop.
    pub async fn stop(mut self, within: std::time::Duration) {
        let mut tasks = std::mem::take(&mut self.tasks).into_iter();
        // `start` spawns the controller first.
        let controller = tasks.next();
        tasks.for_each(|t| t.abort());
        // The controller's loop ends when every sender is gone: the supervisor's copy went
        // with it, this is the last.
        drop(std::mem::replace(
            &mut self.configured,
            watch::Sender::new(Vec::new()),
        ));
        if let Some(mut controller) = controller
            && tokio::time::timeout(within, &mut controller).await.is_err()
        {
            warn!("the access controller did not stop in time; stopped mid-task");
            controller.abort();
        }
    }
}

/// Opens the state folder `config.state_dir` (see [`store`]), starts the controller and the
/// control socket. Never fails: what cannot be opened, read or bound is logged and fails
/// closed. `hooks` (the audit trail) see every decision, the one at start included.
pub async fn start(
    config: &Config,
    state: Arc<TunnelState>,
    hooks: Vec<EventHook>,
    admin: Option<std::net::SocketAddr>,
) -> AccessControl {
    let dir = config.state_dir.clone();
    let opened = tokio::task::spawn_blocking(move || store::Store::open(&dir))
        .await
        .unwrap_or_else(|e| {
            Err(DirError::Open {
                path: config.state_dir.clone(),
                source: std::io::Error::other(e),
            })
        });
    let store = match opened {
        Ok((store, warning)) => {
            if let Some(w) = warning {
                warn!("state_dir: {w}");
            }
            Ok(store)
        }
        Err(e) => {
            let e = format!("state_dir {}", e.with_fix());
            error!(
                "{e}; every forward stays closed and the agent is not ready (restart it once fixed)"
            );
            Err(e)
        }
    };
    // Not ready, and nothing listed as closed, until the controller's first decision.
    state.set_access(
        Vec::new(),
        Vec::new(),
        Some("reading the access state".into()),
    );
    let mut controller = Controller::new(
        store.clone(),
        config.forwards.clone(),
        state,
        Arc::new(SystemClock),
    );
    controller.admin_at(admin);
    for hook in hooks {
        controller.on_event(hook);
    }
    if let Some(webhook) = &config.notify {
        controller.on_event(notify::start(
            webhook.clone(),
            &config.proxy,
            &config.server.tls,
        ));
    }
    let desired = controller.desired();
    let configured = watch::Sender::new(config.forwards.clone());
    let (commands_tx, commands) = mpsc::channel(16);
    let (gate_tx, gate_rx) = mpsc::channel(64);
    let mut tasks = vec![tokio::spawn(controller.run(
        configured.subscribe(),
        commands,
        gate_rx,
    ))];
    let mut socket = None;
    if let Ok(store) = store {
        let s = store.clone();
        match tokio::task::spawn_blocking(move || control::bind(&s)).await {
            Ok(Ok((listener, name))) => match tokio::net::UnixListener::from_std(listener) {
                Ok(listener) => {
                    tasks.push(tokio::spawn(control::serve(listener, commands_tx)));
                    socket = Some((store, name));
                }
                Err(e) => socket_error(&store, &e.to_string()),
            },
            Ok(Err(e)) => socket_error(&store, &e.to_string()),
            Err(e) => socket_error(&store, &e.to_string()),
        }
    }
    AccessControl {
        configured,
        desired,
        gate: Gate::new(gate_tx),
        tasks,
        socket,
    }
}

fn socket_error(store: &store::Store, e: &str) {
    error!(
        "control socket in {}: {e}; commands still work through the state on disk (applied within a second)",
        store.dir().display()
    );
}
