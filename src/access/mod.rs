//! The customer decides when the vendor gets in: per-forward access windows, break-glass grants,
//! pause, all enforced here, on the customer's side, and never widened by anything the vendor
//! sends. The configuration is the ceiling; this module narrows it in time.
//!
//! - [`schedule`]: windows ("Mon-Fri 08:00-18:00" in a time zone) as instants.
//! - [`policy`]: the rule deciding one forward from its windows, grant and pause.
//! - [`store`]: grants, pauses and the last clock reading on disk, written atomically.
//! - [`controller`]: the task that decides every forward and publishes the open ones as the
//!   reconciler's desired set (config and policy -> reconciler -> session).
//! - [`commands`]: grant, revoke, pause, resume and status as the controller carries them out.
//! - [`control`], [`protocol`], [`client`]: the local control socket and the CLI side of it.
//! - [`notify`]: every access change posted to a chat webhook, off the decision path.
//!
//! Fails closed: a state folder or file that cannot be read closes what depends on it, and the
//! agent reports not ready with the reason.

pub mod client;
mod commands;
pub mod control;
pub mod controller;
pub mod notify;
pub mod policy;
pub mod protocol;
pub mod schedule;
pub mod store;
#[cfg(test)]
mod tests;

use std::sync::Arc;

use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tracing::error;

use crate::config::{Config, Forward};
use crate::tunnel::reconcile::Desired;
use crate::tunnel::state::TunnelState;
use controller::{Controller, EventHook, SystemClock};

/// The running access control: where configured forwards go in, and the desired set comes out.
pub struct Running {
    /// The configured forwards (a reload sends new ones).
    pub configured: watch::Sender<Vec<Forward>>,
    /// The forwards open now: the reconciler's input.
    pub desired: watch::Receiver<Desired>,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.tasks.iter().for_each(JoinHandle::abort);
    }
}

/// Loads the access state from `config.state_dir`, starts the controller and the control
/// socket. Never fails: what cannot be read or bound is logged and fails closed.
pub async fn start(config: &Config, state: Arc<TunnelState>, hooks: Vec<EventHook>) -> Running {
    let store = store::Store::open(&config.state_dir).map_err(|e| {
        format!(
            "state_dir {}: cannot create or open it: {e}",
            config.state_dir.display()
        )
    });
    let mut controller = Controller::new(
        store.clone(),
        config.forwards.clone(),
        state,
        Arc::new(SystemClock),
    );
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
    let mut tasks = vec![tokio::spawn(
        controller.run(configured.subscribe(), commands),
    )];
    match store {
        Ok(_) => {
            let path = control::socket_path(&config.state_dir);
            match control::bind(&path).await {
                Ok(listener) => tasks.push(tokio::spawn(control::serve(listener, commands_tx))),
                Err(e) => error!(
                    "control socket {}: {e}; grant, revoke, pause, resume and status cannot reach this agent",
                    path.display()
                ),
            }
        }
        Err(e) => error!(
            "{e}; grants and pauses cannot be kept, so every forward with an access policy fails closed"
        ),
    }
    Running {
        configured,
        desired,
        tasks,
    }
}
