//! `agent check`'s view of the vendor's SSH server, one step at a time: the banner, the key
//! exchange and the host key offered (recorded even when it matches no pin, so a first-time user
//! can pin it), public-key authentication, and trial remote forwards that are cancelled at once.
//!
//! Negotiation uses the agent's own cipher order and host-key algorithm choice, so the check
//! sees what `agent run` will see. No channel the server opens is ever accepted here.

use std::borrow::Cow;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use russh::client::{self, Handle, Msg, Session};
use russh::keys::{HashAlg, PrivateKeyWithHashAlg, PublicKeyOrCertificate};
use russh::{Channel, ChannelOpenFailure, Disconnect, Preferred};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use super::error::describe_russh;
use super::hostkey::{self, HostKeyPin};
use super::keys::Identity;
use super::session::{CIPHERS, pinned_algorithms};

/// How the server and its trust anchors are known: from agent.yaml, or nothing (first contact).
#[derive(Debug, Clone)]
pub struct ServerProbe {
    host: String,
    pins: Vec<HostKeyPin>,
    known_hosts: Option<PathBuf>,
    ssh_config: Arc<client::Config>,
}

/// The key the server proved it holds during key exchange.
#[derive(Debug, Clone)]
pub struct OfferedKey {
    /// `SHA256:...`, as `ssh-keygen -l` prints it.
    pub fingerprint: String,
    /// e.g. `ssh-ed25519`.
    pub algorithm: String,
    /// `ssh-ed25519 AAAA...`, without a comment: pinnable as it is.
    pub line: String,
    /// It matches a pin or a known_hosts entry.
    pub trusted: bool,
}

/// How far the handshake got.
#[derive(Debug)]
pub enum HandshakeEnd {
    /// Key exchange done and the host key is trusted: authentication may follow.
    Trusted(ProbeSession),
    /// Key exchange done; the key matches nothing configured (or nothing is configured).
    Untrusted,
    /// Nothing, or not all of it, arrived within the bound.
    TimedOut,
    /// The server or the protocol failed; the text says how.
    Failed(String),
}

/// What one SSH handshake showed.
#[derive(Debug)]
pub struct Handshake {
    /// The server's identification line (`SSH-2.0-OpenSSH_9.2p1 ...`), once it arrived.
    pub banner: Option<String>,
    /// The first bytes the port sent when they were not an SSH banner (printable, shortened).
    pub other_bytes: Option<String>,
    pub offered: Option<OfferedKey>,
    pub end: HandshakeEnd,
}

impl ServerProbe {
    /// Negotiates as the agent does for this server: its cipher order, and only the pinned
    /// host-key algorithms when every pin is a key line.
    pub fn new(host: &str, pins: Vec<HostKeyPin>, known_hosts: Option<PathBuf>) -> Self {
        let mut preferred = Preferred {
            cipher: Cow::Borrowed(CIPHERS),
            ..Preferred::default()
        };
        if let Some(algs) = pinned_algorithms(&pins, known_hosts.is_some()) {
            preferred.key = Cow::Owned(algs);
        }
        let ssh_config = client::Config {
            client_id: russh::SshId::Standard(Cow::Owned(format!(
                "SSH-2.0-agent_{}_check",
                env!("CARGO_PKG_VERSION")
            ))),
            nodelay: true,
            preferred,
            ..client::Config::default()
        };
        Self {
            host: host.to_string(),
            pins,
            known_hosts,
            ssh_config: Arc::new(ssh_config),
        }
    }

    /// Runs banner exchange, key exchange and the host-key check on `tcp` (already connected to
    /// `port`), all within `timeout`.
    pub async fn handshake(&self, tcp: TcpStream, port: u16, timeout: Duration) -> Handshake {
        let tap = Arc::new(Mutex::new(Tap::default()));
        let offered = Arc::new(Mutex::new(None));
        let handler = ProbeHandler {
            pins: self.pins.clone(),
            known_hosts: self.known_hosts.clone(),
            host: self.host.clone(),
            port,
            offered: offered.clone(),
        };
        let stream = Tapped {
            inner: tcp,
            tap: tap.clone(),
        };
        let connect = client::connect_stream(self.ssh_config.clone(), stream, handler);
        let end = match tokio::time::timeout(timeout, connect).await {
            Ok(Ok(handle)) => HandshakeEnd::Trusted(ProbeSession { handle }),
            Ok(Err(ProbeError::Untrusted)) => HandshakeEnd::Untrusted,
            Ok(Err(ProbeError::Russh(e))) => HandshakeEnd::Failed(describe_russh(&e)),
            Err(_) => HandshakeEnd::TimedOut,
        };
        let offered = lock(&offered).clone();
        let tap = lock(&tap);
        Handshake {
            banner: tap.banner(),
            other_bytes: tap.other_bytes(),
            offered,
            end,
        }
    }
}

/// Why authentication did not succeed.
#[derive(Debug)]
pub enum AuthFailure {
    /// The server said no; `methods` are the ones it would still accept.
    Rejected {
        methods: Vec<String>,
    },
    TimedOut,
    Failed(String),
}

/// The result of one trial forward.
#[derive(Debug, PartialEq, Eq)]
pub enum TrialForward {
    /// Granted, then cancelled (`cancelled` is false if the cancel was not acknowledged).
    Granted {
        cancelled: bool,
    },
    /// The server answered REQUEST_FAILURE.
    Refused,
    TimedOut,
    Failed(String),
}

/// A session whose host key is trusted; authentication and trial forwards run on it.
pub struct ProbeSession {
    handle: Handle<ProbeHandler>,
}

impl std::fmt::Debug for ProbeSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ProbeSession")
    }
}

impl ProbeSession {
    /// Public-key authentication as `user`; RSA signs with SHA-2 as the agent does.
    pub async fn authenticate(
        &mut self,
        user: &str,
        identity: &Identity,
        timeout: Duration,
    ) -> Result<(), AuthFailure> {
        let attempt = async {
            let key = identity.key.clone();
            let hash = if key.algorithm().is_rsa() {
                match self.handle.best_supported_rsa_hash().await {
                    Ok(Some(Some(h))) => Some(h),
                    _ => Some(HashAlg::Sha256),
                }
            } else {
                None
            };
            self.handle
                .authenticate_publickey(user.to_string(), PrivateKeyWithHashAlg::new(key, hash))
                .await
        };
        match tokio::time::timeout(timeout, attempt).await {
            Ok(Ok(client::AuthResult::Success)) => Ok(()),
            Ok(Ok(client::AuthResult::Failure {
                remaining_methods, ..
            })) => Err(AuthFailure::Rejected {
                methods: remaining_methods.iter().map(String::from).collect(),
            }),
            Ok(Err(e)) => Err(AuthFailure::Failed(describe_russh(&e))),
            Err(_) => Err(AuthFailure::TimedOut),
        }
    }

    /// Asks the server to listen on `address:port` and, if it agrees, cancels at once.
    pub async fn trial_forward(&self, address: &str, port: u16, timeout: Duration) -> TrialForward {
        let request = self.handle.tcpip_forward(address, u32::from(port));
        match tokio::time::timeout(timeout, request).await {
            Ok(Ok(_)) => {
                let cancel = self.handle.cancel_tcpip_forward(address, u32::from(port));
                let cancelled = matches!(tokio::time::timeout(timeout, cancel).await, Ok(Ok(())));
                TrialForward::Granted { cancelled }
            }
            Ok(Err(russh::Error::RequestDenied)) => TrialForward::Refused,
            Ok(Err(e)) => TrialForward::Failed(describe_russh(&e)),
            Err(_) => TrialForward::TimedOut,
        }
    }

    /// Says goodbye (bounded) and drops the connection.
    pub async fn close(self, timeout: Duration) {
        let bye = self
            .handle
            .disconnect(Disconnect::ByApplication, "agent check done", "en");
        let _ = tokio::time::timeout(timeout, bye).await;
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[derive(Debug)]
enum ProbeError {
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
struct ProbeHandler {
    pins: Vec<HostKeyPin>,
    known_hosts: Option<PathBuf>,
    host: String,
    port: u16,
    offered: Arc<Mutex<Option<OfferedKey>>>,
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

/// The first bytes the server sent, kept to show its banner (or what it sent instead).
#[derive(Default)]
struct Tap {
    bytes: Vec<u8>,
}

/// Enough for a banner line plus any pre-banner text; more is not kept.
const TAP_LIMIT: usize = 1024;

impl Tap {
    fn record(&mut self, data: &[u8]) {
        let room = TAP_LIMIT.saturating_sub(self.bytes.len());
        self.bytes.extend_from_slice(&data[..data.len().min(room)]);
    }

    fn banner(&self) -> Option<String> {
        let text = String::from_utf8_lossy(&self.bytes);
        text.split_inclusive('\n')
            .find(|l| l.starts_with("SSH-") && l.ends_with('\n'))
            .map(|l| l.trim_end().to_string())
    }

    fn other_bytes(&self) -> Option<String> {
        if self.bytes.is_empty() || self.banner().is_some() {
            return None;
        }
        let shown: String = String::from_utf8_lossy(&self.bytes[..self.bytes.len().min(60)])
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect();
        Some(shown.trim().to_string())
    }
}

/// A TCP stream that copies what it reads into a [`Tap`].
struct Tapped {
    inner: TcpStream,
    tap: Arc<Mutex<Tap>>,
}

impl AsyncRead for Tapped {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = r {
            let mut tap = lock(&self.tap);
            if tap.bytes.len() < TAP_LIMIT {
                tap.record(&buf.filled()[before..]);
            }
        }
        r
    }
}

impl AsyncWrite for Tapped {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, data)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn banner_is_the_ssh_line_even_after_other_lines() {
        let mut tap = Tap::default();
        tap.record(b"hello there\r\nSSH-2.0-OpenSSH_9.2p1 Debian\r\n\0\0\0");
        assert_eq!(
            tap.banner().as_deref(),
            Some("SSH-2.0-OpenSSH_9.2p1 Debian")
        );
        assert_eq!(tap.other_bytes(), None);
    }

    #[test]
    fn non_ssh_answer_is_shown() {
        let mut tap = Tap::default();
        tap.record(b"HTTP/1.1 400 Bad Request\r\n\r\n");
        assert_eq!(tap.banner(), None);
        assert_eq!(
            tap.other_bytes().as_deref(),
            Some("HTTP/1.1 400 Bad Request")
        );
    }
}
