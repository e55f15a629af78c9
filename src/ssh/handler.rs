//! The russh client handler: verifies the server's host key, and decides every channel the
//! server tries to open. Only `forwarded-tcpip` for a forward the server granted on this session
//! is served, and only ever to the target configured for it.
//!
//! Callbacks run inside russh's session loop, so none of them awaits network I/O or calls
//! `Handle` methods: the target dial and the pump run in spawned tasks.

use std::path::PathBuf;
use std::sync::Arc;

use russh::client::{DisconnectReason, Msg, Session};
use russh::keys::PublicKeyOrCertificate;
use russh::{Channel, ChannelOpenFailure};
use tokio::sync::watch;
use tracing::{Instrument, info, info_span, warn};

use super::channel;
use super::error::{HandlerError, describe_russh};
use super::hostkey::{self, HostKeyPin, HostKeyVerdict};
use crate::tunnel::budget::ConnBudget;
use crate::tunnel::conn::{self, ConnContext};
use crate::tunnel::pump::{pump, stop_signal};

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
        let from = format!("{originator_address}:{originator_port}");
        let Some(route) = self.ctx.state.route(connected_address, connected_port) else {
            warn!(address = connected_address, port = connected_port, from = %from,
                "rejected forwarded connection for a port this agent did not request");
            reply
                .reject(ChannelOpenFailure::AdministrativelyProhibited)
                .await;
            return Ok(());
        };
        let forward = route.forward.clone();
        let Ok(permit) = self.ctx.slots.clone().try_acquire_owned() else {
            warn!(forward = %forward.name, from = %from, max = self.ctx.limits.max_connections,
                "rejected forwarded connection: limits.max_connections reached");
            route.metrics.rejected.inc();
            reply.reject(ChannelOpenFailure::ResourceShortage).await;
            return Ok(());
        };
        let ctx = self.ctx.clone();
        let session_closed = self.closed.subscribe();
        let span =
            info_span!("conn", forward = %forward.name, from = %from, target = %forward.target());
        tokio::spawn(
            async move {
                let _permit = permit;
                let meter = route.metrics;
                let tcp = match conn::dial_target(&forward, ctx.target_connect).await {
                    Ok(tcp) => tcp,
                    Err(e) => {
                        warn!(error = %e, "target unreachable; connection refused to the vendor");
                        meter.rejected.inc();
                        reply.reject(ChannelOpenFailure::ConnectFailed).await;
                        return;
                    }
                };
                reply.accept().await;
                meter.opened.inc();
                meter.open.inc();
                let budget =
                    ConnBudget::new(ctx.limits.connection_buffer, ctx.total_budget.clone());
                let (inbound, sink) = channel::adapt(channel, budget.clone());
                let stop = stop_signal(route.removed, session_closed);
                let report = pump(tcp, inbound, sink, budget, &meter, stop).await;
                meter.open.dec();
                if report.end.is_failure() {
                    meter.failed.inc();
                }
                conn::log_end(&report);
                crate::memory::note_connection_closed();
            }
            .instrument(span),
        );
        Ok(())
    }

    async fn server_channel_open_session(
        &mut self,
        _channel: Channel<Msg>,
        reply: russh::client::ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        refuse(reply, "session").await;
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
        warn!(
            host = host_to_connect,
            port = port_to_connect,
            "server asked to open direct-tcpip"
        );
        refuse(reply, "direct-tcpip").await;
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
        refuse(reply, "x11").await;
        Ok(())
    }

    async fn server_channel_open_agent_forward(
        &mut self,
        _channel: Channel<Msg>,
        reply: russh::client::ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        refuse(reply, "auth-agent").await;
        Ok(())
    }

    async fn server_channel_open_forwarded_streamlocal(
        &mut self,
        _channel: Channel<Msg>,
        _socket_path: &str,
        reply: russh::client::ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        refuse(reply, "forwarded-streamlocal").await;
        Ok(())
    }

    async fn server_channel_open_direct_streamlocal(
        &mut self,
        _channel: Channel<Msg>,
        _socket_path: &str,
        reply: russh::client::ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        refuse(reply, "direct-streamlocal").await;
        Ok(())
    }

    async fn should_accept_unknown_server_channel(
        &mut self,
        _id: russh::ChannelId,
        channel_type: &str,
    ) -> bool {
        warn!(
            kind = channel_type,
            "rejected a channel of unknown type opened by the server"
        );
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
                    info.message.trim()
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

async fn refuse(reply: russh::client::ChannelOpenHandle, kind: &str) {
    info!(
        kind,
        "rejected a {kind} channel opened by the server: this agent only serves its listed forwards"
    );
    reply
        .reject(ChannelOpenFailure::AdministrativelyProhibited)
        .await;
}
