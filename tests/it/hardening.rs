//! `agent run` as a process other local users face: it is non-dumpable (no ptrace, no core file
//! with the key) and it warns when agent.yaml shows its proxy password to other users. Each
//! test starts the binary against a closed port (it keeps retrying), watches its log, and kills
//! it.

use std::fs;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

const PIN: &str = "SHA256:nThbg6kXUpJWGl7E1IGOCspRomTxdCARLviKw6E5SY8";
/// The container image's user; the agent runs as it when the test runs as root.
const UID: u32 = 65532;
const STARTUP: Duration = Duration::from_secs(30);

fn closed_port() -> u16 {
    let listener = crate::support::fresh_listener();
    listener.local_addr().unwrap().port()
}

fn chmod(path: &Path, mode: u32) {
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

/// agent.yaml for a server on a closed port, with `identity` and `proxy` as given.
fn config(identity: &str, proxy: &str) -> String {
    format!(
        "server:\n  host: 127.0.0.1\n  ports: [{}]\n  user: acme\n  host_keys: [\"{PIN}\"]\n\
         identity: {identity}\nproxy: {proxy}\nadmin: {{ listen: \"off\" }}\n\
         reconnect: {{ initial: 1s, max: 2s }}\n\
         forwards:\n  - {{ name: web, remote: 5000, target: \"127.0.0.1:{}\" }}\n",
        closed_port(),
        closed_port()
    )
}

/// A running `agent run` and its log lines, killed on drop.
struct Agent {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Agent {
    fn start(dir: &Path, uid: Option<u32>) -> Agent {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_agent"));
        cmd.args(["-c", "agent.yaml", "run"])
            .current_dir(dir)
            .env_remove("AGENT_CONFIG")
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some(uid) = uid {
            cmd.uid(uid).gid(uid);
        }
        let mut child = cmd.spawn().expect("start agent run");
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        // Read to the end: on a full pipe the agent would block.
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        Agent { child, lines }
    }

    /// The log lines up to and including the first that contains `needle`.
    fn lines_until(&mut self, needle: &str) -> Vec<String> {
        let mut seen = Vec::new();
        loop {
            match self.lines.recv_timeout(STARTUP) {
                Ok(line) => {
                    let found = line.contains(needle);
                    seen.push(line);
                    if found {
                        return seen;
                    }
                }
                Err(_) => {
                    let _ = self.child.kill();
                    let mut stderr = String::new();
                    if let Some(mut e) = self.child.stderr.take() {
                        let _ = std::io::Read::read_to_string(&mut e, &mut stderr);
                    }
                    panic!(
                        "agent run never logged {needle:?}\nstdout:\n{}\nstderr:\n{stderr}",
                        seen.join("\n")
                    );
                }
            }
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The uid /proc/PID/status gives as the process's real uid.
fn real_uid_of(pid: u32) -> u32 {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[test]
fn agent_run_is_not_dumpable() {
    // The kernel hands the files in a non-dumpable process's /proc/PID to root
    // (task_dump_owner; the folder itself keeps the process's user); a dumpable one's belong to
    // the process's own user. So the agent must run as a user other than root:
    // as root, the image's uid 65532, reading the key as Kubernetes mounts a Secret with
    // fsGroup (root-owned, group 65532, mode 0440, behind a `..data` symlink); otherwise this
    // test's own uid, with its own 0400 key.
    let dir = tempfile::tempdir().unwrap();
    chmod(dir.path(), 0o755);
    let as_root = agent::sys::real_uid() == 0;
    let keys = dir.path().join("keys");
    let data = keys.join("..data");
    fs::create_dir_all(&data).unwrap();
    let written = agent::keygen::keygen(&data, 2048, "t", false).unwrap();
    std::os::unix::fs::symlink("..data/private-key.pem", keys.join("private-key.pem")).unwrap();
    if as_root {
        std::os::unix::fs::chown(&keys, Some(0), Some(UID)).unwrap();
        std::os::unix::fs::chown(&data, Some(0), Some(UID)).unwrap();
        chmod(&keys, 0o750);
        chmod(&data, 0o750);
        std::os::unix::fs::chown(&written.private_path, Some(0), Some(UID)).unwrap();
        chmod(&written.private_path, 0o440);
    }
    let file = dir.path().join("agent.yaml");
    fs::write(&file, config("keys/private-key.pem", "none")).unwrap();
    chmod(&file, 0o644);

    let mut agent = Agent::start(dir.path(), as_root.then_some(UID));
    // Logged after the key was loaded, so after the prctl at the top of `agent run`.
    agent.lines_until("agent starting");
    let pid = agent.child.id();
    let runs_as = real_uid_of(pid);
    assert_ne!(
        runs_as, 0,
        "the test needs the agent to run as a user other than root"
    );
    let status = format!("/proc/{pid}/status");
    let proc_owner = fs::metadata(&status).unwrap().uid();
    assert_eq!(
        proc_owner, 0,
        "{status} belongs to uid {proc_owner}, the agent's own user ({runs_as}): the process is dumpable"
    );
}

#[test]
fn agent_run_warns_when_agent_yaml_shows_the_proxy_password_to_others() {
    let dir = tempfile::tempdir().unwrap();
    agent::keygen::keygen(&dir.path().join("keys"), 2048, "t", false).unwrap();
    let file = dir.path().join("agent.yaml");
    let proxy = format!("http://svc-agent:hunter2@127.0.0.1:{}", closed_port());
    fs::write(&file, config("keys/private-key.pem", &proxy)).unwrap();

    chmod(&file, 0o644);
    let mut agent = Agent::start(dir.path(), None);
    let log = agent.lines_until("agent starting").join("\n");
    let warning = log
        .lines()
        .find(|l| l.contains("WARN") && l.contains("proxy password"))
        .unwrap_or_else(|| panic!("no warning about the proxy password in:\n{log}"));
    for needle in [
        "agent.yaml: proxy: ",
        "svc-agent:****@127.0.0.1",
        "readable by group or others (mode 0644)",
        "fix: chmod 600 ",
    ] {
        assert!(warning.contains(needle), "{needle:?} not in {warning}");
    }
    assert!(!log.contains("hunter2"), "{log}");
    drop(agent);

    chmod(&file, 0o600);
    let mut agent = Agent::start(dir.path(), None);
    let log = agent.lines_until("agent starting").join("\n");
    assert!(!log.contains("proxy password"), "{log}");
}
