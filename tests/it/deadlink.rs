//! Dead-link detection toward the server holds under bulk load: with a 2 s x 2 keepalive, a
//! server that freezes and a network that starts dropping every packet are both noticed in
//! about 6 s (interval x (max_missed + 1)) while a forwarded connection moves data both ways
//! as fast as it can. Real OpenSSH sshd; the partition runs in a network namespace of its own.

use crate::support;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::support::READY;
use crate::support::inproc::{Fwd, RunningAgent, config_yaml, start_agent};
use crate::support::sshd::{Sshd, signal};
use crate::support::targets;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// keepalive 2 s x (2 missed + 1), plus scheduling slack on a shared machine.
const NOTICED_WITHIN: Duration = Duration::from_secs(9);

struct Rig {
    _dir: tempfile::TempDir,
    sshd: Sshd,
    agent: RunningAgent,
    remote: u16,
}

async fn rig() -> Rig {
    let dir = tempfile::tempdir().unwrap();
    let (key, public) = support::agent_key(dir.path());
    let sshd = Sshd::start(&public);
    let (echo_port, echo) = targets::echo().await;
    std::mem::forget(echo); // lives as long as the test's runtime
    let remote = support::free_port();
    let yaml = config_yaml(
        &[sshd.port],
        &sshd.host_key_fingerprint,
        &sshd.user(),
        &key,
        &[Fwd("echo", remote, echo_port)],
        "",
    );
    assert!(
        yaml.contains("keepalive: { interval: 2s, max_missed: 2 }"),
        "{yaml}"
    );
    let agent = start_agent(dir.path(), &yaml);
    agent.wait_ready(READY).await;
    Rig {
        _dir: dir,
        sshd,
        agent,
        remote,
    }
}

/// Moves data through the forward both ways as fast as it goes until the link dies; returns
/// once `MOVING` bytes came back, so the fault hits a tunnel under load.
async fn bulk_load(remote: u16) {
    const MOVING: u64 = 32 * 1024 * 1024;
    let tcp = TcpStream::connect(("127.0.0.1", remote)).await.unwrap();
    let (mut rd, mut wr) = tcp.into_split();
    tokio::spawn(async move {
        let chunk = vec![0x5a_u8; 64 * 1024];
        while wr.write_all(&chunk).await.is_ok() {}
    });
    let (moving_tx, moving_rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 64 * 1024];
        let (mut seen, mut moving_tx) = (0u64, Some(moving_tx));
        while let Ok(n @ 1..) = rd.read(&mut buf).await {
            seen += n as u64;
            if seen >= MOVING
                && let Some(tx) = moving_tx.take()
            {
                let _ = tx.send(());
            }
        }
    });
    tokio::time::timeout(Duration::from_secs(30), moving_rx)
        .await
        .expect("32 MiB did not come back through the tunnel within 30 s")
        .unwrap();
}

/// How long after `fault` the agent says the session is gone; it must then dial again.
async fn time_to_notice(agent: &RunningAgent) -> Duration {
    let at = Instant::now();
    agent
        .wait_for(NOTICED_WITHIN * 2, "noticing the dead link", |s| {
            s.connected_via.is_none()
        })
        .await;
    at.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_server_is_noticed_under_bulk_load() {
    let r = rig().await;
    bulk_load(r.remote).await;
    let frozen = r.sshd.session_pids();
    assert!(!frozen.is_empty());
    for pid in &frozen {
        signal(*pid, "STOP");
    }
    let took = time_to_notice(&r.agent).await;
    for pid in &frozen {
        signal(*pid, "KILL");
    }
    eprintln!("a frozen server was noticed after {took:?}");
    assert!(
        took < NOTICED_WITHIN,
        "a frozen server took {took:?} to notice"
    );
}

/// The partition (every packet to and from sshd's port dropped, as by a firewall that forgot
/// the flow) needs a firewall rule; it is made in a network namespace this test creates, by
/// running itself again inside `unshare --net`, so nothing outside the test is touched.
#[test]
fn a_partition_that_drops_every_packet_is_noticed_under_bulk_load() {
    let wrapper = [
        "unshare",
        "--net",
        "--",
        "sh",
        "-c",
        "ip link set lo up && exec \"$@\"",
        "sh",
    ];
    if !support::run_alone(
        "deadlink::a_partition_that_drops_every_packet_is_noticed_under_bulk_load",
        &wrapper,
    ) {
        return;
    }
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
        .block_on(async {
            let r = rig().await;
            bulk_load(r.remote).await;
            let port = r.sshd.port.to_string();
            for dir in ["--dport", "--sport"] {
                let st = Command::new("iptables")
                    .args(["-A", "INPUT", "-p", "tcp", dir, &port, "-j", "DROP"])
                    .status()
                    .expect("run iptables");
                assert!(st.success(), "iptables {dir} {port}");
            }
            let took = time_to_notice(&r.agent).await;
            eprintln!("a partition was noticed after {took:?}");
            assert!(took < NOTICED_WITHIN, "a partition took {took:?} to notice");
        });
}
