//! Opening the SSH session to the vendor: the settings it negotiates with, and one rung's
//! attempt (its stream, then handshake, host-key check and authentication under one bound),
//! raced against the others by [`transport::climb`]. The live session is [`super::session`].

use std::borrow::Cow;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use russh::client::{self, Handle};
use russh::keys::{Algorithm, HashAlg, PrivateKeyWithHashAlg};
use russh::{Preferred, cipher};
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use super::error::{HandlerError, SshError, describe_russh};
use super::handler::{ClientHandler, HostCheck};
use super::hostkey::{
    HostKeyPin, HostKeyVerdict, Refusal, check_known_hosts, describe_pins, parse_pins,
};
use super::kexinit::{Offers, Sniffed};
use super::keys::Identity;
use super::session::Session;
use super::transport::{Transport, transport};
use crate::config::SessionSettings;
use crate::proxy::{self, Route};
use crate::tls::Trust;
use crate::transport::{self, Rung};
use crate::tunnel::conn::ConnContext;

/// AES-GCM first: ~1.5x faster than ChaCha20 in russh on x86 (aes128-gcm is not in russh's
/// default list and must be named).
pub(crate) const CIPHERS: &[cipher::Name] = &[
    cipher::AES_128_GCM,
    cipher::AES_256_GCM,
    cipher::CHACHA20_POLY1305,
    cipher::AES_256_CTR,
    cipher::AES_192_CTR,
    cipher::AES_128_CTR,
];

/// Per-channel receive window: 2 MiB measured best (32 MiB made sshd far slower). It is
/// reopened only for bytes the target has taken (`window_on_consume`), so this is also the most
/// a well-behaved server can have waiting in the agent for one connection.
const WINDOW: u32 = 2 * 1024 * 1024;

/// Everything needed to open a session, taken from the config once.
#[derive(Debug, Clone)]
pub struct Dialer {
    pub host: String,
    /// The ladder, in order, each with the way it is reached (NO_PROXY may exempt some hosts).
    pub rungs: Vec<(Rung, Route)>,
    pub user: String,
    pub identity: Identity,
    pub pins: Vec<HostKeyPin>,
    pub known_hosts: Option<std::path::PathBuf>,
    pub connect_timeout: Duration,
    pub handshake_timeout: Duration,
    trust: Trust,
    /// The session's settings with the default host-key order.
    ssh_config: Arc<client::Config>,
    /// What each other order is built from.
    tuning: Tuning,
    /// The host-key algorithm whose key matched a pin after the default order's key did not
    /// (see [`Dialer::at`]): asked for first on every later dial, so a reconnect costs one
    /// handshake. Shared by the clones of one `Dialer`; a new configuration starts afresh.
    learned: Arc<std::sync::Mutex<Option<Algorithm>>>,
}

/// The session settings that do not depend on the host-key order.
#[derive(Debug, Clone)]
struct Tuning {
    keepalive_interval: Duration,
    keepalive_max: usize,
    window_size: u32,
    rekey_after: usize,
    preferred: Preferred,
}

impl Tuning {
    /// The client config asking for host-key algorithms in the order `key`.
    fn config(&self, key: Vec<Algorithm>) -> Arc<client::Config> {
        let limits = russh::Limits {
            rekey_read_limit: self.rekey_after,
            rekey_write_limit: self.rekey_after,
            ..russh::Limits::default()
        };
        Arc::new(client::Config {
            client_id: client_id(""),
            keepalive_interval: Some(self.keepalive_interval),
            keepalive_max: self.keepalive_max,
            window_size: self.window_size,
            window_on_consume: true,
            // No `nodelay`: russh sets it only on a socket it opens itself; the agent's sockets
            // are tuned by `net::server_side`.
            preferred: Preferred {
                key: Cow::Owned(key),
                ..self.preferred.clone()
            },
            limits,
            ..client::Config::default()
        })
    }
}

impl Dialer {
    pub fn new(config: &SessionSettings, identity: Identity) -> Self {
        let pins = parse_pins(&config.server.host_keys);
        check_known_hosts(config.server.known_hosts.as_deref());
        let preferred = preferred(&pins, config.server.known_hosts.is_some());
        let tuning = Tuning {
            keepalive_interval: config.keepalive.interval,
            keepalive_max: config.keepalive.max_missed as usize,
            // Never grant more than limits.connection_buffer: then only a server that ignores
            // the window can fill a connection's budget.
            window_size: WINDOW
                .min(u32::try_from(config.limits.connection_buffer).unwrap_or(u32::MAX)),
            rekey_after: config.limits.rekey_after as usize,
            preferred,
        };
        let ssh_config = tuning.config(tuning.preferred.key.to_vec());
        let route = config.proxy.route(&config.server.host);
        info!(server = %config.server.host, "reaching the server {route}");
        for entry in config.proxy.ignored_no_proxy_entries() {
            warn!(%entry, "NO_PROXY entry has a port: like curl, the agent ignores such entries (list the host without the port)");
        }
        let rungs = config
            .server
            .transports
            .iter()
            .map(|r| (r.clone(), config.proxy.route(&r.host)))
            .collect();
        let needs_tls = config.server.transports.iter().any(|r| r.kind.is_tls())
            || route
                .proxy()
                .is_some_and(|p| p.scheme == proxy::Scheme::Https);
        let trust = if needs_tls {
            let (trust, problem) = Trust::load(&config.server.tls);
            if let Some(problem) = problem {
                warn!("server.tls.ca_file: {problem}; trusting the platform's CAs only");
            }
            trust
        } else {
            // Nothing uses it: skip reading the platform store.
            Trust::empty()
        };
        Self {
            host: config.server.host.clone(),
            rungs,
            user: config.server.user.clone(),
            identity,
            pins,
            known_hosts: config.server.known_hosts.clone(),
            connect_timeout: config.timeouts.connect,
            handshake_timeout: config.timeouts.handshake,
            trust,
            ssh_config,
            tuning,
            learned: Arc::default(),
        }
    }

    /// Climbs the ladder ([`transport::climb`]), starting with `prefer` (the rung that worked
    /// last), until a rung yields an authenticated session. A rung that has not produced its
    /// banner within [`transport::FALLBACK_DELAY`] gets the next rung started beside it, and a
    /// rung that fails starts the next at once; the first session to authenticate wins and the
    /// other attempts are dropped. A proxy that failed itself rules out the rungs behind it
    /// through that proxy. Returns the most telling failure when every rung failed.
    pub async fn connect(
        &self,
        ctx: Arc<ConnContext>,
        prefer: Option<&Rung>,
    ) -> Result<Session, SshError> {
        let first = prefer.and_then(|p| self.rungs.iter().position(|(r, _)| r == p));
        let names: Vec<&Rung> = self.rungs.iter().map(|(r, _)| r).collect();
        let me = Arc::new(self.clone());
        let attempt = |i, banner| {
            let (me, ctx) = (me.clone(), ctx.clone());
            async move { me.attempt(ctx, i, banner).await }
        };
        // The proxy itself failed: no other rung can do better through it.
        let drop_after = |i: usize, e: &SshError, j: usize| {
            matches!(e, SshError::Proxy(p) if p.ends_ladder())
                && self.rungs[j].1.proxy() == self.rungs[i].1.proxy()
        };
        let failures = match transport::climb(&names, first, attempt, drop_after).await {
            Ok(session) => return Ok(session),
            Err(failures) => failures,
        };
        let mut worst = None;
        for (_, e) in failures {
            keep_worst(&mut worst, e);
        }
        Err(worst.unwrap_or_else(|| SshError::Network {
            target: self.host.clone(),
            reason: "no rung to try".into(),
        }))
    }

    /// One rung: open its stream, then the SSH handshake and authentication within
    /// `timeouts.handshake`. Directly, each address of the rung's host in turn until one yields a
    /// session (an address that accepts TCP but never speaks costs that bound, while the ladder
    /// has already started the next rung beside this one). `banner` is set when the server's
    /// first byte arrives.
    async fn attempt(
        &self,
        ctx: Arc<ConnContext>,
        i: usize,
        banner: watch::Sender<Vec<u8>>,
    ) -> Result<Session, SshError> {
        let (rung, route) = &self.rungs[i];
        if route.proxy().is_some() {
            // The proxy resolves the name (or `proxy::connect` does, for socks5://).
            return self.at(ctx, i, None, banner).await;
        }
        let mut worst: Option<SshError> = None;
        let addrs = transport::resolve(rung, self.connect_timeout).await?;
        let count = addrs.len();
        for (n, addr) in addrs.into_iter().enumerate() {
            debug!(%addr, %rung, "dialing");
            match self.at(ctx.clone(), i, Some(addr), banner.clone()).await {
                Ok(s) => return Ok(s),
                Err(e) if n + 1 < count => {
                    info!(%rung, %addr, error = %e, "connection attempt failed; trying the next address");
                    keep_worst(&mut worst, e);
                }
                Err(e) => {
                    debug!(%rung, %addr, error = %e, "connection attempt failed");
                    keep_worst(&mut worst, e);
                }
            }
        }
        Err(worst.unwrap_or_else(|| SshError::Network {
            target: rung.to_string(),
            reason: "the name resolved to no address".into(),
        }))
    }

    /// Opens rung `i`'s stream: to `addr`, or through the rung's proxy when `addr` is `None`.
    async fn dial(
        &self,
        i: usize,
        addr: Option<SocketAddr>,
    ) -> Result<transport::Dialed, SshError> {
        let (rung, route) = &self.rungs[i];
        Ok(match addr {
            Some(addr) => transport::open_at(rung, addr, &self.trust, self.connect_timeout).await?,
            None => transport::open(rung, route, &self.trust, self.connect_timeout).await?,
        })
    }

    /// A session with rung `i` at `addr` (or through its proxy). The first handshake asks for
    /// the host-key algorithm learned earlier, then the default order. When the key the server
    /// proves matches nothing, each other key type the server lists in its KEXINIT is asked
    /// for in turn over a new connection, as `ssh-keyscan` does: a pin of the server's RSA or
    /// ECDSA key is then found although Ed25519 comes first. The type that matched is learned
    /// for the next dials. When none matches, the error names every key the server offered.
    async fn at(
        &self,
        ctx: Arc<ConnContext>,
        i: usize,
        addr: Option<SocketAddr>,
        banner: watch::Sender<Vec<u8>>,
    ) -> Result<Session, SshError> {
        let rung = &self.rungs[i].0;
        let learned = self
            .learned
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let config = match &learned {
            Some(first) => self
                .tuning
                .config(first_then_rest(first, &self.tuning.preferred.key)),
            None => self.ssh_config.clone(),
        };
        let dialed = self.dial(i, addr).await?;
        let untrusted = match self
            .over(ctx.clone(), rung, dialed, banner.clone(), config)
            .await
        {
            Ok(session) => return Ok(session),
            Err(Failed::Other(e)) => return Err(e),
            Err(Failed::Untrusted(u)) => u,
        };
        let Untrusted {
            target,
            verdict,
            offers,
        } = *untrusted;
        let mut verdicts = vec![verdict];
        let scan = if worth_asking_again(&verdicts[0]) {
            still_to_ask(
                &self.tuning.preferred.key,
                offers.as_deref(),
                &[verdicts[0].algorithm.clone()],
            )
        } else {
            Vec::new()
        };
        for algorithm in scan {
            debug!(%rung, %algorithm, "the server's key matches no pin: asking for its {algorithm} key");
            let dialed = self.dial(i, addr).await?;
            let config = self.tuning.config(vec![algorithm.clone()]);
            match self
                .over(ctx.clone(), rung, dialed, banner.clone(), config)
                .await
            {
                Ok(session) => {
                    info!(%rung, %algorithm, "the server's {algorithm} key matches a pin: asking for it first from now on");
                    *self.learned.lock().unwrap_or_else(|p| p.into_inner()) = Some(algorithm);
                    return Ok(session);
                }
                Err(Failed::Untrusted(u)) => verdicts.push(u.verdict),
                // Without its KEXINIT's list the server may simply have no key of this type.
                Err(Failed::Other(e)) if offers.is_none() => {
                    debug!(%rung, %algorithm, error = %e, "no key of this type");
                }
                // The key types were known: a failure now says nothing about the keys.
                Err(Failed::Other(e)) => return Err(e),
            }
        }
        Err(SshError::HostKeyMismatch {
            target,
            verdicts,
            expected: describe_pins(&self.pins, self.known_hosts.as_deref()),
        })
    }

    /// The SSH handshake and authentication on an open stream, within `timeouts.handshake`,
    /// asking for host keys in `config`'s order.
    async fn over(
        &self,
        ctx: Arc<ConnContext>,
        rung: &Rung,
        dialed: transport::Dialed,
        banner: watch::Sender<Vec<u8>>,
        config: Arc<client::Config>,
    ) -> Result<Session, Failed> {
        let target = dialed.via;
        debug!(via = %target, "stream open; SSH handshake");
        // The handshake metric starts here: the stream is open (TCP, TLS, proxy: the dial), and
        // nothing of SSH has happened yet. It ends once authenticated.
        let started = Instant::now();
        let first = banner.subscribe();
        let stream = transport(dialed.conn, banner);
        let result = tokio::time::timeout(
            self.handshake_timeout,
            self.handshake(ctx, stream, rung, target.clone(), config),
        )
        .await
        .unwrap_or(Err(Failed::Other(SshError::HandshakeTimeout {
            target: target.clone(),
            secs: self.handshake_timeout.as_secs(),
        })));
        let mut session = result.map_err(|e| match e {
            Failed::Other(e) => Failed::Other(not_ssh(e, &target, &first.borrow())),
            untrusted => untrusted,
        })?;
        session.handshake = started.elapsed();
        Ok(session)
    }

    async fn handshake(
        &self,
        ctx: Arc<ConnContext>,
        stream: Transport,
        rung: &Rung,
        target: String,
        config: Arc<client::Config>,
    ) -> Result<Session, Failed> {
        let (host, port) = rung.host_key_name(&self.host);
        let check = HostCheck {
            pins: self.pins.clone(),
            known_hosts: self.known_hosts.clone(),
            host: host.to_string(),
            port,
        };
        let (opened, closed) = open(config, stream, check, ctx).await;
        let host_key = opened.verdict.as_ref().map(|v| v.offered.clone());
        let mut handle = match opened.handle {
            Ok(handle) => handle,
            Err(HandlerError::HostKey(verdict)) => {
                return Err(Failed::Untrusted(Box::new(Untrusted {
                    target,
                    verdict,
                    offers: opened.offers,
                })));
            }
            Err(HandlerError::Russh(e)) => {
                return Err(Failed::Other(SshError::Protocol(format!(
                    "{target}: {}",
                    describe_russh(&e)
                ))));
            }
        };
        let auth = authenticate(&mut handle, &self.user, &self.identity)
            .await
            .map_err(|e| {
                Failed::Other(SshError::Protocol(format!(
                    "{target}: authentication failed: {}",
                    describe_russh(&e)
                )))
            })?;
        if !auth.success() {
            return Err(Failed::Other(SshError::AuthRejected {
                user: self.user.clone(),
                fingerprint: self.identity.fingerprint(),
            }));
        }
        Ok(Session {
            handle: Arc::new(handle),
            via: target,
            port: rung.port,
            rung: rung.clone(),
            host_key,
            handshake: Duration::ZERO,
            closed,
        })
    }
}

/// Why one handshake yielded no session.
enum Failed {
    /// The server's key matched nothing: worth asking for its other keys.
    Untrusted(Box<Untrusted>),
    Other(SshError),
}

struct Untrusted {
    target: String,
    verdict: HostKeyVerdict,
    /// The host-key algorithms the server's KEXINIT listed, when it could be read.
    offers: Option<Vec<String>>,
}

/// A key refused because known_hosts cannot be used is refused whatever its type: no other
/// key of the server can do better. A key that only matched nothing, or is revoked, may have
/// a sibling of another type that a pin holds.
pub(crate) fn worth_asking_again(verdict: &HostKeyVerdict) -> bool {
    !matches!(verdict.refusal, Some(Refusal::KnownHostsUnusable(_)))
}

/// The key type a host-key algorithm proves: RSA's signature algorithms all prove one key.
fn key_type(a: &Algorithm) -> &str {
    match a {
        Algorithm::Rsa { .. } => "ssh-rsa",
        other => other.as_str(),
    }
}

/// The host-key algorithms still worth asking for, one per key type, in `allowed`'s order:
/// those the server lists (`offers`; all of `allowed` when its list could not be read), minus
/// the key types already seen (`seen`, as a key names its type: `ssh-rsa`, `ssh-ed25519`).
/// Never `ssh-rsa` (SHA-1) signatures.
pub(crate) fn still_to_ask(
    allowed: &[Algorithm],
    offers: Option<&[String]>,
    seen: &[String],
) -> Vec<Algorithm> {
    let mut ask: Vec<Algorithm> = Vec::new();
    for a in allowed {
        let offered = offers.is_none_or(|names| names.iter().any(|n| n == a.as_str()));
        let new_type = !seen.iter().any(|t| t == key_type(a))
            && !ask.iter().any(|b| key_type(b) == key_type(a));
        if offered && new_type && !is_sha1_rsa(a) {
            ask.push(a.clone());
        }
    }
    ask
}

/// `first`, then the rest of `order` without it.
fn first_then_rest(first: &Algorithm, order: &[Algorithm]) -> Vec<Algorithm> {
    std::iter::once(first.clone())
        .chain(order.iter().filter(|a| *a != first).cloned())
        .collect()
}

/// A protocol failure on a stream whose first bytes were not an SSH banner says what answered
/// instead: behind an inspecting proxy a `tls://` rung gets the proxy's HTTP error.
fn not_ssh(e: SshError, target: &str, first: &[u8]) -> SshError {
    if !matches!(e, SshError::Protocol(_)) || first.is_empty() || first.starts_with(b"SSH-") {
        return e;
    }
    let line = String::from_utf8_lossy(first);
    let line = line.lines().next().unwrap_or_default();
    SshError::Protocol(format!(
        "{target} answered \"{}\" instead of an SSH banner: something other than the vendor's sshd answers on this rung (an inspecting proxy refuses SSH inside TLS: use a wss:// rung)",
        crate::logging::printable(line)
    ))
}

/// `SSH-2.0-agent_VERSION` plus `suffix`, for the vendor's logs.
pub(crate) fn client_id(suffix: &str) -> russh::SshId {
    russh::SshId::Standard(Cow::Owned(format!(
        "SSH-2.0-agent_{}{suffix}",
        env!("CARGO_PKG_VERSION")
    )))
}

/// What the agent offers in negotiation: its cipher order, and only the pinned host-key
/// algorithms when every pin is a key line. Never `ssh-rsa` (RSA with SHA-1) as a host-key
/// algorithm: an RSA host key must sign with rsa-sha2-512 or rsa-sha2-256.
pub(crate) fn preferred(pins: &[HostKeyPin], has_known_hosts: bool) -> Preferred {
    let key = pinned_algorithms(pins, has_known_hosts)
        .unwrap_or_else(|| Preferred::default().key.into_owned());
    Preferred {
        cipher: Cow::Borrowed(CIPHERS),
        key: Cow::Owned(key.into_iter().filter(|a| !is_sha1_rsa(a)).collect()),
        ..Preferred::default()
    }
}

fn is_sha1_rsa(a: &Algorithm) -> bool {
    matches!(a, Algorithm::Rsa { hash: None })
}

/// A session after key exchange: the handle if the host key was trusted, and the verdict on
/// the key the server offered either way.
pub(crate) struct Opened {
    pub handle: Result<Handle<ClientHandler>, HandlerError>,
    pub verdict: Option<HostKeyVerdict>,
    /// The host-key algorithms the server listed in its KEXINIT, when it could be read.
    pub offers: Option<Vec<String>>,
}

/// Banner, key exchange and host-key check on `stream`, with the handler that serves the
/// session's channels from `ctx` (the probe passes a context with no forwards: it serves none).
/// Also returns the watch that is set to the reason once the session ends.
pub(crate) async fn open<S>(
    config: Arc<client::Config>,
    stream: S,
    host_check: HostCheck,
    ctx: Arc<ConnContext>,
) -> (Opened, watch::Receiver<Option<String>>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (closed_tx, closed_rx) = watch::channel(None);
    let verdict: Arc<std::sync::Mutex<Option<HostKeyVerdict>>> = Arc::default();
    let handler = ClientHandler {
        ctx,
        host_check,
        verdict: verdict.clone(),
        closed: closed_tx,
    };
    let offers = Offers::default();
    let stream = Sniffed::new(stream, offers.clone());
    let handle = client::connect_stream(config, stream, handler).await;
    let verdict = verdict.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let offers = offers.lock().unwrap_or_else(|p| p.into_inner()).clone();
    (
        Opened {
            handle,
            verdict,
            offers,
        },
        closed_rx,
    )
}

/// Public-key authentication as `user`. RSA signs with SHA-2, never SHA-1 `ssh-rsa` (OpenSSH
/// >= 8.8 refuses it): the best the server lists, SHA-256 when it lists none.
pub(crate) async fn authenticate(
    handle: &mut Handle<ClientHandler>,
    user: &str,
    identity: &Identity,
) -> Result<client::AuthResult, russh::Error> {
    let key = identity.key.clone();
    let hash = if key.algorithm().is_rsa() {
        match handle.best_supported_rsa_hash().await {
            Ok(Some(Some(h))) => Some(h),
            _ => Some(HashAlg::Sha256),
        }
    } else {
        None
    };
    handle
        .authenticate_publickey(user.to_string(), PrivateKeyWithHashAlg::new(key, hash))
        .await
}

fn keep_worst(worst: &mut Option<SshError>, e: SshError) {
    if worst.as_ref().is_none_or(|w| e.severity() >= w.severity()) {
        *worst = Some(e);
    }
}

/// When every pin is a full key line, ask only for those algorithms: a server with both RSA and
/// Ed25519 keys would otherwise offer the one that was not pinned.
pub(crate) fn pinned_algorithms(
    pins: &[HostKeyPin],
    has_known_hosts: bool,
) -> Option<Vec<Algorithm>> {
    if has_known_hosts || pins.is_empty() {
        return None;
    }
    let mut algs = Vec::new();
    for pin in pins {
        let name = pin.algorithm()?;
        let found: Vec<Algorithm> = if name == "ssh-rsa" {
            vec![
                Algorithm::Rsa {
                    hash: Some(HashAlg::Sha512),
                },
                Algorithm::Rsa {
                    hash: Some(HashAlg::Sha256),
                },
            ]
        } else {
            Algorithm::new(&name).into_iter().collect()
        };
        for a in found {
            if !algs.contains(&a) {
                algs.push(a);
            }
        }
    }
    Some(algs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(algs: &[Algorithm]) -> Vec<&str> {
        algs.iter().map(|a| a.as_str()).collect()
    }

    /// One algorithm per key type the server lists and the agent has not seen yet, in the
    /// agent's order; RSA once (SHA-512 before SHA-256), never SHA-1 `ssh-rsa`.
    #[test]
    fn each_other_key_type_is_asked_for_once() {
        let allowed = Preferred::default().key.into_owned();
        let offers: Vec<String> = [
            "rsa-sha2-512",
            "rsa-sha2-256",
            "ssh-rsa",
            "ecdsa-sha2-nistp256",
            "ssh-ed25519",
            "ssh-ed25519-cert-v01@openssh.com",
        ]
        .map(String::from)
        .to_vec();
        let seen = ["ssh-ed25519".to_string()];
        assert_eq!(
            names(&still_to_ask(&allowed, Some(&offers), &seen)),
            ["ecdsa-sha2-nistp256", "rsa-sha2-512"]
        );
        let seen = ["ssh-rsa".to_string()];
        let only_sha1 = ["ssh-rsa".to_string(), "ssh-ed25519".to_string()];
        assert_eq!(
            names(&still_to_ask(&allowed, Some(&only_sha1), &seen)),
            ["ssh-ed25519"]
        );
        // The server's list unread: every other type the agent can verify.
        assert_eq!(
            names(&still_to_ask(&allowed, None, &["ssh-ed25519".into()])),
            [
                "ecdsa-sha2-nistp256",
                "ecdsa-sha2-nistp384",
                "ecdsa-sha2-nistp521",
                "rsa-sha2-512"
            ]
        );
        let learned = Algorithm::Rsa {
            hash: Some(HashAlg::Sha512),
        };
        let order = first_then_rest(&learned, &allowed);
        assert_eq!(order[0], learned);
        assert_eq!(order.len(), allowed.len());
    }
}
