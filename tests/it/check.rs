//! `agent check` through the binary, against the real OpenSSH sshd and local targets started by
//! each test on 127.0.0.1: every step's PASS and FAIL path, exit codes 0/1/2, the JSON shape and
//! the first-contact mode `agent check HOST:PORT`.

use crate::support;
use crate::support::upstream::token_hash;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::support::inproc::{Fwd, config_yaml, start_agent};
use crate::support::sshd::Sshd;
use crate::support::targets;
use serde_json::Value;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;

/// Upper bound for one `agent check` run in these tests (each uses --timeout 2s).
const RUN_BOUND: Duration = Duration::from_secs(60);
const WRONG_PIN: &str = "SHA256:nThbg6kXUpJWGl7E1IGOCspRomTxdCARLviKw6E5SY8";

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
    /// Writes agent.yaml for `ports`, pinned to `pin`, and returns its path.
    fn config(&self, ports: &[u16], pin: &str, forwards: &[Fwd]) -> PathBuf {
        let yaml = config_yaml(ports, pin, &self.sshd.user(), &self.key, forwards, "");
        let path = self.dir.path().join("agent.yaml");
        std::fs::write(&path, yaml).unwrap();
        path
    }

    fn good_config(&self, forwards: &[Fwd]) -> PathBuf {
        self.config(&[self.sshd.port], &self.sshd.host_key_fingerprint, forwards)
    }

    /// [`Self::good_config`] with each forward marked `tls: true` (a TLS target on a port other
    /// than 443 is probed only when marked).
    fn good_config_tls(&self, forwards: &[Fwd]) -> PathBuf {
        let config = self.good_config(forwards);
        let text = std::fs::read_to_string(&config).unwrap();
        let marked: String = text
            .lines()
            .map(|l| match l.contains("target:") {
                true => format!("{}, tls: true }}\n", l.trim_end_matches(" }")),
                false => format!("{l}\n"),
            })
            .collect();
        assert_ne!(text, marked, "{text}");
        std::fs::write(&config, marked).unwrap();
        config
    }
}

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
    took: Duration,
}

impl Run {
    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}):\n{}", self.stdout))
    }
}

/// Runs the binary with `args`, bounded by [`RUN_BOUND`].
async fn agent(args: &[&str]) -> Run {
    let started = Instant::now();
    let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_agent"))
        .args(args)
        .env_remove("AGENT_CONFIG")
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(RUN_BOUND, child)
        .await
        .expect("agent did not finish in time")
        .expect("run agent");
    Run {
        code: out.status.code().expect("exit code"),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        took: started.elapsed(),
    }
}

/// `agent check -c CONFIG --timeout 2s --json`.
async fn check_json(config: &Path) -> (i32, Value) {
    let run = agent(&[
        "check",
        "-c",
        config.to_str().unwrap(),
        "--timeout",
        "2s",
        "--json",
    ])
    .await;
    let json = run.json();
    (run.code, json)
}

fn rows<'a>(report: &'a Value, step: &str) -> Vec<&'a Value> {
    report["rows"]
        .as_array()
        .expect("rows array")
        .iter()
        .filter(|r| r["step"] == step)
        .collect()
}

/// The only row of `step` (panics, showing the report, if there is not exactly one).
fn row<'a>(report: &'a Value, step: &str) -> &'a Value {
    let found = rows(report, step);
    assert_eq!(found.len(), 1, "expected one {step} row in {report:#}");
    found[0]
}

fn status(r: &Value) -> &str {
    r["status"].as_str().unwrap_or("?")
}

fn detail(r: &Value) -> &str {
    r["detail"].as_str().unwrap_or("")
}

fn fix(r: &Value) -> &str {
    r["fix"].as_str().unwrap_or("")
}

fn assert_status(r: &Value, expected: &str) {
    assert_eq!(status(r), expected, "row: {r:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_step_passes_against_openssh_and_the_json_is_stable() {
    let s = setup();
    let (http, _http) = targets::http_hello("hi").await;
    let remote = support::free_port();
    let config = s.good_config(&[Fwd("web", remote, http)]);
    let (code, report) = check_json(&config).await;
    assert_eq!(code, 0, "{report:#}");
    assert_eq!(report["status"], "PASS", "{report:#}");
    assert_eq!(report["exit_code"], 0);
    assert_eq!(report["config"], config.to_str().unwrap());
    assert_eq!(report["timeout_ms"], 2000);

    // Every row has exactly the documented fields, with the documented types.
    for r in report["rows"].as_array().unwrap() {
        let mut keys: Vec<&str> = r.as_object().unwrap().keys().map(|k| k.as_str()).collect();
        keys.sort_unstable();
        assert_eq!(
            keys,
            ["detail", "duration_ms", "fix", "status", "step", "target"],
            "{r:#}"
        );
        assert!(r["duration_ms"].is_u64() && r["step"].is_string() && r["target"].is_string());
        assert!(
            ["PASS", "WARN", "FAIL", "SKIP"].contains(&status(r)),
            "{r:#}"
        );
        assert!(r["fix"].is_null() || r["fix"].is_string());
    }
    let steps: Vec<&str> = report["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["step"].as_str().unwrap())
        .collect();
    assert_eq!(
        steps,
        [
            "config", "identity", "proxy", "dns", "tcp", "ssh", "host-key", "auth", "forward",
            "dns", "target"
        ],
        "{report:#}"
    );
    for r in report["rows"].as_array().unwrap() {
        assert_status(r, "PASS");
    }

    let identity = agent::ssh::keys::load_identity(&s.key).unwrap();
    assert!(
        detail(row(&report, "identity")).contains(&identity.fingerprint()),
        "{report:#}"
    );
    assert!(
        detail(row(&report, "ssh")).contains("SSH-2.0-OpenSSH"),
        "{report:#}"
    );
    assert!(detail(row(&report, "host-key")).contains(&s.sshd.host_key_fingerprint));
    assert!(detail(row(&report, "auth")).contains(&identity.fingerprint()));
    assert!(
        detail(row(&report, "target")).contains("TLS not probed"),
        "{report:#}"
    );
    let offered = &report["offered_host_keys"][0];
    assert_eq!(offered["fingerprint"], s.sshd.host_key_fingerprint.as_str());
    assert_eq!(offered["key"], s.sshd.host_key_line.as_str());
    assert_eq!(offered["trusted"], true);

    // The trial forward was cancelled at once (sshd logged the cancel request, not just the
    // disconnect), and the port is free on the server again.
    let log = s.sshd.log();
    assert!(
        log.contains("rtype tcpip-forward") && log.contains("rtype cancel-tcpip-forward"),
        "no forward request and cancel in the sshd log:\n{log}"
    );
    TcpListener::bind(("127.0.0.1", remote))
        .await
        .expect("trial forward still holds the remote port after the check");

    // The table says the same, one line per step.
    let run = agent(&["check", "-c", config.to_str().unwrap(), "--timeout", "2s"]).await;
    assert_eq!(run.code, 0, "{}", run.stdout);
    assert!(run.stdout.contains("PASS  auth"), "{}", run.stdout);
    assert!(
        run.stdout.contains("0 failed, 0 warnings, 11 passed"),
        "{}",
        run.stdout
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_port_warns_when_another_works_and_fails_when_none_does() {
    let s = setup();
    let (http, _http) = targets::http_hello("hi").await;
    let closed = targets::closed_port();
    let forwards = [Fwd("web", support::free_port(), http)];

    let config = s.config(
        &[closed, s.sshd.port],
        &s.sshd.host_key_fingerprint,
        &forwards,
    );
    let (code, report) = check_json(&config).await;
    assert_eq!(code, 0, "{report:#}");
    let tcp = rows(&report, "tcp");
    assert_eq!(tcp.len(), 2, "{report:#}");
    assert_status(tcp[0], "WARN");
    assert!(
        detail(tcp[0]).contains(&format!("port {} works", s.sshd.port)),
        "{report:#}"
    );
    assert!(
        fix(tcp[0]).contains(&format!("port {}", s.sshd.port)),
        "{report:#}"
    );
    assert_status(tcp[1], "PASS");
    assert_status(row(&report, "auth"), "PASS");

    let config = s.config(&[closed], &s.sshd.host_key_fingerprint, &forwards);
    let (code, report) = check_json(&config).await;
    assert_eq!(code, 1, "{report:#}");
    assert_status(row(&report, "tcp"), "FAIL");
    assert!(fix(row(&report, "tcp")).contains("refused"), "{report:#}");
    assert!(rows(&report, "ssh").is_empty(), "{report:#}");
    assert_status(row(&report, "auth"), "SKIP");
    assert_status(row(&report, "forward"), "SKIP");
    // The targets are still checked.
    assert_status(row(&report, "target"), "PASS");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_port_fails_within_the_timeout() {
    let s = setup();
    let (silent, _silent) = targets::silent().await;
    let config = s.config(
        &[silent],
        &s.sshd.host_key_fingerprint,
        &[Fwd("web", 5000, 9)],
    );
    let run = agent(&[
        "check",
        "-c",
        config.to_str().unwrap(),
        "--timeout",
        "2s",
        "--json",
    ])
    .await;
    let report = run.json();
    assert_eq!(run.code, 1, "{report:#}");
    assert!(run.took < Duration::from_secs(10), "took {:?}", run.took);
    assert_status(row(&report, "tcp"), "PASS");
    let ssh = row(&report, "ssh");
    assert_status(ssh, "FAIL");
    assert!(detail(ssh).contains("no SSH banner within 2s"), "{ssh:#}");
    assert!(ssh["duration_ms"].as_u64().unwrap() >= 1900, "{ssh:#}");
    assert!(!fix(ssh).is_empty());
    assert_status(row(&report, "host-key"), "SKIP");
    assert_status(row(&report, "auth"), "SKIP");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_host_key_fails_and_still_shows_the_offered_fingerprint() {
    let s = setup();
    let forwards = [Fwd("web", support::free_port(), 9)];
    let config = s.config(&[s.sshd.port], WRONG_PIN, &forwards);
    let (code, report) = check_json(&config).await;
    assert_eq!(code, 1, "{report:#}");
    let hk = row(&report, "host-key");
    assert_status(hk, "FAIL");
    assert!(
        detail(hk).contains(&s.sshd.host_key_fingerprint) && detail(hk).contains(WRONG_PIN),
        "{hk:#}"
    );
    assert!(fix(hk).contains("server.host_keys"), "{hk:#}");
    assert_status(row(&report, "ssh"), "PASS");
    // Never log in to a server that is not verified.
    assert_status(row(&report, "auth"), "SKIP");
    assert_status(row(&report, "forward"), "SKIP");
    assert_eq!(
        report["offered_host_keys"][0]["fingerprint"],
        s.sshd.host_key_fingerprint.as_str()
    );
    assert!(
        !s.sshd.log().contains("Accepted publickey"),
        "the check authenticated to an untrusted server"
    );

    let run = agent(&["check", "-c", config.to_str().unwrap(), "--timeout", "2s"]).await;
    assert_eq!(run.code, 1);
    assert!(
        run.stdout
            .contains(&format!("- \"{}\"", s.sshd.host_key_fingerprint)),
        "no line to paste:\n{}",
        run.stdout
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn known_hosts_entries_trust_revoked_lines_refuse_and_ca_lines_are_named() {
    let s = setup();
    let forwards = [Fwd("web", support::free_port(), 9)];
    let config = s.good_config(&forwards);
    let yaml = std::fs::read_to_string(&config).unwrap();
    let kh = s.dir.path().join("known_hosts");
    let line = &s.sshd.host_key_line;
    let host = format!("[127.0.0.1]:{}", s.sshd.port);
    // agent.yaml pinning `pin` and naming known_hosts holding `text`.
    let with = |pin: &str, text: &str| {
        std::fs::write(&kh, text).unwrap();
        let pinned = format!("  host_keys: [\"{}\"]\n", s.sshd.host_key_fingerprint);
        assert!(yaml.contains(&pinned), "{yaml}");
        let yaml = yaml.replace(
            &pinned,
            &format!(
                "  host_keys: [\"{pin}\"]\n  known_hosts: {}\n",
                kh.display()
            ),
        );
        std::fs::write(&config, yaml).unwrap();
    };

    // A hashed entry, as OpenSSH's own `ssh-keygen -H` writes it, trusts the server.
    with(WRONG_PIN, &format!("# vendor\n{host} {line}\n"));
    let hashed = std::process::Command::new("ssh-keygen")
        .args(["-H", "-f"])
        .arg(&kh)
        .output()
        .unwrap();
    assert!(hashed.status.success(), "{hashed:?}");
    assert!(std::fs::read_to_string(&kh).unwrap().contains("|1|"));
    let (_, report) = check_json(&config).await;
    assert_status(row(&report, "host-key"), "PASS");
    assert_status(row(&report, "auth"), "PASS");

    // @cert-authority is said to be unused, not skipped silently.
    with(
        WRONG_PIN,
        &format!("{host} {line}\n@cert-authority * {line}\n"),
    );
    let (_, report) = check_json(&config).await;
    let hk = row(&report, "host-key");
    assert_status(hk, "WARN");
    assert!(
        detail(hk).contains("known_hosts line 2: @cert-authority")
            && detail(hk).contains("not supported"),
        "{hk:#}"
    );

    // @revoked refuses the key although agent.yaml pins it; nothing logs in.
    let logins = s.sshd.log().matches("Accepted publickey").count();
    with(
        &s.sshd.host_key_fingerprint,
        &format!("{host} {line}\n@revoked * {line}\n"),
    );
    let (code, report) = check_json(&config).await;
    assert_eq!(code, 1, "{report:#}");
    let hk = row(&report, "host-key");
    assert_status(hk, "FAIL");
    assert!(
        detail(hk).contains("revoked: ") && detail(hk).contains("known_hosts line 2"),
        "{hk:#}"
    );
    assert!(
        detail(hk).contains("although server.host_keys pins it"),
        "{hk:#}"
    );
    assert!(fix(hk).contains("current key"), "{hk:#}");
    assert_status(row(&report, "auth"), "SKIP");

    // A malformed file is an error naming file and line, even with a matching pin.
    with(
        &s.sshd.host_key_fingerprint,
        &format!("{host} {line}\n127.0.0.1 ssh-ed25519\n"),
    );
    let (_, report) = check_json(&config).await;
    let hk = row(&report, "host-key");
    assert_status(hk, "FAIL");
    assert!(
        detail(hk).contains(&format!("{} line 2: no key after", kh.display())),
        "{hk:#}"
    );
    assert!(fix(hk).contains("line 2 of"), "{hk:#}");
    assert_eq!(
        s.sshd.log().matches("Accepted publickey").count(),
        logins,
        "logged in to a server whose key was refused"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_the_server_does_not_know_fails_auth_with_its_fingerprint() {
    let s = setup();
    s.sshd.set_authorized_key(
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIN+Wjn4+4Fcvl2JlKpggT+wCRxpSvtqqpVrQrKN1/A22 other",
    );
    let config = s.good_config(&[Fwd("web", support::free_port(), 9)]);
    let (code, report) = check_json(&config).await;
    assert_eq!(code, 1, "{report:#}");
    assert_status(row(&report, "host-key"), "PASS");
    let auth = row(&report, "auth");
    assert_status(auth, "FAIL");
    let fp = agent::ssh::keys::load_identity(&s.key)
        .unwrap()
        .fingerprint();
    assert!(
        detail(auth).contains(&fp) && detail(auth).contains(&s.sshd.user()),
        "{auth:#}"
    );
    assert!(fix(auth).contains("public-key.pem"), "{auth:#}");
    assert_status(row(&report, "forward"), "SKIP");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_remote_port_held_on_the_server_fails_its_forward_only() {
    let s = setup();
    let (http, _http) = targets::http_hello("hi").await;
    let (held, free) = (support::free_port(), support::free_port());
    let _squatter = TcpListener::bind(("127.0.0.1", held)).await.unwrap();
    let config = s.good_config(&[Fwd("held", held, http), Fwd("free", free, http)]);
    let (code, report) = check_json(&config).await;
    assert_eq!(code, 1, "{report:#}");
    let fw = rows(&report, "forward");
    assert_eq!(fw.len(), 2);
    assert_status(fw[0], "FAIL");
    assert!(
        detail(fw[0]).contains(&format!("127.0.0.1:{held}")),
        "{:#}",
        fw[0]
    );
    assert!(fix(fw[0]).contains("agent"), "{:#}", fw[0]);
    assert!(fix(fw[0]).contains(&held.to_string()), "{:#}", fw[0]);
    assert_status(fw[1], "PASS");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_agent_holding_the_port_is_named_and_not_disturbed() {
    let s = setup();
    let (echo, _echo) = targets::echo().await;
    let remote = support::free_port();
    let running = start_agent(
        s.dir.path(),
        &config_yaml(
            &[s.sshd.port],
            &s.sshd.host_key_fingerprint,
            &s.sshd.user(),
            &s.key,
            &[Fwd("echo", remote, echo)],
            "",
        ),
    );
    running.wait_ready(Duration::from_secs(20)).await;
    let (code, report) = check_json(&s.dir.path().join("agent.yaml")).await;
    assert_eq!(code, 1, "{report:#}");
    let fw = row(&report, "forward");
    assert_status(fw, "FAIL");
    assert!(fix(fw).contains("agent"), "{fw:#}");

    // When something answers at the config's admin.listen (as a local agent's endpoint does),
    // the refusal is explained by it: a warning, not a failure.
    let admin = support::fresh_tokio_listener();
    let yaml = std::fs::read_to_string(s.dir.path().join("agent.yaml"))
        .unwrap()
        .replace(
            "admin: { listen: \"off\" }",
            &format!("admin: {{ listen: \"{}\" }}", admin.local_addr().unwrap()),
        );
    let with_admin = s.dir.path().join("with-admin.yaml");
    std::fs::write(&with_admin, yaml).unwrap();
    let (code, report) = check_json(&with_admin).await;
    assert_eq!(code, 0, "{report:#}");
    let fw = row(&report, "forward");
    assert_status(fw, "WARN");
    assert!(
        detail(fw).contains("an agent is running on this machine"),
        "{fw:#}"
    );

    // The running agent still serves the port.
    assert!(running.snapshot().ready());
    support::inproc::echo_exact(remote, 4096, 3, Duration::from_secs(10))
        .await
        .unwrap();
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_target_that_is_down_fails_with_a_fix() {
    let s = setup();
    let down = targets::closed_port();
    let config = s.good_config(&[Fwd("jira", support::free_port(), down)]);
    let (code, report) = check_json(&config).await;
    assert_eq!(code, 1, "{report:#}");
    let t = row(&report, "target");
    assert_status(t, "FAIL");
    assert!(detail(t).contains("cannot connect"), "{t:#}");
    assert!(fix(t).contains(&format!("127.0.0.1:{down}")), "{t:#}");
    // The forward itself is fine; only the target is down.
    assert_status(row(&report, "forward"), "PASS");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_plain_target_is_tcp_ok_not_tls_within_a_short_bound() {
    let s = setup();
    let (silent, _silent) = targets::silent().await;
    let config = s.good_config_tls(&[Fwd("db", support::free_port(), silent)]);
    let run = agent(&["check", "-c", config.to_str().unwrap(), "--json"]).await;
    let report = run.json();
    assert_eq!(run.code, 0, "{report:#}");
    let t = row(&report, "target");
    assert_status(t, "PASS");
    assert!(detail(t).contains("not TLS"), "{t:#}");
    assert!(rows(&report, "tls").is_empty(), "{report:#}");
    // Default --timeout is 10s; the TLS wait is bounded shorter.
    assert!(run.took < Duration::from_secs(9), "took {:?}", run.took);
}

/// Makes a self-signed certificate with openssl (`days` may be -1 for an expired one).
fn make_cert(dir: &Path, name: &str, days: i32) -> (PathBuf, PathBuf) {
    let key = dir.join(format!("{name}-key.pem"));
    let cert = dir.join(format!("{name}-cert.pem"));
    let ok = if days > 0 {
        std::process::Command::new("openssl")
            .args([
                "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=test",
            ])
            .args(["-days", &days.to_string(), "-keyout"])
            .arg(&key)
            .arg("-out")
            .arg(&cert)
            .output()
            .expect("run openssl")
            .status
            .success()
    } else {
        let csr = dir.join(format!("{name}.csr"));
        let a = std::process::Command::new("openssl")
            .args([
                "req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=test", "-keyout",
            ])
            .arg(&key)
            .arg("-out")
            .arg(&csr)
            .output()
            .expect("run openssl");
        // An extension makes it X.509 v3, which rustls requires of a server certificate.
        let ext = dir.join(format!("{name}.ext"));
        std::fs::write(&ext, "basicConstraints=CA:FALSE\n").unwrap();
        let b = std::process::Command::new("openssl")
            .args(["x509", "-req", "-days", &days.to_string(), "-extfile"])
            .arg(&ext)
            .arg("-in")
            .arg(&csr)
            .arg("-signkey")
            .arg(&key)
            .arg("-out")
            .arg(&cert)
            .output()
            .expect("run openssl");
        a.status.success() && b.status.success()
    };
    assert!(ok, "openssl could not make a test certificate");
    (cert, key)
}

/// A TLS service on 127.0.0.1 answering every connection with a short HTTP response.
async fn tls_target(cert: &Path, key: &Path) -> (u16, AbortOnDrop) {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs = vec![CertificateDer::from_pem_file(cert).unwrap()];
    let key = PrivateKeyDer::from_pem_file(key).unwrap();
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = support::fresh_tokio_listener();
    let port = listener.local_addr().unwrap().port();
    let task = tokio::spawn(async move {
        let mut conns = tokio::task::JoinSet::new();
        for _ in 0..100 {
            let Ok((tcp, _)) = listener.accept().await else {
                break;
            };
            let acceptor = acceptor.clone();
            conns.spawn(async move {
                let accept = acceptor.accept(tcp);
                if let Ok(Ok(mut tls)) = tokio::time::timeout(Duration::from_secs(5), accept).await
                {
                    let _ = tls
                        .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
                        .await;
                    let _ = tls.shutdown().await;
                }
            });
        }
    });
    (port, AbortOnDrop(task))
}

/// Stops a test service when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A target that records the first bytes of each connection (up to 5, for 3 s).
async fn recording_target() -> (
    u16,
    tokio::sync::mpsc::UnboundedReceiver<Vec<u8>>,
    AbortOnDrop,
) {
    use tokio::io::AsyncReadExt;
    let listener = support::fresh_tokio_listener();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let task = tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut first = vec![0u8; 5];
                let read = tokio::time::timeout(Duration::from_secs(3), conn.read(&mut first));
                let n = read.await.ok().and_then(Result::ok).unwrap_or(0);
                first.truncate(n);
                let _ = tx.send(first);
            });
        }
    });
    (port, rx, AbortOnDrop(task))
}

/// A plain service (not on 443) gets no ClientHello from `agent check`, which would reach its log
/// as a garbage request on every run; the same service marked `tls: true` is probed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_a_target_marked_tls_or_on_443_gets_a_client_hello() {
    let s = setup();
    let (plain, mut seen, _plain) = recording_target().await;
    let config = s.good_config(&[Fwd("web", support::free_port(), plain)]);
    let (code, report) = check_json(&config).await;
    assert_eq!(code, 0, "{report:#}");
    assert!(
        detail(row(&report, "target")).contains("TLS not probed"),
        "{report:#}"
    );
    assert!(rows(&report, "tls").is_empty(), "{report:#}");
    let first = seen.recv().await.expect("agent check connected");
    assert!(first.is_empty(), "a plain target was sent {first:?}");

    let config = s.good_config_tls(&[Fwd("web", support::free_port(), plain)]);
    let (code, report) = check_json(&config).await;
    assert_eq!(code, 0, "{report:#}");
    let first = seen.recv().await.expect("agent check connected");
    // A TLS handshake record (0x16), version 3.x: a ClientHello.
    assert_eq!(first.get(..2), Some(&[0x16, 0x03][..]), "{report:#}");
    assert!(
        detail(row(&report, "target")).contains("not TLS"),
        "{report:#}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_self_signed_tls_target_warns_and_an_expired_one_fails() {
    let s = setup();
    let (cert, key) = make_cert(s.dir.path(), "fresh", 30);
    let (fresh, _fresh) = tls_target(&cert, &key).await;
    let config = s.good_config_tls(&[Fwd("gitlab", support::free_port(), fresh)]);
    let (code, report) = check_json(&config).await;
    assert_eq!(
        code, 0,
        "a self-signed certificate is a warning, not a failure: {report:#}"
    );
    assert_eq!(report["status"], "WARN");
    assert_status(row(&report, "target"), "PASS");
    let tls = row(&report, "tls");
    assert_status(tls, "WARN");
    let d = detail(tls);
    assert!(
        d.contains("self-signed") && d.contains("CN=test") && d.contains("TLS 1.3"),
        "{tls:#}"
    );
    assert!(
        d.contains("(29 days)") || d.contains("(30 days)"),
        "{tls:#}"
    );
    assert!(!d.contains("EXPIRED"), "{tls:#}");
    assert!(fix(tls).contains("trust"), "{tls:#}");

    let (cert, key) = make_cert(s.dir.path(), "old", -1);
    let (old, _old) = tls_target(&cert, &key).await;
    let config = s.good_config_tls(&[Fwd("gitlab", support::free_port(), old)]);
    let (code, report) = check_json(&config).await;
    assert_eq!(code, 1, "{report:#}");
    let tls = row(&report, "tls");
    assert_status(tls, "FAIL");
    assert!(detail(tls).contains("EXPIRED"), "{tls:#}");
    assert!(fix(tls).contains("renew"), "{tls:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_contact_needs_no_config_and_prints_the_pin() {
    let s = setup();
    let dir = tempfile::tempdir().unwrap();
    let host = format!("127.0.0.1:{}", s.sshd.port);
    // No agent.yaml anywhere: -c points at nothing, and it does not matter.
    let missing = dir.path().join("agent.yaml");
    let run = agent(&[
        "check",
        "-c",
        missing.to_str().unwrap(),
        "--timeout",
        "2s",
        &host,
    ])
    .await;
    assert_eq!(run.code, 0, "{}", run.stdout);
    assert!(run.stdout.contains("SSH-2.0-OpenSSH"), "{}", run.stdout);
    assert!(
        run.stdout
            .contains(&format!("- \"{}\"", s.sshd.host_key_fingerprint)),
        "{}",
        run.stdout
    );
    assert!(!run.stdout.contains("auth"), "{}", run.stdout);

    let run = agent(&["check", "--timeout", "2s", "--json", &host]).await;
    let report = run.json();
    assert_eq!(run.code, 0, "{report:#}");
    assert!(report["config"].is_null());
    assert_status(row(&report, "host-key"), "PASS");
    assert_eq!(
        report["offered_host_keys"][0]["key"],
        s.sshd.host_key_line.as_str()
    );

    let closed = format!("127.0.0.1:{}", targets::closed_port());
    let run = agent(&["check", "--timeout", "2s", &closed]).await;
    assert_eq!(run.code, 1, "{}", run.stdout);
    let run = agent(&["check", "http://x/"]).await;
    assert_eq!(run.code, 2, "{}", run.stdout);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_config_lists_every_problem_exits_2_and_still_probes_the_server() {
    let s = setup();
    let yaml = format!(
        "server:\n  host: 127.0.0.1\n  ports: [{}]\n  user: {}\n  host_keys: [\"{}\"]\n  hostkeys: x\nidentity: {}\nforwards:\n  - {{ name: Bad_Name, remote: 5000, target: \"http://jira\" }}\n",
        s.sshd.port,
        s.sshd.user(),
        s.sshd.host_key_fingerprint,
        s.key.display()
    );
    let config = s.dir.path().join("agent.yaml");
    std::fs::write(&config, yaml).unwrap();
    let (code, report) = check_json(&config).await;
    assert_eq!(code, 2, "{report:#}");
    assert_eq!(report["exit_code"], 2);
    let problems = rows(&report, "config");
    assert!(!problems.is_empty(), "{report:#}");
    for p in &problems {
        assert_status(p, "FAIL");
        assert!(!fix(p).is_empty(), "{p:#}");
    }
    // What does not depend on the broken parts still runs.
    assert_status(row(&report, "identity"), "PASS");
    assert_status(row(&report, "tcp"), "PASS");
    assert_status(row(&report, "host-key"), "PASS");

    // Validation errors (not YAML errors): every one of them is a row.
    let yaml = format!(
        "server:\n  host: 127.0.0.1\n  ports: [{}]\n  host_keys: [\"SHA256:nope\"]\nforwards:\n  - {{ name: Bad_Name, remote: 5000, target: \"http://jira\" }}\n",
        s.sshd.port
    );
    std::fs::write(&config, yaml).unwrap();
    let (code, report) = check_json(&config).await;
    assert_eq!(code, 2, "{report:#}");
    let problems = rows(&report, "config");
    assert!(
        problems.len() >= 4,
        "user, host_keys, name, target: {report:#}"
    );
    let targets: Vec<&str> = problems
        .iter()
        .filter_map(|p| p["target"].as_str())
        .collect();
    assert!(
        targets.iter().any(|t| t.ends_with("server.user")),
        "{targets:?}"
    );
    assert!(
        targets.iter().any(|t| t.contains("host_keys")),
        "{targets:?}"
    );

    let run = agent(&[
        "check",
        "-c",
        s.dir.path().join("nope.yaml").to_str().unwrap(),
    ])
    .await;
    assert_eq!(run.code, 2, "{}", run.stdout);
    assert!(run.stdout.contains("FAIL  config"), "{}", run.stdout);
}

/// The problems `agent -c FILE run` prints, each with its fix line if it has one.
async fn problems_agent_run_prints(config: &Path) -> Vec<(String, Option<String>)> {
    let run = agent(&["-c", config.to_str().unwrap(), "run"]).await;
    let stderr = &run.stderr;
    assert_eq!(run.code, 2, "{stderr}");
    let mut lines = stderr.lines();
    assert_eq!(
        lines.next(),
        Some("error: invalid configuration"),
        "{stderr}"
    );
    let mut problems: Vec<(String, Option<String>)> = Vec::new();
    for line in lines {
        match (line.strip_prefix("  fix: "), problems.last_mut()) {
            (Some(fix), Some(last)) => last.1 = Some(fix.to_string()),
            _ => problems.push((line.to_string(), None)),
        }
    }
    problems
}

/// `agent check` and `agent run` read a config through one validator: the config rows are the
/// problems `agent run` prints, message for message, whatever kind of mistake it is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_config_rows_are_the_problems_agent_run_prints() {
    let dir = tempfile::tempdir().unwrap();
    let closed = targets::closed_port();
    let file = dir.path().join("agent.yaml");
    let cases = [
        // A misspelt field, and what validation finds besides (user, forwards).
        format!(
            "server:\n  host: 127.0.0.1\n  ports: [{closed}]\n  user: u\n  hostkeys: x\nproxy: none\nforwards: []\n"
        ),
        // Validation: every problem, some without a fix of their own.
        format!(
            "server:\n  host: 127.0.0.1\n  ports: [{closed}, 0]\n  host_keys: [\"SHA256:nope\"]\nproxy: none\nforwards:\n  - {{ name: Bad_Name, remote: 5000, target: \"http://jira\" }}\nkeepalive: {{ interval: 15 }}\nlimits: {{ total_buffer: 1KiB }}\n"
        ),
        // Not YAML.
        "server: [\n".to_string(),
    ];
    for yaml in &cases {
        std::fs::write(&file, yaml).unwrap();
        let expected = problems_agent_run_prints(&file).await;
        let (code, report) = check_json(&file).await;
        assert_eq!(code, 2, "{report:#}");
        let got = rows(&report, "config");
        assert_eq!(got.len(), expected.len(), "{expected:#?}\n{report:#}");
        for (row, (line, run_fix)) in got.iter().zip(&expected) {
            assert_status(row, "FAIL");
            let shown = format!("{}: {}", row["target"].as_str().unwrap(), detail(row));
            assert_eq!(&shown, line, "{report:#}");
            if let Some(run_fix) = run_fix {
                assert_eq!(fix(row), run_fix, "{row:#}");
            }
        }
    }

    let missing = dir.path().join("nope.yaml");
    let expected = problems_agent_run_prints(&missing).await;
    let (code, report) = check_json(&missing).await;
    assert_eq!(code, 2, "{report:#}");
    let row = row(&report, "config");
    assert_eq!(
        format!("{}: {}", row["target"].as_str().unwrap(), detail(row)),
        expected[0].0
    );
    assert!(fix(row).contains("agent check HOST"), "{row:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_weak_or_exposed_identity_fails_but_the_network_steps_still_run() {
    let s = setup();
    let weak = s.dir.path().join("weak.pem");
    let out = std::process::Command::new("openssl")
        .args(["genrsa", "-out"])
        .arg(&weak)
        .arg("1024")
        .output()
        .unwrap();
    assert!(out.status.success());
    set_mode(&weak, 0o400);
    let yaml = config_yaml(
        &[s.sshd.port],
        &s.sshd.host_key_fingerprint,
        &s.sshd.user(),
        &weak,
        &[Fwd("web", 5000, 9)],
        "",
    );
    let config = s.dir.path().join("weak.yaml");
    std::fs::write(&config, yaml).unwrap();
    let (code, report) = check_json(&config).await;
    assert_eq!(code, 1, "{report:#}");
    let id = row(&report, "identity");
    assert_status(id, "FAIL");
    assert!(
        detail(id).contains("RSA 1024") && detail(id).contains("SHA256:"),
        "{id:#}"
    );
    assert!(fix(id).contains("agent keygen"), "{id:#}");

    // Readable by others: FAIL with the chmod to run; the server is still probed.
    set_mode(&s.key, 0o644);
    let (code, report) = check_json(&s.good_config(&[Fwd("web", 5000, 9)])).await;
    assert_eq!(code, 1, "{report:#}");
    let id = row(&report, "identity");
    assert_status(id, "FAIL");
    assert!(fix(id).contains("chmod 400"), "{id:#}");
    assert_status(row(&report, "host-key"), "PASS");
    assert_status(row(&report, "auth"), "SKIP");
}

/// The identity and config rows follow `agent run`'s rules without a server: a closed port is
/// enough (the network rows fail; only these rows are looked at).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_ownership_and_a_readable_proxy_password_show_as_agent_run_sees_them() {
    let dir = tempfile::tempdir().unwrap();
    let (key, _) = support::agent_key(dir.path());
    let closed = support::free_port();
    let config = dir.path().join("agent.yaml");
    let write = |extra: &str, mode: u32| {
        let yaml = config_yaml(
            &[closed],
            WRONG_PIN,
            "acme",
            &key,
            &[Fwd("web", 5000, closed)],
            extra,
        );
        std::fs::write(&config, yaml).unwrap();
        set_mode(&config, mode);
    };

    // The agent's own key, group-readable: FAIL, as `agent run` refuses it.
    write("", 0o600);
    set_mode(&key, 0o440);
    let (_, report) = check_json(&config).await;
    let id = row(&report, "identity");
    assert_status(id, "FAIL");
    assert!(detail(id).contains("mode 0440"), "{id:#}");
    assert_eq!(fix(id), format!("chmod 400 {}", key.display()), "{id:#}");
    assert_eq!(rows(&report, "config").len(), 1, "{report:#}");
    assert_status(row(&report, "config"), "PASS");

    // Owned by another user: private to that user, PASS with owner and mode shown; readable
    // by its group or by others (which OpenSSH let through), FAIL with the chown to run.
    assert_eq!(
        agent::sys::real_uid(),
        0,
        "this test gives the key another owner: run it as root (CI does)"
    );
    std::os::unix::fs::chown(&key, Some(65532), Some(65532)).unwrap();
    set_mode(&key, 0o400);
    let (_, report) = check_json(&config).await;
    let id = row(&report, "identity");
    assert_status(id, "PASS");
    assert!(
        detail(id).contains("mode 0400, owned by uid 65532"),
        "{id:#}"
    );
    for mode in [0o666, 0o440] {
        set_mode(&key, mode);
        let (_, report) = check_json(&config).await;
        let id = row(&report, "identity");
        assert_status(id, "FAIL");
        assert!(
            detail(id).contains(&format!("(mode {mode:04o}, owned by uid 65532")),
            "{id:#}"
        );
        assert!(
            fix(id).contains(&format!("chown 0 {}", key.display())),
            "{id:#}"
        );
    }

    // A proxy password in a file others can read: a WARN row on the config step, with the fix.
    let proxy = format!("proxy: http://svc-agent:hunter2@127.0.0.1:{closed}\n");
    write(&proxy, 0o644);
    let (_, report) = check_json(&config).await;
    let config_rows = rows(&report, "config");
    assert_eq!(config_rows.len(), 2, "{report:#}");
    assert_status(config_rows[0], "PASS");
    let warn = config_rows[1];
    assert_status(warn, "WARN");
    assert_eq!(warn["target"], format!("{}: proxy", config.display()));
    assert!(
        detail(warn).contains("proxy password") && detail(warn).contains("mode 0644"),
        "{warn:#}"
    );
    assert_eq!(fix(warn), format!("chmod 600 {}", config.display()));
    assert!(!report.to_string().contains("hunter2"), "{report:#}");

    write(&proxy, 0o600);
    let (_, report) = check_json(&config).await;
    assert_eq!(rows(&report, "config").len(), 1, "{report:#}");
    assert_status(row(&report, "config"), "PASS");
}

fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// Runs `sh pre-launch-check.sh ARGS` in `cwd` with `env`; returns (exit code, stdout).
async fn wrapper(script: &Path, cwd: &Path, env: &[(&str, &str)], args: &[&str]) -> (i32, String) {
    let mut cmd = tokio::process::Command::new("/bin/sh");
    cmd.arg(script)
        .args(args)
        .current_dir(cwd)
        .env_remove("AGENT_BIN")
        .env_remove("AGENT_IMAGE")
        .env_remove("AGENT_CONFIG")
        .kill_on_drop(true);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = tokio::time::timeout(RUN_BOUND, cmd.output())
        .await
        .expect("wrapper did not finish in time")
        .expect("run sh");
    (
        out.status.code().expect("exit code"),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_wrapper_script_passes_exit_codes_through_and_falls_back_to_the_image() {
    let s = setup();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("pre-launch-check.sh");
    let bin = [("AGENT_BIN", env!("CARGO_BIN_EXE_agent"))];
    let cwd = s.dir.path();
    let server = format!("127.0.0.1:{}", s.sshd.port);
    let (code, out) = wrapper(&script, cwd, &bin, &["--timeout", "2s", &server]).await;
    assert_eq!(code, 0, "{out}");
    assert!(out.contains(&s.sshd.host_key_fingerprint), "{out}");
    let closed = format!("127.0.0.1:{}", targets::closed_port());
    let (code, out) = wrapper(&script, cwd, &bin, &["--timeout", "2s", &closed]).await;
    assert_eq!(code, 1, "{out}");
    let (code, out) = wrapper(&script, cwd, &bin, &["-c", "missing.yaml"]).await;
    assert_eq!(code, 2, "{out}");

    // No binary beside the script nor on PATH: the image runs, with a stand-in for podman
    // that prints its arguments and exits 3.
    let work = cwd.join("work");
    let fake = cwd.join("fakebin");
    std::fs::create_dir_all(work.join("keys")).unwrap();
    std::fs::create_dir_all(&fake).unwrap();
    std::fs::write(work.join("agent.yaml"), "server: {}\n").unwrap();
    std::fs::copy(&script, work.join("pre-launch-check.sh")).unwrap();
    let podman = fake.join("podman");
    std::fs::write(&podman, "#!/bin/sh\necho \"podman $*\"\nexit 3\n").unwrap();
    set_mode(&podman, 0o755);
    let path = format!("{}:/usr/bin:/bin", fake.display());
    let (code, out) = wrapper(
        &work.join("pre-launch-check.sh"),
        &work,
        &[("PATH", &path)],
        &["--json"],
    )
    .await;
    assert_eq!(code, 3, "{out}");
    let w = work.display();
    assert_eq!(
        out.trim(),
        format!(
            "podman run --rm --pull=never --network host -v {w}/agent.yaml:/etc/agent/agent.yaml:ro,Z -v {w}/keys:/etc/agent/keys:ro,Z localhost/agent:latest check -c /etc/agent/agent.yaml --json"
        )
    );

    // An agent built beside the script wins over the image: the README's static build first,
    // then `cargo build --release`'s.
    for (dir, name) in [
        ("target/release", "plain"),
        ("target/x86_64-unknown-linux-gnu/release", "static"),
    ] {
        let bin = work.join(dir).join("agent");
        std::fs::create_dir_all(bin.parent().unwrap()).unwrap();
        std::fs::write(&bin, format!("#!/bin/sh\necho \"{name} $*\"\n")).unwrap();
        set_mode(&bin, 0o755);
        let (code, out) = wrapper(
            &work.join("pre-launch-check.sh"),
            &work,
            &[("PATH", &path)],
            &["--json"],
        )
        .await;
        assert_eq!(
            (code, out.trim()),
            (0, format!("{name} check --json").as_str())
        );
    }
}

/// A server with Ed25519, ECDSA and RSA host keys: `agent check HOST` lists all three with the
/// line to pin each; with only the RSA key pinned the host key passes and the check logs in, as
/// `agent run` would; a pin matching none fails naming all three.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_host_key_is_listed_with_its_pin_line_and_any_one_may_be_pinned() {
    let dir = tempfile::tempdir().unwrap();
    let (key, public) = support::agent_key(dir.path());
    let sshd = Sshd::start_with_host_keys(&public, "", &["ed25519", "ecdsa", "rsa"]);
    let host = format!("127.0.0.1:{}", sshd.port);

    let run = agent(&["check", "--timeout", "2s", &host]).await;
    assert_eq!(run.code, 0, "{}", run.stdout);
    for k in &sshd.host_keys {
        assert!(
            run.stdout.contains(&format!("- \"{}\"", k.fingerprint)),
            "no pin line for the {} key:\n{}",
            k.kind,
            run.stdout
        );
    }
    let run = agent(&["check", "--timeout", "2s", "--json", &host]).await;
    let report = run.json();
    let offered = report["offered_host_keys"].as_array().unwrap();
    assert_eq!(offered.len(), 3, "{report:#}");
    for k in &sshd.host_keys {
        assert!(
            offered
                .iter()
                .any(|o| o["fingerprint"] == k.fingerprint.as_str() && o["key"] == k.line.as_str()),
            "{} key missing: {report:#}",
            k.kind
        );
    }

    let rsa = sshd.host_keys.iter().find(|k| k.kind == "rsa").unwrap();
    let forwards = [Fwd("web", support::free_port(), 9)];
    let write = |pin: &str| {
        let yaml = config_yaml(&[sshd.port], pin, &sshd.user(), &key, &forwards, "");
        let path = dir.path().join("agent.yaml");
        std::fs::write(&path, yaml).unwrap();
        path
    };
    let (_, report) = check_json(&write(&rsa.fingerprint)).await;
    let hk = row(&report, "host-key");
    assert_status(hk, "PASS");
    assert!(
        detail(hk).starts_with(&format!("ssh-rsa {} is pinned", rsa.fingerprint)),
        "{hk:#}"
    );
    assert_status(row(&report, "auth"), "PASS");

    let (code, report) = check_json(&write(WRONG_PIN)).await;
    assert_eq!(code, 1, "{report:#}");
    let hk = row(&report, "host-key");
    assert_status(hk, "FAIL");
    for k in &sshd.host_keys {
        assert!(detail(hk).contains(&k.fingerprint), "{hk:#}");
    }
    assert_status(row(&report, "auth"), "SKIP");
}

/// The vendor's token of the HTTP and CONNECT forwards below, and the customer's secret the
/// HTTP forwards inject: no row of `agent check` may show the secret, nor its length.
const VENDOR_TOKEN: &str = "vendor-token-check-4Jm2Qx9Lr7Tz0Wc5Nb8Vd1Hk3Ps6Gy";
const SECRET: &str = "glpat-CHECK-SECRET-9q7f3k2m";

impl Setup {
    /// agent.yaml with `forwards` (YAML list entries) and `state_dir: state`; the secret in
    /// `gitlab-token` (mode 0600), which `SECRET_FILE` in `forwards` names.
    fn gateway_config(&self, forwards: &str) -> PathBuf {
        let secret = self.dir.path().join("gitlab-token");
        std::fs::write(&secret, format!("{SECRET}\n")).unwrap();
        set_mode(&secret, 0o600);
        let forwards = forwards
            .replace("SECRET_FILE", &secret.display().to_string())
            .replace("TOKEN_HASH", &token_hash(VENDOR_TOKEN));
        let mut yaml = config_yaml(
            &[self.sshd.port],
            &self.sshd.host_key_fingerprint,
            &self.sshd.user(),
            &self.key,
            &[],
            &forwards,
        );
        yaml.push_str(&format!(
            "state_dir: {}\n",
            self.dir.path().join("state").display()
        ));
        let path = self.dir.path().join("agent.yaml");
        std::fs::write(&path, yaml).unwrap();
        path
    }
}

/// Neither the secret nor its length in `text` (the table or the JSON document).
fn assert_no_secret(text: &str) {
    assert!(!text.contains(SECRET), "the secret is shown:\n{text}");
    for length in [SECRET.len(), SECRET.len() + 1] {
        assert!(
            !text.contains(&format!("{length} bytes")),
            "the secret's length is shown:\n{text}"
        );
    }
}

fn steps(report: &Value) -> Vec<&str> {
    report["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["step"].as_str().unwrap())
        .collect()
}

/// An HTTP forward is checked as its gateway reaches the upstream: TCP, TLS through the
/// forward's own CA, an answer to `HEAD /`, the injected header's source (never its value), the
/// rules, and with `listen_tls` the certificate the agent then serves; a CONNECT forward's
/// pair is dialed. No generic target rows for either.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http_forward_is_checked_as_its_gateway_reaches_the_upstream_without_showing_the_secret()
{
    use crate::support::upstream::{fingerprint, pem_certificate, recorder, served_certificate};
    let s = setup();
    let (ca, tls) = crate::support::upstream::test_pki(s.dir.path());
    let (port, seen, _up) = recorder(Some(tls)).await;
    let (plain, _plain) = targets::http_hello("hi").await;
    std::fs::write(
        s.dir.path().join("rules.yaml"),
        "allow:\n  - GET /api/v4/projects/**\n",
    )
    .unwrap();
    let gitlab = support::free_port();
    let config = s.gateway_config(&format!(
        "  - name: gitlab\n    remote: \"127.0.0.1:{gitlab}\"\n    http:\n      upstream: https://127.0.0.1:{port}\n      tls: {{ ca_file: {} }}\n      vendor_tokens: [\"TOKEN_HASH\"]\n      inject:\n        PRIVATE-TOKEN: {{ file: SECRET_FILE }}\n      allow: [\"GET /api/v4/projects\", \"HEAD /\"]\n      allow_file: rules.yaml\n      listen_tls: true\n  - name: egress\n    remote: \"127.0.0.1:{}\"\n    connect: {{ allow: [\"127.0.0.1:{plain}\"], vendor_tokens: [\"TOKEN_HASH\"] }}\n",
        ca.display(),
        support::free_port()
    ));
    let run = agent(&[
        "check",
        "-c",
        config.to_str().unwrap(),
        "--timeout",
        "2s",
        "--json",
    ])
    .await;
    assert_no_secret(&run.stdout);
    let report = run.json();
    assert_eq!(run.code, 0, "{report:#}");
    for r in report["rows"].as_array().unwrap() {
        assert_status(r, "PASS");
    }
    assert_eq!(
        steps(&report),
        [
            "config",
            "identity",
            "proxy",
            "dns",
            "tcp",
            "ssh",
            "host-key",
            "auth",
            "forward",
            "forward",
            "dns",
            "upstream",
            "tls",
            "http",
            "inject",
            "rules",
            "gateway-tls",
            "connect"
        ],
        "{report:#}"
    );
    let label = format!("gitlab (https://127.0.0.1:{port})");
    let upstream = row(&report, "upstream");
    assert_eq!(upstream["target"], label.as_str());
    assert!(
        detail(upstream).contains(&format!("TCP connect to 127.0.0.1:{port} ok")),
        "{upstream:#}"
    );
    let t = row(&report, "tls");
    assert_eq!(t["target"], label.as_str());
    assert!(
        detail(t).contains(&format!(
            "certificate trusted through the platform store + ca_file {}",
            ca.display()
        )) && detail(t).contains("Acme Internal Root"),
        "{t:#}"
    );
    let http = row(&report, "http");
    assert_eq!(
        detail(http),
        "HEAD / answered 200 OK (asked without the injected headers)"
    );
    // (What the upstream received is TLS here; the plain upstream of the next test shows it.)
    assert!(seen.connections() >= 1);
    let inject = row(&report, "inject");
    assert_eq!(inject["target"], "gitlab");
    assert!(
        detail(inject).starts_with(&format!(
            "PRIVATE-TOKEN from file {}: readable, not empty",
            s.dir.path().join("gitlab-token").display()
        )),
        "{inject:#}"
    );
    assert!(
        detail(row(&report, "rules")).starts_with("3 rules (allow + allow_file): valid"),
        "{report:#}"
    );
    let connect = row(&report, "connect");
    assert_eq!(
        connect["target"],
        format!("egress (127.0.0.1:{plain})").as_str()
    );
    assert!(
        detail(connect).contains(&format!("TCP connect to 127.0.0.1:{plain} ok")),
        "{connect:#}"
    );

    // The certificate the vendor pins: made now in the state folder, its fingerprint shown.
    let pem = s.dir.path().join("state/gateway-gitlab.pem");
    let made = fingerprint(&pem_certificate(&pem));
    let served = row(&report, "gateway-tls");
    assert!(
        detail(served).contains(&made) && detail(served).contains("made now"),
        "{served:#}\n{made}"
    );

    // Again, as a table: the same certificate, kept; still no secret.
    let run = agent(&["check", "-c", config.to_str().unwrap(), "--timeout", "2s"]).await;
    assert_eq!(run.code, 0, "{}", run.stdout);
    assert_no_secret(&run.stdout);
    let line = run
        .stdout
        .lines()
        .find(|l| l.contains("gateway-tls"))
        .unwrap_or_else(|| panic!("no gateway-tls row:\n{}", run.stdout));
    assert!(
        line.contains(&made) && line.contains("kept in"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains("PRIVATE-TOKEN from file")
            && run.stdout.contains("readable, not empty"),
        "{}",
        run.stdout
    );

    // The agent serves that very certificate to the vendor.
    let yaml = std::fs::read_to_string(&config).unwrap();
    let running = start_agent(s.dir.path(), &yaml);
    running.wait_ready(Duration::from_secs(20)).await;
    let leaf = served_certificate(gitlab, "gitlab.gateway.agent").await;
    assert_eq!(fingerprint(&leaf), made);
    running.stop().await;
}

/// A small upstream that answers every request `401 Unauthorized` (any status is an answer),
/// and keeps what it received.
async fn unauthorized_upstream() -> (u16, Arc<std::sync::Mutex<Vec<u8>>>, targets::Task) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let received = Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = received.clone();
    let task = tokio::spawn(async move {
        while let Ok((mut c, _)) = listener.accept().await {
            let log = log.clone();
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let n = tokio::io::AsyncReadExt::read(&mut c, &mut buf)
                    .await
                    .unwrap_or(0);
                log.lock().unwrap().extend_from_slice(&buf[..n]);
                let _ = c
                    .write_all(b"HTTP/1.1 401 Unauthorized\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                    .await;
            });
        }
    });
    (port, received, targets::Task::from(task))
}

/// Each way an upstream or an allowed pair can fail has its row and its fix: a certificate no
/// CA of the forward's trust issued (the issuer named), nothing listening, no answer to
/// `HEAD /`; the steps that could not run are skipped, and the rest of the forward is still
/// reported. `verify: false` still reaches the upstream, and any status is an answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_upstream_failure_has_its_row_and_fix() {
    use crate::support::upstream::recorder;
    let s = setup();
    let (_ca, tls) = crate::support::upstream::test_pki(s.dir.path());
    let (tls_port, _seen, _up) = recorder(Some(tls)).await;
    let (mute, _mute) = targets::silent().await;
    let (locked, locked_saw, _locked) = unauthorized_upstream().await;
    let (plain, _plain) = targets::http_hello("hi").await;
    let (down, down2) = (targets::closed_port(), targets::closed_port());
    let forward = |name: &str, http: &str| {
        format!(
            "  - name: {name}\n    remote: \"127.0.0.1:{}\"\n    http:\n      vendor_tokens: [\"TOKEN_HASH\"]\n      allow: [\"GET /\"]\n{http}",
            support::free_port()
        )
    };
    let forwards = [
        forward(
            "untrusted",
            &format!(
                "      upstream: https://127.0.0.1:{tls_port}\n      inject:\n        PRIVATE-TOKEN: {{ file: SECRET_FILE }}\n"
            ),
        ),
        forward(
            "down",
            &format!("      upstream: http://127.0.0.1:{down}\n"),
        ),
        forward(
            "mute",
            &format!("      upstream: http://127.0.0.1:{mute}\n"),
        ),
        forward(
            "insecure",
            &format!(
                "      upstream: https://127.0.0.1:{tls_port}\n      tls: {{ verify: false }}\n"
            ),
        ),
        forward(
            "locked",
            &format!(
                "      upstream: http://127.0.0.1:{locked}/app\n      inject:\n        PRIVATE-TOKEN: {{ file: SECRET_FILE }}\n"
            ),
        ),
        format!(
            "  - name: egress\n    remote: \"127.0.0.1:{}\"\n    connect: {{ allow: [\"127.0.0.1:{plain}\", \"127.0.0.1:{down2}\"], vendor_tokens: [\"TOKEN_HASH\"] }}\n",
            support::free_port()
        ),
    ];
    let config = s.gateway_config(&forwards.concat());
    let run = agent(&[
        "check",
        "-c",
        config.to_str().unwrap(),
        "--timeout",
        "2s",
        "--json",
    ])
    .await;
    assert_no_secret(&run.stdout);
    let report = run.json();
    assert_eq!(run.code, 1, "{report:#}");
    assert!(rows(&report, "target").is_empty(), "{report:#}");
    let of = |step: &str, forward: &str| -> Value {
        let found: Vec<&Value> = rows(&report, step)
            .into_iter()
            .filter(|r| {
                r["target"]
                    .as_str()
                    .is_some_and(|t| t == forward || t.starts_with(&format!("{forward} (")))
            })
            .collect();
        assert_eq!(found.len(), 1, "one {step} row of {forward}: {report:#}");
        found[0].clone()
    };

    // Untrusted: the issuer is named, the fix is the forward's ca_file; HEAD is not sent.
    assert_status(&of("upstream", "untrusted"), "PASS");
    let t = of("tls", "untrusted");
    assert_status(&t, "FAIL");
    assert!(detail(&t).contains("Acme Internal Root"), "{t:#}");
    assert!(fix(&t).contains("http.tls.ca_file"), "{t:#}");
    assert_status(&of("http", "untrusted"), "SKIP");
    // The rest of the forward is still reported.
    assert_status(&of("inject", "untrusted"), "PASS");
    assert_status(&of("rules", "untrusted"), "PASS");

    let d = of("upstream", "down");
    assert_status(&d, "FAIL");
    assert!(detail(&d).contains("cannot connect"), "{d:#}");
    assert!(
        fix(&d).contains(&format!("nothing listens at 127.0.0.1:{down}"))
            && fix(&d).contains("upstream of forward \"down\""),
        "{d:#}"
    );
    assert_status(&of("http", "down"), "SKIP");

    assert_status(&of("upstream", "mute"), "PASS");
    let m = of("http", "mute");
    assert_status(&m, "FAIL");
    assert!(
        detail(&m).contains("no answer to HEAD / within 2s"),
        "{m:#}"
    );

    let i = of("tls", "insecure");
    assert_status(&i, "PASS");
    assert!(detail(&i).contains("not verified (verify: false)"), "{i:#}");
    assert_status(&of("http", "insecure"), "PASS");
    // ... and the config's warning says what it costs.
    assert!(
        rows(&report, "config")
            .iter()
            .any(|r| status(r) == "WARN" && detail(r).contains("verify: false")),
        "{report:#}"
    );

    let l = of("http", "locked");
    assert_status(&l, "PASS");
    assert!(
        detail(&l).starts_with("HEAD /app/ answered 401 Unauthorized"),
        "{l:#}"
    );
    // Asked without the injected header: the check never sends the secret anywhere.
    let saw = String::from_utf8_lossy(&locked_saw.lock().unwrap()).into_owned();
    assert!(
        saw.starts_with(&format!(
            "HEAD /app/ HTTP/1.1\r\nHost: 127.0.0.1:{locked}\r\n"
        )),
        "{saw}"
    );
    assert!(
        !saw.contains(SECRET) && !saw.to_lowercase().contains("private-token"),
        "{saw}"
    );

    let pairs = rows(&report, "connect");
    assert_eq!(pairs.len(), 2, "{report:#}");
    assert_status(pairs[0], "PASS");
    assert_eq!(
        pairs[1]["target"],
        format!("egress (127.0.0.1:{down2})").as_str()
    );
    assert_status(pairs[1], "FAIL");
    assert!(
        fix(pairs[1]).contains(&format!("nothing listens at 127.0.0.1:{down2}")),
        "{:#}",
        pairs[1]
    );
}
