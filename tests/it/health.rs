//! What `agent health`, `agent status` and `/readyz` say about a running agent (the release
//! binary's twin, `CARGO_BIN_EXE_agent`, against a real sshd): a target that is down, a pause,
//! and an admin address the config file no longer names.

use crate::support;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::support::READY;
use crate::support::agent_process::{AgentProcess, get};
use crate::support::inproc::{Fwd, config_yaml, echo_exact};
use crate::support::sshd::Sshd;
use crate::support::targets;

fn cli(config: &Path, args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_agent"))
        .arg("-c")
        .arg(config)
        .args(args)
        .env_remove("AGENT_CONFIG")
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

/// Polls `/readyz` until `cond(status, body)` holds; the last answer if it never does.
async fn readyz_until(
    admin: std::net::SocketAddr,
    within: Duration,
    cond: impl Fn(u16, &serde_json::Value) -> bool,
) -> Result<serde_json::Value, String> {
    let started = Instant::now();
    loop {
        let (status, body, _) = get(admin, "/readyz", Duration::from_secs(5)).await?;
        let json: serde_json::Value = serde_json::from_str(&body).map_err(|e| e.to_string())?;
        if cond(status, &json) {
            return Ok(json);
        }
        if started.elapsed() > within {
            return Err(format!("last /readyz ({status}): {body}"));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Forward `name` of a `/readyz` report (null until the agent lists it).
fn forward<'a>(report: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    report["forwards"]
        .as_array()
        .and_then(|f| f.iter().find(|f| f["name"] == name))
        .unwrap_or(&serde_json::Value::Null)
}

struct Site {
    dir: tempfile::TempDir,
    _sshd: Sshd,
    agent: AgentProcess,
    admin: std::net::SocketAddr,
    /// The forward whose target is down at first (nothing listens on `jira_target`).
    jira: u16,
    jira_target: u16,
    _wiki: targets::Task,
}

impl Site {
    async fn start(extra: &str) -> Site {
        let dir = tempfile::tempdir().unwrap();
        let (key, public) = support::agent_key(dir.path());
        let sshd = Sshd::start(&public);
        let (wiki_target, wiki_task) = targets::echo().await;
        let jira_target = support::free_port();
        let (wiki, jira) = (support::free_port(), support::free_port());
        let yaml = config_yaml(
            &[sshd.port],
            &sshd.host_key_fingerprint,
            &sshd.user(),
            &key,
            &[
                Fwd("wiki", wiki, wiki_target),
                Fwd("jira", jira, jira_target),
            ],
            &format!("log: {{ format: json }}\n{extra}"),
        )
        .replace(
            "admin: { listen: \"off\" }",
            "admin: { listen: \"127.0.0.1:0\" }",
        );
        let config = dir.path().join("agent.yaml");
        std::fs::write(&config, yaml).unwrap();
        let (agent, admin) =
            AgentProcess::start(Path::new(env!("CARGO_BIN_EXE_agent")), &config, READY);
        Site {
            dir,
            _sshd: sshd,
            agent,
            admin,
            jira,
            jira_target,
            _wiki: wiki_task,
        }
    }

    fn config(&self) -> PathBuf {
        self.dir.path().join("agent.yaml")
    }
}

/// A target nobody listens on: found by the agent's probe without any vendor connection, the
/// agent stays ready (the default `health.target_down: ready`) and every report says the forward
/// is degraded; once the target listens, a vendor connection reaches it and the reports say so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_target_that_is_down_is_reported_degraded_everywhere() {
    let site = Site::start("").await;
    let report = readyz_until(site.admin, READY, |status, r| {
        status == 200 && forward(r, "jira")["target_state"] == "down"
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", site.agent.evidence()));
    // The other target was probed too, and answered.
    assert_eq!(forward(&report, "wiki")["target_state"], "up", "{report}");
    let degraded = report["degraded"].to_string();
    assert!(
        degraded.contains("jira") && degraded.contains(&site.jira_target.to_string()),
        "{report}"
    );

    let (_, metrics, _) = get(site.admin, "/metrics", Duration::from_secs(5))
        .await
        .unwrap();
    assert!(
        metrics.contains("agent_forward_target_up{forward=\"jira\"} 0")
            && metrics.contains("agent_forward_target_up{forward=\"wiki\"} 1"),
        "{metrics}"
    );
    let (code, out) = cli(&site.config(), &["health"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("degraded: forward jira: target down"), "{out}");
    let (code, out) = cli(&site.config(), &["status"]);
    assert_eq!(code, 0, "{out}");
    let row = out
        .lines()
        .find(|l| l.starts_with("jira"))
        .unwrap_or_default();
    assert!(row.trim_end().ends_with("down"), "{out}");
    assert!(out.contains("degraded: target 127.0.0.1:"), "{out}");
    // One line when it went down, however often it was probed since.
    assert_eq!(
        site.agent.logged("target down"),
        1,
        "{}",
        site.agent.evidence()
    );

    // The target comes up: a vendor connection reaches it and the reports follow at once.
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", site.jira_target))
        .await
        .unwrap();
    let _echo = targets::echo_on(listener);
    echo_exact(site.jira, 1000, 3, Duration::from_secs(10))
        .await
        .unwrap();
    readyz_until(site.admin, Duration::from_secs(2), |status, r| {
        status == 200 && forward(r, "jira")["target_state"] == "up"
    })
    .await
    .unwrap();
    let logged = Instant::now();
    while site.agent.logged("target answers again") == 0 && logged.elapsed() < READY {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        site.agent.logged("target answers again"),
        1,
        "{}",
        site.agent.evidence()
    );
}

/// `health.target_down: not_ready`: the same target makes the agent not ready, and says why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_target_down_makes_the_agent_not_ready_when_the_config_says_so() {
    let site = Site::start("health: { target_down: not_ready }\n").await;
    let report = readyz_until(site.admin, READY, |status, r| {
        status == 503 && forward(r, "jira")["target_state"] == "down"
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", site.agent.evidence()));
    assert!(
        report["reasons"].to_string().contains("target down"),
        "{report}"
    );
    let (code, out) = cli(&site.config(), &["health"]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("not ready") && out.contains("jira"), "{out}");
}

/// A pause is named by `agent health` and `/readyz` (state "paused"), its reason and who gave it
/// only by `agent status`; and after a reload that moved `admin.listen` in the file (applied at
/// restart only), `agent health` still asks the endpoint the agent actually serves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pauses_are_named_without_their_reason_and_health_finds_the_running_endpoint() {
    let site = Site::start("").await;
    readyz_until(site.admin, READY, |status, _| status == 200)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", site.agent.evidence()));
    let secret = "INC-77 vendor account suspected compromised";
    let (code, out) = cli(&site.config(), &["pause", "jira", "--reason", secret]);
    assert_eq!(code, 0, "{out}");
    let report = readyz_until(site.admin, Duration::from_secs(3), |_, r| {
        forward(r, "jira")["state"] == "paused"
    })
    .await
    .unwrap();
    let (_, body, _) = get(site.admin, "/readyz", Duration::from_secs(5))
        .await
        .unwrap();
    assert!(!body.contains("INC-77"), "{body}");
    assert_eq!(report["closed_by_policy"][0]["name"], "jira", "{report}");
    assert_eq!(report["closed_by_policy"][0]["why"], "paused", "{report}");
    assert_eq!(
        report["ready"], true,
        "a pause is the customer's decision, not a failure"
    );

    let (code, out) = cli(&site.config(), &["health"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("paused") && !out.contains("INC-77"), "{out}");
    let (_, out) = cli(&site.config(), &["status"]);
    assert!(out.contains("INC-77"), "{out}");

    // The file now names another admin port; the agent keeps its own until restarted.
    let moved = support::free_port();
    let config = std::fs::read_to_string(site.config()).unwrap();
    let config = config.replace("127.0.0.1:0", &format!("127.0.0.1:{moved}"));
    std::fs::write(site.config(), config).unwrap();
    support::sshd::signal(site.agent.pid() as i32, "HUP");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (code, out) = cli(&site.config(), &["health"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.starts_with("ready"), "{out}");
}

/// Under a low open-files limit (set with `prlimit`, soft below hard): the agent raises its
/// soft limit to the hard one, lowers `limits.max_connections` to fit with a warning, and when
/// the vendor opens more connections than descriptors exist, `agent pause` and `/healthz` still
/// work: the vendor's connections past the cap are refused, not given the last descriptors.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vendor_cannot_take_the_descriptors_control_and_health_need() {
    let dir = tempfile::tempdir().unwrap();
    let (key, public) = support::agent_key(dir.path());
    let sshd = Sshd::start(&public);
    let (held_target, _held) = targets::sink_never_reads().await;
    let remote = support::free_port();
    let yaml = config_yaml(
        &[sshd.port],
        &sshd.host_key_fingerprint,
        &sshd.user(),
        &key,
        &[Fwd("held", remote, held_target)],
        "log: { format: json }\n",
    )
    .replace(
        "admin: { listen: \"off\" }",
        "admin: { listen: \"127.0.0.1:0\" }",
    );
    let config = dir.path().join("agent.yaml");
    std::fs::write(&config, yaml).unwrap();
    let hard = 320;
    let (agent, admin) = AgentProcess::start_under(
        &["prlimit", &format!("--nofile=100:{hard}"), "--"],
        Path::new(env!("CARGO_BIN_EXE_agent")),
        &config,
        READY,
    );
    readyz_until(admin, READY, |status, _| status == 200)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", agent.evidence()));
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", agent.pid())).unwrap();
    let open_files = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap();
    assert!(
        open_files.split_whitespace().nth(3) == Some(&hard.to_string()),
        "soft limit not raised to the hard one: {open_files}"
    );
    assert_eq!(
        agent.logged(
            "limits.max_connections lowered to fit the open-files limit (it keeps 160 for control, health and audit); raise LimitNOFILE (systemd) or `ulimit -n` to allow more"
        ),
        1,
        "{}",
        agent.evidence()
    );

    // More vendor connections than the agent has descriptors, all held open.
    let mut vendor = Vec::new();
    for _ in 0..hard + 80 {
        if let Ok(c) = tokio::net::TcpStream::connect(("127.0.0.1", remote)).await {
            vendor.push(c);
        }
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (status, _, took) = get(admin, "/healthz", Duration::from_secs(5))
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", agent.evidence()));
    assert_eq!(status, 200, "healthz took {took:?}");
    let (code, out) = cli(&config, &["pause", "--reason", "descriptor test"]);
    assert_eq!(code, 0, "{out}\n{}", agent.evidence());
    assert!(out.contains("applied by the running agent"), "{out}");
    assert!(
        agent.logged("rejected forwarded connection: limits.max_connections reached") > 0,
        "{}",
        agent.evidence()
    );
    drop(vendor);
}

/// A standby's forward is refused for as long as the active agent holds the port: that is its
/// normal state, so it is one WARN line (then a count every 10 minutes), never an ERROR that
/// pages whoever alerts on them, however often it retries.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standbys_refused_forward_is_one_warning_not_an_error_per_retry() {
    let site = Site::start("").await;
    readyz_until(site.admin, READY, |status, _| status == 200)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", site.agent.evidence()));
    let (standby, standby_admin) = AgentProcess::start(
        Path::new(env!("CARGO_BIN_EXE_agent")),
        &site.config(),
        READY,
    );
    readyz_until(standby_admin, READY, |_, r| {
        forward(r, "wiki")["state"] == "refused"
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", standby.evidence()));
    // Retries 0.5 to 1 s apart at first, then growing: several more refusals.
    tokio::time::sleep(Duration::from_secs(9)).await;
    let (errors, _) = standby.logged_at("ERROR");
    assert_eq!(errors, 0, "{}", standby.evidence());
    // Both forwards are refused: one line each.
    assert_eq!(
        standby.logged_starting("forward refused: "),
        2,
        "{}",
        standby.evidence()
    );
    assert_eq!(standby.logged_starting("forward still refused"), 0);
}

/// A server nobody answers for: each failed dial is one line, with its cause and when the next
/// one starts; the session number does not count failed dials.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_failed_dial_is_one_line_with_its_cause() {
    let dir = tempfile::tempdir().unwrap();
    let (key, _) = support::agent_key(dir.path());
    let closed = targets::closed_port();
    let yaml = config_yaml(
        &[closed],
        "SHA256:nThbg6kXUpJWGl7E1IGOCspRomTxdCARLviKw6E5SY8",
        "acme",
        &key,
        &[Fwd("wiki", support::free_port(), support::free_port())],
        "log: { format: json }\n",
    )
    .replace(
        "admin: { listen: \"off\" }",
        "admin: { listen: \"127.0.0.1:0\" }",
    );
    let config = dir.path().join("agent.yaml");
    std::fs::write(&config, yaml).unwrap();
    let (agent, _) = AgentProcess::start(Path::new(env!("CARGO_BIN_EXE_agent")), &config, READY);
    // reconnect: { initial: 200ms, max: 2s }: several dials.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let dials: Vec<serde_json::Value> = agent
        .recent()
        .into_iter()
        .filter(|l| l["span"]["name"] == "session")
        .collect();
    assert!(dials.len() >= 3, "{}", agent.evidence());
    for line in &dials {
        assert_eq!(line["level"], "WARN", "{line}");
        assert!(line["fields"]["retry_in_s"].is_string(), "{line}");
        let message = line["fields"]["message"].as_str().unwrap();
        assert!(message.contains(&closed.to_string()), "{line}");
        assert_eq!(
            line["span"]["n"], 1,
            "sessions, not dials, are counted: {line}"
        );
    }
}
