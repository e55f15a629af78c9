//! The admin endpoint on a listener each test binds on 127.0.0.1:0 (no port is guessed, so no
//! race with another test): /healthz, /readyz as JSON following the tunnel's state, /metrics,
//! requests it refuses, clients it drops, and `agent run` refusing to start when admin.listen
//! is taken.

use crate::support;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use agent::admin::client::{Health, check};
use agent::admin::{FIRST_BYTE_TIMEOUT, MAX_HEAD, READ_TIMEOUT, ReadyReport, STUCK_AFTER};
use agent::config::Forward;
use agent::tunnel::state::{ForwardState, TunnelState};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;

/// Bound for one exchange in the tests that run on real time.
const EXCHANGE: Duration = Duration::from_secs(10);

/// The admin server's task, stopped when the test ends.
struct Server {
    addr: SocketAddr,
    task: JoinHandle<()>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Serves `state` on a fresh 127.0.0.1:0 listener, as `agent run` serves on admin.listen.
async fn start_server(state: Arc<TunnelState>) -> Server {
    let listener = support::fresh_tokio_listener();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(agent::admin::serve(listener, state));
    Server { addr, task }
}

fn jira() -> Forward {
    Forward {
        name: "jira".into(),
        remote_addr: "localhost".into(),
        remote_port: 5000,
        target_host: "jira.acme.internal".into(),
        target_port: 443,
        limits: Default::default(),
        access: None,
        tls: None,
        allow: Vec::new(),
        http: None,
        connect: None,
    }
}

struct Response {
    status: u16,
    head: String,
    body: String,
}

impl Response {
    fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().skip(1).find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }
}

/// Writes `raw` as the request and reads the whole response (the server closes after one).
async fn exchange(addr: SocketAddr, raw: &[u8]) -> Response {
    let run = async {
        let mut conn = TcpStream::connect(addr).await.unwrap();
        conn.write_all(raw).await.unwrap();
        let mut bytes = Vec::new();
        conn.read_to_end(&mut bytes).await.unwrap();
        String::from_utf8(bytes).unwrap()
    };
    let text = tokio::time::timeout(EXCHANGE, run)
        .await
        .expect("no response in time");
    let (head, body) = text
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("not an HTTP response: {text:?}"));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {head:?}"));
    Response {
        status,
        head: head.to_string(),
        body: body.to_string(),
    }
}

async fn get(addr: SocketAddr, path: &str) -> Response {
    exchange(
        addr,
        format!("GET {path} HTTP/1.1\r\nHost: agent\r\n\r\n").as_bytes(),
    )
    .await
}

#[tokio::test]
async fn healthz_answers_while_the_process_loop_beats() {
    let server = start_server(TunnelState::new(&[jira()])).await;
    let r = get(server.addr, "/healthz").await;
    assert_eq!(r.status, 200, "{}", r.head);
    assert_eq!(r.body, "ok\n");
    assert_eq!(r.header("Content-Type"), Some("text/plain"));
    assert_eq!(r.header("Content-Length"), Some("3"));
    assert_eq!(r.header("Connection"), Some("close"));
    assert_eq!(r.header("Cache-Control"), Some("no-store"));

    // HEAD: the same head, no body.
    let r = exchange(server.addr, b"HEAD /healthz HTTP/1.1\r\n\r\n").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("Content-Length"), Some("3"));
    assert_eq!(r.body, "");

    // A query string does not change the route; a bare-LF head (printf | nc) is accepted.
    assert_eq!(get(server.addr, "/healthz?verbose=1").await.status, 200);
    let r = exchange(server.addr, b"GET /healthz HTTP/1.0\n\n").await;
    assert_eq!((r.status, r.body.as_str()), (200, "ok\n"));
}

#[tokio::test]
async fn readyz_is_json_that_follows_the_tunnel_state() {
    let state = TunnelState::new(&[jira()]);
    let server = start_server(state.clone()).await;

    let r = get(server.addr, "/readyz").await;
    assert_eq!(r.status, 503, "{}", r.body);
    assert_eq!(r.header("Content-Type"), Some("application/json"));
    let report: ReadyReport = serde_json::from_str(&r.body).unwrap();
    assert!(!report.ready && !report.connected, "{report:?}");
    assert_eq!(report.reasons, ["not connected to the server yet"]);
    assert_eq!(report.forwards[0].name, "jira");
    assert_eq!(report.forwards[0].state, "pending");

    let session = state.connected("127.0.0.1:22 (127.0.0.1)".into(), Duration::from_millis(5));
    state.set_forward(session, &jira(), ForwardState::Refused("port held".into()));
    let r = get(server.addr, "/readyz").await;
    assert_eq!(r.status, 503, "{}", r.body);
    let report: ReadyReport = serde_json::from_str(&r.body).unwrap();
    assert!(report.connected && !report.ready, "{report:?}");
    assert_eq!(report.reasons, ["forward jira (localhost:5000): port held"]);

    state.set_forward(session, &jira(), ForwardState::Granted);
    let r = get(server.addr, "/readyz").await;
    assert_eq!(r.status, 200, "{}", r.body);
    let report: ReadyReport = serde_json::from_str(&r.body).unwrap();
    assert!(report.ready, "{report:?}");
    assert!(report.forwards[0].up);
    assert_eq!(report.via.as_deref(), Some("127.0.0.1:22 (127.0.0.1)"));

    // `agent health` reads the same document.
    match check(server.addr).await {
        Health::Ready(r) => assert_eq!(r, report),
        other => panic!("expected ready: {other:?}"),
    }
}

#[tokio::test]
async fn metrics_are_prometheus_text_that_follows_the_tunnel_state() {
    let state = TunnelState::new(&[jira()]);
    let server = start_server(state.clone()).await;
    let r = get(server.addr, "/metrics").await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("Content-Type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    assert!(r.body.contains("# TYPE agent_ready gauge"), "{}", r.body);
    let lines: Vec<&str> = r.body.lines().collect();
    assert!(lines.contains(&"agent_ready 0"), "{}", r.body);
    assert!(
        lines.contains(&"agent_forward_granted{forward=\"jira\"} 0"),
        "{}",
        r.body
    );

    let session = state.connected("127.0.0.1:22 (127.0.0.1)".into(), Duration::from_millis(5));
    state.set_forward(session, &jira(), ForwardState::Granted);
    let r = get(server.addr, "/metrics").await;
    let lines: Vec<&str> = r.body.lines().collect();
    assert!(lines.contains(&"agent_ready 1"), "{}", r.body);
    assert!(
        lines.contains(&"agent_forward_granted{forward=\"jira\"} 1"),
        "{}",
        r.body
    );
}

#[tokio::test]
async fn other_paths_and_methods_are_refused_with_a_hint() {
    let server = start_server(TunnelState::new(&[jira()])).await;
    let r = get(server.addr, "/").await;
    assert_eq!(r.status, 404);
    assert!(r.body.contains("/healthz"), "{}", r.body);
    let r = exchange(
        server.addr,
        b"POST /readyz HTTP/1.1\r\nContent-Length: 0\r\n\r\n",
    )
    .await;
    assert_eq!(r.status, 405);
    assert_eq!(r.body, "only GET\n");
}

/// A head that arrives in pieces is put together before it is answered.
#[tokio::test]
async fn a_request_head_split_across_writes_is_answered() {
    let server = start_server(TunnelState::new(&[jira()])).await;
    let run = async {
        let mut conn = TcpStream::connect(server.addr).await.unwrap();
        conn.write_all(b"GET /hea").await.unwrap();
        conn.flush().await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        conn.write_all(b"lthz HTTP/1.1\r\n\r\n").await.unwrap();
        let mut text = String::new();
        conn.read_to_string(&mut text).await.unwrap();
        text
    };
    let text = tokio::time::timeout(EXCHANGE, run).await.unwrap();
    assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text:?}");
    assert!(text.ends_with("\r\n\r\nok\n"), "{text:?}");
}

/// A head past [`MAX_HEAD`] is not answered, and the endpoint keeps serving others.
#[tokio::test]
async fn an_oversized_request_head_is_dropped_unanswered() {
    let server = start_server(TunnelState::new(&[jira()])).await;
    let run = async {
        let mut conn = TcpStream::connect(server.addr).await.unwrap();
        let mut head = b"GET /healthz HTTP/1.1\r\nX-Filler: ".to_vec();
        head.resize(MAX_HEAD + 1024, b'a');
        // The server may close before taking it all: a failed write is part of the refusal.
        let _ = conn.write_all(&head).await;
        let mut answer = Vec::new();
        match conn.read_to_end(&mut answer).await {
            Ok(_) => answer,
            // Closed with our bytes unread: the kernel resets instead of a clean close.
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => answer,
            Err(e) => panic!("unexpected error: {e}"),
        }
    };
    let answer = tokio::time::timeout(EXCHANGE, run)
        .await
        .expect("an oversized head was neither answered nor dropped");
    assert!(answer.is_empty(), "{:?}", String::from_utf8_lossy(&answer));

    // Garbage that ends its head is refused as a request, not served as /healthz.
    let r = exchange(server.addr, b"\x16\x03\x01 garbage\r\n\r\n").await;
    assert_eq!(r.status, 405);

    assert_eq!(get(server.addr, "/healthz").await.status, 200);
}

/// A client that never finishes its head is dropped after [`READ_TIMEOUT`], not earlier, without
/// an answer. On paused time: the wait takes no real time.
#[tokio::test(start_paused = true)]
async fn a_slow_client_is_dropped_after_the_read_timeout() {
    let server = start_server(TunnelState::new(&[jira()])).await;
    // No timer runs until the request is written, so paused time cannot jump past the connect.
    let mut conn = TcpStream::connect(server.addr).await.unwrap();
    conn.write_all(b"GET /healthz HTTP/1.1\r\nHost: ag")
        .await
        .unwrap();
    let started = tokio::time::Instant::now();
    let mut answer = Vec::new();
    tokio::time::timeout(READ_TIMEOUT * 3, conn.read_to_end(&mut answer))
        .await
        .expect("a slow client was never dropped")
        .unwrap();
    let waited = started.elapsed();
    assert!(answer.is_empty(), "{:?}", String::from_utf8_lossy(&answer));
    assert!(
        waited >= READ_TIMEOUT && waited < READ_TIMEOUT * 2,
        "dropped after {waited:?}, not {READ_TIMEOUT:?}"
    );
    // Still serving.
    assert_eq!(get(server.addr, "/healthz").await.status, 200);
}

/// A connection from `from` (127.0.0.x) to `addr`.
async fn connect_from(from: [u8; 4], addr: SocketAddr) -> TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket
        .bind((std::net::Ipv4Addr::from(from), 0).into())
        .unwrap();
    socket.connect(addr).await.unwrap()
}

/// GET `path` from 127.0.0.x: the status, within `within` or a panic.
async fn status_from(from: [u8; 4], addr: SocketAddr, path: &str, within: Duration) -> u16 {
    let ask = async {
        let mut conn = connect_from(from, addr).await;
        let request = format!("GET {path} HTTP/1.1\r\nHost: agent\r\n\r\n");
        conn.write_all(request.as_bytes()).await.unwrap();
        let mut text = String::new();
        conn.read_to_string(&mut text).await.unwrap();
        text.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0)
    };
    tokio::time::timeout(within, ask)
        .await
        .unwrap_or_else(|_| panic!("{path} from {from:?}: no answer within {within:?}"))
}

/// Any local user (any pod, with the Kubernetes example's 0.0.0.0) can hold connections open:
/// 100 idle ones from one address, renewed all the time, never keep a probe out, from that
/// address or another. They hold at most `agent::admin::PER_PEER` places, each for at most
/// [`FIRST_BYTE_TIMEOUT`].
#[tokio::test]
async fn idle_connections_never_keep_a_probe_out() {
    let server = start_server(TunnelState::new(&[jira()])).await;
    let mut idle = Vec::new();
    for round in 0..20 {
        for _ in 0..100 {
            idle.push(connect_from([127, 0, 0, 1], server.addr).await);
        }
        let from = if round % 2 == 0 {
            [127, 0, 0, 1]
        } else {
            [127, 0, 0, 2]
        };
        let status = status_from(from, server.addr, "/healthz", Duration::from_secs(1)).await;
        assert_eq!(status, 200, "round {round}");
    }
    // Every idle one was closed: to make room (all but PER_PEER), or for sending nothing.
    tokio::time::sleep(FIRST_BYTE_TIMEOUT + Duration::from_millis(500)).await;
    for (i, conn) in idle.iter_mut().enumerate() {
        let mut byte = [0u8; 1];
        let read = tokio::time::timeout(EXCHANGE, conn.read(&mut byte)).await;
        assert!(
            matches!(read, Ok(Ok(0)) | Ok(Err(_))),
            "idle connection {i} still open: {read:?}"
        );
    }
}

/// A connection that sends nothing is closed after [`FIRST_BYTE_TIMEOUT`], not before, and one
/// that keeps sending a byte at a time is closed after [`READ_TIMEOUT`]. On paused time.
#[tokio::test(start_paused = true)]
async fn a_silent_client_is_dropped_after_the_first_byte_timeout() {
    let server = start_server(TunnelState::new(&[jira()])).await;
    let mut conn = TcpStream::connect(server.addr).await.unwrap();
    let started = tokio::time::Instant::now();
    let mut answer = Vec::new();
    tokio::time::timeout(READ_TIMEOUT * 3, conn.read_to_end(&mut answer))
        .await
        .expect("a silent client was never dropped")
        .unwrap();
    let waited = started.elapsed();
    assert!(answer.is_empty());
    assert!(
        waited >= FIRST_BYTE_TIMEOUT && waited < READ_TIMEOUT,
        "dropped after {waited:?}, not {FIRST_BYTE_TIMEOUT:?}"
    );
}

/// `agent run` binds admin.listen before anything else; taken, it refuses to start (exit 1)
/// rather than let `agent health` ask whoever holds it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_run_refuses_to_start_when_admin_listen_is_taken() {
    let dir = tempfile::tempdir().unwrap();
    let (key, _public) = support::agent_key(dir.path());
    let taken = support::fresh_tokio_listener();
    let taken_at = taken.local_addr().unwrap();
    let yaml = support::inproc::config_yaml(
        &[support::targets::closed_port()],
        "SHA256:nThbg6kXUpJWGl7E1IGOCspRomTxdCARLviKw6E5SY8",
        "u",
        &key,
        &[support::inproc::Fwd("jira", 5000, 443)],
        "",
    )
    .replace(
        "admin: { listen: \"off\" }",
        &format!("admin: {{ listen: \"{taken_at}\" }}"),
    );
    let file = dir.path().join("agent.yaml");
    std::fs::write(&file, yaml).unwrap();
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_agent"))
        .args(["-c", file.to_str().unwrap(), "run"])
        .env_remove("AGENT_CONFIG")
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(30), out)
        .await
        .expect("agent run kept running with admin.listen taken")
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!("error: admin.listen {taken_at}: cannot listen:")),
        "{stderr}"
    );
    assert!(stderr.contains("another agent on this host?"), "{stderr}");
}

/// `/healthz` says whether the agent's process loop still runs: the agent (its real `run`, with
/// the ticker, serving the admin endpoint on the listener it is handed, as `agent run` hands it
/// the one bound at `admin.listen`) on a single-threaded runtime
/// of its own, as `agent run` has it. A task that blocks that thread (as a blocking call on the
/// runtime would) makes `/healthz` answer 503 once the ticker is [`STUCK_AFTER`] late, which
/// it can only do because the endpoint is served from a thread of its own; when the thread is
/// free again, 200.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthz_is_503_while_the_process_loop_is_stuck() {
    let dir = tempfile::tempdir().unwrap();
    let (key, _public) = support::agent_key(dir.path());
    // No server answers: the loop only dials and waits, which is enough to beat.
    let yaml = support::inproc::config_yaml(
        &[support::targets::closed_port()],
        "SHA256:nThbg6kXUpJWGl7E1IGOCspRomTxdCARLviKw6E5SY8",
        "u",
        &key,
        &[support::inproc::Fwd("jira", 5000, 443)],
        "",
    );
    let file = dir.path().join("agent.yaml");
    std::fs::write(&file, yaml).unwrap();
    let (config, identity) = agent::run::load(&file).unwrap();
    let listener = support::fresh_listener();
    let admin = listener.local_addr().unwrap();
    let agent = agent::run::Agent::new(config);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let loop_handle = runtime.handle().clone();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let (done_tx, done) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        runtime.block_on(async move {
            agent
                .run(identity, Some(listener), async move {
                    let _ = stopped.await;
                })
                .await
                .unwrap();
        });
        let _ = done_tx.send(());
    });
    let deadline = tokio::time::Instant::now() + EXCHANGE;
    while TcpStream::connect(admin).await.is_err() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "admin.listen {admin} never bound"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut r = get(admin, "/healthz").await;
    while r.status != 200 {
        assert!(tokio::time::Instant::now() < deadline, "{}", r.body);
        tokio::time::sleep(Duration::from_millis(50)).await;
        r = get(admin, "/healthz").await;
    }

    let stuck_for = STUCK_AFTER + Duration::from_secs(4);
    let stuck_at = std::time::Instant::now();
    loop_handle.spawn(async move { std::thread::sleep(stuck_for) });
    // Until the ticker is STUCK_AFTER late (at most a beat, 1 s, before the stall): 200.
    let deadline = stuck_at + STUCK_AFTER + Duration::from_secs(3);
    let answer = loop {
        let r = get(admin, "/healthz").await;
        if r.status != 200 {
            break r;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "still 200 after the loop was stuck for {:?}",
            stuck_at.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let noticed = stuck_at.elapsed();
    assert_eq!(answer.status, 503, "{}", answer.body);
    assert!(
        answer.body.starts_with("process loop stuck for "),
        "{}",
        answer.body
    );
    assert!(
        noticed >= STUCK_AFTER - Duration::from_secs(1),
        "503 after {noticed:?}, before the loop was {STUCK_AFTER:?} late"
    );
    // Free again: the ticker beats at once.
    let deadline = stuck_at + stuck_for + Duration::from_secs(5);
    while get(admin, "/healthz").await.status != 200 {
        assert!(
            std::time::Instant::now() < deadline,
            "not 200 again after the stall"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _ = stop.send(());
    tokio::task::spawn_blocking(move || done.recv_timeout(Duration::from_secs(20)))
        .await
        .unwrap()
        .expect("the agent did not stop within 20 s");
}
