//! A real Dropbear SSH server on 127.0.0.1, started and owned by one test: a second server
//! implementation beside OpenSSH, with its own quirks (it refuses every `cancel-tcpip-forward`
//! and keeps listening until the session ends).
//!
//! Dropbear has no option for where authorized_keys lives: it reads `~USER/.ssh/authorized_keys`
//! of the login user. So that no test touches the real home directory, Dropbear runs in a mount
//! namespace of its own (`unshare --mount`, which needs root, as the tests run in CI) where a
//! temp dir is bind-mounted over the user's home; its per-connection processes inherit that
//! view. `Drop` SIGKILLs the listener and every process serving its connections, by PID.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::sshd::{current_user, kill_server, port_open};

const DROPBEAR: &str = "/usr/sbin/dropbear";
const DROPBEARKEY: &str = "/usr/bin/dropbearkey";
/// How long Dropbear may take to start listening.
const START_TIMEOUT: Duration = Duration::from_secs(10);
/// `free_port` can race with another test; binding fails then and we try another port.
const START_ATTEMPTS: usize = 3;

pub struct Dropbear {
    pub port: u16,
    /// `SHA256:...`, as dropbearkey prints it: what the agent pins.
    pub host_key_fingerprint: String,
    /// Holds the host key, the stand-in home and the log; removed when dropped.
    pub dir: tempfile::TempDir,
    child: Option<Child>,
}

impl Dropbear {
    /// Starts Dropbear accepting `authorized_key_line` (an OpenSSH public key line) for the
    /// current user, with remote forwarding allowed (its default). Blocking: from async tests use
    /// `#[tokio::test(flavor = "multi_thread")]`.
    pub fn start(authorized_key_line: &str) -> Dropbear {
        for program in [DROPBEAR, DROPBEARKEY] {
            assert!(
                std::path::Path::new(program).exists(),
                "{program} not installed: run the README's test command (it installs dropbear-bin)"
            );
        }
        let dir = tempfile::Builder::new()
            .prefix("test-dropbear-")
            .tempdir()
            .expect("create dropbear temp dir");
        let host_key = dir.path().join("host_key_ed25519");
        let out = Command::new(DROPBEARKEY)
            .args(["-t", "ed25519", "-f"])
            .arg(&host_key)
            .output()
            .expect("run dropbearkey");
        assert!(out.status.success(), "dropbearkey failed: {out:?}");
        // "Fingerprint: SHA256:xxxx" on stdout.
        let printed = String::from_utf8_lossy(&out.stdout);
        let host_key_fingerprint = printed
            .split_whitespace()
            .find(|w| w.starts_with("SHA256:"))
            .unwrap_or_else(|| panic!("no fingerprint in dropbearkey's output: {printed}"))
            .to_string();

        // Dropbear checks that the home, ~/.ssh and the file are not writable by others.
        let home = dir.path().join("home");
        let ssh_dir = home.join(".ssh");
        fs::create_dir_all(&ssh_dir).expect("create stand-in ~/.ssh");
        fs::write(
            ssh_dir.join("authorized_keys"),
            format!("{}\n", authorized_key_line.trim()),
        )
        .expect("write authorized_keys");
        for (path, mode) in [
            (&home, 0o755),
            (&ssh_dir, 0o700),
            (&ssh_dir.join("authorized_keys"), 0o600),
        ] {
            fs::set_permissions(path, fs::Permissions::from_mode(mode)).expect("chmod");
        }

        let mut last_error = String::new();
        for _ in 0..START_ATTEMPTS {
            let port = super::free_port();
            match spawn(&dir, &home, &host_key, port) {
                Ok(child) => {
                    return Dropbear {
                        port,
                        host_key_fingerprint,
                        dir,
                        child: Some(child),
                    };
                }
                Err(e) => last_error = e,
            }
        }
        panic!("dropbear did not start after {START_ATTEMPTS} attempts: {last_error}");
    }

    /// The login user: whoever runs the tests (root in CI).
    pub fn user(&self) -> String {
        current_user()
    }

    /// Dropbear's log (stderr) so far, for failure messages.
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("dropbear.log")).unwrap_or_default()
    }
}

/// Starts Dropbear in its own mount namespace with `home` over the user's home directory, and
/// waits until `port` accepts TCP. On failure the process is reaped and the log returned.
fn spawn(
    dir: &tempfile::TempDir,
    home: &std::path::Path,
    host_key: &std::path::Path,
    port: u16,
) -> Result<Child, String> {
    let log_path = dir.path().join("dropbear.log");
    let log = fs::File::create(&log_path).map_err(|e| format!("create log: {e}"))?;
    // The user's home as the password database gives it (what Dropbear reads), not $HOME.
    let script = r#"home="$(getent passwd "$(id -u)" | cut -d: -f6)" || exit 97
[ -d "$home" ] || exit 98
mount --bind "$1" "$home" || exit 99
exec "$2" -F -E -s -p "127.0.0.1:$3" -r "$4" -P "$5""#;
    let mut child = Command::new("unshare")
        .args([
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            script,
            "sh",
        ])
        .arg(home)
        .arg(DROPBEAR)
        .arg(port.to_string())
        .arg(host_key)
        .arg(dir.path().join("dropbear.pid"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .map_err(|e| format!("spawn unshare: {e}"))?;
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!(
                "dropbear exited ({status}; 97-99: finding or bind-mounting the home failed, which needs root); log:\n{}",
                fs::read_to_string(&log_path).unwrap_or_default()
            ));
        }
        if port_open(port) {
            return Ok(child);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!(
                "dropbear not listening on {port} after {START_TIMEOUT:?}; log:\n{}",
                fs::read_to_string(&log_path).unwrap_or_default()
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

impl Drop for Dropbear {
    fn drop(&mut self) {
        // `exec` made the listener the child itself.
        if let Some(child) = self.child.take() {
            kill_server(child);
        }
    }
}
