//! `agent check`'s view of the vendor's SSH server, one step at a time: the banner, the key
//! exchange and the host key offered (recorded even when it matches no pin, so a first-time user
//! can pin it), public-key authentication, and trial remote forwards that are cancelled at once.
//!
//! It runs the agent's own session code (`crate::ssh::session`): the same negotiation, handler,
//! host-key check, authentication and forward requests, so the check sees what `agent run` will
//! see. Its handler serves no forward, so no channel the server opens is ever accepted here.

mod tap;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use russh::Disconnect;
use russh::client::{self, Handle};

use self::tap::{Tap, Tapped};
use super::error::{HandlerError, describe_russh};
use super::handler::{ClientHandler, HostCheck};
use super::hostkey::{HostKeyPin, Refusal};
use super::keys::Identity;
use super::session::{self, authenticate, client_id, preferred};
use crate::config::Limits;
use crate::tunnel::conn::ConnContext;
use crate::tunnel::reconcile::ForwardError;
use crate::tunnel::state::TunnelState;

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
    /// It matches a pin or a known_hosts entry, and known_hosts does not refuse it.
    pub trusted: bool,
    /// Why it is refused whatever pins it (`@revoked`, known_hosts unusable): file and line.
    pub refusal: Option<Refusal>,
    /// known_hosts has `@cert-authority` lines, which the agent does not use.
    pub notice: Option<String>,
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
        let ssh_config = client::Config {
            client_id: client_id("_check"),
            nodelay: true,
            preferred: preferred(&pins, known_hosts.is_some()),
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
    pub async fn handshake<S: crate::transport::Io + 'static>(
        &self,
        tcp: S,
        port: u16,
        timeout: Duration,
    ) -> Handshake {
        let tap = Arc::new(Mutex::new(Tap::default()));
        let check = HostCheck {
            pins: self.pins.clone(),
            known_hosts: self.known_hosts.clone(),
            host: self.host.clone(),
            port,
        };
        // No forwards: every channel the server opens is refused.
        let serves_nothing = ConnContext::new(TunnelState::new(&[]), Limits::default(), timeout);
        let stream = Tapped {
            inner: Box::new(tcp),
            tap: tap.clone(),
        };
        let open = session::open(self.ssh_config.clone(), stream, check, serves_nothing);
        let (end, offered) = match tokio::time::timeout(timeout, open).await {
            Ok((opened, _closed)) => {
                let end = match opened.handle {
                    Ok(handle) => HandshakeEnd::Trusted(ProbeSession { handle }),
                    Err(HandlerError::HostKey(_)) => HandshakeEnd::Untrusted,
                    Err(HandlerError::Russh(e)) => HandshakeEnd::Failed(describe_russh(&e)),
                };
                let offered = opened.verdict.map(|v| OfferedKey {
                    fingerprint: v.offered,
                    algorithm: v.algorithm,
                    line: v.line,
                    trusted: v.trusted,
                    refusal: v.refusal,
                    notice: v.notice,
                });
                (end, offered)
            }
            Err(_) => (HandshakeEnd::TimedOut, None),
        };
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
    handle: Handle<ClientHandler>,
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
        let attempt = authenticate(&mut self.handle, user, identity);
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
        let request = session::request_forward(&self.handle, address, port);
        match tokio::time::timeout(timeout, request).await {
            Ok(Ok(())) => {
                let cancel = session::cancel_forward(&self.handle, address, port);
                let cancelled = matches!(tokio::time::timeout(timeout, cancel).await, Ok(Ok(())));
                TrialForward::Granted { cancelled }
            }
            Ok(Err(ForwardError::Refused)) => TrialForward::Refused,
            Ok(Err(e)) => TrialForward::Failed(e.to_string()),
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
