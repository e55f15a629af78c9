//! `agent run` as a child process of the test: any agent binary (the release build for the
//! hostile suite), its admin endpoint found in its JSON log, its log and stderr kept for
//! assertions and failure messages, its memory read from /proc. Stopped by PID when dropped.

use std::collections::{HashMap, VecDeque};
use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Log lines kept for failure messages (the newest).
const TAIL_LINES: usize = 300;
/// Stderr kept (a panic message and its backtrace fit).
const MAX_STDERR: usize = 256 * 1024;

/// What the agent logged, summed up as it is read (a flood can log tens of thousands of lines).
#[derive(Default)]
struct Log {
    tail: VecDeque<String>,
    /// Lines per `fields.message`.
    messages: HashMap<String, usize>,
    /// Lines per `level`.
    levels: HashMap<String, usize>,
    lines: usize,
    /// The longest line seen, in bytes, and its start.
    longest: (usize, String),
    /// Every line (up to 64 MiB), for a search of the whole output (a secret must be nowhere).
    all: String,
}

pub struct AgentProcess {
    child: Child,
    log: Arc<Mutex<Log>>,
    stderr: Arc<Mutex<String>>,
}

impl AgentProcess {
    /// Runs `bin -c config run`; `config` must have `admin.listen: 127.0.0.1:0` (and, for the
    /// helpers that read log fields, `log: { format: json }`). Returns once the agent logged the address its admin
    /// endpoint bound (panics if it does not within `within`, with what it printed).
    pub fn start(bin: &Path, config: &Path, within: Duration) -> (Self, SocketAddr) {
        Self::start_under(&[], bin, config, within)
    }

    /// [`AgentProcess::start`] through `wrapper` (a program that execs the rest of its
    /// arguments, e.g. `prlimit --nofile=100:300 --`), so the agent keeps the wrapper's PID.
    pub fn start_under(
        wrapper: &[&str],
        bin: &Path,
        config: &Path,
        within: Duration,
    ) -> (Self, SocketAddr) {
        let mut command = match wrapper.split_first() {
            Some((program, args)) => {
                let mut c = Command::new(program);
                c.args(args).arg(bin);
                c
            }
            None => Command::new(bin),
        };
        let mut child = command
            .args(["-c", config.to_str().expect("utf-8 path"), "run"])
            // The agent's own default filter, as a customer runs it.
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", bin.display()));
        let stdout = child.stdout.take().expect("piped stdout");
        let mut stderr_pipe = child.stderr.take().expect("piped stderr");
        let log = Arc::new(Mutex::new(Log::default()));
        let stderr = Arc::new(Mutex::new(String::new()));
        let (found_tx, found_rx) = std::sync::mpsc::channel();
        let sink = log.clone();
        // Reads to the end, past the line wanted: on a full pipe the agent would block.
        std::thread::spawn(move || {
            let mut found = Some(found_tx);
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(addr) = admin_endpoint_logged(&line)
                    && let Some(tx) = found.take()
                {
                    let _ = tx.send(addr);
                }
                sink.lock().unwrap().add(line);
            }
        });
        let err_sink = stderr.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 8192];
            while let Ok(n) = stderr_pipe.read(&mut buf) {
                if n == 0 {
                    break;
                }
                let mut text = err_sink.lock().unwrap();
                if text.len() < MAX_STDERR {
                    text.push_str(&String::from_utf8_lossy(&buf[..n]));
                }
            }
        });
        let process = Self { child, log, stderr };
        match found_rx.recv_timeout(within) {
            Ok(admin) => (process, admin),
            Err(_) => panic!(
                "the agent did not log its admin endpoint within {within:?}\n{}",
                process.evidence()
            ),
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether the process is still running (not exited, not killed).
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// The exit code once the process has exited (None while running, or killed by a signal).
    pub fn exit_code(&mut self) -> Option<i32> {
        self.child.try_wait().ok().flatten().and_then(|s| s.code())
    }

    /// A `/proc/PID/status` field in KiB: `VmHWM` (peak resident memory), `VmRSS`.
    pub fn status_kib(&self, field: &str) -> u64 {
        status_kib(self.pid(), field)
    }

    /// How many log lines carried exactly this `fields.message`.
    pub fn logged(&self, message: &str) -> usize {
        let log = self.log.lock().unwrap();
        log.messages.get(message).copied().unwrap_or(0)
    }

    /// How many log lines had a `fields.message` starting with `prefix`.
    pub fn logged_starting(&self, prefix: &str) -> usize {
        let log = self.log.lock().unwrap();
        log.messages
            .iter()
            .filter(|(m, _)| m.starts_with(prefix))
            .map(|(_, n)| n)
            .sum()
    }

    /// The newest log lines (up to 300), as printed (text logs too).
    pub fn lines(&self) -> Vec<String> {
        self.log.lock().unwrap().tail.iter().cloned().collect()
    }

    /// The newest log lines (up to 300), parsed.
    pub fn recent(&self) -> Vec<serde_json::Value> {
        let log = self.log.lock().unwrap();
        log.tail
            .iter()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// How many log lines had this level (`WARN`, `ERROR`...), and lines in all.
    pub fn logged_at(&self, level: &str) -> (usize, usize) {
        let log = self.log.lock().unwrap();
        (log.levels.get(level).copied().unwrap_or(0), log.lines)
    }

    /// The longest line logged so far: its length in bytes and its first 300 characters.
    pub fn longest_line(&self) -> (usize, String) {
        self.log.lock().unwrap().longest.clone()
    }

    /// Whether `needle` appears anywhere in what the agent printed (log and stderr).
    pub fn printed(&self, needle: &str) -> bool {
        self.log.lock().unwrap().all.contains(needle) || self.stderr().contains(needle)
    }

    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// The newest log lines and stderr, for a failure message.
    pub fn evidence(&self) -> String {
        let log = self.log.lock().unwrap();
        let tail: Vec<&str> = log.tail.iter().map(|l| truncate(l, 600)).collect();
        format!(
            "--- agent log ({} lines, newest {}):\n{}\n--- agent stderr:\n{}",
            log.lines,
            tail.len(),
            tail.join("\n"),
            self.stderr()
        )
    }
}

impl Log {
    fn add(&mut self, line: String) {
        self.lines += 1;
        if self.all.len() < 64 << 20 {
            self.all.push_str(&line);
            self.all.push('\n');
        }
        if line.len() > self.longest.0 {
            self.longest = (line.len(), truncate(&line, 300).to_string());
        }
        if let Ok(event) = serde_json::from_str::<serde_json::Value>(&line) {
            if let Some(m) = event["fields"]["message"].as_str() {
                *self.messages.entry(m.to_string()).or_default() += 1;
            }
            if let Some(l) = event["level"].as_str() {
                *self.levels.entry(l.to_string()).or_default() += 1;
            }
        }
        if self.tail.len() == TAIL_LINES {
            self.tail.pop_front();
        }
        self.tail.push_back(line);
    }
}

fn truncate(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

/// The address in the log line announcing the admin endpoint: JSON, or text (the default
/// format: `... INFO admin endpoint: /healthz /readyz /metrics listen=127.0.0.1:PORT`).
pub fn admin_endpoint_logged(line: &str) -> Option<SocketAddr> {
    if !line.starts_with('{') {
        let (_, fields) = line.split_once("admin endpoint: /healthz /readyz /metrics ")?;
        let addr = fields
            .split_whitespace()
            .find_map(|f| f.strip_prefix("listen="))?;
        return addr.parse().ok();
    }
    let event: serde_json::Value = serde_json::from_str(line).ok()?;
    let fields = &event["fields"];
    if !fields["message"].as_str()?.starts_with("admin endpoint") {
        return None;
    }
    fields["listen"].as_str()?.parse().ok()
}

impl Drop for AgentProcess {
    fn drop(&mut self) {
        // Child::kill signals this child's PID only.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `GET path` on the admin endpoint: the status and body, and how long the answer took.
/// Err if there is no complete answer within `within`.
pub async fn get(
    addr: SocketAddr,
    path: &str,
    within: Duration,
) -> Result<(u16, String, Duration), String> {
    let started = Instant::now();
    let exchange = async {
        let mut conn = TcpStream::connect(addr).await?;
        let request = format!("GET {path} HTTP/1.1\r\nHost: agent\r\nConnection: close\r\n\r\n");
        conn.write_all(request.as_bytes()).await?;
        let mut raw = Vec::new();
        (&mut conn).take(4 << 20).read_to_end(&mut raw).await?;
        Ok::<_, std::io::Error>(raw)
    };
    let raw = tokio::time::timeout(within, exchange)
        .await
        .map_err(|_| format!("GET {path}: no answer within {within:?}"))?
        .map_err(|e| format!("GET {path}: {e}"))?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("GET {path}: not an HTTP answer: {head:?}"))?;
    Ok((status, body.to_string(), started.elapsed()))
}

/// A `/proc/PID/status` field of process `pid` in KiB: `VmHWM`, `VmRSS`, `RssAnon`, ...
pub fn status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .expect("read /proc/PID/status of the agent");
    let line = status
        .lines()
        .find(|l| l.starts_with(field) && l[field.len()..].starts_with(':'))
        .unwrap_or_else(|| panic!("no {field} in /proc/PID/status"));
    line.split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("unreadable {line:?}"))
}
