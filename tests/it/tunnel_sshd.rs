//! `agent run` against the real OpenSSH sshd, started by each test on 127.0.0.1 with its own
//! config, host key and authorized_keys. A missing sshd fails these tests (scripts/test.sh
//! installs it).

use crate::support;
use std::time::{Duration, Instant};

use crate::support::READY;
use crate::support::inproc::{Fwd, config_yaml, echo_exact, hashing_sink, start_agent};
use crate::support::sshd::{Sshd, signal};
use crate::support::targets;
use agent::tunnel::state::ForwardState;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const MIB: usize = 1024 * 1024;

struct Setup {
    dir: tempfile::TempDir,
    key: std::path::PathBuf,
    sshd: Sshd,
}

fn setup(extra_sshd_config: &str) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let (key, public) = support::agent_key(dir.path());
    let sshd = Sshd::start_with(&public, extra_sshd_config);
    Setup { dir, key, sshd }
}

impl Setup {
    fn yaml(&self, pin: &str, forwards: &[Fwd], extra: &str) -> String {
        config_yaml(
            &[self.sshd.port],
            pin,
            &self.sshd.user(),
            &self.key,
            forwards,
            extra,
        )
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwards_work_against_openssh_byte_exact_and_in_parallel() {
    let s = setup("");
    let (echo_port, _echo) = targets::echo().await;
    let (http_port, _http) = targets::http_hello("hello from gitlab").await;
    let (r1, r2) = (support::free_port(), support::free_port());
    // Pin by key line here (the other tests pin by fingerprint).
    let agent = start_agent(
        s.dir.path(),
        &s.yaml(
            &s.sshd.host_key_line,
            &[Fwd("echo", r1, echo_port), Fwd("gitlab", r2, http_port)],
            "",
        ),
    );
    agent.wait_ready(READY).await;

    let mut c = TcpStream::connect(("127.0.0.1", r2)).await.unwrap();
    c.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut resp = String::new();
    tokio::time::timeout(Duration::from_secs(10), c.read_to_string(&mut resp))
        .await
        .unwrap()
        .unwrap();
    assert!(resp.ends_with("hello from gitlab"), "{resp}");

    echo_exact(r1, 64 * MIB, 11, Duration::from_secs(120))
        .await
        .unwrap();

    let mut set = tokio::task::JoinSet::new();
    for i in 0..100u64 {
        set.spawn(echo_exact(r1, 32 * 1024, 500 + i, Duration::from_secs(60)));
    }
    while let Some(r) = set.join_next().await {
        r.unwrap().unwrap();
    }
    assert_eq!(agent.snapshot().reconnects, 0);
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_host_key_and_unauthorized_key_are_clear_errors() {
    let s = setup("");
    let (echo_port, _echo) = targets::echo().await;
    let remote = support::free_port();

    let wrong = "SHA256:nThbg6kXUpJWGl7E1IGOCspRomTxdCARLviKw6E5SY8";
    let agent = start_agent(
        s.dir.path(),
        &s.yaml(wrong, &[Fwd("echo", remote, echo_port)], ""),
    );
    let snap = agent
        .wait_for(READY, "rejecting the host key", |s| {
            s.last_error
                .as_ref()
                .is_some_and(|(c, _)| c == "host_key_mismatch")
        })
        .await;
    let msg = snap.last_error.unwrap().1;
    assert!(
        msg.contains(&s.sshd.host_key_fingerprint) && msg.contains(wrong),
        "{msg}"
    );
    assert!(
        TcpStream::connect(("127.0.0.1", remote)).await.is_err(),
        "port forwarded despite a wrong host key"
    );
    agent.stop().await;

    s.sshd.set_authorized_key(
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIN+Wjn4+4Fcvl2JlKpggT+wCRxpSvtqqpVrQrKN1/A22 other",
    );
    let agent = start_agent(
        s.dir.path(),
        &s.yaml(
            &s.sshd.host_key_fingerprint,
            &[Fwd("echo", remote, echo_port)],
            "",
        ),
    );
    let snap = agent
        .wait_for(READY, "auth rejected", |s| {
            s.last_error
                .as_ref()
                .is_some_and(|(c, _)| c == "auth_rejected")
        })
        .await;
    let msg = snap.last_error.unwrap().1;
    assert!(
        msg.contains(&s.sshd.user()) && msg.contains("SHA256:"),
        "{msg}"
    );
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_port_held_on_the_server_is_reported_then_granted_when_freed() {
    let s = setup("");
    let (echo_port, _echo) = targets::echo().await;
    let remote = support::free_port();
    let squatter = TcpListener::bind(("127.0.0.1", remote)).await.unwrap();
    let agent = start_agent(
        s.dir.path(),
        &s.yaml(
            &s.sshd.host_key_fingerprint,
            &[Fwd("held", remote, echo_port)],
            "",
        ),
    );
    let snap = agent
        .wait_for(READY, "reporting the refusal", |s| {
            s.forwards
                .first()
                .is_some_and(|f| matches!(f.state, ForwardState::Refused(_)))
        })
        .await;
    assert!(snap.connected_via.is_some() && !snap.ready());
    drop(squatter);
    agent.wait_ready(READY).await;
    echo_exact(remote, MIB, 12, Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(agent.snapshot().reconnects, 0);
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_target_that_never_reads_does_not_stall_openssh_forwards() {
    let s = setup("");
    let (echo_port, _echo) = targets::echo().await;
    let (sink_port, _sink) = targets::sink_never_reads().await;
    let (stuck, live) = (support::free_port(), support::free_port());
    let agent = start_agent(
        s.dir.path(),
        &s.yaml(
            &s.sshd.host_key_fingerprint,
            &[Fwd("stuck", stuck, sink_port), Fwd("live", live, echo_port)],
            "",
        ),
    );
    agent.wait_ready(READY).await;
    // The agent caps and closes the stuck connection; the other forward must not wait.
    let (worst, flood) = support::inproc::worst_echo_while_flooding(stuck, live).await;
    // A stall behind the stuck connection would not end (its target never reads, so its window
    // never reopens): any echo that comes back at all came back beside it. The bound is only
    // there to name a stall before the echo's own 5 s timeout: a round trip is ~1 ms here, and
    // 1 s is far beyond what a busy 2-core machine adds.
    assert!(
        worst < Duration::from_secs(1),
        "second forward delayed by {worst:?}"
    );
    echo_exact(live, 64 * MIB, 13, Duration::from_secs(120))
        .await
        .unwrap();
    flood.abort();
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_target_slower_than_openssh_gets_every_byte_at_its_own_pace() {
    // sshd sends as fast as the window allows; the window comes back only as the target reads
    // (~16 MB/s here), so 24 MiB pass a 4 MiB per-connection cap without closing anything.
    let s = setup("");
    let (sink_port, mut reports, _sink) =
        support::inproc::paced_hashing_sink(Some(Duration::from_millis(2))).await;
    let remote = support::free_port();
    let agent = start_agent(
        s.dir.path(),
        &s.yaml(
            &s.sshd.host_key_fingerprint,
            &[Fwd("slow", remote, sink_port)],
            "limits: { connection_buffer: 4MiB }",
        ),
    );
    agent.wait_ready(READY).await;
    support::inproc::send_exact(remote, &mut reports, 24 * MIB, 62, Duration::from_secs(60)).await;
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwards_come_back_after_sshd_is_killed_and_restarted() {
    let mut s = setup("");
    let (echo_port, _echo) = targets::echo().await;
    let remote = support::free_port();
    let agent = start_agent(
        s.dir.path(),
        &s.yaml(
            &s.sshd.host_key_fingerprint,
            &[Fwd("echo", remote, echo_port)],
            "",
        ),
    );
    agent.wait_ready(READY).await;
    s.sshd.kill();
    agent
        .wait_for(READY, "noticing the loss", |s| s.connected_via.is_none())
        .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    s.sshd.restart();
    let back = Instant::now();
    agent.wait_ready(READY).await;
    echo_exact(remote, MIB, 14, Duration::from_secs(10))
        .await
        .unwrap();
    let snap = agent.snapshot();
    assert!(snap.reconnects >= 1);
    eprintln!("ready again {:?} after sshd restarted", back.elapsed());
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rekey_under_multichannel_load_against_openssh_keeps_the_connection() {
    // The agent renews keys every MiB and sshd every second, while six channels stream toward
    // the agent and one echoes. Unpatched russh 0.65.1 dropped the connection here every time
    // (Error::Pending at the first agent-initiated rekey with >2 busy channels).
    let s = setup("RekeyLimit 64M 1");
    let (sink_port, mut reports, _sink) = hashing_sink().await;
    let (echo_port, _echo) = targets::echo().await;
    let (up, back) = (support::free_port(), support::free_port());
    let agent = start_agent(
        s.dir.path(),
        &s.yaml(
            &s.sshd.host_key_fingerprint,
            &[Fwd("up", up, sink_port), Fwd("back", back, echo_port)],
            "limits: { rekey_after: 1MiB }",
        ),
    );
    agent.wait_ready(READY).await;
    support::inproc::multichannel_load(up, back, &mut reports, 6, 64 * MIB, 32 * MIB).await;
    let snap = agent.snapshot();
    assert_eq!(
        snap.reconnects, 0,
        "connection dropped during rekey: {:?}",
        snap.last_error
    );
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_exits_zero_and_releases_the_server_port() {
    let s = setup("");
    let (echo_port, _echo) = targets::echo().await;
    let remote = support::free_port();
    let file = s.dir.path().join("agent.yaml");
    std::fs::write(
        &file,
        s.yaml(
            &s.sshd.host_key_fingerprint,
            &[Fwd("echo", remote, echo_port)],
            "",
        ),
    )
    .unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_agent"))
        .args(["-c", file.to_str().unwrap(), "run"])
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + READY;
    while echo_exact(remote, 16, 1, Duration::from_secs(2))
        .await
        .is_err()
    {
        assert!(Instant::now() < deadline, "tunnel never came up");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let stopped = Instant::now();
    signal(child.id() as i32, "TERM");
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        // Nothing is open, so shutdown has nothing to drain: exiting before the drain's grace
        // (5 s) could have run out shows it was not spent waiting.
        assert!(
            stopped.elapsed() < agent::tunnel::drain::GRACE,
            "agent did not exit within the drain's grace of SIGTERM with nothing open"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(status.success(), "exit status {status}");
    // The forward was cancelled: sshd no longer listens there.
    let deadline = Instant::now() + Duration::from_secs(3);
    while TcpStream::connect(("127.0.0.1", remote)).await.is_ok() {
        assert!(
            Instant::now() < deadline,
            "server still listens on {remote}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_blocked_on_the_window_end_when_the_session_dies() {
    let mut s = setup("");
    // A target that writes forever toward vendor-side clients that never read: sshd stops
    // granting window, so the agent's sends wait for window that will never come.
    let spew = support::fresh_tokio_listener();
    let spew_port = spew.local_addr().unwrap().port();
    let _spewer = tokio::spawn(async move {
        while let Ok((mut c, _)) = spew.accept().await {
            tokio::spawn(async move {
                let chunk = vec![0u8; 64 * 1024];
                while c.write_all(&chunk).await.is_ok() {}
            });
        }
    });
    let remote = support::free_port();
    let agent = start_agent(
        s.dir.path(),
        &s.yaml(
            &s.sshd.host_key_fingerprint,
            &[Fwd("spew", remote, spew_port)],
            "",
        ),
    );
    agent.wait_ready(READY).await;
    let mut idle_clients = Vec::new();
    for _ in 0..3 {
        idle_clients.push(TcpStream::connect(("127.0.0.1", remote)).await.unwrap());
    }
    let open = |n: u32| format!("agent_forward_channels_open{{forward=\"spew\"}} {n}");
    agent
        .wait_for(READY, "three open connections", |_| {
            agent.state.metrics.encode().contains(&open(3))
        })
        .await;
    // Let every window fill up.
    tokio::time::sleep(Duration::from_secs(1)).await;
    s.sshd.kill();
    agent
        .wait_for(
            Duration::from_secs(5),
            "connections of the dead session closed",
            |_| agent.state.metrics.encode().contains(&open(0)),
        )
        .await;
    drop(idle_clients);
    agent.stop().await;
}

/// A TCP relay to `upstream` that holds the server's first bytes (its SSH banner) back for
/// `delay`, then relays both ways: a server whose handshake takes at least `delay`.
async fn banner_delaying_relay(
    upstream: u16,
    delay: Duration,
) -> (u16, tokio::task::JoinHandle<()>) {
    let listener = support::fresh_tokio_listener();
    let port = listener.local_addr().unwrap().port();
    let task = tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            tokio::spawn(async move {
                let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)).await else {
                    return;
                };
                let (mut cr, mut cw) = client.into_split();
                let (mut sr, mut sw) = server.into_split();
                tokio::spawn(async move {
                    let _ = tokio::io::copy(&mut cr, &mut sw).await;
                });
                let mut first = vec![0u8; 4096];
                let Ok(n) = sr.read(&mut first).await else {
                    return;
                };
                tokio::time::sleep(delay).await;
                if cw.write_all(&first[..n]).await.is_ok() {
                    let _ = tokio::io::copy(&mut sr, &mut cw).await;
                }
            });
        }
    });
    (port, task)
}

/// The sum of a histogram's observations, from the Prometheus text.
fn histogram_sum(metrics: &str, name: &str) -> f64 {
    let prefix = format!("{name}_sum ");
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("no {name}_sum in:\n{metrics}"))
        .trim()
        .parse()
        .unwrap()
}

/// `agent_handshake_duration_seconds` measures the SSH handshake (banner, key exchange,
/// authentication), not the instant after it: through a relay that holds the banner back
/// 400 ms, the one observation is at least that. Only a lower bound: machines are noisy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_handshake_metric_covers_the_whole_ssh_handshake() {
    let s = setup("");
    let (echo_port, _echo) = targets::echo().await;
    let delay = Duration::from_millis(400);
    let (relay, relay_task) = banner_delaying_relay(s.sshd.port, delay).await;
    let yaml = config_yaml(
        &[relay],
        &s.sshd.host_key_fingerprint,
        &s.sshd.user(),
        &s.key,
        &[Fwd("echo", support::free_port(), echo_port)],
        "",
    );
    let agent = start_agent(s.dir.path(), &yaml);
    agent.wait_ready(READY).await;
    let metrics = agent.state.encode_metrics();
    assert!(
        metrics.contains("agent_handshake_duration_seconds_count 1"),
        "{metrics}"
    );
    let took = histogram_sum(&metrics, "agent_handshake_duration_seconds");
    assert!(
        took >= delay.as_secs_f64(),
        "handshake recorded as {took}s through a relay that delays the banner {delay:?}"
    );
    agent.stop().await;
    relay_task.abort();
}

/// A server with Ed25519, ECDSA and RSA host keys, as most have: a pin of any one of them is
/// found (the agent asks for each type the server lists when the first key matches no pin),
/// the session runs on that key, and a reconnect asks for the learned type first (one
/// handshake). A pin matching none is an error that names all three keys.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pin_of_any_of_the_servers_host_keys_is_found_and_a_wrong_one_names_them_all() {
    let dir = tempfile::tempdir().unwrap();
    let (key, public) = support::agent_key(dir.path());
    let mut sshd = Sshd::start_with_host_keys(&public, "", &["ed25519", "ecdsa", "rsa"]);
    let (echo_port, _echo) = targets::echo().await;
    let (port, user) = (sshd.port, sshd.user());
    let yaml = |pin: &str, remote: u16| {
        config_yaml(
            &[port],
            pin,
            &user,
            &key,
            &[Fwd("echo", remote, echo_port)],
            "",
        )
    };
    // SSH handshakes by the agent (sshd also logs the test's own port probes as connections).
    let connections = |log: &str| log.matches("remote software version agent_").count();

    for kind in ["rsa", "ecdsa"] {
        let pinned = sshd.host_keys.iter().find(|k| k.kind == kind).unwrap();
        let remote = support::free_port();
        let agent = start_agent(dir.path(), &yaml(&pinned.fingerprint, remote));
        agent.wait_ready(READY).await;
        echo_exact(remote, MIB, 21, Duration::from_secs(10))
            .await
            .unwrap();
        if kind == "rsa" {
            // Learned: after the server restarts, one connection brings the tunnel back.
            let before = connections(&sshd.log());
            sshd.restart();
            agent
                .wait_for(READY, "the session after the restart", |s| {
                    s.reconnects >= 1 && s.ready()
                })
                .await;
            let after = connections(&sshd.log()) - before;
            assert_eq!(after, 1, "connections to come back after a restart");
            echo_exact(remote, MIB, 22, Duration::from_secs(10))
                .await
                .unwrap();
        }
        agent.stop().await;
    }

    let wrong = "SHA256:nThbg6kXUpJWGl7E1IGOCspRomTxdCARLviKw6E5SY8";
    let remote = support::free_port();
    let agent = start_agent(dir.path(), &yaml(wrong, remote));
    let snap = agent
        .wait_for(READY, "rejecting every host key", |s| {
            s.last_error
                .as_ref()
                .is_some_and(|(c, _)| c == "host_key_mismatch")
        })
        .await;
    let msg = snap.last_error.unwrap().1;
    for k in &sshd.host_keys {
        assert!(msg.contains(&k.fingerprint), "{} not named: {msg}", k.kind);
    }
    assert!(msg.contains(wrong), "{msg}");
    assert!(
        TcpStream::connect(("127.0.0.1", remote)).await.is_err(),
        "port forwarded despite a wrong host key"
    );
    agent.stop().await;
}
