//! One SSH session to the vendor: dial (the ladder of rungs, with a fast fallback between them),
//! handshake, host-key check and authentication under one bound, then remote-forward requests
//! on the live session.

use std::borrow::Cow;
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use russh::client::{self, Handle};
use russh::keys::{Algorithm, HashAlg, PrivateKeyWithHashAlg};
use russh::{Disconnect, Preferred, cipher};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use super::error::{HandlerError, SshError, describe_russh};
use super::handler::{ClientHandler, HostCheck};
use super::hostkey::{
    HostKeyPin, HostKeyVerdict, Refusal, check_known_hosts, describe_pins, parse_pins,
};
use super::kexinit::{Offers, Sniffed};
use super::keys::Identity;
use super::transport::{Transport, transport};
use crate::config::{Forward, SessionSettings};
use crate::proxy::{self, Route};
use crate::tls::Trust;
use crate::transport::{self, FirstBytes, Rung};
use crate::tunnel::conn::ConnContext;
use crate::tunnel::reconcile::{ForwardError, ForwardPort};

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

/// How long a rung may go without producing its first byte (the SSH banner) before the next
/// rung is started beside it, as Happy Eyeballs (RFC 8305) does between addresses. Short enough
/// that a port that accepts TCP and never speaks (a silent firewall) costs well under a second,
/// long enough that a healthy server across an ocean (TCP, TLS and WebSocket round trips) has
/// usually spoken first.
pub const FALLBACK_DELAY: Duration = Duration::from_millis(300);

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

    /// Climbs the ladder, starting with `prefer` (the rung that worked last), until a rung yields
    /// an authenticated session. A rung that has not produced its banner within
    /// [`FALLBACK_DELAY`] gets the next rung started beside it, and a rung that fails starts the
    /// next at once; the first session to authenticate wins and the other attempts are dropped.
    /// Returns the most telling failure when every rung failed.
    pub async fn connect(
        &self,
        ctx: Arc<ConnContext>,
        prefer: Option<&Rung>,
    ) -> Result<Session, SshError> {
        let mut order: VecDeque<usize> = (0..self.rungs.len()).collect();
        if let Some(i) = prefer.and_then(|p| self.rungs.iter().position(|(r, _)| r == p)) {
            order.retain(|x| *x != i);
            order.push_front(i);
        }
        let me = Arc::new(self.clone());
        let mut attempts = JoinSet::new();
        let mut worst: Option<SshError> = None;
        // The banner watch and start time of the rung started last.
        let mut latest: Option<(FirstBytes, Instant)> = None;
        loop {
            if attempts.is_empty() || latest.is_none() {
                let Some(i) = order.pop_front() else {
                    break;
                };
                let (tx, rx) = watch::channel(Vec::new());
                let (me, ctx) = (me.clone(), ctx.clone());
                attempts.spawn(async move { (i, me.attempt(ctx, i, tx).await) });
                latest = Some((rx, Instant::now()));
            }
            let fallback = {
                let more = !order.is_empty();
                let latest = latest.clone();
                async move {
                    let Some((mut banner, since)) = latest.filter(|_| more) else {
                        return std::future::pending().await;
                    };
                    tokio::time::sleep_until(since + FALLBACK_DELAY).await;
                    // Spoke in time: no fallback for it (its failure starts the next rung).
                    if !banner.borrow_and_update().is_empty() {
                        std::future::pending::<()>().await;
                    }
                }
            };
            let event = tokio::select! {
                joined = attempts.join_next() => joined,
                _ = fallback => None,
            };
            match event {
                None => {
                    if let Some((rung, _)) = order.front().map(|i| &self.rungs[*i]) {
                        info!(next = %rung, "no SSH banner within {}ms: starting the next rung beside it", FALLBACK_DELAY.as_millis());
                    }
                    latest = None;
                }
                Some(Ok((_, Ok(session)))) => return Ok(session),
                Some(Ok((i, Err(e)))) => {
                    let rung = &self.rungs[i].0;
                    // The dial's own line (the caller's) says how the last one failed.
                    if order.is_empty() && attempts.is_empty() {
                        debug!(%rung, error = %e, "connection attempt failed");
                    } else {
                        info!(%rung, error = %e, "connection attempt failed; trying the next rung");
                    }
                    if matches!(&e, SshError::Proxy(p) if p.ends_ladder()) {
                        // The proxy itself failed: no other rung can do better through it.
                        let proxy = self.rungs[i].1.proxy().cloned();
                        order.retain(|j| self.rungs[*j].1.proxy().cloned() != proxy);
                    }
                    keep_worst(&mut worst, e);
                    // A failure starts the next rung at once.
                    latest = None;
                }
                Some(Err(e)) => {
                    keep_worst(
                        &mut worst,
                        SshError::Protocol(format!("connection attempt ended: {e}")),
                    );
                    latest = None;
                }
            }
            if attempts.is_empty() && order.is_empty() {
                break;
            }
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

/// An authenticated session.
pub struct Session {
    handle: Arc<Handle<ClientHandler>>,
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
    closed: watch::Receiver<Option<String>>,
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
