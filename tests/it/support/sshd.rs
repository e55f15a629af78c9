//! A real OpenSSH `sshd` on 127.0.0.1, started and owned by one test.
//!
//! Each instance has its own config, host keys (ed25519, or the types a test asks for), authorized_keys and log in a temp dir, so
//! tests can run in parallel. Tests run as root and log in as the current user. `kill` SIGKILLs the
//! listener and every process serving its connections (found through /proc parent links, never by
//! name), so a test can simulate the vendor's server dying; `restart` brings it back on the same
//! port with the same host key. `Drop` kills everything this instance started.

use std::fs;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const SSHD: &str = "/usr/sbin/sshd";
const SSH_KEYGEN: &str = "ssh-keygen";
/// How long sshd may take to start listening (or to stop, after a kill).
const START_TIMEOUT: Duration = Duration::from_secs(10);
const STOP_TIMEOUT: Duration = Duration::from_secs(5);
/// How often a port or process is polled while waiting.
const POLL: Duration = Duration::from_millis(20);
/// `free_port` can race with another test; binding fails then and we try another port.
const START_ATTEMPTS: usize = 3;

/// One of the server's host keys.
#[derive(Debug, Clone)]
pub struct HostKey {
    /// `ssh-keygen -t` type: "ed25519", "rsa", "ecdsa".
    pub kind: String,
    /// `ssh-rsa AAAA...` (no comment).
    pub line: String,
    /// `SHA256:...`.
    pub fingerprint: String,
}

pub struct Sshd {
    pub port: u16,
    /// Every host key, in the order asked for ([`Sshd::start_with_host_keys`]); the first is
    /// also `host_key_line` / `host_key_fingerprint`.
    pub host_keys: Vec<HostKey>,
    /// `ssh-ed25519 AAAA...` (no comment): what the agent pins.
    pub host_key_line: String,
    /// `SHA256:...`, as `ssh-keygen -l` prints it.
    pub host_key_fingerprint: String,
    /// Holds the config, keys, authorized_keys and log; removed when the `Sshd` is dropped.
    pub dir: tempfile::TempDir,
    config_path: PathBuf,
    log_path: PathBuf,
    authorized_keys_path: PathBuf,
    /// The listening sshd (`-D`: it does not daemonize, so this is the listener itself).
    child: Option<Child>,
}

impl Sshd {
    /// Starts sshd accepting `authorized_key_line` (an OpenSSH public key line) for the current user.
    ///
    /// Blocking (spawns processes, polls the port for up to 10 s): from async tests use
    /// `#[tokio::test(flavor = "multi_thread")]` so the other worker keeps serving targets.
    pub fn start(authorized_key_line: &str) -> Sshd {
        Self::start_with(authorized_key_line, "")
    }

    /// Like [`Sshd::start`], with extra sshd_config lines appended (e.g. "RekeyLimit 64M",
    /// "ClientAliveInterval 1").
    pub fn start_with(authorized_key_line: &str, extra_config_lines: &str) -> Sshd {
        Self::start_with_host_keys(authorized_key_line, extra_config_lines, &["ed25519"])
    }

    /// Like [`Sshd::start_with`], with one host key of each `ssh-keygen -t` type in `kinds`
    /// ("ed25519", "rsa", "ecdsa"), as a real server usually has.
    pub fn start_with_host_keys(
        authorized_key_line: &str,
        extra_config_lines: &str,
        kinds: &[&str],
    ) -> Sshd {
        if !Path::new(SSHD).exists() {
            panic!(
                "sshd not installed: run the README's test command (it installs openssh-server)"
            );
        }
        // The privilege-separation dir; the Debian package creates it at boot, containers lack it.
        fs::create_dir_all("/run/sshd").expect("create /run/sshd (privilege separation dir)");

        let dir = tempfile::Builder::new()
            .prefix("test-sshd-")
            .tempdir()
            .expect("create sshd temp dir");
        let host_keys: Vec<HostKey> = kinds
            .iter()
            .map(|kind| make_host_key(dir.path(), kind))
            .collect();
        let key_paths: Vec<PathBuf> = kinds
            .iter()
            .map(|kind| dir.path().join(format!("ssh_host_{kind}_key")))
            .collect();
        let host_key_line = host_keys[0].line.clone();
        let host_key_fingerprint = host_keys[0].fingerprint.clone();

        let authorized_keys_path = dir.path().join("authorized_keys");
        let log_path = dir.path().join("sshd.log");
        let config_path = dir.path().join("sshd_config");
        let mut sshd = Sshd {
            port: 0,
            host_keys,
            host_key_line,
            host_key_fingerprint,
            config_path,
            log_path,
            authorized_keys_path,
            child: None,
            dir,
        };
        sshd.set_authorized_key(authorized_key_line);

        let mut last_error = String::new();
        for _ in 0..START_ATTEMPTS {
            sshd.port = super::free_port();
            sshd.write_config(&key_paths, extra_config_lines);
            match sshd.spawn_and_wait() {
                Ok(()) => return sshd,
                Err(e) => last_error = e,
            }
        }
        panic!("sshd did not start after {START_ATTEMPTS} attempts: {last_error}");
    }

    /// The login user: whoever runs the tests (root in CI).
    pub fn user(&self) -> String {
        current_user()
    }

    /// sshd's stderr (LogLevel DEBUG1) so far, for assertions and failure messages.
    pub fn log(&self) -> String {
        fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// Replaces authorized_keys with this one line. sshd reads the file at each login.
    pub fn set_authorized_key(&self, line: &str) {
        let tmp = self.authorized_keys_path.with_extension("tmp");
        fs::write(&tmp, format!("{}\n", line.trim())).expect("write authorized_keys");
        fs::rename(&tmp, &self.authorized_keys_path).expect("replace authorized_keys");
    }

    /// PID of the listening sshd, if running.
    pub fn pid(&self) -> Option<i32> {
        self.child.as_ref().map(|c| c.id() as i32)
    }

    /// The sshd processes serving this instance's connections: every descendant of the listener
    /// (privsep monitor, unprivileged child, session process). SIGSTOP them to freeze the server.
    pub fn session_pids(&self) -> Vec<i32> {
        self.pid().map(descendants).unwrap_or_default()
    }

    /// Whether a process of this sshd (the listener or one serving a connection) holds a socket
    /// listening on `port`: a remote forward it opened, read from /proc (the LISTEN sockets of
    /// /proc/net/tcp and tcp6, and the processes' file descriptors). Unlike connecting to the
    /// port, another program that happens to listen there, or a client that connects to itself
    /// (its ephemeral port chosen equal to the port), cannot make it true.
    pub fn listens_on(&self, port: u16) -> bool {
        let wanted = format!(":{port:04X}");
        let inodes: Vec<String> = ["/proc/net/tcp", "/proc/net/tcp6"]
            .iter()
            .flat_map(|f| {
                fs::read_to_string(f)
                    .unwrap_or_default()
                    .lines()
                    .skip(1)
                    .map(str::to_string)
                    .collect::<Vec<_>>()
            })
            .filter_map(|line| {
                let cols: Vec<&str> = line.split_whitespace().collect();
                // sl local_address rem_address st ... uid timeout inode
                (cols.len() > 9 && cols[1].ends_with(&wanted) && cols[3] == "0A")
                    .then(|| format!("socket:[{}]", cols[9]))
            })
            .collect();
        if inodes.is_empty() {
            return false;
        }
        self.pid()
            .into_iter()
            .chain(self.session_pids())
            .flat_map(|pid| {
                fs::read_dir(format!("/proc/{pid}/fd"))
                    .into_iter()
                    .flatten()
                    .flatten()
            })
            .filter_map(|fd| fs::read_link(fd.path()).ok())
            .any(|link| inodes.iter().any(|i| link.as_os_str() == i.as_str()))
    }

    /// SIGKILLs the listener and every process serving its connections, then waits until the
    /// port is closed. Connected clients see their TCP connection reset or hang, as on a crash.
    pub fn kill(&mut self) {
        let Some(child) = self.child.take() else {
            return;
        };
        let serving = kill_server(child);
        wait_for(STOP_TIMEOUT, || !port_open(self.port)).unwrap_or_else(|()| {
            panic!(
                "sshd port {} still open {STOP_TIMEOUT:?} after kill",
                self.port
            )
        });
        // Killed children can linger a moment; give them a bounded chance to disappear.
        let _ = wait_for(STOP_TIMEOUT, || serving.iter().all(|p| !alive(*p)));
    }

    /// Kills (if running) and starts sshd again on the same port, host key and config.
    pub fn restart(&mut self) {
        self.kill();
        // The port was just closed; another test could take it in between, so retry within a
        // bounded time instead of failing on the first bind error.
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            match self.spawn_and_wait() {
                Ok(()) => return,
                Err(e) if Instant::now() >= deadline => {
                    panic!("sshd did not restart on port {}: {e}", self.port)
                }
                Err(_) => std::thread::sleep(Duration::from_millis(200)),
            }
        }
    }

    fn write_config(&self, host_keys: &[PathBuf], extra: &str) {
        let d = self.dir.path();
        let host_keys: String = host_keys
            .iter()
            .map(|k| format!("HostKey {}\n", k.display()))
            .collect();
        let mut config = format!(
            "ListenAddress 127.0.0.1:{port}\n\
             {host_keys}\
             PidFile {pid}\n\
             AuthorizedKeysFile {ak}\n\
             StrictModes no\n\
             UsePAM no\n\
             PasswordAuthentication no\n\
             KbdInteractiveAuthentication no\n\
             PubkeyAuthentication yes\n\
             PermitRootLogin prohibit-password\n\
             AllowTcpForwarding remote\n\
             GatewayPorts clientspecified\n\
             PermitListen any\n\
             PermitTTY no\n\
             X11Forwarding no\n\
             LogLevel DEBUG1\n",
            port = self.port,
            pid = d.join("sshd.pid").display(),
            ak = self.authorized_keys_path.display(),
        );
        // OpenSSH 9.8+ throttles sources that fail or drop connections, and tests do both on
        // purpose from 127.0.0.1. Older sshd rejects the option, so add it only when known.
        if sshd_version().is_some_and(|v| v >= (9, 8)) {
            config.push_str("PerSourcePenalties no\n");
        }
        config.push_str(extra);
        config.push('\n');
        fs::write(&self.config_path, config).expect("write sshd_config");
    }

    /// Spawns `sshd -D -e -f CONFIG` and waits until its port accepts TCP. On failure the
    /// process is reaped and the log tail returned.
    fn spawn_and_wait(&mut self) -> Result<(), String> {
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .map_err(|e| format!("open sshd log: {e}"))?;
        let mut child = Command::new(SSHD)
            .args(["-D", "-e", "-f"])
            .arg(&self.config_path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|e| format!("spawn {SSHD}: {e}"))?;
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return Err(format!("sshd exited ({status}); log:\n{}", self.log()));
            }
            if port_open(self.port) {
                self.child = Some(child);
                return Ok(());
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "sshd not listening on {} after {START_TIMEOUT:?}; log:\n{}",
                    self.port,
                    self.log()
                ));
            }
            std::thread::sleep(POLL);
        }
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        if let Some(child) = self.child.take() {
            kill_server(child);
        }
    }
}

/// Generates `dir/ssh_host_KIND_key` and reads back its public line and fingerprint.
fn make_host_key(dir: &Path, kind: &str) -> HostKey {
    let path = dir.join(format!("ssh_host_{kind}_key"));
    run(Command::new(SSH_KEYGEN)
        .args(["-q", "-t", kind, "-N", "", "-C", "test-sshd", "-f"])
        .arg(&path));
    let public = fs::read_to_string(path.with_extension("pub")).expect("read host .pub");
    let line = public
        .split_whitespace()
        .take(2)
        .collect::<Vec<_>>()
        .join(" ");
    // "256 SHA256:xxxx test-sshd (ED25519)"
    let listing = run(Command::new(SSH_KEYGEN)
        .args(["-l", "-E", "sha256", "-f"])
        .arg(path.with_extension("pub")));
    let fingerprint = listing
        .split_whitespace()
        .nth(1)
        .filter(|f| f.starts_with("SHA256:"))
        .unwrap_or_else(|| panic!("unexpected ssh-keygen -l output: {listing}"))
        .to_string();
    HostKey {
        kind: kind.to_string(),
        line,
        fingerprint,
    }
}

/// SIGKILLs a listening server and every process serving its connections, reaps it, and
/// returns the serving processes' PIDs. Never panics: it runs in `Drop`, maybe of a failing test.
pub fn kill_server(mut child: Child) -> Vec<i32> {
    let listener = child.id() as i32;
    // Stop the listener first so it cannot fork new connection handlers while we collect
    // them; once it dies its children are re-parented and can no longer be found by ppid.
    signal(listener, "STOP");
    let serving = descendants(listener);
    for pid in &serving {
        signal(*pid, "KILL");
    }
    let _ = child.kill(); // SIGKILL also ends a stopped process.
    let _ = child.wait();
    serving
}

/// The login user of the test servers: whoever runs the tests (root in CI).
pub fn current_user() -> String {
    run(Command::new("id").arg("-un")).trim().to_string()
}

/// Sends `sig` (a name such as "STOP", "CONT", "KILL") to `pid` with `/bin/kill`, avoiding a
/// libc dependency. Errors (e.g. the process is already gone) are ignored.
pub fn signal(pid: i32, sig: &str) {
    let _ = Command::new("/bin/kill")
        .args(["-s", sig, &pid.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// All descendants of `root`, from /proc/*/stat parent links (children before grandchildren).
pub fn descendants(root: i32) -> Vec<i32> {
    let parents: Vec<(i32, i32)> = fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(|pid| Some((pid, parent_of(pid)?)))
        .collect();
    let mut found = vec![root];
    let mut i = 0;
    // Bounded: each pass appends only pids not yet seen, and /proc lists finitely many.
    while i < found.len() {
        let parent = found[i];
        for &(pid, ppid) in &parents {
            if ppid == parent && !found.contains(&pid) {
                found.push(pid);
            }
        }
        i += 1;
    }
    found.remove(0);
    found
}

/// The parent pid from /proc/PID/stat. The command name (2nd field) is in parentheses and may
/// contain spaces, so parse after the last ')': "state ppid ...".
fn parent_of(pid: i32) -> Option<i32> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(1)?.parse().ok()
}

/// True if the process exists and is not a zombie.
fn alive(pid: i32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rfind(')')
            .and_then(|i| stat[i + 1..].split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X"),
        Err(_) => false,
    }
}

pub fn port_open(port: u16) -> bool {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
}

/// Polls `done` until it holds or `timeout` passes.
fn wait_for(timeout: Duration, mut done: impl FnMut() -> bool) -> Result<(), ()> {
    let deadline = Instant::now() + timeout;
    loop {
        if done() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(());
        }
        std::thread::sleep(POLL);
    }
}

/// Runs a setup command and returns its stdout; panics with its stderr if it fails.
fn run(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// (major, minor) of the installed sshd. `sshd -V` exists only since 9.x-ish; older ones print
/// the version in their usage message on stderr, which we parse the same way.
fn sshd_version() -> Option<(u32, u32)> {
    let out = Command::new(SSHD).arg("-V").output().ok()?;
    let text = String::from_utf8_lossy(&out.stderr);
    let v = text.split("OpenSSH_").nth(1)?;
    let mut parts = v.split(|c: char| !c.is_ascii_digit());
    Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
}
