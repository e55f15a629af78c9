//! The hostile-server suite (issue #18): the release binary against a vendor server that is
//! neither russh nor OpenSSH (tests/hostile/server.py, paramiko) and misbehaves on purpose.
//!
//! Each test starts that server and `agent run` (the release build, `AGENT_RELEASE_BIN`, which
//! scripts/test.sh builds and exports) with two listed forwards: `echo`, whose target echoes,
//! and `sink`, whose target neither reads nor closes (until a test lets it read). Both targets count the connections they
//! accept, and so do two decoy listeners that are listed nowhere: the server names them as
//! destinations and originators. The server runs one scenario, and every test asserts what no
//! scenario may change:
//! - the agent's peak memory (VmHWM) stays within `budget::memory_bound` for the limits used;
//! - /healthz answers within 1 s all through the scenario and after it;
//! - the process still runs and printed no panic;
//! - no decoy was dialed, and each listed target counted exactly the connections the server
//!   saw accepted;
//!
//! and, per scenario, whether the session survives (a keepalive and an echo from the server
//! after the scenario, /readyz, the reconnect count) and what the agent refused or closed.
//! Run one with `--nocapture` to see its numbers (`hostile SCENARIO: VmHWM ...`).

use crate::support;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::support::READY;
use crate::support::agent_process::{AgentProcess, get};
use crate::support::inproc::{Fwd, config_yaml};
use crate::support::targets::{self, Accepted, Task};
use agent::admin::client::{Health, check};
use agent::config::Limits;
use agent::tunnel::budget::memory_bound;
use serde_json::{Value, json};
use tokio::sync::mpsc::UnboundedReceiver;

/// The agent binary under test; scripts/test.sh builds it and sets this.
const BIN_ENV: &str = "AGENT_RELEASE_BIN";
/// The Python that runs the server, if not `python3` (one that can `import paramiko`).
const PYTHON_ENV: &str = "AGENT_TEST_PYTHON";
const SERVER: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/hostile/server.py");

/// The remote ports the agent asks for. The server never listens on them, and they are below
/// the kernel's ephemeral range, so no local listener of the test (the decoys) has them.
const ECHO_REMOTE: u16 = 3001;
const SINK_REMOTE: u16 = 3002;
const MAX_CONNECTIONS: u64 = 64;
const LIMITS: &str =
    "limits: { max_connections: 64, total_buffer: 16MiB, connection_buffer: 1MiB }";

const SCENARIO_TIME: Duration = Duration::from_secs(180);
const HEALTHZ_WITHIN: Duration = Duration::from_secs(1);
/// How long a target may take to have counted a connection the agent already dialed.
const COUNTED_WITHIN: Duration = Duration::from_secs(5);

/// How scripts/test.sh (and scripts/package.sh, the Containerfile) build the binary that ships.
const BUILD_STATIC: &str = "RUSTFLAGS='-C target-feature=+crt-static' cargo build --locked \
     --release --target x86_64-unknown-linux-gnu --bin agent";

fn release_bin() -> PathBuf {
    let Some(bin) = std::env::var_os(BIN_ENV) else {
        panic!(
            "{BIN_ENV} is not set: the hostile suite runs against the static release binary \
             that ships. Run scripts/test.sh, or: {BUILD_STATIC} && \
             {BIN_ENV}=$PWD/target/x86_64-unknown-linux-gnu/release/agent cargo test --test it hostile::"
        );
    };
    let bin = PathBuf::from(bin);
    let elf = std::fs::read(&bin).unwrap_or_else(|e| {
        panic!(
            "{BIN_ENV}={}: {e}: build it with {BUILD_STATIC}",
            bin.display()
        )
    });
    assert!(
        !has_interpreter(&elf),
        "{BIN_ENV}={} is linked dynamically (it names a program interpreter): the suite runs the \
         static binary that ships; build it with {BUILD_STATIC}",
        bin.display()
    );
    bin
}

/// Whether a 64-bit little-endian ELF file has a PT_INTERP program header (a dynamically
/// linked program names its loader there; a static one has none).
fn has_interpreter(elf: &[u8]) -> bool {
    const PT_INTERP: u32 = 3;
    let at = |offset: usize, len: usize| -> u64 {
        let bytes = elf
            .get(offset..offset + len)
            .expect("a truncated ELF header");
        bytes.iter().rev().fold(0, |n, b| (n << 8) | u64::from(*b))
    };
    assert_eq!(elf.get(..4), Some(&b"\x7fELF"[..]), "not an ELF file");
    assert_eq!(
        (elf[4], elf[5]),
        (2, 1),
        "not a 64-bit little-endian ELF file"
    );
    let (table, size, count) = (
        at(0x20, 8) as usize,
        at(0x36, 2) as usize,
        at(0x38, 2) as usize,
    );
    (0..count).any(|i| at(table + i * size, 4) as u32 == PT_INTERP)
}

/// A listener of the test that counts the connections it accepted.
struct Target {
    port: u16,
    accepted: Accepted,
    _task: Task,
}

impl Target {
    fn new((port, accepted, task): (u16, Accepted, Task)) -> Self {
        Self {
            port,
            accepted,
            _task: task,
        }
    }

    fn count(&self) -> u64 {
        self.accepted.load(Ordering::SeqCst) as u64
    }
}

/// tests/hostile/server.py, driven on stdin; its JSON lines arrive on `lines`.
struct HostileServer {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: UnboundedReceiver<String>,
    stderr: Arc<Mutex<String>>,
    port: u16,
    fingerprint: String,
}

impl HostileServer {
    async fn start(authorized_key: &Path, decoys: &[u16]) -> Self {
        let python = std::env::var(PYTHON_ENV).unwrap_or_else(|_| "python3".into());
        let mut cmd = Command::new(&python);
        cmd.arg(SERVER)
            .arg("--authorized-key")
            .arg(authorized_key)
            .args(["--echo-port", &ECHO_REMOTE.to_string()])
            .args(["--sink-port", &SINK_REMOTE.to_string()]);
        for d in decoys {
            cmd.args(["--decoy", &d.to_string()]);
        }
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot run {python}: {e}; scripts/test.sh installs python3-paramiko")
            });
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().expect("piped stdout");
        let mut stderr_pipe = child.stderr.take().expect("piped stderr");
        let (tx, mut lines) = tokio::sync::mpsc::unbounded_channel();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
            {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let stderr = Arc::new(Mutex::new(String::new()));
        let sink = stderr.clone();
        let stderr_reader = std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n @ 1..) = std::io::Read::read(&mut stderr_pipe, &mut buf) {
                sink.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        let Ok(Some(first)) = tokio::time::timeout(READY, lines.recv()).await else {
            let _ = child.kill();
            let _ = child.wait();
            // The process is gone, so its stderr ends: a missing paramiko is an ImportError.
            let _ = stderr_reader.join();
            panic!(
                "the hostile server did not start (does `{python} -c 'import paramiko'` work? \
                 scripts/test.sh installs python3-paramiko):\n{}",
                stderr.lock().unwrap()
            );
        };
        let hello: Value = serde_json::from_str(&first).expect("the server's first line is JSON");
        assert_eq!(hello["event"], "listening", "{hello}");
        eprintln!("hostile server: paramiko {}", hello["paramiko"]);
        Self {
            child,
            stdin,
            lines,
            stderr,
            port: hello["port"].as_u64().expect("port") as u16,
            fingerprint: hello["fingerprint"].as_str().expect("fingerprint").into(),
        }
    }

    fn command(&mut self, line: &str) {
        use std::io::Write;
        let stdin = self.stdin.as_mut().expect("server stdin");
        writeln!(stdin, "{line}")
            .and_then(|()| stdin.flush())
            .expect("write a command to the hostile server");
    }
}

impl Drop for HostileServer {
    fn drop(&mut self) {
        // Its stdin closing stops it; the kill (this child's PID only) makes sure.
        drop(self.stdin.take());
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// /healthz while a scenario runs.
#[derive(Debug, Default)]
struct Healthz {
    answered: usize,
    slowest: Duration,
    failures: Vec<String>,
}

async fn poll_healthz(admin: SocketAddr, stop: Arc<AtomicBool>) -> Healthz {
    let mut h = Healthz::default();
    loop {
        let last = stop.load(Ordering::SeqCst);
        match get(admin, "/healthz", HEALTHZ_WITHIN).await {
            Ok((200, _, took)) => {
                h.answered += 1;
                h.slowest = h.slowest.max(took);
            }
            Ok((status, body, _)) => h.failures.push(format!("HTTP {status}: {body}")),
            Err(e) => h.failures.push(e),
        }
        if last {
            return h;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// What the server reported for one scenario.
struct Outcome {
    name: String,
    done: Value,
    events: Vec<Value>,
    healthz: Healthz,
}

impl Outcome {
    fn field(&self, key: &str) -> &Value {
        &self.done[key]
    }

    fn num(&self, key: &str) -> u64 {
        self.done[key]
            .as_u64()
            .unwrap_or_else(|| panic!("{}: no number {key} in {}", self.name, self.done))
    }

    fn flag(&self, key: &str) -> bool {
        self.done[key]
            .as_bool()
            .unwrap_or_else(|| panic!("{}: no flag {key} in {}", self.name, self.done))
    }

    fn events(&self, kind: &str) -> Vec<&Value> {
        self.events.iter().filter(|e| e["event"] == kind).collect()
    }
}

struct Rig {
    server: HostileServer,
    agent: AgentProcess,
    admin: SocketAddr,
    limits: Limits,
    echo: Target,
    sink: Target,
    /// Lets the sink target read (it holds its connections unread until then).
    release_sink: tokio::sync::watch::Sender<bool>,
    decoys: Vec<Target>,
    /// What the listed targets must have counted so far, from the server's reports.
    expect_echo: u64,
    expect_sink: u64,
    /// Lines the agent had logged when the last scenario ended.
    log_lines: usize,
    _dir: tempfile::TempDir,
}

/// Lines a scenario may make the agent log beside one per connection it served: a server
/// flooding a message kind must not turn the agent's log into its amplifier.
const LOG_LINES_PER_SCENARIO: usize = 200;

impl Rig {
    /// Server, targets and agent, with `limits` (a `limits:` line of agent.yaml); returns once
    /// the agent is ready (connected, both forwards granted).
    async fn start(limits: &str) -> Rig {
        let bin = release_bin();
        let dir = tempfile::tempdir().unwrap();
        let (key, public) = support::agent_key(dir.path());
        let public_file = dir.path().join("agent.pub");
        std::fs::write(&public_file, &public).unwrap();
        let echo = Target::new(targets::counting_echo().await);
        let (port, accepted, release_sink, task) = targets::counting_gated_sink().await;
        let sink = Target::new((port, accepted, task));
        let decoys = vec![
            Target::new(targets::counting_sink().await),
            Target::new(targets::counting_sink().await),
        ];
        for d in &decoys {
            assert!(![ECHO_REMOTE, SINK_REMOTE].contains(&d.port));
        }
        let ports: Vec<u16> = decoys.iter().map(|d| d.port).collect();
        let server = HostileServer::start(&public_file, &ports).await;
        let yaml = config_yaml(
            &[server.port],
            &server.fingerprint,
            "vendor",
            &key,
            &[
                Fwd("echo", ECHO_REMOTE, echo.port),
                Fwd("sink", SINK_REMOTE, sink.port),
            ],
            &format!("log: {{ format: json }}\n{limits}"),
        )
        .replace(
            "admin: { listen: \"off\" }",
            "admin: { listen: \"127.0.0.1:0\" }",
        );
        let file = dir.path().join("agent.yaml");
        std::fs::write(&file, &yaml).unwrap();
        let (config, _) = agent::run::load(&file)
            .unwrap_or_else(|e| panic!("test config invalid:\n{e}\n---\n{yaml}"));
        let (agent, admin) = AgentProcess::start(&bin, &file, READY);
        let rig = Rig {
            server,
            agent,
            admin,
            limits: config.limits,
            echo,
            sink,
            release_sink,
            decoys,
            expect_echo: 0,
            expect_sink: 0,
            log_lines: 0,
            _dir: dir,
        };
        let mut rig = rig;
        rig.wait_ready(0).await;
        rig.count_probes().await;
        rig
    }

    /// The agent dials each target once at start (a TCP probe of its health, closed at once):
    /// waits for both to be known, and counts those dials as expected.
    async fn count_probes(&mut self) {
        let deadline = Instant::now() + READY;
        loop {
            let health = check(self.admin).await;
            if let Health::Ready(r) = &health
                && r.forwards.iter().all(|f| f.target_state == "up")
            {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "targets not probed within {READY:?}: {health:?}\n{}",
                self.evidence()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.expect_echo = self.echo.count();
        self.expect_sink = self.sink.count();
        assert_eq!(
            (self.expect_echo, self.expect_sink),
            (1, 1),
            "one probe each"
        );
    }

    /// Waits until /readyz says ready after at least `reconnects` lost sessions.
    async fn wait_ready(&self, reconnects: u64) {
        let deadline = Instant::now() + READY;
        loop {
            let health = check(self.admin).await;
            if let Health::Ready(r) = &health
                && r.reconnects >= reconnects
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "agent not ready (after {reconnects} reconnects) within {READY:?}: {health:?}\n{}",
                self.evidence()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn evidence(&self) -> String {
        format!(
            "{}\n--- hostile server stderr:\n{}",
            self.agent.evidence(),
            self.server.stderr.lock().unwrap()
        )
    }

    /// Runs `name` on the server while /healthz is polled, checks what no scenario may change
    /// ([`Rig::assert_unharmed`]) and returns the server's report.
    async fn scenario(&mut self, name: &str, args: Value) -> Outcome {
        let out = self.run(name, args).await;
        self.assert_unharmed(&out).await;
        out
    }

    /// [`Rig::scenario`], after which the session it ran on must still be up and serving
    /// ([`Rig::assert_session_survived`]).
    async fn survived(&mut self, name: &str, args: Value) -> Outcome {
        let out = self.scenario(name, args).await;
        self.assert_session_survived(&out).await;
        out
    }

    async fn run(&mut self, name: &str, args: Value) -> Outcome {
        let stop = Arc::new(AtomicBool::new(false));
        let poller = tokio::spawn(poll_healthz(self.admin, stop.clone()));
        self.server.command(&format!("{name} {args}"));
        let deadline = Instant::now() + SCENARIO_TIME;
        let mut events = Vec::new();
        let done = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, self.server.lines.recv()).await {
                Ok(Some(line)) => {
                    let event: Value = serde_json::from_str(&line)
                        .unwrap_or_else(|e| panic!("not JSON from the server ({e}): {line}"));
                    if event["event"] == "done" {
                        break event;
                    }
                    events.push(event);
                }
                Ok(None) => panic!(
                    "the hostile server exited during {name}\n{}",
                    self.evidence()
                ),
                Err(_) => panic!(
                    "{name} not done within {SCENARIO_TIME:?}\n{}",
                    self.evidence()
                ),
            }
        };
        stop.store(true, Ordering::SeqCst);
        let healthz = poller.await.expect("healthz poller");
        assert!(
            done.get("error").is_none(),
            "{name} could not run: {done}\n{}",
            self.evidence()
        );
        Outcome {
            name: name.into(),
            done,
            events,
            healthz,
        }
    }

    /// What must hold after any scenario: memory, liveness, no panic, nothing unlisted dialed,
    /// the listed targets dialed exactly as often as the server saw channels accepted.
    async fn assert_unharmed(&mut self, out: &Outcome) {
        let name = &out.name;
        let hwm = self.agent.status_kib("VmHWM");
        let bound = memory_bound(&self.limits) / 1024;
        let (warnings, lines) = self.agent.logged_at("WARN");
        eprintln!(
            "hostile {name}: VmHWM {hwm} KiB of bound {bound} KiB; /healthz answered {} times, \
             slowest {:?}; agent log {lines} lines so far ({warnings} WARN); report {}",
            out.healthz.answered, out.healthz.slowest, out.done
        );
        assert!(
            self.agent.running(),
            "the agent exited during {name}\n{}",
            self.evidence()
        );
        assert!(
            !self.agent.stderr().contains("panicked"),
            "the agent panicked during {name}\n{}",
            self.evidence()
        );
        assert!(
            hwm <= bound,
            "peak memory {hwm} KiB past the documented bound {bound} KiB during {name}\n{}",
            self.evidence()
        );
        assert!(
            out.healthz.failures.is_empty() && out.healthz.answered > 0,
            "/healthz did not answer within {HEALTHZ_WITHIN:?} during {name}: {:?}",
            out.healthz
        );
        let after = get(self.admin, "/healthz", HEALTHZ_WITHIN).await;
        assert!(
            matches!(after, Ok((200, _, _))),
            "/healthz after {name}: {after:?}"
        );

        let served = out.done["echo_accepted"].as_u64().unwrap_or(0)
            + u64::from(out.done["echo"] == true)
            + out.done["sink_accepted"].as_u64().unwrap_or(0);
        let logged = lines - self.log_lines;
        assert!(
            logged <= LOG_LINES_PER_SCENARIO + 2 * served as usize,
            "{name} made the agent log {logged} lines for {served} connections served\n{}",
            self.evidence()
        );
        self.log_lines = lines;
        self.expect_echo +=
            out.done["echo_accepted"].as_u64().unwrap_or(0) + u64::from(out.done["echo"] == true);
        self.expect_sink += out.done["sink_accepted"].as_u64().unwrap_or(0);
        for (target, expect, what) in [
            (&self.echo, self.expect_echo, "echo"),
            (&self.sink, self.expect_sink, "sink"),
        ] {
            let deadline = Instant::now() + COUNTED_WITHIN;
            while target.count() < expect && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            assert_eq!(
                target.count(),
                expect,
                "the {what} target was dialed {} times, the server saw {expect} channels \
                 accepted, after {name}",
                target.count()
            );
        }
        for d in &self.decoys {
            assert_eq!(
                d.count(),
                0,
                "port {} (listed nowhere) was dialed during {name}\n{}",
                d.port,
                self.evidence()
            );
        }
    }

    /// The session the scenario ran on is still up and serving: the server's keepalive and
    /// echo after it, /readyz ready, no reconnect.
    async fn assert_session_survived(&self, out: &Outcome) {
        let name = &out.name;
        assert!(
            out.flag("alive") && out.flag("echo"),
            "the session did not survive {name}: {}\n{}",
            out.done,
            self.evidence()
        );
        match check(self.admin).await {
            Health::Ready(r) => assert_eq!(
                r.reconnects,
                0,
                "the agent reconnected during {name}\n{}",
                self.evidence()
            ),
            other => panic!("not ready after {name}: {other:?}\n{}", self.evidence()),
        }
    }

    /// A sample of /metrics, by its full name with labels.
    async fn metric(&self, series: &str) -> f64 {
        let (status, body, _) = get(self.admin, "/metrics", Duration::from_secs(3))
            .await
            .expect("/metrics");
        assert_eq!(status, 200);
        body.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("no {series} in /metrics:\n{body}"))
    }

    /// The sum of every sample of a metric family, whatever its labels.
    async fn metric_sum(&self, family: &str) -> f64 {
        let (_, body, _) = get(self.admin, "/metrics", Duration::from_secs(3))
            .await
            .expect("/metrics");
        body.lines()
            .filter(|l| l.starts_with(&format!("{family}{{")))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn channels_of_unrequested_types_and_addresses_are_refused_and_nothing_unlisted_is_dialed() {
    let mut rig = Rig::start(LIMITS).await;
    let out = rig
        .survived("unrequested_channels", json!({ "raw": 3000 }))
        .await;
    let opens = out.events("open");
    assert!(opens.len() >= 15, "{:?}", out.events);
    for open in opens {
        if open["label"].as_str().unwrap().starts_with("control") {
            assert_eq!(open["result"], "accepted", "{open}");
        } else {
            assert_eq!(open["result"], "refused", "{open}");
        }
        if open["kind"] == "forwarded-tcpip" && open["result"] == "refused" {
            assert_eq!(open["code"], 1, "administratively prohibited: {open}");
        }
    }
    assert_eq!(out.num("accepted_unrequested"), 0);
    assert!(out.flag("control_echo"), "the listed forward is served");
    let flood = out.events("flood")[0];
    assert_eq!(out.num("raw_confirmed"), 0, "{flood}");
    assert_eq!(flood["all_answered"], true, "{flood}");
    assert_eq!(flood["distinct_refused"], 3000, "{flood}");
    // Their log lines are throttled (Rig::assert_unharmed bounds them); the metric counts all.
    let counted = rig.metric_sum("agent_server_channels_refused_total").await;
    assert!(counted >= 3000.0, "refusals counted: {counted}");
}

/// Every channel open the agent refuses gets one answer: a second CHANNEL_OPEN_FAILURE names
/// a channel id the server has already freed (OpenSSH disconnects on that).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_refused_channel_open_is_answered_exactly_once() {
    let mut rig = Rig::start(LIMITS).await;
    let out = rig
        .scenario("unrequested_channels", json!({ "raw": 1000 }))
        .await;
    let flood = out.events("flood")[0];
    assert_eq!(
        flood["refused"], flood["sent"],
        "some channel opens were answered more than once (refused_twice_by_kind): {flood}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn originators_that_are_not_an_ip_address_and_port_are_refused() {
    let mut rig = Rig::start(LIMITS).await;
    let out = rig.survived("odd_originators", json!({})).await;
    // The 100 KB originator is logged cut, with its length: the line stays a line.
    let (longest, start) = rig.agent.longest_line();
    assert!(longest < 1024, "a {longest}-byte log line: {start}");
    let huge = rig
        .agent
        .recent()
        .into_iter()
        .find(|e| {
            e["fields"]["originator"]
                .as_str()
                .is_some_and(|o| o.starts_with("AAAA"))
        })
        .unwrap_or_else(|| {
            panic!(
                "the huge originator's refusal was not logged\n{}",
                rig.evidence()
            )
        });
    assert!(
        huge["fields"]["originator"]
            .as_str()
            .unwrap()
            .ends_with("…(100000 bytes)"),
        "{huge}"
    );
    assert_eq!(out.num("refused"), out.num("bad"), "{}", out.done);
    assert_eq!(out.num("accepted_bad"), 0);
    assert_eq!(
        out.num("served"),
        out.num("good"),
        "well-formed ones are served"
    );
    for open in out.events("open") {
        if open["result"] == "refused" {
            assert_eq!(open["code"], 1, "{open}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_empty_channel_data_queues_nothing_and_the_channel_goes_on() {
    let out = Rig::start(LIMITS)
        .await
        .survived("flood_empty_data", json!({ "count": 100_000 }))
        .await;
    assert!(out.flag("same_channel_echo"), "{}", out.done);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_huge_window_adjusts_is_harmless() {
    let out = Rig::start(LIMITS)
        .await
        .survived("flood_window_adjust", json!({ "count": 50_000 }))
        .await;
    assert!(out.flag("same_channel_echo"), "{}", out.done);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_channel_requests_is_answered_and_harmless() {
    let out = Rig::start(LIMITS)
        .await
        .survived("flood_channel_requests", json!({ "count": 20_000 }))
        .await;
    assert!(out.flag("same_channel_echo"), "{}", out.done);
    assert!(out.flag("all_answered"), "{}", out.done);
    assert_eq!(out.num("replies"), out.num("want_reply"), "{}", out.done);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_global_requests_is_answered_and_harmless() {
    let out = Rig::start(LIMITS)
        .await
        .survived("flood_global_requests", json!({ "count": 20_000 }))
        .await;
    assert!(out.flag("all_answered"), "{}", out.done);
    assert_eq!(out.num("replies"), out.num("want_reply"), "{}", out.done);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_ignore_and_debug_messages_is_harmless() {
    Rig::start(LIMITS)
        .await
        .survived(
            "flood_ignore_debug",
            json!({ "count": 50_000, "large": 1000 }),
        )
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_eof_data_after_eof_and_extended_data_close_only_their_channel() {
    let mut rig = Rig::start(LIMITS).await;
    let out = rig
        .survived("eof_and_violations", json!({ "count": 10_000 }))
        .await;
    let closed = out.field("closed_by_agent");
    for violation in ["repeated_eof", "data_after_eof", "extended_data"] {
        assert_eq!(
            closed[violation], true,
            "the agent did not close the channel: {violation}"
        );
    }
    assert!(out.flag("clean_channel_open") && out.flag("clean_channel_echo"));
    // Closed as protocol failures (counted), not as the target's or vendor's doing.
    assert_eq!(
        rig.metric("agent_forward_channels_failed_total{forward=\"sink\"}")
            .await,
        3.0
    );
}

/// Past the window toward a target whose socket is full: the agent's write to it is blocked
/// when its budget overflows. The channel must be closed all the same (the overflow must not
/// wait behind that write), and memory stay within the bound.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_past_the_window_toward_a_stuck_target_closes_that_channel() {
    let mut rig = Rig::start(LIMITS).await;
    let out = rig
        .survived("data_past_window", json!({ "max_bytes": 64 << 20 }))
        .await;
    assert_eq!(
        out.num("window"),
        1 << 20,
        "window = limits.connection_buffer"
    );
    assert!(out.num("bytes_sent") > out.num("window"), "{}", out.done);
    assert!(
        out.flag("closed_by_agent"),
        "{} bytes sent on a 1 MiB window and the channel is still open, its connection \
         neither closed nor counted failed ({}): {}",
        out.num("bytes_sent"),
        rig.metric("agent_forward_channels_failed_total{forward=\"sink\"}")
            .await,
        out.done
    );
    assert_eq!(
        rig.metric("agent_forward_channels_failed_total{forward=\"sink\"}")
            .await,
        1.0,
        "closed by its limit"
    );
}

/// A server that keeps to the window, in small messages (64 bytes: interactive traffic),
/// toward a target that is stuck for a while and then recovers: nothing past the window was
/// sent, so the connection must not be closed for its budget (README: "a server that keeps to
/// the protocol never reaches this cap"). The per-message cost the budget charges must not
/// turn a full window of small messages into an overflow.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_keeps_to_the_window_is_never_cut_off_by_the_budget() {
    let mut rig = Rig::start(LIMITS).await;
    let fill = rig.scenario("fill_window", json!({ "packet": 64 })).await;
    rig.release_sink.send(true).unwrap();
    let after = rig
        .survived("after_release", json!({ "bytes": 2 << 20 }))
        .await;
    let failed = rig
        .metric("agent_forward_channels_failed_total{forward=\"sink\"}")
        .await;
    assert!(
        !fill.flag("closed_by_agent") && !after.flag("closed_by_agent") && failed == 0.0,
        "the agent closed a channel whose server kept to the window ({failed} failed): \
         fill {}, after release {}\n{}",
        fill.done,
        after.done,
        rig.evidence()
    );
    assert_eq!(after.num("sent_after_release"), 2 << 20, "{}", after.done);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_exchange_the_server_never_finishes_while_it_floods_ends_the_session_not_the_agent() {
    let mut rig = Rig::start(&LIMITS.replace(" }", ", rekey_after: 1MiB }")).await;
    let out = rig.scenario("kex_stall", json!({ "count": 100_000 })).await;
    assert!(
        out.flag("kexinit_ignored"),
        "the agent never started its key exchange after rekey_after: {}",
        out.done
    );
    assert!(
        out.flag("session_ended"),
        "the agent kept a session whose key exchange never ends while requests pile up: {}\n{}",
        out.done,
        rig.evidence()
    );
    assert!(
        out.num("requests") < 100_000,
        "the server ran out of requests before the agent hung up: {}",
        out.done
    );
    // The agent reconnects by itself and serves the next session.
    rig.wait_ready(1).await;
    let probe = rig.scenario("probe", json!({})).await;
    assert!(probe.flag("alive") && probe.flag("echo"), "{}", probe.done);
    assert!(probe.num("session") > out.num("session"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn channels_past_max_connections_are_refused_and_their_slots_come_back() {
    let mut rig = Rig::start(LIMITS).await;
    let out = rig
        .survived(
            "connection_ceiling",
            json!({ "count": MAX_CONNECTIONS + 16, "forward": "echo" }),
        )
        .await;
    assert_eq!(out.num("accepted"), MAX_CONNECTIONS, "{}", out.done);
    assert_eq!(out.num("refused"), 16);
    assert_eq!(out.field("refusal_codes"), &json!([4]), "resource shortage");
    assert!(
        out.field("served_again_after").is_number(),
        "closed connections did not free their slots: {}",
        out.done
    );
    assert!(
        rig.metric("agent_forward_channels_rejected_total{forward=\"echo\"}")
            .await
            >= 16.0
    );
}

/// The vendor closes (EOF, then CLOSE) channels whose target never answers nor closes: the
/// channel is gone, nothing can reach the vendor any more, so the connection must end and free
/// its slot. Otherwise a vendor frees nothing by closing, and `max_connections` such channels
/// leave the tunnel refusing every later connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn channels_the_vendor_closed_free_their_slots_even_when_the_target_stays_silent() {
    let mut rig = Rig::start(LIMITS).await;
    let out = rig
        .scenario(
            "connection_ceiling",
            json!({ "count": MAX_CONNECTIONS, "forward": "sink" }),
        )
        .await;
    assert_eq!(out.num("accepted"), MAX_CONNECTIONS, "{}", out.done);
    assert!(
        out.field("served_again_after").is_number(),
        "the vendor closed all {MAX_CONNECTIONS} channels, yet no new connection was served \
         within 10 s (max_connections still taken): {}; open now: {}",
        out.done,
        rig.metric("agent_forward_channels_open{forward=\"sink\"}")
            .await
    );
}
