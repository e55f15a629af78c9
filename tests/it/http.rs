//! HTTP forwards end to end: the agent against the real sshd, with its gateway in front of an
//! upstream started by the test (a recording server on hyper, `git http-backend`, a TLS server
//! with the test's own CA), and the vendor played by curl, git and raw bytes on a socket sent
//! to the forwarded port on the server.

use crate::support::upstream::token_hash;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use base64ct::Encoding;
use rustls::pki_types::pem::PemObject;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::agent_process::AgentProcess;
use crate::support::inproc::config_yaml;
use crate::support::sshd::Sshd;
use crate::support::upstream::{git_server, recorder, test_pki};
use crate::support::{READY, agent_key, free_port};

/// The vendor's token in these tests, and the customer's secret the gateway injects.
const TOKEN: &str = "vendor-token-Zq8s1XkPp4cT0m2wR7bLh9nD3fGyVuEa6jQ5oIK";
const SECRET: &str = "glpat-CUSTOMER-SECRET-7f3k2m9q";

/// An agent (the real binary) with one HTTP forward, against a real sshd.
struct Gateway {
    dir: tempfile::TempDir,
    _sshd: Sshd,
    agent: AgentProcess,
    /// The agent's admin endpoint (/metrics).
    admin: std::net::SocketAddr,
    /// The forwarded port on the server: where the vendor connects.
    remote: u16,
}

/// An agent with one HTTP forward named `gitlab`: `http` is everything under its `http:` key
/// but the token (indented by six spaces; `SECRET_FILE` names the customer's secret file).
fn start(http: &str, extra: &str) -> Gateway {
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("gitlab-token");
    std::fs::write(&secret, format!("{SECRET}\n")).unwrap();
    set_mode(&secret, 0o600);
    let http = http.replace("SECRET_FILE", &secret.display().to_string());
    let forward = |remote: u16| {
        format!(
            "  - name: gitlab\n    remote: \"127.0.0.1:{remote}\"\n    http:\n      vendor_tokens: [\"{}\"]\n{http}",
            token_hash(TOKEN)
        )
    };
    start_forward(
        dir,
        forward,
        &format!("log: {{ format: json, level: trace }}\n{extra}"),
    )
}

/// The real agent against a real sshd, its one forward written by `forward` (given the remote
/// port), an audit trail and a state folder in `dir`, `extra` appended to agent.yaml.
fn start_forward(dir: tempfile::TempDir, forward: impl Fn(u16) -> String, extra: &str) -> Gateway {
    let (key, public) = agent_key(dir.path());
    let sshd = Sshd::start(&public);
    let remote = free_port();
    let mut yaml = config_yaml(
        &[sshd.port],
        &sshd.host_key_fingerprint,
        &sshd.user(),
        &key,
        &[],
        &forward(remote),
    );
    yaml = yaml.replace(
        "admin: { listen: \"off\" }",
        "admin: { listen: \"127.0.0.1:0\" }",
    );
    yaml.push_str(&format!(
        "audit: {{ file: {} }}\nstate_dir: {}\n{extra}",
        dir.path().join("audit.jsonl").display(),
        dir.path().join("state").display()
    ));
    let config = dir.path().join("agent.yaml");
    std::fs::write(&config, &yaml).unwrap();
    let bin = Path::new(env!("CARGO_BIN_EXE_agent"));
    let (agent, admin) = AgentProcess::start(bin, &config, READY);
    let g = Gateway {
        dir,
        _sshd: sshd,
        agent,
        admin,
        remote,
    };
    g.wait_listening();
    g
}

fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

impl Gateway {
    fn wait_listening(&self) {
        let deadline = std::time::Instant::now() + READY;
        while std::net::TcpStream::connect(("127.0.0.1", self.remote)).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "the forward never listened\n{}",
                self.agent.evidence()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.remote)
    }

    /// One exchange as raw bytes: what the gateway answered until it closed the connection
    /// (or 10 s passed).
    async fn raw(&self, request: &[u8]) -> String {
        let mut c = TcpStream::connect(("127.0.0.1", self.remote))
            .await
            .unwrap();
        c.write_all(request).await.unwrap();
        let mut out = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(10), c.read_to_end(&mut out)).await;
        String::from_utf8_lossy(&out).into_owned()
    }

    fn audit(&self) -> Vec<serde_json::Value> {
        // The writer coalesces for a moment before it writes.
        std::thread::sleep(Duration::from_millis(300));
        std::fs::read_to_string(self.dir.path().join("audit.jsonl"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    fn requests(&self) -> Vec<serde_json::Value> {
        self.audit()
            .into_iter()
            .filter(|r| r["kind"] == "request")
            .collect()
    }
}

/// curl as the vendor: status and body.
fn curl(args: &[&str]) -> (u16, String) {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "30", "-o", "-", "-w", "\n%{http_code}"])
        .args(args)
        .output()
        .expect("curl (scripts/test.sh installs it)");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

fn bearer() -> String {
    format!("Authorization: Bearer {TOKEN}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_vendor_reaches_only_allowed_requests_and_never_holds_the_customers_secret() {
    let (port, seen, _up) = recorder(None).await;
    let g = start(
        &format!(
            "      upstream: http://127.0.0.1:{port}\n      inject:\n        PRIVATE-TOKEN: {{ file: SECRET_FILE }}\n      allow:\n        - GET /api/v4/projects\n        - GET /echo-headers\n"
        ),
        "",
    );
    // Allowed: the upstream answers; it saw the customer's secret, its own Host, and never the
    // vendor's token or the vendor's forwarding headers.
    let (status, body) = curl(&[
        "-H",
        &bearer(),
        "-H",
        "X-Forwarded-For: 6.6.6.6",
        "-H",
        "PRIVATE-TOKEN: the-vendors-guess",
        &g.url("/echo-headers"),
    ]);
    assert_eq!(status, 200, "{body}\n{}", g.agent.evidence());
    assert!(body.contains(&format!("private-token: {SECRET}")), "{body}");
    assert!(body.contains(&format!("host: 127.0.0.1:{port}")), "{body}");
    assert!(!body.contains("the-vendors-guess"), "{body}");
    assert!(!body.contains("6.6.6.6"), "{body}");
    assert!(
        !seen.text().contains(TOKEN),
        "the upstream saw the vendor's token"
    );
    assert!(!seen.text().to_lowercase().contains("x-forwarded-for"));

    // No token, a wrong one: 401 with a challenge git understands, and nothing upstream.
    let before = seen.all().len();
    let (status, _) = curl(&[&g.url("/api/v4/projects")]);
    assert_eq!(status, 401);
    let (status, _) = curl(&[
        "-H",
        "Authorization: Bearer wrong",
        &g.url("/api/v4/projects"),
    ]);
    assert_eq!(status, 401);
    let answer = g
        .raw(b"GET /api/v4/projects HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await;
    assert!(answer.starts_with("HTTP/1.1 401"), "{answer}");
    assert!(
        answer.to_lowercase().contains("www-authenticate: basic"),
        "{answer}"
    );
    // Not allowed: 403 naming the method, the path and the reason.
    let (status, body) = curl(&["-H", &bearer(), "-X", "DELETE", &g.url("/api/v4/projects")]);
    assert_eq!(status, 403, "{body}");
    let refusal: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(refusal["method"], "DELETE");
    assert_eq!(refusal["path"], "/api/v4/projects");
    assert!(
        refusal["reason"]
            .as_str()
            .unwrap()
            .contains("no rule allows it")
    );
    assert_eq!(
        seen.all().len(),
        before,
        "a refused request reached the upstream"
    );

    // Basic with any user and the token as the password works too (git's way).
    let (status, body) = curl(&["-u", &format!("oauth2:{TOKEN}"), &g.url("/api/v4/projects")]);
    assert_eq!((status, body.as_str()), (200, "ok GET /api/v4/projects"));

    // One audit record per request: the token by index and fingerprint, never itself.
    let records = g.requests();
    let statuses: Vec<u64> = records
        .iter()
        .map(|r| r["status"].as_u64().unwrap())
        .collect();
    assert_eq!(statuses, [200, 401, 401, 401, 403, 200], "{records:#?}");
    assert_eq!(records[0]["rule"], "GET /echo-headers");
    assert_eq!(records[4]["refused"], "no_rule");
    assert!(records[5]["token"].as_str().unwrap().starts_with("0:"));
    let trail = std::fs::read_to_string(g.dir.path().join("audit.jsonl")).unwrap();
    let (_, metrics, _) = crate::support::agent_process::get(g.admin, "/metrics", READY)
        .await
        .unwrap();
    assert!(
        metrics.contains(r#"agent_http_requests_total{forward="gitlab",outcome="allowed"} 2"#),
        "{metrics}"
    );
    assert!(metrics.contains(r#"agent_http_requests_total{forward="gitlab",outcome="no_rule"} 1"#));
    for secret in [SECRET, TOKEN] {
        assert!(!trail.contains(secret), "the audit trail holds a secret");
        assert!(!g.agent.printed(secret), "the agent printed a secret");
        assert!(!metrics.contains(secret), "a metric holds a secret");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_malformed_or_ambiguous_request_is_refused_before_the_upstream() {
    let (port, seen, _up) = recorder(None).await;
    let g = start(
        &format!(
            "      upstream: http://127.0.0.1:{port}\n      allow:\n        - GET /api/**\n        - POST /api/**\n"
        ),
        "",
    );
    // Each request closes its connection, so that the answer is read to its end at once.
    let auth = format!("Authorization: Bearer {TOKEN}\r\nConnection: close\r\n");
    let cases: Vec<(String, &str)> = vec![
        (
            format!("GET /api/../admin HTTP/1.1\r\nHost: x\r\n{auth}\r\n"),
            "400",
        ),
        (
            format!("GET /api/%2e%2e/admin HTTP/1.1\r\nHost: x\r\n{auth}\r\n"),
            "400",
        ),
        (
            format!("GET /api/.%2E/admin HTTP/1.1\r\nHost: x\r\n{auth}\r\n"),
            "400",
        ),
        (
            format!("GET /api/./x HTTP/1.1\r\nHost: x\r\n{auth}\r\n"),
            "400",
        ),
        (
            format!("GET /api//x HTTP/1.1\r\nHost: x\r\n{auth}\r\n"),
            "400",
        ),
        (
            format!("GET /api/a\\..\\b HTTP/1.1\r\nHost: x\r\n{auth}\r\n"),
            "400",
        ),
        (
            format!("GET /api/x#frag HTTP/1.1\r\nHost: x\r\n{auth}\r\n"),
            "400",
        ),
        (
            format!("GET http://evil/api/x HTTP/1.1\r\nHost: x\r\n{auth}\r\n"),
            "400",
        ),
        (
            format!("GET evil:443 HTTP/1.1\r\nHost: x\r\n{auth}\r\n"),
            "400",
        ),
        (
            format!("CONNECT evil:443 HTTP/1.1\r\nHost: evil:443\r\n{auth}\r\n"),
            "405",
        ),
        (
            format!(
                "GET /api/x HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n{auth}\r\n"
            ),
            "405",
        ),
        (
            format!(
                "POST /api/x HTTP/1.1\r\nHost: x\r\n{auth}Content-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
            ),
            "400",
        ),
        (
            format!(
                "POST /api/x HTTP/1.1\r\nHost: x\r\n{auth}Content-Length: 3\r\nContent-Length: 4\r\n\r\nabcd"
            ),
            "400",
        ),
        (
            format!(
                "POST /api/x HTTP/1.1\r\nHost: x\r\n{auth}Transfer-Encoding: gzip, chunked, identity\r\n\r\n"
            ),
            "400",
        ),
        (
            format!("GET /api/x HTTP/1.1\r\nHost: x\r\n{auth}X-Long: a\r\n  folded\r\n\r\n"),
            "400",
        ),
        (
            format!(
                "GET /api/x HTTP/1.1\r\nHost: x\r\n{auth}X-Big: {}\r\n\r\n",
                "a".repeat(40_000)
            ),
            "431",
        ),
        (
            format!(
                "GET /api/x HTTP/1.1\r\nHost: x\r\n{auth}{}\r\n",
                (0..200)
                    .map(|i| format!("X-H{i}: v\r\n"))
                    .collect::<String>()
            ),
            "431",
        ),
    ];
    for (request, status) in &cases {
        let answer = g.raw(request.as_bytes()).await;
        assert!(
            answer.starts_with(&format!("HTTP/1.1 {status}")),
            "{request:?}\n-> {answer}\n{}",
            g.agent.evidence()
        );
    }
    assert_eq!(
        seen.connections(),
        0,
        "the upstream was reached:\n{}",
        seen.text()
    );

    let bearer = bearer();
    // Pipelined: an allowed request, then one no rule allows, in one write. Only the first
    // reaches the upstream; both are answered, in order.
    let answer = g
        .raw(
            format!(
                "GET /api/one HTTP/1.1\r\nHost: x\r\n{bearer}\r\n\r\nDELETE /api/two HTTP/1.1\r\nHost: x\r\n{auth}\r\n"
            )
            .as_bytes(),
        )
        .await;
    let first = answer.find("HTTP/1.1 200").expect(&answer);
    let second = answer.find("HTTP/1.1 403").expect(&answer);
    assert!(first < second, "{answer}");
    assert_eq!(seen.request_lines(), ["GET /api/one HTTP/1.1"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_failures_are_502_and_504_with_the_cause_logged() {
    let closed = crate::support::targets::closed_port();
    let g = start(
        &format!("      upstream: http://127.0.0.1:{closed}\n      allow: [\"GET /**\"]\n"),
        "",
    );
    let (status, body) = curl(&["-H", &bearer(), &g.url("/x")]);
    assert_eq!(status, 502, "{body}");
    drop(g);

    let (port, _seen, _up) = recorder(None).await;
    let g = start(
        &format!(
            "      upstream: http://127.0.0.1:{port}\n      timeout: 1s\n      allow: [\"GET /**\"]\n"
        ),
        "",
    );
    let (status, body) = curl(&["-H", &bearer(), &g.url("/slow")]);
    assert_eq!(status, 504, "{body}");
    let records = g.requests();
    assert_eq!(records[0]["refused"], "upstream_timeout", "{records:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_upstream_is_trusted_through_ca_file_refused_without_and_reached_with_verify_false() {
    let pki_dir = tempfile::tempdir().unwrap();
    let (ca, tls) = test_pki(pki_dir.path());
    let (port, _seen, _up) = recorder(Some(tls)).await;
    let upstream =
        format!("      upstream: https://127.0.0.1:{port}\n      allow: [\"GET /**\"]\n");

    let g = start(
        &format!("{upstream}      tls: {{ ca_file: {} }}\n", ca.display()),
        "",
    );
    let (status, body) = curl(&["-H", &bearer(), &g.url("/hello")]);
    assert_eq!(
        (status, body.as_str()),
        (200, "ok GET /hello"),
        "{}",
        g.agent.evidence()
    );
    drop(g);

    let g = start(&upstream, "");
    let (status, _) = curl(&["-H", &bearer(), &g.url("/hello")]);
    assert_eq!(status, 502);
    let records = g.requests();
    assert_eq!(records[0]["refused"], "upstream_tls");
    assert!(
        g.agent.printed("Acme Internal Root"),
        "the log does not name the issuer:\n{}",
        g.agent.evidence()
    );
    drop(g);

    let g = start(&format!("{upstream}      tls: {{ verify: false }}\n"), "");
    let (status, _) = curl(&["-H", &bearer(), &g.url("/hello")]);
    assert_eq!(status, 200);
    assert!(
        g.agent.printed("verify: false"),
        "no warning about the bypass:\n{}",
        g.agent.evidence()
    );
}

fn git(dir: &Path, args: &[&str]) -> std::process::Output {
    Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("HOME", dir)
        .output()
        .expect("git (scripts/test.sh installs it)")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn git_clones_and_fetches_through_the_readonly_rules_and_a_push_is_refused() {
    let work = tempfile::tempdir().unwrap();
    let root = work.path().join("repos");
    std::fs::create_dir_all(root.join("acme")).unwrap();
    let origin = work.path().join("origin");
    std::fs::create_dir_all(&origin).unwrap();
    for args in [
        &["init", "-q", "-b", "main", "."][..],
        &["config", "user.email", "t@example.com"],
        &["config", "user.name", "t"],
    ] {
        assert!(git(&origin, args).status.success());
    }
    std::fs::write(origin.join("README"), "first\n").unwrap();
    git(&origin, &["add", "README"]);
    assert!(git(&origin, &["commit", "-qm", "first"]).status.success());
    let bare = root.join("acme/app.git");
    let out = git(
        work.path(),
        &[
            "clone",
            "-q",
            "--bare",
            origin.to_str().unwrap(),
            bare.to_str().unwrap(),
        ],
    );
    assert!(out.status.success(), "{out:?}");

    let (port, _seen, _up) = git_server(&root).await;
    let rules = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/rules/gitlab-readonly.yaml");
    let g = start(
        &format!(
            "      upstream: http://127.0.0.1:{port}\n      allow_file: {}\n",
            rules.display()
        ),
        "",
    );
    let url = format!("http://oauth2:{TOKEN}@127.0.0.1:{}/acme/app.git", g.remote);
    let clone = work.path().join("clone");
    let out = git(work.path(), &["clone", "-q", &url, clone.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "clone: {out:?}\n{}",
        g.agent.evidence()
    );
    assert_eq!(
        std::fs::read_to_string(clone.join("README")).unwrap(),
        "first\n"
    );

    // A new commit upstream, fetched through the gateway.
    std::fs::write(origin.join("README"), "second\n").unwrap();
    git(&origin, &["commit", "-qam", "second"]);
    let out = git(&origin, &["push", "-q", bare.to_str().unwrap(), "main"]);
    assert!(out.status.success(), "{out:?}");
    let out = git(&clone, &["pull", "-q", "--ff-only"]);
    assert!(out.status.success(), "fetch: {out:?}");
    assert_eq!(
        std::fs::read_to_string(clone.join("README")).unwrap(),
        "second\n"
    );

    // A push is refused by the rules (git-receive-pack is in no rule).
    for args in [
        &["config", "user.email", "t@example.com"][..],
        &["config", "user.name", "t"],
    ] {
        git(&clone, args);
    }
    std::fs::write(clone.join("README"), "vendor was here\n").unwrap();
    git(&clone, &["commit", "-qam", "vendor"]);
    let out = git(&clone, &["push", "-q", "origin", "main"]);
    assert!(!out.status.success(), "the push went through");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("403"), "{stderr}");
    let refused: Vec<_> = g
        .requests()
        .into_iter()
        .filter(|r| r["status"] == 403)
        .collect();
    assert!(!refused.is_empty());
    assert!(
        refused[0]["query"]
            .as_str()
            .unwrap_or("")
            .contains("service")
    );
}

/// Bytes of the recorder's `/bytes/N` pattern checked as they arrive: (length, mismatch at).
async fn read_pattern(mut c: TcpStream, expected: u64) -> (u64, Option<u64>) {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if c.read_exact(&mut byte).await.is_err() {
            return (0, Some(0));
        }
        head.push(byte[0]);
    }
    let mut at = 0u64;
    let mut buf = vec![0u8; 256 * 1024];
    while at < expected {
        let n = c.read(&mut buf).await.unwrap_or(0);
        if n == 0 {
            break;
        }
        let want = crate::support::upstream::piece_at(at, n);
        if want[..] != buf[..n] {
            return (at, Some(at));
        }
        at += n as u64;
    }
    (at, None)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_gib_stream_down_and_up_with_the_agents_memory_flat() {
    const GIB2: u64 = 2 << 30;
    let (port, _seen, _up) = recorder(None).await;
    let g = start(
        &format!(
            "      upstream: http://127.0.0.1:{port}\n      allow: [\"GET /bytes/*\", \"POST /upload\"]\n"
        ),
        "",
    );
    let before = g.agent.status_kib("VmRSS");
    let mut c = TcpStream::connect(("127.0.0.1", g.remote)).await.unwrap();
    c.write_all(
        format!(
            "GET /bytes/{GIB2} HTTP/1.1\r\nHost: x\r\n{}\r\nConnection: close\r\n\r\n",
            bearer()
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    let (got, bad) = tokio::time::timeout(Duration::from_secs(300), read_pattern(c, GIB2))
        .await
        .expect("the download did not finish in 300 s");
    assert_eq!((got, bad), (GIB2, None));

    // Upload: chunked from the vendor, streamed to the upstream, which answers with its hash.
    let mut c = TcpStream::connect(("127.0.0.1", g.remote)).await.unwrap();
    c.write_all(format!("POST /upload HTTP/1.1\r\nHost: x\r\n{}\r\nContent-Length: {GIB2}\r\nConnection: close\r\n\r\n", bearer()).as_bytes())
        .await
        .unwrap();
    let mut sent = 0u64;
    let mut hash = crate::support::inproc::fnv(0, &[]);
    let upload = async {
        while sent < GIB2 {
            let piece =
                crate::support::upstream::piece_at(sent, (1 << 20).min((GIB2 - sent) as usize));
            hash = crate::support::inproc::fnv(hash, &piece);
            c.write_all(&piece).await.unwrap();
            sent += piece.len() as u64;
        }
        let mut answer = String::new();
        c.read_to_string(&mut answer).await.unwrap();
        answer
    };
    let answer = tokio::time::timeout(Duration::from_secs(300), upload)
        .await
        .expect("the upload did not finish in 300 s");
    assert!(answer.ends_with(&format!("{GIB2} {hash:x}")), "{answer}");
    let peak = g.agent.status_kib("VmHWM");
    assert!(
        peak < before + 64 * 1024,
        "peak RSS {peak} KiB, {before} KiB before: bodies were buffered"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_and_tokens_rotate_on_reload_without_a_restart() {
    let (port, _seen, _up) = recorder(None).await;
    let second = "second-token-Uu3b8Lq0Vx5Zc2Nn7Mm4Kk1Jj6Hh9Gg";
    let g = start(
        &format!(
            "      upstream: http://127.0.0.1:{port}\n      inject:\n        PRIVATE-TOKEN: {{ file: SECRET_FILE }}\n      allow: [\"GET /echo-headers\"]\n"
        ),
        "",
    );
    let (status, body) = curl(&["-H", &bearer(), &g.url("/echo-headers")]);
    assert_eq!(status, 200);
    assert!(body.contains(SECRET));
    // The customer rotates the upstream credential and adds the vendor's next token.
    std::fs::write(g.dir.path().join("gitlab-token"), "rotated-secret-42\n").unwrap();
    let config = g.dir.path().join("agent.yaml");
    let yaml = std::fs::read_to_string(&config).unwrap().replace(
        &format!("vendor_tokens: [\"{}\"]", token_hash(TOKEN)),
        &format!(
            "vendor_tokens: [\"{}\", \"{}\"]",
            token_hash(TOKEN),
            token_hash(second)
        ),
    );
    std::fs::write(&config, yaml).unwrap();
    crate::support::sshd::signal(g.agent.pid() as i32, "HUP");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let (status, body) = curl(&[
            "-H",
            &format!("Authorization: Bearer {second}"),
            &g.url("/echo-headers"),
        ]);
        if status == 200 {
            assert!(body.contains("private-token: rotated-secret-42"), "{body}");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the reload never took:\n{}",
            g.agent.evidence()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Both tokens work during the rotation; the audit trail tells them apart by index.
    let (status, _) = curl(&["-H", &bearer(), &g.url("/echo-headers")]);
    assert_eq!(status, 200);
    let tokens: Vec<String> = g
        .requests()
        .iter()
        .filter(|r| r["status"] == 200)
        .map(|r| r["token"].as_str().unwrap()[..2].to_string())
        .collect();
    assert_eq!(tokens.first().map(String::as_str), Some("0:"));
    assert_eq!(tokens.last().map(String::as_str), Some("0:"));
    assert!(tokens.iter().any(|t| t == "1:"), "{tokens:?}");
    assert!(!g.agent.printed("rotated-secret-42"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vendor_token_header_lets_the_vendors_own_authorization_through() {
    let (port, seen, _up) = recorder(None).await;
    let g = start(
        &format!(
            "      upstream: http://127.0.0.1:{port}\n      vendor_token_header: X-Vendor-Token\n      allow: [\"GET /echo-headers\"]\n"
        ),
        "",
    );
    let (status, body) = curl(&[
        "-H",
        &format!("X-Vendor-Token: {TOKEN}"),
        "-H",
        "Authorization: token vendors-own-upstream-credential",
        &g.url("/echo-headers"),
    ]);
    assert_eq!(status, 200, "{body}");
    assert!(
        body.contains("authorization: token vendors-own-upstream-credential"),
        "{body}"
    );
    assert!(
        !seen.text().contains(TOKEN),
        "the token's header went upstream"
    );
    // The token in Authorization is not read when the forward names another header.
    let (status, _) = curl(&["-H", &bearer(), &g.url("/echo-headers")]);
    assert_eq!(status, 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_serves_tls_inside_the_tunnel_with_the_fingerprint_it_logs() {
    let (port, _seen, _up) = recorder(None).await;
    let g = start(
        &format!(
            "      upstream: http://127.0.0.1:{port}\n      listen_tls: true\n      allow: [\"GET /hello\"]\n"
        ),
        "",
    );
    // curl pins nothing by fingerprint: -k, then the served certificate is compared with the
    // one the agent keeps in its state folder.
    let (status, body) = curl(&[
        "-k",
        "-H",
        &bearer(),
        &format!("https://127.0.0.1:{}/hello", g.remote),
    ]);
    assert_eq!(
        (status, body.as_str()),
        (200, "ok GET /hello"),
        "{}",
        g.agent.evidence()
    );
    let pem = std::fs::read_to_string(g.dir.path().join("state/gateway-gitlab.pem")).unwrap();
    let der = rustls::pki_types::CertificateDer::from_pem_slice(pem.as_bytes()).unwrap();
    let fingerprint = agent::gateway::served_tls::fingerprint(&der);
    assert!(g.agent.printed(&fingerprint), "{}", g.agent.evidence());
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "openssl s_client -connect 127.0.0.1:{} </dev/null 2>/dev/null | openssl x509 -outform DER | sha256sum",
            g.remote
        ))
        .output()
        .unwrap();
    let served = String::from_utf8_lossy(&out.stdout);
    assert!(
        fingerprint.ends_with(served.split_whitespace().next().unwrap_or("?")),
        "served {served}, kept {fingerprint}"
    );
    // Plain HTTP on the TLS port gets nothing upstream.
    let (status, _) = curl(&["-H", &bearer(), &g.url("/hello")]);
    assert_ne!(status, 200);
}

/// An agent with one CONNECT forward (`connect:`) named `egress`, against a real sshd.
fn start_connect(allow: &str) -> Gateway {
    let forward = |remote: u16| {
        format!(
            "  - name: egress\n    remote: \"127.0.0.1:{remote}\"\n    connect:\n      allow: [{allow}]\n      vendor_tokens: [\"{}\"]\n",
            token_hash(TOKEN)
        )
    };
    start_forward(
        tempfile::tempdir().unwrap(),
        forward,
        "log: { format: json }\n",
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connect_forward_tunnels_only_to_listed_pairs_with_the_token() {
    let (port, seen, _up) = recorder(None).await;
    let other = crate::support::targets::closed_port();
    let g = start_connect(&format!("\"127.0.0.1:{port}\""));
    let proxy = format!("http://127.0.0.1:{}", g.remote);
    // curl through the CONNECT proxy (-p: tunnel even for http://), token as the password.
    let target = format!("http://127.0.0.1:{port}/through-the-tunnel");
    let out = Command::new("curl")
        .args([
            "-sS",
            "--max-time",
            "20",
            "-p",
            "-x",
            &proxy,
            "-U",
            &format!("vendor:{TOKEN}"),
            &target,
        ])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "ok GET /through-the-tunnel",
        "{out:?}\n{}",
        g.agent.evidence()
    );
    assert!(!seen.text().contains(TOKEN));
    // Without the token: 407. Another pair: 403.
    let answer = g
        .raw(format!("CONNECT 127.0.0.1:{port} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
        .await;
    assert!(answer.starts_with("HTTP/1.1 407"), "{answer}");
    assert!(
        answer.to_lowercase().contains("proxy-authenticate: basic"),
        "{answer}"
    );
    let basic = base64ct::Base64::encode_string(format!("v:{TOKEN}").as_bytes());
    let answer = g
        .raw(
            format!(
                "CONNECT 127.0.0.1:{other} HTTP/1.1\r\nProxy-Authorization: Basic {basic}\r\n\r\n"
            )
            .as_bytes(),
        )
        .await;
    assert!(answer.starts_with("HTTP/1.1 403"), "{answer}");
    let answer = g
        .raw(format!("GET http://127.0.0.1:{port}/ HTTP/1.1\r\nProxy-Authorization: Basic {basic}\r\n\r\n").as_bytes())
        .await;
    assert!(answer.starts_with("HTTP/1.1 405"), "{answer}");
    let records = g.requests();
    let statuses: Vec<u64> = records
        .iter()
        .map(|r| r["status"].as_u64().unwrap())
        .collect();
    assert_eq!(statuses, [200, 407, 403, 405], "{records:#?}");
    assert!(records[0]["to_upstream"].as_u64().unwrap() > 0);
}

#[test]
fn token_new_prints_a_token_once_and_the_line_that_accepts_it() {
    let out = Command::new(env!("CARGO_BIN_EXE_agent"))
        .args(["token", "new", "gitlab"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    let token = text
        .lines()
        .find_map(|l| l.strip_prefix("token for the vendor (shown once, stored nowhere): "))
        .expect(&text)
        .trim();
    assert!(token.len() >= 43, "{token}");
    assert!(text.contains(&token_hash(token)), "{text}");
    let again = Command::new(env!("CARGO_BIN_EXE_agent"))
        .args(["token", "new", "gitlab"])
        .output()
        .unwrap();
    assert!(!String::from_utf8_lossy(&again.stdout).contains(token));
}
