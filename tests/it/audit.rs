//! The audit trail against a running agent (in-process, with the russh server playing the
//! vendor): what a connection, a refused channel, a session and a config load write; that the
//! chain verifies; that an audit file that cannot be written refuses new vendor connections
//! under `on_failure: refuse` and not under `continue`; and, with the real binary, that the head
//! it logs lets `agent audit verify --head` find a truncated tail.

use crate::support;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::support::READY;
use crate::support::inproc::{Fwd, RunningAgent, config_yaml, echo_exact, start_agent};
use crate::support::targets;
use crate::support::vendor_server::{ProbeChannel, VendorOptions, VendorServer};
use agent::audit::verify::{Outcome, default_files, verify};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

struct Setup {
    dir: tempfile::TempDir,
    key: PathBuf,
    server: VendorServer,
}

async fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let (key, public) = support::agent_key(dir.path());
    let server = VendorServer::start(VendorOptions {
        authorized_keys: vec![public],
        ..VendorOptions::default()
    })
    .await;
    std::fs::create_dir(dir.path().join("audit")).unwrap();
    Setup { dir, key, server }
}

impl Setup {
    fn audit_file(&self) -> PathBuf {
        self.dir.path().join("audit").join("audit.jsonl")
    }

    fn yaml(&self, forwards: &[Fwd], audit: &str) -> String {
        config_yaml(
            &[self.server.port],
            &self.server.host_key_fingerprint,
            "acme",
            &self.key,
            forwards,
            &format!("audit: {{ file: {}{audit} }}", self.audit_file().display()),
        )
    }
}

fn records(file: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(file)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

/// Waits for a record that `matches`; panics with the file's records if none comes.
async fn wait_record(
    file: &Path,
    what: &str,
    matches: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let all = records(file);
        if let Some(r) = all.iter().find(|r| matches(r)) {
            return r.clone();
        }
        assert!(
            Instant::now() < deadline,
            "no {what} record within 10 s in {}:\n{all:#?}",
            file.display()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until /metrics satisfies `cond`; panics with the text if it never does.
async fn wait_metrics(agent: &RunningAgent, cond: impl Fn(&str) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = agent.state.encode_metrics();
        if cond(&text) {
            return;
        }
        assert!(Instant::now() < deadline, "{text}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Sends `ping` through `port`; true if it came back (the connection was served).
async fn served(port: u16) -> bool {
    let attempt = async {
        let mut c = TcpStream::connect(("127.0.0.1", port)).await?;
        c.write_all(b"ping").await?;
        let mut buf = [0u8; 4];
        c.read_exact(&mut buf).await?;
        Ok::<_, std::io::Error>(&buf == b"ping")
    };
    tokio::time::timeout(Duration::from_secs(10), attempt)
        .await
        .expect("the tunnel answered (served or closed) within 10 s")
        .unwrap_or(false)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_refusals_sessions_and_the_config_are_recorded_in_a_chain_that_verifies() {
    let s = setup().await;
    let (echo_port, _echo) = targets::echo().await;
    let remote = support::free_port();
    let agent = start_agent(s.dir.path(), &s.yaml(&[Fwd("echo", remote, echo_port)], ""));
    agent.wait_ready(READY).await;
    let file = s.audit_file();

    echo_exact(remote, 300_000, 7, Duration::from_secs(20))
        .await
        .unwrap();
    let conn = wait_record(&file, "connection", |r| r["kind"] == "connection").await;
    assert_eq!(conn["forward"], "echo");
    assert_eq!(conn["target"], format!("127.0.0.1:{echo_port}"));
    assert_eq!(
        conn["target_addr"],
        format!("127.0.0.1:{echo_port}"),
        "the address reached"
    );
    assert_eq!(conn["to_target"], 300_000, "{conn}");
    assert_eq!(conn["from_target"], 300_000, "{conn}");
    assert!(
        conn["originator"]
            .as_str()
            .unwrap()
            .starts_with("127.0.0.1:"),
        "{conn}"
    );
    assert!(
        ["vendor_closed", "target_closed"].contains(&conn["end"].as_str().unwrap()),
        "{conn}"
    );
    assert!(conn["opened"].as_str().unwrap() <= conn["closed"].as_str().unwrap());

    // A channel for a port the agent never asked for: refused, and recorded as such.
    let bogus = remote.wrapping_add(1);
    assert!(
        s.server
            .open_channel(ProbeChannel::ForwardedTcpip {
                addr: "127.0.0.1".into(),
                port: bogus,
            })
            .await
            .is_err()
    );
    let refused = wait_record(&file, "refused", |r| r["kind"] == "refused").await;
    assert_eq!(refused["why"], "not_listed");
    assert_eq!(refused["port"], bogus);
    assert_eq!(refused["forward"], serde_json::Value::Null);

    let config = &records(&file)[0];
    assert_eq!(config["kind"], "config");
    assert_eq!(config["event"], "load");
    assert_eq!(config["seq"], 0);
    assert_eq!(
        config["sha256"],
        agent::audit::sha256_hex(&std::fs::read(s.dir.path().join("agent.yaml")).unwrap())
    );
    let session = wait_record(&file, "session", |r| r["kind"] == "session").await;
    assert_eq!(session["event"], "connected");
    assert_eq!(session["host_key"], s.server.host_key_fingerprint.as_str());
    assert_eq!(session["port"], s.server.port);
    assert_eq!(session["proxy"], serde_json::Value::Null, "direct");

    // The state at start: the forward (no access policy) is open.
    let opened = wait_record(&file, "access", |r| r["kind"] == "access").await;
    assert_eq!(opened["change"], "opened", "{opened}");
    assert_eq!(opened["forward"], "echo", "{opened}");

    wait_metrics(&agent, |m| {
        m.contains("agent_audit_records_written_total 5")
            && m.contains("agent_audit_records_failed_total 0")
    })
    .await;

    agent.stop().await;
    wait_record(&file, "session end", |r| {
        r["kind"] == "session" && r["event"] == "ended" && r["reason"] == "agent stopped"
    })
    .await;
    let (report, outcome) = verify(&default_files(&file), None);
    assert_eq!(outcome, Outcome::Intact, "{report}");
    assert!(report.contains("ok: 6 record(s), seq 0 to 5"), "{report}");

    // The same check through the command line, with agent.yaml naming the file.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_agent"))
        .args(["-c", s.dir.path().join("agent.yaml").to_str().unwrap()])
        .args(["audit", "verify"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("ok: 6 record(s)"), "{text}");
}

/// A name this machine's resolver answers with loopback addresses only, and those addresses:
/// Debian's hosts file maps `ip6-localhost` to ::1 and the host name to 127.0.1.1 (this
/// image's, to 127.0.0.1). None of them is `localhost`, which a target may name.
async fn a_name_for_loopback() -> (String, Vec<std::net::IpAddr>) {
    let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    for name in ["ip6-localhost", "ip6-loopback", hostname.trim()] {
        let Ok(found) = tokio::net::lookup_host((name, 0)).await else {
            continue;
        };
        let ips: Vec<std::net::IpAddr> = found.map(|a| a.ip()).collect();
        if !name.is_empty() && !ips.is_empty() && ips.iter().all(|ip| ip.is_loopback()) {
            return (name.to_string(), ips);
        }
    }
    panic!("no name resolves to loopback here (ip6-localhost, ip6-loopback, the host name)");
}

/// An echo on `ip`, counting the connections it accepts.
async fn counting_echo(
    ip: std::net::IpAddr,
) -> (u16, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let listener = tokio::net::TcpListener::bind((ip, 0)).await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let accepted = std::sync::Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let (mut rd, mut wr) = conn.split();
                let _ = tokio::io::copy(&mut rd, &mut wr).await;
            });
        }
    });
    (port, accepted)
}

/// A target name that resolves to loopback (as a lying DNS answer or a hosts-file line would
/// make it) is refused, in the trail with the address it resolved to, and its listener never
/// sees the vendor; the same listener written as its address is served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_target_name_that_resolves_to_loopback_is_refused_and_audited() {
    let s = setup().await;
    let (name, ips) = a_name_for_loopback().await;
    let (port, accepted) = counting_echo(ips[0]).await;
    let (by_name, literal) = (support::free_port(), support::free_port());
    let yaml = s
        .yaml(
            &[Fwd("named", by_name, port), Fwd("literal", literal, port)],
            "",
        )
        .replacen(
            &format!("target: \"127.0.0.1:{port}\""),
            &format!("target: \"{name}:{port}\""),
            1,
        );
    let yaml = match ips[0] {
        std::net::IpAddr::V6(ip) => yaml.replacen(
            &format!("target: \"127.0.0.1:{port}\""),
            &format!("target: \"[{ip}]:{port}\""),
            1,
        ),
        std::net::IpAddr::V4(ip) => yaml.replacen(
            &format!("target: \"127.0.0.1:{port}\""),
            &format!("target: \"{ip}:{port}\""),
            1,
        ),
    };
    let agent = start_agent(s.dir.path(), &yaml);
    agent.wait_ready(READY).await;
    let file = s.audit_file();
    // The start-up probe of each target connects once, to the literal one only.
    let probes = accepted.load(std::sync::atomic::Ordering::SeqCst);
    assert!(probes <= 1, "{probes}");

    assert!(!served(by_name).await, "the vendor reached {name}");
    let refused = wait_record(&file, "refused", |r| r["kind"] == "refused").await;
    assert_eq!(refused["why"], "target_address_refused", "{refused}");
    assert_eq!(refused["forward"], "named", "{refused}");
    let detail = refused["detail"].as_str().unwrap();
    let resolved = std::net::SocketAddr::new(ips[0], port).to_string();
    for part in [format!("{name}:{port}"), resolved, "loopback".into()] {
        assert!(detail.contains(&part), "{part} not in {detail}");
    }

    assert!(
        served(literal).await,
        "a target written as the address is served"
    );
    let conn = wait_record(&file, "connection", |r| r["kind"] == "connection").await;
    assert_eq!(conn["forward"], "literal", "{conn}");
    assert_eq!(
        conn["target_addr"],
        std::net::SocketAddr::new(ips[0], port).to_string()
    );
    assert_eq!(
        accepted.load(std::sync::atomic::Ordering::SeqCst),
        probes + 1,
        "only the literal forward's connection reached the listener"
    );
    agent.stop().await;
    let (report, outcome) = verify(&default_files(&file), None);
    assert_eq!(outcome, Outcome::Intact, "{report}");
}

/// `allow` narrows even a target written as an address: 127.0.0.1 outside 10.0.0.0/8 is
/// refused; inside 127.0.0.0/8 it is served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allow_refuses_a_target_outside_its_networks() {
    let s = setup().await;
    let (echo_port, _echo) = targets::echo().await;
    let (outside, inside) = (support::free_port(), support::free_port());
    let yaml = s
        .yaml(
            &[
                Fwd("outside", outside, echo_port),
                Fwd("inside", inside, echo_port),
            ],
            "",
        )
        .replacen(
            &format!("target: \"127.0.0.1:{echo_port}\" }}"),
            &format!("target: \"127.0.0.1:{echo_port}\", allow: [10.0.0.0/8] }}"),
            1,
        )
        .replacen(
            &format!("target: \"127.0.0.1:{echo_port}\" }}"),
            &format!("target: \"127.0.0.1:{echo_port}\", allow: [127.0.0.0/8] }}"),
            1,
        );
    let agent = start_agent(s.dir.path(), &yaml);
    agent.wait_ready(READY).await;
    let file = s.audit_file();

    assert!(!served(outside).await, "outside 10.0.0.0/8");
    let refused = wait_record(&file, "refused", |r| r["kind"] == "refused").await;
    assert_eq!(refused["why"], "target_address_refused", "{refused}");
    assert_eq!(refused["forward"], "outside", "{refused}");
    let detail = refused["detail"].as_str().unwrap();
    assert!(detail.contains("`allow`"), "{detail}");
    assert!(served(inside).await, "inside 127.0.0.0/8");
    agent.stop().await;
}

/// Breaks the audit file's folder as a lost volume would (the folder replaced by a file) and
/// puts it back; returns the agent once it noticed each time.
async fn break_and_mend(s: &Setup, agent: &RunningAgent, remote: u16, served_while_broken: bool) {
    let folder = s.dir.path().join("audit");
    let aside = s.dir.path().join("audit-aside");
    std::fs::rename(&folder, &aside).unwrap();
    std::fs::write(&folder, "not a folder").unwrap();
    // The writer checks its path every second, and under `refuse` readiness says why.
    if !served_while_broken {
        let snap = agent
            .wait_for(READY, "refusing for the audit trail", |s| s.audit.is_some())
            .await;
        assert!(!snap.ready());
        let report = agent::admin::ready_report(&snap);
        assert!(
            report
                .reasons
                .iter()
                .any(|r| r.contains("audit trail") && r.contains("refused")),
            "{report:#?}"
        );
    } else {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        assert!(agent.snapshot().ready(), "`continue` stays ready");
    }
    assert_eq!(
        served(remote).await,
        served_while_broken,
        "a new connection while the audit file cannot be written"
    );
    // The record of that connection (refused or served) is lost, and counted.
    wait_metrics(agent, |m| !m.contains("agent_audit_records_failed_total 0")).await;

    std::fs::remove_file(&folder).unwrap();
    std::fs::rename(&aside, &folder).unwrap();
    agent
        .wait_for(
            READY,
            "ready again once the audit file can be written",
            |s| s.ready(),
        )
        .await;
    assert!(served(remote).await, "served again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unwritable_audit_file_refuses_new_connections_until_it_can_be_written() {
    let s = setup().await;
    let (echo_port, _echo) = targets::echo().await;
    let remote = support::free_port();
    let agent = start_agent(s.dir.path(), &s.yaml(&[Fwd("echo", remote, echo_port)], ""));
    agent.wait_ready(READY).await;
    assert!(served(remote).await);
    let file = s.audit_file();
    wait_record(&file, "connection", |r| r["kind"] == "connection").await;

    break_and_mend(&s, &agent, remote, false).await;

    // The refused connection could not be recorded: the chain says so, and still verifies.
    let lost = wait_record(&file, "lost", |r| r["kind"] == "lost").await;
    assert!(lost["count"].as_u64().unwrap() >= 1, "{lost}");
    wait_record(&file, "the connection after", |r| {
        r["kind"] == "connection" && r["seq"].as_u64() > lost["seq"].as_u64()
    })
    .await;
    let (report, outcome) = verify(&default_files(&file), None);
    assert_eq!(outcome, Outcome::Intact, "{report}");
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_failure_continue_serves_connections_the_trail_cannot_record() {
    let s = setup().await;
    let (echo_port, _echo) = targets::echo().await;
    let remote = support::free_port();
    let agent = start_agent(
        s.dir.path(),
        &s.yaml(&[Fwd("echo", remote, echo_port)], ", on_failure: continue"),
    );
    agent.wait_ready(READY).await;
    break_and_mend(&s, &agent, remote, true).await;
    agent.stop().await;
}

/// A folder another user owns could hold a link at the file's name, or have the file swapped
/// under the agent: it is refused (even to root, which CI runs as), and readiness names the
/// folder, its owner and mode, and the fix. Given to the agent's user, it is written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_audit_folder_owned_by_another_user_is_refused_with_owner_mode_and_fix() {
    assert_eq!(
        agent::sys::real_uid(),
        0,
        "chown needs root (CI runs as root)"
    );
    let s = setup().await;
    let folder = s.dir.path().join("audit");
    std::os::unix::fs::chown(&folder, Some(65534), Some(65534)).unwrap();
    let (echo_port, _echo) = targets::echo().await;
    let remote = support::free_port();
    let agent = start_agent(s.dir.path(), &s.yaml(&[Fwd("echo", remote, echo_port)], ""));
    let snap = agent
        .wait_for(READY, "refusing for the audit trail", |s| s.audit.is_some())
        .await;
    let why = snap.audit.clone().unwrap_or_default();
    let owned = format!("{} is owned by uid 65534 (mode 0755)", folder.display());
    assert!(
        why.contains(&owned) && why.contains("fix:") && why.contains("chown 0"),
        "{why}"
    );
    assert!(!snap.ready());
    assert!(!s.audit_file().exists(), "nothing written in that folder");

    std::os::unix::fs::chown(&folder, Some(0), Some(0)).unwrap();
    agent
        .wait_for(READY, "ready once the folder is root's", |s| s.ready())
        .await;
    assert!(served(remote).await);
    wait_record(&s.audit_file(), "connection", |r| r["kind"] == "connection").await;
    agent.stop().await;
}

/// The real binary logs `audit head` every `head_interval`; a verifier holding that line finds
/// the records cut from the end of the file, which the chain alone cannot show.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_logged_head_exposes_a_truncated_tail() {
    use support::agent_process::AgentProcess;
    let s = setup().await;
    let (echo_port, _echo) = targets::echo().await;
    let remote = support::free_port();
    let yaml = s
        .yaml(&[Fwd("echo", remote, echo_port)], ", head_interval: 300ms")
        .replace(
            "admin: { listen: \"off\" }",
            "admin: { listen: \"127.0.0.1:0\" }",
        )
        + "log: { format: json }\n";
    let config = s.dir.path().join("agent.yaml");
    std::fs::write(&config, &yaml).unwrap();
    let (process, admin) =
        AgentProcess::start(Path::new(env!("CARGO_BIN_EXE_agent")), &config, READY);
    let deadline = Instant::now() + READY;
    while support::agent_process::get(admin, "/readyz", Duration::from_secs(2))
        .await
        .map(|(status, _, _)| status)
        != Ok(200)
    {
        assert!(Instant::now() < deadline, "{}", process.evidence());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for _ in 0..3 {
        assert!(served(remote).await);
    }
    let file = s.audit_file();
    let last = loop {
        let all = records(&file);
        if all.iter().filter(|r| r["kind"] == "connection").count() == 3 {
            break all.last().unwrap()["seq"].as_u64().unwrap();
        }
        assert!(Instant::now() < deadline, "{all:#?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    // The newest `audit head` line naming that record, as a log collector would keep it.
    let head = loop {
        let logged = process
            .evidence()
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|e| e["fields"]["message"] == "audit head")
            .find(|e| e["fields"]["seq"].as_u64() == Some(last))
            .map(|e| e["fields"]["hash"].as_str().unwrap().to_string());
        if let Some(h) = logged {
            break h;
        }
        assert!(Instant::now() < deadline, "{}", process.evidence());
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    drop(process);

    let verify_cli = |head: &str| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_agent"))
            .args([
                "-c",
                config.to_str().unwrap(),
                "audit",
                "verify",
                "--head",
                head,
            ])
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).to_string(),
        )
    };
    let (code, text) = verify_cli(&head);
    assert_eq!(code, Some(0), "{text}");
    assert!(
        text.contains(&format!("the logged head is seq {last}")),
        "{text}"
    );

    // Cut the last two records: the rest still chains, but the logged head is gone.
    let kept: Vec<String> = std::fs::read_to_string(&file)
        .unwrap()
        .lines()
        .map(String::from)
        .collect();
    let kept = &kept[..kept.len() - 2];
    std::fs::write(&file, kept.join("\n") + "\n").unwrap();
    let (code, text) = verify_cli(&head);
    assert_eq!(code, Some(1), "{text}");
    assert!(
        text.contains("the tail was truncated")
            && text.contains(&format!("ends after seq {}", last - 2)),
        "{text}"
    );
}

/// A reload refused for a secret pasted into the wrong fields (a webhook URL with its token):
/// the audit record (kept for good, hash-chained) and the log name the fields and what is
/// wrong, never any part of the URL's user info, path or query.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejected_reload_keeps_no_part_of_a_secret_in_the_trail_or_the_log() {
    use support::agent_process::AgentProcess;
    const SECRET_URL: &str = "https://user:secret@hooks.example/T0/B1/XYZSECRET?token=abc";
    let s = setup().await;
    let (echo_port, _echo) = targets::echo().await;
    let yaml = s
        .yaml(&[Fwd("echo", support::free_port(), echo_port)], "")
        .replace(
            "admin: { listen: \"off\" }",
            "admin: { listen: \"127.0.0.1:0\" }",
        )
        + "log: { format: json }\n";
    let config = s.dir.path().join("agent.yaml");
    std::fs::write(&config, &yaml).unwrap();
    let (process, _admin) =
        AgentProcess::start(Path::new(env!("CARGO_BIN_EXE_agent")), &config, READY);
    let file = s.audit_file();
    wait_record(&file, "config load", |r| r["event"] == "load").await;

    // Wrong types and bad values, each holding the URL.
    let bad = yaml
        .replace(
            "keepalive: { interval: 2s, max_missed: 2 }",
            &format!("keepalive: {{ interval: \"{SECRET_URL}\", max_missed: \"{SECRET_URL}\" }}"),
        )
        .replace("proxy: none", &format!("proxy: \"{SECRET_URL}\""))
        + &format!("notify: {{ webhook: \"{SECRET_URL}\" }}\n");
    assert_ne!(bad, yaml);
    std::fs::write(&config, &bad).unwrap();
    let hup = std::process::Command::new("kill")
        .args(["-HUP", &process.pid().to_string()])
        .status()
        .unwrap();
    assert!(hup.success());
    let rejected = wait_record(&file, "rejected reload", |r| {
        r["kind"] == "config" && r["event"] == "reload_rejected"
    })
    .await;
    let error = rejected["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("line ") && error.contains("more)"),
        "{rejected}"
    );
    // The log line for each problem comes right after the record is handed to the writer.
    let deadline = Instant::now() + Duration::from_secs(10);
    while process.logged_at("ERROR").0 < 4 {
        assert!(Instant::now() < deadline, "{}", process.evidence());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let trail = std::fs::read_to_string(&file).unwrap();
    let log = process.evidence();
    assert!(log.contains("reload rejected"), "{log}");
    for part in ["user:secret", "secret", "T0/B1", "XYZSECRET", "token=abc"] {
        assert!(!trail.contains(part), "the trail keeps {part:?}:\n{trail}");
        assert!(!log.contains(part), "the log shows {part:?}:\n{log}");
    }
}

/// Opens a vendor connection through `port` and proves it is served (one echo) before
/// returning it, still open.
async fn open_served(port: u16) -> TcpStream {
    let mut c = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    c.write_all(b"ping").await.unwrap();
    let mut buf = [0u8; 4];
    tokio::time::timeout(Duration::from_secs(10), c.read_exact(&mut buf))
        .await
        .expect("echo within 10 s")
        .unwrap();
    assert_eq!(&buf, b"ping");
    c
}

/// SIGTERM with vendor connections open (idle, mid-transfer, and one the vendor finishes during
/// the stop): the agent refuses new ones, lets the open ones finish within its grace period,
/// cuts the rest as `end=shutdown`, and writes every connection's record before it exits 0,
/// after them the session's end. The chain verifies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_open_connections_and_records_each_one_before_exiting() {
    use support::agent_process::AgentProcess;
    let s = setup().await;
    let (echo_port, _echo) = targets::echo().await;
    let remote = support::free_port();
    let yaml = s.yaml(&[Fwd("echo", remote, echo_port)], "").replace(
        "admin: { listen: \"off\" }",
        "admin: { listen: \"127.0.0.1:0\" }",
    ) + "log: { format: json }\n";
    let config = s.dir.path().join("agent.yaml");
    std::fs::write(&config, &yaml).unwrap();
    let (mut process, admin) =
        AgentProcess::start(Path::new(env!("CARGO_BIN_EXE_agent")), &config, READY);
    let deadline = Instant::now() + READY;
    while support::agent_process::get(admin, "/readyz", Duration::from_secs(2))
        .await
        .map(|(status, _, _)| status)
        != Ok(200)
    {
        assert!(Instant::now() < deadline, "{}", process.evidence());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Three idle connections, held open past the grace period.
    let mut idle = Vec::new();
    for _ in 0..3 {
        idle.push(open_served(remote).await);
    }
    // One mid-transfer until the agent cuts it: writes and reads the echo back without pause.
    let busy = open_served(remote).await;
    let moved = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let transfer = tokio::spawn({
        let moved = moved.clone();
        async move {
            let (mut rd, mut wr) = busy.into_split();
            let writer = tokio::spawn(async move {
                let chunk = vec![7u8; 16 * 1024];
                while wr.write_all(&chunk).await.is_ok() {}
            });
            let mut buf = vec![0u8; 64 * 1024];
            while let Ok(n) = rd.read(&mut buf).await {
                if n == 0 {
                    break;
                }
                moved.fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
            }
            writer.abort();
        }
    });
    // One the vendor finishes during the stop: a last exchange, then its EOF.
    let mut finishing = open_served(remote).await;
    while moved.load(std::sync::atomic::Ordering::Relaxed) < 1 << 20 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    let stopped = Instant::now();
    support::sshd::signal(process.pid() as i32, "TERM");
    // Within the grace period the open connections still carry data.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(process.running(), "the agent waits for open connections");
    finishing.write_all(b"last words").await.unwrap();
    let mut buf = [0u8; 10];
    tokio::time::timeout(Duration::from_secs(3), finishing.read_exact(&mut buf))
        .await
        .expect("a connection still open is served during the stop")
        .unwrap();
    assert_eq!(&buf, b"last words");
    finishing.shutdown().await.unwrap();
    let mut rest = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(3), finishing.read_to_end(&mut rest)).await;
    let during_stop = moved.load(std::sync::atomic::Ordering::Relaxed);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        moved.load(std::sync::atomic::Ordering::Relaxed) > during_stop,
        "the transfer goes on during the grace period"
    );

    // Exits 0, within the grace period (5 s) plus the goodbye's bounds, far inside systemd's 30 s.
    let code = loop {
        if !process.running() {
            break process.exit_code();
        }
        assert!(
            stopped.elapsed() < Duration::from_secs(20),
            "no exit within 20 s of SIGTERM\n{}",
            process.evidence()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(code, Some(0), "{}", process.evidence());
    let took = stopped.elapsed();
    assert!(
        took >= Duration::from_secs(5),
        "the idle connections were given the grace period: {took:?}"
    );
    tokio::time::timeout(Duration::from_secs(5), transfer)
        .await
        .expect("the cut ended the transfer")
        .unwrap();

    let all = records(&s.audit_file());
    let conns: Vec<&serde_json::Value> = all.iter().filter(|r| r["kind"] == "connection").collect();
    assert_eq!(conns.len(), 5, "one record per connection opened: {all:#?}");
    let ends: Vec<&str> = conns.iter().map(|r| r["end"].as_str().unwrap()).collect();
    assert_eq!(
        ends.iter().filter(|e| **e == "shutdown").count(),
        4,
        "the idle and the busy connections were cut as shutdown: {ends:?}"
    );
    let finished = conns
        .iter()
        .find(|r| r["end"] != "shutdown")
        .unwrap_or_else(|| panic!("{all:#?}"));
    assert_eq!(finished["end"], "vendor_closed", "{finished}");
    assert_eq!(finished["to_target"], 14, "ping + last words: {finished}");
    assert!(
        conns
            .iter()
            .any(|r| r["to_target"].as_u64().unwrap() > 1 << 20),
        "the busy connection's bytes are in its record: {conns:#?}"
    );
    // The session's end comes after its connections' ends.
    let session_end = all
        .iter()
        .position(|r| r["kind"] == "session" && r["event"] == "ended")
        .unwrap_or_else(|| panic!("no session end: {all:#?}"));
    let last_conn = all.iter().rposition(|r| r["kind"] == "connection").unwrap();
    assert!(session_end > last_conn, "{all:#?}");

    let out = std::process::Command::new(env!("CARGO_BIN_EXE_agent"))
        .args(["-c", config.to_str().unwrap(), "audit", "verify"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(
        text.contains(&format!("ok: {} record(s)", all.len())),
        "{text}"
    );
}
