//! `agent run`: the long-running tunnel, stopped by SIGINT or SIGTERM.

use std::future::Future;
use std::sync::Arc;

use tracing::info;

use crate::config::Config;
use crate::ssh::keys::Identity;
use crate::tunnel::state::TunnelState;
use crate::tunnel::supervisor;

/// A running agent's state, readable while it runs (health endpoints, tests).
pub struct Agent {
    pub config: Config,
    pub state: Arc<TunnelState>,
}

impl Agent {
    pub fn new(config: Config) -> Self {
        let state = TunnelState::new(&config.forwards);
        Self { config, state }
    }

    /// Holds the tunnel until `shutdown` resolves, then cancels the forwards and disconnects.
    pub async fn run(&self, identity: Identity, shutdown: impl Future<Output = ()>) {
        info!(
            version = env!("CARGO_PKG_VERSION"),
            config = %self.config.file.display(),
            identity = %identity.path.display(),
            key = %identity.fingerprint(),
            forwards = self.config.forwards.len(),
            "agent starting"
        );
        supervisor::supervise(&self.config, identity, self.state.clone(), shutdown).await;
        info!("agent stopped");
    }
}

/// Resolves on the first SIGINT or SIGTERM.
pub async fn termination_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        // Without signal handlers the process can still be killed; run until then.
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => info!("SIGTERM received"),
        _ = int.recv() => info!("SIGINT received"),
    }
}
