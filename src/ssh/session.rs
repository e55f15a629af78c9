//! The live SSH session to the vendor (opened by [`super::dial::Dialer`]): remote-forward
//! requests and cancels, its end, and goodbye.

use std::sync::Arc;
use std::time::Duration;

use russh::Disconnect;
use russh::client::Handle;
use tokio::sync::watch;
use tracing::{debug, warn};

use super::handler::ClientHandler;
use crate::config::Forward;
use crate::transport::Rung;
use crate::tunnel::reconcile::{ForwardError, ForwardPort};

/// An authenticated session.
pub struct Session {
    pub(super) handle: Arc<Handle<ClientHandler>>,
    /// "rung (address)" or "rung via proxy" this session runs over.
    pub via: String,
    pub port: u16,
    /// The host key the server proved it holds, `SHA256:...` (for the audit trail).
    pub host_key: Option<String>,
    /// The rung it runs over (the supervisor starts the next dial with it).
    pub rung: Rung,
    /// How long the SSH handshake took on the stream this session runs over: banner, key
    /// exchange, host-key check and authentication (`agent_handshake_duration_seconds`). The
    /// dial before it (TCP, TLS, proxy) is not included: `timeouts.connect` bounds that.
    pub handshake: Duration,
    pub(super) closed: watch::Receiver<Option<String>>,
}

/// The server side of remote forwarding, for the reconciler. With a fixed port OpenSSH
/// replies without a port number (russh returns 0): the port asked for is the port granted.
pub struct Forwarder(Arc<Handle<ClientHandler>>);

impl ForwardPort for Forwarder {
    async fn request(&self, f: &Forward) -> Result<(), ForwardError> {
        request_forward(&self.0, &f.remote_addr, f.remote_port).await
    }

    async fn cancel(&self, f: &Forward) -> Result<(), ForwardError> {
        cancel_forward(&self.0, &f.remote_addr, f.remote_port).await
    }
}

/// Asks the server to listen on `address:port` (`tcpip-forward`).
pub(crate) async fn request_forward(
    handle: &Handle<ClientHandler>,
    address: &str,
    port: u16,
) -> Result<(), ForwardError> {
    match handle.tcpip_forward(address, u32::from(port)).await {
        Ok(_) => Ok(()),
        Err(russh::Error::RequestDenied) => Err(ForwardError::Refused),
        Err(_) => Err(ForwardError::SessionGone),
    }
}

/// Asks the server to stop listening on `address:port` (`cancel-tcpip-forward`).
pub(crate) async fn cancel_forward(
    handle: &Handle<ClientHandler>,
    address: &str,
    port: u16,
) -> Result<(), ForwardError> {
    match handle.cancel_tcpip_forward(address, u32::from(port)).await {
        Ok(()) => Ok(()),
        Err(russh::Error::RequestDenied) => Err(ForwardError::Refused),
        Err(_) => Err(ForwardError::SessionGone),
    }
}

impl Session {
    /// Requests and cancels forwards on this session (shared with the reconciler's tasks).
    pub fn forwarder(&self) -> Arc<Forwarder> {
        Arc::new(Forwarder(self.handle.clone()))
    }

    /// Asks the server to stop listening for `f`, bounded: at shutdown, so the port is free for
    /// whoever connects next.
    pub async fn cancel_forward(&self, f: &Forward, timeout: Duration) {
        let cancel = cancel_forward(&self.handle, &f.remote_addr, f.remote_port);
        if !matches!(tokio::time::timeout(timeout, cancel).await, Ok(Ok(()))) {
            debug!(forward = %f.name, "cancel-tcpip-forward not acknowledged");
        }
    }

    /// Resolves with the reason once the session has ended, whatever ended it.
    pub async fn closed(&mut self) -> String {
        let mut poll = tokio::time::interval(Duration::from_secs(1));
        loop {
            if let Some(reason) = self.closed.borrow().clone() {
                return reason;
            }
            // Some endings (a failed socket shutdown) skip the handler's callback.
            if self.handle.is_closed() {
                return "connection closed".into();
            }
            tokio::select! {
                r = self.closed.changed() => if r.is_err() { return "connection closed".into() },
                _ = poll.tick() => {}
            }
        }
    }

    /// Says goodbye to the server (bounded), then drops the connection.
    pub async fn disconnect(self, timeout: Duration) {
        let bye = self
            .handle
            .disconnect(Disconnect::ByApplication, "agent shutting down", "en");
        if tokio::time::timeout(timeout, bye).await.is_err() {
            warn!("server did not take the disconnect in time; closing the socket");
        }
    }
}
