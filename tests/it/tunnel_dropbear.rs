//! `agent run` against Dropbear, a second real SSH server beside OpenSSH (tests/tunnel_sshd.rs),
//! started by each test on 127.0.0.1 with its own host key. A missing Dropbear fails these tests
//! (scripts/test.sh installs dropbear-bin).

use crate::support;
use std::time::Duration;

use crate::support::READY;
use crate::support::dropbear::Dropbear;
use crate::support::inproc::{Fwd, RunningAgent, config_yaml, echo_exact, start_agent};
use crate::support::targets;
use agent::tunnel::state::ForwardState;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const MIB: usize = 1024 * 1024;

struct Setup {
    dir: tempfile::TempDir,
    key: std::path::PathBuf,
    server: Dropbear,
}

fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let (key, public) = support::agent_key(dir.path());
    let server = Dropbear::start(&public);
    Setup { dir, key, server }
}

impl Setup {
    fn yaml(&self, forwards: &[Fwd]) -> String {
        config_yaml(
            &[self.server.port],
            &self.server.host_key_fingerprint,
            &self.server.user(),
            &self.key,
            forwards,
            "",
        )
    }

    /// Rewrites agent.yaml with `forwards` and reloads it, as SIGHUP does.
    async fn reload(&self, agent: &RunningAgent, forwards: &[Fwd<'_>]) {
        std::fs::write(self.dir.path().join("agent.yaml"), self.yaml(forwards)).unwrap();
        agent.reloader.reload_from_file().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwards_work_against_dropbear_byte_exact_and_in_parallel() {
    let s = setup();
    let (echo_port, _echo) = targets::echo().await;
    let (r1, r2) = (support::free_port(), support::free_port());
    let agent = start_agent(
        s.dir.path(),
        &s.yaml(&[Fwd("a", r1, echo_port), Fwd("b", r2, echo_port)]),
    );
    agent.wait_ready(READY).await;
    echo_exact(r1, 16 * MIB, 3, Duration::from_secs(60))
        .await
        .unwrap_or_else(|e| panic!("{e}; dropbear log:\n{}", s.server.log()));
    let mut set = tokio::task::JoinSet::new();
    for i in 0..40u64 {
        let port = if i % 2 == 0 { r1 } else { r2 };
        set.spawn(echo_exact(
            port,
            64 * 1024,
            100 + i,
            Duration::from_secs(60),
        ));
    }
    while let Some(r) = set.join_next().await {
        r.unwrap().unwrap();
    }
    assert_eq!(agent.snapshot().reconnects, 0);
    agent.stop().await;
}

/// Dropbear refuses every `cancel-tcpip-forward` and keeps listening until the session ends,
/// then refuses a new request for that port. A forward removed by a reload (or closed by the
/// customer's access policy) must carry nothing while the server still listens, and carry
/// traffic again when it comes back, on the same session.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forward_removed_and_restored_on_dropbear_refuses_then_carries_again() {
    let s = setup();
    let (echo_port, _echo) = targets::echo().await;
    let (r1, r2) = (support::free_port(), support::free_port());
    let both = [Fwd("a", r1, echo_port), Fwd("b", r2, echo_port)];
    let agent = start_agent(s.dir.path(), &s.yaml(&both));
    agent.wait_ready(READY).await;
    echo_exact(r2, 4096, 1, Duration::from_secs(10))
        .await
        .unwrap();

    s.reload(&agent, &[Fwd("a", r1, echo_port)]).await;
    agent
        .wait_for(READY, "down to forward a", |snap| snap.forwards.len() == 1)
        .await;
    // The server still accepts on b's port; the agent refuses the channel, so the vendor's
    // connection ends without a byte of the target's.
    let mut c = TcpStream::connect(("127.0.0.1", r2))
        .await
        .expect("dropbear keeps listening after refusing the cancel");
    let _ = c.write_all(b"must not reach the target").await;
    let mut got = Vec::new();
    let ended = tokio::time::timeout(Duration::from_secs(10), c.read_to_end(&mut got)).await;
    assert!(ended.is_ok(), "the refused connection was not ended");
    assert!(got.is_empty(), "a removed forward carried {got:?}");
    echo_exact(r1, 4096, 2, Duration::from_secs(10))
        .await
        .unwrap();

    s.reload(&agent, &both).await;
    // The reload reaches the reconciler asynchronously: until then the state lists `a` alone.
    let snap = agent
        .wait_for(READY, "ready with both forwards", |snap| {
            snap.forwards.len() == 2 && snap.ready()
        })
        .await;
    assert!(
        snap.forwards
            .iter()
            .all(|f| matches!(f.state, ForwardState::Granted)),
        "{snap:#?}"
    );
    echo_exact(r2, 256 * 1024, 3, Duration::from_secs(20))
        .await
        .unwrap_or_else(|e| {
            panic!(
                "b after it came back: {e}; dropbear log:\n{}",
                s.server.log()
            )
        });
    assert_eq!(
        agent.snapshot().reconnects,
        0,
        "the same session throughout"
    );
    agent.stop().await;
}

/// `agent check` against Dropbear: every step passes; the trial forward warns that the server
/// did not cancel it (Dropbear refuses every cancel), which is nothing to fix.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_passes_against_dropbear_and_names_the_refused_cancel() {
    let s = setup();
    let (echo_port, _echo) = targets::echo().await;
    let config = s.dir.path().join("agent.yaml");
    std::fs::write(
        &config,
        s.yaml(&[Fwd("a", support::free_port(), echo_port)]),
    )
    .unwrap();
    let run = tokio::process::Command::new(env!("CARGO_BIN_EXE_agent"))
        .args(["check", "--json", "--timeout", "5s", "-c"])
        .arg(&config)
        .env_remove("AGENT_CONFIG")
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .expect("agent check did not finish in 60 s")
        .expect("run agent check");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&out.stdout)));
    assert_eq!(out.status.code(), Some(0), "{report:#}");
    let rows = report["rows"].as_array().expect("rows");
    let of = |step: &str| {
        rows.iter()
            .filter(|r| r["step"] == step)
            .collect::<Vec<_>>()
    };
    for step in ["ssh", "host-key", "auth", "target"] {
        assert!(
            !of(step).is_empty() && of(step).iter().all(|r| r["status"] == "PASS"),
            "{step}: {report:#}"
        );
    }
    let forward = of("forward");
    assert_eq!(forward.len(), 1, "{report:#}");
    assert_eq!(forward[0]["status"], "WARN", "{report:#}");
    assert!(
        forward[0]["detail"]
            .as_str()
            .is_some_and(|d| d.contains("granted") && d.contains("cancel")),
        "{report:#}"
    );
}
