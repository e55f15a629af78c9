//! The russh handler for `agent check`: records the host key offered and stops before
//! authentication unless it is trusted; refuses every channel the server tries to open.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use russh::client::{self, Msg, Session};
use russh::keys::PublicKeyOrCertificate;
use russh::{Channel, ChannelOpenFailure};

use super::{OfferedKey, lock};
use crate::ssh::hostkey::{self, HostKeyPin};

#[derive(Debug)]
pub(super) enum ProbeError {
    Untrusted,
    Russh(russh::Error),
}

impl From<russh::Error> for ProbeError {
    fn from(e: russh::Error) -> Self {
        ProbeError::Russh(e)
    }
}

/// Records the offered key and stops before authentication unless it is trusted; refuses every
/// channel the server tries to open (a vendor connection arriving during a trial forward).
pub(super) struct ProbeHandler {
    pub(super) pins: Vec<HostKeyPin>,
    pub(super) known_hosts: Option<PathBuf>,
    pub(super) host: String,
    pub(super) port: u16,
    pub(super) offered: Arc<Mutex<Option<OfferedKey>>>,
}

impl client::Handler for ProbeHandler {
    type Error = ProbeError;

    async fn check_server_key(&mut self, key: &PublicKeyOrCertificate) -> Result<bool, ProbeError> {
        let mut key = key.public_key();
        let verdict = hostkey::verify(
            &key,
            &self.pins,
            self.known_hosts.as_deref(),
            &self.host,
            self.port,
        );
        key.set_comment("");
        *lock(&self.offered) = Some(OfferedKey {
            fingerprint: verdict.offered,
            algorithm: verdict.algorithm,
            line: key.to_openssh().unwrap_or_default().trim().to_string(),
            trusted: verdict.trusted,
        });
        if verdict.trusted {
            Ok(true)
        } else {
            Err(ProbeError::Untrusted)
        }
    }

    async fn server_channel_open_forwarded_tcpip(
        &mut self,
        _channel: Channel<Msg>,
        _connected_address: &str,
        _connected_port: u32,
        _originator_address: &str,
        _originator_port: u32,
        reply: client::ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), ProbeError> {
        reply.reject(ChannelOpenFailure::ConnectFailed).await;
        Ok(())
    }

    async fn server_channel_open_session(
        &mut self,
        _channel: Channel<Msg>,
        reply: client::ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), ProbeError> {
        reply
            .reject(ChannelOpenFailure::AdministrativelyProhibited)
            .await;
        Ok(())
    }

    async fn server_channel_open_direct_tcpip(
        &mut self,
        _channel: Channel<Msg>,
        _host_to_connect: &str,
        _port_to_connect: u32,
        _originator_address: &str,
        _originator_port: u32,
        reply: client::ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), ProbeError> {
        reply
            .reject(ChannelOpenFailure::AdministrativelyProhibited)
            .await;
        Ok(())
    }

    async fn server_channel_open_x11(
        &mut self,
        _channel: Channel<Msg>,
        _originator_address: &str,
        _originator_port: u32,
        reply: client::ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), ProbeError> {
        reply
            .reject(ChannelOpenFailure::AdministrativelyProhibited)
            .await;
        Ok(())
    }

    async fn server_channel_open_agent_forward(
        &mut self,
        _channel: Channel<Msg>,
        reply: client::ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), ProbeError> {
        reply
            .reject(ChannelOpenFailure::AdministrativelyProhibited)
            .await;
        Ok(())
    }

    async fn server_channel_open_forwarded_streamlocal(
        &mut self,
        _channel: Channel<Msg>,
        _socket_path: &str,
        reply: client::ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), ProbeError> {
        reply
            .reject(ChannelOpenFailure::AdministrativelyProhibited)
            .await;
        Ok(())
    }

    async fn server_channel_open_direct_streamlocal(
        &mut self,
        _channel: Channel<Msg>,
        _socket_path: &str,
        reply: client::ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), ProbeError> {
        reply
            .reject(ChannelOpenFailure::AdministrativelyProhibited)
            .await;
        Ok(())
    }

    async fn should_accept_unknown_server_channel(
        &mut self,
        _id: russh::ChannelId,
        _channel_type: &str,
    ) -> bool {
        false
    }
}
