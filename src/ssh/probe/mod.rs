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

use std::borrow::Cow;

use russh::client::{self, Handle};
use russh::keys::Algorithm;
use russh::{Disconnect, Preferred};

use self::tap::{Tap, Tapped};
use super::dial::{self, authenticate, client_id, preferred};
use super::error::{HandlerError, describe_russh};
use super::handler::{ClientHandler, HostCheck};
use super::hostkey::{HostKeyPin, Refusal};
use super::keys::Identity;
use super::session;
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
    /// Every host-key algorithm the agent can verify (no SHA-1 `ssh-rsa`): the scan lists
    /// every key the server has, whatever the pins ask for.
    every_type: Vec<Algorithm>,
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
    /// Every key the server proved it holds: the one the agent's order gets first, then one per
    /// other key type the server has (see [`ServerProbe::scan`]). Empty when no key exchange
    /// finished.
    pub offered: Vec<OfferedKey>,
    /// Trusted when any of those keys is (on a session with that key), else how the first
    /// handshake ended.
    pub end: HandshakeEnd,
}

impl ServerProbe {
    /// Negotiates as the agent does for this server: its cipher order, and only the pinned
    /// host-key algorithms when every pin is a key line.
    pub fn new(host: &str, pins: Vec<HostKeyPin>, known_hosts: Option<PathBuf>) -> Self {
        let ssh_config = client::Config {
            client_id: client_id("_check"),
            preferred: preferred(&pins, known_hosts.is_some()),
            ..client::Config::default()
        };
        Self {
            host: host.to_string(),
            pins,
            known_hosts,
            ssh_config: Arc::new(ssh_config),
            every_type: preferred(&[], false).key.into_owned(),
        }
    }

    /// Every host key the server has, as `ssh-keyscan` finds them: the handshake on `first`
    /// (in the agent's order), then one handshake per other key type the server lists in its
    /// KEXINIT, each on a new stream from `redial` and each within `timeout`. The session kept
    /// is the first whose key is trusted: `agent run` finds that key the same way.
    pub async fn scan<F, Fut>(
        &self,
        first: Box<dyn crate::transport::Io>,
        port: u16,
        timeout: Duration,
        mut redial: F,
    ) -> Handshake
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Option<Box<dyn crate::transport::Io>>>,
    {
        let (mut hs, offers) = self
            .handshake(first, port, timeout, self.ssh_config.clone())
            .await;
        let Some(first_key) = hs.offered.first() else {
            return hs;
        };
        if matches!(first_key.refusal, Some(Refusal::KnownHostsUnusable(_))) {
            return hs;
        }
        let seen = [first_key.algorithm.clone()];
        for algorithm in dial::still_to_ask(&self.every_type, offers.as_deref(), &seen) {
            let Ok(Some(stream)) = tokio::time::timeout(timeout, redial()).await else {
                break;
            };
            let config = self.asking_only_for(algorithm);
            let (more, _) = self.handshake(stream, port, timeout, config).await;
            hs.offered.extend(more.offered);
            if let HandshakeEnd::Trusted(s) = more.end {
                if matches!(hs.end, HandshakeEnd::Trusted(_)) {
                    s.close(timeout).await;
                } else {
                    hs.end = HandshakeEnd::Trusted(s);
                }
            }
        }
        hs
    }

    fn asking_only_for(&self, algorithm: Algorithm) -> Arc<client::Config> {
        Arc::new(client::Config {
            client_id: client_id("_check"),
            preferred: Preferred {
                key: Cow::Owned(vec![algorithm]),
                ..self.ssh_config.preferred.clone()
            },
            ..client::Config::default()
        })
    }

    /// Runs banner exchange, key exchange and the host-key check on `tcp` (already connected to
    /// `port`), all within `timeout`, asking for host keys in `config`'s order. Also returns
    /// the host-key algorithms the server listed.
    async fn handshake<S: crate::transport::Io + 'static>(
        &self,
        tcp: S,
        port: u16,
        timeout: Duration,
        config: Arc<client::Config>,
    ) -> (Handshake, Option<Vec<String>>) {
        let tap = Arc::new(Mutex::new(Tap::default()));
        let check = HostCheck {
            pins: self.pins.clone(),
            known_hosts: self.known_hosts.clone(),
            host: self.host.clone(),
            port,
        };
        // No forwards: every channel the server opens is refused.
        let serves_nothing = ConnContext::new(
            TunnelState::new(&[]),
            Limits::default(),
            timeout,
            Default::default(),
            None,
        );
        let stream = Tapped::with(Box::new(tcp), tap.clone());
        let open = dial::open(config, stream, check, serves_nothing);
        let (end, offered, offers) = match tokio::time::timeout(timeout, open).await {
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
                (end, offered.into_iter().collect(), opened.offers)
            }
            Err(_) => (HandshakeEnd::TimedOut, Vec::new(), None),
        };
        let tap = lock(&tap);
        let hs = Handshake {
            banner: tap.banner(),
            other_bytes: tap.other_bytes(),
            offered,
            end,
        };
        (hs, offers)
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
