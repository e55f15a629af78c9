//! `server.transports` against real programs on loopback: the vendor's OpenSSH sshd behind
//! websockify (`wss://`) and behind stunnel4 (`tls://`), reached directly, through squid
//! (`http://` CONNECT, `https://` proxy, and ssl-bump with the test's own CA) and through
//! microsocks (SOCKS5); a first rung that accepts TCP and never speaks; a certificate from an
//! untrusted CA, and one for another name; a wrong host-key pin on every path (tls, wss, tls
//! with `verify: false`, through a proxy); `agent check` over the rungs. Each program is started
//! by its test with its own config in a temp dir and killed by PID. scripts/test.sh installs
//! websockify, stunnel4 and squid-openssl (microsocks for tests/proxy.rs); without them these
//! tests fail.
//!
//! A test that says the agent went through a proxy checks the proxy's own record (squid's access
//! log, microsocks's "connected to" lines), not only the agent's `via` label, which a build that
//! dialed direct could still print.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::READY;
use crate::support::inproc::{RunningAgent, echo_exact, start_agent};
use crate::support::sshd::Sshd;
use crate::support::{agent_key, free_port, targets};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};

const START: Duration = Duration::from_secs(10);

/// A program started by a test, killed (by its PID) when dropped.
struct Daemon {
    child: Child,
    log: PathBuf,
}

impl Daemon {
    /// Runs `cmd` and waits until 127.0.0.1:`port` accepts TCP.
    fn start(name: &'static str, mut cmd: Command, port: u16, log: PathBuf) -> Daemon {
        let out = std::fs::File::create(&log).expect("create log");
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap_or_else(|e| {
                panic!("{name} cannot be started ({e}): run scripts/test.sh, which installs it")
            });
        let mut d = Daemon { child, log };
        let deadline = Instant::now() + START;
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Ok(Some(status)) = d.child.try_wait() {
                panic!("{name} exited ({status}):\n{}", d.log_text());
            }
            assert!(
                Instant::now() < deadline,
                "{name} not listening on {port}:\n{}",
                d.log_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        d
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A CA and a certificate for localhost / 127.0.0.1 it signed, as PEM files in `dir`:
/// `{prefix}-ca.pem`, `{prefix}-ca.key`, `{prefix}.pem`, `{prefix}.key`.
struct Pki {
    ca: PathBuf,
    ca_key: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

fn pki(dir: &Path, prefix: &str, ca_name: &str) -> Pki {
    pki_for(dir, prefix, ca_name, &["localhost", "127.0.0.1"])
}

/// [`pki`], with a leaf certificate for `names` (DNS names or IP addresses) instead.
fn pki_for(dir: &Path, prefix: &str, ca_name: &str, names: &[&str]) -> Pki {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name.push(DnType::CommonName, ca_name);
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let ca_key_pem = ca_key.serialize_pem();
    let issuer = Issuer::new(ca, ca_key);
    let key = KeyPair::generate().unwrap();
    let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    let mut leaf = CertificateParams::new(names.clone()).unwrap();
    leaf.distinguished_name
        .push(DnType::CommonName, names[0].as_str());
    let cert = leaf.signed_by(&key, &issuer).unwrap();
    let write = |name: String, text: String| {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    };
    Pki {
        ca: write(format!("{prefix}-ca.pem"), ca_cert.pem()),
        ca_key: write(format!("{prefix}-ca.key"), ca_key_pem),
        cert: write(format!("{prefix}.pem"), cert.pem()),
        key: write(format!("{prefix}.key"), key.serialize_pem()),
    }
}

fn example(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("examples/vendor")
        .join(name)
}

/// websockify with TLS only, in front of `to`: examples/vendor/websockify.sh as shipped.
fn websockify(dir: &Path, pki: &Pki, to: u16) -> (Daemon, u16) {
    let port = free_port();
    let mut cmd = Command::new("sh");
    cmd.arg(example("websockify.sh"))
        .env("CERT", &pki.cert)
        .env("KEY", &pki.key)
        .env("LISTEN", format!("127.0.0.1:{port}"))
        .env("SSHD", format!("127.0.0.1:{to}"));
    (
        Daemon::start("websockify", cmd, port, dir.join("websockify.log")),
        port,
    )
}

/// stunnel4 terminating TLS in front of `to`: examples/vendor/stunnel.conf with this test's
/// ports and certificate.
fn stunnel(dir: &Path, pki: &Pki, to: u16) -> (Daemon, u16) {
    let port = free_port();
    let conf = dir.join("stunnel.conf");
    let shipped = std::fs::read_to_string(example("stunnel.conf")).unwrap();
    let text = shipped
        .replace("0.0.0.0:8443", &format!("127.0.0.1:{port}"))
        .replace("127.0.0.1:22", &format!("127.0.0.1:{to}"))
        .replace(
            "/etc/agent-tunnel/tls/fullchain.pem",
            &pki.cert.display().to_string(),
        )
        .replace(
            "/etc/agent-tunnel/tls/privkey.pem",
            &pki.key.display().to_string(),
        );
    assert_ne!(text, shipped, "examples/vendor/stunnel.conf changed shape");
    std::fs::write(&conf, text).unwrap();
    let mut cmd = Command::new("stunnel4");
    cmd.arg(&conf);
    (
        Daemon::start("stunnel4", cmd, port, dir.join("stunnel.log")),
        port,
    )
}

/// The vendor: sshd, with websockify and stunnel4 in front of it, certificates from `pki`.
struct Vendor {
    sshd: Sshd,
    wss_port: u16,
    tls_port: u16,
    _daemons: Vec<Daemon>,
}

fn vendor(dir: &Path, pki: &Pki, agent_pub: &str) -> Vendor {
    let sshd = Sshd::start(agent_pub);
    let (ws, wss_port) = websockify(dir, pki, sshd.port);
    let (st, tls_port) = stunnel(dir, pki, sshd.port);
    Vendor {
        sshd,
        wss_port,
        tls_port,
        _daemons: vec![ws, st],
    }
}

/// agent.yaml with a transport ladder and one forward `remote` -> 127.0.0.1:`target`.
fn yaml(
    v: &Vendor,
    key: &Path,
    rungs: &[String],
    tls: &str,
    proxy: &str,
    remote: u16,
    target: u16,
) -> String {
    let list: Vec<String> = rungs.iter().map(|r| format!("\"{r}\"")).collect();
    format!(
        "server:\n  host: localhost\n  transports: [{}]\n  tls: {tls}\n  user: {}\n  host_keys: [\"{}\"]\nidentity: {}\nproxy: {proxy}\nadmin: {{ listen: \"off\" }}\nkeepalive: {{ interval: 2s, max_missed: 2 }}\nreconnect: {{ initial: 200ms, max: 2s }}\ntimeouts: {{ connect: 2s, handshake: 10s, target_connect: 2s }}\nforwards:\n  - {{ name: echo, remote: \"127.0.0.1:{remote}\", target: \"127.0.0.1:{target}\" }}\n",
        list.join(", "),
        v.sshd.user(),
        v.sshd.host_key_line,
        key.display()
    )
}

fn trusted(pki: &Pki) -> String {
    format!("{{ ca_file: \"{}\" }}", pki.ca.display())
}

/// Sends 1 MiB through the forward and checks every byte came back.
async fn carries_exact_bytes(agent: &RunningAgent, remote: u16) {
    let s = agent.wait_ready(READY).await;
    echo_exact(remote, 1 << 20, 7, Duration::from_secs(20))
        .await
        .unwrap_or_else(|e| panic!("echo through {:?}: {e}", s.connected_via));
}

#[tokio::test(flavor = "multi_thread")]
async fn wss_through_websockify_carries_exact_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let (key, public) = agent_key(dir.path());
    let pki = pki(dir.path(), "vendor", "Agent Test Vendor CA");
    let v = vendor(dir.path(), &pki, &public);
    let (target, _echo) = targets::echo().await;
    let remote = free_port();
    let rung = format!("wss://localhost:{}/tunnel", v.wss_port);
    let agent = start_agent(
        dir.path(),
        &yaml(&v, &key, &[rung], &trusted(&pki), "none", remote, target),
    );
    carries_exact_bytes(&agent, remote).await;
    let via = agent.snapshot().connected_via.unwrap();
    assert!(via.starts_with("wss://localhost:"), "{via}");
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn tls_through_stunnel_carries_exact_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let (key, public) = agent_key(dir.path());
    let pki = pki(dir.path(), "vendor", "Agent Test Vendor CA");
    let v = vendor(dir.path(), &pki, &public);
    let (target, _echo) = targets::echo().await;
    let remote = free_port();
    let rung = format!("tls://localhost:{}", v.tls_port);
    let agent = start_agent(
        dir.path(),
        &yaml(&v, &key, &[rung], &trusted(&pki), "none", remote, target),
    );
    carries_exact_bytes(&agent, remote).await;
    assert!(
        agent
            .snapshot()
            .connected_via
            .unwrap()
            .starts_with("tls://localhost:")
    );
    agent.stop().await;
}

/// A first rung that accepts TCP and never speaks costs the fallback delay (300 ms), not the
/// handshake timeout (10 s here): the next rung is started beside it. The fallback's own timing
/// is tested under paused time beside the ladder; here the order is what counts: the forward is
/// up before half the silent rung's handshake bound has passed.
#[tokio::test(flavor = "multi_thread")]
async fn a_silent_first_rung_costs_the_fallback_delay_not_the_handshake_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let (key, public) = agent_key(dir.path());
    let pki = pki(dir.path(), "vendor", "Agent Test Vendor CA");
    let v = vendor(dir.path(), &pki, &public);
    let (silent, _silent) = targets::silent().await;
    let (target, _echo) = targets::echo().await;
    let remote = free_port();
    let rungs = [
        format!("ssh://127.0.0.1:{silent}"),
        format!("wss://localhost:{}/", v.wss_port),
    ];
    let started = Instant::now();
    let agent = start_agent(
        dir.path(),
        &yaml(&v, &key, &rungs, &trusted(&pki), "none", remote, target),
    );
    agent.wait_ready(READY).await;
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(5),
        "ready after {took:?}: the wss rung waited for the silent rung's 10 s handshake bound"
    );
    echo_exact(remote, 64 << 10, 3, Duration::from_secs(10))
        .await
        .unwrap();
    agent.stop().await;
}

/// A certificate from a CA the agent does not trust, with verify: true: refused, and the error
/// names the issuer; with the CA in ca_file the same rung connects.
#[tokio::test(flavor = "multi_thread")]
async fn an_untrusted_certificate_is_refused_naming_its_issuer() {
    let dir = tempfile::tempdir().unwrap();
    let (key, public) = agent_key(dir.path());
    let pki = pki(dir.path(), "vendor", "Acme Corp Inspection CA");
    let other = self::pki(dir.path(), "other", "Some Other CA");
    let v = vendor(dir.path(), &pki, &public);
    let (target, _echo) = targets::echo().await;
    let remote = free_port();
    let rung = format!("wss://localhost:{}/", v.wss_port);
    let agent = start_agent(
        dir.path(),
        &yaml(&v, &key, &[rung], &trusted(&other), "none", remote, target),
    );
    let s = agent
        .wait_for(Duration::from_secs(10), "refusing the certificate", |s| {
            s.last_error.is_some()
        })
        .await;
    let (class, message) = s.last_error.unwrap();
    assert_eq!(class, "tls", "{message}");
    assert!(message.contains("'Acme Corp Inspection CA'"), "{message}");
    assert!(message.contains("server.tls.ca_file"), "{message}");
    assert!(s.connected_via.is_none());
    agent.stop().await;
}

// ---- squid ---------------------------------------------------------------------------------

/// squid-openssl on loopback: `http_port` (CONNECT), `https_port` (TLS to the proxy, with
/// `proxy_pki`'s certificate) and an ssl-bump `http_port` re-signing with `bump_ca`.
struct Squid {
    http: u16,
    https: u16,
    bump: u16,
    /// One line per request: `port=LISTEN_PORT STATUS METHOD URL` (see `logformat` below).
    access_log: PathBuf,
    _daemon: Daemon,
}

impl Squid {
    /// Waits until squid's access log has a request received on its `port` for `target`
    /// (`host:port`): the proxy's own record that the agent went through it, which a build that
    /// dialed direct and only labelled the session `via` the proxy could not fake. squid writes a
    /// CONNECT tunnel's line when the tunnel closes: call it after the agent stopped.
    async fn wait_logged(&self, port: u16, target: &str) {
        let deadline = Instant::now() + START;
        loop {
            let log = std::fs::read_to_string(&self.access_log).unwrap_or_default();
            let on_port = format!("port={port} ");
            if log
                .lines()
                .any(|l| l.starts_with(&on_port) && l.contains(target))
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "squid logged no request on its port {port} for {target} within {START:?}: the agent did not go through it:\n{log}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

fn squid(dir: &Path, proxy_pki: &Pki, bump: &Pki) -> Squid {
    // squid drops to the `proxy` user: it must read its files and write its logs here.
    let sq = dir.join("squid");
    std::fs::create_dir_all(&sq).unwrap();
    let certgen = "/usr/lib/squid/security_file_certgen";
    let db = sq.join("ssl_db");
    let out = Command::new(certgen)
        .arg("-c")
        .arg("-s")
        .arg(&db)
        .args(["-M", "4MB"])
        .output()
        .unwrap_or_else(|e| panic!("{certgen}: {e}: run scripts/test.sh (squid-openssl)"));
    assert!(out.status.success(), "{out:?}");
    // Only squid's own files: the agent's key in `dir` must stay private to its owner.
    let chmod = |mode: &str, p: &Path| {
        assert!(
            Command::new("chmod")
                .arg(mode)
                .arg(p)
                .status()
                .unwrap()
                .success(),
            "chmod {}",
            p.display()
        )
    };
    chmod("a+rx", dir);
    chmod("a+rwx", &sq);
    Command::new("chmod")
        .args(["-R", "a+rwX"])
        .arg(&db)
        .status()
        .unwrap();
    for f in [&proxy_pki.cert, &proxy_pki.key, &bump.ca, &bump.ca_key] {
        chmod("a+r", f);
    }
    let (http, https, bump_port) = (free_port(), free_port(), free_port());
    let conf = sq.join("squid.conf");
    std::fs::write(
        &conf,
        format!(
            "http_port 127.0.0.1:{http}
https_port 127.0.0.1:{https} tls-cert={pcert} tls-key={pkey}
http_port 127.0.0.1:{bump_port} ssl-bump tls-cert={bcert} tls-key={bkey} generate-host-certificates=on dynamic_cert_mem_cache_size=4MB
sslcrtd_program {certgen} -s {db} -M 4MB
sslcrtd_children 2 startup=1 idle=1
acl step1 at_step SslBump1
ssl_bump peek step1
ssl_bump bump all
tls_outgoing_options flags=DONT_VERIFY_PEER
sslproxy_cert_error allow all
http_upgrade_request_protocols websocket allow all
http_access allow all
cache deny all
pid_filename {dir}/squid.pid
cache_log {dir}/cache.log
logformat agent port=%>lp %Ss/%03>Hs %rm %ru
access_log stdio:{dir}/access.log agent
coredump_dir {dir}
shutdown_lifetime 0 seconds
",
            pcert = proxy_pki.cert.display(),
            pkey = proxy_pki.key.display(),
            bcert = bump.ca.display(),
            bkey = bump.ca_key.display(),
            db = db.display(),
            dir = sq.display(),
        ),
    )
    .unwrap();
    let mut cmd = Command::new("squid");
    cmd.arg("-N").arg("-f").arg(&conf);
    let daemon = Daemon::start("squid", cmd, bump_port, sq.join("stderr.log"));
    for port in [http, https] {
        let deadline = Instant::now() + START;
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "squid not listening on {port}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    Squid {
        http,
        https,
        bump: bump_port,
        access_log: sq.join("access.log"),
        _daemon: daemon,
    }
}

/// squid as a CONNECT proxy (http://) and as an https:// proxy, each carrying a TLS rung.
#[tokio::test(flavor = "multi_thread")]
async fn squid_as_connect_and_as_https_proxy() {
    let dir = tempfile::tempdir().unwrap();
    let (key, public) = agent_key(dir.path());
    let pki = pki(dir.path(), "vendor", "Agent Test Vendor CA");
    let proxy_pki = self::pki(dir.path(), "proxy", "Agent Test Proxy CA");
    let bump = self::pki(dir.path(), "bump", "Agent Test Bump CA");
    let v = vendor(dir.path(), &pki, &public);
    let sq = squid(dir.path(), &proxy_pki, &bump);
    let (target, _echo) = targets::echo().await;
    // One CA file trusting both the vendor's terminator and the proxy's own certificate.
    let both = dir.path().join("both.pem");
    std::fs::write(
        &both,
        std::fs::read_to_string(&pki.ca).unwrap()
            + &std::fs::read_to_string(&proxy_pki.ca).unwrap(),
    )
    .unwrap();
    let tls = format!("{{ ca_file: \"{}\" }}", both.display());
    for (proxy, rung, port, connect) in [
        (
            format!("http://127.0.0.1:{}", sq.http),
            format!("wss://localhost:{}/", v.wss_port),
            sq.http,
            format!("CONNECT localhost:{}", v.wss_port),
        ),
        (
            format!("https://localhost:{}", sq.https),
            format!("tls://localhost:{}", v.tls_port),
            sq.https,
            format!("CONNECT localhost:{}", v.tls_port),
        ),
    ] {
        let remote = free_port();
        let sub = dir.path().join(format!("agent-{remote}"));
        std::fs::create_dir_all(&sub).unwrap();
        let agent = start_agent(
            &sub,
            &yaml(
                &v,
                &key,
                std::slice::from_ref(&rung),
                &tls,
                &proxy,
                remote,
                target,
            ),
        );
        carries_exact_bytes(&agent, remote).await;
        let via = agent.snapshot().connected_via.unwrap();
        assert!(via.contains(&format!("via {proxy}")), "{via}");
        agent.stop().await;
        sq.wait_logged(port, &connect).await;
    }
}

/// squid doing ssl-bump with the test's CA (which the agent trusts through ca_file): SSH
/// inside plain TLS is refused by the proxy, SSH inside WebSocket goes through, and the ladder
/// ends on the wss rung carrying exact bytes.
#[tokio::test(flavor = "multi_thread")]
async fn behind_ssl_bump_the_tls_rung_is_refused_and_wss_connects() {
    let dir = tempfile::tempdir().unwrap();
    let (key, public) = agent_key(dir.path());
    let pki = pki(dir.path(), "vendor", "Agent Test Vendor CA");
    let proxy_pki = self::pki(dir.path(), "proxy", "Agent Test Proxy CA");
    let bump = self::pki(dir.path(), "bump", "Acme Corp Egress CA");
    let v = vendor(dir.path(), &pki, &public);
    let sq = squid(dir.path(), &proxy_pki, &bump);
    let (target, _echo) = targets::echo().await;
    let proxy = format!("http://127.0.0.1:{}", sq.bump);

    // The tls rung alone: the proxy answers inside TLS with HTTP, not SSH.
    let remote = free_port();
    let sub = dir.path().join("tls-only");
    std::fs::create_dir_all(&sub).unwrap();
    let agent = start_agent(
        &sub,
        &yaml(
            &v,
            &key,
            &[format!("tls://localhost:{}", v.tls_port)],
            &trusted(&bump),
            &proxy,
            remote,
            target,
        ),
    );
    // squid sometimes leaves the first bumped connection silent or closes it (its certificate
    // helper is still starting); the attempts after it get the 400. Never connected either way.
    let refused = "answered \"HTTP/1.1 400 Bad Request\" instead of an SSH banner";
    let s = agent
        .wait_for(Duration::from_secs(40), "refused by the proxy", |s| {
            assert!(s.connected_via.is_none(), "the tls rung connected: {s:?}");
            s.last_error
                .as_ref()
                .is_some_and(|(_, m)| m.contains(refused))
        })
        .await;
    let (_, message) = s.last_error.unwrap();
    // Inside the bumped TLS the proxy answers SSH's banner with an HTTP error, not SSH.
    assert!(message.contains(refused), "{message}");
    agent.stop().await;

    // The ladder: tls first, then wss, which connects.
    let remote = free_port();
    let sub = dir.path().join("ladder");
    std::fs::create_dir_all(&sub).unwrap();
    let agent = start_agent(
        &sub,
        &yaml(
            &v,
            &key,
            &[
                format!("tls://localhost:{}", v.tls_port),
                format!("wss://localhost:{}/", v.wss_port),
            ],
            &trusted(&bump),
            &proxy,
            remote,
            target,
        ),
    );
    carries_exact_bytes(&agent, remote).await;
    let via = agent.snapshot().connected_via.unwrap();
    assert!(
        via.starts_with("wss://"),
        "{via} (tls rung said: {message})"
    );
    agent.stop().await;
    // The bumped WebSocket request, in the proxy's own log.
    sq.wait_logged(sq.bump, &format!("localhost:{}", v.wss_port))
        .await;
}

/// `agent check`: a row per rung; for a TLS rung the chain and, since the test CA is not a
/// public one, the plain statement that TLS is inspected; an untrusted chain FAILs naming its
/// issuer; with no plain ssh:// rung, auth and the trial forward run over the first trusted rung.
#[tokio::test(flavor = "multi_thread")]
async fn agent_check_reports_each_rung_with_its_chain() {
    use agent::check::report::Status;
    let dir = tempfile::tempdir().unwrap();
    let (key, public) = agent_key(dir.path());
    let pki = pki(dir.path(), "vendor", "Acme Corp CA");
    let other = self::pki(dir.path(), "other", "Some Other CA");
    let v = vendor(dir.path(), &pki, &public);
    let sub = dir.path().join("other-stunnel");
    std::fs::create_dir_all(&sub).unwrap();
    let (_other_tls, other_port) = stunnel(&sub, &other, v.sshd.port);
    let (target, _echo) = targets::echo().await;
    let remote = free_port();
    let wss = format!("wss://localhost:{}/tunnel", v.wss_port);
    let bad = format!("tls://localhost:{other_port}");
    let file = dir.path().join("agent.yaml");
    std::fs::write(
        &file,
        yaml(
            &v,
            &key,
            &[wss.clone(), bad.clone()],
            &trusted(&pki),
            "none",
            remote,
            target,
        ),
    )
    .unwrap();
    let report = agent::check::check(&agent::check::Options {
        config: file,
        host: None,
        timeout: Duration::from_secs(5),
        json: false,
    })
    .await;
    let text = report.to_text();
    let row = |step: &str, target: &str| {
        report
            .rows
            .iter()
            .find(|r| r.step == step && r.target == target)
            .unwrap_or_else(|| panic!("no {step} row for {target}:\n{text}"))
    };
    let w = row("wss", &wss);
    assert_eq!(w.status, Status::Pass, "{text}");
    assert!(
        w.detail
            .contains("certificate chain 'localhost' issued by 'Acme Corp CA'"),
        "{text}"
    );
    assert!(
        w.detail
            .contains("TLS is inspected by 'Acme Corp CA' in the path")
            && w.detail
                .contains("the pinned SSH host key still authenticates the vendor"),
        "{text}"
    );
    assert!(w.detail.contains("SSH banner \"SSH-2.0-OpenSSH"), "{text}");
    assert_eq!(row("host-key", &wss).status, Status::Pass, "{text}");
    let b = row("tls", &bad);
    assert_eq!(b.status, Status::Fail, "{text}");
    assert!(b.detail.contains("'Some Other CA'"), "{text}");
    assert!(
        b.fix.as_deref().unwrap().contains("server.tls.ca_file"),
        "{text}"
    );
    let auth = report.rows.iter().find(|r| r.step == "auth").unwrap();
    assert_eq!(auth.status, Status::Pass, "{text}");
    let fwd = report.rows.iter().find(|r| r.step == "forward").unwrap();
    assert_eq!(fwd.status, Status::Pass, "{text}");
    // No plain ssh:// rung on server.host: no dns/tcp rows for it.
    assert!(!report.rows.iter().any(|r| r.step == "tcp"), "{text}");
}

/// Reconnects start with the rung that worked last: after the first session (won by the wss
/// rung once the silent first rung had its 300 ms), the vendor's sshd restarts, and the agent
/// is back on the wss rung without touching the silent one again.
#[tokio::test(flavor = "multi_thread")]
async fn a_reconnect_starts_with_the_rung_that_worked_last() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    let dir = tempfile::tempdir().unwrap();
    let (key, public) = agent_key(dir.path());
    let pki = pki(dir.path(), "vendor", "Agent Test Vendor CA");
    let mut v = vendor(dir.path(), &pki, &public);
    // Accepts, counts, and never speaks.
    let silent = crate::support::fresh_tokio_listener();
    let silent_port = silent.local_addr().unwrap().port();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    let _silent = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = silent.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            held.push(s);
        }
    });
    let (target, _echo) = targets::echo().await;
    let remote = free_port();
    let rungs = [
        format!("ssh://127.0.0.1:{silent_port}"),
        format!("wss://localhost:{}/", v.wss_port),
    ];
    let agent = start_agent(
        dir.path(),
        &yaml(&v, &key, &rungs, &trusted(&pki), "none", remote, target),
    );
    let first = agent.wait_ready(READY).await;
    assert!(first.connected_via.unwrap().starts_with("wss://"));
    assert_eq!(accepted.load(Ordering::SeqCst), 1);

    tokio::task::block_in_place(|| v.sshd.restart());
    let again = agent
        .wait_for(READY, "reconnected", |s| {
            s.session > first.session && s.ready()
        })
        .await;
    assert!(again.connected_via.unwrap().starts_with("wss://"));
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        1,
        "the reconnect tried the silent rung first"
    );
    echo_exact(remote, 64 << 10, 9, Duration::from_secs(10))
        .await
        .unwrap();
    agent.stop().await;
}

/// With known_hosts instead of pins, a wss rung's host key is looked up under server.host on
/// port 22 (the sshd behind the terminator), not under the terminator's TLS port.
#[tokio::test(flavor = "multi_thread")]
async fn known_hosts_names_the_sshd_behind_the_terminator() {
    let dir = tempfile::tempdir().unwrap();
    let (key, public) = agent_key(dir.path());
    let pki = pki(dir.path(), "vendor", "Agent Test Vendor CA");
    let v = vendor(dir.path(), &pki, &public);
    let (target, _echo) = targets::echo().await;
    let remote = free_port();
    let known = dir.path().join("known_hosts");
    std::fs::write(&known, format!("localhost {}\n", v.sshd.host_key_line)).unwrap();
    let rung = format!("wss://localhost:{}/", v.wss_port);
    let text = yaml(&v, &key, &[rung], &trusted(&pki), "none", remote, target).replace(
        &format!("host_keys: [\"{}\"]", v.sshd.host_key_line),
        &format!("known_hosts: \"{}\"", known.display()),
    );
    assert!(text.contains("known_hosts:"), "{text}");
    let agent = start_agent(dir.path(), &text);
    carries_exact_bytes(&agent, remote).await;
    agent.stop().await;
}

/// The TLS rungs through a SOCKS5 proxy (microsocks), the name resolved by the proxy
/// (socks5h://) and by the agent (socks5://).
#[tokio::test(flavor = "multi_thread")]
async fn wss_and_tls_through_socks5() {
    let dir = tempfile::tempdir().unwrap();
    let (key, public) = agent_key(dir.path());
    let pki = pki(dir.path(), "vendor", "Agent Test Vendor CA");
    let v = vendor(dir.path(), &pki, &public);
    let (target, _echo) = targets::echo().await;
    let port = free_port();
    let mut cmd = Command::new("microsocks");
    cmd.args(["-i", "127.0.0.1", "-p", &port.to_string()]);
    let socks = Daemon::start("microsocks", cmd, port, dir.path().join("microsocks.log"));
    for (scheme, rung, rung_port) in [
        (
            "socks5h",
            format!("wss://localhost:{}/", v.wss_port),
            v.wss_port,
        ),
        (
            "socks5",
            format!("tls://localhost:{}", v.tls_port),
            v.tls_port,
        ),
    ] {
        let remote = free_port();
        let sub = dir.path().join(scheme);
        std::fs::create_dir_all(&sub).unwrap();
        let proxy = format!("{scheme}://127.0.0.1:{port}");
        let agent = start_agent(
            &sub,
            &yaml(
                &v,
                &key,
                std::slice::from_ref(&rung),
                &trusted(&pki),
                &proxy,
                remote,
                target,
            ),
        );
        carries_exact_bytes(&agent, remote).await;
        let via = agent.snapshot().connected_via.unwrap();
        assert!(
            via.starts_with(&rung) && via.contains(&format!("via {proxy}")),
            "{via}"
        );
        // microsocks's own record ("client[N] 127.0.0.1: connected to HOST:PORT", written before
        // it relays a byte): the name for socks5h (the proxy resolved it), an address for
        // socks5 (the agent did).
        let log = socks.log_text();
        let connected: Vec<&str> = log
            .lines()
            .filter(|l| l.contains("connected to ") && l.ends_with(&format!(":{rung_port}")))
            .collect();
        assert!(
            !connected.is_empty(),
            "microsocks connected nothing to port {rung_port}: the agent did not go through it:\n{log}"
        );
        let by_name = format!("connected to localhost:{rung_port}");
        assert_eq!(
            connected.iter().all(|l| l.ends_with(&by_name)),
            scheme == "socks5h",
            "{scheme}: who resolved the name?\n{log}"
        );
        agent.stop().await;
    }
}

// ---- the host-key pin on every path --------------------------------------------------------

/// A pin that matches no key of any test sshd.
const WRONG_PIN: &str = "SHA256:nThbg6kXUpJWGl7E1IGOCspRomTxdCARLviKw6E5SY8";

/// `text` (from [`yaml`]) with the vendor's pin replaced by [`WRONG_PIN`].
fn wrongly_pinned(v: &Vendor, text: String) -> String {
    let pin = format!("host_keys: [\"{}\"]", v.sshd.host_key_line);
    assert!(text.contains(&pin), "{text}");
    text.replace(&pin, &format!("host_keys: [\"{WRONG_PIN}\"]"))
}

/// Connections the vendor's sshd saw end before authentication so far ("Connection closed by
/// 127.0.0.1 port N [preauth]" in its log): one per attempt the agent gave up on the host key.
fn refused_connections(v: &Vendor) -> usize {
    v.sshd
        .log()
        .lines()
        .filter(|l| {
            (l.starts_with("Connection ") || l.starts_with("Disconnected "))
                && l.ends_with("[preauth]")
        })
        .count()
}

/// The agent, pinned to [`WRONG_PIN`], refuses the vendor's key on the path `via` names: it
/// reports `host_key_mismatch` naming the key sshd offered (so the handshake did reach sshd
/// along that path) and the pin, and keeps refusing on the attempt after, while it is never
/// connected nor ready and sshd never listens on the forward's port `remote`; sshd's log shows
/// no login and no forward request. `before`: [`refused_connections`] when the agent started.
async fn refuses_the_host_key(
    agent: &RunningAgent,
    v: &Vendor,
    remote: u16,
    via: &str,
    before: usize,
) {
    let never_in = |s: &agent::tunnel::state::Snapshot| {
        assert!(
            s.connected_via.is_none() && !s.ready(),
            "connected despite a wrong pin: {s:#?}"
        );
        assert!(
            !v.sshd.listens_on(remote),
            "sshd listens on the forward's port {remote} despite a wrong pin"
        );
    };
    let mismatch = |s: &agent::tunnel::state::Snapshot| {
        s.last_error
            .as_ref()
            .is_some_and(|(c, _)| c == "host_key_mismatch")
    };
    let s = agent
        .wait_for(READY, "refusing the host key", |s| {
            never_in(s);
            mismatch(s)
        })
        .await;
    let (_, message) = s.last_error.unwrap();
    assert!(
        message.contains(&v.sshd.host_key_fingerprint) && message.contains(WRONG_PIN),
        "{message}"
    );
    assert!(message.contains(via), "not refused on {via}: {message}");
    // The attempt after it (permanent failures wait reconnect.max, 2 s here) ends before
    // authentication too: a check skipped on a retry would let it in.
    agent
        .wait_for(Duration::from_secs(10), "trying again, and refusing", |s| {
            never_in(s);
            mismatch(s) && refused_connections(v) >= before + 2
        })
        .await;
    let log = v.sshd.log();
    assert!(
        !log.contains("Accepted publickey") && !log.contains("tcpip-forward"),
        "sshd let the agent in despite a wrong pin:\n{log}"
    );
}

/// A wrong pin on one rung to the vendor's sshd, behind terminators whose certificates the agent
/// trusts: refused, never ready, never logged in. `rung` names the rung from the vendor's ports.
async fn a_wrong_pin_is_refused_on(rung: impl Fn(&Vendor) -> String) {
    let dir = tempfile::tempdir().unwrap();
    let (key, public) = agent_key(dir.path());
    let pki = pki(dir.path(), "vendor", "Agent Test Vendor CA");
    let v = vendor(dir.path(), &pki, &public);
    let (target, _echo) = targets::echo().await;
    let remote = free_port();
    let rung = rung(&v);
    let text = yaml(
        &v,
        &key,
        std::slice::from_ref(&rung),
        &trusted(&pki),
        "none",
        remote,
        target,
    );
    let before = refused_connections(&v);
    let agent = start_agent(dir.path(), &wrongly_pinned(&v, text));
    refuses_the_host_key(&agent, &v, remote, &rung, before).await;
    agent.stop().await;
}

/// A wrong pin on the `tls://` rung (stunnel4 in front of sshd, its certificate trusted).
#[tokio::test(flavor = "multi_thread")]
async fn a_wrong_pin_is_refused_on_the_tls_rung() {
    a_wrong_pin_is_refused_on(|v| format!("tls://localhost:{}", v.tls_port)).await;
}

/// A wrong pin on the `wss://` rung (websockify in front of sshd, its certificate trusted).
#[tokio::test(flavor = "multi_thread")]
async fn a_wrong_pin_is_refused_on_the_wss_rung() {
    a_wrong_pin_is_refused_on(|v| format!("wss://localhost:{}/tunnel", v.wss_port)).await;
}

/// `server.tls.verify: false` accepts any certificate (here one from a CA the agent does not
/// trust): the pin is then all that authenticates the vendor. A wrong pin is refused; the right
/// one connects over the same rung, so it was the pin that refused, not TLS.
#[tokio::test(flavor = "multi_thread")]
async fn with_tls_verify_false_a_wrong_pin_is_still_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (key, public) = agent_key(dir.path());
    let pki = pki(dir.path(), "vendor", "Nobody Trusts This CA");
    let v = vendor(dir.path(), &pki, &public);
    let (target, _echo) = targets::echo().await;
    let rung = format!("tls://localhost:{}", v.tls_port);
    let unverified = "{ verify: false }";

    let remote = free_port();
    let text = yaml(
        &v,
        &key,
        std::slice::from_ref(&rung),
        unverified,
        "none",
        remote,
        target,
    );
    let before = refused_connections(&v);
    let sub = dir.path().join("wrong");
    std::fs::create_dir_all(&sub).unwrap();
    let agent = start_agent(&sub, &wrongly_pinned(&v, text));
    refuses_the_host_key(&agent, &v, remote, &rung, before).await;
    agent.stop().await;

    let remote = free_port();
    let text = yaml(
        &v,
        &key,
        std::slice::from_ref(&rung),
        unverified,
        "none",
        remote,
        target,
    );
    let sub = dir.path().join("right");
    std::fs::create_dir_all(&sub).unwrap();
    let agent = start_agent(&sub, &text);
    carries_exact_bytes(&agent, remote).await;
    // What the wrong pin's check looks for does show here, where sshd opened the forward.
    assert!(
        v.sshd.listens_on(remote),
        "sshd holds no listener on {remote}"
    );
    agent.stop().await;
}

/// A wrong pin through an HTTP CONNECT proxy (squid), on a plain `ssh://` rung and on a
/// `wss://` one; squid's access log shows each refusal went through it.
#[tokio::test(flavor = "multi_thread")]
async fn a_wrong_pin_is_refused_through_a_proxy() {
    let dir = tempfile::tempdir().unwrap();
    let (key, public) = agent_key(dir.path());
    let pki = pki(dir.path(), "vendor", "Agent Test Vendor CA");
    let proxy_pki = self::pki(dir.path(), "proxy", "Agent Test Proxy CA");
    let bump = self::pki(dir.path(), "bump", "Agent Test Bump CA");
    let v = vendor(dir.path(), &pki, &public);
    let sq = squid(dir.path(), &proxy_pki, &bump);
    let (target, _echo) = targets::echo().await;
    let proxy = format!("http://127.0.0.1:{}", sq.http);
    for (rung, connect) in [
        (
            format!("ssh://127.0.0.1:{}", v.sshd.port),
            format!("CONNECT 127.0.0.1:{}", v.sshd.port),
        ),
        (
            format!("wss://localhost:{}/", v.wss_port),
            format!("CONNECT localhost:{}", v.wss_port),
        ),
    ] {
        let remote = free_port();
        let sub = dir.path().join(format!("agent-{remote}"));
        std::fs::create_dir_all(&sub).unwrap();
        let text = yaml(
            &v,
            &key,
            std::slice::from_ref(&rung),
            &trusted(&pki),
            &proxy,
            remote,
            target,
        );
        let before = refused_connections(&v);
        let agent = start_agent(&sub, &wrongly_pinned(&v, text));
        refuses_the_host_key(&agent, &v, remote, &format!("via {proxy}"), before).await;
        agent.stop().await;
        sq.wait_logged(sq.http, &connect).await;
    }
}

// ---- a certificate for another name --------------------------------------------------------

/// The terminators present a certificate signed by the CA the agent trusts, but for another
/// name than the rung's: refused on `tls://` and on `wss://`, with an error that names the
/// mismatch, never connected nor ready, the forward's port never listened on.
#[tokio::test(flavor = "multi_thread")]
async fn a_certificate_for_another_name_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (key, public) = agent_key(dir.path());
    let pki = pki_for(
        dir.path(),
        "vendor",
        "Agent Test Vendor CA",
        &["tunnel.other.example"],
    );
    let v = vendor(dir.path(), &pki, &public);
    let (target, _echo) = targets::echo().await;
    for rung in [
        format!("tls://localhost:{}", v.tls_port),
        format!("wss://localhost:{}/", v.wss_port),
    ] {
        let remote = free_port();
        let sub = dir.path().join(format!("agent-{remote}"));
        std::fs::create_dir_all(&sub).unwrap();
        let agent = start_agent(
            &sub,
            &yaml(
                &v,
                &key,
                std::slice::from_ref(&rung),
                &trusted(&pki),
                "none",
                remote,
                target,
            ),
        );
        let s = agent
            .wait_for(READY, "refusing the certificate", |s| {
                assert!(
                    s.connected_via.is_none() && !s.ready(),
                    "connected with a certificate for another name: {s:#?}"
                );
                assert!(
                    !v.sshd.listens_on(remote),
                    "sshd listens on the forward's port {remote}"
                );
                s.last_error.is_some()
            })
            .await;
        let (class, message) = s.last_error.unwrap();
        assert_eq!(class, "tls", "{message}");
        assert!(message.contains(&rung), "{message}");
        assert!(
            message.contains("certificate not valid for name \"localhost\"")
                && message.contains("tunnel.other.example"),
            "the error does not name the mismatch: {message}"
        );
        // The CA is trusted: advice to add it to ca_file would send the operator the wrong way.
        assert!(!message.contains("add that CA"), "{message}");
        agent.stop().await;
    }
    assert!(
        !v.sshd.log().contains("Accepted publickey"),
        "{}",
        v.sshd.log()
    );
}
