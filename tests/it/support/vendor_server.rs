//! An in-process SSH server playing the vendor, on russh's server API, for tests that need more
//! control than a real sshd gives: refuse chosen ports while running, count sessions, drop them
//! all at once, force rekeys, and open channels the agent never asked for.
//!
//! What it does, like OpenSSH with `AllowTcpForwarding remote`:
//! - public-key auth only, against `authorized_keys` (key material compared, comments ignored);
//!   RSA only as `rsa-sha2-256`/`rsa-sha2-512` (OpenSSH 8.8+ refuses SHA-1 `ssh-rsa` too);
//! - `tcpip-forward`: binds 127.0.0.1:PORT (0 = ephemeral, the chosen port is returned) unless the
//!   port is denied or already bound by anyone; each TCP connection becomes a `forwarded-tcpip`
//!   channel to the session that asked, with the address as requested and the actual port;
//! - `cancel-tcpip-forward` closes the listener; a session's listeners close when it ends.
//!
//! Everything binds loopback only. This file is also compiled into `examples/vendor_server.rs`,
//! so it must not depend on the rest of `tests/support`.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use russh::keys::{Algorithm, HashAlg, PrivateKey, PublicKey};
use russh::server::{self, Auth, PublicKeyOffer, Session, VerifiedPublicKey};
use russh::{Channel, ChannelId, ChannelMsg, ChannelReadHalf, MethodKind, MethodSet, Preferred};
use tokio::io::AsyncWriteExt;
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};
use tokio::task::{JoinHandle, JoinSet};

/// A client must send its SSH identification line within this time.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the server waits for a client to confirm or reject a channel it opens.
const CHANNEL_OPEN_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a closed listener task may take to release its port.
const LISTENER_CLOSE_TIMEOUT: Duration = Duration::from_secs(2);
/// After `disconnect_all` sends SSH_MSG_DISCONNECT: time for clients to hang up themselves
/// before their sockets are cut, and then for the sessions to wind down.
const DISCONNECT_GRACE: Duration = Duration::from_secs(1);
const SESSION_END_TIMEOUT: Duration = Duration::from_secs(5);
/// An accept loop gives up after this many errors in a row (e.g. out of file descriptors).
const MAX_ACCEPT_ERRORS: usize = 100;

/// How to run the server. `Default` = ephemeral port, no keys authorized, russh's rekey limits,
/// no keepalives, a fresh ed25519 host key.
#[derive(Clone, Debug, Default)]
pub struct VendorOptions {
    /// OpenSSH public key lines (`ssh-rsa AAAA... comment`) allowed to log in, as any user.
    pub authorized_keys: Vec<String>,
    /// Rekey after this many bytes in either direction (russh `Limits`; capped at 1 GiB).
    pub rekey_bytes: Option<u64>,
    /// Listen on 127.0.0.1:port instead of an ephemeral port (e.g. to restart on the same port).
    pub port: Option<u16>,
    /// Send keepalives after this much inbound silence; off by default.
    pub keepalive_interval: Option<Duration>,
    /// Unanswered keepalives before the session is dropped (russh default: 3).
    pub keepalive_max: Option<usize>,
    /// Host key to use (e.g. [`VendorServer::host_key`] of a previous instance); default: new ed25519.
    pub host_key: Option<PrivateKey>,
    /// On every grant, open one `forwarded-tcpip` channel for it in the same write as the
    /// REQUEST_SUCCESS (a vendor client was already waiting), send [`EARLY_HELLO`] and EOF on it
    /// once the client accepts, and keep what comes back ([`VendorServer::early_echo`]).
    pub open_on_grant: bool,
}

/// What the server sends on a channel it opened together with a grant.
pub const EARLY_HELLO: &[u8] = b"the first vendor client after the grant\n";

/// A channel the server asks the client to open, to check that the client refuses what it
/// never requested.
#[derive(Clone, Debug)]
pub enum ProbeChannel {
    Session,
    DirectTcpip {
        host: String,
        port: u16,
    },
    X11,
    /// A `forwarded-tcpip` channel for a forward the client never asked for.
    ForwardedTcpip {
        addr: String,
        port: u16,
    },
}

/// How the server misbehaves on a `forwarded-tcpip` channel it opens
/// ([`VendorServer::misbehave`]).
#[derive(Clone, Debug)]
pub enum Misbehaviour {
    /// Sends [`MISBEHAVE_HELLO`], then extended data (stderr), which a TCP forward never has.
    ExtendedData,
    /// Sends [`MISBEHAVE_HELLO`], EOF, then more data.
    DataAfterEof,
    /// Names this originator address in the channel open, then sends [`MISBEHAVE_HELLO`].
    Originator(String),
}

/// What a misbehaving channel sends first.
pub const MISBEHAVE_HELLO: &[u8] = b"hello before misbehaving\n";

/// What the client did with a misbehaving channel.
#[derive(Debug)]
pub struct Misbehaved {
    /// Ok if the client accepted the channel, Err with why not.
    pub opened: Result<(), String>,
    /// What the client sent back before the channel ended.
    pub received: Vec<u8>,
    /// The client closed the channel within 10 s of the misbehaviour.
    pub closed_by_client: bool,
}

pub struct VendorServer {
    pub port: u16,
    /// `ssh-ed25519 AAAA...` (no comment): what the agent pins.
    pub host_key_line: String,
    /// `SHA256:...`.
    pub host_key_fingerprint: String,
    host_key: PrivateKey,
    shared: Arc<Shared>,
    accept_task: JoinHandle<()>,
}

/// State shared by the accept loop, every session handler and the test.
struct Shared {
    config: Arc<server::Config>,
    authorized: Mutex<Vec<PublicKey>>,
    denied_ports: Mutex<HashSet<u16>>,
    state: Mutex<State>,
    next_session: AtomicU64,
    open_on_grant: bool,
    /// Bytes received on the channels opened together with a grant.
    early_echo: Mutex<Vec<u8>>,
}

#[derive(Default)]
struct State {
    sessions: HashMap<u64, SessionEntry>,
    grants: Vec<Grant>,
}

struct SessionEntry {
    /// Set once the SSH identification exchange is done.
    handle: Option<server::Handle>,
    /// A duplicate of the session's socket: shutting it down cuts the connection even if the
    /// client ignores SSH_MSG_DISCONNECT (russh then waits for the client's EOF forever).
    socket: std::net::TcpStream,
    authenticated: bool,
    /// Tasks serving this session's forwarded connections; aborted when the session ends.
    connections: Arc<Mutex<JoinSet<()>>>,
}

/// A granted remote forward and the task that owns its listener.
struct Grant {
    session: u64,
    /// The bind address as the client requested it (echoed back in `forwarded-tcpip`).
    addr: String,
    /// The actual port.
    port: u16,
    listener_task: JoinHandle<()>,
}

impl VendorServer {
    /// Starts the server; panics with a clear message if it cannot (test setup failure).
    pub async fn start(opts: VendorOptions) -> VendorServer {
        match Self::try_start(opts).await {
            Ok(server) => server,
            Err(e) => panic!("vendor server did not start: {e}"),
        }
    }

    /// Starts the server on 127.0.0.1 (`opts.port`, or an ephemeral port).
    pub async fn try_start(opts: VendorOptions) -> Result<VendorServer, String> {
        let host_key = match opts.host_key {
            Some(key) => key,
            None => PrivateKey::random(&mut russh::keys::key::safe_rng(), Algorithm::Ed25519)
                .map_err(|e| format!("generate host key: {e}"))?,
        };
        let host_key_line = public_line(host_key.public_key())?;
        let host_key_fingerprint = host_key
            .public_key()
            .fingerprint(HashAlg::Sha256)
            .to_string();
        let authorized = parse_keys(&opts.authorized_keys)?;

        let mut config = server::Config {
            keys: vec![host_key.clone()],
            // Public key only, like the vendor's sshd (PasswordAuthentication no).
            methods: MethodSet::from(&[MethodKind::PublicKey][..]),
            // russh delays every rejection by 1 s by default; OpenSSH clients always try "none"
            // first, so that would slow every test login.
            auth_rejection_time: Duration::from_millis(50),
            auth_rejection_time_initial: Some(Duration::ZERO),
            // Keepalives off unless asked; no inactivity timeout, so an idle agent stays up
            // (sessions are cut through their socket instead, see `disconnect_all`).
            keepalive_interval: opts.keepalive_interval,
            inactivity_timeout: None,
            window_size: 2 * 1024 * 1024,
            preferred: Preferred {
                // Also the server-sig-algs list: leave out SHA-1 `ssh-rsa`, as OpenSSH does.
                key: Cow::Owned(
                    Preferred::default()
                        .key
                        .iter()
                        .filter(|a| **a != Algorithm::Rsa { hash: None })
                        .cloned()
                        .collect(),
                ),
                ..Preferred::default()
            },
            nodelay: true,
            ..Default::default()
        };
        if let Some(max) = opts.keepalive_max {
            config.keepalive_max = max;
        }
        if let Some(bytes) = opts.rekey_bytes {
            // russh asserts the limits stay at or below 1 GiB (nonce reuse).
            let bytes = bytes.min(1 << 30) as usize;
            config.limits.rekey_read_limit = bytes;
            config.limits.rekey_write_limit = bytes;
        }

        let listener = bind_listener(opts.port.unwrap_or(0)).await?;
        let port = listener
            .local_addr()
            .map_err(|e| format!("local_addr: {e}"))?
            .port();
        let shared = Arc::new(Shared {
            config: Arc::new(config),
            authorized: Mutex::new(authorized),
            denied_ports: Mutex::new(HashSet::new()),
            state: Mutex::new(State::default()),
            next_session: AtomicU64::new(1),
            open_on_grant: opts.open_on_grant,
            early_echo: Mutex::new(Vec::new()),
        });
        let accept_task = tokio::spawn(accept_loop(listener, shared.clone()));
        Ok(VendorServer {
            port,
            host_key_line,
            host_key_fingerprint,
            host_key,
            shared,
            accept_task,
        })
    }

    /// The host key, to start another instance that the same pins accept.
    pub fn host_key(&self) -> PrivateKey {
        self.host_key.clone()
    }

    /// Refuse `tcpip-forward` for this port from now on (existing forwards stay).
    pub fn deny_port(&self, port: u16) {
        lock(&self.shared.denied_ports).insert(port);
    }

    /// Undo [`VendorServer::deny_port`].
    pub fn allow_port(&self, port: u16) {
        lock(&self.shared.denied_ports).remove(&port);
    }

    /// Replace the authorized keys; affects new logins only.
    pub fn set_authorized_keys(&self, lines: &[String]) -> Result<(), String> {
        *lock(&self.shared.authorized) = parse_keys(lines)?;
        Ok(())
    }

    /// Live forwards of all sessions: (address as requested, actual port).
    pub fn granted(&self) -> Vec<(String, u16)> {
        lock(&self.shared.state)
            .grants
            .iter()
            .map(|g| (g.addr.clone(), g.port))
            .collect()
    }

    /// Authenticated sessions currently connected.
    pub fn session_count(&self) -> usize {
        lock(&self.shared.state)
            .sessions
            .values()
            .filter(|s| s.authenticated)
            .count()
    }

    /// All connections currently running an SSH session, authenticated or not.
    pub fn connection_count(&self) -> usize {
        lock(&self.shared.state).sessions.len()
    }

    /// Asks the client of the most recent authenticated session to open a channel of `kind`.
    /// Ok if the client confirmed it (the channel is then closed again), Err with the reason
    /// if it rejected it, did not answer within 10 s, or there is no session.
    pub async fn open_channel(&self, kind: ProbeChannel) -> Result<(), String> {
        let handle = self.latest_handle()?;
        // Originator ports are made up: nothing connects to the client for real.
        let open = async {
            match kind {
                ProbeChannel::Session => handle.channel_open_session().await,
                ProbeChannel::DirectTcpip { host, port } => {
                    handle
                        .channel_open_direct_tcpip(host, port.into(), "127.0.0.1", 40001)
                        .await
                }
                ProbeChannel::X11 => handle.channel_open_x11("127.0.0.1", 40002).await,
                ProbeChannel::ForwardedTcpip { addr, port } => {
                    handle
                        .channel_open_forwarded_tcpip(addr, port.into(), "127.0.0.1", 40003)
                        .await
                }
            }
        };
        match tokio::time::timeout(CHANNEL_OPEN_TIMEOUT, open).await {
            Err(_) => Err(format!(
                "client did not answer the channel open within {CHANNEL_OPEN_TIMEOUT:?}"
            )),
            Ok(Err(russh::Error::ChannelOpenFailure(reason))) => {
                Err(format!("rejected: {reason:?}"))
            }
            Ok(Err(e)) => Err(format!("channel open failed: {e}")),
            Ok(Ok(channel)) => {
                let _ = channel.close().await;
                Ok(())
            }
        }
    }

    fn latest_handle(&self) -> Result<server::Handle, String> {
        let state = lock(&self.shared.state);
        state
            .sessions
            .iter()
            .filter(|(_, s)| s.authenticated)
            .max_by_key(|(id, _)| **id)
            .and_then(|(_, s)| s.handle.clone())
            .ok_or_else(|| "no authenticated session".to_string())
    }

    /// Opens a `forwarded-tcpip` channel for `addr:port` on the most recent session and breaks
    /// the protocol on it as `how` says; reports what the client did.
    pub async fn misbehave(&self, addr: &str, port: u16, how: Misbehaviour) -> Misbehaved {
        let mut outcome = Misbehaved {
            opened: Err(String::new()),
            received: Vec::new(),
            closed_by_client: false,
        };
        let handle = match self.latest_handle() {
            Ok(h) => h,
            Err(e) => {
                outcome.opened = Err(e);
                return outcome;
            }
        };
        let originator = match &how {
            Misbehaviour::Originator(o) => o.clone(),
            _ => "127.0.0.1".to_string(),
        };
        let open = handle.channel_open_forwarded_tcpip(addr, port.into(), originator, 40004);
        let mut channel = match tokio::time::timeout(CHANNEL_OPEN_TIMEOUT, open).await {
            Ok(Ok(channel)) => channel,
            Ok(Err(e)) => {
                outcome.opened = Err(format!("{e:?}"));
                return outcome;
            }
            Err(_) => {
                outcome.opened = Err("no answer".into());
                return outcome;
            }
        };
        outcome.opened = Ok(());
        let _ = channel
            .data_bytes(Bytes::from_static(MISBEHAVE_HELLO))
            .await;
        match how {
            Misbehaviour::ExtendedData => {
                let _ = channel
                    .extended_data_bytes(1, Bytes::from_static(b"stderr?"))
                    .await;
            }
            Misbehaviour::DataAfterEof => {
                let _ = channel.eof().await;
                let _ = channel.data_bytes(Bytes::from_static(b"late")).await;
            }
            Misbehaviour::Originator(_) => {}
        }
        let deadline = tokio::time::Instant::now() + CHANNEL_OPEN_TIMEOUT;
        loop {
            match tokio::time::timeout_at(deadline, channel.wait()).await {
                Ok(Some(ChannelMsg::Data { data })) => outcome.received.extend_from_slice(&data),
                Ok(Some(ChannelMsg::Close) | None) => {
                    outcome.closed_by_client = true;
                    break;
                }
                Ok(Some(_)) => {}
                Err(_) => break,
            }
        }
        outcome
    }

    /// Drops every current session (SSH_MSG_DISCONNECT, then the socket is cut if the client
    /// has not hung up within a second) and returns once they have ended and their forwarded
    /// ports are released. Clients may reconnect right away; new sessions are not touched.
    pub async fn disconnect_all(&self) {
        let targets: Vec<(u64, Option<server::Handle>)> = lock(&self.shared.state)
            .sessions
            .iter()
            .map(|(id, s)| (*id, s.handle.clone()))
            .collect();
        for (_, handle) in &targets {
            if let Some(handle) = handle {
                let bye = handle.disconnect(
                    russh::Disconnect::ByApplication,
                    "disconnected by the test".into(),
                    String::new(),
                );
                let _ = tokio::time::timeout(DISCONNECT_GRACE, bye).await;
            }
        }
        let ids: Vec<u64> = targets.iter().map(|(id, _)| *id).collect();
        let gone = |shared: &Shared| {
            let state = lock(&shared.state);
            ids.iter().all(|id| !state.sessions.contains_key(id))
        };
        if wait_until(DISCONNECT_GRACE, || gone(&self.shared)).await {
            return;
        }
        {
            let state = lock(&self.shared.state);
            for id in &ids {
                if let Some(s) = state.sessions.get(id) {
                    let _ = s.socket.shutdown(std::net::Shutdown::Both);
                }
            }
        }
        if !wait_until(SESSION_END_TIMEOUT, || gone(&self.shared)).await {
            tracing::warn!("vendor server: sessions still running after disconnect_all");
        }
    }

    /// Stops accepting and closes every session and listener (same as dropping it).
    /// What came back on the channels opened together with a grant (`open_on_grant`).
    pub fn early_echo(&self) -> Vec<u8> {
        lock(&self.shared.early_echo).clone()
    }

    pub fn shutdown(self) {
        drop(self);
    }
}

impl Drop for VendorServer {
    /// Synchronous and best effort: stop accepting, cut every session's socket, abort listener
    /// and connection tasks. Ports are released as soon as the runtime drops the aborted tasks.
    fn drop(&mut self) {
        self.accept_task.abort();
        let mut state = lock(&self.shared.state);
        for session in state.sessions.values() {
            let _ = session.socket.shutdown(std::net::Shutdown::Both);
            lock(&session.connections).abort_all();
        }
        for grant in state.grants.drain(..) {
            grant.listener_task.abort();
        }
    }
}

/// Binds the SSH port on 127.0.0.1. A fixed port may still be held for a moment by a previous
/// instance that was just dropped (its aborted accept task has not been reaped yet), so
/// "address in use" is retried for a bounded time.
async fn bind_listener(port: u16) -> Result<TcpListener, String> {
    let deadline = Instant::now() + LISTENER_CLOSE_TIMEOUT;
    loop {
        match TcpListener::bind(("127.0.0.1", port)).await {
            Ok(listener) => return Ok(listener),
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => return Err(format!("bind 127.0.0.1:{port}: {e}")),
        }
    }
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    // Owning the session tasks here means aborting this loop aborts them too.
    let mut sessions = JoinSet::new();
    let mut errors = 0;
    while errors < MAX_ACCEPT_ERRORS {
        match listener.accept().await {
            Ok((tcp, peer)) => {
                errors = 0;
                sessions.spawn(run_session(shared.clone(), tcp, peer));
                while sessions.try_join_next().is_some() {}
            }
            Err(e) => {
                errors += 1;
                tracing::warn!("vendor server: accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// One client connection, from identification exchange to cleanup.
async fn run_session(shared: Arc<Shared>, tcp: TcpStream, peer: SocketAddr) {
    let id = shared.next_session.fetch_add(1, Ordering::Relaxed);
    // Keep a duplicate of the socket as a kill switch (see `SessionEntry::socket`).
    let (tcp, socket) = match dup_socket(tcp) {
        Ok(pair) => pair,
        Err(e) => {
            tracing::warn!("vendor server: cannot duplicate socket of {peer}: {e}");
            return;
        }
    };
    let connections = Arc::new(Mutex::new(JoinSet::new()));
    lock(&shared.state).sessions.insert(
        id,
        SessionEntry {
            handle: None,
            socket,
            authenticated: false,
            connections: connections.clone(),
        },
    );
    let handler = VendorHandler {
        id,
        shared: shared.clone(),
        connections,
        early: HashSet::new(),
    };
    let started = tokio::time::timeout(
        HANDSHAKE_TIMEOUT,
        server::run_stream(shared.config.clone(), tcp, handler),
    )
    .await;
    match started {
        Ok(Ok(running)) => {
            if let Some(entry) = lock(&shared.state).sessions.get_mut(&id) {
                entry.handle.get_or_insert_with(|| running.handle());
            }
            tracing::debug!("vendor server: session {id} from {peer} started");
            let result = running.await;
            tracing::debug!("vendor server: session {id} ended: {result:?}");
        }
        Ok(Err(e)) => tracing::debug!("vendor server: handshake with {peer} failed: {e}"),
        Err(_) => tracing::debug!("vendor server: no SSH identification from {peer}"),
    }
    end_session(&shared, id).await;
}

/// Closes the session's listeners (waiting until their ports are free), aborts its forwarded
/// connections, then forgets it. Removing the entry last means "session gone" implies "ports
/// released" for anyone polling.
async fn end_session(shared: &Shared, id: u64) {
    let grants: Vec<Grant> = {
        let mut state = lock(&shared.state);
        let (mine, others) = state.grants.drain(..).partition(|g| g.session == id);
        state.grants = others;
        mine
    };
    for grant in grants {
        close_listener(grant.listener_task).await;
    }
    let entry = lock(&shared.state).sessions.remove(&id);
    if let Some(entry) = entry {
        lock(&entry.connections).abort_all();
        let _ = entry.socket.shutdown(std::net::Shutdown::Both);
    }
}

async fn close_listener(task: JoinHandle<()>) {
    task.abort();
    let _ = tokio::time::timeout(LISTENER_CLOSE_TIMEOUT, task).await;
}

/// Splits a tokio stream into (tokio stream, std duplicate of the same socket).
fn dup_socket(tcp: TcpStream) -> std::io::Result<(TcpStream, std::net::TcpStream)> {
    let std_stream = tcp.into_std()?;
    let dup = std_stream.try_clone()?;
    Ok((TcpStream::from_std(std_stream)?, dup))
}

/// Per-connection russh handler. Its callbacks run inside the session loop, so they never
/// await network I/O; anything slow is spawned.
struct VendorHandler {
    id: u64,
    shared: Arc<Shared>,
    connections: Arc<Mutex<JoinSet<()>>>,
    /// Channels opened together with a grant (`open_on_grant`), served from the callbacks.
    early: HashSet<ChannelId>,
}

impl VendorHandler {
    fn key_allowed(&self, key: &PublicKey, algorithm: &Algorithm) -> Auth {
        if *algorithm == (Algorithm::Rsa { hash: None }) {
            // Like OpenSSH 8.8+: SHA-1 RSA signatures are refused even for a known key.
            return Auth::reject();
        }
        let known = lock(&self.shared.authorized)
            .iter()
            .any(|k| k.key_data() == key.key_data());
        if known { Auth::Accept } else { Auth::reject() }
    }
}

impl server::Handler for VendorHandler {
    type Error = russh::Error;

    async fn channel_open_confirmation(
        &mut self,
        id: ChannelId,
        _max_packet_size: u32,
        _window_size: u32,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        if self.early.contains(&id) {
            session.data(id, Bytes::from_static(EARLY_HELLO))?;
            session.eof(id)?;
        }
        Ok(())
    }

    async fn data(
        &mut self,
        channel: ChannelId,
        data: &[u8],
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        if self.early.contains(&channel) {
            lock(&self.shared.early_echo).extend_from_slice(data);
        }
        Ok(())
    }

    async fn auth_publickey_offered(
        &mut self,
        _user: &str,
        offer: PublicKeyOffer<'_>,
    ) -> Result<Auth, Self::Error> {
        Ok(self.key_allowed(offer.public_key, offer.algorithm))
    }

    async fn auth_publickey(
        &mut self,
        _user: &str,
        key: VerifiedPublicKey<'_>,
    ) -> Result<Auth, Self::Error> {
        Ok(self.key_allowed(key.public_key, key.algorithm))
    }

    async fn auth_succeeded(&mut self, session: &mut Session) -> Result<(), Self::Error> {
        if let Some(entry) = lock(&self.shared.state).sessions.get_mut(&self.id) {
            entry.authenticated = true;
            entry.handle.get_or_insert_with(|| session.handle());
        }
        Ok(())
    }

    async fn tcpip_forward(
        &mut self,
        address: &str,
        port: &mut u32,
        session: &mut Session,
    ) -> Result<bool, Self::Error> {
        let Ok(requested) = u16::try_from(*port) else {
            return Ok(false);
        };
        if lock(&self.shared.denied_ports).contains(&requested) {
            tracing::debug!("vendor server: tcpip-forward {address}:{requested} denied by test");
            return Ok(false);
        }
        // A plain bind is the "already in use" check: it fails if this or any other session,
        // or any other process, holds the port. std's bind is synchronous and quick, so it is
        // fine inside the session loop.
        let listener = match std::net::TcpListener::bind(("127.0.0.1", requested))
            .and_then(|l| l.set_nonblocking(true).map(|()| l))
            .and_then(TcpListener::from_std)
        {
            Ok(l) => l,
            Err(e) => {
                tracing::debug!("vendor server: tcpip-forward {address}:{requested}: {e}");
                return Ok(false);
            }
        };
        let actual = match listener.local_addr() {
            Ok(a) => a.port(),
            Err(_) => return Ok(false),
        };
        // russh sends the port back only when the request was for port 0, as OpenSSH does.
        *port = actual.into();
        let listener_task = tokio::spawn(serve_forward(
            listener,
            session.handle(),
            address.to_string(),
            actual,
            self.connections.clone(),
        ));
        lock(&self.shared.state).grants.push(Grant {
            session: self.id,
            addr: address.to_string(),
            port: actual,
            listener_task,
        });
        tracing::debug!(
            "vendor server: session {} granted {address}:{actual}",
            self.id
        );
        if self.shared.open_on_grant {
            // The reply first, then the channel, both queued before the session loop writes:
            // the client reads them in one go.
            session.request_success();
            match session.channel_open_forwarded_tcpip(address, actual.into(), "127.0.0.1", 40000) {
                Ok(id) => {
                    self.early.insert(id);
                }
                Err(e) => tracing::warn!("vendor server: early forwarded-tcpip: {e}"),
            }
        }
        Ok(true)
    }

    async fn cancel_tcpip_forward(
        &mut self,
        address: &str,
        port: u32,
        _session: &mut Session,
    ) -> Result<bool, Self::Error> {
        let grant = {
            let mut state = lock(&self.shared.state);
            let found = state.grants.iter().position(|g| {
                g.session == self.id && g.addr == address && u32::from(g.port) == port
            });
            found.map(|i| state.grants.remove(i))
        };
        match grant {
            // Awaiting the listener task here is safe: it never waits on this session loop.
            Some(grant) => {
                close_listener(grant.listener_task).await;
                Ok(true)
            }
            None => Ok(false),
        }
    }
}

/// Accepts connections on a granted port; each becomes a `forwarded-tcpip` channel.
async fn serve_forward(
    listener: TcpListener,
    handle: server::Handle,
    addr: String,
    port: u16,
    connections: Arc<Mutex<JoinSet<()>>>,
) {
    let mut errors = 0;
    while errors < MAX_ACCEPT_ERRORS {
        let (tcp, peer) = match listener.accept().await {
            Ok(conn) => conn,
            Err(e) => {
                errors += 1;
                tracing::warn!("vendor server: accept on {port} failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        errors = 0;
        let _ = tcp.set_nodelay(true);
        let handle = handle.clone();
        let addr = addr.clone();
        let mut set = lock(&connections);
        while set.try_join_next().is_some() {}
        set.spawn(async move {
            let open = handle.channel_open_forwarded_tcpip(
                addr,
                port.into(),
                peer.ip().to_string(),
                peer.port().into(),
            );
            match tokio::time::timeout(CHANNEL_OPEN_TIMEOUT, open).await {
                Ok(Ok(channel)) => pump(channel, tcp).await,
                // Rejected or unanswered: dropping `tcp` closes the connection.
                Ok(Err(e)) => tracing::debug!("vendor server: forwarded-tcpip to {port}: {e}"),
                Err(_) => tracing::debug!("vendor server: forwarded-tcpip to {port}: no answer"),
            }
        });
    }
}

/// What the drain task hands to the TCP writer.
enum Inbound {
    Data(Bytes),
    Eof,
}

/// Pipes one SSH channel to one TCP connection, passing half-close both ways, without ever
/// blocking russh's session loop (notes A6.1).
///
/// russh delivers incoming channel data with `chan.send(..).await` into a bounded per-channel
/// queue, inside the one task that runs the whole SSH connection. `into_stream()` plus
/// `copy_bidirectional` leaves that queue full whenever the TCP side is slow, which parks the
/// session loop: every other channel, keepalives and rekeys stop, and an echo target deadlocks.
/// So a separate drain task empties the channel into an unbounded queue at once, and a writer
/// task feeds the TCP socket from it. The queue is not capped: fine for tests; the agent's own
/// pump must bound it.
///
/// Ends when the peer closes the channel, the TCP side breaks, or both directions reached EOF;
/// then the channel is closed. Usable for server (`Msg`) and client channels alike.
pub async fn pump<S>(channel: Channel<S>, tcp: TcpStream)
where
    S: From<(ChannelId, ChannelMsg)> + Send + Sync + 'static,
{
    let (read_half, write_half) = channel.split();
    let (mut tcp_read, tcp_write) = tcp.into_split();
    let (queue_tx, queue_rx) = mpsc::unbounded_channel();
    let _drain = AbortOnDrop(tokio::spawn(drain(read_half, queue_tx)));
    let (eof_tx, mut eof_rx) = oneshot::channel();
    let mut writer = AbortOnDrop(tokio::spawn(write_to_tcp(queue_rx, tcp_write, eof_tx)));

    // TCP -> channel. russh's writer waits for the peer's window, so this direction is
    // flow-controlled without touching the session loop.
    let uplink = async {
        let mut channel_writer = write_half.make_writer();
        let _ = tokio::io::copy(&mut tcp_read, &mut channel_writer).await;
        let _ = write_half.eof().await;
    };
    tokio::pin!(uplink);

    let (mut uplink_done, mut peer_eof) = (false, false);
    loop {
        tokio::select! {
            // The writer ends when the channel is closed (or gone) or the TCP peer broke.
            _ = &mut writer.0 => break,
            _ = &mut eof_rx, if !peer_eof => {
                peer_eof = true;
                if uplink_done { break }
            }
            () = &mut uplink, if !uplink_done => {
                uplink_done = true;
                if peer_eof { break }
            }
        }
    }
    let _ = write_half.close().await;
}

/// Moves everything the channel receives into `queue` immediately, so the session loop's send
/// into this channel never waits. Dropping `queue` tells the writer the channel is closed.
async fn drain(mut channel: ChannelReadHalf, queue: mpsc::UnboundedSender<Inbound>) {
    while let Some(msg) = channel.wait().await {
        let item = match msg {
            ChannelMsg::Data { data } => Inbound::Data(data),
            ChannelMsg::Eof => Inbound::Eof,
            ChannelMsg::Close => break,
            _ => continue,
        };
        if queue.send(item).is_err() {
            break;
        }
    }
}

/// Writes queued channel data to TCP. At the channel's EOF it shuts down the TCP write side and
/// signals `eof`, then keeps waiting so that its end still means "channel closed".
async fn write_to_tcp(
    mut queue: mpsc::UnboundedReceiver<Inbound>,
    mut tcp: OwnedWriteHalf,
    eof: oneshot::Sender<()>,
) {
    let mut eof = Some(eof);
    while let Some(item) = queue.recv().await {
        match item {
            // Data after EOF would be a protocol violation; drop it.
            Inbound::Data(data) if eof.is_some() => {
                if tcp.write_all(&data).await.is_err() {
                    return;
                }
            }
            Inbound::Data(_) => {}
            Inbound::Eof => {
                let _ = tcp.shutdown().await;
                if let Some(eof) = eof.take() {
                    let _ = eof.send(());
                }
            }
        }
    }
}

/// Aborts the task when dropped, so no helper task outlives the pump that started it.
struct AbortOnDrop<T>(JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn parse_keys(lines: &[String]) -> Result<Vec<PublicKey>, String> {
    lines
        .iter()
        .map(|l| l.trim())
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| PublicKey::from_openssh(l).map_err(|e| format!("bad authorized key {l:?}: {e}")))
        .collect()
}

/// `algo AAAA...` without the comment.
fn public_line(key: &PublicKey) -> Result<String, String> {
    let mut key = key.clone();
    key.set_comment("");
    key.to_openssh()
        .map(|l| l.trim().to_string())
        .map_err(|e| format!("encode host key: {e}"))
}

/// Locks a mutex even if a panicking test thread poisoned it: the data is still consistent
/// for our purposes (every critical section is a few field updates).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Polls `done` every 10 ms until it holds (true) or `timeout` passes (false).
async fn wait_until(timeout: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if done() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
