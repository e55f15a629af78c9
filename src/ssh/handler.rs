//! The russh client handler: verifies the server's host key, and decides every channel the
//! server tries to open. Only `forwarded-tcpip` for a forward the server granted on this session
//! is served, and only ever to the target configured for it.
//!
//! Callbacks run inside russh's session loop, so none of them awaits network I/O or calls
//! `Handle` methods: a forwarded connection is handed to [`crate::tunnel::conn::open`], which
//! answers at once or runs the target dial and the pump in a task of its own.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use russh::client::{DisconnectReason, Msg, Session};
use russh::keys::PublicKeyOrCertificate;
use russh::{Channel, ChannelOpenFailure};
use tokio::sync::watch;
use tracing::{info, warn};

use super::channel;
use super::error::{HandlerError, describe_russh};
use super::hostkey::{self, HostKeyPin, HostKeyVerdict};
use crate::logging::{Throttle, printable};
use crate::tunnel::conn::{self, ConnContext};

/// What the host-key check needs to know about the server being dialed.
#[derive(Debug, Clone)]
pub struct HostCheck {
    pub pins: Vec<HostKeyPin>,
    pub known_hosts: Option<PathBuf>,
    pub host: String,
    pub port: u16,
}

pub struct ClientHandler {
    pub(crate) ctx: Arc<ConnContext>,
    pub(crate) host_check: HostCheck,
    /// The verdict on the key the server offered, kept for `agent check` and error reports.
    pub(crate) verdict: Arc<std::sync::Mutex<Option<HostKeyVerdict>>>,
    /// Set to the reason once the session is gone.
    pub(crate) closed: watch::Sender<Option<String>>,
}

impl russh::client::Handler for ClientHandler {
    type Error = HandlerError;

    async fn check_server_key(
        &mut self,
        offered: &PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        let key = offered.public_key();
        let hc = &self.host_check;
        let verdict = hostkey::verify(&key, &hc.pins, hc.known_hosts.as_deref(), &hc.host, hc.port);
        *self.verdict.lock().unwrap_or_else(|p| p.into_inner()) = Some(verdict.clone());
        if verdict.trusted {
            Ok(true)
        } else {
            Err(HandlerError::HostKey(verdict))
        }
    }

    async fn server_channel_open_forwarded_tcpip(
        &mut self,
        channel: Channel<Msg>,
        connected_address: &str,
        connected_port: u32,
        originator_address: &str,
        originator_port: u32,
        reply: russh::client::ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        let incoming = channel::Incoming { channel, reply };
        let origin = conn::Originator {
            address: originator_address,
            port: originator_port,
        };
        let session = self.closed.subscribe();
        conn::open(
            &self.ctx,
            connected_address,
            connected_port,
            origin,
            session,
            incoming,
        )
        .await;
        Ok(())
    }

    async fn server_channel_open_session(
        &mut self,
        _channel: Channel<Msg>,
        reply: russh::client::ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        refuse(&self.ctx, reply, "session").await;
        Ok(())
    }

    async fn server_channel_open_direct_tcpip(
        &mut self,
        _channel: Channel<Msg>,
        host_to_connect: &str,
        port_to_connect: u32,
        _originator_address: &str,
        _originator_port: u32,
        reply: russh::client::ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        if REFUSED_LOG.allow("refused channels of other types") {
            warn!(
                host = %printable(host_to_connect),
                port = port_to_connect,
                "server asked to open direct-tcpip"
            );
        }
        refuse(&self.ctx, reply, "direct-tcpip").await;
        Ok(())
    }

    async fn server_channel_open_x11(
        &mut self,
        _channel: Channel<Msg>,
        _originator_address: &str,
        _originator_port: u32,
        reply: russh::client::ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        refuse(&self.ctx, reply, "x11").await;
        Ok(())
    }

    async fn server_channel_open_agent_forward(
        &mut self,
        _channel: Channel<Msg>,
        reply: russh::client::ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        refuse(&self.ctx, reply, "auth-agent").await;
        Ok(())
    }

    async fn server_channel_open_forwarded_streamlocal(
        &mut self,
        _channel: Channel<Msg>,
        _socket_path: &str,
        reply: russh::client::ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        refuse(&self.ctx, reply, "forwarded-streamlocal").await;
        Ok(())
    }

    async fn server_channel_open_direct_streamlocal(
        &mut self,
        _channel: Channel<Msg>,
        _socket_path: &str,
        reply: russh::client::ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        refuse(&self.ctx, reply, "direct-streamlocal").await;
        Ok(())
    }

    async fn should_accept_unknown_server_channel(
        &mut self,
        _id: russh::ChannelId,
        channel_type: &str,
    ) -> bool {
        self.ctx.state.metrics.channel_refused("unknown_type");
        if REFUSED_LOG.allow("refused channels of other types") {
            warn!(
                kind = %printable(channel_type),
                "rejected a channel of unknown type opened by the server"
            );
        }
        false
    }

    async fn disconnected(
        &mut self,
        reason: DisconnectReason<Self::Error>,
    ) -> Result<(), Self::Error> {
        let text = match &reason {
            DisconnectReason::ReceivedDisconnect(info) => {
                format!(
                    "server disconnected: {:?} {}",
                    info.reason_code,
                    printable(info.message.trim())
                )
            }
            DisconnectReason::Error(HandlerError::Russh(e)) => describe_russh(e),
            DisconnectReason::Error(e) => e.to_string(),
        };
        let _ = self.closed.send(Some(text));
        match reason {
            DisconnectReason::ReceivedDisconnect(_) => Ok(()),
            DisconnectReason::Error(e) => Err(e),
        }
    }
}

/// Channels of types the agent never serves: counted, and logged through a throttle (a server
/// can open them as fast as it can write).
static REFUSED_LOG: Throttle = Throttle::new(20, Duration::from_secs(10));

async fn refuse(ctx: &ConnContext, reply: russh::client::ChannelOpenHandle, kind: &str) {
    ctx.state.metrics.channel_refused(kind);
    if REFUSED_LOG.allow("refused channels of other types") {
        info!(
            kind,
            "rejected a {kind} channel opened by the server: this agent only serves its listed forwards"
        );
    }
    reply
        .reject(ChannelOpenFailure::AdministrativelyProhibited)
        .await;
}
