//! Runs the agent library in-process against a test server, and drives traffic through it.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How often a wait on the agent's state reads it again without a change notice (target
/// health and the audit trail's health change outside `TunnelState::changes`).
const RECHECK: Duration = Duration::from_millis(200);

use agent::run::{Agent, Reloader};
use agent::tunnel::state::{Snapshot, TunnelState};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// One forward for [`config_yaml`]: name, remote port on the server, target port on 127.0.0.1.
pub struct Fwd<'a>(pub &'a str, pub u16, pub u16);

/// An agent.yaml for a server on 127.0.0.1 `ports`, pinned to `pin`, logging in as `user`.
/// `extra` is appended verbatim (top-level YAML, e.g. "limits: { rekey_after: 4MiB }").
pub fn config_yaml(
    ports: &[u16],
    pin: &str,
    user: &str,
    key: &Path,
    forwards: &[Fwd],
    extra: &str,
) -> String {
    // Tests go direct unless they say otherwise: a developer's HTTPS_PROXY must not reroute them.
    let proxy = if extra.contains("proxy:") {
        ""
    } else {
        "proxy: none\n"
    };
    let mut y = format!(
        "server:\n  host: 127.0.0.1\n  ports: {ports:?}\n  user: {user}\n  host_keys: [\"{pin}\"]\nidentity: {}\n{proxy}admin: {{ listen: \"off\" }}\nkeepalive: {{ interval: 2s, max_missed: 2 }}\nreconnect: {{ initial: 200ms, max: 2s }}\ntimeouts: {{ connect: 2s, handshake: 3s, target_connect: 2s }}\nforwards:\n",
        key.display()
    );
    for Fwd(name, remote, target) in forwards {
        y.push_str(&format!("  - {{ name: {name}, remote: \"127.0.0.1:{remote}\", target: \"127.0.0.1:{target}\" }}\n"));
    }
    y.push_str(extra);
    y.push('\n');
    y
}

pub struct RunningAgent {
    pub state: Arc<TunnelState>,
    /// Re-reads the agent.yaml it was started from, as SIGHUP does.
    pub reloader: Reloader,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

/// Writes `yaml` to `dir/agent.yaml`, loads it like `agent run` does, and runs the agent.
pub fn start_agent(dir: &Path, yaml: &str) -> RunningAgent {
    start(dir, yaml, None)
}

/// [`start_agent`], with the admin endpoint served on `admin`, a listener the test bound on
/// 127.0.0.1:0 (so no test races another for a port), as `agent run` serves the one it bound.
/// agent.yaml's `admin.listen` is not bound: it may name `admin`'s address for `agent health`
/// to read.
pub fn start_agent_with_admin(dir: &Path, yaml: &str, admin: TcpListener) -> RunningAgent {
    start(dir, yaml, Some(admin))
}

fn start(dir: &Path, yaml: &str, admin: Option<TcpListener>) -> RunningAgent {
    let file = dir.join("agent.yaml");
    std::fs::write(&file, yaml).expect("write agent.yaml");
    let (config, identity) = agent::run::load(&file)
        .unwrap_or_else(|e| panic!("test config invalid:\n{e}\n---\n{yaml}"));
    let admin = match admin {
        Some(listener) => Some(listener.into_std().expect("the admin listener")),
        None => agent::run::bind_admin(&config).expect("bind admin.listen"),
    };
    let agent = Agent::new(config);
    let state = agent.state.clone();
    let reloader = agent.reloader();
    let (tx, rx) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        agent
            .run(identity, admin, async move {
                let _ = rx.await;
            })
            .await
            .expect("agent failed to start");
    });
    RunningAgent {
        state,
        reloader,
        stop: Some(tx),
        task,
    }
}

impl RunningAgent {
    pub fn snapshot(&self) -> Snapshot {
        self.state.snapshot()
    }

    /// Waits until connected with every forward granted.
    pub async fn wait_ready(&self, within: Duration) -> Snapshot {
        self.wait_for(within, "ready", |s| s.ready()).await
    }

    /// Waits until `cond` holds on the state; panics with the last state if it never does.
    pub async fn wait_for(
        &self,
        within: Duration,
        what: &str,
        cond: impl Fn(&Snapshot) -> bool,
    ) -> Snapshot {
        wait_for_state(&self.state, within, what, cond).await
    }

    /// Asks the agent to stop (as SIGTERM would) and waits for it, bounded.
    pub async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        // Open vendor connections get the agent's drain grace period (5 s) before the cut.
        tokio::time::timeout(Duration::from_secs(15), &mut self.task)
            .await
            .expect("agent did not stop within 15 s")
            .expect("agent task panicked");
    }
}

/// Waits until `cond` holds on `state`, following its changes; panics with the last state if
/// it never does within `within`.
pub async fn wait_for_state(
    state: &TunnelState,
    within: Duration,
    what: &str,
    cond: impl Fn(&Snapshot) -> bool,
) -> Snapshot {
    let deadline = Instant::now() + within;
    let mut changes = state.changes();
    loop {
        changes.mark_unchanged();
        let s = state.snapshot();
        if cond(&s) {
            return s;
        }
        if Instant::now() > deadline {
            panic!("agent not {what} within {within:?}: {s:#?}");
        }
        // Woken by the next change of the state; target health and the audit trail's health
        // change outside it, so the snapshot is read again after a while anyway.
        let _ = tokio::time::timeout(RECHECK, changes.changed()).await;
    }
}

impl Drop for RunningAgent {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Deterministic bytes that differ at every offset, so a lost, duplicated or reordered chunk
/// shows up as a mismatch.
pub fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// Sends `len` pattern bytes to 127.0.0.1:`port` (an echo behind the tunnel) while reading the
/// echo back, then half-closes and checks every byte and the clean end. Bounded by `within`.
pub async fn echo_exact(
    port: u16,
    len: usize,
    seed: u64,
    within: Duration,
) -> Result<Duration, String> {
    let started = Instant::now();
    let run = async {
        let stream = TcpStream::connect(("127.0.0.1", port))
            .await
            .map_err(|e| format!("connect: {e}"))?;
        stream.set_nodelay(true).ok();
        let (mut rd, mut wr) = stream.into_split();
        let data = pattern(len, seed);
        let expected = data.clone();
        let writer = tokio::spawn(async move {
            for chunk in data.chunks(256 * 1024) {
                wr.write_all(chunk).await?;
            }
            wr.shutdown().await?;
            Ok::<_, std::io::Error>(wr)
        });
        let mut got = Vec::with_capacity(len);
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            let n = rd
                .read(&mut buf)
                .await
                .map_err(|e| format!("read after {} bytes: {e}", got.len()))?;
            if n == 0 {
                break;
            }
            got.extend_from_slice(&buf[..n]);
            if got.len() > len {
                break;
            }
        }
        let _wr = writer
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| format!("write: {e}"))?;
        if got.len() != len {
            return Err(format!("echoed {} of {len} bytes", got.len()));
        }
        if let Some(i) = got.iter().zip(&expected).position(|(a, b)| a != b) {
            return Err(format!("first wrong byte at offset {i}"));
        }
        Ok(started.elapsed())
    };
    tokio::time::timeout(within, run)
        .await
        .map_err(|_| format!("echo of {len} bytes not done within {within:?}"))?
}

/// A target that reads everything and reports, per connection, (bytes, FNV-1a hash) when the
/// sender half-closes; then closes. Used to check one-way transfers byte-exact.
pub async fn hashing_sink() -> (
    u16,
    tokio::sync::mpsc::UnboundedReceiver<(u64, u64)>,
    JoinHandle<()>,
) {
    paced_hashing_sink(None).await
}

/// [`hashing_sink`] that, with `pause`, reads at most 32 KiB at a time and sleeps `pause`
/// after each read: a target slower than any sender on loopback.
pub async fn paced_hashing_sink(
    pause: Option<Duration>,
) -> (
    u16,
    tokio::sync::mpsc::UnboundedReceiver<(u64, u64)>,
    JoinHandle<()>,
) {
    let listener = super::fresh_tokio_listener();
    let port = listener.local_addr().expect("addr").port();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let task = tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; if pause.is_some() { 32 } else { 256 } * 1024];
                let (mut n, mut h) = (0u64, FNV_OFFSET);
                while let Ok(k) = conn.read(&mut buf).await {
                    if k == 0 {
                        break;
                    }
                    n += k as u64;
                    h = fnv(h, &buf[..k]);
                    if let Some(pause) = pause {
                        tokio::time::sleep(pause).await;
                    }
                }
                let _ = tx.send((n, h));
            });
        }
    });
    (port, rx, task)
}

pub const FNV_OFFSET: u64 = 0xcbf29ce484222325;

pub fn fnv(mut h: u64, data: &[u8]) -> u64 {
    for b in data {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x100000001b3);
    }
    h
}

/// Writes `len` pattern bytes to 127.0.0.1:`port` as fast as possible, then half-closes.
/// Returns the (bytes, hash) the receiving end should report.
pub async fn blast(port: u16, len: usize, seed: u64) -> std::io::Result<(u64, u64)> {
    let data = pattern(len, seed);
    let mut c = TcpStream::connect(("127.0.0.1", port)).await?;
    for chunk in data.chunks(256 * 1024) {
        c.write_all(chunk).await?;
    }
    c.shutdown().await?;
    // Keep the socket until the peer closes, so the tunnel is not torn down early.
    let mut sink = [0u8; 64];
    let _ = tokio::time::timeout(Duration::from_secs(60), c.read(&mut sink)).await;
    Ok((len as u64, fnv(FNV_OFFSET, &data)))
}

/// Sends `len` pattern bytes through forward `port` to a hashing sink and waits up to `within`
/// for the sink's report; panics unless every byte arrived unchanged.
pub async fn send_exact(
    port: u16,
    reports: &mut tokio::sync::mpsc::UnboundedReceiver<(u64, u64)>,
    len: usize,
    seed: u64,
    within: Duration,
) {
    let sent = blast(port, len, seed)
        .await
        .expect("send through the forward");
    let got = tokio::time::timeout(within, async {
        loop {
            match reports.recv().await {
                // The agent's probe of the target's health: a connection that carries nothing.
                Some((0, _)) => continue,
                other => return other,
            }
        }
    })
    .await
    .expect("the target reported in time")
    .expect("sink running");
    assert_eq!(got, sent, "bytes lost or changed on the way to the target");
}

/// Several channels at once: `streams` one-way transfers of `len` bytes to the hashing sink
/// behind forward `up` (its reports in `reports`) and one echo of `echo_len` through `back`.
/// Panics unless every byte arrived unchanged.
pub async fn multichannel_load(
    up: u16,
    back: u16,
    reports: &mut tokio::sync::mpsc::UnboundedReceiver<(u64, u64)>,
    streams: u64,
    len: usize,
    echo_len: usize,
) {
    let mut set = tokio::task::JoinSet::new();
    for i in 0..streams {
        set.spawn(blast(up, len, 300 + i));
    }
    let echo = tokio::spawn(echo_exact(back, echo_len, 399, Duration::from_secs(180)));
    let mut sent = Vec::new();
    while let Some(r) = set.join_next().await {
        sent.push(r.expect("blast task").expect("blast"));
    }
    echo.await.expect("echo task").expect("echo");
    let mut got = Vec::new();
    while got.len() < streams as usize {
        let report = tokio::time::timeout(Duration::from_secs(30), reports.recv()).await;
        let report = report.expect("sink report in time").expect("sink running");
        // The agent's probe of the target's health: a connection that carries nothing.
        if report.0 > 0 {
            got.push(report);
        }
    }
    sent.sort();
    got.sort();
    assert_eq!(sent, got, "bytes lost or changed");
}

/// Floods forward `stuck` (whose target never reads) with 64 MiB from a background task, then
/// times 20 small echoes through forward `live`. Returns the slowest echo and the flood task
/// (abort it when done).
pub async fn worst_echo_while_flooding(stuck: u16, live: u16) -> (Duration, JoinHandle<()>) {
    let flood = tokio::spawn(async move {
        let mut c = TcpStream::connect(("127.0.0.1", stuck))
            .await
            .expect("connect to the stuck forward");
        let chunk = vec![7u8; 1024 * 1024];
        for _ in 0..64 {
            if c.write_all(&chunk).await.is_err() {
                break;
            }
        }
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut worst = Duration::ZERO;
    for i in 0..20 {
        let took = echo_exact(live, 4, i, Duration::from_secs(5))
            .await
            .expect("echo on the live forward");
        worst = worst.max(took);
    }
    (worst, flood)
}
