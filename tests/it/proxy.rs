//! The agent through real egress proxies, to the real OpenSSH sshd: tinyproxy (HTTP CONNECT,
//! with and without Basic auth, with a port allowlist) and microsocks (SOCKS5, with and without
//! user/password), each started by its test on 127.0.0.1 with its own config and killed by PID;
//! plus a proxy written here that sends its `200` and the server's banner in one write.
//! scripts/test.sh installs tinyproxy and microsocks; without them these tests fail.
//!
//! A test that says the agent went through a proxy checks the proxy's own log
//! ([`ProxyProcess::connects_to`]), not only the agent's `via` label, which a build that dialed
//! direct could still print.
//!
//! The proxy environment is injected through `ProxyEnv::from_pairs`, never set on the process:
//! the tests run in parallel. Every log line the agent writes in this binary is captured, and the
//! passwords used here must appear in none of them.

use crate::support;
use std::io::Write;
use std::net::TcpStream as StdTcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use crate::support::READY;
use crate::support::inproc::{Fwd, RunningAgent, config_yaml, echo_exact, start_agent};
use crate::support::sshd::Sshd;
use crate::support::targets;
use agent::config::Config;
use agent::proxy::{ProxyConfig, ProxyEnv};
use agent::run::Agent;
use agent::tunnel::state::Snapshot;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// tinyproxy accepts only [-a-z0-9._] in a BasicAuth password; written %2E-encoded in the URL.
const TP_PASSWORD: &str = "s3cr.t-Pw_9";
const TP_PASSWORD_IN_URL: &str = "s3cr%2Et-Pw_9";
/// microsocks takes any password: one that needs percent-encoding.
const SOCKS_PASSWORD: &str = "p@ss:w0rd!";
const SOCKS_PASSWORD_IN_URL: &str = "p%40ss%3Aw0rd%21";

// ---- captured logs -------------------------------------------------------------------------

static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();

struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The buffer every proxy test's agent logs into, at trace level.
fn buffer() -> Arc<Mutex<Vec<u8>>> {
    LOGS.get_or_init(|| Arc::new(Mutex::new(Vec::new())))
        .clone()
}

/// Every log line of every agent the tests of this module ran, at trace level.
fn logs() -> String {
    String::from_utf8_lossy(&buffer().lock().unwrap()).into_owned()
}

/// Runs a test on a runtime of its own (two workers, as `#[tokio::test(flavor =
/// "multi_thread")]` would) whose threads, and the test's own, log into [`logs`]. The capture is
/// set per thread, not for the process: the other modules' tests in this binary log nowhere.
fn captured<F: std::future::Future>(test: F) -> F::Output {
    thread_local! {
        static DEFAULT: std::cell::RefCell<Option<tracing::dispatcher::DefaultGuard>> =
            const { std::cell::RefCell::new(None) };
    }
    let w = buffer();
    let dispatch = tracing::Dispatch::new(
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new("agent=trace"))
            .with_ansi(false)
            .with_writer(move || Capture(w.clone()))
            .finish(),
    );
    let on_start = dispatch.clone();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .on_thread_start(move || {
            let guard = tracing::dispatcher::set_default(&on_start);
            DEFAULT.with(|d| *d.borrow_mut() = Some(guard));
        })
        .on_thread_stop(|| DEFAULT.with(|d| drop(d.borrow_mut().take())))
        .build()
        .expect("a tokio runtime");
    tracing::dispatcher::with_default(&dispatch, || runtime.block_on(test))
}

/// Fails if any form of a test password is in `text`.
fn assert_no_password(what: &str, text: &str) {
    let forms = [
        TP_PASSWORD.to_string(),
        TP_PASSWORD_IN_URL.to_string(),
        SOCKS_PASSWORD.to_string(),
        SOCKS_PASSWORD_IN_URL.to_string(),
        // Basic credentials as sent: base64 of "agent:s3cr.t-Pw_9".
        "YWdlbnQ6czNjci50LVB3Xzk".to_string(),
        "wrong-pass".to_string(),
    ];
    for f in forms {
        assert!(
            !text.contains(&f),
            "{what} contains a password ({f}):\n{text}"
        );
    }
}

// ---- proxies started by the tests ----------------------------------------------------------

/// A proxy process on 127.0.0.1, killed (by PID) when dropped.
struct ProxyProcess {
    port: u16,
    child: Child,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl ProxyProcess {
    /// tinyproxy in the foreground with `extra` config lines (BasicAuth, ConnectPort...).
    fn tinyproxy(extra: &str) -> Self {
        Self::start("tinyproxy", |dir, port| {
            let conf = dir.join("tinyproxy.conf");
            std::fs::write(
                &conf,
                format!(
                    "Port {port}\nListen 127.0.0.1\nAllow 127.0.0.1\nTimeout 30\nMaxClients 50\nLogLevel Info\nDisableViaHeader Yes\n{extra}\n"
                ),
            )
            .unwrap();
            let mut c = Command::new("tinyproxy");
            c.arg("-d").arg("-c").arg(conf);
            c
        })
    }

    /// microsocks, with user/password when given.
    fn microsocks(auth: Option<(&str, &str)>) -> Self {
        let auth = auth.map(|(u, p)| (u.to_string(), p.to_string()));
        Self::start("microsocks", move |_, port| {
            let mut c = Command::new("microsocks");
            c.args(["-i", "127.0.0.1", "-p", &port.to_string()]);
            if let Some((u, p)) = &auth {
                c.args(["-u", u, "-P", p]);
            }
            c
        })
    }

    fn start(name: &str, command: impl Fn(&Path, u16) -> Command) -> Self {
        let dir = tempfile::Builder::new()
            .prefix(&format!("test-{name}-"))
            .tempdir()
            .unwrap();
        let log = dir.path().join("proxy.log");
        let mut last = String::new();
        for _ in 0..3 {
            let port = support::free_port();
            let out = std::fs::File::create(&log).unwrap();
            let mut child = command(dir.path(), port)
                .stdin(Stdio::null())
                .stdout(out.try_clone().unwrap())
                .stderr(out)
                .spawn()
                .unwrap_or_else(|e| {
                    panic!("cannot run {name} ({e}): run scripts/test.sh, which installs it")
                });
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if StdTcpStream::connect(("127.0.0.1", port)).is_ok() {
                    return Self {
                        port,
                        child,
                        log,
                        _dir: dir,
                    };
                }
                if let Ok(Some(status)) = child.try_wait() {
                    last = format!("{name} exited with {status}");
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
            last = format!(
                "{last}; log: {}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        panic!("{name} did not start: {last}");
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// How many times the proxy's own log says it was asked to reach 127.0.0.1:`port`:
    /// tinyproxy's "CONNECT 127.0.0.1:PORT HTTP/1.1" request lines, microsocks's
    /// "connected to 127.0.0.1:PORT" (written before either relays a byte). The proxy's
    /// evidence, where the agent's `via` label is only the agent's word: a build that dialed
    /// direct and kept the label would leave these at 0.
    fn connects_to(&self, port: u16) -> usize {
        let log = self.log();
        let tiny = format!("CONNECT 127.0.0.1:{port} HTTP/1.1");
        let socks = format!("connected to 127.0.0.1:{port}");
        log.lines()
            .filter(|l| l.contains(&tiny) || l.ends_with(&socks))
            .count()
    }

    /// Asserts the proxy's log shows at least `at_least` requests to reach 127.0.0.1:`port`.
    fn assert_went_through(&self, port: u16, at_least: usize) {
        let n = self.connects_to(port);
        assert!(
            n >= at_least,
            "the proxy's log shows {n} requests for 127.0.0.1:{port}, not {at_least}: the agent did not go through it:\n{}",
            self.log()
        );
    }
}

impl Drop for ProxyProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An HTTP CONNECT proxy that, once it has connected to the server, waits for the server's
/// first bytes (the SSH banner) and sends them in the SAME write as its `200` response. Counts
/// the bytes it sent that way.
async fn banner_with_the_200_proxy() -> (u16, Arc<Mutex<usize>>, tokio::task::JoinHandle<()>) {
    let listener = support::fresh_tokio_listener();
    let port = listener.local_addr().unwrap().port();
    let sent = Arc::new(Mutex::new(0usize));
    let counter = sent.clone();
    let task = tokio::spawn(async move {
        while let Ok((mut client, _)) = listener.accept().await {
            let counter = counter.clone();
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    if client.read(&mut byte).await.unwrap_or(0) == 0 {
                        return;
                    }
                    head.push(byte[0]);
                }
                let head = String::from_utf8_lossy(&head).into_owned();
                let target = head
                    .split_whitespace()
                    .nth(1)
                    .unwrap_or_default()
                    .to_string();
                let Ok(mut server) = TcpStream::connect(&target).await else {
                    let _ = client.write_all(b"HTTP/1.1 502 Bad Gateway\r\n\r\n").await;
                    return;
                };
                let mut first = vec![0u8; 4096];
                let n = server.read(&mut first).await.unwrap_or(0);
                let mut answer = b"HTTP/1.1 200 Connection established\r\n\r\n".to_vec();
                answer.extend_from_slice(&first[..n]);
                client.set_nodelay(true).unwrap();
                if client.write_all(&answer).await.is_err() {
                    return;
                }
                *counter.lock().unwrap() += n;
                let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
            });
        }
    });
    (port, sent, task)
}

// ---- the agent -----------------------------------------------------------------------------

struct Setup {
    dir: tempfile::TempDir,
    key: PathBuf,
    sshd: Sshd,
}

fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let (key, public) = support::agent_key(dir.path());
    let sshd = Sshd::start(&public);
    Setup { dir, key, sshd }
}

impl Setup {
    /// An agent.yaml for this sshd on `ports` with one echo forward, plus `extra`.
    fn yaml(&self, ports: &[u16], remote: u16, echo: u16, extra: &str) -> String {
        config_yaml(
            ports,
            &self.sshd.host_key_fingerprint,
            &self.sshd.user(),
            &self.key,
            &[Fwd("echo", remote, echo)],
            extra,
        )
    }

    fn agent(&self, ports: &[u16], remote: u16, echo: u16, proxy: &str) -> RunningAgent {
        let extra = format!("proxy: \"{proxy}\"");
        start_agent(self.dir.path(), &self.yaml(ports, remote, echo, &extra))
    }
}

async fn wait_error(agent: &RunningAgent, class: &str) -> String {
    let snap = agent
        .wait_for(READY, class, |s| {
            s.last_error.as_ref().is_some_and(|(c, _)| c == class)
        })
        .await;
    snap.last_error.unwrap().1
}

/// Runs the agent on `config` as loaded, with its proxy replaced by what `env` says (the way
/// the process environment would have said it). Returns the agent and a stopper.
fn start_with_env(
    dir: &Path,
    yaml: &str,
    env: &[(&str, &str)],
) -> (Arc<Agent>, tokio::sync::oneshot::Sender<()>) {
    let file = dir.join("agent-env.yaml");
    std::fs::write(&file, yaml).unwrap();
    let (mut config, identity) = agent::run::load(&file).unwrap();
    config.proxy =
        ProxyConfig::from_field(None, &ProxyEnv::from_pairs(env.iter().copied())).unwrap();
    let agent = Arc::new(Agent::new(config));
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let running = agent.clone();
    tokio::spawn(async move {
        let _ = running
            .run(identity, None, async move {
                let _ = rx.await;
            })
            .await;
    });
    (agent, tx)
}

async fn wait_state(agent: &Agent, what: &str, cond: impl Fn(&Snapshot) -> bool) -> Snapshot {
    support::inproc::wait_for_state(&agent.state, READY, what, cond).await
}

// ---- the tests -----------------------------------------------------------------------------

#[test]
fn forwards_work_through_tinyproxy_with_and_without_basic_auth() {
    captured(async {
        let s = setup();
        let (echo, _echo) = targets::echo().await;

        let open = ProxyProcess::tinyproxy("");
        let remote = support::free_port();
        let agent = s.agent(
            &[s.sshd.port],
            remote,
            echo,
            &format!("http://127.0.0.1:{}", open.port),
        );
        let snap = agent.wait_ready(READY).await;
        let via = snap.connected_via.unwrap();
        assert!(
            via.ends_with(&format!("via http://127.0.0.1:{}", open.port)),
            "{via}"
        );
        echo_exact(remote, 1 << 20, 1, Duration::from_secs(30))
            .await
            .unwrap();
        assert!(
            open.log()
                .contains(&format!("CONNECT 127.0.0.1:{} HTTP/1.1", s.sshd.port)),
            "the agent did not go through tinyproxy:\n{}",
            open.log()
        );
        agent.stop().await;

        let authed = ProxyProcess::tinyproxy(&format!("BasicAuth agent {TP_PASSWORD}"));
        let url = format!(
            "http://agent:{TP_PASSWORD_IN_URL}@127.0.0.1:{}",
            authed.port
        );
        let shown = format!("http://agent:****@127.0.0.1:{}", authed.port);
        let remote = support::free_port();
        let agent = s.agent(&[s.sshd.port], remote, echo, &url);
        let snap = agent.wait_ready(READY).await;
        let via = snap.connected_via.unwrap();
        assert!(via.ends_with(&format!("via {shown}")), "{via}");
        echo_exact(remote, 1 << 20, 2, Duration::from_secs(30))
            .await
            .unwrap();
        authed.assert_went_through(s.sshd.port, 1);
        agent.stop().await;

        // Wrong password, then none at all: each a clear, classed error naming the proxy.
        let wrong = format!("http://agent:wrong-pass@127.0.0.1:{}", authed.port);
        let agent = s.agent(&[s.sshd.port], support::free_port(), echo, &wrong);
        let msg = wait_error(&agent, "proxy_auth_rejected").await;
        assert!(
            msg.contains("rejected the user name or password") && msg.contains(&shown),
            "{msg}"
        );
        assert_no_password("the error", &msg);
        agent.stop().await;

        let bare = format!("http://127.0.0.1:{}", authed.port);
        let agent = s.agent(&[s.sshd.port], support::free_port(), echo, &bare);
        let msg = wait_error(&agent, "proxy_auth_required").await;
        assert!(
            msg.contains(&format!("http://USER:PASSWORD@127.0.0.1:{}", authed.port)),
            "{msg}"
        );
        agent.stop().await;

        let logs = logs();
        assert!(
            logs.contains(&format!(
                "reaching the server through the proxy {shown} (from agent.yaml `proxy`)"
            )),
            "the proxy in use is not logged (masked)"
        );
        assert_no_password("the agent's logs", &logs);
    });
}

/// Vendor clients connecting in a tight loop while the agent reconnects through tinyproxy to
/// OpenSSH: once sshd listens for the forward again, every connection it accepts is served.
/// (The agent used to refuse the first ones: sshd opened their channels before the agent had
/// marked its own request granted.) Connections cut by the kill itself are not counted: the
/// client pauses from just before each kill until the agent has noticed it.
#[test]
fn clients_in_a_tight_loop_are_never_refused_after_the_grant_across_reconnects() {
    captured(async {
        use std::sync::atomic::{AtomicBool, Ordering};
        let s = setup();
        let (echo, _echo) = targets::echo().await;
        let proxy = ProxyProcess::tinyproxy("");
        let remote = support::free_port();
        let agent = s.agent(
            &[s.sshd.port],
            remote,
            echo,
            &format!("http://127.0.0.1:{}", proxy.port),
        );
        agent.wait_ready(READY).await;

        let (paused, done) = (
            Arc::new(AtomicBool::new(false)),
            Arc::new(AtomicBool::new(false)),
        );
        let client = tokio::spawn({
            let (paused, done) = (paused.clone(), done.clone());
            async move {
                let (mut served, mut refused) = (0u32, Vec::new());
                for n in 0u32.. {
                    if done.load(Ordering::SeqCst) {
                        break;
                    }
                    if paused.load(Ordering::SeqCst) {
                        tokio::time::sleep(Duration::from_millis(5)).await;
                        continue;
                    }
                    // Not listening (between sessions) is fine: nothing was granted then.
                    let Ok(mut conn) = TcpStream::connect(("127.0.0.1", remote)).await else {
                        tokio::time::sleep(Duration::from_millis(1)).await;
                        continue;
                    };
                    let ping = format!("ping {n}\n");
                    let mut back = vec![0u8; ping.len()];
                    let answered = async {
                        conn.write_all(ping.as_bytes()).await?;
                        conn.read_exact(&mut back).await
                    };
                    match tokio::time::timeout(Duration::from_secs(5), answered).await {
                        Ok(Ok(_)) if back == ping.as_bytes() => served += 1,
                        other => refused.push(format!(
                            "{ping:?}: {other:?}, got {:?}",
                            String::from_utf8_lossy(&back)
                        )),
                    }
                }
                (served, refused)
            }
        });
        for round in 1..=3u64 {
            paused.store(true, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(200)).await;
            for pid in s.sshd.session_pids() {
                support::sshd::signal(pid, "KILL");
            }
            agent
                .wait_for(READY, "noticing the loss", |snap| {
                    snap.connected_via.is_none()
                })
                .await;
            paused.store(false, Ordering::SeqCst);
            agent
                .wait_for(READY, "ready again", |snap| {
                    snap.ready() && snap.reconnects >= round
                })
                .await;
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        done.store(true, Ordering::SeqCst);
        // Every session, the first and the three after each kill, went through the proxy.
        proxy.assert_went_through(s.sshd.port, 4);
        let (served, refused) = client.await.unwrap();
        assert!(
            refused.is_empty(),
            "{} connections accepted by sshd were not served ({served} were): {refused:?}",
            refused.len()
        );
        assert!(served >= 3, "the loop got through: {served}");
        agent.stop().await;
    });
}

#[test]
fn forwards_work_through_microsocks_socks5_and_socks5h() {
    captured(async {
        let s = setup();
        let (echo, _echo) = targets::echo().await;

        // socks5://: the agent resolves the name and sends the address.
        let open = ProxyProcess::microsocks(None);
        let remote = support::free_port();
        let agent = s.agent(
            &[s.sshd.port],
            remote,
            echo,
            &format!("socks5://localhost:{}", open.port),
        );
        let via = agent.wait_ready(READY).await.connected_via.unwrap();
        assert!(
            via.contains(&format!(
                "(127.0.0.1:{}) via socks5://localhost:{}",
                s.sshd.port, open.port
            )),
            "{via}"
        );
        echo_exact(remote, 1 << 20, 3, Duration::from_secs(30))
            .await
            .unwrap();
        // socks5://: the agent resolved the name, the proxy was sent the address.
        open.assert_went_through(s.sshd.port, 1);
        agent.stop().await;

        // socks5h:// with user and password (percent-encoded in the URL).
        let authed = ProxyProcess::microsocks(Some(("agent", SOCKS_PASSWORD)));
        let url = format!(
            "socks5h://agent:{SOCKS_PASSWORD_IN_URL}@127.0.0.1:{}",
            authed.port
        );
        let shown = format!("socks5h://agent:****@127.0.0.1:{}", authed.port);
        let remote = support::free_port();
        let agent = s.agent(&[s.sshd.port], remote, echo, &url);
        let via = agent.wait_ready(READY).await.connected_via.unwrap();
        assert!(via.ends_with(&format!("via {shown}")), "{via}");
        echo_exact(remote, 1 << 20, 4, Duration::from_secs(30))
            .await
            .unwrap();
        authed.assert_went_through(s.sshd.port, 1);
        agent.stop().await;

        let wrong = format!("socks5h://agent:wrong-pass@127.0.0.1:{}", authed.port);
        let agent = s.agent(&[s.sshd.port], support::free_port(), echo, &wrong);
        let msg = wait_error(&agent, "proxy_auth_rejected").await;
        assert!(msg.contains(&shown), "{msg}");
        agent.stop().await;

        let bare = format!("socks5h://127.0.0.1:{}", authed.port);
        let agent = s.agent(&[s.sshd.port], support::free_port(), echo, &bare);
        wait_error(&agent, "proxy_auth_required").await;
        agent.stop().await;

        // The server down behind the proxy: the proxy answers "connection refused".
        let closed = targets::closed_port();
        let agent = s.agent(
            &[closed],
            support::free_port(),
            echo,
            &format!("socks5h://127.0.0.1:{}", open.port),
        );
        let msg = wait_error(&agent, "proxy_target_unreachable").await;
        assert!(
            msg.contains(&format!("127.0.0.1:{closed}")) && msg.contains("connection refused"),
            "{msg}"
        );
        agent.stop().await;

        assert_no_password("the agent's logs", &logs());
    });
}

#[test]
fn a_proxy_that_allows_one_port_moves_the_agent_to_that_port() {
    captured(async {
        let s = setup();
        let (echo, _echo) = targets::echo().await;
        let disallowed = targets::closed_port();
        let tp = ProxyProcess::tinyproxy(&format!("ConnectPort {}", s.sshd.port));
        let proxy = format!("http://127.0.0.1:{}", tp.port);

        // The ladder [disallowed, allowed]: the 403 on the first moves the agent to the second.
        let remote = support::free_port();
        let agent = s.agent(&[disallowed, s.sshd.port], remote, echo, &proxy);
        let via = agent.wait_ready(READY).await.connected_via.unwrap();
        assert!(
            via.starts_with(&format!("ssh://127.0.0.1:{} via", s.sshd.port)),
            "{via}"
        );
        echo_exact(remote, 64 << 10, 5, Duration::from_secs(30))
            .await
            .unwrap();
        tp.assert_went_through(s.sshd.port, 1);
        assert!(
            tp.log()
                .contains(&format!("Refused CONNECT method on port {disallowed}")),
            "{}",
            tp.log()
        );
        agent.stop().await;
        assert!(logs().contains(&format!(
            "the proxy {proxy} refused to connect to 127.0.0.1:{disallowed}: 403 Access violation"
        )));

        // Only the disallowed port: the error says the proxy refused it, and names the port.
        let agent = s.agent(&[disallowed], support::free_port(), echo, &proxy);
        let msg = wait_error(&agent, "proxy_refused").await;
        assert!(
            msg.contains(&format!("127.0.0.1:{disallowed}")) && msg.contains("443"),
            "{msg}"
        );
        agent.stop().await;

        // An allowed port with nothing listening behind the proxy: the server hop failed.
        let open = ProxyProcess::tinyproxy("");
        let agent = s.agent(
            &[disallowed],
            support::free_port(),
            echo,
            &format!("http://127.0.0.1:{}", open.port),
        );
        let msg = wait_error(&agent, "proxy_target_unreachable").await;
        assert!(
            msg.contains(&format!(
                "could not reach the server 127.0.0.1:{disallowed}"
            )),
            "{msg}"
        );
        agent.stop().await;
    });
}

#[test]
fn the_banner_in_the_same_packet_as_the_200_is_not_lost() {
    captured(async {
        let s = setup();
        let (echo, _echo) = targets::echo().await;
        let (port, sent, _proxy) = banner_with_the_200_proxy().await;
        let remote = support::free_port();
        let agent = s.agent(
            &[s.sshd.port],
            remote,
            echo,
            &format!("http://127.0.0.1:{port}"),
        );
        agent.wait_ready(READY).await;
        echo_exact(remote, 256 << 10, 6, Duration::from_secs(30))
            .await
            .unwrap();
        let sent = *sent.lock().unwrap();
        assert!(
            sent >= "SSH-2.0-".len(),
            "the test proxy sent no banner bytes with its 200 ({sent})"
        );
        agent.stop().await;
    });
}

#[test]
fn environment_proxies_are_used_from_the_first_connection_and_no_proxy_bypasses_them() {
    captured(async {
        let s = setup();
        let (echo, _echo) = targets::echo().await;
        let tp = ProxyProcess::tinyproxy("");
        let dead = format!("http://127.0.0.1:{}", targets::closed_port());

        // https_proxy (lowercase wins over HTTPS_PROXY, which points nowhere).
        let remote = support::free_port();
        let yaml = s.yaml(&[s.sshd.port], remote, echo, "");
        let env = [
            ("https_proxy", format!("127.0.0.1:{}", tp.port)),
            ("HTTPS_PROXY", dead.clone()),
            ("ALL_PROXY", dead.clone()),
        ];
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let (agent, stop) = start_with_env(s.dir.path(), &yaml, &env);
        let snap = wait_state(&agent, "ready", Snapshot::ready).await;
        // The very first connection already went through the proxy.
        assert_eq!(snap.reconnects, 0);
        let via = snap.connected_via.unwrap();
        assert!(
            via.ends_with(&format!("via http://127.0.0.1:{}", tp.port)),
            "{via}"
        );
        assert!(
            tp.log()
                .contains(&format!("CONNECT 127.0.0.1:{}", s.sshd.port))
        );
        echo_exact(remote, 64 << 10, 7, Duration::from_secs(30))
            .await
            .unwrap();
        let _ = stop.send(());

        // NO_PROXY matches the server (by CIDR): direct, although the proxy is dead.
        let remote = support::free_port();
        let yaml = s.yaml(&[s.sshd.port], remote, echo, "");
        let env = [
            ("HTTPS_PROXY", dead.as_str()),
            ("no_proxy", "localhost, 127.0.0.0/8"),
        ];
        let (agent, stop) = start_with_env(s.dir.path(), &yaml, &env);
        let via = wait_state(&agent, "ready", Snapshot::ready)
            .await
            .connected_via
            .unwrap();
        assert!(!via.contains("via"), "{via}");
        echo_exact(remote, 64 << 10, 8, Duration::from_secs(30))
            .await
            .unwrap();
        let _ = stop.send(());
        assert!(
            logs().contains("direct: no proxy (no_proxy entry \"127.0.0.0/8\" matches the server)")
        );

        // A NO_PROXY that does not match: the dead proxy is used, and says so.
        let yaml = s.yaml(&[s.sshd.port], support::free_port(), echo, "");
        let env = [
            ("ALL_PROXY", dead.as_str()),
            ("NO_PROXY", "localhost,.internal"),
        ];
        let (agent, stop) = start_with_env(s.dir.path(), &yaml, &env);
        let snap = wait_state(&agent, "failing", |s| s.last_error.is_some()).await;
        assert_eq!(snap.last_error.unwrap().0, "proxy_unreachable");
        let _ = stop.send(());
    });
}

#[test]
fn a_proxy_that_is_down_or_silent_is_a_clear_bounded_error() {
    captured(async {
        let s = setup();
        let (echo, _echo) = targets::echo().await;
        let dead = targets::closed_port();
        let agent = s.agent(
            &[s.sshd.port, 443],
            support::free_port(),
            echo,
            &format!("http://agent:{TP_PASSWORD_IN_URL}@127.0.0.1:{dead}"),
        );
        let msg = wait_error(&agent, "proxy_unreachable").await;
        assert!(
            msg.starts_with(&format!(
                "cannot reach the proxy http://agent:****@127.0.0.1:{dead}"
            )),
            "{msg}"
        );
        assert_no_password("the error", &msg);
        agent.stop().await;

        // Accepts TCP and never answers: bounded by timeouts.connect (2 s in these configs).
        let (silent, _silent) = targets::silent().await;
        let started = Instant::now();
        let agent = s.agent(
            &[s.sshd.port],
            support::free_port(),
            echo,
            &format!("socks5h://127.0.0.1:{silent}"),
        );
        let msg = wait_error(&agent, "proxy_timeout").await;
        assert!(
            started.elapsed() < Duration::from_secs(8),
            "{:?}",
            started.elapsed()
        );
        assert!(
            msg.contains(&format!("127.0.0.1:{}", s.sshd.port)) && msg.contains("within 2s"),
            "{msg}"
        );
        agent.stop().await;
    });
}

#[test]
fn config_errors_name_the_field_and_never_show_the_password() {
    let base = "server: { host: tunnel.example, user: acme, host_keys: [\"SHA256:nThbg6kXUpJWGl7E1IGOCspRomTxdCARLviKw6E5SY8\"] }\nforwards: [ { name: a, remote: 5000, target: \"jira:443\" } ]\n";
    let parse = |proxy: &str| {
        Config::parse(
            Path::new("agent.yaml"),
            &format!("{base}proxy: \"{proxy}\"\n"),
        )
    };

    let cases = [
        (
            format!("ftp://agent:{TP_PASSWORD}@proxy:21"),
            "unknown proxy scheme",
        ),
        (
            format!("http://agent:{TP_PASSWORD}@proxy:99999"),
            "not a port number",
        ),
        ("proxy.corp:3128".to_string(), "has no scheme"),
        (
            format!("https://agent:{TP_PASSWORD}@proxy:0"),
            "not a port number",
        ),
        ("off".to_string(), "`proxy: none`"),
    ];
    for (proxy, want) in cases {
        let e = parse(&proxy).unwrap_err();
        let text = e.to_string();
        assert_eq!(e.problems.len(), 1, "{text}");
        assert!(text.starts_with("agent.yaml:3: proxy: "), "{text}");
        assert!(
            text.contains(want) && text.contains("fix: "),
            "{proxy}: {text}"
        );
        assert_no_password("the config error", &text);
    }

    let c = parse(&format!(
        "http://agent:{TP_PASSWORD_IN_URL}@proxy.corp:3128"
    ))
    .unwrap();
    let debug = format!("{c:?}");
    assert!(
        debug.contains("http://agent:****@proxy.corp:3128"),
        "{debug}"
    );
    assert_no_password("the config's Debug", &debug);
    let ProxyConfig::Url(url) = &c.proxy else {
        panic!("{:?}", c.proxy)
    };
    assert_eq!(url.password.as_ref().unwrap().expose(), TP_PASSWORD);

    assert_eq!(parse("none").unwrap().proxy, ProxyConfig::Off);
    let c = parse(&format!("socks5://agent:{SOCKS_PASSWORD_IN_URL}@[::1]")).unwrap();
    assert_eq!(
        c.proxy.route("tunnel.example").proxy().unwrap().to_string(),
        "socks5://agent:****@[::1]:1080"
    );
    assert_no_password("the config's Debug", &format!("{c:?}"));

    // A bad proxy variable, when `proxy:` is absent, is named with its fix.
    let e = ProxyConfig::from_field(
        None,
        &ProxyEnv::from_pairs([("ALL_PROXY", "socks4://agent:wrong-pass@p")]),
    )
    .unwrap_err();
    assert_eq!(e.field, "ALL_PROXY (environment variable)");
    assert!(
        e.message.contains("SOCKS4") && e.fix.contains("`none`"),
        "{e:?}"
    );
    assert_no_password("the variable's error", &format!("{e:?}"));
}

/// Runs `agent check --json --timeout 2s ARGS` (the binary), with `env` added to ITS
/// environment only. Returns the exit code, the report and the raw stdout.
async fn check(args: &[&str], env: &[(&str, &str)]) -> (i32, serde_json::Value, String) {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_agent"));
    cmd.arg("check")
        .args(["--timeout", "2s", "--json"])
        .args(args);
    for var in [
        "AGENT_CONFIG",
        "https_proxy",
        "HTTPS_PROXY",
        "all_proxy",
        "ALL_PROXY",
    ] {
        cmd.env_remove(var);
    }
    cmd.envs(env.iter().copied()).kill_on_drop(true);
    let out = tokio::time::timeout(Duration::from_secs(60), cmd.output())
        .await
        .expect("agent check did not finish within 60 s")
        .expect("run agent check");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let json =
        serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("not JSON ({e}):\n{stdout}"));
    (out.status.code().unwrap(), json, stdout)
}

/// The rows of `step`, as (target, status, detail, fix).
fn rows(report: &serde_json::Value, step: &str) -> Vec<(String, String, String, String)> {
    report["rows"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["step"] == step)
        .map(|r| {
            let s = |k: &str| r[k].as_str().unwrap_or_default().to_string();
            (s("target"), s("status"), s("detail"), s("fix"))
        })
        .collect()
}

#[test]
fn agent_check_reports_the_proxy_as_its_own_hop() {
    captured(async {
        let s = setup();
        let (echo, _echo) = targets::echo().await;
        let disallowed = targets::closed_port();
        let tp = ProxyProcess::tinyproxy(&format!(
            "BasicAuth agent {TP_PASSWORD}\nConnectPort {}",
            s.sshd.port
        ));
        let shown = format!("http://agent:****@127.0.0.1:{}", tp.port);
        let write = |proxy: &str| {
            let extra = format!("proxy: \"{proxy}\"");
            let yaml = s.yaml(
                &[disallowed, s.sshd.port],
                support::free_port(),
                echo,
                &extra,
            );
            let file = s.dir.path().join("check.yaml");
            std::fs::write(&file, yaml).unwrap();
            file
        };

        // Right password: the proxy row, then the refused port (a warning: the other one works)
        // and the allowed one through the proxy, then SSH as usual.
        let file = write(&format!(
            "http://agent:{TP_PASSWORD_IN_URL}@127.0.0.1:{}",
            tp.port
        ));
        let (code, report, stdout) = check(&["-c", file.to_str().unwrap()], &[]).await;
        assert_no_password("agent check's output", &stdout);
        assert_eq!(code, 0, "{report:#}");
        let proxy = rows(&report, "proxy");
        assert_eq!(proxy.len(), 1, "{report:#}");
        assert_eq!(
            (proxy[0].0.as_str(), proxy[0].1.as_str()),
            (shown.as_str(), "PASS")
        );
        assert!(
            proxy[0]
                .2
                .contains("HTTP CONNECT proxy (from agent.yaml `proxy`) accepts TCP"),
            "{proxy:?}"
        );
        let dns = rows(&report, "dns");
        assert!(
            dns[0].1 == "SKIP" && dns[0].2.contains("resolves the server name"),
            "{dns:?}"
        );
        let tcp = rows(&report, "tcp");
        assert_eq!(tcp.len(), 2, "{report:#}");
        assert_eq!(tcp[0].1, "WARN", "{tcp:?}");
        assert!(
            tcp[0].2.contains(&format!(
                "{shown} refused to connect to 127.0.0.1:{disallowed}: 403"
            )),
            "{tcp:?}"
        );
        assert!(
            tcp[0].2.contains("[proxy_refused]")
                && tcp[0].3.contains(&format!("port {} works", s.sshd.port)),
            "{tcp:?}"
        );
        assert_eq!(tcp[1].1, "PASS", "{tcp:?}");
        // ... which tinyproxy saw: it was asked for the sshd's port.
        tp.assert_went_through(s.sshd.port, 1);
        assert!(
            tcp[1].2.contains(&format!("through the proxy {shown}")),
            "{tcp:?}"
        );
        for step in ["ssh", "host-key", "auth"] {
            assert!(
                rows(&report, step).iter().any(|r| r.1 == "PASS"),
                "{step}: {report:#}"
            );
        }

        // Wrong password: the first request fails at the proxy, the other port is not tried.
        let file = write(&format!("http://agent:wrong-pass@127.0.0.1:{}", tp.port));
        let (code, report, stdout) = check(&["-c", file.to_str().unwrap()], &[]).await;
        assert_no_password("agent check's output", &stdout);
        assert_eq!(code, 1, "{report:#}");
        let tcp = rows(&report, "tcp");
        assert_eq!(
            (tcp[0].1.as_str(), tcp[1].1.as_str()),
            ("FAIL", "SKIP"),
            "{tcp:?}"
        );
        assert!(
            tcp[0].2.contains("[proxy_auth_rejected]") && tcp[0].3.contains("percent-encode"),
            "{tcp:?}"
        );

        // First contact, with the proxy from the environment (of the check process only).
        let seen = tp.connects_to(s.sshd.port);
        let env_proxy = format!("http://agent:{TP_PASSWORD}@127.0.0.1:{}", tp.port);
        let target = format!("127.0.0.1:{}", s.sshd.port);
        let (code, report, stdout) = check(&[&target], &[("HTTPS_PROXY", &env_proxy)]).await;
        assert_no_password("agent check's output", &stdout);
        assert_eq!(code, 0, "{report:#}");
        let proxy = rows(&report, "proxy");
        assert!(
            proxy[0].2.contains("(from HTTPS_PROXY)") && proxy[0].0 == shown,
            "{proxy:?}"
        );
        assert_eq!(rows(&report, "tcp")[0].1, "PASS", "{report:#}");
        tp.assert_went_through(s.sshd.port, seen + 1);
    });
}
