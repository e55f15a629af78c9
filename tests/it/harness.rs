//! Tests of the test harness itself (tests/support), so that a failing tunnel test points at the
//! agent, not at its test servers. Covers: the real sshd with a plain OpenSSH client, its
//! kill/restart, and the in-process vendor server with a minimal russh client.

use crate::support;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::support::sshd::{self, Sshd};
use crate::support::targets;
use crate::support::vendor_server::{self, ProbeChannel, VendorOptions, VendorServer};
use russh::client;
use russh::keys::{HashAlg, PrivateKey, PrivateKeyWithHashAlg, PublicKey, PublicKeyOrCertificate};
use russh::{Channel, ChannelOpenFailure};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

/// Bound on any single connect / handshake / request in these tests.
const STEP: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------------------------
// Real sshd + OpenSSH client
// ---------------------------------------------------------------------------------------------

/// `ssh -N -R` running in the background; killed (by PID) when dropped.
struct SshClient {
    child: Child,
    log: PathBuf,
}

impl Drop for SshClient {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts the OpenSSH client with a remote forward 127.0.0.1:remote_port -> 127.0.0.1:target,
/// pinned to the server's host key, and waits until the forwarded port accepts connections.
fn ssh_remote_forward(sshd: &Sshd, key: &Path, remote_port: u16, target: u16) -> SshClient {
    let dir = sshd.dir.path();
    let known_hosts = dir.join(format!("known_hosts_{remote_port}"));
    std::fs::write(
        &known_hosts,
        format!("[127.0.0.1]:{} {}\n", sshd.port, sshd.host_key_line),
    )
    .expect("write known_hosts");
    let log = dir.join(format!("ssh_{remote_port}.log"));
    let child = Command::new("ssh")
        .args(["-F", "/dev/null", "-N", "-v"])
        .args(["-o", "BatchMode=yes", "-o", "ExitOnForwardFailure=yes"])
        .args([
            "-o",
            "StrictHostKeyChecking=yes",
            "-o",
            "GlobalKnownHostsFile=/dev/null",
        ])
        .arg("-o")
        .arg(format!("UserKnownHostsFile={}", known_hosts.display()))
        .args(["-o", "IdentitiesOnly=yes", "-o", "IdentityAgent=none"])
        .args(["-o", "ConnectTimeout=5"])
        .arg("-i")
        .arg(key)
        .args(["-p", &sshd.port.to_string()])
        .args(["-R", &format!("127.0.0.1:{remote_port}:127.0.0.1:{target}")])
        .arg(format!("{}@127.0.0.1", sshd.user()))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("create ssh log"))
        .spawn()
        .expect("spawn ssh (openssh-client)");
    let mut client = SshClient { child, log };
    let deadline = Instant::now() + STEP;
    while !port_open(remote_port) {
        if let Ok(Some(status)) = client.child.try_wait() {
            panic!(
                "ssh exited ({status}).\nssh log:\n{}\nsshd log:\n{}",
                std::fs::read_to_string(&client.log).unwrap_or_default(),
                sshd.log()
            );
        }
        assert!(
            Instant::now() < deadline,
            "remote forward {remote_port} not open after {STEP:?}; sshd log:\n{}",
            sshd.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    client
}

fn port_open(port: u16) -> bool {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
}

/// Polls `cond` every 20 ms for at most `limit`.
async fn eventually(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if cond() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    cond()
}

/// Sends `data` through 127.0.0.1:port, half-closes, and returns everything read back.
async fn round_trip(port: u16, data: Vec<u8>, limit: Duration) -> Vec<u8> {
    let conn = timeout(STEP, TcpStream::connect(("127.0.0.1", port)))
        .await
        .expect("connect timed out")
        .expect("connect");
    let (mut rd, mut wr) = conn.into_split();
    // Write and read concurrently: the echo sends back while we are still sending.
    let writer = tokio::spawn(async move {
        wr.write_all(&data).await.expect("write");
        wr.shutdown().await.expect("shutdown write");
    });
    let mut got = Vec::new();
    timeout(limit, rd.read_to_end(&mut got))
        .await
        .unwrap_or_else(|_| panic!("no EOF within {limit:?} (got {} bytes)", got.len()))
        .expect("read");
    writer.await.expect("writer task");
    got
}

/// Deterministic, non-repeating-looking bytes (xorshift), so misordered chunks are detected.
fn pattern(len: usize) -> Vec<u8> {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn sshd_grants_openssh_remote_forward_and_traffic_flows() {
    let keys = tempfile::tempdir().unwrap();
    let (key, public_line) = support::agent_key(keys.path());
    let sshd = Sshd::start(&public_line);
    assert!(sshd.host_key_line.starts_with("ssh-ed25519 AAAA"));
    assert!(sshd.host_key_fingerprint.starts_with("SHA256:"));
    // The readiness probe of `Sshd::start` was a connection too: its handler may still be
    // exiting.
    assert!(
        eventually(STEP, || sshd.session_pids().is_empty()).await,
        "no connections yet: {:?}",
        sshd.session_pids()
    );

    let (echo, _echo) = targets::echo().await;
    let remote = support::free_port();
    let _ssh = ssh_remote_forward(&sshd, &key, remote, echo);
    assert!(
        !sshd.session_pids().is_empty(),
        "a connection is being served"
    );

    let got = round_trip(remote, b"hello through sshd".to_vec(), STEP).await;
    assert_eq!(got, b"hello through sshd");
    let log = sshd.log();
    assert!(log.contains("Accepted publickey"), "sshd log:\n{log}");
}

#[tokio::test(flavor = "multi_thread")]
async fn sshd_kill_frees_ports_and_restart_reopens_with_same_host_key() {
    let keys = tempfile::tempdir().unwrap();
    let (key, public_line) = support::agent_key(keys.path());
    let mut sshd = Sshd::start(&public_line);
    let (echo, _echo) = targets::echo().await;

    let remote = support::free_port();
    let _first = ssh_remote_forward(&sshd, &key, remote, echo);
    let serving = sshd.session_pids();
    assert!(!serving.is_empty());

    sshd.kill();
    assert!(!port_open(sshd.port), "sshd port closed after kill");
    assert!(!port_open(remote), "forwarded port closed after kill");
    assert!(sshd.session_pids().is_empty());
    for pid in serving {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        assert!(
            stat.is_empty() || stat.contains(") Z"),
            "pid {pid} still alive: {stat}"
        );
    }

    let port = sshd.port;
    sshd.restart();
    assert_eq!(sshd.port, port);
    assert!(port_open(sshd.port));
    // The same pinned host key (known_hosts written from host_key_line) is accepted again.
    let remote2 = support::free_port();
    let _second = ssh_remote_forward(&sshd, &key, remote2, echo);
    assert_eq!(round_trip(remote2, b"again".to_vec(), STEP).await, b"again");
}

#[test]
fn sshd_signal_freezes_and_thaws_session_processes() {
    // `signal` + `descendants` are what frozen-server tests rely on; check them on a child of
    // our own instead of sshd, which keeps this test fast.
    let mut child = Command::new("sleep")
        .arg("30")
        .spawn()
        .expect("spawn sleep");
    let pid = child.id() as i32;
    let state = || {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        stat.rsplit(')')
            .next()
            .and_then(|s| s.split_whitespace().next())
            .unwrap_or("")
            .to_string()
    };
    assert!(sshd::descendants(std::process::id() as i32).contains(&pid));
    sshd::signal(pid, "STOP");
    let deadline = Instant::now() + STEP;
    while state() != "T" {
        assert!(
            Instant::now() < deadline,
            "process not stopped: {}",
            state()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    sshd::signal(pid, "CONT");
    sshd::signal(pid, "KILL");
    let _ = child.wait();
}

// ---------------------------------------------------------------------------------------------
// In-process vendor server + minimal russh client
// ---------------------------------------------------------------------------------------------

/// The smallest correct forwarding client: pinned host key, forwarded-tcpip routed by
/// connected port to a local target through the HOL-safe pump, every other channel refused
/// (russh's client defaults ACCEPT session, direct-tcpip, x11 and agent channels).
struct ForwardClient {
    host_key: PublicKey,
    /// connected (remote) port -> local target port
    routes: Arc<Mutex<HashMap<u32, u16>>>,
}

impl client::Handler for ForwardClient {
    type Error = russh::Error;

    async fn check_server_key(
        &mut self,
        key: &PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        Ok(match key {
            PublicKeyOrCertificate::PublicKey { key, .. } => {
                key.key_data() == self.host_key.key_data()
            }
            PublicKeyOrCertificate::Certificate(_) => false,
        })
    }

    async fn server_channel_open_forwarded_tcpip(
        &mut self,
        channel: Channel<client::Msg>,
        _connected_address: &str,
        connected_port: u32,
        _originator_address: &str,
        _originator_port: u32,
        reply: client::ChannelOpenHandle,
        _session: &mut client::Session,
    ) -> Result<(), Self::Error> {
        let target = self.routes.lock().unwrap().get(&connected_port).copied();
        // Dial in a task: callbacks run inside the session loop.
        tokio::spawn(async move {
            let Some(target) = target else {
                reply
                    .reject(ChannelOpenFailure::AdministrativelyProhibited)
                    .await;
                return;
            };
            match timeout(STEP, TcpStream::connect(("127.0.0.1", target))).await {
                Ok(Ok(tcp)) => {
                    reply.accept().await;
                    vendor_server::pump(channel, tcp).await;
                }
                _ => reply.reject(ChannelOpenFailure::ConnectFailed).await,
            }
        });
        Ok(())
    }

    async fn server_channel_open_session(
        &mut self,
        _channel: Channel<client::Msg>,
        reply: client::ChannelOpenHandle,
        _session: &mut client::Session,
    ) -> Result<(), Self::Error> {
        reply
            .reject(ChannelOpenFailure::AdministrativelyProhibited)
            .await;
        Ok(())
    }

    async fn server_channel_open_direct_tcpip(
        &mut self,
        _channel: Channel<client::Msg>,
        _host_to_connect: &str,
        _port_to_connect: u32,
        _originator_address: &str,
        _originator_port: u32,
        reply: client::ChannelOpenHandle,
        _session: &mut client::Session,
    ) -> Result<(), Self::Error> {
        reply
            .reject(ChannelOpenFailure::AdministrativelyProhibited)
            .await;
        Ok(())
    }

    async fn server_channel_open_x11(
        &mut self,
        _channel: Channel<client::Msg>,
        _originator_address: &str,
        _originator_port: u32,
        reply: client::ChannelOpenHandle,
        _session: &mut client::Session,
    ) -> Result<(), Self::Error> {
        reply
            .reject(ChannelOpenFailure::AdministrativelyProhibited)
            .await;
        Ok(())
    }

    async fn server_channel_open_agent_forward(
        &mut self,
        _channel: Channel<client::Msg>,
        reply: client::ChannelOpenHandle,
        _session: &mut client::Session,
    ) -> Result<(), Self::Error> {
        reply
            .reject(ChannelOpenFailure::AdministrativelyProhibited)
            .await;
        Ok(())
    }
}

struct Connected {
    handle: client::Handle<ForwardClient>,
    routes: Arc<Mutex<HashMap<u32, u16>>>,
}

impl Connected {
    /// Requests a remote forward on 127.0.0.1:port and routes it to `target`.
    async fn forward(&self, port: u16, target: u16) -> Result<u16, russh::Error> {
        let granted = timeout(STEP, self.handle.tcpip_forward("127.0.0.1", port.into()))
            .await
            .expect("tcpip_forward timed out")?;
        // Fixed ports come back as 0 (no payload in the reply): keep the one we asked for.
        let actual = if port == 0 { granted as u16 } else { port };
        self.routes.lock().unwrap().insert(actual.into(), target);
        Ok(actual)
    }
}

/// Connects and authenticates; `hash` None = let the server's server-sig-algs decide (SHA-2).
async fn connect(
    server: &VendorServer,
    key: PrivateKey,
    hash: Option<Option<HashAlg>>,
) -> Result<Connected, String> {
    let routes = Arc::new(Mutex::new(HashMap::new()));
    let handler = ForwardClient {
        host_key: PublicKey::from_openssh(&server.host_key_line).unwrap(),
        routes: routes.clone(),
    };
    let tcp = timeout(STEP, TcpStream::connect(("127.0.0.1", server.port)))
        .await
        .map_err(|_| "connect timed out")?
        .map_err(|e| e.to_string())?;
    tcp.set_nodelay(true).map_err(|e| e.to_string())?;
    let config = Arc::new(client::Config::default());
    let mut handle = timeout(STEP, client::connect_stream(config, tcp, handler))
        .await
        .map_err(|_| "handshake timed out")?
        .map_err(|e| e.to_string())?;
    let hash = match hash {
        Some(h) => h,
        None => timeout(STEP, handle.best_supported_rsa_hash())
            .await
            .map_err(|_| "server-sig-algs timed out")?
            .map_err(|e| e.to_string())?
            .unwrap_or(Some(HashAlg::Sha256)),
    };
    let auth = timeout(
        STEP,
        handle.authenticate_publickey("agent", PrivateKeyWithHashAlg::new(Arc::new(key), hash)),
    )
    .await
    .map_err(|_| "auth timed out")?
    .map_err(|e| e.to_string())?;
    if !auth.success() {
        return Err(format!("auth failed: {auth:?}"));
    }
    Ok(Connected { handle, routes })
}

/// A vendor server authorizing a fresh agent key; returns the key too.
async fn vendor_with_key(mut opts: VendorOptions) -> (VendorServer, PrivateKey, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let (path, line) = support::agent_key(dir.path());
    opts.authorized_keys.push(line);
    let server = VendorServer::start(opts).await;
    let key = russh::keys::load_secret_key(&path, None).expect("load agent key");
    (server, key, dir)
}

#[tokio::test(flavor = "multi_thread")]
async fn vendor_grants_forward_and_echoes_16_mib_byte_exact() {
    let (server, key, _dir) = vendor_with_key(VendorOptions::default()).await;
    assert!(server.host_key_line.starts_with("ssh-ed25519 AAAA"));
    assert!(server.host_key_fingerprint.starts_with("SHA256:"));
    let client = connect(&server, key, None).await.expect("connect");
    assert!(eventually(STEP, || server.session_count() == 1).await);

    let (echo, _echo) = targets::echo().await;
    let port = client.forward(0, echo).await.expect("forward port 0");
    assert_ne!(port, 0, "port 0 gets the chosen port back");
    assert_eq!(server.granted(), vec![("127.0.0.1".to_string(), port)]);

    let data = pattern(16 << 20);
    let got = round_trip(port, data.clone(), Duration::from_secs(20)).await;
    assert_eq!(got.len(), data.len());
    assert!(got == data, "echoed bytes differ");
}

#[tokio::test(flavor = "multi_thread")]
async fn vendor_forced_rekeys_keep_traffic_byte_exact() {
    let opts = VendorOptions {
        rekey_bytes: Some(256 * 1024),
        ..Default::default()
    };
    let (server, key, _dir) = vendor_with_key(opts).await;
    let client = connect(&server, key, None).await.expect("connect");
    let (echo, _echo) = targets::echo().await;
    let port = client.forward(0, echo).await.expect("forward");
    // ~4 MiB each way at a 256 KiB limit: dozens of rekeys mid-stream.
    let data = pattern(4 << 20);
    let got = round_trip(port, data.clone(), Duration::from_secs(20)).await;
    assert!(
        got == data,
        "echoed bytes differ ({} vs {})",
        got.len(),
        data.len()
    );
    assert!(!client.handle.is_closed());
}

#[tokio::test(flavor = "multi_thread")]
async fn vendor_refuses_denied_and_busy_ports_and_cancel_releases() {
    let (server, key, _dir) = vendor_with_key(VendorOptions::default()).await;
    let client = connect(&server, key, None).await.expect("connect");
    let (echo, _echo) = targets::echo().await;

    // Named before the request (to deny it first); the server binds it, so not 127.0.0.1:0.
    let port = support::free_port();
    server.deny_port(port);
    assert!(
        matches!(
            client.forward(port, echo).await,
            Err(russh::Error::RequestDenied)
        ),
        "denied port refused"
    );
    assert!(server.granted().is_empty());
    server.allow_port(port);
    assert_eq!(
        client.forward(port, echo).await.expect("allowed again"),
        port
    );
    assert_eq!(server.granted(), vec![("127.0.0.1".to_string(), port)]);
    assert!(
        matches!(
            client.forward(port, echo).await,
            Err(russh::Error::RequestDenied)
        ),
        "second forward of a bound port refused"
    );

    // A port some other process holds is refused too.
    let other = support::fresh_listener();
    let other_port = other.local_addr().unwrap().port();
    assert!(matches!(
        client.forward(other_port, echo).await,
        Err(russh::Error::RequestDenied)
    ));
    drop(other);

    timeout(
        STEP,
        client.handle.cancel_tcpip_forward("127.0.0.1", port.into()),
    )
    .await
    .expect("cancel timed out")
    .expect("cancel");
    assert!(server.granted().is_empty());
    assert!(
        !port_open(port),
        "listener closed by the time cancel is answered"
    );

    // A client that just goes away (agent killed) releases its forwards too.
    let again = client
        .forward(port, echo)
        .await
        .expect("forward after cancel");
    drop(client);
    assert!(
        eventually(STEP, || server.granted().is_empty()
            && server.session_count() == 0)
        .await,
        "session and grants dropped"
    );
    assert!(!port_open(again), "port released when the session ended");
}

#[tokio::test(flavor = "multi_thread")]
async fn vendor_auth_accepts_only_authorized_sha2_keys() {
    let (server, key, _dir) = vendor_with_key(VendorOptions::default()).await;
    // SHA-1 `ssh-rsa` signatures are refused, as by OpenSSH 8.8+.
    let sha1 = connect(&server, key.clone(), Some(None)).await;
    assert!(sha1.is_err(), "ssh-rsa (SHA-1) must be refused");
    assert!(
        connect(&server, key.clone(), Some(Some(HashAlg::Sha256)))
            .await
            .is_ok()
    );
    assert!(
        connect(&server, key, Some(Some(HashAlg::Sha512)))
            .await
            .is_ok()
    );

    let stranger = PrivateKey::random(
        &mut russh::keys::key::safe_rng(),
        russh::keys::Algorithm::Ed25519,
    )
    .unwrap();
    assert!(
        connect(&server, stranger, None).await.is_err(),
        "unknown key refused"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn vendor_stalled_connection_does_not_stall_another() {
    let (server, key, _dir) = vendor_with_key(VendorOptions::default()).await;
    let client = connect(&server, key, None).await.expect("connect");
    let (sink, _sink) = targets::sink_never_reads().await;
    let (echo, _echo) = targets::echo().await;
    let to_sink = client.forward(0, sink).await.unwrap();
    let to_echo = client.forward(0, echo).await.unwrap();

    // Push far more than all windows and socket buffers into the target that never reads.
    let mut stalled = TcpStream::connect(("127.0.0.1", to_sink)).await.unwrap();
    let blob = pattern(32 << 20);
    let _ = timeout(Duration::from_secs(3), stalled.write_all(&blob)).await;

    let started = Instant::now();
    let got = round_trip(to_echo, b"ping".to_vec(), Duration::from_secs(5)).await;
    assert_eq!(got, b"ping");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "took {:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn vendor_probe_channels_are_rejected_by_the_client_and_disconnect_all_releases() {
    let (server, key, _dir) = vendor_with_key(VendorOptions::default()).await;
    assert!(
        server.open_channel(ProbeChannel::Session).await.is_err(),
        "no session yet"
    );
    let client = connect(&server, key, None).await.expect("connect");
    let (echo, _echo) = targets::echo().await;
    let port = client.forward(0, echo).await.unwrap();

    for probe in [
        ProbeChannel::Session,
        ProbeChannel::X11,
        ProbeChannel::DirectTcpip {
            host: "127.0.0.1".into(),
            port: echo,
        },
        ProbeChannel::ForwardedTcpip {
            addr: "127.0.0.1".into(),
            port: port.wrapping_add(1),
        },
    ] {
        let result = server.open_channel(probe.clone()).await;
        let reason = result.expect_err(&format!("{probe:?} must be rejected"));
        assert!(reason.starts_with("rejected"), "{probe:?}: {reason}");
    }
    // The requested forward is still accepted.
    assert!(
        server
            .open_channel(ProbeChannel::ForwardedTcpip {
                addr: "127.0.0.1".into(),
                port
            })
            .await
            .is_ok()
    );

    server.disconnect_all().await;
    assert_eq!(server.session_count(), 0);
    assert_eq!(server.connection_count(), 0);
    assert!(server.granted().is_empty());
    assert!(!port_open(port), "forwarded port released");
    assert!(
        eventually(STEP, || client.handle.is_closed()).await,
        "client saw the disconnect"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn vendor_restarts_on_same_port_with_same_host_key() {
    let (first, key, _dir) = vendor_with_key(VendorOptions::default()).await;
    let (port, host_key_line) = (first.port, first.host_key_line.clone());
    let opts = VendorOptions {
        port: Some(port),
        host_key: Some(first.host_key()),
        authorized_keys: vec![key.public_key().to_openssh().unwrap()],
        ..Default::default()
    };
    let client = connect(&first, key.clone(), None).await.expect("connect");
    first.shutdown();
    assert!(
        eventually(STEP, || client.handle.is_closed()).await,
        "shutdown cuts sessions"
    );

    let second = VendorServer::start(opts).await;
    assert_eq!(
        (second.port, second.host_key_line.as_str()),
        (port, host_key_line.as_str())
    );
    // `connect` pins second.host_key_line, which equals the first one. The client is kept:
    // dropping it ends the session, racing the count below.
    let _reconnected = connect(&second, key, None)
        .await
        .expect("reconnect to the restarted server");
    assert!(eventually(STEP, || second.session_count() == 1).await);
}
